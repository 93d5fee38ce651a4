"""The conversion pipeline's shared tail. However its graph was made (a Keras model through tf2onnx,
or Google's .tflite through tf2onnx's TFLite front end), every artifact passes the same structural
gates, records the same contract (`onnx_mobilenets.contract`) and is written the same way: loaded
by onnxruntime from the exact bytes, then written atomically, so a failure leaves nothing behind.

Gates: checker (`onnx.checker.check_model(full_check=True)`), shapes (strict shape inference, every
dimension known but the symbolic batch), opset (only the default domain, imported at exactly the
requested opset, no op newer than it), graph (only the ops the kind of graph may hold), runtime
(onnxruntime loads it); the parity gate is the graph maker's, against its own reference.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

from onnx_mobilenets import __version__, contract
from onnx_mobilenets.errors import ConversionError
from onnx_mobilenets.files import atomic_write
from onnx_mobilenets.sessions import new_session

# Opset 17: accepted by onnxruntime >= 1.13, TensorRT >= 8.6 and OpenVINO >= 2022.3, and every op a
# MobileNet needs has been stable since opset 13; newer opsets add nothing it uses.
DEFAULT_OPSET = 17
MIN_OPSET = 13
INPUT_NAME = "images"
BATCH_DIM = "batch"
IMAGE_INPUT = "image"  # of image-in artifacts
PREPROCESSING_SCOPE = "preprocessing/"  # the names of an image-in artifact's preprocessing nodes


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


def newest_opset() -> int:
    """The newest opset the installed tf2onnx can target (18 for tf2onnx 1.16 and 1.17)."""
    from tf2onnx import constants

    return max(constants.OPSET_TO_IR_VERSION)


def check_opset(opset) -> None:
    newest = newest_opset()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (what this tf2onnx supports), "
                         f"got {opset!r}")


def versions(*packages: str) -> dict:
    """The versions of onnx-mobilenets and of the named distributions that made an artifact."""
    found = {"onnx_mobilenets": __version__}
    for package in packages:
        found[package.replace("-", "_")] = importlib.metadata.version(package)
    return found


def node_census(proto) -> dict:
    return dict(sorted(collections.Counter(n.op_type for n in proto.graph.node).items()))


def check_structure(proto, opset: int, image_input: bool = False) -> None:
    """Gates: checker, strict shape inference, opset. In an image-in model the image's height and
    width, and so the preprocessing's intermediate shapes, are free; the network's are not."""
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
        if image_input and (value.name == IMAGE_INPUT or value.name.startswith(PREPROCESSING_SCOPE)):
            continue
        for i, dim in enumerate(value.type.tensor_type.shape.dim):
            # (an image-in model's batch reaches the network through the preprocessing's shapes,
            # where shape inference gives it a name of its own)
            if not dim.HasField("dim_value") and not (i == 0 and (dim.dim_param == BATCH_DIM or image_input)):
                raise ConversionError("shapes", f"{value.name!r} dimension {i} is unknown ({dim.dim_param or '?'})")
    _check_opset_imports(proto, opset)


def _check_opset_imports(proto, opset: int) -> None:
    import onnx

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


def check_census(census: dict, allowed, transposes: range) -> None:
    """Gate "graph": only `allowed` ops, and a number of Transpose nodes in `transposes`."""
    leftovers = {op: n for op, n in census.items() if op not in allowed}
    if leftovers:
        raise ConversionError("graph", f"unexpected nodes left in the graph: {leftovers} (census {census})")
    count = census.get("Transpose", 0)
    if count not in transposes:
        wanted = f"exactly {transposes.start}" if len(transposes) == 1 else f"at most {transposes.stop - 1}"
        raise ConversionError("graph", f"{count} Transpose nodes, {wanted} allowed (census {census})")


def write_artifact(proto, path, metadata: dict, *, opset: int, output: str, layout: str, census: dict,
                   parity: dict) -> ExportReport:
    """Record `metadata` in the model, check that onnxruntime loads the exact bytes, write them."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = contract.describe(metadata)
    proto.producer_name, proto.producer_version = "onnx-mobilenets", __version__
    data = proto.SerializeToString()
    runtime_gate(data)
    atomic_write(path, data)
    return ExportReport(path=str(path), opset=opset, output=output, layout=layout,
                        sha256=hashlib.sha256(data).hexdigest(), size=len(data), census=census, parity=parity,
                        metadata=metadata)


def runtime_gate(data: bytes):
    """Gate "runtime": onnxruntime loads the model; the session, for the parity gates."""
    try:
        return new_session(data)
    except Exception as e:  # onnxruntime's exception types differ between versions
        raise ConversionError("runtime", f"onnxruntime cannot load the model: {e}") from e


def manifest_entry(report: ExportReport) -> dict:
    """What `contract.record_in_manifest` keeps about an artifact."""
    return {"file": Path(report.path).name, "sha256": report.sha256, "size": report.size, "opset": report.opset,
            "output": report.output, "layout": report.layout,
            "random_weights": contract.is_random(report.metadata), "parity": report.parity, "census": report.census}
