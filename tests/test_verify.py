"""`onnx-mobilenets verify`: golden outputs, Keras reference, independent engines (OpenVINO, OpenCV),
the GPU bound (CUDA mocked), exit status, JSON, offline without TensorFlow."""

import base64
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import WITHOUT_TENSORFLOW, pretend_cuda_is_installed, require
from onnx import numpy_helper

from onnx_mobilenets.artifact import golden_of
from onnx_mobilenets.cli import engines
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.cli.verify import verify_artifact
from onnx_mobilenets.download import cache_dir
from onnx_mobilenets.parity import GOLDEN_COUNT, GOLDEN_SEED, check, parity_inputs, parity_pixels, tolerance_for

INDEPENDENT = ("OpenVINO-CPU", "OpenCV-DNN")


def _independent_engines() -> list:
    """OpenVINO and OpenCV: skipped where the [verify] extra is not installed, a failure in CI."""
    names = []
    for engine in (engines.OpenVino(), engines.OpenCv()):
        require(engine.unavailable() is None, f"{engine.name} (the [verify] extra; .ci/run installs it)")
        names.append(engine.name)
    return names


def _tampered(src, dst, what):
    model = onnx.load(str(src))
    if what == "weight":
        logits_gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
        init = next(i for i in model.graph.initializer if i.name == logits_gemm.input[2])
        bias = numpy_helper.to_array(init).copy()
        bias[10] += 0.5
        init.CopyFrom(numpy_helper.from_array(bias, init.name))
    else:  # the golden record itself
        entry = next(p for p in model.metadata_props if p.key == "golden")
        golden = json.loads(entry.value)
        values = np.frombuffer(base64.b64decode(golden["values_base64"]), "<f4").copy()
        values[:] = np.roll(values, 1)
        golden["values_base64"] = base64.b64encode(values.tobytes()).decode()
        entry.value = json.dumps(golden)
    onnx.save(model, str(dst))
    return dst


def test_golden_inputs_are_deterministic_and_realistic():
    a, b = parity_pixels(96), parity_pixels(96)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (GOLDEN_COUNT, 96, 96, 3) and a.dtype == np.uint8
    assert not np.array_equal(parity_pixels(96, seed=GOLDEN_SEED + 1), a)
    # Smooth fields (neighbouring pixels alike, as in photographs) as well as noise.
    neighbour_diff = np.abs(np.diff(a.astype(int), axis=2)).mean(axis=(1, 2, 3))
    assert neighbour_diff[0] < 5 and neighbour_diff[3] > 50
    x = parity_inputs(96)
    assert x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1


def test_golden_record_matches_the_artifact(fixture_artifacts):
    out, _ = fixture_artifacts
    model = onnx.load(str(out / "mobilenet_v1_0.25_128.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    inputs, logits = golden_of(meta)
    assert inputs.shape == (8, 128, 128, 3) and logits.shape == (8, 1000) and logits.dtype == np.float32
    # They are the logits behind the artifact's probabilities.
    session = ort.InferenceSession(str(out / "mobilenet_v1_0.25_128.onnx"), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"images": inputs})[0]
    assert check(logits, probabilities, "probabilities", tolerance_for("v1")).passed
    assert not check(np.roll(logits, 1, axis=1), probabilities, "probabilities", tolerance_for("v1")).passed


def test_verify_with_keras_reference_and_independent_engines(fixture_artifacts, capsys, monkeypatch):
    out, _ = fixture_artifacts
    independent = _independent_engines()
    rows = verify_artifact(out / "mobilenet_v2_1.0_224.onnx")
    by_runtime = {r.runtime: r for r in rows}
    assert [(r.runtime, r.reference) for r in rows][:2] == [("keras", "golden"), ("onnxruntime-CPU", "keras")]
    for name in ("keras", "onnxruntime-CPU", *independent):
        row = by_runtime[name]
        assert row.status == "pass" and row.top1_agreement == 1.0, row
        assert 0 <= row.max_abs_diff < row.bound and (row.headroom is None or row.headroom > 1), row
        assert row.version
    assert by_runtime["onnxruntime-CPU"].output == "probabilities" and by_runtime["keras"].output == "logits"
    assert by_runtime["OpenVINO-CPU"].note == "f32 pinned"
    assert cli(["verify", str(out / "mobilenet_v1_0.25_128.onnx"), str(out / "mobilenet_v2_1.0_224.onnx")]) == 0
    table = capsys.readouterr().out
    assert table.count("PASS") == 2 * (2 + len(independent))
    assert "| mobilenet_v1_0.25_128 | onnxruntime-CPU |" in table and "| keras | golden |" not in table
    # Where the [verify] extra is missing, the rows say so (skipped, not failed).
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name, *a: None)
    rows = {r.runtime: r for r in verify_artifact(out / "mobilenet_v1_0.25_128.onnx", use_keras=False)}
    for name in INDEPENDENT:
        assert rows[name].status == "skipped" and "[verify]" in rows[name].note, rows[name]


