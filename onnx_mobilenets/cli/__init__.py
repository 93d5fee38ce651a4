"""The applications on top of both sides: the `onnx-mobilenets` command line (one module per command),
its output files, `evaluate`, and `verify` with the engines it checks."""

from .parser import build_parser, main

__all__ = ["build_parser", "main"]
