"""A Keras MobileNet -> ONNX with tf2onnx: the float artifacts' graph and their parity gate.

The graph: tf2onnx's conversion of the logits sub-model (and a softmax), cleaned up
(`onnx_mobilenets.conversion.graph`), holding only the ops of a clean float MobileNet. The parity
gate: onnxruntime against Keras, logits and log-probabilities within the float32 error bound of
`onnx_mobilenets.parity.Tolerance` on every input, same top-1 wherever the reference's two best
classes are clearly apart. The rest is every artifact's (`artifact.export_artifact`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import catalogue
from onnx_mobilenets.artifact import DEFAULT_OPSET, ArtifactRecord, ArtifactSpec, Weights, judge
from onnx_mobilenets.errors import ConversionError
from onnx_mobilenets.parity import GOLDEN_COUNT, softmax, tolerance_for
from onnx_mobilenets.preprocessing import DEFAULT

from .architecture import family_of
from .artifact import (
    ExportReport,
    GraphMaker,
    check_opset,
    export_artifact,
    passed,
    probe,
    running_tf2onnx,
    runtime_gate,
    versions,
)
from .float16 import to_float16
from .graph import INPUT_NAME, fix_batch, name_inputs, replace_uses
from .graph import simplify as simplify_graph
from .layers import layer_name

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
    weights=None,
    preprocessing: str = DEFAULT,
    image_input: bool = False,
    float16: bool = False,
) -> ExportReport:
    """Export a classifier built by `MobileNet`/`MobileNetV2` to `path`, validated.

    The input is ``images``, float32 ``[batch, R, R, 3]`` (``[batch, 3, R, R]`` with `nchw`); the
    output is ``probabilities`` ``[batch, classes]``, or ``logits`` with `logits`. `images`: extra
    real, preprocessed NHWC images for the parity gate. `variant` and `weights` (the provenance: a
    `Weights` record or its dict) go into the metadata. `preprocessing` ("default" or "slim") is
    the one the artifact records; with `image_input` it is inside the model, whose input is then
    the decoded image (``image``, uint8 ``[batch, height, width, 3]``). With `float16` the network
    computes in float16 (`onnx_mobilenets.conversion.float16`), judged by the float16 bound.
    """
    check_opset(opset)
    if Path(path).suffix != ".onnx":
        raise ValueError(f"the output path must end in .onnx, got {path}")
    spec = ArtifactSpec(variant.name if variant else model.name, "float32", preprocessing, image_input,
                        "NCHW" if nchw else "NHWC", "logits" if logits else "probabilities", opset, float16=float16)
    if weights is None:
        weights = Weights(source="unknown")
    elif isinstance(weights, dict):
        weights = Weights.from_dict(weights)
    return export_artifact(KerasGraph(model, variant, weights), spec, path, images)


class KerasGraph(GraphMaker):
    """A Keras MobileNet through tf2onnx; its reference: the Keras model itself."""

    allowed_ops = CLEAN_OPS
    transposes = range(2)
    golden_kind = "logits"

    def __init__(self, model, variant: Optional[catalogue.Variant], weights: Weights):
        self.head = logits_model(model)  # before anything is converted: a model without a head is refused
        self.model, self.variant, self.weights = model, variant, weights
        self.resolution = _square_resolution(model)
        self.family = variant.family if variant else model_family(model)

    def graph(self, spec: ArtifactSpec):
        proto = _convert(self.head, self.resolution, spec.opset, spec.output, spec.layout == "NCHW", spec.batch)
        return to_float16(proto) if spec.float16 else proto

    def record(self, spec: ArtifactSpec, proto) -> ArtifactRecord:
        return ArtifactRecord(spec=spec, family=self.family, alpha=str(self.variant.alpha) if self.variant else "",
                              resolution=self.resolution, classes=int(self.model.output_shape[-1]),
                              weights=self.weights, versions=versions("tensorflow", "tf2onnx", "onnx"))

    def check_parity(self, record: ArtifactRecord, proto, inputs: np.ndarray, feeds: list) -> tuple:
        """onnxruntime agrees with Keras on logits, probabilities and top-1, within the float32
        error bound for this network."""
        keras_logits = np.asarray(self.head(inputs, training=False), np.float32)
        logits, probabilities = _logits_and_probabilities(proto, record.spec.output, feeds)
        by_logits, by_log_probabilities = passed(judge(record, logits, output="logits", reference=keras_logits),
                                                 judge(record, probabilities, output="probabilities",
                                                       reference=keras_logits))
        tolerance = tolerance_for(record.family, "cpu", record.spec.float16)
        parity = {
            "inputs": by_logits["inputs"], "top1_agreement": by_logits["top1_agreement"], "logits": by_logits,
            "log_probabilities": by_log_probabilities,
            "tolerance": {"depth": tolerance.depth, "factor": tolerance.factor,
                          "unit_roundoff": tolerance.unit_roundoff},
        }
        return parity, keras_logits[:GOLDEN_COUNT]


def logits_model(model):
    """The sub-model that ends at the logits (before softmax)."""
    import keras

    family = family_of(layer.name for layer in model.layers)
    try:
        squeeze = model.get_layer(layer_name(f"{family.scope}/Logits/SpatialSqueeze")) if family else None
    except ValueError:
        squeeze = None
    if squeeze is None:
        raise ValueError(f"model {model.name!r} has no classifier head (build it with include_top=True)")
    return keras.Model(model.inputs[0], squeeze.output, name=f"{model.name}_logits")


def model_family(model) -> str:
    """"v1" or "v2", from the slim scope names of the model's layers."""
    family = family_of(layer.name for layer in model.layers)
    if family is None:
        raise ValueError(f"model {model.name!r} is not a MobileNet built by onnx_mobilenets.conversion")
    return family.name


