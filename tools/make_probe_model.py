"""Regenerate onnx_mobilenets/data/probe.onnx: a one-node model (Relu on float32 [1, 4]) that
`onnx-mobilenets doctor` loads on each execution provider to see which ones really bind.

    python tools/make_probe_model.py   (needs the onnx package)
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

OUT = Path(__file__).resolve().parents[1] / "onnx_mobilenets" / "data" / "probe.onnx"

graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "probe",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnx-mobilenets")
model.ir_version = 7  # readable by every onnxruntime since 1.7
onnx.checker.check_model(model)
OUT.write_bytes(model.SerializeToString())
print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
