"""Package exceptions: one per failure family, so callers can catch exactly what they mean."""


class OnnxMobileNetsError(Exception):
    """Base class of every exception this package raises on purpose."""


class DownloadError(OnnxMobileNetsError):
    """A file could not be fetched (network failure, HTTP error, offline mode)."""


class OfflineError(DownloadError):
    """A download was needed while ONNX_MOBILENETS_OFFLINE=1 forbids the network."""


class ChecksumError(DownloadError):
    """A file's SHA-256 is not the expected one (download corrupted, or the file was tampered with)."""


class UnsafeArchiveError(OnnxMobileNetsError):
    """An archive holds a member that would escape the extraction folder or is not a plain file."""


class CheckpointError(OnnxMobileNetsError):
    """A TF-slim checkpoint does not fit the model: missing, unused or mis-shaped variables."""


class ConversionError(OnnxMobileNetsError):
    """An exported ONNX model failed one of the validation gates."""

    def __init__(self, gate: str, message: str):
        super().__init__(f"[{gate}] {message}")
        self.gate = gate


class InvalidImageError(OnnxMobileNetsError, ValueError):
    """An input is not a usable image: unreadable, empty, truncated, too large, or a bad array."""


class InvalidModelError(OnnxMobileNetsError, ValueError):
    """An .onnx file is corrupt, or is not a MobileNet artifact made by this package."""


class ModelNotFoundError(OnnxMobileNetsError, FileNotFoundError):
    """A model name could not be resolved to a file; the message says which command gets it."""


class ProviderError(OnnxMobileNetsError):
    """A requested onnxruntime execution provider is missing or did not bind."""
