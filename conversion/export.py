"""A Keras MobileNet -> ONNX with tf2onnx, validated: the float artifacts' graph and parity gate.

The graph: tf2onnx's conversion of the logits sub-model (and a softmax), cleaned up
(`onnx_mobilenets.conversion.graph`); the gates and the writing are every artifact's
(`onnx_mobilenets.conversion.artifact`), with the clean-graph census of a float MobileNet and the
parity gate against Keras: logits and log-probabilities within the float32 error bound of
`onnx_mobilenets.parity.Tolerance` on every input, same top-1 wherever the reference's two best
classes are clearly apart.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import catalogue, contract
from onnx_mobilenets.contract import DEFAULT_PREPROCESSING
from onnx_mobilenets.errors import ConversionError
from onnx_mobilenets.parity import GOLDEN_COUNT, check, parity_images, parity_inputs, softmax, tolerance_for
from onnx_mobilenets.preprocessing import DEFAULT, check_name, network_input

from .artifact import (
    DEFAULT_OPSET,
    INPUT_NAME,
    ExportReport,
    check_census,
    check_opset,
    check_structure,
    node_census,
    runtime_gate,
    versions,
    write_artifact,
)
from .graph import name_inputs, replace_uses
from .graph import simplify as simplify_graph
from .layers import layer_name
from .preprocessing_graph import PREPROCESSING_OPS, with_preprocessing

__all__ = ["export_onnx", "logits_model", "DEFAULT_OPSET", "ExportReport"]

# The only ops a clean float MobileNet graph needs: BatchNorm folded into Conv weights and bias, SAME
# padding inside the Conv attributes, ReLU6 as Clip, residual Add, the head (pool, squeeze, the
# logits as Gemm, softmax), at most one layout Transpose.
CLEAN_OPS = ("Conv", "Clip", "Add", "GlobalAveragePool", "Squeeze", "Gemm", "Softmax", "Transpose")


def export_onnx(
    model,
    path,
    opset: int = DEFAULT_OPSET,
    *,
    logits: bool = False,
    nchw: bool = False,
    images: Optional[np.ndarray] = None,
    variant: Optional[catalogue.Variant] = None,
    weights: Optional[dict] = None,
    preprocessing: str = DEFAULT,
    image_input: bool = False,
) -> ExportReport:
    """Export a classifier built by `MobileNet`/`MobileNetV2` to `path`, validated.

    The input is ``images``, float32 ``[batch, R, R, 3]`` (``[batch, 3, R, R]`` with `nchw`); the
    output is ``probabilities`` ``[batch, classes]``, or ``logits`` with `logits`. `images`: extra
    real, preprocessed NHWC images for the parity gate. `variant` and `weights` (provenance: source,
    sha256, weights_source, or random) go into the metadata. `preprocessing` ("default" or "slim")
    is the one the artifact records; with `image_input` it is inside the model, whose input is then
    the decoded image (``image``, uint8 ``[batch, height, width, 3]``).
    """
    check_opset(opset)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the output path must end in .onnx, got {path}")
    head = logits_model(model)
    resolution = _square_resolution(model)
    output = "logits" if logits else "probabilities"
    input_contract = dataclasses.replace(DEFAULT_PREPROCESSING, name=check_name(preprocessing),
                                         layout="NCHW" if nchw else "NHWC", image_input=image_input)
    family = variant.family if variant else model_family(model)

    proto = _convert(head, resolution, opset, output, nchw)
    check_structure(proto, opset)
    check_census(node_census(proto), CLEAN_OPS, transposes=range(2))
    parity, golden = check_parity(head, proto, output, nchw, resolution, family, images)
    if image_input:
        proto = with_preprocessing(proto, resolution, input_contract, opset)
        check_structure(proto, opset, image_input=True)
        check_census(node_census(proto), CLEAN_OPS + PREPROCESSING_OPS, transposes=range(2))
        parity["image_input"], golden = check_image_parity(head, proto, output, input_contract, resolution, family)
    metadata = contract.artifact_metadata(
        variant=variant.name if variant else model.name, family=family, alpha=variant.alpha if variant else "",
        resolution=resolution, output=output, classes=int(model.output_shape[-1]), input_contract=input_contract,
        weights=weights or {"random": False, "source": "unknown"}, versions=versions("tensorflow", "tf2onnx", "onnx"),
        opset=opset, parity=parity, golden=contract.golden_record(golden, "logits", resolution, image_input))
    return write_artifact(proto, path, metadata, opset=opset, output=output, layout=input_contract.layout,
                          census=node_census(proto), parity=parity)


def logits_model(model):
    """The sub-model that ends at the logits (before softmax)."""
    import keras

    for net in ("MobilenetV1", "MobilenetV2"):
        try:
            squeeze = model.get_layer(layer_name(f"{net}/Logits/SpatialSqueeze"))
        except ValueError:
            continue
        return keras.Model(model.inputs[0], squeeze.output, name=f"{model.name}_logits")
    raise ValueError(f"model {model.name!r} has no classifier head (build it with include_top=True)")


def model_family(model) -> str:
    """"v1" or "v2", from the slim scope names of the model's layers."""
    for layer in model.layers:
        if layer.name.startswith("MobilenetV1"):
            return "v1"
        if layer.name.startswith("MobilenetV2"):
            return "v2"
    raise ValueError(f"model {model.name!r} is not a MobileNet built by onnx_mobilenets.conversion")


