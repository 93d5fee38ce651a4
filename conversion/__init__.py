"""The TensorFlow side: Keras MobileNets faithful to TF-slim, checkpoint loading, ONNX export.

Installed as ``onnx_mobilenets.conversion``; needs the ``[convert]`` extra (tensorflow, tf2onnx, onnx).
"""

from onnx_mobilenets import catalogue

from .checkpoint import CheckpointReport, load_slim_checkpoint, resolve_checkpoint, slim_variable_names
from .convert import convert_variant
from .export import DEFAULT_OPSET, ExportReport, export_onnx
from .mobilenet_v1 import MobileNet
from .mobilenet_v2 import MobileNetV2

__all__ = [
    "MobileNet",
    "MobileNetV2",
    "build_variant",
    "export_onnx",
    "convert_variant",
    "DEFAULT_OPSET",
    "ExportReport",
    "load_slim_checkpoint",
    "resolve_checkpoint",
    "slim_variable_names",
    "CheckpointReport",
]


def build_variant(name: str, weights="official", **kwargs):
    """The Keras model of catalogue variant `name` at its resolution.

    `weights`: "official" (the variant's own checkpoint, downloaded and cached), a local checkpoint
    (tarball, folder or prefix), or None for random weights. Other keyword arguments go to the builder.
    """
    variant = catalogue.get_variant(name)
    if variant.quantized:
        raise ValueError(f"{variant.name} is Google's uint8 TFLite model, not a Keras checkpoint: convert it with "
                         f"`onnx-mobilenets convert {variant.name}`, or build {variant.name[:-len(catalogue.QUANT_SUFFIX)]}")
    builder = MobileNet if variant.family == "v1" else MobileNetV2
    if weights == "official":
        weights = variant.name
    kwargs.setdefault("input_shape", variant.input_shape)
    kwargs.setdefault("name", variant.name)
    return builder(alpha=variant.alpha, weights=weights, **kwargs)
