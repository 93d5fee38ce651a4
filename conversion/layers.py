"""Building blocks shared by MobileNet V1 and V2, written to reproduce TF-slim exactly.

TF-slim details that a port must keep (each stated once, here):
- every convolution uses TF ``SAME`` padding: Keras' ``padding="same"`` on the TensorFlow backend
  has the same semantics (for a stride-2 layer on an even size it pads 0 before and 1 after; a
  symmetric pad gives the same shape but shifted results);
- BatchNorm epsilon is 0.001 and every conv but the logits has no bias;
- ReLU6, never plain ReLU;
- the logits are a 1x1 convolution with bias after global average pooling, 1001 classes with index
  0 = background.

Layer names are the slim scopes with "/" written as "." (Keras forbids "/" in names): the conv of
``MobilenetV2/expanded_conv_3/expand`` is layer ``MobilenetV2.expanded_conv_3.expand`` and its
BatchNorm is ``MobilenetV2.expanded_conv_3.expand.BatchNorm``. The checkpoint loader maps weights by
these names, never by position.
"""

from __future__ import annotations

import keras
from keras import layers

BN_EPSILON = 1e-3  # TF-slim's batch_norm epsilon
SCOPE_SEPARATOR = "."  # stands for slim's "/" inside Keras layer names
LOGITS_SCOPE = "Logits/Conv2d_1c_1x1"


def layer_name(scope: str) -> str:
    return scope.replace("/", SCOPE_SEPARATOR)


def scope_of(name: str) -> str:
    return name.replace(SCOPE_SEPARATOR, "/")


def conv_bn(x, filters: int, kernel_size: int, stride: int, scope: str, relu6: bool = True):
    """Conv (no bias) + BatchNorm (+ ReLU6), as slim.conv2d with batch_norm does."""
    x = layers.Conv2D(
        filters, kernel_size, strides=stride, padding="same", use_bias=False, name=layer_name(scope)
    )(x)
    return _bn_relu6(x, scope, relu6)


def depthwise_bn(x, stride: int, depth_multiplier: int, scope: str):
    """3x3 depthwise conv (no bias) + BatchNorm + ReLU6."""
    x = layers.DepthwiseConv2D(
        3, strides=stride, padding="same", depth_multiplier=depth_multiplier, use_bias=False,
        name=layer_name(scope),
    )(x)
    return _bn_relu6(x, scope, True)


def _bn_relu6(x, scope: str, relu6: bool):
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=layer_name(f"{scope}/BatchNorm"))(x)
    if relu6:
        x = layers.ReLU(6.0, name=layer_name(f"{scope}/relu6"))(x)
    return x


@keras.saving.register_keras_serializable(package="onnx_mobilenets")
class SpatialSqueeze(layers.Layer):
    """slim's SpatialSqueeze: (N, 1, 1, C) -> (N, C). Squeezing only axes 1 and 2 keeps a batch of 1,
    and unlike Flatten (a reshape to a runtime-computed shape) it converts to a single ONNX op
    whose output keeps the symbolic batch dimension."""

    def call(self, inputs):
        return keras.ops.squeeze(inputs, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])


def head(x, net: str, include_top: bool, pooling, classes: int, dropout_rate: float, classifier_activation):
    """Global pool, dropout and the 1x1-conv logits (slim's head), or the pooling Keras offers."""
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True, name=layer_name(f"{net}/Logits/AvgPool"))(x)
        x = layers.Dropout(dropout_rate, name=layer_name(f"{net}/Logits/Dropout"))(x)
        x = layers.Conv2D(classes, 1, padding="same", use_bias=True, name=layer_name(f"{net}/{LOGITS_SCOPE}"))(x)
        x = SpatialSqueeze(name=layer_name(f"{net}/Logits/SpatialSqueeze"))(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name=layer_name(f"{net}/Predictions"))(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name=layer_name(f"{net}/GlobalAvgPool"))(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name=layer_name(f"{net}/GlobalMaxPool"))(x)
    return x


def validate_common(input_shape, include_top: bool, pooling, classes: int, classifier_activation, weights):
    """Check the Keras-applications-style arguments shared by both families; return the input shape."""
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "MobileNet ports support only the 'channels_last' data format (TF-slim's NHWC), "
            f"but keras.config.image_data_format() is {keras.config.image_data_format()!r}"
        )
    if input_shape is None:
        input_shape = (224, 224, 3)
    try:
        input_shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a (height, width, 3) tuple, got {input_shape!r}") from None
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(f"input_shape must be (height, width, 3) for RGB input, got {input_shape!r}")
    for side in input_shape[:2]:
        if side is not None and (not isinstance(side, int) or side < 32):
            raise ValueError(
                f"input height and width must be integers of at least 32 pixels (or None), got {input_shape!r}"
            )
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if weights is not None and include_top and classes not in (1000, 1001):
        raise ValueError(
            f"pretrained slim weights have 1001 classes (background + 1000 ImageNet); with include_top=True "
            f"classes must be 1000 (background dropped) or 1001, got {classes}"
        )
    if classifier_activation not in (None, "softmax"):
        raise ValueError(f"classifier_activation must be 'softmax' or None (logits), got {classifier_activation!r}")
    return input_shape


def validate_positive(name: str, value, integer: bool = False):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
