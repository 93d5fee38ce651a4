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
  points as int8 (`onnx_mobilenets.runtime.model_bytes`); the file keeps TFLite's exact uint8 values.

Gates: the float artifacts' checker, shapes and opset gates; a graph census (only the QDQ and float
ops expected, one input Transpose, no Reshape); onnxruntime loads it; and parity with TFLite's
default CPU path (XNNPACK) on the golden inputs as uint8 pixels plus any parity images: quantized
logits within one step everywhere, identical on at least 95 % of values, same top-1 wherever
TFLite's two best logits are at least two steps apart (`onnx_mobilenets.parity.check_quantized`),
both as stored and as the runtime runs it. TFLite's builtin kernels are compared too, for information.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import tarfile
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import __version__, catalogue, download
from onnx_mobilenets._files import atomic_write
from onnx_mobilenets.contract import QUANTIZED_PREPROCESSING
from onnx_mobilenets.errors import ConversionError, UnsafeArchiveError
from onnx_mobilenets.labels import imagenet_classes
from onnx_mobilenets.parity import GOLDEN_COUNT, GOLDEN_SEED, check_quantized, parity_pixels

from .export import BATCH_DIM, DEFAULT_OPSET, INPUT_NAME, MIN_OPSET, ExportReport, check_structure, newest_opset, \
    node_census

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


def _interpreter(model: bytes, xnnpack: bool = True, threads: Optional[int] = None):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, num_threads=threads or os.cpu_count(),
                              experimental_op_resolver_type=kind)
    interpreter.allocate_tensors()
    return interpreter


def describe_tflite(model: bytes, variant: catalogue.Variant) -> dict:
    """Check that `model` is the uint8 MobileNet classifier `variant` names; its quantization facts."""
    try:
        interpreter = _interpreter(model)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"not a TensorFlow Lite model TFLite can load: {e}") from None
    (source,) = interpreter.get_input_details()
    R = variant.resolution
    if source["dtype"] != np.uint8:
        raise ValueError(f"the .tflite takes {np.dtype(source['dtype']).name} input: it is a float model, but "
                         f"{variant.name} is Google's uint8 model (give its *_quant / quantized_v2_* tarball)")
    shape = [int(d) for d in source["shape"]]
    if shape != [1, R, R, 3]:
        raise ValueError(f"the .tflite takes input {shape}, but {variant.name} takes [1, {R}, {R}, 3]")
    softmax = [op for op in interpreter._get_ops_details() if op["op_name"] == "SOFTMAX"]
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
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
    interpreter = _interpreter(model, xnnpack, threads)
    (source,) = interpreter.get_input_details()
    softmax = next(op for op in interpreter._get_ops_details() if op["op_name"] == "SOFTMAX")
    rows = []
    for image in pixels:
        interpreter.set_tensor(source["index"], image[np.newaxis])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(softmax["inputs"][0]).copy())
    return np.concatenate(rows)