def _square_resolution(model) -> int:
    _, height, width, _ = model.input_shape
    if height is None or width is None or height != width:
        raise ValueError(f"ONNX export needs a fixed square input, got {model.input_shape}")
    return height


def _convert(head, resolution: int, opset: int, output: str, nchw: bool, batch=None):
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework import convert_to_constants

    with running_tf2onnx("the model"), _deprecation_notes_off():
        forward = traced(head, resolution, output, nchw, batch)
        if all(hasattr(convert_to_constants, name) for name in CONVERTER_INTERNALS):
            concrete = forward.get_concrete_function()
            proto, _ = tf2onnx.convert.from_graph_def(
                _frozen_graph_def(concrete), name=concrete.name, opset=opset,
                input_names=[t.name for t in concrete.inputs if t.dtype != tf.resource],
                output_names=[t.name for t in concrete.outputs])
        else:  # a TensorFlow without the internals `_frozen_graph_def` uses: tf2onnx freezes it itself
            proto, _ = tf2onnx.convert.from_function(forward, input_signature=forward.input_signature, opset=opset)
    return tidy(proto, output, batch)


def traced(head, resolution: int, output: str, nchw: bool, batch=None):
    """The tf.function tf2onnx converts: the logits model on `images` in the artifact's layout and
    batch, and the softmax where the output is probabilities."""
    import tensorflow as tf

    shape = (batch, 3, resolution, resolution) if nchw else (batch, resolution, resolution, 3)

    @tf.function(input_signature=(tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),))
    def forward(images):
        x = tf.transpose(images, [0, 2, 3, 1]) if nchw else images
        y = head(x, training=False)
        return tf.nn.softmax(y) if output == "probabilities" else y

    return forward


@contextlib.contextmanager
def _deprecation_notes_off():
    """tf2onnx's `from_graph_def` freezes the graph once more with TensorFlow 1 functions, which log
    deprecation notes (about tf2onnx's code, nothing a user can act on) to the terminal."""
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _frozen_graph_def(concrete):
    """The traced function's graph with its variables as constants, as tf2onnx's `from_function`
    freezes it (TensorFlow's converter, aggressive inlining, no control-flow lowering), but without
    the function TensorFlow would build from that graph again only for tf2onnx to read the graph
    back (a tenth of a conversion's time). The ONNX graph is the same: tests/test_export.py
    compares it with `from_function`'s. Those converter internals are private to TensorFlow: where
    a release lacks them, `_convert` uses `from_function` itself."""
    from tensorflow.python.framework import convert_to_constants
    from tf2onnx.tf_loader import fix_freezing_errors_part2

    data = convert_to_constants._FunctionConverterDataInEager(func=concrete, lower_control_flow=False,
                                                              aggressive_inlining=True)
    graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=data)
    return fix_freezing_errors_part2(graph_def)


# What `_frozen_graph_def` uses of TensorFlow's convert_to_constants (TensorFlow 2.6 to 2.21 at least).
CONVERTER_INTERNALS = ("_FunctionConverterDataInEager", "_replace_variables_by_constants")


def tidy(proto, output: str, batch=None):
    """tf2onnx's graph as every artifact has it: the output named, then the input and batch
    (`graph.name_inputs`, `graph.fix_batch`), cleaned (`graph.simplify`)."""
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
    fix_batch(proto, batch)
    simplify_graph(proto)
    return proto


def _logits_and_probabilities(proto, output: str, feeds: list) -> tuple:
    """The model's logits (the Softmax input) and probabilities on each feed, concatenated."""
    if output == "probabilities":
        softmax_node = next(n for n in proto.graph.node if output in n.output)
        checked = probe(proto, [softmax_node.input[0]])  # a validation copy with the logits as a second output
    else:
        checked = proto
    session = runtime_gate(checked.SerializeToString())
    name = session.get_inputs()[0].name
    results = [session.run(None, {name: feed}) for feed in feeds]
    if output == "probabilities":
        return np.concatenate([r[1] for r in results]), np.concatenate([r[0] for r in results])
    logits = np.concatenate([r[0] for r in results])
    return logits, softmax(logits.astype(np.float64))
