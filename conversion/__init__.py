"""The TensorFlow side: Keras MobileNets faithful to TF-slim, checkpoint loading, ONNX export, and
Google's quantized .tflite models as QDQ ONNX.

Installed as ``onnx_mobilenets.conversion``; needs the ``[convert]`` extra (tensorflow, tf2onnx, onnx,
ai-edge-litert). The names below load their modules on first use, so that importing the package
(``python -m onnx_mobilenets.conversion`` among others) does not start TensorFlow before its log
lines can be filtered.
"""

import importlib

from onnx_mobilenets import catalogue

# public name -> the module (in this package) that defines it
_EXPORTS = {
    "MobileNet": "mobilenet_v1",
    "MobileNetV2": "mobilenet_v2",
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

__all__ = ["build_variant", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_variant(name: str, weights="official", **kwargs):
    """The Keras model of catalogue variant `name` at its resolution.

    `weights`: "official" (the variant's own checkpoint, downloaded and cached), a local checkpoint
    (tarball, folder or prefix), or None for random weights. Other keyword arguments go to the builder.
    """
    from .mobilenet_v1 import MobileNet
    from .mobilenet_v2 import MobileNetV2

    variant = catalogue.get_variant(name)
    if variant.quantized:
        raise ValueError(
            f"{variant.name} is Google's uint8 TFLite model, not a Keras checkpoint: convert it with "
            f"`onnx-mobilenets convert {variant.name}`, or build {variant.name[: -len(catalogue.QUANT_SUFFIX)]}"
        )
    builder = MobileNet if variant.family == "v1" else MobileNetV2
    if weights == "official":
        weights = variant.name
    kwargs.setdefault("input_shape", variant.input_shape)
    kwargs.setdefault("name", variant.name)
    return builder(alpha=variant.alpha, weights=weights, **kwargs)
