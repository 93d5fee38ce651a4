"""MobileNet V2 in Keras, exactly as TF-slim's `nets/mobilenet/mobilenet_v2.py` defines it (its
layout: `architecture.V2`)."""

from __future__ import annotations

import keras

from . import layers as L
from .architecture import V2, make_divisible
from .weights import finish_model, model_input

__all__ = ["MobileNetV2", "make_divisible", "inverted_residual"]


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
                pooling=None, classes=1000, classifier_activation="softmax", dropout=V2.dropout, weights_source="ema",
                name=None):
    """MobileNet V2 (Sandler et al. 2018) with TF-slim's exact layers, channel rounding and names.

    `alpha` is the width multiplier, `expansion_factor` the inverted-residual expansion (6 in every
    published model), `depth_multiplier` the channel multiplier of the depthwise convolutions.
    `weights`, `classes` and `classifier_activation` work as in `MobileNet`.
    """
    L.validate_positive("expansion_factor", expansion_factor)
    L.validate_positive("depth_multiplier", depth_multiplier, integer=True)
    inputs = model_input("v2", alpha, input_shape, include_top, pooling, classes, classifier_activation, weights)
    x = L.conv_bn(inputs, V2.stem_width(alpha), 3, 2, V2.stem_scope)
    index = 0
    for t, c, n, s in V2.blocks:
        for repeat in range(n):
            expansion = expansion_factor if t is None else t
            stride = s if repeat == 0 else 1
            x = inverted_residual(x, expansion, make_divisible(c * alpha), stride, depth_multiplier,
                                  V2.block_scope(index))
            index += 1
    x = L.conv_bn(x, V2.head_width(alpha), 1, 1, V2.head_scope)
    x = L.head(x, V2.scope, include_top, pooling, classes, dropout, classifier_activation)

    return finish_model(inputs, x, name or f"mobilenet_v2_{alpha}_{inputs.shape[1]}", weights, weights_source)
