"""Downloaded files are untrusted input: the artifact reader and the manifest readers hold on every
input the fuzzer (tools/fuzz_artifact.py, atheris) makes in a short run, and on every crasher found
so far (tests/fuzz_crashers/: each made one of them raise something else than their own errors)."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_module
from fuzz_artifact import one_input, seed_models

from onnx_mobilenets.artifact import read_record

REPO = Path(__file__).resolve().parents[1]
CRASHERS = sorted((REPO / "tests" / "fuzz_crashers").iterdir())
BUDGET_S = 10  # a smoke run (35,366 inputs here); the long runs are docs/hub.md's


@pytest.mark.parametrize("crasher", CRASHERS, ids=[p.name for p in CRASHERS])
def test_crashers_stay_fixed(crasher):
    one_input(crasher.read_bytes())  # returns, or raises only InvalidModelError / ValueError (caught inside)


def test_the_seeds_reach_the_deep_code():
    """The fuzzer starts from inputs the readers accept whole, so that its mutations explore the
    metadata parser and the int8 rewrite rather than only the first bytes."""
    from onnx_mobilenets.artifact import runtime_form

    seeds = seed_models()
    assert read_record(seeds["record"]).spec.variant == "mobilenet_v2_1.0_224_quant"
    assert runtime_form(seeds["int8_view"], int8_weights=True) != seeds["int8_view"]


def test_a_short_fuzzing_run_finds_nothing(tmp_path):
    require_module("atheris", "atheris (the [dev] extra)")
    result = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz_artifact.py"), "--seconds", str(BUDGET_S),
                             "--crashes", str(tmp_path / "crashes")], capture_output=True, text=True,
                            timeout=BUDGET_S + 120)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    runs = int(result.stdout.split("inputs run: ")[1].split()[0])
    assert runs > 1000 and "findings: none" in result.stdout, result.stdout
    print(result.stdout.strip())