def _square_resolution(model) -> int:
    _, height, width, _ = model.input_shape
    if height is None or width is None or height != width:
        raise ValueError(f"ONNX export needs a fixed square input, got {model.input_shape}")
    return height


def _convert(head, resolution: int, opset: int, output: str, nchw: bool):
    import tensorflow as tf
    import tf2onnx

    shape = (None, 3, resolution, resolution) if nchw else (None, resolution, resolution, 3)
    spec = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(images):
        x = tf.transpose(images, [0, 2, 3, 1]) if nchw else images
        y = head(x, training=False)
        return tf.nn.softmax(y) if output == "probabilities" else y

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises many types
        raise ConversionError("tf2onnx", f"tf2onnx could not convert the model: {e}") from e
    proto = _tidy(proto, output)
    simplify_graph(proto)
    return proto


def _tidy(proto, output: str):
    """Name the output, then the input and batch as every artifact has them (`graph.name_inputs`)."""
    graph = proto.graph
    if len(graph.output) != 1 or len(graph.input) != 1:
        raise ConversionError(
            "tf2onnx", f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}"
        )
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [output if n == old else n for n in node.output]
    replace_uses(graph, old, output)
    graph.output[0].name = output
    name_inputs(proto)
    return proto


def check_parity(head, proto, output: str, nchw: bool, resolution: int, family: str, images=None) -> tuple:
    """Gate: onnxruntime agrees with Keras on logits, probabilities and top-1, within the float32
    error bound for this network (`onnx_mobilenets.parity.Tolerance`).

    Returns the parity numbers and Keras' logits on the golden input set (the first `GOLDEN_COUNT`
    parity inputs), which the artifact records for checks without TensorFlow.
    """
    inputs = parity_inputs(resolution)
    if images is not None:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3):
            raise ValueError(f"parity images must be (N, {resolution}, {resolution}, 3), got {images.shape}")
        inputs = np.concatenate([inputs, images])
    keras_logits = np.asarray(head(inputs, training=False), np.float32)
    feed = np.ascontiguousarray(np.transpose(inputs, (0, 3, 1, 2)) if nchw else inputs)
    onnx_logits, onnx_probs = _logits_and_probabilities(proto, output, [feed])
    return compare_with_reference(keras_logits, onnx_logits, onnx_probs, family), keras_logits[:GOLDEN_COUNT]


def check_image_parity(head, proto, output: str, input_contract, resolution: int, family: str) -> tuple:
    """Gate "image_input": the image-in model on images of many sizes (`parity.parity_images`), one
    at a time, agrees with Keras on what the preprocessing's NumPy twin makes of them. Returns the
    parity numbers and Keras' logits (the golden record of an image-in artifact)."""
    images = parity_images(resolution)
    twin = dataclasses.replace(input_contract, layout="NHWC")  # what Keras takes
    inputs = np.stack([network_input(image, resolution, twin) for image in images])
    keras_logits = np.asarray(head(inputs, training=False), np.float32)
    onnx_logits, onnx_probs = _logits_and_probabilities(proto, output, [image[np.newaxis] for image in images])
    return compare_with_reference(keras_logits, onnx_logits, onnx_probs, family), keras_logits


def _logits_and_probabilities(proto, output: str, feeds: list) -> tuple:
    """The model's logits (the Softmax input) and probabilities on each feed, concatenated."""
    import onnx

    probe = copy.deepcopy(proto)  # a validation copy with the logits as a second output
    if output == "probabilities":
        softmax_node = next(n for n in probe.graph.node if output in n.output)
        logits = onnx.helper.make_tensor_value_info(softmax_node.input[0], onnx.TensorProto.FLOAT, None)
        probe.graph.output.append(logits)
    session = runtime_gate(probe.SerializeToString())
    name = session.get_inputs()[0].name
    results = [session.run(None, {name: feed}) for feed in feeds]
    if output == "probabilities":
        return np.concatenate([r[1] for r in results]), np.concatenate([r[0] for r in results])
    logits = np.concatenate([r[0] for r in results])
    return logits, softmax(logits.astype(np.float64))


def compare_with_reference(reference_logits, logits, probabilities, family: str) -> dict:
    """The parity numbers of ONNX logits and probabilities against reference logits; raises
    ConversionError("parity") naming each bound exceeded."""
    tolerance = tolerance_for(family, "cpu")
    by_logits = check(reference_logits, logits, "logits", tolerance)
    by_log_probabilities = check(reference_logits, probabilities, "probabilities", tolerance)
    problems = by_logits.problems() + [p for p in by_log_probabilities.problems() if p not in by_logits.problems()]
    if problems:
        raise ConversionError("parity", "; ".join(problems) + f" over {by_logits.inputs} inputs")
    return {
        "inputs": by_logits.inputs,
        "top1_agreement": by_logits.top1_agreement,
        "logits": by_logits.as_dict(),
        "log_probabilities": by_log_probabilities.as_dict(),
        "tolerance": {"depth": tolerance.depth, "factor": tolerance.factor, "unit_roundoff": tolerance.unit_roundoff},
    }
