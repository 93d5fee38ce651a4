"""``python -m onnx_mobilenets.cli``: the `onnx-mobilenets` command."""

import sys

from .parser import main

sys.exit(main())
