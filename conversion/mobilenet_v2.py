"""MobileNet V2 in Keras, exactly as TF-slim's `nets/mobilenet/mobilenet_v2.py` defines it."""

from __future__ import annotations

import keras

from . import layers as L
from .weights import finish_model, model_input

NET = "MobilenetV2"
STEM_SCOPE = f"{NET}/Conv"
HEAD_SCOPE = f"{NET}/Conv_1"

# Inverted-residual blocks: expansion t (None = the model's expansion_factor), channels c,
# repeats n, stride s of the first repeat. The first block never expands (slim: expand_input(1)).
# t, c, n, s
BLOCKS = [
    (1, 16, 1, 1),
    (None, 24, 2, 2),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def make_divisible(value: float, divisor: int = 8) -> int:
    """slim's _make_divisible: nearest multiple of `divisor` (at least `divisor`), never 10 % below `value`."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def v2_stem_width(alpha: float) -> int:
    return make_divisible(STEM_CHANNELS * alpha)


def v2_head_width(alpha: float) -> int:
    """Conv_1 is not narrowed below 1280 (slim's finegrain_classification_mode), only widened."""
    return make_divisible(HEAD_CHANNELS * alpha) if alpha > 1.0 else HEAD_CHANNELS


def block_scope(index: int) -> str:
    return f"{NET}/expanded_conv" + (f"_{index}" if index else "")


def inverted_residual(x, expansion: float, out_channels: int, stride: int, depth_multiplier: int, scope: str):
    """Expand (1x1, ReLU6) -> depthwise 3x3 (ReLU6) -> linear project (1x1), + input when shapes allow."""
    in_channels = x.shape[-1]
    inner = make_divisible(in_channels * expansion) if expansion != 1 else in_channels
    shortcut = x
    if inner > in_channels:  # slim adds the expand conv only when it widens
        x = L.conv_bn(x, inner, 1, 1, f"{scope}/expand")
    x = L.depthwise_bn(x, stride, depth_multiplier, f"{scope}/depthwise")
    x = L.conv_bn(x, out_channels, 1, 1, f"{scope}/project", relu6=False)  # linear bottleneck
    if stride == 1 and in_channels == out_channels:
        x = keras.layers.Add(name=L.layer_name(f"{scope}/add"))([shortcut, x])
    return x


def MobileNetV2(input_shape=None, alpha=1.0, expansion_factor=6, depth_multiplier=1, include_top=True, weights=None,
                pooling=None, classes=1000, classifier_activation="softmax", dropout=0.2, weights_source="ema",
                name=None):
    """MobileNet V2 (Sandler et al. 2018) with TF-slim's exact layers, channel rounding and names.

    `alpha` is the width multiplier, `expansion_factor` the inverted-residual expansion (6 in every
    published model), `depth_multiplier` the channel multiplier of the depthwise convolutions.
    `weights`, `classes` and `classifier_activation` work as in `MobileNet`.
    """
    L.validate_positive("expansion_factor", expansion_factor)
    L.validate_positive("depth_multiplier", depth_multiplier, integer=True)
    inputs = model_input("v2", alpha, input_shape, include_top, pooling, classes, classifier_activation, weights)
    x = L.conv_bn(inputs, v2_stem_width(alpha), 3, 2, STEM_SCOPE)
    index = 0
    for t, c, n, s in BLOCKS:
        for repeat in range(n):
            expansion = expansion_factor if t is None else t
            stride = s if repeat == 0 else 1
            x = inverted_residual(x, expansion, make_divisible(c * alpha), stride, depth_multiplier, block_scope(index))
            index += 1
    x = L.conv_bn(x, v2_head_width(alpha), 1, 1, HEAD_SCOPE)
    x = L.head(x, NET, include_top, pooling, classes, dropout, classifier_activation)

    return finish_model(inputs, x, name or f"mobilenet_v2_{alpha}_{inputs.shape[1]}", weights, weights_source)
