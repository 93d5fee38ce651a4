"""The catalogue of published MobileNet variants: the single source of truth.

Every other part of the package (model builders, converter, downloader, runtime, command line,
README table, tests) reads this table instead of restating names, URLs or numbers.
Facts come from TF-slim's `mobilenet_v1.md` and `nets/mobilenet/README.md` (accuracy, MACs,
parameters) and from the Open Model Zoo / TensorFlow workspace manifests (SHA-256).

Each of the 38 float checkpoints has a quantization-aware-trained uint8 sibling, published by Google
as a fully quantized ``.tflite`` inside a release tarball: ``NAME_quant`` (precision "uint8").
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Optional

from .preprocessing import DEFAULT_PREPROCESSING, QUANTIZED_PREPROCESSING, Preprocessing

__all__ = [
    "Variant",
    "ALIASES",
    "list_variants",
    "get_variant",
    "names_a_variant",
]


@dataclass(frozen=True)
class Variant:
    """One published TF-slim ImageNet MobileNet: a float checkpoint, or its uint8 `.tflite` sibling."""

    name: str  # canonical, as Google names it: mobilenet_v2_1.0_224, mobilenet_v2_1.0_224_quant
    family: str  # "v1" or "v2"
    alpha: float  # width multiplier (TF-slim calls it depth_multiplier)
    resolution: int
    checkpoint_url: str  # the release tarball (for "uint8": the one holding the .tflite)
    checkpoint_sha256: Optional[str]  # None where no checksum is published
    top1: Optional[float]  # published ImageNet accuracy, percent; None where Google publishes none
    top5: Optional[float]
    macs_millions: int
    params_millions: float  # includes the 1001-way logits layer
    precision: str = "float32"  # or "uint8": Google's quantization-aware-trained TFLite model

    @property
    def checkpoint_filename(self) -> str:
        return self.checkpoint_url.rsplit("/", 1)[-1]

    @property
    def input_shape(self) -> tuple:
        return (self.resolution, self.resolution, 3)

    @property
    def quantized(self) -> bool:
        return self.precision == "uint8"

    @property
    def accuracy_source(self) -> Optional[tuple]:
        """(name, URL) of where Google publishes `top1` and `top5`; None where it publishes none."""
        return _ACCURACY_SOURCES[(self.family, self.precision)] if self.top1 is not None else None

    @property
    def preprocessing(self) -> Preprocessing:
        return QUANTIZED_PREPROCESSING if self.quantized else DEFAULT_PREPROCESSING


_V1_BASE_URL = "https://storage.googleapis.com/download.tensorflow.org/models/mobilenet_v1_2018_08_02/"
_V2_BASE_URL = "https://storage.googleapis.com/mobilenet_v2/checkpoints/"
PRECISIONS = ("float32", "uint8")
QUANT_SUFFIX = "_quant"

# Published SHA-256 of the tarballs; the other variants have none.
_SHA256 = {
    "mobilenet_v1_1.0_224": "2fadeabb9968ec6833bee903900dda6e61b3947200535874ce2fe42a8493abc0",
    "mobilenet_v1_0.25_128": "879ddc3e0857f3611b5cf248e36de2288c7a11ea8c2ed8a8bdded635e6010dfe",
    "mobilenet_v1_0.5_160": "6bbc9dd7892433e49b4b6ff6af2952183eaa6c1c0cb862868465377a29c77b0d",
    "mobilenet_v1_0.5_224": "98cf7a39552f73920cb99617cfa9b88d5732a87abf9ec14f7cc7f3ade1db0aaa",
    "mobilenet_v2_1.0_224": "318084bc1b63d6d7b854553e09cdf77078b1c0168be27c59a0d44253b5ed49dc",
    "mobilenet_v2_1.4_224": "a20d0c8d698502dc6a620528871c97a588885df7737556243a3412b39fce85e0",
}

# family, alpha, resolution, MACs (millions), params (millions), top-1, top-5
_TABLE = [
    ("v1", 1.0, 224, 569, 4.24, 70.9, 89.9),
    ("v1", 1.0, 192, 418, 4.24, 70.0, 89.2),
    ("v1", 1.0, 160, 291, 4.24, 68.0, 87.7),
    ("v1", 1.0, 128, 186, 4.24, 65.2, 85.8),
    ("v1", 0.75, 224, 317, 2.59, 68.4, 88.2),
    ("v1", 0.75, 192, 233, 2.59, 67.2, 87.3),
    ("v1", 0.75, 160, 162, 2.59, 65.3, 86.0),
    ("v1", 0.75, 128, 104, 2.59, 62.1, 83.9),
    ("v1", 0.5, 224, 150, 1.34, 63.3, 84.9),
    ("v1", 0.5, 192, 110, 1.34, 61.7, 83.6),
    ("v1", 0.5, 160, 77, 1.34, 59.1, 81.9),
    ("v1", 0.5, 128, 49, 1.34, 56.3, 79.4),
    ("v1", 0.25, 224, 41, 0.47, 49.8, 74.2),
    ("v1", 0.25, 192, 34, 0.47, 47.7, 72.3),
    ("v1", 0.25, 160, 21, 0.47, 45.5, 70.3),
    ("v1", 0.25, 128, 14, 0.47, 41.5, 66.3),
    ("v2", 1.4, 224, 582, 6.06, 75.0, 92.5),
    ("v2", 1.3, 224, 509, 5.34, 74.4, 92.1),
    ("v2", 1.0, 224, 300, 3.47, 71.8, 91.0),
    ("v2", 1.0, 192, 221, 3.47, 70.7, 90.1),
    ("v2", 1.0, 160, 154, 3.47, 68.8, 89.0),
    ("v2", 1.0, 128, 99, 3.47, 65.3, 86.9),
    ("v2", 1.0, 96, 56, 3.47, 60.3, 83.2),
    ("v2", 0.75, 224, 209, 2.61, 69.8, 89.6),
    ("v2", 0.75, 192, 153, 2.61, 68.7, 88.9),
    ("v2", 0.75, 160, 107, 2.61, 66.4, 87.3),
    ("v2", 0.75, 128, 69, 2.61, 63.2, 85.3),
    ("v2", 0.75, 96, 39, 2.61, 58.8, 81.6),
    ("v2", 0.5, 224, 97, 1.95, 65.4, 86.4),
    ("v2", 0.5, 192, 71, 1.95, 63.9, 85.4),
    ("v2", 0.5, 160, 50, 1.95, 61.0, 83.2),
    ("v2", 0.5, 128, 32, 1.95, 57.7, 80.8),
    ("v2", 0.5, 96, 18, 1.95, 51.2, 75.8),
    ("v2", 0.35, 224, 59, 1.66, 60.3, 82.9),
    ("v2", 0.35, 192, 43, 1.66, 58.2, 81.2),
    ("v2", 0.35, 160, 30, 1.66, 55.7, 79.1),
    ("v2", 0.35, 128, 20, 1.66, 50.8, 75.0),
    ("v2", 0.35, 96, 11, 1.66, 45.5, 70.4),
]


# Published accuracy of the quantized models: V1 from TF-slim's mobilenet_v1.md (2018_08_02 models,
# "validation on the actual TensorFlow Lite model"); (alpha, resolution) -> (top-1, top-5).
# Google's MobileNet V2 README lists the uint8 tarballs beside the float ones without an accuracy
# of their own; TensorFlow Lite's hosted-models list gives one for V2 1.0/224 only
# (Mobilenet_V2_1.0_224_quant: 70.8 %, 89.9 %), so the other V2 entries stay empty.
_QUANT_V2_ACCURACY = {(1.0, 224): (70.8, 89.9)}
_SLIM_V1 = "https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet_v1.md"
_SLIM_V2 = "https://github.com/tensorflow/models/blob/master/research/slim/nets/mobilenet/README.md"
_TFLITE_HOSTED = "https://www.tensorflow.org/lite/guide/hosted_models"
# (family, precision) -> (where the published accuracy is, its address)
_ACCURACY_SOURCES = {
    ("v1", "float32"): ("TF-slim mobilenet_v1.md", _SLIM_V1),
    ("v1", "uint8"): ("TF-slim mobilenet_v1.md (the TensorFlow Lite models)", _SLIM_V1),
    ("v2", "float32"): ("TF-slim MobileNet V2 README", _SLIM_V2),
    ("v2", "uint8"): ("TensorFlow Lite hosted models", _TFLITE_HOSTED),
}
_QUANT_ACCURACY = {
    (1.0, 224): (70.1, 88.9), (1.0, 192): (69.2, 88.3), (1.0, 160): (67.2, 86.7), (1.0, 128): (63.4, 84.2),
    (0.75, 224): (66.8, 87.0), (0.75, 192): (66.1, 86.4), (0.75, 160): (62.3, 83.8), (0.75, 128): (55.8, 78.8),
    (0.5, 224): (60.7, 83.2), (0.5, 192): (60.0, 82.2), (0.5, 160): (57.7, 80.4), (0.5, 128): (54.5, 77.7),
    (0.25, 224): (48.0, 72.8), (0.25, 192): (46.0, 71.2), (0.25, 160): (43.4, 68.5), (0.25, 128): (39.5, 64.4),
}


def _make_variant(family, alpha, resolution, macs, params, top1, top5) -> Variant:
    name = f"mobilenet_{family}_{alpha}_{resolution}"
    base_url = _V1_BASE_URL if family == "v1" else _V2_BASE_URL
    return Variant(
        name=name,
        family=family,
        alpha=alpha,
        resolution=resolution,
        checkpoint_url=f"{base_url}{name}.tgz",
        checkpoint_sha256=_SHA256.get(name),
        top1=top1,
        top5=top5,
        macs_millions=macs,
        params_millions=params,
    )


def _quantized_sibling(float_variant: Variant) -> Variant:
    """The uint8 model Google published next to a float checkpoint (no checksums are published)."""
    v = float_variant
    if v.family == "v1":
        url = f"{_V1_BASE_URL}{v.name}{QUANT_SUFFIX}.tgz"
        top1, top5 = _QUANT_ACCURACY[(v.alpha, v.resolution)]
    else:  # quantized_v2_{resolution}_{alpha * 100}.tgz, e.g. quantized_v2_96_35.tgz
        url = f"{_V2_BASE_URL}quantized_v2_{v.resolution}_{round(v.alpha * 100)}.tgz"
        top1, top5 = _QUANT_V2_ACCURACY.get((v.alpha, v.resolution), (None, None))
    return Variant(name=v.name + QUANT_SUFFIX, family=v.family, alpha=v.alpha, resolution=v.resolution,
                   checkpoint_url=url, checkpoint_sha256=None, top1=top1, top5=top5, macs_millions=v.macs_millions,
                   params_millions=v.params_millions, precision="uint8")


_FLOAT = [_make_variant(*row) for row in _TABLE]
_VARIANTS = {v.name: v for v in _FLOAT + [_quantized_sibling(v) for v in _FLOAT]}

ALIASES = {
    "v1": "mobilenet_v1_1.0_224",
    "v2": "mobilenet_v2_1.0_224",
    "v1_quant": "mobilenet_v1_1.0_224_quant",
    "v2_quant": "mobilenet_v2_1.0_224_quant",
}


def list_variants(family: Optional[str] = None, precision: Optional[str] = None) -> list:
    """All published variants, in catalogue order (the 38 float ones, then their 38 uint8 siblings);
    optionally of one family ("v1" or "v2") and one precision ("float32" or "uint8")."""
    if family is not None and family not in ("v1", "v2"):
        raise ValueError(f"family must be 'v1' or 'v2', got {family!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return [v for v in _VARIANTS.values()
            if (family is None or v.family == family) and (precision is None or v.precision == precision)]


def get_variant(name: str) -> Variant:
    """The variant called `name` (canonical name or alias); ValueError with close matches if unknown."""
    if not isinstance(name, str):
        raise TypeError(f"variant name must be a str, got {type(name).__name__}")
    canonical = ALIASES.get(name, name)
    try:
        return _VARIANTS[canonical]
    except KeyError:
        known = list(ALIASES) + list(_VARIANTS)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown MobileNet variant {name!r}.{hint} "
            f"Known: aliases {', '.join(ALIASES)} and {len(_VARIANTS)} variants "
            f"(see onnx_mobilenets.list_variants() or `onnx-mobilenets list`)."
        ) from None


# What a file a user names may end in: an artifact, a checkpoint or release tarball, a .tflite.
FILE_SUFFIXES = (".onnx", ".tgz", ".tar", ".gz", ".index", ".tflite", ".ckpt")


def names_a_variant(value) -> bool:
    """Whether `value`, as a user gave it, names a variant (a name or alias) rather than a file: a str
    with no path separator and no file suffix, that is not an existing path."""
    return (isinstance(value, str) and "/" not in value and os.sep not in value
            and not value.endswith(FILE_SUFFIXES) and not os.path.exists(value))
