"""An artifact in ORT format (`convert --ort`): the ``.ort`` file that onnxruntime's minimal mobile
build loads (it cannot read ``.onnx``), and the operator list that build is compiled with.

onnxruntime's own converter (``python -m onnxruntime.tools.convert_onnx_models_to_ort``) makes both,
with its "Fixed" optimization style and no target platform: the graph optimized as on any CPU (no
x86-only blocked layouts), saved. The ``.ort`` keeps the ``.onnx`` file's metadata (labels,
preprocessing, provenance, golden record), so the runtime reads it as any artifact. Then it is
checked: on the golden inputs it gives exactly the ``.onnx`` file's outputs
(`onnx_mobilenets.artifact.ort_format_difference`), or nothing is written. Both files are written
beside the ``.onnx`` file, each only when complete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from onnx_mobilenets.artifact import ort_format_difference, ort_format_files
from onnx_mobilenets.errors import ConversionError


def write_ort_format(onnx_path) -> tuple:
    """(NAME.ort, NAME.required_operators.config) written beside `onnx_path` (NAME.onnx)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"no artifact at {onnx_path}")
    targets = ort_format_files(onnx_path)
    with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix=".ort-format-") as tmp:
        result = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(onnx_path),
                                 "--output_dir", tmp, "--optimization_style", "Fixed"],
                                capture_output=True, text=True)
        made, operators = ort_format_files(Path(tmp) / onnx_path.name)  # what the converter wrote there
        if result.returncode != 0 or not made.is_file() or not operators.is_file():
            raise ConversionError("ort", f"onnxruntime's converter failed on {onnx_path.name}: "
                                         + (result.stderr or result.stdout).strip()[-1500:])
        difference = ort_format_difference(made.read_bytes(), onnx_path.read_bytes())
        if difference != 0.0:
            raise ConversionError("ort", f"{made.name} differs from {onnx_path.name} by up to {difference:.3g} on the "
                                         "golden inputs; it must compute exactly the same")
        # The list names the file it was made from: the final one, not the temporary folder's.
        operators.write_text(operators.read_text().replace(str(made), made.name))
        os.replace(operators, targets[1])
        os.replace(made, targets[0])
    return targets
