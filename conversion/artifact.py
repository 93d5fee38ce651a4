"""The skeleton every conversion follows, and its shared tail. A `GraphMaker` makes the network's
ONNX graph its own way (a Keras model through tf2onnx, `export.py`; Google's .tflite through
tf2onnx's TFLite front end, `quantized.py`) and checks it against its own reference; `export_artifact`
does the rest, the same for every artifact: the structural gates, the parity gate on the golden
inputs (and any real images), for an image-in artifact the preprocessing in front and both gates
again, then the record (`onnx_mobilenets.artifact.ArtifactRecord`) and the writing: loaded by
onnxruntime from the exact bytes, then written atomically, so a failure leaves nothing behind.

Gates: checker (`onnx.checker.check_model(full_check=True)`), shapes (strict shape inference, every
dimension known but the symbolic batch), opset (only the default domain, imported at exactly the
requested opset, no op newer than it), graph (only the ops the kind of graph may hold), runtime
(onnxruntime loads it), parity (the maker's reference, judged by `onnx_mobilenets.artifact.judge`).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import hashlib
import importlib.metadata
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

import onnx_mobilenets
from onnx_mobilenets.artifact import DEFAULT_OPSET, MIN_OPSET, ArtifactRecord, ArtifactSpec, Golden
from onnx_mobilenets.errors import ConversionError
from onnx_mobilenets.files import atomic_write
from onnx_mobilenets.preprocessing import network_input
from onnx_mobilenets.sessions import new_session

from .float16 import FLOAT16_OPS
from .graph import BATCH_DIM
from .preprocessing_graph import IMAGE_INPUT, PREPROCESSING_OPS, PREPROCESSING_SCOPE, with_preprocessing

TF2ONNX_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"

__all__ = ["DEFAULT_OPSET", "ExportReport", "GraphMaker", "export_artifact", "check_structure", "check_census",
           "node_census", "write_artifact"]


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
    record: Optional[ArtifactRecord] = None


class GraphMaker:
    """How one kind of network becomes an ONNX graph and is checked against its reference; the
    rest is `export_artifact`'s."""

    allowed_ops: tuple = ()  # the only ops the graph may hold (gate "graph")
    transposes: range = range(2)  # how many Transpose nodes it may hold
    golden_kind = "logits"  # what its reference computes: "logits" (float32) or "quantized_logits"

    def graph(self, spec: ArtifactSpec):
        """The network's graph (input ``images``, as `spec`'s input contract says, output
        ``spec.output``), cleaned."""
        raise NotImplementedError

    def record(self, spec: ArtifactSpec, proto) -> ArtifactRecord:
        """The artifact's record, but for the parity numbers and the golden record."""
        raise NotImplementedError

    def check_parity(self, record: ArtifactRecord, proto, inputs: np.ndarray, feeds: list) -> tuple:
        """Gate "parity": the graph `proto` fed `feeds` against the reference on `inputs` (the same
        images as the network takes them, NHWC). Returns the parity numbers and the reference's
        outputs on the first GOLDEN_COUNT inputs."""
        raise NotImplementedError


def export_artifact(maker: GraphMaker, spec: ArtifactSpec, path, images: Optional[np.ndarray] = None) -> ExportReport:
    """Make `spec`'s artifact with `maker` and write it to `path`, validated. `images`: real images
    as the network takes them (N, R, R, 3), more inputs for the parity gate."""
    check_opset(spec.opset)
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the output path must end in .onnx, got {path}")
    proto = maker.graph(spec)
    check_structure(proto, spec.opset)
    allowed_ops = maker.allowed_ops + (FLOAT16_OPS if spec.float16 else ())
    check_census(node_census(proto), allowed_ops, maker.transposes)
    record = maker.record(spec, proto)
    network = tensor_record(record)  # the network alone: what the image-in artifact's preprocessing feeds
    inputs = network.golden_inputs()
    if images is not None:
        inputs = np.concatenate([inputs, _checked_images(images, inputs)])
    parity, golden = maker.check_parity(network, proto, inputs, network.feeds(inputs))
    if spec.image_input:
        proto = with_preprocessing(proto, record.resolution, record.preprocessing, spec.opset, spec.batch)
        check_structure(proto, spec.opset, image_input=True)
        check_census(node_census(proto), allowed_ops + PREPROCESSING_OPS, maker.transposes)
        pictures = record.golden_inputs()  # images of many sizes, each one what the NumPy twin makes of it
        twin = dataclasses.replace(network.preprocessing, layout="NHWC")
        inputs = np.stack([network_input(picture, record.resolution, twin) for picture in pictures])
        parity["image_input"], golden = maker.check_parity(record, proto, inputs, record.feeds(pictures))
    record = dataclasses.replace(record, parity=parity, golden=Golden(golden, maker.golden_kind))
    return write_artifact(proto, path, record)


