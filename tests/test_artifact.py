"""The artifact's home (`onnx_mobilenets.artifact`): its spec names it and finds it, its record
reads back what was written, and `list` and the runtime find every kind of artifact by it."""

import dataclasses

import numpy as np
import pytest

from onnx_mobilenets import InvalidModelError, download
from onnx_mobilenets.artifact import ArtifactRecord, ArtifactSpec, Golden, Quantization, Weights, judge
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.parity import parity_inputs
from onnx_mobilenets.runtime.artifacts import resolve_model

V1 = "mobilenet_v1_0.25_128"


def test_a_spec_names_its_artifact_and_reads_its_name_back():
    plain = ArtifactSpec.of_variant("v2")
    assert (plain.variant, plain.precision, plain.name, plain.file_name) == (
        "mobilenet_v2_1.0_224", "float32", "mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224.onnx")
    assert ArtifactSpec.of_variant("v2_quant").precision == "uint8"
    every = ArtifactSpec.of_variant(V1, preprocessing="slim", image_input=True, batch=1, float16=True)
    assert every.name == f"{V1}-image-slim-fp16-b1"
    for spec in (plain, every, ArtifactSpec.of_variant(V1, image_input=True), ArtifactSpec.of_variant(V1, batch=8),
                 ArtifactSpec.of_variant(V1, preprocessing="slim"), ArtifactSpec.of_variant(V1, float16=True),
                 ArtifactSpec.of_variant(V1, float16=True, batch=2)):
        assert ArtifactSpec.from_file_name(spec.file_name) == spec
    for name in ("model.onnx", f"{V1}-webgpu.onnx", f"{V1}.tflite", "mobilenet_v9_1.0_224.onnx", f"{V1}-b1-fp16.onnx",
                 f"{V1}_quant-fp16.onnx"):
        assert ArtifactSpec.from_file_name(name) is None
    # Options that are not in the name make another artifact of the same name.
    assert ArtifactSpec.of_variant(V1, layout="NCHW").name == V1 != ArtifactSpec.of_variant(V1, layout="NCHW")


def test_a_spec_refuses_what_no_artifact_can_be():
    for options in ({"layout": "NHCW"}, {"output": "features"}, {"opset": 12}, {"batch": 0}, {"batch": True},
                    {"preprocessing": "caffe"}, {"float16": 1}):
        with pytest.raises(ValueError, match="invalid artifact options"):
            ArtifactSpec.of_variant(V1, **options)
    with pytest.raises(ValueError, match="NCHW for float models"):
        ArtifactSpec.of_variant("v2_quant", layout="NCHW")
    with pytest.raises(ValueError, match="float16 True .*float variants only"):
        ArtifactSpec.of_variant("v2_quant", float16=True)
    with pytest.raises(ValueError, match="unknown MobileNet variant"):
        ArtifactSpec.of_variant("mobilenet_v3")


def test_the_runtime_takes_the_default_tensor_artifact_for_another_preprocessing():
    slim = ArtifactSpec.of_variant(V1, preprocessing="slim")
    assert slim.runtime_equivalents() == [slim, ArtifactSpec.of_variant(V1)]
    image = ArtifactSpec.of_variant(V1, image_input=True, preprocessing="slim")
    assert image.runtime_equivalents() == [image]  # its preprocessing is inside: nothing else serves


def _record(**changes) -> ArtifactRecord:
    spec = ArtifactSpec.of_variant(V1, batch=4)
    golden = Golden(np.random.default_rng(0).normal(size=(8, 1000)).astype(np.float32))
    record = ArtifactRecord(spec=spec, family="v1", alpha="0.25", resolution=128, classes=1001,
                            weights=Weights(source="/x.tgz", sha256="ab" * 32, weights_source="ema"),
                            versions={"onnx_mobilenets": "0.1.0"}, parity={"inputs": 8}, golden=golden)
    return dataclasses.replace(record, **changes)


