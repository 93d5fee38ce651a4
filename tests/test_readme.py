"""Every code sample in the README and in docs/ works: each Python block runs, in a fresh process,
against the fixtures (served the way a user gets them: a cached artifact, a mirror of official file
names, a local checkpoint path); each `onnx-mobilenets` command line in a shell block parses with
today's command line, and runs for real, its output checked, unless it needs what a machine
without the internet cannot have (`CANNOT_RUN_HERE` says what, and why). Documentation and API
cannot drift apart unnoticed."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import IMAGES, REPO_ROOT

from onnx_mobilenets.cli import build_parser

DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
SKIP_MARK = re.compile(r"<!--\s*readme-test:\s*skip\s+(.+?)\s*-->")


def _blocks(language: str) -> list:
    """(where, code, skip reason or None) of each fenced block in `language` of every document."""
    return [(f"{document.relative_to(REPO_ROOT)}:{line}", code, skip)
            for document in DOCUMENTS for line, code, skip in _blocks_of(document, language)]


def _blocks_of(document, language: str) -> list:
    lines = document.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            start, body = i + 1, []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            previous = lines[start - 2] if start >= 2 else ""
            mark = SKIP_MARK.search(previous)
            blocks.append((start + 1, "\n".join(body), mark.group(1) if mark else None))
        i += 1
    return blocks


PYTHON = _blocks("python")
SHELL = _blocks("bash")
# One Ray cluster at a time on a machine: a sample that starts one runs on the worker of every other
# test that does; the rest run anywhere.
ONE_RAY_AT_A_TIME = pytest.mark.xdist_group("ray")


def _samples(blocks: list) -> list:
    """pytest parameters of `blocks` (tuples whose first item is where, whose second is the code)."""
    return [pytest.param(*block, id=block[0], marks=[ONE_RAY_AT_A_TIME] if re.search(r"\bray\b", block[1]) else [])
            for block in blocks]


@pytest.fixture(scope="module")
def world(tmp_path_factory, fixtures, fixture_artifacts, quant_artifacts):
    """A working folder with the example images, a cache holding the V2 artifacts, a mirror serving
    a fixture checkpoint under an official name without a published checksum, and the checkpoint
    at the `path/to/` the README names."""
    out, _ = fixture_artifacts
    root = tmp_path_factory.mktemp("readme")
    work, cache, mirror = root / "work", root / "cache", root / "mirror"
    (work / "path" / "to").mkdir(parents=True)
    (cache / "artifacts").mkdir(parents=True)
    mirror.mkdir()
    for image in IMAGES:
        shutil.copy(fixtures / "images" / image, work / image)
    shutil.copy(out / "mobilenet_v2_1.0_224.onnx", cache / "artifacts")
    shutil.copy(quant_artifacts / "mobilenet_v2_1.0_224_quant.onnx", cache / "artifacts")
    checkpoints = fixtures / "checkpoints"
    # Official file names of variants without a published checksum, served from the fixtures (a
    # network's weights do not depend on the resolution it runs at).
    for fixture, official in (("mobilenet_v2_1.0_224.tgz", "mobilenet_v2_1.0_192.tgz"),
                              ("mobilenet_v1_0.25_128.tgz", "mobilenet_v1_0.25_160.tgz"),
                              ("quantized_v2_224_100.tgz", "quantized_v2_224_100.tgz"),
                              ("mobilenet_v1_0.25_128_quant.tgz", "mobilenet_v1_0.25_128_quant.tgz")):
        shutil.copy(checkpoints / fixture, mirror / official)
    shutil.copy(checkpoints / "mobilenet_v2_1.0_224.tgz", work / "path" / "to" / "mobilenet_v2_1.0_224.tgz")
    for name in ("mobilenet_v1_0.25_128.tgz", "mobilenet_v1_0.25_128_quant.tgz"):  # the ./NAME.tgz of samples
        shutil.copy(checkpoints / name, work / name)
    # The image folders and lists the shell samples name.
    for folder, image in (("photos/trip", "elephant.jpg"), ("photos/zoo/big cats", "cheetah.jpg"),
                          ("imagenet/val/n02504458", "elephant.jpg"), ("imagenet/val/n02130308", "cheetah.jpg"),
                          ("flat_val", "elephant.jpg"), ("flat_val", "cheetah.jpg")):
        (work / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(fixtures / "images" / image, work / folder / image)
    (work / "val_labels.csv").write_text("file,label\nelephant.jpg,n02504458\ncheetah.jpg,293\n")
    (work / "todo.txt").write_text("elephant.jpg\ncheetah.jpg\n")
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(cache), ONNX_MOBILENETS_MIRROR=str(mirror),
               TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's onnx-mobilenets
    return work, env


def test_the_documents_have_samples():
    assert len([b for b in PYTHON if not b[2]]) >= 7 and len(SHELL) >= 8
    assert {where.split(":")[0] for where, _, _ in PYTHON + SHELL} >= {"README.md", "docs/many-images.md"}


@pytest.mark.parametrize("line, code, skip", _samples(PYTHON))
def test_python_sample_runs(world, line, code, skip):
    if skip:
        pytest.skip(f"{line}: {skip}")
    work, env = world
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{line} failed:\n{code}\n{result.stderr[-3000:]}"
    if "elephant.jpg" in code and "print" in code:  # the label, not the file name the sample may print
        assert "African elephant" in result.stdout or "tusker" in result.stdout, result.stdout


def _command_lines(code: str) -> list:
    """The argument lists of every `onnx-mobilenets` invocation in a shell block."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|\|\||;|\|", line.split(" #", 1)[0]):
            words = shlex.split(part)
            for i, word in enumerate(words):
                if word.endswith("onnx-mobilenets") and not any(w.endswith("pip") for w in words[:i]):
                    commands.append(words[i + 1:])
                    break
    return commands