def tensor_record(record: ArtifactRecord) -> ArtifactRecord:
    """The record of an artifact's network alone: its input the network's, not decoded images."""
    spec = dataclasses.replace(record.spec, image_input=False)
    return dataclasses.replace(record, spec=spec,
                               preprocessing=dataclasses.replace(record.preprocessing, image_input=False))


def _checked_images(images, like: np.ndarray) -> np.ndarray:
    """Real images for the parity gate, as the golden inputs `like` are: float32 or uint8 (N, R, R, 3)."""
    images = np.asarray(images, np.float32) if like.dtype == np.float32 else np.asarray(images)
    if images.dtype != like.dtype or images.ndim != 4 or images.shape[1:] != like.shape[1:]:
        raise ValueError(f"parity images must be {like.dtype} (N, {', '.join(map(str, like.shape[1:]))}), "
                         f"got {images.dtype} {images.shape}")
    return images


def probe(proto, extra_outputs=("logits",)) -> object:
    """A copy of `proto` that also outputs the named intermediate values (float32), for the gates."""
    from onnx import TensorProto, helper

    copied = copy.deepcopy(proto)
    present = {o.name for o in copied.graph.output}
    copied.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                               for name in extra_outputs if name not in present)
    return copied


def passed(*judgements) -> list:
    """The parity numbers of each comparison (`onnx_mobilenets.artifact.judge`); raises
    ConversionError("parity") saying why, when one fails."""
    problems = []
    for judgement in judgements:
        problems += [p for p in judgement.problems if p not in problems]
    if problems:
        raise ConversionError("parity", "; ".join(problems) + f" over {judgements[0].inputs} inputs")
    return [judgement.numbers for judgement in judgements]


@contextlib.contextmanager
def running_tf2onnx(what: str):
    """One call into tf2onnx: its failures become ConversionError("tf2onnx", "tf2onnx could not
    convert WHAT: ..."), and a Ctrl-C stays a KeyboardInterrupt. The interrupt has to be tracked,
    not recognised: one that lands inside TensorFlow's C code can surface as any error at all
    (seen: SystemError "bad argument to internal function").

    Also runs tf2onnx with its optimizers' errors raised, not caught: to skip an optimizer that
    fails it deep-copies the whole graph before every pass (a sixth of a conversion's time), and a
    graph an optimizer left unfinished is refused by the gates anyway, so failing at once costs
    nothing. tf2onnx reads this switch from the environment (1.17: its mere presence turns catching
    off)."""
    interrupted = []
    in_main_thread = threading.current_thread() is threading.main_thread()
    # Ctrl-C, and SIGTERM where the command line turns it into one (`cli.parser.main`).
    signums = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
    handlers = {signum: signal.getsignal(signum) for signum in signums if callable(signal.getsignal(signum))}

    def noting(handler):
        def note_interrupt(signum, frame):
            interrupted.append(signum)
            handler(signum, frame)  # Python's own SIGINT handler raises KeyboardInterrupt
        return note_interrupt

    previous_switch = os.environ.get(TF2ONNX_CATCH_ERRORS)
    os.environ[TF2ONNX_CATCH_ERRORS] = "FALSE"
    for signum, handler in handlers.items():
        signal.signal(signum, noting(handler))
    try:
        yield
    except Exception as e:  # tf2onnx raises many types
        if interrupted:
            raise KeyboardInterrupt from e
        raise ConversionError("tf2onnx", f"tf2onnx could not convert {what}: {e}") from e
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        if previous_switch is None:
            os.environ.pop(TF2ONNX_CATCH_ERRORS, None)
        else:
            os.environ[TF2ONNX_CATCH_ERRORS] = previous_switch


# --- the gates ----------------------------------------------------------------------------------

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
    found = {"onnx_mobilenets": onnx_mobilenets.__version__}
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


def runtime_gate(data: bytes):
    """Gate "runtime": onnxruntime loads the model; the session, for the parity gates."""
    try:
        return new_session(data)
    except Exception as e:  # onnxruntime's exception types differ between versions
        raise ConversionError("runtime", f"onnxruntime cannot load the model: {e}") from e


def write_artifact(proto, path, record: ArtifactRecord) -> ExportReport:
    """Record `record` in the model, check that onnxruntime loads the exact bytes, write them."""
    del proto.metadata_props[:]
    for key, value in record.metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = record.description
    proto.producer_name, proto.producer_version = "onnx-mobilenets", onnx_mobilenets.__version__
    data = proto.SerializeToString()
    runtime_gate(data)
    atomic_write(path, data)
    return ExportReport(path=str(path), opset=record.spec.opset, output=record.spec.output,
                        layout=record.spec.layout, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                        census=node_census(proto), parity=record.parity, record=record)

