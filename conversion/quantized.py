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
  rank a top-5); `logits=True` stops at the logits;
- gives each weight its own zero-point initializer, so the runtime can re-express weights and zero
  points as int8 (`onnx_mobilenets.model_bytes`); the file keeps TFLite's exact uint8 values.

Gates: every artifact's (`onnx_mobilenets.conversion.artifact`), with a graph census of only the QDQ
and float ops expected, one input Transpose, no Reshape; and parity with TFLite's
default CPU path (XNNPACK) on the golden inputs as uint8 pixels plus any parity images: quantized
logits within one step everywhere, identical on at least 95 % of values, same top-1 wherever
TFLite's two best logits are at least two steps apart (`onnx_mobilenets.parity.check_quantized`),
both as stored and as the runtime runs it. TFLite's builtin kernels are compared too, for information.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import catalogue, contract
from onnx_mobilenets.errors import ConversionError, UnsafeArchiveError
from onnx_mobilenets.model_bytes import cpu_has_vnni, runtime_form
from onnx_mobilenets.parity import GOLDEN_COUNT, check_quantized, parity_images, parity_pixels
from onnx_mobilenets.preprocessing import DEFAULT, check_name, network_input
from onnx_mobilenets.sessions import new_session

from .artifact import (
    BATCH_DIM,
    ExportReport,
    check_census,
    check_opset,
    check_structure,
    node_census,
    versions,
    write_artifact,
)
from .graph import drop_noop_reshapes, drop_unused_initializers, name_inputs
from .preprocessing_graph import PREPROCESSING_OPS, with_preprocessing

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


def export_quantized(variant: catalogue.Variant, tarball: Path, source: str, path, opset: int, *,
                     logits: bool = False, images: Optional[np.ndarray] = None, preprocessing: str = DEFAULT,
                     image_input: bool = False) -> ExportReport:
    """Google's uint8 `variant` from its release `tarball` (`source`: where it came from) -> QDQ ONNX
    at `path`, validated. `images`: extra uint8 pixel images (N, R, R, 3), preprocessed, for the
    parity gate. `preprocessing` and `image_input` as for `export.export_onnx`."""
    check_opset(opset)
    model, member = read_tflite(tarball)
    facts = describe_tflite(model, variant)
    output = "logits" if logits else "probabilities"
    input_contract = dataclasses.replace(contract.QUANTIZED_PREPROCESSING, name=check_name(preprocessing),
                                         image_input=image_input)
    proto = _convert(model, opset, output)
    check_structure(proto, opset)
    check_census(node_census(proto), QUANT_OPS, transposes=range(1, 2))
    R = variant.resolution
    pixels = parity_pixels(R)
    if images is not None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (R, R, 3):
            raise ValueError(f"parity images must be uint8 (N, {R}, {R}, 3), got {images.dtype} {images.shape}")
        pixels = np.concatenate([pixels, images])
    parity, golden = check_tflite_parity(model, proto, pixels, facts)
    if image_input:
        proto = with_preprocessing(proto, R, input_contract, opset)
        check_structure(proto, opset, image_input=True)
        check_census(node_census(proto), QUANT_OPS + PREPROCESSING_OPS, transposes=range(1, 2))
        pictures = parity_images(R)  # TFLite takes what the runtime's twin makes of them, exactly onnxruntime's
        parity["image_input"], golden = check_tflite_parity(
            model, proto, np.stack([network_input(p, R, input_contract) for p in pictures]), facts,
            feeds=[p[np.newaxis] for p in pictures])
        parity["image_input"].pop("runtime_int8_weights")
    weights = {"random": False, "source": source, "sha256": hashlib.sha256(Path(tarball).read_bytes()).hexdigest(),
               "tflite_member": member, "tflite_sha256": hashlib.sha256(model).hexdigest()}
    metadata = contract.artifact_metadata(
        variant=variant.name, family=variant.family, alpha=variant.alpha, resolution=R, output=output, classes=1000,
        input_contract=input_contract, weights=weights,
        versions=versions("tf2onnx", "onnx", "ai-edge-litert"), opset=opset, parity=parity,
        golden=contract.golden_record(golden, "quantized_logits", R, image_input), quantization={
            "scheme": "QDQ; uint8 activations and per-tensor uint8 weights with zero points, exactly as in "
                      "Google's quantization-aware-trained .tflite",
            "input_scale": facts["input_scale"], "input_zero_point": facts["input_zero_point"],
            "logits_scale": facts["logits_scale"], "logits_zero_point": facts["logits_zero_point"],
            # Weights and zero points the runtime may hand onnxruntime as int8 (value - 128).
            "int8_view": int8_weight_names(proto)})
    return write_artifact(proto, path, metadata, opset=opset, output=output, layout="NHWC",
                          census=node_census(proto), parity=parity)


