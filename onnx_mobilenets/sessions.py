"""The one place that makes onnxruntime sessions and their options: quiet, on the providers given,
from bytes or a path.

onnxruntime is a base dependency; it is imported on first use, so that `import onnx_mobilenets`
stays light.
"""

from __future__ import annotations

from typing import Optional

CPU = "CPUExecutionProvider"
QUIET = 3  # onnxruntime's log severity: errors only (its warnings about unused initializers are noise here)


def session_options(threads: Optional[int] = None, graph_optimization_level=None, base=None):
    """onnxruntime SessionOptions: `base` (a caller's own, used as given) or new ones that log only
    errors; `threads` sets the intra-op thread count, `graph_optimization_level` onnxruntime's."""
    import onnxruntime as ort

    options = base
    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = QUIET
    if threads is not None:
        options.intra_op_num_threads = threads
    if graph_optimization_level is not None:
        options.graph_optimization_level = graph_optimization_level
    return options


def new_session(model, providers=(CPU,), options=None, threads: Optional[int] = None):
    """An InferenceSession on `model` (bytes or a path), with `options` (default: `session_options()`);
    `threads` sets the intra-op thread count."""
    import onnxruntime as ort

    options = session_options(threads, base=options)
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=options,
                                providers=list(providers))