@pytest.mark.parametrize("line, code, skip", SHELL, ids=[b[0] for b in SHELL])
def test_shell_commands_parse(line, code, skip):
    for arguments in _command_lines(code):
        try:
            build_parser().parse_args(arguments)
        except SystemExit as e:
            pytest.fail(f"{line}: `onnx-mobilenets {' '.join(arguments)}` does not parse ({e})")


def _checksummed(name: str) -> str:
    return f"needs Google's {name} checkpoint, checked against its published SHA-256 (no fixture is it)"


# The documents' `onnx-mobilenets` command lines that cannot run on a machine without the internet,
# and why; every other one runs in test_shell_sample_runs.
CANNOT_RUN_HERE = {
    "convert --all": "downloads all 76 official files (about 2 GB)",
    "convert v2": _checksummed("mobilenet_v2_1.0_224"),
    "convert v2 --image-input": _checksummed("mobilenet_v2_1.0_224"),
    "convert v2 v2_quant --image-input": _checksummed("mobilenet_v2_1.0_224"),
    "convert v2 --preprocessing slim": _checksummed("mobilenet_v2_1.0_224"),
    "convert v2 --float16": _checksummed("mobilenet_v2_1.0_224"),
    "convert --all --random-weights --output bench": "converts all 76 variants (tests/test_parity.py runs "
                                                     "`convert --all --random-weights`, which is the float 38)",
    "predict @todo.txt --ray --output s3://bucket/predictions/": "writes to an S3 bucket on a remote cluster",
    "predict @todo.txt --ray --output s3://bucket/p/": "writes to an S3 bucket on a remote cluster",
}
RUNNABLE = [(line, code) for line, code, skip in SHELL
            if not skip and any(" ".join(c) not in CANNOT_RUN_HERE for c in _command_lines(code))]


def test_what_cannot_run_here_is_in_the_documents():
    """Every exemption names a command line the documents still show (no stale excuses)."""
    shown = {" ".join(c) for _, code, _ in SHELL for c in _command_lines(code)}
    assert set(CANNOT_RUN_HERE) <= shown, set(CANNOT_RUN_HERE) - shown
    assert len(RUNNABLE) >= 5


def _output_of(arguments: list):
    return arguments[arguments.index("--output") + 1] if "--output" in arguments else None


def _check_command(arguments: list, result, work: Path) -> None:
    """What a command's success looks like, beyond its exit status."""
    command, shown = arguments[0], f"onnx-mobilenets {' '.join(arguments)}"
    assert result.returncode == 0, f"{shown} exited {result.returncode}:\n{result.stderr[-3000:]}"
    output = _output_of(arguments)
    if output:
        written = work / output
        assert written.exists(), f"{shown} wrote no {output}"
        assert written.stat().st_size > 0 if written.is_file() else any(written.iterdir()), f"{output} is empty"
    if command == "predict" and not output and "elephant.jpg" in arguments:
        assert "African elephant" in result.stdout or "tusker" in result.stdout, result.stdout
    if command == "predict" and output and output.endswith(".csv"):
        text = (work / output).read_text()
        assert "African elephant" in text and "cheetah" in text, text
    if command == "evaluate":  # both photographs in folders (or rows) of their classes: in every top-5
        if "--json" in arguments:
            report = json.loads(result.stdout)
            assert (report["classified"], report["top5"]) == (2, 1.0), report
        else:
            assert "top-5 100.00 % on 2 images" in result.stdout, result.stdout
    if command == "verify" and "--mobile" in arguments:
        assert "| NNAPI |" in result.stdout and "(100%)" in result.stdout, result.stdout
    elif command == "verify":
        assert "PASS" in result.stdout and "FAIL" not in result.stdout, result.stdout
    if command == "convert":
        assert ", 0 failed" in result.stdout, result.stdout
        # where the artifacts went, and how the runtime finds them there
        hint = "export ONNX_MOBILENETS_ARTIFACTS_URL=" if output else "OnnxMobileNet(NAME) finds them by name"
        assert hint in result.stdout, result.stdout


@pytest.mark.parametrize("line, code", _samples(RUNNABLE))
def test_shell_sample_runs(world, tmp_path, line, code):
    """The block's runnable command lines, in order (a later one may use what an earlier one wrote),
    in a fresh copy of the world: folder, cache and mirror."""
    work, env = world
    root = tmp_path / "world"
    shutil.copytree(work.parent, root, symlinks=True)
    work = root / work.name
    env = dict(env, ONNX_MOBILENETS_HOME=str(root / "cache"), ONNX_MOBILENETS_MIRROR=str(root / "mirror"))
    for arguments in _command_lines(code):
        if " ".join(arguments) in CANNOT_RUN_HERE:
            continue
        result = subprocess.run(["onnx-mobilenets", *arguments], cwd=work, env=env, capture_output=True, text=True,
                                timeout=1200)
        _check_command(arguments, result, work)
