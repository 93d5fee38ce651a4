"""Shared test set-up: fixtures location, an isolated cache, and the expected-top-5 check."""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# The tests start the children they stop with Ctrl-C's SIGINT through it, as tools/serve_load.py does.
from serve_load import ctrl_c_works  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_NAMES = ("mobilenet_v1_0.25_128", "mobilenet_v2_1.0_224")
# Google's uint8 models in the fixtures: catalogue name -> release tarball.
QUANT_FIXTURES = {"mobilenet_v1_0.25_128_quant": "mobilenet_v1_0.25_128_quant.tgz",
                  "mobilenet_v2_1.0_224_quant": "quantized_v2_224_100.tgz"}
IMAGES = ("elephant.jpg", "cheetah.jpg")
PROBABILITY_TOLERANCE = 1e-4


# Python source that makes TensorFlow, tf2onnx, onnx and Keras unimportable, as if only the runtime
# (onnxruntime, NumPy, Pillow) were installed; prepended to code run in a subprocess.
WITHOUT_TENSORFLOW = (
    "import sys\n"
    "HEAVY = ('tensorflow', 'tf2onnx', 'onnx', 'keras')\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in HEAVY:\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


# What a test measured and prints for the reader (headroom tables): recorded with
# `record_property(PRINTED, text)` and printed at the end of the run, from whichever worker ran it.
PRINTED = "printed"


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # optional: pytest-xdist may be off (-p no:xdist)
def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than the cores this process may run on. On 2 cores, two workers
    left 7.8 % of the CPU idle while tests waited on servers, Ray and child processes (567 s); three
    left 1.3 % (547 s, the same code, 2026-12-07). PYTEST_XDIST_AUTO_NUM_WORKERS still wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1


def pytest_collection_finish(session):
    """With --dist loadgroup, refuse to run where pytest-xdist cannot group (its group rides on the
    node id): tests of one `xdist_group` share a set-up, or must not run beside each other."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid.rsplit("]", 1)[-1]]
    if lost:
        raise pytest.UsageError(f"pytest-xdist does not group tests with this pytest ({lost[0]} has no group in "
                                "its node id; pytest-dev/pytest-xdist#1386): install the [dev] extra's pytest")


def pytest_terminal_summary(terminalreporter):
    texts = [value for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
             for name, value in getattr(report, "user_properties", ()) if name == PRINTED]
    if texts:
        terminalreporter.section("measured")
        for text in texts:
            terminalreporter.write_line(text)


# .ci/run sets it: there every optional component the suite checks (independent engines, Ray, qemu)
# is installed, and one that is missing fails its tests instead of skipping them.
IN_CI = os.environ.get("ONNX_MOBILENETS_CI") == "1"


def require(available: bool, what: str, ci_has_it: bool = True) -> None:
    """Skip the test when `what` is not installed here, saying so; fail in CI, where it must be
    (`ci_has_it`: what CI's machines cannot have, a GPU, is skipped there too)."""
    if not available:
        message = f"{what} is not installed"
        if IN_CI and ci_has_it:
            pytest.fail(f"{message}, but CI installs it (.ci/run): the check it enables must run")
        pytest.skip(message)


def require_module(module: str, what: str):
    """The imported `module`, per `require`."""
    import importlib
    import importlib.util

    require(importlib.util.find_spec(module) is not None, what)
    return importlib.import_module(module)


def fixtures_dir() -> Path:
    """ONNX_MOBILENETS_FIXTURES, else ../shared/fixtures beside the repository root."""
    path = Path(os.environ.get("ONNX_MOBILENETS_FIXTURES", REPO_ROOT.parent / "shared" / "fixtures"))
    if not (path / "expected.json").is_file():
        # Fail, never skip: the fixtures are part of every test environment (CI has them).
        pytest.fail(f"test fixtures not found at {path}; set ONNX_MOBILENETS_FIXTURES")
    return path


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return fixtures_dir()


@pytest.fixture(scope="session")
def expected(fixtures) -> dict:
    return json.loads((fixtures / "expected.json").read_text())["results"]


def fixture_image_batch(fixtures, resolution) -> np.ndarray:
    """The two fixture images, preprocessed the default way, NHWC float32."""
    from PIL import Image

    from onnx_mobilenets import DEFAULT_PREPROCESSING
    from onnx_mobilenets.preprocessing import network_input

    return np.stack(
        [
            network_input(Image.open(fixtures / "images" / n).convert("RGB"), resolution, DEFAULT_PREPROCESSING)
            for n in IMAGES
        ]
    )


def made_once_per_run(tmp_path_factory, name: str, make):
    """What `make(folder)` returns, made once for the whole test run in a new `folder` named `name`:
    the first pytest-xdist worker to ask makes it while the others wait, then every one reads it
    (pickled beside the folder). A conversion that tests on every worker need then costs its core
    once, not once a worker. Callers must not change what is in the folder."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: the run's, above each worker's
    folder, made = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # until the file closes
        if not made.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            result = make(folder)
            written = made.with_suffix(".partial")
            written.write_bytes(pickle.dumps(result))
            written.replace(made)
        return pickle.loads(made.read_bytes())


@pytest.fixture(scope="session")
def fixture_artifacts(tmp_path_factory, fixtures):
    """ONNX files converted from both fixture checkpoints (real images in the parity gate), made once.

    Returns (folder, {name: ExportReport})."""

    def make(out):
        from onnx_mobilenets import get_variant
        from onnx_mobilenets.conversion.convert import convert_variant

        reports = {}
        with pytest.MonkeyPatch.context() as env:  # runs before the per-test cache is set up
            env.setenv("ONNX_MOBILENETS_HOME", str(tmp_path_factory.mktemp("fixture_cache")))
            for name in FIXTURE_NAMES:
                images = fixture_image_batch(fixtures, get_variant(name).resolution)
                reports[name] = convert_variant(name, out, checkpoint=fixtures / "checkpoints" / f"{name}.tgz",
                                                images=images)
        return out, reports

    return made_once_per_run(tmp_path_factory, "fixture_artifacts", make)


@pytest.fixture(scope="session")
def random_artifacts(tmp_path_factory):
    """`onnx-mobilenets convert --all --random-weights`, exactly as a user runs it: the folder of the
    38 float variants with untrained weights (seed 0), made once."""
    out = tmp_path_factory.mktemp("all_variants")
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(tmp_path_factory.mktemp("all_variants_cache")))
    result = subprocess.run([sys.executable, "-m", "onnx_mobilenets.cli", "convert", "--all", "--random-weights",
                             "--output", str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("gates passed") == 38
    return out


@pytest.fixture(scope="session")
def random_weight_model():
    """`random_weight_model(name)`: the Keras model of catalogue variant `name` with the untrained
    weights `convert --random-weights` gives it (seed 0), built once for the session: the Keras side
    of the 38 `random_artifacts`, which test_models also checks. Tests must not change it."""
    from onnx_mobilenets.conversion import untrained_variant

    built = {}

    def model(name: str):
        if name not in built:
            built[name] = untrained_variant(name, seed=0)
        return built[name]

    return model


# The tests of every float catalogue variant (the 38 `random_artifacts`, converted once, and their
# Keras models) run on one worker.
ALL_VARIANTS = pytest.mark.xdist_group("all_variants")


@pytest.fixture(scope="session")
def quant_artifacts(tmp_path_factory, fixtures):
    """Both quantized fixtures converted through the `convert` command, made once. Returns the folder."""

    def make(out):
        from onnx_mobilenets.cli import main as cli

        with pytest.MonkeyPatch.context() as env:
            env.setenv("ONNX_MOBILENETS_HOME", str(tmp_path_factory.mktemp("quant_cache")))
            for name, tarball in QUANT_FIXTURES.items():
                code = cli(["convert", name, "--checkpoint", str(fixtures / "checkpoints" / tarball),
                            "--output", str(out)])
                assert code == 0, name
        return out

    return made_once_per_run(tmp_path_factory, "quant_artifacts", make)


# The fixture tarball of each variant the tests convert from the fixtures.
FIXTURE_TARBALLS = {**{name: f"{name}.tgz" for name in FIXTURE_NAMES}, **QUANT_FIXTURES}


@pytest.fixture(scope="session")
def converted(tmp_path_factory, fixture_artifacts, quant_artifacts):
    """`converted(name, preprocessing=..., image_input=..., float16=...)`: the path of the artifact that
    `convert_variant` makes of a fixture, converted once for the whole session (the default tensor
    artifacts are those of `fixture_artifacts` and `quant_artifacts`). Tests must not change them."""
    from onnx_mobilenets.conversion.convert import convert_variant

    made = {(name, "default", False, False): fixture_artifacts[0] / f"{name}.onnx" for name in FIXTURE_NAMES}
    made.update({(name, "default", False, False): quant_artifacts / f"{name}.onnx" for name in QUANT_FIXTURES})
    fixtures = fixtures_dir()

    def convert(name: str, preprocessing: str = "default", image_input: bool = False, float16: bool = False) -> Path:
        key = (name, preprocessing, image_input, float16)

        def make(out):
            with pytest.MonkeyPatch.context() as env:
                env.setenv("ONNX_MOBILENETS_HOME", str(tmp_path_factory.mktemp("converted_cache")))
                report = convert_variant(name, out, checkpoint=fixtures / "checkpoints" / FIXTURE_TARBALLS[name],
                                         preprocessing=preprocessing, image_input=image_input, float16=float16)
            return Path(report.path)

        if key not in made:
            made[key] = made_once_per_run(tmp_path_factory, "converted-" + "-".join(map(str, key)), make)
        return made[key]

    return convert


def assert_quantized_top5_matches(probabilities, expected_top5, logits_scale, steps=1):
    """Top-5 of a quantized model against expected_quant.json, in quantization steps: a quantized
    logit moves in whole steps of `logits_scale`, and a pixel that rounds the other way (a value at
    .5 computed in another order) moves one by a step. Each expected class's log-probability
    relative to the expected top class is within 2 `steps` (each of the two logits may move) plus
    the rounding of the file's 5 decimals; tied classes compare as sets: the top-1 is the expected
    one unless the expected top two tie, and a class in our top-5 but not in the file's is tied
    with the file's fifth within 2 `steps`."""
    probabilities = np.asarray(probabilities, np.float64)
    assert probabilities.shape == (1000,), probabilities.shape
    top = expected_top5[0]
    room = 2 * steps * logits_scale
    for entry in expected_top5:
        ours = np.log(probabilities[entry["class_index"]] / probabilities[top["class_index"]])
        theirs = np.log(entry["probability"] / top["probability"])
        rounding = 5e-6 / entry["probability"] + 5e-6 / top["probability"]
        assert abs(ours - theirs) <= room + rounding, (entry, probabilities[entry["class_index"]])
    ranked = [int(i) for i in np.argsort(-probabilities, kind="stable")[:5]]
    if expected_top5[1]["probability"] < top["probability"]:
        assert ranked[0] == top["class_index"], ranked
    expected = {e["class_index"] for e in expected_top5}
    fifth = min(e["probability"] for e in expected_top5)
    for index in ranked:
        assert index in expected or np.log(probabilities[index] / fifth) <= room + 5e-6 / fifth, (index, ranked)


def pretend_cuda_is_installed(monkeypatch, session_class):
    """onnxruntime offers CUDA, and `session_class` stands in for InferenceSession (no GPU needed)."""
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session_class)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: None, raising=False)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache (huggingface_hub's too) and no mirror/offline settings
    from the environment; the Hub is never asked for a name (huggingface.co is out of reach here)
    unless a test points HF_ENDPOINT and the namespace at a local stand-in."""
    monkeypatch.setenv("ONNX_MOBILENETS_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_cache")))
    monkeypatch.setenv("ONNX_MOBILENETS_HUB_NAMESPACE", "")
    for name in ("ONNX_MOBILENETS_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ONNX_MOBILENETS_MIRROR", raising=False)
    monkeypatch.delenv("ONNX_MOBILENETS_ARTIFACTS_URL", raising=False)


def assert_top5_matches(probabilities, expected_top5, tol=PROBABILITY_TOLERANCE):
    """Our top-5 equals the expected one, within `tol` (on the same pixels a faithful float port
    reproduces the file to its 5 decimals); classes whose expected probabilities are within `tol`
    of each other may swap places."""
    probabilities = np.asarray(probabilities)
    assert probabilities.shape == (1000,), probabilities.shape
    expected_prob = {e["class_index"]: e["probability"] for e in expected_top5}
    ours = [int(i) for i in np.argsort(-probabilities)[:5]]
    for rank, entry in enumerate(expected_top5):
        got = ours[rank]
        swap_ok = got in expected_prob and abs(expected_prob[got] - entry["probability"]) <= tol
        assert got == entry["class_index"] or swap_ok, (
            f"rank {rank}: got class {got}, expected {entry['class_index']} ({entry['label']}); "
            f"our top-5 {ours}"
        )
        assert abs(probabilities[entry["class_index"]] - entry["probability"]) <= tol, (
            f"class {entry['class_index']} ({entry['label']}): probability "
            f"{probabilities[entry['class_index']]:.5f}, expected {entry['probability']}"
        )