def convert_quantized(
    name: str,
    output_dir,
    *,
    checkpoint=None,
    opset: int = DEFAULT_OPSET,
    logits: bool = False,
    images: Optional[np.ndarray] = None,
) -> ExportReport:
    """Convert quantized catalogue variant `name` (its official tarball, downloaded and cached, or the
    local `checkpoint` tarball) into ``output_dir/NAME.onnx``, validated; record it in the manifest.
    `images`: extra uint8 pixel images (N, R, R, 3), already cropped and resized, for the parity gate."""
    from .convert import record_in_manifest

    variant = catalogue.get_variant(name)
    if not variant.quantized:
        raise ValueError(f"{variant.name} is a float variant; convert_quantized takes the *_quant ones")
    newest = newest_opset()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest}, got {opset!r}")
    if checkpoint is None:
        tarball = download.fetch(variant.checkpoint_url, variant.checkpoint_sha256, subdir="checkpoints")
        source = variant.checkpoint_url
    else:
        tarball = Path(checkpoint)
        source = str(tarball.resolve())
    model, member = read_tflite(tarball)
    facts = describe_tflite(model, variant)
    output = "logits" if logits else "probabilities"

    proto = _convert(model, variant, opset, output)
    census = node_census(proto)
    check_structure(proto, opset)
    check_quantized_graph(census)
    R = variant.resolution
    pixels = parity_pixels(R)
    if images is not None:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != (R, R, 3):
            raise ValueError(f"parity images must be uint8 (N, {R}, {R}, 3), got {images.dtype} {images.shape}")
        pixels = np.concatenate([pixels, images])
    parity, golden = check_tflite_parity(model, proto, pixels, facts)

    int8_names = int8_weight_names(proto)
    metadata = {
        "variant": variant.name,
        "family": variant.family,
        "alpha": str(variant.alpha),
        "resolution": str(R),
        "output": output,
        "classes": "1000",
        "preprocessing": QUANTIZED_PREPROCESSING.to_json(),
        "labels": json.dumps([list(c) for c in imagenet_classes()]),
        "weights": json.dumps({"random": False, "source": source, "sha256": download.sha256_of(tarball),
                               "tflite_member": member, "tflite_sha256": hashlib.sha256(model).hexdigest()}),
        "versions": json.dumps(_versions()),
        "opset": str(opset),
        "quantization": json.dumps({
            "scheme": "QDQ; uint8 activations and per-tensor uint8 weights with zero points, exactly as in "
                      "Google's quantization-aware-trained .tflite",
            "input_scale": facts["input_scale"], "input_zero_point": facts["input_zero_point"],
            "logits_scale": facts["logits_scale"], "logits_zero_point": facts["logits_zero_point"],
            # Weights and zero points the runtime may hand onnxruntime as int8 (value - 128).
            "int8_view": int8_names,
        }),
        "parity": json.dumps(parity),
        "golden": json.dumps({
            "inputs": f"onnx_mobilenets.parity.parity_pixels({R}, count={GOLDEN_COUNT}, seed={GOLDEN_SEED})",
            "seed": GOLDEN_SEED, "count": GOLDEN_COUNT, "values": "quantized_logits",
            "reference": "TFLite XNNPACK", "dtype": "|u1", "shape": list(golden.shape),
            "values_base64": base64.b64encode(golden.astype(np.uint8).tobytes()).decode("ascii"),
        }),
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (f"{variant.name}: Google's quantization-aware-trained uint8 MobileNet "
                        f"{variant.family.upper()} ImageNet classifier, as QDQ ONNX made by onnx-mobilenets.")
    data = proto.SerializeToString()
    path = Path(output_dir) / f"{variant.name}.onnx"
    atomic_write(path, data)
    report = ExportReport(path=str(path), opset=opset, output=output, layout="NHWC",
                          sha256=hashlib.sha256(data).hexdigest(), size=len(data), census=census, parity=parity,
                          metadata=metadata)
    provenance = json.loads(metadata["weights"])
    record_in_manifest(Path(output_dir), variant.name, report, provenance)
    if Path(output_dir).resolve() == download.artifacts_dir().resolve():
        download.record_sha256(path, report.sha256)
    return report


def _versions() -> dict:
    import importlib.metadata

    import onnx
    import tf2onnx

    return {"onnx_mobilenets": __version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
            "ai_edge_litert": importlib.metadata.version("ai-edge-litert")}


def _convert(model: bytes, variant: catalogue.Variant, opset: int, output: str):
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
    inits = {i.name: i for i in graph.initializer}
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if len(softmax) != 1:
        raise ConversionError("graph", f"expected one Softmax, found {len(softmax)}")
    dequantized_logits = softmax[0].input[0]
    after = [n for n in graph.node if softmax[0].output[0] in n.input]  # its output QuantizeLinear
    for node in softmax + after:
        graph.node.remove(node)

    def rename(old, new):
        for node in graph.node:
            node.input[:] = [new if i == old else i for i in node.input]

    for node in list(graph.node):  # TFLite's batch-1 reshapes
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if len(shape) == 4 and shape[2:] == [1, 1]:  # after the global pool, already [N, C, 1, 1]
            rename(node.output[0], node.input[0])
            graph.node.remove(node)
        elif shape == [1, CLASSES]:  # [N, 1001, 1, 1] -> [N, 1001], keeping the symbolic batch
            squeeze = helper.make_node("Squeeze", [node.input[0], "spatial_axes"], list(node.output), name=node.name)
            graph.node.insert(list(graph.node).index(node), squeeze)
            graph.node.remove(node)
    graph.initializer.extend([
        numpy_helper.from_array(np.array([2, 3], np.int64), "spatial_axes"),
        numpy_helper.from_array(np.array([1], np.int64), "classes_start"),
        numpy_helper.from_array(np.array([CLASSES], np.int64), "classes_end"),
        numpy_helper.from_array(np.array([1], np.int64), "classes_axis"),
    ])
    # Drop slim's background class, then (for probabilities) a float softmax over the 1000 logits.
    last = "logits"
    graph.node.append(helper.make_node("Slice", [dequantized_logits, "classes_start", "classes_end", "classes_axis"],
                                       [last], name="drop_background_class"))
    if output == "probabilities":
        graph.node.append(helper.make_node("Softmax", [last], [output], name="softmax", axis=1))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, [BATCH_DIM, CLASSES - 1]))

    source = graph.input[0]
    rename(source.name, INPUT_NAME)
    source.name = INPUT_NAME
    batch = source.type.tensor_type.shape.dim[0]
    batch.Clear()
    batch.dim_param = BATCH_DIM
    del graph.value_info[:]
    _unshare_weight_zero_points(graph)
    used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    imports = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    del proto.opset_import[:]
    proto.opset_import.extend(imports)
    proto.producer_name, proto.producer_version = "onnx-mobilenets", __version__
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


