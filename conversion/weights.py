"""The `weights=` argument of the model builders: None, a catalogue name, or a local checkpoint."""

from __future__ import annotations

import os

from onnx_mobilenets import catalogue


def catalogue_variant_for(weights, family: str, alpha: float):
    """The catalogue variant named by `weights`, checked against the model being built; else None.

    A path that exists is a local checkpoint, not a name. A name of the other family, or of another
    alpha, is refused here, before anything is built or downloaded.
    """
    if weights is None:
        return None
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be None, a catalogue name or a checkpoint path, got {weights!r}")
    if not isinstance(weights, str) or os.path.exists(weights) or "/" in weights or os.sep in weights:
        return None
    variant = catalogue.get_variant(weights)
    if variant.family != family:
        raise ValueError(f"weights {weights!r} are a MobileNet {variant.family.upper()}; this builds a {family.upper()}")
    if variant.alpha != alpha:
        raise ValueError(f"weights {weights!r} need alpha={variant.alpha}, got alpha={alpha}")
    return variant
