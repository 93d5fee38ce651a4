"""The TensorFlow side: Keras MobileNets faithful to TF-slim, checkpoint loading, ONNX export, and
Google's quantized .tflite models as QDQ ONNX.

Installed as ``onnx_mobilenets.conversion``; needs the ``[convert]`` extra (tensorflow, tf2onnx, onnx,
ai-edge-litert). The names below load their modules on first use, so that importing the package
(``python -m onnx_mobilenets.conversion`` among others) does not start TensorFlow before its log
lines can be filtered.
"""

import importlib

# public name -> the module (in this package) that defines it
_EXPORTS = {
    "MobileNet": "mobilenet_v1",
    "MobileNetV2": "mobilenet_v2",
    "build_variant": "build",
    "keras_reference": "build",
    "untrained_variant": "build",
    "export_onnx": "export",
    "logits_model": "export",
    "convert_variant": "convert",
    "DEFAULT_OPSET": "artifact",
    "ExportReport": "artifact",
    "load_slim_checkpoint": "checkpoint",
    "resolve_checkpoint": "checkpoint",
    "slim_variable_names": "checkpoint",
    "CheckpointReport": "checkpoint",
    "randomize_weights": "weights",
    "preprocessing_model": "preprocessing_graph",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
