"""Choosing onnxruntime execution providers, and proving that the chosen one really runs.

onnxruntime silently falls back to the CPU when the CUDA provider cannot load its libraries; here
`"cuda"` is a promise: the session is checked after creation and an error says why CUDA is missing.
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Optional

import onnxruntime as ort

from onnx_mobilenets.errors import ProviderError
from onnx_mobilenets.sessions import CPU, new_session

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
ORT_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-training")

# One working sequence: pip cannot remove the CPU wheel that the base install depends on.
GPU_INSTALL = (
    'pip install "onnx-mobilenets[gpu]" && pip uninstall -y onnxruntime onnxruntime-gpu '
    '&& pip install --no-deps "onnxruntime-gpu>=1.19"'
)

_logged_cpu_fallback = False


def installed_onnxruntime_wheels() -> dict:
    """{distribution name: version} of every onnxruntime wheel installed."""
    found = {}
    for name in ORT_WHEELS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def conflicting_wheels_warning() -> Optional[str]:
    wheels = installed_onnxruntime_wheels()
    if "onnxruntime" in wheels and len(wheels) > 1:
        return (
            f"several onnxruntime wheels are installed ({', '.join(f'{k} {v}' for k, v in wheels.items())}); "
            "they overwrite each other's files, which usually disables the GPU provider. Fix: "
            "pip uninstall -y " + " ".join(wheels) + ' && pip install --no-deps "onnxruntime-gpu>=1.19"'
        )
    return None


def cuda_options(device_id: int = 0) -> dict:
    # HEURISTIC instead of the default EXHAUSTIVE cuDNN search: the exhaustive search benchmarks every
    # algorithm on the first run of each shape, which makes first predictions take seconds.
    # TF32 off (onnxruntime turns it on by default on Ampere and newer): its 10-bit mantissa moves
    # outputs by about 1e-3 relative, and a parity bound that loose would also pass real bugs (see
    # onnx_mobilenets.parity). MobileNets are mostly depthwise and 1x1 convolutions, limited by memory
    # traffic more than by arithmetic, so TF32 tensor cores are expected to buy them little.
    # Pass an explicit provider list with {"use_tf32": 1} to choose speed over faithfulness.
    return {"device_id": int(device_id), "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": 0}


def requested_providers(providers, device_id: int = 0) -> list:
    """The provider list to create a session with, from "auto", "cuda", "cpu" or an explicit list."""
    available = ort.get_available_providers()
    if isinstance(providers, str):
        choice = providers.lower()
        if choice == "cpu":
            return [CPU]
        if choice == "cuda":
            if CUDA not in available:
                raise ProviderError(_no_cuda_message(available))
            return [(CUDA, cuda_options(device_id)), CPU]
        if choice == "auto":
            return [(CUDA, cuda_options(device_id)), CPU] if CUDA in available else [CPU]
        raise ValueError(
            f"providers must be 'auto', 'cuda', 'cpu' or a list of onnxruntime providers, got {providers!r}"
        )
    if isinstance(providers, (list, tuple)) and providers:
        names = [p[0] if isinstance(p, (list, tuple)) else p for p in providers]
        missing = [n for n in names if n not in available]
        if missing:
            raise ProviderError(f"onnxruntime has no {', '.join(missing)}; available here: {', '.join(available)}")
        return [tuple(p) if isinstance(p, list) else p for p in providers]
    raise ValueError(f"providers must be 'auto', 'cuda', 'cpu' or a non-empty list, got {providers!r}")


def create_session(model_bytes_or_path, providers="auto", device_id: int = 0, session_options=None):
    """An InferenceSession on the requested providers; raises if CUDA was demanded and did not bind.
    Without `session_options`, onnxruntime logs only errors (`onnx_mobilenets.sessions`)."""
    wanted = requested_providers(providers, device_id)
    wants_cuda = any((p[0] if isinstance(p, tuple) else p) == CUDA for p in wanted)
    if wants_cuda and hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from the nvidia-* wheels that onnxruntime-gpu[cuda,cudnn] installs
            ort.preload_dlls()
        except Exception as e:  # a missing library is reported below if CUDA then fails to bind
            logger.debug("onnxruntime.preload_dlls failed: %s", e)
    session = new_session(model_bytes_or_path, wanted, options=session_options)
    bound = session.get_providers()
    if wants_cuda and CUDA not in bound:
        if providers == "auto":
            _log_cpu_fallback("the CUDA provider is installed but did not bind (see onnxruntime's messages above)")
        else:
            raise ProviderError(
                "the CUDA provider is installed but did not bind, so onnxruntime fell back to the CPU. "
                "Usual causes: no NVIDIA driver or GPU, or CUDA/cuDNN libraries that do not match this "
                "onnxruntime-gpu (see onnxruntime's messages above)."
                + (" " + conflicting_wheels_warning() if conflicting_wheels_warning() else "")
                + " Run `onnx-mobilenets doctor` for details."
            )
    elif providers == "auto" and CUDA not in bound:
        _log_cpu_fallback("onnxruntime offers no CUDA provider here")
    return session


def _no_cuda_message(available) -> str:
    wheels = installed_onnxruntime_wheels()
    text = (
        f"providers='cuda' but this onnxruntime offers no CUDAExecutionProvider (available: {', '.join(available)}; "
        f"installed wheels: {', '.join(f'{k} {v}' for k, v in wheels.items()) or 'none'}). "
    )
    warning = conflicting_wheels_warning()
    if warning:
        return text + warning
    return text + "Install the GPU build: " + GPU_INSTALL


def _log_cpu_fallback(reason: str) -> None:
    global _logged_cpu_fallback
    if not _logged_cpu_fallback:
        logger.info("providers='auto': running on the CPU because %s", reason)
        _logged_cpu_fallback = True
