"""The built wheel: one top-level package (conversion/ and runtime/ inside onnx_mobilenets), its
data files (the built-in model among them), LICENSE and NOTICE, the console script, the dependency
split between base and extras; and, installed alone in a fresh venv, the built-in model answering
offline."""

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import assert_quantized_top5_matches

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("wheel")  # one worker builds the wheel once for both tests


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built offline (no index, no build isolation: the venv's own setuptools), as on a machine
    without the internet."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(out), str(REPO)], capture_output=True, text=True,
                            env=dict(os.environ, PIP_NO_INDEX="1"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("onnx_mobilenets-*.whl")
    return built


def test_wheel_layout_and_metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"onnx_mobilenets"}, tops  # no generic top-level `conversion` or `runtime`
    for expected in ("onnx_mobilenets/conversion/export.py", "onnx_mobilenets/runtime/model.py",
                     "onnx_mobilenets/data/imagenet_classes.tsv", "onnx_mobilenets/data/probe.onnx",
                     "onnx_mobilenets/data/mobilenet_v2_1.0_224_quant.onnx",
                     "onnx_mobilenets/runtime/web/index.html", "onnx_mobilenets/runtime/web/mobilenet.js"):
        assert expected in names
    models = [n for n in names if n.endswith(".onnx") and not n.endswith("/probe.onnx")]
    assert models == ["onnx_mobilenets/data/mobilenet_v2_1.0_224_quant.onnx"]  # the one model file
    licenses = {n.rsplit("/", 1)[-1]: zipfile.ZipFile(wheel).read(n).decode() for n in names
                if ".dist-info/" in n and n.rsplit("/", 1)[-1] in ("LICENSE", "NOTICE")}
    assert licenses["LICENSE"] == (REPO / "LICENSE").read_text() and "Apache License" in licenses["LICENSE"]
    assert "Google" in licenses["NOTICE"] and "7aad0c74c5e3c06e" in licenses["NOTICE"]
    dist_info = next(n.split("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0].strip().lower() for r in base) == [
        "huggingface-hub",
        "numpy",
        "onnxruntime",
        "pillow",
        "tqdm",
    ]
    for extra, package in (
        ("convert", "tensorflow"),
        ("convert", "tf2onnx"),
        ("convert", "onnx"),
        ("convert", "ai-edge-litert"),
        ("verify", "openvino"),
        ("parquet", "pyarrow"),
        ("ray", "ray"),
        ("verify", "opencv-python-headless"),
        ("gpu", "onnxruntime-gpu"),
        ("dev", "pytest"),
    ):
        assert any(r.lower().startswith(package) and f'extra == "{extra}"' in r for r in requires), (extra, package)
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "onnx-mobilenets = onnx_mobilenets.cli:main" in entry_points


def test_the_wheel_alone_classifies_offline(wheel, tmp_path, fixtures):
    """A fresh venv with only the wheel and its runtime dependencies (from the package index), an
    empty cache and ONNX_MOBILENETS_OFFLINE=1: `OnnxMobileNet().predict` and `onnx-mobilenets
    predict` answer with the built-in model, as expected_quant.json says, and TensorFlow, onnx and
    the [convert] extra are nowhere."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "work"  # not the repository: the installed package, not the source tree
    work.mkdir()
    (work / "elephant.jpg").write_bytes((fixtures / "images" / "elephant.jpg").read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ONNX_MOBILENETS", "PYTHON", "HF_"))}
    env.update(ONNX_MOBILENETS_OFFLINE="1", ONNX_MOBILENETS_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"))
    code = ("import importlib.util, json\n"
            "from onnx_mobilenets import OnnxMobileNet\n"
            "model = OnnxMobileNet()\n"
            "print(json.dumps([model.variant, model.record.quantization.logits_scale,"
            " model.predict_proba('elephant.jpg')[0].tolist(),"
            " [[p.class_index, p.probability] for p in model.predict('elephant.jpg')],"
            " [m for m in ('tensorflow', 'onnx', 'tf2onnx') if importlib.util.find_spec(m)]]))\n")
    python_run = subprocess.run([str(python), "-c", code], cwd=work, env=env, capture_output=True, text=True,
                                timeout=300)
    assert python_run.returncode == 0, python_run.stderr[-3000:]
    variant, scale, probabilities, predictions, heavy = json.loads(python_run.stdout)
    cli_run = subprocess.run([str(env_dir / "bin" / "onnx-mobilenets"), "predict", "elephant.jpg", "--json"], cwd=work,
                             env=env, capture_output=True, text=True, timeout=300)
    assert cli_run.returncode == 0, cli_run.stderr[-3000:]
    (result,) = json.loads(cli_run.stdout)["results"]
    assert variant == "mobilenet_v2_1.0_224_quant" and heavy == []
    assert [[p["class_index"], p["probability"]] for p in result["predictions"]] == predictions
    expected = json.loads((fixtures / "expected_quant.json").read_text())["results"][variant]["elephant.jpg"]
    assert_quantized_top5_matches(probabilities, expected, scale)
    assert not (tmp_path / "home").exists()  # nothing downloaded or converted
