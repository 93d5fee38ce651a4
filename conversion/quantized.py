"""Google's quantized MobileNets: the uint8 `.tflite` of a release tarball -> QDQ ONNX, checked
against Google's own TFLite interpreter.

tf2onnx's TFLite front end writes the quantized graph in QDQ form (QuantizeLinear/DequantizeLinear
around float Conv, Clip, Add, AveragePool), which onnxruntime, TensorRT and OpenVINO fuse into
integer kernels. Around it this module:
- finds the `.tflite` member of the tarball by its suffix (the official tarballs also hold
  checkpoints, frozen graphs and text files) and refuses one that is not a uint8 MobileNet classifier;
- makes the batch a named symbolic dimension (the `.tflite` is fixed at batch 1): the no-op
  reshape after the pool goes, the final reshape becomes a Squeeze;
- ends the graph in a float softmax over the dequantized logits without the background class, so
  int8 and float artifacts share one output contract (TFLite's own uint8 softmax is too coarse to
  rank a top-5); an artifact whose output is "logits" stops at the logits;
- gives each weight its own zero-point initializer, so the runtime can re-express weights and zero
  points as int8 (`onnx_mobilenets.model_bytes`); the file keeps TFLite's exact uint8 values.

Gates: every artifact's (`artifact.export_artifact`), with a graph census of only the QDQ and float
ops expected, one input Transpose, no Reshape; and parity with TFLite's default CPU path (XNNPACK)
on the golden inputs as uint8 pixels plus any parity images: quantized logits within one step
everywhere, identical on at least 95 % of values, same top-1 wherever TFLite's two best logits are
at least two steps apart (`onnx_mobilenets.parity.EXACT`), both as stored and as the runtime runs
it. TFLite's builtin kernels are compared too, for information.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import catalogue
from onnx_mobilenets.artifact import ArtifactRecord, ArtifactSpec, Quantization, Weights, judge, runtime_form
from onnx_mobilenets.errors import ConversionError, UnsafeArchiveError
from onnx_mobilenets.model_bytes import cpu_has_vnni
from onnx_mobilenets.parity import GOLDEN_COUNT

from .artifact import GraphMaker, passed, probe, running_tf2onnx, runtime_gate, versions
from .graph import BATCH_DIM, drop_noop_reshapes, drop_unused_initializers, fix_batch, name_inputs

TFLITE_SUFFIX = ".tflite"
MAX_TFLITE_BYTES = 256 * 1024 * 1024
CLASSES = 1001  # slim's background class plus the 1000 ImageNet classes
QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "Conv", "Clip", "Add", "AveragePool", "Squeeze", "Slice",
             "Softmax", "Transpose")
INPUT_QUANTIZATION = (1 / 128, 128)  # scale, zero point of every official quantized MobileNet's input


def read_tflite(tarball) -> tuple:
    """(bytes, member name) of the one `.tflite` file in a release tarball."""
    tarball = Path(tarball)
    if not tarball.is_file():
        raise FileNotFoundError(f"no tarball at {tarball}")
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = tar.getmembers()
            models = [m for m in members if m.name.endswith(TFLITE_SUFFIX) and m.isfile()]
            if not models:
                names = ", ".join(m.name for m in members[:10]) or "nothing"
                raise ValueError(f"{tarball} holds no {TFLITE_SUFFIX} model (it holds {names})")
            if len(models) > 1:
                raise ValueError(f"{tarball} holds {len(models)} {TFLITE_SUFFIX} models "
                                 f"({', '.join(m.name for m in models)}); expected one")
            member = models[0]
            if member.size > MAX_TFLITE_BYTES:
                raise ValueError(f"{tarball}: {member.name} is {member.size} bytes, too large for a MobileNet")
            data = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise UnsafeArchiveError(f"{tarball} is not a readable tar archive: {e}") from e
    return data, member.name


def interpreter(model: bytes, xnnpack: bool = True, threads: Optional[int] = None):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, num_threads=threads or os.cpu_count(),
                              experimental_op_resolver_type=kind)
    interpreter.allocate_tensors()
    return interpreter


def describe_tflite(model: bytes, variant: catalogue.Variant) -> dict:
    """Check that `model` is the uint8 MobileNet classifier `variant` names; its quantization facts."""
    try:
        tflite = interpreter(model)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"not a TensorFlow Lite model TFLite can load: {e}") from None
    (source,) = tflite.get_input_details()
    R = variant.resolution
    if source["dtype"] != np.uint8:
        raise ValueError(f"the .tflite takes {np.dtype(source['dtype']).name} input: it is a float model, but "
                         f"{variant.name} is Google's uint8 model (give its *_quant / quantized_v2_* tarball)")
    shape = [int(d) for d in source["shape"]]
    if shape != [1, R, R, 3]:
        raise ValueError(f"the .tflite takes input {shape}, but {variant.name} takes [1, {R}, {R}, 3]")
    softmax = [op for op in tflite._get_ops_details() if op["op_name"] == "SOFTMAX"]
    details = {d["index"]: d for d in tflite.get_tensor_details()}
    logits = details[softmax[0]["inputs"][0]] if len(softmax) == 1 else None
    if logits is None or list(logits["shape"]) != [1, CLASSES] or logits["dtype"] != np.uint8:
        raise ValueError(f"the .tflite is not a MobileNet ImageNet classifier: expected one SOFTMAX over "
                         f"{CLASSES} uint8 logits")
    scale, zero_point = source["quantization"]
    if not (np.isclose(scale, INPUT_QUANTIZATION[0]) and zero_point == INPUT_QUANTIZATION[1]):
        raise ValueError(f"the .tflite's input quantization is scale {scale}, zero point {zero_point}; the official "
                         f"MobileNets use {INPUT_QUANTIZATION[0]}, {INPUT_QUANTIZATION[1]}")
    return {"input_index": source["index"], "logits_index": logits["index"],
            "input_scale": float(scale), "input_zero_point": int(zero_point),
            "logits_scale": float(logits["quantization"][0]), "logits_zero_point": int(logits["quantization"][1])}


def tflite_logits(model: bytes, pixels: np.ndarray, xnnpack: bool = True, threads: Optional[int] = None) -> np.ndarray:
    """TFLite's quantized logits (the SOFTMAX input, uint8, all 1001 classes) for uint8 NHWC `pixels`,
    one image at a time (the model is fixed at batch 1)."""
    tflite = interpreter(model, xnnpack, threads)
    (source,) = tflite.get_input_details()
    softmax = next(op for op in tflite._get_ops_details() if op["op_name"] == "SOFTMAX")
    rows = []
    for image in pixels:
        tflite.set_tensor(source["index"], image[np.newaxis])
        tflite.invoke()
        rows.append(tflite.get_tensor(softmax["inputs"][0]).copy())
    return np.concatenate(rows)


class TfliteGraph(GraphMaker):
    """Google's uint8 .tflite through tf2onnx's TFLite front end; its reference: Google's TFLite
    interpreter on the same .tflite."""

    allowed_ops = QUANT_OPS
    transposes = range(1, 2)
    golden_kind = "quantized_logits"

    def __init__(self, variant: catalogue.Variant, tarball, source: str, sha256: Optional[str] = None):
        self.variant = variant
        self.model, self.member = read_tflite(tarball)
        self.facts = describe_tflite(self.model, variant)
        # `sha256`: of the tarball read, None where it is not the official one (the built-in model's
        # tarball holds only Google's .tflite, which `tflite_sha256` identifies)
        self.weights = Weights(source=source, sha256=sha256, tflite_member=self.member,
                               tflite_sha256=hashlib.sha256(self.model).hexdigest())

    def graph(self, spec: ArtifactSpec):
        return _convert(self.model, spec.opset, spec.output, spec.batch)

    def record(self, spec: ArtifactSpec, proto) -> ArtifactRecord:
        facts = self.facts
        quantization = Quantization(input_scale=facts["input_scale"], input_zero_point=facts["input_zero_point"],
                                    logits_scale=facts["logits_scale"], logits_zero_point=facts["logits_zero_point"],
                                    int8_view=tuple(int8_weight_names(proto)))
        return ArtifactRecord(spec=spec, family=self.variant.family, alpha=str(self.variant.alpha),
                              resolution=self.variant.resolution, classes=CLASSES - 1, weights=self.weights,
                              versions=versions("tf2onnx", "onnx", "ai-edge-litert"), quantization=quantization)

    def check_parity(self, record: ArtifactRecord, proto, inputs: np.ndarray, feeds: list) -> tuple:
        """The artifact computes TFLite's (XNNPACK) quantized logits, as stored and as the runtime
        runs it (int8 weights where this CPU has VNNI); TFLite's builtin kernels, for information."""
        xnnpack = tflite_logits(self.model, inputs, xnnpack=True)[:, 1:].astype(np.int64)
        builtin = tflite_logits(self.model, inputs, xnnpack=False)[:, 1:].astype(np.int64)
        checked = probe(proto)
        entry = checked.metadata_props.add()  # what runtime_form reads, as the artifact will carry it
        entry.key, entry.value = "quantization", record.metadata()["quantization"]
        data = checked.SerializeToString()
        forms = {"runtime": runtime_form(data), "stored": data}
        logits = {form: _float_logits(model, feeds) for form, model in forms.items()}
        judgements = [judge(record, logits[form], output="logits", reference=xnnpack) for form in forms]
        for form, judgement in zip(forms, judgements):
            judgement.problems[:] = [f"{form}: {problem}" for problem in judgement.problems]
        runtime, stored = passed(*judgements)
        parity = {"inputs": int(len(inputs)), "reference": "TFLite XNNPACK", "runtime": runtime, "stored": stored,
                  # "runtime" is the form OnnxMobileNet runs on this CPU: int8 weights where it has VNNI
                  "tflite_builtin_kernels": judge(record, logits["runtime"], output="logits",
                                                  reference=builtin).numbers}  # for information
        if not record.preprocessing.image_input:
            parity["runtime_int8_weights"] = cpu_has_vnni()
        return parity, xnnpack[:GOLDEN_COUNT]


