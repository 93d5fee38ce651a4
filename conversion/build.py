"""A catalogue variant as a Keras model: built at its resolution, then its weights loaded; and the
Keras model an artifact was made from, rebuilt from its recorded provenance (`verify`'s reference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnx_mobilenets import catalogue
from onnx_mobilenets.artifact import ArtifactRecord

from .checkpoint import load_slim_checkpoint
from .weights import catalogue_variant_for, randomize_weights


def build_variant(name: str, weights="official", *, weights_source: str = "ema", sha256=None, **kwargs):
    """The Keras model of catalogue variant `name` at its resolution.

    `weights`: "official" (the variant's own checkpoint, downloaded and cached), a local checkpoint
    (tarball, folder or prefix; `sha256` its tarball's when known), or None for random weights.
    Other keyword arguments go to the builder (`MobileNet`, `MobileNetV2`).
    """
    from .mobilenet_v1 import MobileNet
    from .mobilenet_v2 import MobileNetV2

    variant = catalogue.get_variant(name)
    if variant.quantized:
        raise ValueError(
            f"{variant.name} is Google's uint8 TFLite model, not a Keras checkpoint: convert it with "
            f"`onnx-mobilenets convert {variant.name}`, or build {variant.name[: -len(catalogue.QUANT_SUFFIX)]}"
        )
    if weights == "official":
        weights = variant.name
    catalogue_variant_for(weights, variant.family, variant.alpha)  # another variant's weights: refused before building
    kwargs.setdefault("input_shape", variant.input_shape)
    kwargs.setdefault("name", variant.name)
    model = (MobileNet if variant.family == "v1" else MobileNetV2)(alpha=variant.alpha, **kwargs)
    if weights is not None:
        model.checkpoint_report = load_slim_checkpoint(model, weights, weights_source, sha256=sha256)
    return model


def untrained_variant(name: str, seed: int = 0):
    """The Keras model of catalogue variant `name` with untrained weights (`weights.randomize_weights`,
    deterministic in `seed`): with seed 0, those of `convert --random-weights`."""
    model = build_variant(name, weights=None)
    randomize_weights(model, seed)
    return model


def keras_reference(record: ArtifactRecord, inputs: np.ndarray) -> np.ndarray:
    """Logits of the Keras network an artifact was made from, rebuilt from its recorded weights
    (random, a local checkpoint, or the official one, fetched), on NHWC `inputs`."""
    from .export import logits_model

    weights, name = record.weights, record.spec.variant
    if weights.random:
        model = untrained_variant(name, int(weights.seed or 0))
    else:
        source = weights.source or ""
        official = "://" in source
        if not official and not Path(source).exists():
            raise FileNotFoundError(f"the checkpoint {source} recorded in the artifact is not on this machine")
        model = build_variant(name, weights=name if official else source,
                              weights_source=weights.weights_source or "ema")
    return np.asarray(logits_model(model)(inputs, training=False), np.float32)
