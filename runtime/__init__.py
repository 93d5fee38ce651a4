"""The onnxruntime side: `OnnxMobileNet` and the image pipeline. Needs only onnxruntime, NumPy and
Pillow; never imports TensorFlow. Installed as ``onnx_mobilenets.runtime``."""

from .model import OnnxMobileNet, Prediction
from .stream import StreamResult

__all__ = ["OnnxMobileNet", "Prediction", "StreamResult"]
