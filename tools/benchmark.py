"""Benchmark our artifacts and wrapper against the alternatives and the machine's limit.

    python tools/benchmark.py [NAME...] [--threads N] [--json FILE] [--markdown docs/benchmarks.md]

See onnx_mobilenets/benchmark.py for what is measured; needs the [convert] extra.
"""

import sys

from onnx_mobilenets.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
