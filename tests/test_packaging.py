"""The built wheel: one top-level package (conversion/ and runtime/ inside onnx_mobilenets), its
data files, the console script, and the dependency split between base and extras."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_layout_and_metadata(tmp_path):
    """Built offline (no index, no build isolation: the venv's own setuptools), as on a machine
    without the internet."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                             "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True,
                            env=dict(os.environ, PIP_NO_INDEX="1"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("onnx_mobilenets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert tops == {"onnx_mobilenets"}, tops  # no generic top-level `conversion` or `runtime`
    for expected in ("onnx_mobilenets/conversion/export.py", "onnx_mobilenets/runtime/model.py",
                     "onnx_mobilenets/data/imagenet_classes.tsv", "onnx_mobilenets/data/probe.onnx",
                     "onnx_mobilenets/runtime/web/index.html", "onnx_mobilenets/runtime/web/mobilenet.js"):
        assert expected in names
    dist_info = next(n.split("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
    metadata = zipfile.ZipFile(wheel).read(f"{dist_info}/METADATA").decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0].strip().lower() for r in base) == [
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
