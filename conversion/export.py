"""Keras MobileNet -> ONNX with tf2onnx, behind validation gates, with self-describing metadata.

Every export runs every gate; a failed gate raises `ConversionError` naming the gate and the
numbers, and nothing is left at the destination path.

Gates, in order: checker (`onnx.checker.check_model(full_check=True)`), shapes (strict shape
inference, every shape known except the symbolic `batch`), opset (only the default domain, imported
at exactly the requested opset, no op newer than it), graph (BatchNorm folded, SAME padding in the
Conv nodes, at most one Transpose, no Identity/Dropout), runtime (loads in onnxruntime), parity
(logits and log-probabilities within the float32 error bound of `onnx_mobilenets.parity.Tolerance`
of Keras' on every input, same top-1 wherever the reference's two best classes are clearly apart).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import copy
import json
import logging
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import __version__, catalogue
from onnx_mobilenets._files import atomic_write
from onnx_mobilenets.contract import DEFAULT_PREPROCESSING
from onnx_mobilenets.errors import ConversionError
from onnx_mobilenets.labels import imagenet_classes
from onnx_mobilenets.parity import GOLDEN_COUNT, GOLDEN_SEED, check, parity_inputs, softmax, tolerance_for

from .graph import simplify as simplify_graph
from .layers import layer_name

logger = logging.getLogger(__name__)

# Opset 17: accepted by onnxruntime >= 1.13, TensorRT >= 8.6 and OpenVINO >= 2022.3, and every op a
# MobileNet needs has been stable since opset 13; newer opsets add nothing it uses.
DEFAULT_OPSET = 17
MIN_OPSET = 13


def newest_opset() -> int:
    """The newest opset the installed tf2onnx can target (18 for tf2onnx 1.16 and 1.17)."""
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)

INPUT_NAME = "images"
BATCH_DIM = "batch"

# The only ops a clean MobileNet graph needs: BatchNorm folded into Conv weights and bias, SAME
# padding inside the Conv attributes, ReLU6 as Clip, residual Add, the head (pool, squeeze, the
# logits as Gemm, softmax), one layout Transpose.
CLEAN_OPS = ("Conv", "Clip", "Add", "GlobalAveragePool", "Squeeze", "Gemm", "Softmax", "Transpose")


@dataclass
class ExportReport:
    path: str
    opset: int
    output: str  # "probabilities" or "logits"
    layout: str  # "NHWC" or "NCHW"
    sha256: str
    size: int
    census: dict  # op type -> node count
    parity: dict  # the parity gate's numbers
    metadata: dict = field(default_factory=dict)


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
) -> ExportReport:
    """Export a classifier built by `MobileNet`/`MobileNetV2` to `path`, validated.

    The input is ``images``, float32 ``[batch, R, R, 3]`` (``[batch, 3, R, R]`` with `nchw`); the
    output is ``probabilities`` ``[batch, classes]``, or ``logits`` with `logits`. `images`: extra
    real, preprocessed NHWC images for the parity gate. `variant` and `weights` (provenance: source,
    sha256, weights_source, or random) go into the metadata.
    """
    newest = newest_opset()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (what this tf2onnx supports), "
                         f"got {opset!r}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the output path must end in .onnx, got {path}")
    logits_model = _logits_model(model)
    resolution = _square_resolution(model)
    output = "logits" if logits else "probabilities"
    layout = "NCHW" if nchw else "NHWC"

    proto = _convert(logits_model, resolution, opset, output, nchw)
    census = node_census(proto)
    check_structure(proto, opset)
    check_clean_graph(census)
    family = variant.family if variant else model_family(model)
    parity, golden = check_parity(logits_model, proto, output, nchw, resolution, family, images)

    metadata = artifact_metadata(model, family, variant, weights, opset, output, layout, resolution, parity, golden)
    _set_metadata(proto, metadata, weights)
    data = proto.SerializeToString()
    _session(data)  # the runtime gate, on the exact bytes that will be written
    atomic_write(path, data)

    return ExportReport(
        path=str(path), opset=opset, output=output, layout=layout,
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), census=census, parity=parity, metadata=metadata,
    )


def _logits_model(model):
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


def _convert(logits_model, resolution: int, opset: int, output: str, nchw: bool):
    import tensorflow as tf
    import tf2onnx

    shape = (None, 3, resolution, resolution) if nchw else (None, resolution, resolution, 3)
    spec = (tf.TensorSpec(shape, tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=spec)
    def forward(images):
        x = tf.transpose(images, [0, 2, 3, 1]) if nchw else images
        y = logits_model(x, training=False)
        return tf.nn.softmax(y) if output == "probabilities" else y

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    except Exception as e:  # tf2onnx raises many types
        raise ConversionError("tf2onnx", f"tf2onnx could not convert the model: {e}") from e
    proto = _tidy(proto, output)
    simplify_graph(proto)
    return proto


def _tidy(proto, output: str):
    """Name the output, make the batch dimension `batch`, drop unused opset imports."""
    graph = proto.graph
    if len(graph.output) != 1 or len(graph.input) != 1:
        raise ConversionError("tf2onnx", f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}")
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [output if n == old else n for n in node.output]
        node.input[:] = [output if n == old else n for n in node.input]
    graph.output[0].name = output
    graph.input[0].name = INPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM
    del graph.value_info[:]  # tf2onnx's intermediate shapes name the batch unk__N; re-inferred below
    used_domains = {n.domain for n in graph.node} | {""}
    kept = [o for o in proto.opset_import if o.domain in used_domains or o.domain == "ai.onnx"]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    proto.producer_name = "onnx-mobilenets"
    proto.producer_version = __version__
    return proto


def node_census(proto) -> dict:
    return dict(sorted(collections.Counter(n.op_type for n in proto.graph.node).items()))


def check_structure(proto, opset: int) -> None:
    """Gates: checker, strict shape inference, opset."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:
        raise ConversionError("checker", str(e)) from e

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise ConversionError("shapes", f"strict shape inference failed: {e}") from e
    graph = inferred.graph
    values = list(graph.input) + list(graph.value_info) + list(graph.output)
    inferred_names = {v.name for v in values}
    for node in graph.node:
        for name in node.output:
            if name and name not in inferred_names:
                raise ConversionError("shapes", f"no shape inferred for {name!r} ({node.op_type})")
    for value in values:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            raise ConversionError("shapes", f"{value.name!r} has no known shape")
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                continue
            if not (i == 0 and dim.dim_param == BATCH_DIM):
                raise ConversionError("shapes", f"{value.name!r} dimension {i} is unknown ({dim.dim_param or '?'})")

    imports = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    if imports != {"ai.onnx": opset}:
        raise ConversionError("opset", f"opset imports are {imports}, expected only the default domain at {opset}")
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ConversionError("opset", f"node {node.name!r} uses non-standard domain {node.domain!r}")
        try:
            onnx.defs.get_schema(node.op_type, opset, "")
        except Exception:
            raise ConversionError("opset", f"op {node.op_type} does not exist at opset {opset}") from None