def _float_logits(data: bytes, feeds: list) -> np.ndarray:
    """The model's float logits (before the softmax) on each of `feeds`, concatenated."""
    session = runtime_gate(data)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(["logits"], {name: feed})[0] for feed in feeds])


def _convert(model: bytes, opset: int, output: str, batch=None):
    import tf2onnx

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(model)
        with warnings.catch_warnings(), running_tf2onnx("the .tflite"):
            # tf2onnx reads the .tflite with tf.lite.Interpreter: its concern
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            proto, _ = tf2onnx.convert.from_tflite(path, opset=opset)
    proto = tidy_quantized_graph(proto, output)
    fix_batch(proto, batch)
    return proto


def tidy_quantized_graph(proto, output: str):
    """The graph surgery described in the module docstring, in place; returns `proto`."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ConversionError("tf2onnx", f"expected one input and one output, got {len(graph.input)} and "
                              f"{len(graph.output)}")
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if len(softmax) != 1:
        raise ConversionError("graph", f"expected one Softmax, found {len(softmax)}")
    dequantized_logits = softmax[0].input[0]
    after = [n for n in graph.node if softmax[0].output[0] in n.input]  # its output QuantizeLinear
    for node in softmax + after:
        graph.node.remove(node)
    drop_noop_reshapes(proto)  # TFLite's batch-1 reshape after the pool
    inits = {i.name: i for i in graph.initializer}
    for node in list(graph.node):  # [N, 1001, 1, 1] -> [N, 1001], keeping the symbolic batch
        if node.op_type == "Reshape" and node.input[1] in inits \
                and numpy_helper.to_array(inits[node.input[1]]).tolist() == [1, CLASSES]:
            squeeze = helper.make_node("Squeeze", [node.input[0], "spatial_axes"], list(node.output), name=node.name)
            graph.node.insert(list(graph.node).index(node), squeeze)
            graph.node.remove(node)
    graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in (
        ("spatial_axes", [2, 3]), ("classes_start", [1]), ("classes_end", [CLASSES]), ("classes_axis", [1])))
    # Drop slim's background class, then (for probabilities) a float softmax over the 1000 logits.
    graph.node.append(helper.make_node("Slice", [dequantized_logits, "classes_start", "classes_end", "classes_axis"],
                                       ["logits"], name="drop_background_class"))
    if output == "probabilities":
        graph.node.append(helper.make_node("Softmax", ["logits"], [output], name="softmax", axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [BATCH_DIM, CLASSES - 1]))
    name_inputs(proto)
    _unshare_weight_zero_points(graph)
    drop_unused_initializers(proto)
    return proto


def _weight_dequantizers(graph) -> list:
    """The DequantizeLinear nodes that feed a Conv's weight."""
    producers = {out: node for node in graph.node for out in node.output}
    found = []
    for node in graph.node:
        if node.op_type == "Conv":
            source = producers.get(node.input[1])
            if source is None or source.op_type != "DequantizeLinear":
                raise ConversionError("graph", f"Conv {node.name!r} has no dequantized weight")
            found.append(source)
    return found


def _unshare_weight_zero_points(graph) -> None:
    """Give every weight its own zero-point initializer (tf2onnx shares equal constants, also with
    activations), stored as raw data, so weights and their zero points can change type together."""
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    for dequantize in _weight_dequantizers(graph):
        weight, scale, zero_point = dequantize.input
        own = f"{weight}/zero_point"
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[zero_point]).copy(), own))
        inits[weight].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(inits[weight]), weight))  # raw data
        dequantize.input[2] = own


def int8_weight_names(proto) -> list:
    """Names of the uint8 weight and zero-point initializers that may be re-expressed as int8."""
    names = []
    for dequantize in _weight_dequantizers(proto.graph):
        names += [dequantize.input[0], dequantize.input[2]]
    return sorted(set(names))


def onnx_quantized_logits(data: bytes, feeds: list, quantization: Quantization, as_runtime: bool) -> np.ndarray:
    """The artifact's quantized logits (N, 1000) on each of `feeds`, concatenated, from its float
    logits, as stored (uint8 weights) or as the runtime runs it (`onnx_mobilenets.artifact.runtime_form`)."""
    logits = _float_logits(runtime_form(data) if as_runtime else data, feeds)
    return quantization.quantized_logits(logits, "logits")
