"""The main job on a flaky network: `convert` over several models, their tarballs served from a
local HTTP server on 127.0.0.1 that fails on purpose, goes on past what fails, says why, leaves no
partial file, and a rerun converts only what is left."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ctrl_c_works
from flaky_server import serving

from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.download import cache_dir
from onnx_mobilenets.errors import ConversionError

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
    assert "deprecated" not in local.stderr, local.stderr  # TensorFlow's notes on tf2onnx's code stay out
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


def test_an_interrupt_that_surfaces_as_another_error_inside_tf2onnx_stays_an_interrupt():
    """A Ctrl-C that lands in TensorFlow's C code can come out as any error (CI saw SystemError "bad
    argument to internal function"); it must stop the run, not be reported as a failed conversion."""
    from conversion.artifact import running_tf2onnx

    assert threading.current_thread() is threading.main_thread()  # where Python runs signal handlers
    # Ctrl-C as in a terminal, also where the suite itself was started with SIGINT ignored (in the
    # background of a non-interactive shell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with running_tf2onnx("the model"):
                try:
                    signal.raise_signal(signal.SIGINT)
                except KeyboardInterrupt:
                    raise SystemError("Objects/listobject.c:338: bad argument to internal function") from None
        with pytest.raises(ConversionError, match="tf2onnx could not convert the model: bad argument"):
            with running_tf2onnx("the model"):
                raise SystemError("bad argument to internal function")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_conversion_stops_cleanly_and_leaves_no_partial_file(fixtures, tmp_path):
    """Ctrl-C once the conversion itself runs (TensorFlow, tf2onnx, the gates): exit status 130, the
    summary, and neither an artifact nor a manifest nor a temporary file in the output folder."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "onnx_mobilenets.cli", "convert", "mobilenet_v1_0.25_128", "--checkpoint",
               str(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"), "--output", str(out)]
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(tmp_path / "home"))
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           preexec_fn=ctrl_c_works)
    deadline = time.time() + 120
    while not list((tmp_path / "home").rglob("*.index")) and time.time() < deadline:
        time.sleep(0.05)  # until the checkpoint is read: TensorFlow is up, the model being built
    time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    printed, err = run.communicate(timeout=120)
    assert run.returncode == 130, printed + err
    assert "interrupted: no partial file is left" in err and "0 converted" in printed
    assert not out.exists() or list(out.iterdir()) == []
    assert _partial_files(tmp_path / "home") == []


@pytest.fixture(scope="session")
def opset15_output(fixtures, tmp_path_factory):
    """A folder `convert mobilenet_v1_0.25_128 --opset 15` wrote (artifact and manifest), made once."""
    out = tmp_path_factory.mktemp("opset15")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ONNX_MOBILENETS_HOME", str(tmp_path_factory.mktemp("opset15_cache")))
        assert cli(["convert", "mobilenet_v1_0.25_128", "--checkpoint",
                    str(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"), "--output", str(out),
                    "--opset", "15"]) == 0
    return out


@pytest.mark.parametrize("interrupted", ["artifact", "manifest"])
def test_ctrl_c_while_a_file_is_written_leaves_no_partial_file(fixtures, opset15_output, tmp_path, monkeypatch,
                                                               capsys, interrupted):
    """Ctrl-C (a KeyboardInterrupt) halfway through writing the artifact, or the manifest after it:
    no temporary file stays, the manifest is the one before; an artifact whose manifest entry was
    not written is not taken for up to date."""
    import inspect

    from onnx_mobilenets import files

    out = tmp_path / "out"
    shutil.copytree(opset15_output, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    writes = []
    real_fdopen = files.os.fdopen

    def interrupted_write(fd, *args, **kwargs):
        handle = real_fdopen(fd, *args, **kwargs)
        if inspect.stack()[1].function != "atomic_write":
            return handle
        writes.append(fd)
        if len(writes) == (1 if interrupted == "artifact" else 2):
            real_write = handle.write

            def half_then_interrupt(data):
                real_write(data[:len(data) // 2])
                raise KeyboardInterrupt

            handle.write = half_then_interrupt
        return handle

    monkeypatch.setattr(files.os, "fdopen", interrupted_write)
    arguments = ["convert", "mobilenet_v1_0.25_128", "--checkpoint",
                 str(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"), "--output", str(out)]
    assert cli(arguments) == 130
    monkeypatch.undo()
    assert "interrupted: no partial file is left" in capsys.readouterr().err
    assert _partial_files(out) == []
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == sorted(before) and after["manifest.json"] == before["manifest.json"]
    if interrupted == "artifact":
        assert after == before  # the opset-15 artifact, untouched
    else:  # the new artifact is whole, but its manifest entry is the old one's
        assert after["mobilenet_v1_0.25_128.onnx"] != before["mobilenet_v1_0.25_128.onnx"]
        assert cli(arguments) == 0 and "1 converted, 0 already up to date" in capsys.readouterr().out


def test_an_artifact_is_out_of_date_when_the_version_the_source_or_its_bytes_change(fixtures, tmp_path,
                                                                                     monkeypatch, capsys):
    """`convert` skips an artifact only while its package version, its source's SHA-256 and its
    file's bytes are those recorded: a change to any one makes it out of date (asked of
    `is_up_to_date`, which `convert` asks), and `convert` makes it again."""
    import gzip
    import tarfile

    import onnx_mobilenets
    from onnx_mobilenets import get_variant
    from onnx_mobilenets.conversion.convert import fetch_source, is_up_to_date, spec_for

    out = tmp_path / "out"
    tarball = fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz"
    arguments = ["convert", "mobilenet_v1_0.25_128", "--output", str(out), "--checkpoint"]
    assert cli([*arguments, str(tarball)]) == 0
    capsys.readouterr()
    assert cli([*arguments, str(tarball)]) == 0 and "0 converted, 1 already up to date" in capsys.readouterr().out
    spec, variant = spec_for("mobilenet_v1_0.25_128"), get_variant("mobilenet_v1_0.25_128")
    assert is_up_to_date(spec, out, fetch_source(variant, tarball))

    # The same checkpoint in other bytes (recompressed): another SHA-256, so another source.
    repacked = tmp_path / "repacked.tgz"
    with tarfile.open(tarball) as source, gzip.open(repacked, "wb", compresslevel=1) as target:
        with tarfile.open(fileobj=target, mode="w") as copy:
            for member in source.getmembers():
                copy.addfile(member, source.extractfile(member) if member.isfile() else None)
    assert not is_up_to_date(spec, out, fetch_source(variant, repacked))

    monkeypatch.setattr(onnx_mobilenets, "__version__", "0.0.0-other")  # another version of the package
    assert not is_up_to_date(spec, out, fetch_source(variant, tarball))
    monkeypatch.undo()
    assert is_up_to_date(spec, out, fetch_source(variant, tarball))  # back to ours

    artifact = out / "mobilenet_v1_0.25_128.onnx"
    artifact.write_bytes(artifact.read_bytes() + b"\0")  # the file changed after conversion
    assert not is_up_to_date(spec, out, fetch_source(variant, tarball))
    assert cli([*arguments, str(tarball)]) == 0 and "1 converted" in capsys.readouterr().out
    assert cli([*arguments, str(tarball)]) == 0 and "1 already up to date" in capsys.readouterr().out
