"""MobileNet V1 in Keras, exactly as TF-slim's `nets/mobilenet_v1.py` defines it (its layout:
`architecture.V1`)."""

from __future__ import annotations

from . import layers as L
from .architecture import V1, v1_width
from .weights import finish_model, model_input


def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, include_top=True, weights=None, pooling=None,
              classes=1000, classifier_activation="softmax", dropout=V1.dropout, weights_source="ema", name=None):
    """MobileNet V1 (Howard et al. 2017) with TF-slim's exact layers and names.

    `alpha` is the width multiplier (slim's `depth_multiplier` argument); `depth_multiplier` is the
    channel multiplier of the depthwise convolutions (1 in every published model). `weights` is
    None, a catalogue name such as "mobilenet_v1_0.25_128" (official checkpoint, downloaded and
    cached) or a local slim checkpoint (tarball, folder or prefix), loaded once the model is built.
    The output is softmax probabilities over `classes` (1000: ImageNet without slim's background
    class; 1001: slim's own), or logits with ``classifier_activation=None``.
    """
    L.validate_positive("depth_multiplier", depth_multiplier, integer=True)
    inputs = model_input("v1", alpha, input_shape, include_top, pooling, classes, classifier_activation, weights)
    x = L.conv_bn(inputs, V1.stem_width(alpha), 3, 2, V1.stem_scope)
    for i, (depth, stride) in enumerate(V1.blocks, start=1):
        x = L.depthwise_bn(x, stride, depth_multiplier, f"{V1.scope}/Conv2d_{i}_depthwise")
        x = L.conv_bn(x, v1_width(depth, alpha), 1, 1, f"{V1.scope}/Conv2d_{i}_pointwise")
    x = L.head(x, V1.scope, include_top, pooling, classes, dropout, classifier_activation)

    return finish_model(inputs, x, name or f"mobilenet_v1_{alpha}_{inputs.shape[1]}", weights, weights_source)
