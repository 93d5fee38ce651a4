"""The ONNX engines `verify` checks an artifact on: onnxruntime's providers and independent runtimes.

ONNX is an interchange format; the proof that an artifact is interchangeable is that engines written
by different people compute the same thing. Besides onnxruntime (CPU; CUDA and TensorRT where they
bind), two independent implementations read the file directly: OpenVINO's CPU runtime and OpenCV's
DNN module (both from the ``[verify]`` extra; a row says so when one is not installed). They run in
a child process of their own: native code that kills its process on a graph it cannot handle
(OpenCV has been seen to) makes a row that says so, not the end of `verify`.

Every engine runs in float32: the bound of `onnx_mobilenets.parity` is a float32 bound.
- OpenVINO's CPU plugin defaults to bf16 on CPUs with AVX-512 BF16 or AMX (differences up to about
  2e-2 in probability), so the row pins ``INFERENCE_PRECISION_HINT`` to f32.
- onnxruntime's CUDA provider runs with TF32 off (``use_tf32=0``, as the runtime always does).
- TensorRT computes float32 layers in TF32 unless ``NVIDIA_TF32_OVERRIDE=0`` is in the environment
  before CUDA starts; onnxruntime offers no per-session switch. `onnx-mobilenets verify` sets it; a
  process without it gets a row that says why TensorRT was not checked.
"""

from __future__ import annotations

import importlib
import importlib.util
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort

from onnx_mobilenets.artifact import runtime_form
from onnx_mobilenets.errors import OnnxMobileNetsError, ProviderError
from onnx_mobilenets.runtime.providers import CPU, CUDA, create_session, cuda_options

VERIFY_EXTRA = "pip install 'onnx-mobilenets[verify]'"
TF32_OVERRIDE_ENV = "NVIDIA_TF32_OVERRIDE"
# onnxruntime's execution providers `verify` knows, and what rows call them.
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
LABELS = {"cpu": "CPU", "cuda": "CUDA", "tensorrt": "TensorRT"}


class EngineCrashed(OnnxMobileNetsError):
    """An engine's process died while it ran an artifact."""


class Engine:
    """One way to run an ONNX file. `device` picks the tolerance ("cpu" or "gpu"); `exact`: it
    computes quantized artifacts as TFLite does, step for step (`onnx_mobilenets.artifact.judge`);
    an engine that does not claim `runs_image_input` is not failed for refusing an image-in
    artifact (dynamic shapes), only skipped with its reason."""

    name = ""
    label = ""  # what to call it in messages
    device = "cpu"
    exact = False
    note = ""
    runs_image_input = True
    reads_ort_format = False  # onnxruntime's own format (.ort files)

    def unavailable(self) -> Optional[str]:
        """Why this engine cannot run here, or None."""
        return None

    def version(self) -> str:
        raise NotImplementedError

    def run(self, path: Path, feeds: list) -> np.ndarray:
        """The artifact's first output for each array of `feeds` (as the model takes them),
        concatenated."""
        raise NotImplementedError

    def close(self) -> None:
        """Let go of what the engine holds (its child process)."""


