"""MobileNet V1 in Keras, exactly as TF-slim's `nets/mobilenet_v1.py` defines it."""

from __future__ import annotations

from . import layers as L
from .weights import finish_model, model_input

NET = "MobilenetV1"
STEM_SCOPE = f"{NET}/Conv2d_0"

# (pointwise depth, depthwise stride) of the 13 separable layers Conv2d_1 .. Conv2d_13.
SEPARABLE_LAYERS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]


def v1_width(channels: int, alpha: float) -> int:
    """slim's depth(d) = max(int(d * alpha), min_depth=8): truncation, not rounding."""
    return max(int(channels * alpha), 8)


def v1_stem_width(alpha: float) -> int:
    return v1_width(32, alpha)


def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, include_top=True, weights=None, pooling=None,
              classes=1000, classifier_activation="softmax", dropout=1e-3, weights_source="ema", name=None):
    """MobileNet V1 (Howard et al. 2017) with TF-slim's exact layers and names.

    `alpha` is the width multiplier (slim's `depth_multiplier` argument); `depth_multiplier` is the
    channel multiplier of the depthwise convolutions (1 in every published model). `weights` is
    None, a catalogue name such as "mobilenet_v1_0.25_128" (official checkpoint, downloaded and
    cached) or a local slim checkpoint (tarball, folder or prefix). The output is softmax
    probabilities over `classes` (1000: ImageNet without slim's background class; 1001: slim's own),
    or logits with ``classifier_activation=None``.
    """
    L.validate_positive("depth_multiplier", depth_multiplier, integer=True)
    inputs = model_input("v1", alpha, input_shape, include_top, pooling, classes, classifier_activation, weights)
    x = L.conv_bn(inputs, v1_stem_width(alpha), 3, 2, STEM_SCOPE)
    for i, (depth, stride) in enumerate(SEPARABLE_LAYERS, start=1):
        x = L.depthwise_bn(x, stride, depth_multiplier, f"{NET}/Conv2d_{i}_depthwise")
        x = L.conv_bn(x, v1_width(depth, alpha), 1, 1, f"{NET}/Conv2d_{i}_pointwise")
    x = L.head(x, NET, include_top, pooling, classes, dropout, classifier_activation)

    return finish_model(inputs, x, name or f"mobilenet_v1_{alpha}_{inputs.shape[1]}", weights, weights_source)
