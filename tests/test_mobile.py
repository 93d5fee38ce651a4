"""Artifacts for phones: `convert --batch N` makes a fully static input (``NAME-bN``), the runtime
runs it on any number of images and refuses a wrong batch clearly, and `verify --mobile` reports
what onnxruntime's mobile usability checker says NNAPI and CoreML would take of it."""

import json

import numpy as np
import pytest
from conftest import IMAGES, QUANT_FIXTURES

from onnx_mobilenets import OnnxMobileNet
from onnx_mobilenets.cli import main as cli

FLOAT_V1, QUANT_V1, FLOAT_V2 = "mobilenet_v1_0.25_128", "mobilenet_v1_0.25_128_quant", "mobilenet_v2_1.0_224"
EXECUTION_PROVIDERS = ("NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram")


@pytest.fixture(scope="module")
def fixed(tmp_path_factory, fixtures):
    """Fixed-batch artifacts of the fixtures, through `convert --batch N`: {name: path}."""
    out = tmp_path_factory.mktemp("fixed_batch")
    made = {}
    for name, batch, tarball in ((FLOAT_V1, 3, f"{FLOAT_V1}.tgz"), (QUANT_V1, 1, QUANT_FIXTURES[QUANT_V1]),
                                 (FLOAT_V2, 1, f"{FLOAT_V2}.tgz")):
        assert cli(["convert", name, "--batch", str(batch), "--checkpoint", str(fixtures / "checkpoints" / tarball),
                    "--output", str(out)]) == 0
        made[name] = out / f"{name}-b{batch}.onnx"
        assert made[name].is_file()
    return made


def test_a_fixed_batch_artifact_runs_any_number_of_images(fixed, fixture_artifacts, quant_artifacts, fixtures):
    """Four images through a batch-of-3 artifact (the second batch padded) answer as the dynamic
    artifact does; `run` with another batch, or another `batch_size`, is refused naming the batch."""
    images = [fixtures / "images" / name for name in (*IMAGES, *IMAGES)]
    model = OnnxMobileNet(fixed[FLOAT_V1])
    dynamic = OnnxMobileNet(fixture_artifacts[0] / f"{FLOAT_V1}.onnx")
    assert model.batch_size == 3 and model.record.spec.batch == 3
    np.testing.assert_allclose(model.predict_proba(images), dynamic.predict_proba(images), atol=1e-5)
    assert [r.predictions for r in model.predict_stream(images)] == [p for p in model.predict(images)]
    assert model.run(model.preprocess(images[:3])).shape == (3, 1000)
    with pytest.raises(ValueError, match="batches of exactly 3"):
        model.run(model.preprocess(images[:2]))
    with pytest.raises(ValueError, match="batches of exactly 3"):
        OnnxMobileNet(fixed[FLOAT_V1], batch_size=8)
    quantized, reference = OnnxMobileNet(fixed[QUANT_V1]), OnnxMobileNet(quant_artifacts / f"{QUANT_V1}.onnx")
    np.testing.assert_allclose(quantized.predict_proba(images), reference.predict_proba(images), atol=1e-6)


def test_verify_mobile_reports_what_nnapi_and_coreml_take(fixed, quant_artifacts, capsys):
    """With a static batch, float V2 1.0/224 runs whole on NNAPI and on CoreML (both formats); uint8
    V1 0.25/128 whole on NNAPI and in part on CoreML (no QuantizeLinear/DequantizeLinear there); with
    the dynamic batch NNAPI takes 56 of its 177 nodes, and the command says what to do."""
    assert cli(["verify", "--mobile", "--json", str(fixed[FLOAT_V2]), str(fixed[QUANT_V1]),
                str(quant_artifacts / f"{QUANT_V1}.onnx")]) == 0
    rows = {(r["artifact"], r["execution_provider"]): r for r in json.loads(capsys.readouterr().out)}
    for ep in EXECUTION_PROVIDERS:
        float_row = rows[(f"{FLOAT_V2}-b1", ep)]
        assert float_row["supported"] == float_row["nodes"] > 50 and float_row["partitions"] == 1
        assert float_row["verdict"] == "YES" and float_row["coverage"] == 1.0
    nnapi = rows[(f"{QUANT_V1}-b1", "NNAPI")]
    assert (nnapi["supported"], nnapi["nodes"], nnapi["partitions"]) == (177, 177, 1)
    coreml = rows[(f"{QUANT_V1}-b1", "CoreML NeuralNetwork")]
    assert 0 < coreml["supported"] < coreml["nodes"] == 177
    dynamic = rows[(QUANT_V1, "NNAPI")]
    assert dynamic["supported"] < dynamic["nodes"] == 177
    assert cli(["verify", "--mobile", str(quant_artifacts / f"{QUANT_V1}.onnx")]) == 0
    table = capsys.readouterr().out
    assert "| NNAPI |" in table and "--batch 1" in table