class OnnxRuntime(Engine):
    """onnxruntime on one provider, checked to really run there (never a silent CPU fallback)."""

    @property
    def reads_ort_format(self) -> bool:
        return self.provider != "tensorrt"  # TensorRT compiles ONNX graphs: an ORT format file has none

    def __init__(self, provider: str = "cpu"):
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {sorted(PROVIDERS)}, got {provider!r}")
        self.provider = provider
        self.name = self.label = f"onnxruntime-{LABELS[provider]}"
        self.device = "cpu" if provider == "cpu" else "gpu"
        self.note = {"cuda": "TF32 off", "tensorrt": "TF32 off (NVIDIA_TF32_OVERRIDE=0)"}.get(provider, "")
        self._last = None  # (path, session)

    @property
    def exact(self) -> bool:
        return self.provider == "cpu"  # onnxruntime's CPU QDQ kernels follow TFLite's integer arithmetic

    def unavailable(self) -> Optional[str]:
        wanted = PROVIDERS[self.provider]
        if wanted not in ort.get_available_providers():
            return f"this onnxruntime offers no {wanted}"
        if self.provider == "tensorrt" and os.environ.get(TF32_OVERRIDE_ENV) != "0":
            return (f"TensorRT would compute in TF32 ({TF32_OVERRIDE_ENV}=0 was not set before CUDA started; "
                    "onnxruntime has no per-session switch); `onnx-mobilenets verify` sets it")
        return None

    def version(self) -> str:
        return ort.__version__

    def session(self, path: Path):
        """A session on `path` (the last one is kept, so reading metadata and running share it)."""
        if self._last is not None and self._last[0] == Path(path):
            return self._last[1]
        data = runtime_form(Path(path).read_bytes())  # as OnnxMobileNet runs it
        if self.provider != "tensorrt":
            session = create_session(data, self.provider)
        else:
            trt = PROVIDERS["tensorrt"]
            session = create_session(data, [(trt, {"device_id": 0}), (CUDA, cuda_options(0)), CPU])
            if session.get_providers()[0] != trt:
                bound = session.get_providers()
                raise ProviderError(f"the TensorRT provider did not bind (session providers: {bound})")
        self._last = (Path(path), session)
        return session

    def run(self, path: Path, feeds: list) -> np.ndarray:
        session = self.session(path)
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: feed})[0] for feed in feeds])


class IsolatedEngine(Engine):
    """An engine that runs in a child process of its own, started on first use and again after a
    crash. Subclasses define `compute(path, feeds)`, which runs there."""

    module = ""  # the Python package it is (imported in the child)

    def __init__(self):
        self._pool = None

    def unavailable(self) -> Optional[str]:
        if importlib.util.find_spec(self.module) is None:
            return f"{self.label} is not installed ({VERIFY_EXTRA})"
        return None

    def version(self) -> str:
        return importlib.import_module(self.module).__version__.split("-")[0]

    def run(self, path: Path, feeds: list) -> np.ndarray:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=_child_processes())
        try:
            return self._pool.submit(self.compute, str(path), feeds).result()
        except BrokenProcessPool:
            self.close()  # the next run starts a new process
            raise EngineCrashed(f"{self.label}'s process died running the artifact (native code crashed)") from None

    def compute(self, path: str, feeds: list) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # the process is gone when this returns
            self._pool = None

    def __getstate__(self):  # what the child gets: the engine without its pool
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}


def _child_processes():
    """How an isolated engine's process starts: forked from a fork server that has this module (numpy,
    onnxruntime) loaded already, where the platform has fork servers: half the CPU time of a fresh
    interpreter (spawn), which is the fallback. Each engine still gets a process of its own, in this
    process's working folder; its environment variables are those of when the server started."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])  # read when the server starts: Python's default, and us
    return context


class OpenVino(IsolatedEngine):
    name, module, label, note = "OpenVINO-CPU", "openvino", "OpenVINO", "f32 pinned"

    def compute(self, path: str, feeds: list) -> np.ndarray:
        import openvino

        compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([np.asarray(compiled(feed)[compiled.output(0)]) for feed in feeds])


class OpenCv(IsolatedEngine):
    name, module, label = "OpenCV-DNN", "cv2", "OpenCV"
    # Measured with OpenCV 5.0: it refuses the default preprocessing's dynamic Reshape and computes the
    # slim one's Resize wrong.
    runs_image_input = False

    def compute(self, path: str, feeds: list) -> np.ndarray:
        import cv2

        net = cv2.dnn.readNetFromONNX(path)
        results = []
        for feed in feeds:
            net.setInput(feed)
            results.append(np.asarray(net.forward()))
        return np.concatenate(results)


def engines_here() -> list:
    """Every engine `verify` reports on: onnxruntime CPU always, its GPU providers where onnxruntime
    offers them, and the independent runtimes (a row says why when one cannot run)."""
    available = ort.get_available_providers()
    engines = [OnnxRuntime("cpu")]
    engines += [OnnxRuntime(p) for p in ("cuda", "tensorrt") if PROVIDERS[p] in available]
    return engines + [OpenVino(), OpenCv()]
