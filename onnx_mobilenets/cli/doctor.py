"""`onnx-mobilenets doctor`: what onnxruntime can do on this machine, and what is in the cache."""

from __future__ import annotations

import ctypes
from importlib import resources

import numpy as np
import onnxruntime as ort

from onnx_mobilenets import download
from onnx_mobilenets.model_bytes import cpu_has_vnni
from onnx_mobilenets.runtime.providers import conflicting_wheels_warning, installed_onnxruntime_wheels
from onnx_mobilenets.sessions import new_session

# Libraries the CUDA provider of onnxruntime-gpu 1.19+ (CUDA 12, cuDNN 9) loads.
CUDA_LIBRARIES = ("libcuda.so.1", "libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcufft.so.11",
                  "libcudnn.so.9")
_SKIP = ("AzureExecutionProvider",)  # a remote-call provider, not a compute device


def probe_model() -> bytes:
    return resources.files("onnx_mobilenets").joinpath("data/probe.onnx").read_bytes()


def bindable_providers() -> dict:
    """{provider: "ok" or why not} for each provider this onnxruntime offers."""
    results = {}
    data = probe_model()
    for provider in ort.get_available_providers():
        if provider in _SKIP:
            continue
        try:
            session = new_session(data, [provider])
            bound = session.get_providers()[0]
            session.run(None, {"x": np.ones((1, 4), np.float32)})
            results[provider] = "ok" if bound == provider else f"did not bind (fell back to {bound})"
        except Exception as e:  # report, never crash the doctor
            results[provider] = f"failed: {str(e).splitlines()[0][:200]}"
    return results


def cuda_libraries() -> dict:
    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:
            pass
    status = {}
    for name in CUDA_LIBRARIES:
        try:
            ctypes.CDLL(name)
            status[name] = "loaded"
        except OSError:
            status[name] = "not found"
    return status


def report() -> str:
    lines = ["onnxruntime"]
    wheels = installed_onnxruntime_wheels()
    lines.append(f"  wheels installed: {', '.join(f'{k} {v}' for k, v in wheels.items()) or 'none'}")
    warning = conflicting_wheels_warning()
    if warning:
        lines.append(f"  WARNING: {warning}")
    lines.append(f"  imported: onnxruntime {ort.__version__}, device {ort.get_device()}")
    lines.append(f"  available providers: {', '.join(ort.get_available_providers())}")
    lines.append("  bindable providers (a probe model run on each):")
    for provider, state in bindable_providers().items():
        lines.append(f"    {provider}: {state}")
    if cpu_has_vnni():
        lines.append("  quantized models on the CPU: int8 weights, fast u8 x s8 kernels (this CPU has AVX512-VNNI)")
    else:
        lines.append("  quantized models on the CPU: the files' uint8 weights, exact u8 x u8 kernels (no AVX512-VNNI)")
    lines.append("CUDA / cuDNN libraries")
    for name, state in cuda_libraries().items():
        lines.append(f"  {name}: {state}")
    root = download.cache_dir()
    lines.append(f"cache: {root}{'' if root.exists() else ' (empty, not created yet)'}")
    if root.exists():
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".sha256"))
        total = sum(p.stat().st_size for p in files)
        lines.append(f"  {len(files)} files, {total / 1e6:.1f} MB")
        for p in files[:50]:
            lines.append(f"  {p.relative_to(root)}  {p.stat().st_size / 1e6:.1f} MB")
        if len(files) > 50:
            lines.append(f"  ... and {len(files) - 50} more")
    return "\n".join(lines)


def run(args) -> int:
    print(report())
    return 0
