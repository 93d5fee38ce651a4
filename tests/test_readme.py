"""Every code sample in the README and in docs/ works: each Python block runs, in a fresh process,
against the fixtures (served the way a user gets them: a cached artifact, a mirror of official file
names, a local checkpoint path); each `onnx-mobilenets` command line in a shell block parses with
today's command line. Documentation and API cannot drift apart unnoticed."""

import os
import re
import shlex
import shutil
import subprocess
import sys

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
    v2_checkpoint = fixtures / "checkpoints" / "mobilenet_v2_1.0_224.tgz"
    shutil.copy(v2_checkpoint, mirror / "mobilenet_v2_1.0_192.tgz")
    shutil.copy(v2_checkpoint, work / "path" / "to" / "mobilenet_v2_1.0_224.tgz")
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(cache), ONNX_MOBILENETS_MIRROR=str(mirror),
               TF_CPP_MIN_LOG_LEVEL="3")
    return work, env


def test_the_documents_have_samples():
    assert len([b for b in PYTHON if not b[2]]) >= 7 and len(SHELL) >= 8
    assert {where.split(":")[0] for where, _, _ in PYTHON + SHELL} >= {"README.md", "docs/many-images.md"}


@pytest.mark.parametrize("line, code, skip", PYTHON, ids=[b[0] for b in PYTHON])
def test_python_sample_runs(world, line, code, skip):
    if skip:
        pytest.skip(f"{line}: {skip}")
    work, env = world
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{line} failed:\n{code}\n{result.stderr[-3000:]}"
    if "elephant.jpg" in code and "print" in code:
        assert "elephant" in result.stdout.lower(), result.stdout


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