def test_a_record_reads_back_what_it_wrote():
    record = _record()
    metadata = record.metadata()
    assert all(isinstance(v, str) for v in metadata.values()) and metadata["batch"] == "4"
    back = ArtifactRecord.from_metadata(metadata, "here")
    assert back.spec == record.spec and back.weights == record.weights and back.labels == record.labels
    assert (back.family, back.alpha, back.resolution, back.classes) == ("v1", "0.25", 128, 1001)
    np.testing.assert_array_equal(back.golden.values, record.golden.values)
    np.testing.assert_array_equal(back.golden_inputs(), parity_inputs(128))
    assert back.metadata() == metadata
    assert "float16" not in metadata
    half = dataclasses.replace(record, spec=dataclasses.replace(record.spec, float16=True))
    assert half.metadata()["float16"] == "true" and ArtifactRecord.from_metadata(half.metadata(), "here").spec.float16
    with pytest.raises(InvalidModelError, match="here has unreadable metadata.*float16"):
        ArtifactRecord.from_metadata(dict(half.metadata(), float16="yes"), "here")
    quantized = dataclasses.replace(record, spec=ArtifactSpec.of_variant(f"{V1}_quant"), classes=1000,
                                    preprocessing=None,
                                    quantization=Quantization(1 / 128, 128, 0.1, 60, ("w", "w/zero_point")),
                                    golden=Golden(np.zeros((8, 1000), np.int64), "quantized_logits"))
    back = ArtifactRecord.from_metadata(quantized.metadata(), "here")
    assert back.quantization == quantized.quantization and back.golden_inputs().dtype == np.uint8
    for key in ("labels", "preprocessing"):
        broken = dict(metadata, **{key: "[]"})
        with pytest.raises(InvalidModelError, match="here"):
            ArtifactRecord.from_metadata(broken, "here")
    with pytest.raises(InvalidModelError, match="not a MobileNet artifact made by onnx-mobilenets"):
        ArtifactRecord.from_metadata({"variant": V1}, "here")


def test_the_judge_says_why():
    record = _record()
    reference = record.golden.values
    assert judge(record, reference, output="logits").passed
    moved = reference.copy()
    moved[3, 7] += 0.05
    verdict = judge(record, moved, output="logits")
    assert not verdict.passed and "exceeds its bound" in verdict.problems[0] and verdict.max_difference > 0.049
    assert judge(record, moved, output="logits", device="gpu").bound > 5 * verdict.bound
    # A float16 artifact is judged by the float16 bound: 2^13 times the float32 one.
    half = dataclasses.replace(record, spec=dataclasses.replace(record.spec, float16=True))
    assert judge(half, moved, output="logits").passed
    assert judge(half, moved, output="logits").bound == pytest.approx(2 ** 13 * verdict.bound)


def _listed(capsys) -> dict:
    table = capsys.readouterr().out.split("aliases")[0]
    return {line.split()[0]: line.split() for line in table.splitlines()[2:] if line.strip()}


def test_list_shows_every_cached_artifact_of_a_variant(capsys):
    folder = download.artifacts_dir()
    folder.mkdir(parents=True)
    for name in (V1, f"{V1}-image", f"{V1}-image-slim", f"{V1}-slim", f"{V1}-fp16", "mobilenet_v2_1.0_224-image",
                 "notes"):
        (folder / f"{name}.onnx").write_bytes(b"an artifact")
    assert cli(["list", "--family", "v1"]) == 0
    rows = _listed(capsys)
    assert rows[V1][-1] == "onnx,fp16,image,image-slim,slim"
    assert cli(["list"]) == 0
    rows = _listed(capsys)
    assert rows["mobilenet_v2_1.0_224"][-1] == "image" and rows["mobilenet_v1_1.0_224"][-1] == "-"


def test_every_command_resolves_the_same_file_for_the_same_options(monkeypatch):
    """OnnxMobileNet, `predict` and `evaluate` (a tensor artifact) and `web` (an image-in one) resolve
    through one spec: the artifact recording the preprocessing asked for first, and for a tensor
    artifact the default one, whose network is the same."""
    from onnx_mobilenets.runtime import artifacts

    monkeypatch.setattr(artifacts, "conversion_available", lambda: False)
    folder = download.artifacts_dir()
    folder.mkdir(parents=True)
    (folder / f"{V1}.onnx").write_bytes(b"tensor")
    assert resolve_model(V1, preprocessing_name="slim") == folder / f"{V1}.onnx"
    (folder / f"{V1}-slim.onnx").write_bytes(b"tensor, slim")
    assert resolve_model(V1, preprocessing_name="slim") == folder / f"{V1}-slim.onnx"
    assert resolve_model(V1) == folder / f"{V1}.onnx"
    with pytest.raises(FileNotFoundError, match=f"no ONNX file for {V1}-image-slim"):
        resolve_model(V1, image_input=True, preprocessing_name="slim")  # what `web --preprocessing slim` asks
    (folder / f"{V1}-image-slim.onnx").write_bytes(b"image-in, slim")
    assert resolve_model(V1, image_input=True, preprocessing_name="slim") == folder / f"{V1}-image-slim.onnx"
