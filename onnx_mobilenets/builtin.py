"""The built-in model: the one artifact the installed package carries, so that `OnnxMobileNet()` and
`onnx-mobilenets predict IMAGE` work right after ``pip install``, with no network and no cache.

It is Google's MobileNet V2 1.0/224 quantization-aware-trained uint8 model (Apache-2.0; see NOTICE),
converted by this package's own pipeline from Google's ``.tflite``, byte for byte the one in the
official ``quantized_v2_224_100.tgz`` (`TFLITE_SHA256`), by ``tools/make_builtin_model.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .artifact import ArtifactSpec

# What `OnnxMobileNet()`, `predict` and `evaluate` run when no model is named: the built-in one.
DEFAULT_MODEL = "v2_quant"
SPEC = ArtifactSpec.of_variant(DEFAULT_MODEL)
# SHA-256 of Google's .tflite inside the official release tarball (member v2_224_100/model.tflite).
TFLITE_SHA256 = "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
PATH = Path(__file__).resolve().parent / "data" / SPEC.file_name


def builtin_path(spec: ArtifactSpec) -> Optional[Path]:
    """The built-in artifact's file when it is `spec`'s, else None."""
    return PATH if spec == SPEC and PATH.is_file() else None