def test_verify_artifact_ends_the_engine_processes_it_starts(fixture_artifacts):
    """Called without engines, it runs every engine here and closes them before it returns: no child
    process outlives the call (with engines given, the caller keeps them for its next artifact)."""
    import multiprocessing

    out, _ = fixture_artifacts
    for engine in (engines.OpenVino(), engines.OpenCv()):
        require(engine.unavailable() is None, f"{engine.name} (the [verify] extra; .ci/run installs it)")
    before = set(multiprocessing.active_children())
    rows = verify_artifact(out / "mobilenet_v1_0.25_128.onnx", use_keras=False)
    assert {r.runtime for r in rows if r.status == "pass"} >= set(INDEPENDENT)  # their processes did run
    assert set(multiprocessing.active_children()) <= before  # (an earlier test's may have ended meanwhile)

    mine = engines.engines_here()
    try:
        verify_artifact(out / "mobilenet_v1_0.25_128.onnx", use_keras=False, engines=mine)
        assert len(set(multiprocessing.active_children()) - before) == len(INDEPENDENT)  # kept open
    finally:
        for engine in mine:
            engine.close()
    assert set(multiprocessing.active_children()) <= before


def test_verify_json_reports_difference_bound_and_headroom(fixture_artifacts, capsys):
    out, _ = fixture_artifacts
    assert cli(["verify", str(out / "mobilenet_v1_0.25_128.onnx"), "--no-keras", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["runtime"] for r in rows} >= {"onnxruntime-CPU", *INDEPENDENT}
    for row in rows:
        assert set(row) == {"artifact", "runtime", "version", "reference", "output", "max_abs_diff", "bound",
                            "headroom", "top1_agreement", "status", "note"}
        if row["status"] == "pass":
            assert row["reference"] == "golden" and row["max_abs_diff"] <= row["bound"]
            # The headroom is the tightest sample's bound over its own difference, so at least this:
            assert row["headroom"] is None or row["headroom"] >= row["bound"] / row["max_abs_diff"] > 1


class _CudaStandIn(ort.InferenceSession):
    """onnxruntime's CPU session posing as a CUDA one: the CUDA code path runs on a machine without a
    GPU. Asked for CUDA, it moves the log-probability of class 10 by `shift` (a GPU's own rounding,
    made visible), so the CUDA row differs from the CPU row by what the test chose."""

    requested = []
    shift = 0.0

    def __init__(self, model, sess_options=None, providers=None, **kwargs):
        _CudaStandIn.requested.append(providers)
        super().__init__(model, sess_options, providers=["CPUExecutionProvider"])
        self._claimed = [p[0] if isinstance(p, tuple) else p for p in providers or ["CPUExecutionProvider"]]

    def get_providers(self):
        return self._claimed

    def run(self, output_names, input_feed, run_options=None):
        outputs = super().run(output_names, input_feed, run_options)
        if "CUDAExecutionProvider" not in self._claimed or not self.shift:
            return outputs
        log_p = np.log(np.maximum(outputs[0].astype(np.float64), 1e-30))
        log_p[:, 10] += self.shift
        p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
        return [(p / p.sum(axis=1, keepdims=True)).astype(np.float32), *outputs[1:]]


@pytest.fixture
def mocked_cuda(monkeypatch):
    pretend_cuda_is_installed(monkeypatch, _CudaStandIn)
    monkeypatch.setattr(_CudaStandIn, "requested", [])
    monkeypatch.setattr(_CudaStandIn, "shift", 0.0)
    return _CudaStandIn


def test_verify_applies_the_gpu_bound_to_cuda(fixture_artifacts, mocked_cuda):
    """The CUDA row is held to ten times the CPU bound (cuDNN's choice of algorithms): a GPU whose
    outputs move by 3 CPU bounds passes (and would fail on a CPU), by 30 fails."""
    path = fixture_artifacts[0] / "mobilenet_v1_0.25_128.onnx"
    _, golden = golden_of(ort.InferenceSession(path).get_modelmeta().custom_metadata_map)
    cpu_bounds = tolerance_for("v1", "cpu").log_probability_bounds(golden)  # the artifact gives probabilities
    for shift, expected in ((3, "pass"), (30, "fail")):
        mocked_cuda.shift = shift * float(cpu_bounds.min())
        rows = {r.runtime: r for r in verify_artifact(path, use_keras=False)}
        cpu, cuda = rows["onnxruntime-CPU"], rows["onnxruntime-CUDA"]
        assert cpu.status == "pass" and cuda.status == expected and cuda.note == "TF32 off", (shift, cuda)
        assert cuda.max_abs_diff > cpu_bounds.max() > cpu.max_abs_diff  # beyond any CPU bound
        assert np.isclose(10 * cpu_bounds, cuda.bound, rtol=1e-6).any(), (cuda.bound, cpu_bounds)
    cuda_options = next(p[0][1] for p in mocked_cuda.requested if p and isinstance(p[0], tuple))
    assert cuda_options["use_tf32"] == 0 and cuda_options["cudnn_conv_algo_search"] == "HEURISTIC"


def test_tensorrt_runs_only_in_float32(fixture_artifacts, mocked_cuda, monkeypatch, capsys):
    """TensorRT (mocked) computes in TF32 unless NVIDIA_TF32_OVERRIDE=0 was set before CUDA started:
    `verify` sets it, and the row runs under the GPU bound; a user's NVIDIA_TF32_OVERRIDE=1 is kept
    and the row says why it did not run."""
    path = fixture_artifacts[0] / "mobilenet_v1_0.25_128.onnx"
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "unset below; restored after the test")
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE")
    (row,) = [r for r in verify_artifact(path, use_keras=False) if r.runtime == "onnxruntime-TensorRT"]
    assert row.status == "skipped" and "NVIDIA_TF32_OVERRIDE=0" in row.note, row
    assert cli(["verify", str(path), "--no-keras", "--json"]) == 0
    rows = {r["runtime"]: r for r in json.loads(capsys.readouterr().out)}
    trt, cpu = rows["onnxruntime-TensorRT"], rows["onnxruntime-CPU"]
    assert trt["status"] == "pass" and trt["note"] == "TF32 off (NVIDIA_TF32_OVERRIDE=0)", trt
    assert trt["bound"] > 5 * cpu["bound"]  # the GPU bound
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0"
    assert any(isinstance(p, list) and p and p[0][0] == "TensorrtExecutionProvider" for p in mocked_cuda.requested)
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "1")
    assert cli(["verify", str(path), "--no-keras", "--json"]) == 0
    (trt,) = [r for r in json.loads(capsys.readouterr().out) if r["runtime"] == "onnxruntime-TensorRT"]
    assert trt["status"] == "skipped" and "TF32" in trt["note"], trt


