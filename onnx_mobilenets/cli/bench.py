"""`onnx-mobilenets bench`: the benchmark, a developer tool that lives in the repository's tools/
(not in the installed package); this runs it from a checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "benchmark.py"


def run(args) -> int:
    if not TOOL.is_file():
        raise FileNotFoundError("the benchmark is a developer tool, in the repository's tools/benchmark.py: run it "
                                "from a checkout of onnx-mobilenets (pip install -e .)")
    return subprocess.call([sys.executable, str(TOOL), *args.bench_args])