def check_clean_graph(census: dict) -> None:
    """Gate: BatchNorm folded, padding inside the Convs, at most the one input Transpose."""
    leftovers = {op: n for op, n in census.items() if op not in CLEAN_OPS}
    if leftovers:
        raise ConversionError("graph", f"unexpected nodes left in the graph: {leftovers} (census {census})")
    if census.get("Transpose", 0) > 1:
        raise ConversionError("graph", f"{census['Transpose']} Transpose nodes, at most 1 allowed (census {census})")


def _session(data: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ConversionError("runtime", f"onnxruntime cannot load the model: {e}") from e


def check_parity(logits_model, proto, output: str, nchw: bool, resolution: int, family: str, images=None) -> tuple:
    """Gate: onnxruntime agrees with Keras on logits, probabilities and top-1, within the float32
    error bound for this network (`onnx_mobilenets.parity.Tolerance`).

    Returns the parity numbers and Keras' logits on the golden input set (the first `GOLDEN_COUNT`
    parity inputs), which the artifact records for checks without TensorFlow.
    """
    import onnx

    inputs = parity_inputs(resolution)
    if images is not None:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (resolution, resolution, 3):
            raise ValueError(f"parity images must be (N, {resolution}, {resolution}, 3), got {images.shape}")
        inputs = np.concatenate([inputs, images])
    keras_logits = np.asarray(logits_model(inputs, training=False), np.float32)

    # Expose the logits (the Softmax input) as a second output of a validation copy.
    probe = copy.deepcopy(proto)
    if output == "probabilities":
        softmax_node = next(n for n in probe.graph.node if output in n.output)
        probe.graph.output.append(onnx.helper.make_tensor_value_info(softmax_node.input[0], onnx.TensorProto.FLOAT, None))
    session = _session(probe.SerializeToString())
    feed = np.transpose(inputs, (0, 3, 1, 2)) if nchw else inputs
    results = session.run(None, {INPUT_NAME: np.ascontiguousarray(feed)})
    if output == "probabilities":
        onnx_probs, onnx_logits = results
    else:
        onnx_logits = results[0]
        onnx_probs = softmax(onnx_logits.astype(np.float64))
    return compare_with_reference(keras_logits, onnx_logits, onnx_probs, family), keras_logits[:GOLDEN_COUNT]


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


def artifact_metadata(model, family, variant, weights, opset, output, layout, resolution, parity, golden) -> dict:
    """Everything a user needs to run the artifact correctly, as strings for `metadata_props`."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    classes = int(model.output_shape[-1])
    prep = dataclasses.replace(DEFAULT_PREPROCESSING, layout=layout)
    labels = [list(c) for c in imagenet_classes()]
    if classes == 1001:
        labels = [["background", "background"]] + labels
    elif classes != 1000:
        labels = None
    metadata = {
        "variant": variant.name if variant else model.name,
        "family": family,
        "alpha": str(variant.alpha) if variant else "",
        "resolution": str(resolution),
        "output": output,
        "classes": str(classes),
        "preprocessing": prep.to_json(),
        "labels": json.dumps(labels),
        "weights": json.dumps(weights or {"random": False, "source": "unknown"}),
        "versions": json.dumps({"onnx_mobilenets": __version__, "tensorflow": tf.__version__,
                                "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__}),
        "opset": str(opset),
        "parity": json.dumps(parity),
        "golden": json.dumps({
            "inputs": f"onnx_mobilenets.parity.parity_inputs({resolution}, count={GOLDEN_COUNT}, seed={GOLDEN_SEED})",
            "seed": GOLDEN_SEED, "count": GOLDEN_COUNT, "values": "logits", "dtype": "<f4",
            "shape": list(golden.shape), "values_base64": base64.b64encode(golden.astype("<f4").tobytes()).decode("ascii"),
        }),
    }
    return metadata


def _set_metadata(proto, metadata: dict, weights: Optional[dict]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    doc = f"{metadata['variant']}: MobileNet {metadata['family'].upper()} ImageNet classifier made by onnx-mobilenets."
    if weights and weights.get("random"):
        doc = "UNTRAINED RANDOM WEIGHTS, NOT AN IMAGENET CLASSIFIER (for tests and benchmarks). " + doc
    proto.doc_string = doc