def _convert(model: bytes, opset: int, output: str):
    import tf2onnx

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(model)
        try:
            with warnings.catch_warnings():  # tf2onnx reads the .tflite with tf.lite.Interpreter: its concern
                warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
                proto, _ = tf2onnx.convert.from_tflite(path, opset=opset)
        except Exception as e:  # tf2onnx raises many types
            raise ConversionError("tf2onnx", f"tf2onnx could not convert the .tflite: {e}") from e
    return tidy_quantized_graph(proto, output)


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


def onnx_quantized_logits(data: bytes, feeds: list, facts: dict, as_runtime: bool) -> np.ndarray:
    """The artifact's quantized logits (N, 1000) on each of `feeds`, concatenated, from its float
    logits, as stored (uint8 weights) or as the runtime runs it
    (`onnx_mobilenets.model_bytes.runtime_form`)."""
    if as_runtime:
        data = runtime_form(data)
    try:
        session = new_session(data)
    except Exception as e:
        raise ConversionError("runtime", f"onnxruntime cannot load the model: {e}") from e
    name = session.get_inputs()[0].name
    logits = np.concatenate([session.run(["logits"], {name: feed})[0] for feed in feeds])
    return np.rint(logits / facts["logits_scale"] + facts["logits_zero_point"]).astype(np.int64)


def check_tflite_parity(model: bytes, proto, pixels: np.ndarray, facts: dict, feeds: Optional[list] = None) -> tuple:
    """Gate: the artifact computes TFLite's (XNNPACK) quantized logits on `pixels`, as stored and as
    the runtime runs it, fed `feeds` (default: the pixels; for an image-in artifact, the images that
    make them). Returns the parity record and TFLite's logits on the golden inputs (N, 1000)."""
    feeds = [pixels] if feeds is None else feeds
    from onnx import TensorProto, helper

    probe = copy.deepcopy(proto)
    if not any(o.name == "logits" for o in probe.graph.output):
        probe.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    names = int8_weight_names(probe)
    entry = probe.metadata_props.add()
    entry.key, entry.value = "quantization", json.dumps({"int8_view": names})  # as the artifact will carry
    data = probe.SerializeToString()
    xnnpack = tflite_logits(model, pixels, xnnpack=True)[:, 1:].astype(np.int64)
    builtin = tflite_logits(model, pixels, xnnpack=False)[:, 1:].astype(np.int64)
    stored = onnx_quantized_logits(data, feeds, facts, as_runtime=False)
    runtime = onnx_quantized_logits(data, feeds, facts, as_runtime=True)
    # "runtime" is the form OnnxMobileNet runs on this CPU: int8 weights where it has VNNI, else as stored.
    record = {"inputs": int(len(pixels)), "reference": "TFLite XNNPACK", "runtime_int8_weights": cpu_has_vnni()}
    problems = []
    for label, ours in (("runtime", runtime), ("stored", stored)):
        agreement = check_quantized(xnnpack, ours)
        record[label] = agreement.as_dict()
        problems += [f"{label}: {p}" for p in agreement.problems()]
    record["tflite_builtin_kernels"] = check_quantized(builtin, runtime).as_dict()  # for information
    if problems:
        raise ConversionError("parity", "; ".join(problems) + f" over {len(pixels)} inputs")
    return record, xnnpack[:GOLDEN_COUNT]
