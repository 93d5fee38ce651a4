"""The main job on a flaky network: `convert` over several models, their tarballs served from a
local HTTP server on 127.0.0.1 that fails on purpose, goes on past what fails, says why, leaves no
partial file, and a rerun converts only what is left."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ctrl_c_works
from flaky_server import serving

from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.download import cache_dir

# Official names of variants without a published checksum (the fixture stands in for them: its
# weights fit any resolution), one with a published checksum the fixture cannot match, a quantized one.
RETRIED_500 = "mobilenet_v1_0.25_160"
DROPPED = "mobilenet_v1_0.25_192"
MISSING = "mobilenet_v1_0.25_224"
WRONG_CHECKSUM = "mobilenet_v1_0.25_128"
QUANTIZED = "mobilenet_v1_0.25_128_quant"
NAMES = [RETRIED_500, DROPPED, MISSING, WRONG_CHECKSUM, QUANTIZED]


@pytest.fixture
def tarballs(fixtures):
    v1 = (fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz").read_bytes()
    quantized = (fixtures / "checkpoints" / "mobilenet_v1_0.25_128_quant.tgz").read_bytes()
    return {f"{RETRIED_500}.tgz": v1, f"{DROPPED}.tgz": v1, f"{WRONG_CHECKSUM}.tgz": v1, f"{QUANTIZED}.tgz": quantized,
            f"{MISSING}.tgz": v1}


def _partial_files(*folders):
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.name.endswith((".part", ".tmp"))
            or p.name.startswith(".")]


def test_convert_goes_on_past_failures_and_a_rerun_does_what_is_left(tarballs, tmp_path, monkeypatch, capsys):
    from onnx_mobilenets import download

    monkeypatch.setattr(download, "RETRY_DELAYS", (0, 0, 0, 0))
    served = {k: v for k, v in tarballs.items() if not k.startswith(MISSING)}
    faults = {f"{RETRIED_500}.tgz": ["500"], f"{DROPPED}.tgz": ["drop"]}
    out = tmp_path / "out"
    with serving(served, faults) as server:
        monkeypatch.setenv("ONNX_MOBILENETS_MIRROR", server.base)
        assert cli(["convert", *NAMES, "--output", str(out)]) == 1
        printed = capsys.readouterr()
        assert (f"{DROPPED}.tgz", "bytes=") in [(n, (r or "")[:6]) for n, r in server.requests]  # resumed
        assert "3 converted, 0 already up to date, 2 failed (of 5)" in printed.out
        assert f"FAILED {MISSING}: " in printed.out and "HTTP 404" in printed.out
        assert f"FAILED {WRONG_CHECKSUM}: SHA-256 mismatch" in printed.out
        assert f"{MISSING}: FAILED: " in printed.err  # said as it went, too
        converted = sorted(p.name for p in out.glob("*.onnx"))
        assert converted == sorted(f"{n}.onnx" for n in (RETRIED_500, DROPPED, QUANTIZED))
        assert _partial_files(out, cache_dir()) == []
        written = {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx")}

        # The missing file appears; the wrong one stays wrong. The rerun converts only what was missing.
        server.files[f"{MISSING}.tgz"] = tarballs[f"{MISSING}.tgz"]
        server.requests.clear()
        assert cli(["convert", *NAMES, "--output", str(out)]) == 1
        printed = capsys.readouterr().out
        assert "1 converted, 3 already up to date, 1 failed (of 5)" in printed
        for name in (RETRIED_500, DROPPED, QUANTIZED):
            assert f"{name}: up to date" in printed
        assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.onnx") if p.name in written} == written
        assert (f"{RETRIED_500}.tgz", None) not in server.requests  # up to date from the cache, no download
        assert (out / f"{MISSING}.onnx").is_file()

        # --force converts again what is up to date; other options make an artifact out of date.
        assert cli(["convert", RETRIED_500, "--output", str(out), "--force"]) == 0
        assert "1 converted, 0 already up to date" in capsys.readouterr().out
        assert cli(["convert", RETRIED_500, "--output", str(out), "--opset", "15"]) == 0
        assert "1 converted" in capsys.readouterr().out
        assert cli(["convert", RETRIED_500, "--output", str(out), "--opset", "15"]) == 0
        assert "0 converted, 1 already up to date" in capsys.readouterr().out


def test_offline_converts_from_a_local_mirror_folder_and_refuses_a_url(tarballs, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / f"{RETRIED_500}.tgz").write_bytes(tarballs[f"{RETRIED_500}.tgz"])
    env = dict(os.environ, ONNX_MOBILENETS_OFFLINE="1", ONNX_MOBILENETS_MIRROR=str(mirror),
               ONNX_MOBILENETS_HOME=str(tmp_path / "home"))
    command = [sys.executable, "-m", "onnx_mobilenets.cli", "convert", RETRIED_500, "--output", str(tmp_path / "out")]
    local = subprocess.run(command, capture_output=True, text=True, env=env)
    assert local.returncode == 0, local.stdout + local.stderr
    assert (tmp_path / "out" / f"{RETRIED_500}.onnx").is_file()
    env["ONNX_MOBILENETS_MIRROR"] = "http://127.0.0.1:9/models"
    env["ONNX_MOBILENETS_HOME"] = str(tmp_path / "empty_home")  # nothing cached
    remote = subprocess.run([*command[:-1], str(tmp_path / "other")], capture_output=True, text=True, env=env)
    assert remote.returncode == 1
    assert "ONNX_MOBILENETS_OFFLINE=1 forbids downloading it from http://127.0.0.1:9/models/" in remote.stderr


def test_ctrl_c_in_a_download_stops_cleanly_and_leaves_no_partial_file(tarballs, tmp_path):
    files = {f"{RETRIED_500}.tgz": tarballs[f"{RETRIED_500}.tgz"]}
    with serving(files, {f"{RETRIED_500}.tgz": ["slow"]}) as server:
        env = dict(os.environ, ONNX_MOBILENETS_MIRROR=server.base, ONNX_MOBILENETS_HOME=str(tmp_path / "home"))
        out = tmp_path / "out"
        command = [sys.executable, "-m", "onnx_mobilenets.cli", "convert", RETRIED_500, "--output", str(out)]
        run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=ctrl_c_works)
        deadline = time.time() + 120
        while not list((tmp_path / "home").rglob("*.part")) and time.time() < deadline:
            time.sleep(0.05)  # until the download has begun
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=120)
    assert run.returncode == 130, out + err
    assert "interrupted" in err and "0 converted" in out
    assert _partial_files(tmp_path / "home", tmp_path / "out") == []
    assert not (tmp_path / "out" / f"{RETRIED_500}.onnx").exists()
