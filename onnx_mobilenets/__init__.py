"""MobileNet V1 and V2 as validated ONNX models.

The catalogue and the public API live here; ``onnx_mobilenets.conversion`` holds the TensorFlow side
(needs the ``[convert]`` extra) and ``onnx_mobilenets.runtime`` the onnxruntime side. Importing this
package never imports TensorFlow.
"""

from .catalogue import ALIASES, Variant, get_variant, list_variants
from .errors import (
    CheckpointError,
    ChecksumError,
    ConversionError,
    DownloadError,
    InvalidImageError,
    InvalidModelError,
    ModelNotFoundError,
    OfflineError,
    OnnxMobileNetsError,
    ProviderError,
    UnsafeArchiveError,
)
from .preprocessing import DEFAULT_PREPROCESSING, Preprocessing

__version__ = "0.1.0"


def __getattr__(name):
    # The runtime imports onnxruntime; load it on first use so `import onnx_mobilenets` stays light.
    if name in ("OnnxMobileNet", "Prediction", "StreamResult"):
        from . import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'onnx_mobilenets' has no attribute {name!r}")


__all__ = [
    "OnnxMobileNet",
    "Prediction",
    "StreamResult",
    "ALIASES",
    "Preprocessing",
    "DEFAULT_PREPROCESSING",
    "Variant",
    "get_variant",
    "list_variants",
    "OnnxMobileNetsError",
    "DownloadError",
    "OfflineError",
    "ChecksumError",
    "UnsafeArchiveError",
    "CheckpointError",
    "ConversionError",
    "InvalidImageError",
    "InvalidModelError",
    "ModelNotFoundError",
    "ProviderError",
]
