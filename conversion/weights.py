"""What the two model builders share around the architecture: argument checks, the input, and
the `weights=` argument (None, a catalogue name, or a local checkpoint); plus random weights."""

from __future__ import annotations

import os

from onnx_mobilenets import catalogue

from . import layers as L
from .checkpoint import load_slim_checkpoint


def model_input(family: str, alpha, input_shape, include_top, pooling, classes, classifier_activation, weights):
    """Check the shared arguments and return the Keras input; without `input_shape`, a catalogue
    name in `weights` gives its variant's resolution (else 224)."""
    import keras

    L.validate_positive("alpha", alpha)
    variant = catalogue_variant_for(weights, family, alpha)
    if input_shape is None and variant is not None:
        input_shape = variant.input_shape
    input_shape = L.validate_common(input_shape, include_top, pooling, classes, classifier_activation, weights)
    return keras.Input(shape=input_shape, name="images")


def finish_model(inputs, outputs, name: str, weights, weights_source: str):
    """The Keras model, built; then the slim checkpoint loaded when `weights` names one."""
    import keras

    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        model.checkpoint_report = load_slim_checkpoint(model, weights, weights_source)
    return model


def catalogue_variant_for(weights, family: str, alpha: float):
    """The catalogue variant named by `weights`, checked against the model being built; else None.

    A path that exists is a local checkpoint, not a name. A name of the other family, or of another
    alpha, is refused here, before anything is built or downloaded.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, a catalogue name or a checkpoint path, got {weights!r}")
    if not catalogue.names_a_variant(weights):
        return None
    variant = catalogue.get_variant(weights)
    if variant.quantized:
        raise ValueError(f"weights {weights!r} are Google's uint8 TFLite model, not a slim checkpoint")
    if variant.family != family:
        raise ValueError(
            f"weights {weights!r} are a MobileNet {variant.family.upper()}; this builds a {family.upper()}"
        )
    if variant.alpha != alpha:
        raise ValueError(f"weights {weights!r} need alpha={variant.alpha}, got alpha={alpha}")
    return variant


def randomize_weights(model, seed: int = 0) -> None:
    """Give `model` untrained but realistically scaled weights, deterministic in `seed`.

    Keras' fresh BatchNorm (identity statistics) and Glorot kernels make near-uniform outputs that
    hide numeric differences. Here: He-scaled kernels and non-trivial BatchNorm statistics, with
    gammas below 1 so activations stay O(1) through 17 blocks instead of growing (which would make
    float32 round-off larger than in any trained network), and a wider logits layer so the
    outputs are spread like a trained classifier's (logits of a few units, distinct top-1).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.name == "kernel":
            # Conv2D kernel (kh, kw, in, out); DepthwiseConv2D kernel (kh, kw, in, multiplier).
            depthwise = "depthwise" in weight.path
            fan_in = shape[0] * shape[1] * (1 if depthwise else shape[2])
            gain = 3.0 if "Logits" in weight.path else 1.0
            value = rng.normal(0.0, gain * np.sqrt(2.0 / fan_in), shape)
        elif weight.name == "gamma":
            value = rng.uniform(0.5, 1.0, shape)
        elif weight.name == "moving_variance":
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, bias
            value = rng.normal(0.0, 0.1, shape)
        weight.assign(value.astype("float32"))
