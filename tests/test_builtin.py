"""The built-in model: the package's one model file is our own pipeline's conversion of Google's
.tflite (converted again here and found the same), it answers expected_quant.json with no network
and no cache, and it is what `OnnxMobileNet()`, `predict` and `v2_quant` resolve to until the cache
holds a conversion of its own."""

import json
import shutil

import onnx
import pytest
from conftest import assert_quantized_top5_matches
from make_builtin_model import make_builtin
from onnx import numpy_helper

from onnx_mobilenets import OnnxMobileNet, builtin
from onnx_mobilenets.artifact import read_record
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.download import artifacts_dir
from onnx_mobilenets.errors import ChecksumError

TARBALL = "quantized_v2_224_100.tgz"
# What a conversion records of the machine and the packages that made it, not of the model: the
# versions of tf2onnx, onnx and the TFLite interpreter, and whether this CPU has VNNI (the parity
# gate then checks the int8 form the runtime runs here; `onnx_mobilenets.model_bytes`).
MAY_DIFFER = ("versions",)
MACHINE_PARITY = ("runtime_int8_weights",)


def test_the_builtin_model_is_our_conversion_of_googles_tflite(fixtures, tmp_path):
    """The shipped file, made again from the fixtures' tarball (Google's .tflite byte for byte) by
    tools/make_builtin_model.py: the same graph (every node, in order, with the same inputs and
    attributes) and weights, and the same metadata but for what `MAY_DIFFER` names. tf2onnx numbers
    the tensors it adds (``scale__95``, ``zero_point__294``) in an order that changes from run to
    run, so tensors are compared by where they are used, not by name. If this fails after a tf2onnx
    or onnx upgrade, regenerate the file."""
    again = make_builtin(fixtures / "checkpoints" / TARBALL, tmp_path / builtin.SPEC.file_name)
    shipped, made = onnx.load(builtin.PATH), onnx.load(again)
    (ours, our_names), (theirs, their_names) = canonical(shipped), canonical(made)
    assert ours == theirs
    metadata = [{p.key: p.value for p in m.metadata_props} for m in (shipped, made)]
    assert set(metadata[0]) == set(metadata[1])
    for key in set(metadata[0]) - set(MAY_DIFFER) - {"parity", "quantization"}:
        assert metadata[0][key] == metadata[1][key], key
    parity = [{k: v for k, v in json.loads(m["parity"]).items() if k not in MACHINE_PARITY} for m in metadata]
    assert parity[0] == parity[1]
    quantization = [json.loads(m["quantization"]) for m in metadata]
    views = [sorted(names[n] for n in q.pop("int8_view")) for q, names in zip(quantization, (our_names, their_names))]
    assert quantization[0] == quantization[1] and views[0] == views[1] and views[0]
    record = read_record(builtin.PATH)
    assert record.spec == builtin.SPEC and record.weights.tflite_sha256 == builtin.TFLITE_SHA256
    assert record.weights.source == "https://storage.googleapis.com/mobilenet_v2/checkpoints/quantized_v2_224_100.tgz"
    assert json.loads(metadata[0]["versions"])["onnx_mobilenets"]


def canonical(model) -> tuple:
    """(the graph with every tensor named by its first use, {tensor name: that canonical name})."""
    names = {}

    def name(tensor: str) -> str:
        return names.setdefault(tensor, f"t{len(names)}") if tensor else ""

    graph = model.graph
    inputs = [(name(i.name), i.type.SerializeToString()) for i in graph.input]
    nodes = [(n.op_type, n.domain, [name(i) for i in n.input], [name(o) for o in n.output],
              [a.SerializeToString() for a in n.attribute]) for n in graph.node]
    outputs = [(name(o.name), o.type.SerializeToString()) for o in graph.output]
    weights = {names[t.name]: (t.data_type, list(t.dims), numpy_helper.to_array(t).tobytes())
               for t in graph.initializer}
    return (inputs, nodes, outputs, weights, list(model.opset_import), model.doc_string), names


def test_only_googles_tflite_makes_the_builtin_model(fixtures, tmp_path):
    with pytest.raises(ChecksumError, match="not Google's"):
        make_builtin(fixtures / "checkpoints" / "mobilenet_v1_0.25_128_quant.tgz", tmp_path / "out.onnx")
    assert not list(tmp_path.iterdir())


def test_no_model_named_is_the_builtin_one_offline(fixtures, monkeypatch, capsys):
    """Empty cache, offline: `OnnxMobileNet()` and `predict IMAGE` run the built-in model and give
    expected_quant.json's answer."""
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    expected = json.loads((fixtures / "expected_quant.json").read_text())["results"][builtin.SPEC.variant]
    model = OnnxMobileNet()
    assert model.path == builtin.PATH and model.variant == builtin.SPEC.variant
    scale = model.record.quantization.logits_scale
    for image in ("elephant.jpg", "cheetah.jpg"):
        assert_quantized_top5_matches(model.predict_proba(fixtures / "images" / image)[0], expected[image], scale)
    assert cli(["predict", str(fixtures / "images" / "elephant.jpg"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["model"] == builtin.SPEC.variant
    (result,) = answer["results"]
    python = [(p.class_index, p.probability) for p in model.predict(fixtures / "images" / "elephant.jpg")]
    assert [(p["class_index"], p["probability"]) for p in result["predictions"]] == python
    assert not artifacts_dir().exists()  # nothing was downloaded or converted


def test_a_cached_conversion_comes_before_the_builtin_model(monkeypatch, tmp_path):
    """`v2_quant` is the built-in model until the cache holds one (`convert v2_quant` writes there);
    the built-in model serves `preprocessing="slim"` too (the runtime applies it)."""
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    assert OnnxMobileNet("v2_quant").path == builtin.PATH
    assert OnnxMobileNet("v2_quant", preprocessing="slim").preprocessing == "slim"
    cached = artifacts_dir() / builtin.SPEC.file_name
    cached.parent.mkdir(parents=True)
    shutil.copy(builtin.PATH, cached)
    assert OnnxMobileNet("v2_quant").path == cached
    assert OnnxMobileNet().path == cached


def test_list_shows_the_builtin_model(capsys):
    assert cli(["list", "--precision", "uint8", "--family", "v2"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(builtin.SPEC.variant + " "))
    assert row.split()[-1] == "built-in" and "70.8" in row and "89.9" in row
