"""The one place that makes onnxruntime sessions: quiet, on the providers given, from bytes or a path.

onnxruntime is a base dependency; it is imported on first use, so that `import onnx_mobilenets`
stays light.
"""

from __future__ import annotations

from typing import Optional

CPU = "CPUExecutionProvider"
QUIET = 3  # onnxruntime's log severity: errors only (its warnings about unused initializers are noise here)


def quiet_options():
    """New onnxruntime SessionOptions that log only errors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    return options


def new_session(model, providers=(CPU,), options=None, threads: Optional[int] = None):
    """An InferenceSession on `model` (bytes or a path). Without `options`, `quiet_options()`;
    `threads` sets the intra-op thread count."""
    import onnxruntime as ort

    if options is None:
        options = quiet_options()
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=list(providers))