def test_verify_fails_on_a_discrepancy_in_every_engine(fixture_artifacts, tmp_path, capsys, mocked_cuda):
    out, _ = fixture_artifacts
    src = out / "mobilenet_v1_0.25_128.onnx"
    bad_weight = _tampered(src, tmp_path / "bad_weight.onnx", "weight")
    bad_golden = _tampered(src, tmp_path / "bad_golden.onnx", "golden")
    rows = verify_artifact(bad_weight, use_keras=False)
    ran = [r for r in rows if r.status != "skipped"]
    assert {r.runtime for r in ran} >= {"onnxruntime-CPU", "onnxruntime-CUDA", *_independent_engines()}
    assert all(r.status == "fail" and r.max_abs_diff > r.bound for r in ran), rows
    assert cli(["verify", str(bad_weight), "--no-keras"]) == 1  # runtimes vs golden
    assert "FAIL" in capsys.readouterr().out
    assert cli(["verify", str(bad_weight)]) == 1  # runtimes vs Keras
    assert cli(["verify", str(bad_golden)]) == 1  # Keras vs the (wrong) golden record
    assert "FAILED" in capsys.readouterr().err


def test_verify_names_and_all_use_the_cache(fixture_artifacts, capsys):
    out, _ = fixture_artifacts
    assert cli(["verify", "mobilenet_v1_0.25_128"]) == 2  # not cached yet
    assert "not in the cache" in capsys.readouterr().err
    assert cli(["verify", "--all"]) == 2
    (cache_dir() / "artifacts").mkdir(parents=True)
    shutil.copy(out / "mobilenet_v1_0.25_128.onnx", cache_dir() / "artifacts")
    assert cli(["verify", "mobilenet_v1_0.25_128", "--no-keras"]) == 0
    assert cli(["verify", "--all", "--no-keras"]) == 0
    assert capsys.readouterr().out.count("| mobilenet_v1_0.25_128 | onnxruntime-CPU |") == 2
    assert cli(["verify"]) == 2


