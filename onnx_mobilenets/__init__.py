"""MobileNet V1 and V2 as validated ONNX models.

The catalogue and the public API live here; ``onnx_mobilenets.conversion`` holds the TensorFlow side
(needs the ``[convert]`` extra) and ``onnx_mobilenets.runtime`` the onnxruntime side. Importing this
package never imports TensorFlow.
"""

from .catalogue import ALIASES, Preprocessing, SLIM_EVAL_PREPROCESSING, Variant, get_variant, list_variants
from .errors import (
    CheckpointError,
    ChecksumError,
    ConversionError,
    DownloadError,
    OfflineError,
    OnnxMobileNetsError,
    UnsafeArchiveError,
)

__version__ = "0.1.0"

__all__ = [
    "ALIASES",
    "Preprocessing",
    "SLIM_EVAL_PREPROCESSING",
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
]
