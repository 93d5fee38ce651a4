"""ORT format artifacts (`convert --ort`, `onnx_mobilenets.conversion.ort_format`): the .ort file for
onnxruntime's minimal mobile build and its operator list, exactly the .onnx file's outputs, loaded
by the runtime like any artifact, checked by `verify`."""

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_quantized_top5_matches, assert_top5_matches
from onnx import numpy_helper

from onnx_mobilenets import ConversionError, InvalidModelError, OnnxMobileNet
from onnx_mobilenets.artifact import read_record
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.conversion import ort_format
from onnx_mobilenets.conversion.ort_format import write_ort_format

V1, V1_QUANT = "mobilenet_v1_0.25_128", "mobilenet_v1_0.25_128_quant"
IMAGES = ("elephant.jpg", "cheetah.jpg")


@pytest.fixture(scope="module")
def ort_files(converted, tmp_path_factory):
    """{name: its .ort file}, made beside a copy of the fixture artifact."""
    folder = tmp_path_factory.mktemp("ort_format")
    made = {}
    for name in (V1, V1_QUANT):
        source = shutil.copy(converted(name), folder / f"{name}.onnx")
        made[name], _ = write_ort_format(source)
    return made


def test_convert_ort_writes_the_ort_file_and_its_operator_list(fixtures, tmp_path, capsys):
    command = ["convert", V1, "--checkpoint", str(fixtures / "checkpoints" / f"{V1}.tgz"), "--ort",
               "--output", str(tmp_path)]
    assert cli(command) == 0
    assert "the same outputs as the .onnx file exactly" in capsys.readouterr().out
    made, operators = tmp_path / f"{V1}.ort", tmp_path / f"{V1}.required_operators.config"
    assert made.read_bytes()[4:8] == b"ORTM"
    listed = [line for line in operators.read_text().splitlines() if not line.startswith("#")]
    assert any(line.startswith("ai.onnx;") and "Softmax" in line for line in listed), listed
    assert str(tmp_path) not in operators.read_text().replace(str(made), "")  # no temporary folder named
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{V1}.onnx", made.name, operators.name,
                                                                  "manifest.json"])
    # Up to date: the .onnx file stays, the ORT format file is made again.
    made.unlink()
    assert cli(command) == 0
    assert "up to date" in capsys.readouterr().out and made.is_file()


def test_the_runtime_loads_an_ort_file_and_gets_the_onnx_outputs_exactly(ort_files, converted, fixtures, expected):
    for name, path in ort_files.items():
        as_ort = OnnxMobileNet(path, providers="cpu")
        assert as_ort.record.metadata() == read_record(converted(name)).metadata()  # the metadata is kept
        # The .ort holds onnxruntime's platform-neutral optimizations: the .onnx at that level runs the
        # same kernels. (At the default level, x86's blocked layouts round float32 differently.)
        as_onnx = OnnxMobileNet(converted(name), providers="cpu",
                                graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        for image in IMAGES:
            probabilities = as_ort.predict_proba(fixtures / "images" / image)
            np.testing.assert_array_equal(probabilities, as_onnx.predict_proba(fixtures / "images" / image))
            if as_ort.record.quantization is None:
                assert_top5_matches(probabilities[0], expected[name][image])
    quant = OnnxMobileNet(ort_files[V1_QUANT], providers="cpu")
    default = OnnxMobileNet(converted(V1_QUANT), providers="cpu")  # int8 weights on VNNI CPUs: exact either way
    for image in IMAGES:
        np.testing.assert_array_equal(quant.predict_proba(fixtures / "images" / image),
                                      default.predict_proba(fixtures / "images" / image))


def test_quantized_ort_file_keeps_tflites_top5(ort_files, fixtures):
    import json

    expected = json.loads((fixtures / "expected_quant.json").read_text())["results"][V1_QUANT]
    model = OnnxMobileNet(ort_files[V1_QUANT], providers="cpu")
    for image in IMAGES:
        assert_quantized_top5_matches(model.predict_proba(fixtures / "images" / image)[0], expected[image],
                                      model.record.quantization.logits_scale)


def test_verify_checks_an_ort_file_against_its_onnx_file(ort_files, tmp_path, capsys):
    assert cli(["verify", str(ort_files[V1]), "--no-keras"]) == 0
    table = capsys.readouterr().out
    assert "| onnxruntime-CPU (ORT format) |" in table and "| PASS (identical outputs required) |" in table
    assert "SKIPPED (the ORT format is onnxruntime's own" in table
    # An .ort beside an .onnx it was not made from: that row fails.
    proto = onnx.load(str(ort_files[V1].with_suffix(".onnx")))
    weight = next(i for i in proto.graph.initializer if len(i.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.0001), weight.name))
    other = tmp_path / "other"
    other.mkdir()
    onnx.save(proto, str(other / f"{V1}.onnx"))
    made, _ = write_ort_format(other / f"{V1}.onnx")
    shutil.copy(ort_files[V1].with_suffix(".onnx"), other / f"{V1}.onnx")
    assert cli(["verify", str(made), "--no-keras"]) == 1
    row = next(line for line in capsys.readouterr().out.splitlines() if "(ORT format)" in line)
    assert "FAIL (identical outputs required)" in row


def test_an_ort_file_that_differs_is_not_written(converted, tmp_path, monkeypatch):
    source = shutil.copy(converted(V1), tmp_path / f"{V1}.onnx")
    monkeypatch.setattr(ort_format, "ort_format_difference", lambda *args: 3e-7)
    with pytest.raises(ConversionError, match=r"\[ort\] .*differs from .* by up to 3e-07"):
        write_ort_format(source)
    assert [p.name for p in tmp_path.iterdir()] == [f"{V1}.onnx"]  # nothing else, no temporary folder


def test_a_broken_ort_file_is_a_clear_error(ort_files, tmp_path):
    broken = tmp_path / f"{V1}.ort"
    broken.write_bytes(ort_files[V1].read_bytes()[:5000])
    with pytest.raises(InvalidModelError, match="unreadable ORT format model"):
        OnnxMobileNet(broken)
    with pytest.raises(FileNotFoundError, match="no artifact at"):
        write_ort_format(tmp_path / "missing.onnx")