def test_verify_runs_without_tensorflow(fixture_artifacts, tmp_path):
    """Offline, with TensorFlow, tf2onnx, onnx and keras unimportable: golden outputs are the reference."""
    out, _ = fixture_artifacts
    bad = _tampered(out / "mobilenet_v1_0.25_128.onnx", tmp_path / "bad.onnx", "weight")
    code = WITHOUT_TENSORFLOW + (
        "from onnx_mobilenets.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env_cmd = [sys.executable, "-c", code, "verify"]
    good = subprocess.run(env_cmd + [str(out / "mobilenet_v1_0.25_128.onnx"), str(out / "mobilenet_v2_1.0_224.onnx")],
                          capture_output=True, text=True, env={"ONNX_MOBILENETS_OFFLINE": "1", "PATH": ""})
    assert good.returncode == 0, good.stderr
    assert "| mobilenet_v2_1.0_224 | onnxruntime-CPU |" in good.stdout and "keras" not in good.stdout
    failing = subprocess.run(env_cmd + [str(bad)], capture_output=True, text=True,
                             env={"ONNX_MOBILENETS_OFFLINE": "1", "PATH": ""})
    assert failing.returncode == 1 and "FAIL" in failing.stdout


def test_verify_falls_back_to_golden_when_the_checkpoint_cannot_be_had(
    fixture_artifacts, tmp_path, monkeypatch, capsys
):
    """An artifact made from the official checkpoint, verified offline with TensorFlow installed: the
    Keras reference cannot be rebuilt, which is said in its row; the runtimes are checked against
    the golden outputs."""
    out, _ = fixture_artifacts
    model = onnx.load(str(out / "mobilenet_v1_0.25_128.onnx"))
    entry = next(p for p in model.metadata_props if p.key == "weights")
    weights = json.loads(entry.value)
    weights["source"] = "https://storage.googleapis.com/example/mobilenet_v1_0.25_128.tgz"
    entry.value = json.dumps(weights)
    official = tmp_path / "official.onnx"
    onnx.save(model, str(official))
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    assert cli(["verify", str(official)]) == 0
    table = capsys.readouterr().out
    assert "| keras |" in table and "| SKIPPED (" in table and "OFFLINE" in table
    assert "| mobilenet_v1_0.25_128 | onnxruntime-CPU |" in table and "| golden | probabilities |" in table
