"""`onnx-mobilenets verify --mobile`: what the phone execution providers would take of an artifact,
by onnxruntime's own mobile usability checker (``python -m
onnxruntime.tools.check_onnx_model_mobile_usability``): after onnxruntime's basic graph
optimizations, as the checker does, how many of the nodes NNAPI (Android), CoreML NeuralNetwork and
CoreML MLProgram (iOS) support, in how many partitions, and the checker's verdict. A dynamic batch
makes every node unsupported on all three: `convert --batch 1` makes the input fully static.
Needs the `onnx` package (the [convert] extra), as the checker does."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

# The checker's execution providers: (name, its supported-ops list in onnxruntime's tools), None: NNAPI's own
EXECUTION_PROVIDERS = (("NNAPI", None), ("CoreML NeuralNetwork", "coreml_supported_neuralnetwork_ops.md"),
                       ("CoreML MLProgram", "coreml_supported_mlprogram_ops.md"))


@dataclass
class MobileRow:
    artifact: str
    execution_provider: str
    nodes: int
    supported: int
    partitions: int
    verdict: str  # the checker's: "YES", "MAYBE" or "NO" (worth trying with that provider)

    @property
    def coverage(self) -> float:
        return self.supported / self.nodes if self.nodes else 0.0


def mobile_usability(path: Path) -> list:
    """One `MobileRow` per execution provider for the artifact at `path`."""
    try:
        from onnxruntime.tools.mobile_helpers import usability_checker
        from onnxruntime.tools.onnx_model_utils import ModelProtoWithShapeInfo, optimize_model
    except ImportError as e:
        raise SystemExit(f"error: verify --mobile needs the onnx package (the [convert] extra): {e}") from None
    path = Path(path)
    with tempfile.TemporaryDirectory() as work:
        optimized = Path(work) / path.name
        optimize_model(path, optimized, use_external_initializers=True)
        model = ModelProtoWithShapeInfo(optimized).model_with_shape_info
        rows = []
        for name, supported_ops in EXECUTION_PROVIDERS:
            # require_fixed_input_sizes: a dynamic dimension counts against a node, as on the device
            info = (usability_checker.check_nnapi_partitions(model, True) if supported_ops is None
                    else usability_checker.check_coreml_partitions(model, True, supported_ops))
            rows.append(MobileRow(path.stem, name, info.num_nodes, info.num_supported_nodes, info.num_partitions,
                                  info.suitability().name))
    return rows
