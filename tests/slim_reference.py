"""An independent TF-slim MobileNet for the tests: random slim checkpoints and a forward pass in
plain TensorFlow ops, written from the TF-slim facts without touching the package's Keras models."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

V1_SEPARABLE = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _divisible(v, d=8):
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def v2_block_outputs(alpha):
    """(block scope, expand width or None, output width, stride) for the 17 V2 blocks."""
    blocks, cin, i = [], _divisible(32 * alpha), 0
    for t, c, n, s in V2_BLOCKS:
        for r in range(n):
            cout = _divisible(c * alpha)
            inner = cin if t == 1 else _divisible(cin * t)
            blocks.append(
                (
                    "MobilenetV2/expanded_conv" + (f"_{i}" if i else ""),
                    inner if inner > cin else None,
                    cout,
                    s if r == 0 else 1,
                )
            )
            cin, i = cout, i + 1
    return blocks


def slim_shapes(family, alpha, classes=1001):
    """{variable name: shape} of a slim MobileNet checkpoint (model variables only)."""
    shapes = {}

    def conv(scope, k, cin, cout, depthwise=False):
        shapes[f"{scope}/{'depthwise_weights' if depthwise else 'weights'}"] = (k, k, cin, 1 if depthwise else cout)
        for n in ("gamma", "beta", "moving_mean", "moving_variance"):
            shapes[f"{scope}/BatchNorm/{n}"] = (cout,)

    if family == "v1":
        d = lambda c: max(int(c * alpha), 8)  # noqa: E731
        cin = d(32)
        conv("MobilenetV1/Conv2d_0", 3, 3, cin)
        for i, (depth, _) in enumerate(V1_SEPARABLE, 1):
            conv(f"MobilenetV1/Conv2d_{i}_depthwise", 3, cin, cin, depthwise=True)
            conv(f"MobilenetV1/Conv2d_{i}_pointwise", 1, cin, d(depth))
            cin = d(depth)
        net = "MobilenetV1"
    else:
        cin = _divisible(32 * alpha)
        conv("MobilenetV2/Conv", 3, 3, cin)
        for scope, inner, cout, _ in v2_block_outputs(alpha):
            width = cin
            if inner:
                conv(f"{scope}/expand", 1, cin, inner)
                width = inner
            conv(f"{scope}/depthwise", 3, width, width, depthwise=True)
            conv(f"{scope}/project", 1, width, cout)
            cin = cout
        head = _divisible(1280 * alpha) if alpha > 1 else 1280
        conv("MobilenetV2/Conv_1", 1, cin, head)
        cin, net = head, "MobilenetV2"
    shapes[f"{net}/Logits/Conv2d_1c_1x1/weights"] = (1, 1, cin, classes)
    shapes[f"{net}/Logits/Conv2d_1c_1x1/biases"] = (classes,)
    return shapes


def random_values(shapes, seed):
    """Well-scaled random values: activations stay O(1) through the whole network."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[-1]
        if leaf in ("weights", "depthwise_weights"):
            fan_in = shape[0] * shape[1] * (1 if leaf == "depthwise_weights" else shape[2])
            v = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        elif leaf in ("gamma", "moving_variance"):
            v = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, biases
            v = rng.normal(0, 0.1, shape)
        values[name] = v.astype(np.float32)
    return values


def write_checkpoint(prefix, values):
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    return str(prefix)


def forward(values, family, images):
    """slim logits (N, classes) for NHWC `images`, in plain TF ops, computed in float64 so the
    reference's own rounding does not count against the model under test."""
    values = {n: tf.constant(v, tf.float64) for n, v in values.items()}
    x = tf.constant(images, tf.float64)

    def bn(x, scope, relu6=True):
        g, b, m, v = (values[f"{scope}/BatchNorm/{n}"] for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        x = (x - m) / tf.sqrt(v + 1e-3) * g + b
        return tf.nn.relu6(x) if relu6 else x

    def conv(x, scope, stride, relu6=True):
        return bn(tf.nn.conv2d(x, values[f"{scope}/weights"], stride, "SAME"), scope, relu6)

    def dw(x, scope, stride):
        return bn(
            tf.nn.depthwise_conv2d(x, values[f"{scope}/depthwise_weights"], [1, stride, stride, 1], "SAME"), scope
        )

    if family == "v1":
        net = "MobilenetV1"
        x = conv(x, f"{net}/Conv2d_0", 2)
        for i, (_, stride) in enumerate(V1_SEPARABLE, 1):
            x = dw(x, f"{net}/Conv2d_{i}_depthwise", stride)
            x = conv(x, f"{net}/Conv2d_{i}_pointwise", 1)
    else:
        net = "MobilenetV2"
        x = conv(x, f"{net}/Conv", 2)
        for i in range(17):
            scope = f"{net}/expanded_conv" + (f"_{i}" if i else "")
            stride = 2 if i in (1, 3, 6, 13) else 1
            y = conv(x, f"{scope}/expand", 1) if f"{scope}/expand/weights" in values else x
            y = dw(y, f"{scope}/depthwise", stride)
            y = conv(y, f"{scope}/project", 1, relu6=False)
            x = x + y if stride == 1 and x.shape[-1] == y.shape[-1] else y
        x = conv(x, f"{net}/Conv_1", 1)
    pooled = tf.reduce_mean(x, axis=[1, 2])
    w = values[f"{net}/Logits/Conv2d_1c_1x1/weights"]
    return (tf.matmul(pooled, w[0, 0]) + values[f"{net}/Logits/Conv2d_1c_1x1/biases"]).numpy()
