"""`onnx-mobilenets verify`: golden outputs, Keras reference, exit status, offline without TensorFlow."""

import base64
import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper

from conftest import WITHOUT_TENSORFLOW
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.download import cache_dir
from onnx_mobilenets.parity import GOLDEN_COUNT, GOLDEN_SEED, parity_inputs, parity_pixels
from onnx_mobilenets.verify import golden_of, verify_artifact


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
    inputs, values, kind = golden_of(meta)
    assert inputs.shape == (8, 128, 128, 3) and values.shape == (8, 1000) and kind == "probabilities"
    np.testing.assert_allclose(values.sum(axis=1), 1.0, rtol=1e-5)


def test_verify_with_keras_reference(fixture_artifacts, capsys):
    out, _ = fixture_artifacts
    rows = verify_artifact(out / "mobilenet_v2_1.0_224.onnx")
    assert [(r.runtime, r.reference) for r in rows][:2] == [("keras", "golden"), ("onnxruntime-CPU", "keras")]
    assert all(r.passed for r in rows) and rows[1].max_abs_diff <= 1e-5 and rows[1].top1_agreement == 1.0
    assert cli(["verify", str(out / "mobilenet_v1_0.25_128.onnx"), str(out / "mobilenet_v2_1.0_224.onnx")]) == 0
    table = capsys.readouterr().out
    assert table.count("PASS") == 4 and "| mobilenet_v1_0.25_128 | onnxruntime-CPU | keras |" in table


def test_verify_fails_on_a_discrepancy(fixture_artifacts, tmp_path, capsys):
    out, _ = fixture_artifacts
    src = out / "mobilenet_v1_0.25_128.onnx"
    bad_weight = _tampered(src, tmp_path / "bad_weight.onnx", "weight")
    bad_golden = _tampered(src, tmp_path / "bad_golden.onnx", "golden")
    assert cli(["verify", str(bad_weight), "--no-keras"]) == 1  # runtime vs golden
    assert "FAIL" in capsys.readouterr().out
    assert cli(["verify", str(bad_weight)]) == 1  # runtime vs Keras
    assert cli(["verify", str(bad_golden)]) == 1  # Keras vs the (wrong) golden record
    capsys.readouterr()
    assert cli(["verify", str(src), "--no-keras", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"artifact": "mobilenet_v1_0.25_128", "runtime": "onnxruntime-CPU", "reference": "golden",
                     "max_abs_diff": rows[0]["max_abs_diff"], "top1_agreement": 1.0, "passed": True, "note": ""}]
    assert rows[0]["max_abs_diff"] <= 1e-5


def test_verify_names_and_all_use_the_cache(fixture_artifacts, capsys):
    out, _ = fixture_artifacts
    assert cli(["verify", "mobilenet_v1_0.25_128"]) == 2  # not cached yet
    assert "not in the cache" in capsys.readouterr().err
    assert cli(["verify", "--all"]) == 2
    (cache_dir() / "artifacts").mkdir(parents=True)
    shutil.copy(out / "mobilenet_v1_0.25_128.onnx", cache_dir() / "artifacts")
    assert cli(["verify", "mobilenet_v1_0.25_128", "--no-keras"]) == 0
    assert cli(["verify", "--all", "--no-keras"]) == 0
    assert capsys.readouterr().out.count("PASS") == 2
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
    assert "| mobilenet_v2_1.0_224 | onnxruntime-CPU | golden |" in good.stdout and "keras" not in good.stdout
    failing = subprocess.run(env_cmd + [str(bad)], capture_output=True, text=True,
                             env={"ONNX_MOBILENETS_OFFLINE": "1", "PATH": ""})
    assert failing.returncode == 1 and "FAIL" in failing.stdout


def test_verify_falls_back_to_golden_when_the_checkpoint_cannot_be_had(fixture_artifacts, tmp_path, monkeypatch, capsys):
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
    assert "| keras | golden | - | - | PASS (skipped:" in table and "OFFLINE" in table
    assert "| mobilenet_v1_0.25_128 | onnxruntime-CPU | golden |" in table