def check_quantized_graph(census: dict) -> None:
    leftovers = {op: n for op, n in census.items() if op not in QUANT_OPS}
    if leftovers:
        raise ConversionError("graph", f"unexpected nodes left in the graph: {leftovers} (census {census})")
    if census.get("Transpose", 0) != 1:
        raise ConversionError("graph", f"expected exactly the input Transpose, found {census.get('Transpose', 0)} "
                                       f"(census {census})")


def onnx_quantized_logits(data: bytes, pixels: np.ndarray, facts: dict, as_runtime: bool) -> np.ndarray:
    """The artifact's quantized logits (N, 1000), from its float logits, as stored (uint8 weights)
    or as the runtime runs it (`runtime.model_bytes.runtime_form`)."""
    import onnxruntime as ort

    from onnx_mobilenets.runtime.model_bytes import runtime_form

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if as_runtime:
        data = runtime_form(data)
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ConversionError("runtime", f"onnxruntime cannot load the model: {e}") from e
    logits = session.run(["logits"], {INPUT_NAME: pixels})[0]
    return np.rint(logits / facts["logits_scale"] + facts["logits_zero_point"]).astype(np.int64)


def check_tflite_parity(model: bytes, proto, pixels: np.ndarray, facts: dict) -> tuple:
    """Gate: the artifact computes TFLite's (XNNPACK) quantized logits, as stored and as the runtime
    runs it. Returns the parity record and TFLite's logits on the golden inputs (N, 1000)."""
    from onnx import TensorProto, helper

    from onnx_mobilenets.runtime.model_bytes import cpu_has_vnni

    probe = copy.deepcopy(proto)
    if not any(o.name == "logits" for o in probe.graph.output):
        probe.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    names = int8_weight_names(probe)
    entry = probe.metadata_props.add()
    entry.key, entry.value = "quantization", json.dumps({"int8_view": names})  # as the artifact will carry
    data = probe.SerializeToString()
    xnnpack = tflite_logits(model, pixels, xnnpack=True)[:, 1:].astype(np.int64)
    builtin = tflite_logits(model, pixels, xnnpack=False)[:, 1:].astype(np.int64)
    stored = onnx_quantized_logits(data, pixels, facts, as_runtime=False)
    runtime = onnx_quantized_logits(data, pixels, facts, as_runtime=True)
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
