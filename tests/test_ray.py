"""The same job on Ray: a local cluster (ray.init(num_cpus=2)) classifies a few hundred images,
broken ones included, from paths and from a Dataset of bytes; its rows equal predict_stream's, no
image lost or duplicated; `predict --ray` writes them as Parquet."""


import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ctrl_c_works, require
from PIL import Image

from onnx_mobilenets import OnnxMobileNet, OnnxMobileNetsError
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.parity import parity_pixels
from onnx_mobilenets.runtime import ray as ray_runner

# One Ray cluster at a time on a machine: every test that starts one runs on the same worker.
pytestmark = pytest.mark.xdist_group("ray")

try:
    import ray
except ImportError:
    ray = None


@pytest.fixture(scope="module", autouse=True)
def ray_installed():
    """Skipped here without Ray; in CI, which installs the [ray] extra, a failure."""
    require(ray is not None, "Ray (the [ray] extra; .ci/run installs it)")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """300 small photo-like JPEGs, 12 of them broken in different ways."""
    folder = tmp_path_factory.mktemp("ray_images")
    pixels = parity_pixels(96, count=300, seed=9)
    paths = []
    for i, image in enumerate(pixels):
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(image).save(path, quality=85)
        if i % 25 == 7:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3] if i % 2 else b"not a picture")
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def v1_path(fixture_artifacts):
    out, _ = fixture_artifacts
    return out / "mobilenet_v1_0.25_128.onnx"


def _expected_rows(v1_path, paths):
    model = OnnxMobileNet(v1_path, providers="cpu")
    return {row["path"]: row for row in (r.as_row() for r in model.predict_stream(paths))}


def _same(rows, expected):
    assert sorted(r["path"] for r in rows) == sorted(expected)  # every image exactly once
    for row in rows:
        want = expected[row["path"]]
        assert list(row["class_indices"]) == want["class_indices"], row["path"]
        assert list(row["labels"]) == want["labels"]
        np.testing.assert_allclose(list(row["probabilities"]), want["probabilities"], atol=1e-6)
        assert bool(row["error"]) == bool(want["error"])


def test_classify_paths_on_a_local_cluster(cluster, images, v1_path):
    expected = _expected_rows(v1_path, images)
    assert sum(bool(r["error"]) for r in expected.values()) == 12
    rows = ray_runner.classify(images, v1_path, batch_size=16).take_all()
    _same(rows, expected)
    assert all(r["error"].startswith("InvalidImageError") for r in rows if r["error"])


def test_classify_a_dataset_of_bytes(cluster, images, v1_path):
    """Files read on the workers (read_binary_files), decoded there; rows named by their paths."""
    dataset = ray.data.read_binary_files(images[:120], include_paths=True)
    rows = ray_runner.classify(dataset, v1_path, batch_size=16).take_all()
    _same(rows, _expected_rows(v1_path, images[:120]))


def test_sizing_leaves_a_cpu_for_reading(cluster):
    assert ray_runner.default_actors(num_cpus=1, num_gpus=0) == 1  # 2 CPUs: 1 actor, 1 for the read tasks


def test_the_artifact_is_checked_where_it_lands(v1_path):
    data = v1_path.read_bytes()
    with pytest.raises(OnnxMobileNetsError, match="SHA-256"):
        ray_runner.Classifier(data, "0" * 64, top=5, providers="cpu", batch_size=4, workers=1)


def test_predict_with_ray_writes_parquet(cluster, images, v1_path, tmp_path, capsys):
    output = tmp_path / "predictions"
    assert cli(["predict", *images[:60], "--ray", "--output", str(output), "--model", str(v1_path)]) == 1  # 3 broken
    rows = pq.read_table(output).to_pylist()
    _same(rows, _expected_rows(v1_path, images[:60]))
    assert "60 images (3 failed)" in capsys.readouterr().out


@pytest.fixture
def no_cluster_here():
    """This process's own cluster shut down first: the runs below start or join clusters of their own,
    and three clusters at once on two cores wait on each other."""
    ray.shutdown()


def _predict_on_ray(arguments: list, env: dict) -> subprocess.CompletedProcess:
    """`onnx-mobilenets predict ... --ray` in a process of its own (this one already runs Ray)."""
    return subprocess.run([sys.executable, "-m", "onnx_mobilenets.cli", "predict", *arguments], env=env,
                          capture_output=True, text=True, timeout=900)


def test_predict_with_ray_starts_a_local_cluster_of_its_own(no_cluster_here, images, v1_path, tmp_path):
    """No address, no RAY_ADDRESS: `predict --ray` starts a local cluster for the run."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    output = tmp_path / "predictions"
    result = _predict_on_ray([*images[:30], "--ray", "--output", str(output), "--model", str(v1_path)], env)
    assert result.returncode == 1, result.stderr[-3000:]  # one of the 30 images is broken
    assert "30 images (1 failed)" in result.stdout
    assert "Execution plan" not in result.stderr and "Warning" not in result.stderr, result.stderr[-3000:]
    _same(pq.read_table(output).to_pylist(), _expected_rows(v1_path, images[:30]))


def test_predict_with_ray_joins_the_cluster_ray_address_names(no_cluster_here, images, v1_path, tmp_path):
    """RAY_ADDRESS names a running cluster (a head started here, in a folder of its own): the run
    joins it, which the head's own log folder shows (a driver log for the run's process)."""
    ray_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    # Head and run agree on Ray's token authentication, whatever an earlier Ray left in this process's
    # environment or in ~/.ray.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={ray_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, preexec_fn=ctrl_c_works)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.5)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        output = tmp_path / "predictions"
        run = subprocess.Popen([sys.executable, "-m", "onnx_mobilenets.cli", "predict", *images[:30], "--ray",
                                "--output", str(output), "--model", str(v1_path)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        stdout, stderr = run.communicate(timeout=900)
        assert run.returncode == 1, stderr[-3000:]
        assert "30 images (1 failed)" in stdout
        _same(pq.read_table(output).to_pylist(), _expected_rows(v1_path, images[:30]))
        driver_logs = [p.name for p in ray_dir.glob("session_*/logs/*driver*")]
        assert any(name.endswith(f"_{run.pid}.log") for name in driver_logs), driver_logs
    finally:
        head.send_signal(signal.SIGINT)  # --block: the head stops what it started (in a second; SIGTERM: 30 s)
        head.wait(timeout=120)
        shutil.rmtree(ray_dir, ignore_errors=True)
