"""The same classification job on a Ray cluster (the ``[ray]`` extra, imported only when used).

`classify` turns image paths, or a Ray Dataset of image bytes (``ray.data.read_binary_files(...,
include_paths=True)``, so the files are read and decoded on the workers), into a Dataset of the rows
`onnx-mobilenets predict` writes: path, top-k class indices, synsets, labels, probabilities, error.
It runs `map_batches` with a callable class: one onnxruntime session per actor, the artifact's
bytes shipped once through Ray's object store and checked by SHA-256 where each actor starts.

Sizing: by default one actor per CPU that is left after keeping one for the tasks that read the
files (with two CPUs and two one-CPU actors the read tasks never get a CPU and the job waits
forever), or one per GPU with ``num_gpus``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets.artifact import read_record
from onnx_mobilenets.builtin import DEFAULT_MODEL
from onnx_mobilenets.errors import OnnxMobileNetsError

from .artifacts import resolve_model
from .model import DEFAULT_BATCH_SIZE, OnnxMobileNet
from .stream import COLUMNS

RAY_INSTALL = "pip install 'onnx-mobilenets[ray]'"


def _ray(need_data: bool = True):
    try:
        import ray
        if need_data:
            import ray.data  # noqa: F401 (Ray Data is a separate part of the ray package)
    except ImportError:
        raise ValueError(f"running on Ray needs Ray Data: {RAY_INSTALL}") from None
    return ray


def shipped(model) -> tuple:
    """(bytes, SHA-256) of `model` resolved here: what is sent to Ray workers, which then need no
    copy of their own (`model_from_shipped`)."""
    data = resolve_model(model).read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def model_from_shipped(artifact, sha256: str, **options) -> tuple:
    """(OnnxMobileNet, the temporary folder its file lives in: keep it as long as the model) in a
    Ray worker, from bytes (or an ObjectRef of them) checked against `sha256` on arrival."""
    ray = _ray(need_data=False)
    data = ray.get(artifact) if isinstance(artifact, ray.ObjectRef) else artifact
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise OnnxMobileNetsError(f"the artifact arrived with SHA-256 {actual}, expected {sha256}")
    folder = tempfile.TemporaryDirectory(prefix="onnx-mobilenets-worker-")
    path = Path(folder.name) / "model.onnx"
    path.write_bytes(data)
    if read_record(data).spec.batch:  # a fixed-batch artifact runs its own batch size, padded
        options["batch_size"] = None
    return OnnxMobileNet(path, **options), folder


class Classifier:
    """The per-actor state of `classify`: one OnnxMobileNet, made from the shipped artifact."""

    def __init__(self, artifact, sha256: str, top: int, providers, batch_size: int, workers: Optional[int]):
        self.model, self._folder = model_from_shipped(artifact, sha256, providers=providers, batch_size=batch_size)
        self.top, self.workers = top, workers

    def __call__(self, batch: dict) -> dict:
        paths = [str(p) for p in batch["path"]]
        sources = list(batch["bytes"]) if "bytes" in batch else paths
        rows = [r.as_row() for r in self.model.predict_stream(sources, top=self.top, workers=self.workers)]
        columns = {c: [row[c] for row in rows] for c in COLUMNS}
        columns["path"] = paths  # bytes carry no name: the row is named by the file it was read from
        return {c: _column(v) for c, v in columns.items()}


def _column(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def default_actors(num_cpus: float, num_gpus: float) -> int:
    """How many actors the connected cluster can run and still read files: one per GPU with GPUs,
    else one per `num_cpus` CPUs after one CPU kept for the read tasks."""
    ray = _ray()
    resources = ray.cluster_resources()
    if num_gpus:
        return max(1, int(resources.get("GPU", 0) // num_gpus))
    return max(1, int((resources.get("CPU", 1) - 1) // num_cpus))


def classify(sources, model=DEFAULT_MODEL, *, top: int = 5, batch_size: int = DEFAULT_BATCH_SIZE,
             concurrency: Optional[int] = None, num_cpus: float = 1, num_gpus: float = 0, providers=None,
             workers: Optional[int] = None):
    """A Ray Dataset of prediction rows for `sources`: a list of image paths (readable where the
    actors run; rows name them as absolute paths) or a Dataset with ``bytes`` and ``path`` columns.
    `model` is resolved here (alias, catalogue name or .onnx path) and shipped to the actors once.
    `concurrency` actors (default: `default_actors`), each with `num_cpus` CPUs and `num_gpus` GPUs,
    take batches of `batch_size` rows; `providers` default to "cuda" for GPU actors and "cpu" otherwise."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init()
    data, sha256 = shipped(model)
    if isinstance(sources, ray.data.Dataset):
        dataset = sources
    else:
        # Absolute: the actors need not share this process's working directory.
        dataset = ray.data.from_items([{"path": str(Path(p).absolute())} for p in sources])
    actors = concurrency or default_actors(num_cpus, num_gpus)
    return dataset.map_batches(
        Classifier,
        fn_constructor_kwargs={"artifact": ray.put(data), "sha256": sha256, "top": top,
                               "providers": providers or ("cuda" if num_gpus else "cpu"), "batch_size": batch_size,
                               "workers": workers or max(1, int(num_cpus))},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus,
        num_gpus=num_gpus, batch_format="numpy")


def connect(address: Optional[str], need_data: bool = True) -> None:
    """ray.init on `address` (else RAY_ADDRESS, else a new local cluster), with a clear error when
    there is no cluster there."""
    ray = _ray(need_data)
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    # A cluster started for this run alone gets no dashboard: on a small machine it takes a core for
    # seconds at start and keeps polling while the job runs (`ray start --head` makes one with it).
    started_here = {"include_dashboard": False} if address in (None, "local") else {}
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, **started_here)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise OnnxMobileNetsError(f"cannot connect to a Ray cluster at {address}: {e}") from None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at: ray.init itself retries for minutes, then
    exits the process."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not port.isdigit():  # "auto", "local": Ray's own lookups
        return
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise OnnxMobileNetsError(f"cannot reach a Ray cluster at {address}: {e.strerror or e} (is it running? "
                                  "`ray start --head` starts one; RAY_ADDRESS or --ray ADDRESS names it)") from None


def predict_to_parquet(sources, output: str, *, model=DEFAULT_MODEL, address: Optional[str] = None, top: int = 5,
                       batch_size: int = DEFAULT_BATCH_SIZE, quiet: bool = False) -> dict:
    """`onnx-mobilenets predict --ray`: classify on the cluster, write Parquet to `output` (a folder
    or any URI Ray's writers accept). Returns the row and error counts."""
    connect(address)
    # Not two log lines (start, plan) for each of the three executions below: the summary says what ran.
    _ray().data.DataContext.get_current().print_on_execution_start = False
    from ray.data.expressions import col

    dataset = classify(sources, model, top=top, batch_size=batch_size).materialize()
    dataset.write_parquet(output)
    errors = dataset.filter(expr=col("error") != "").count()
    rows = dataset.count()
    if not quiet:
        print(f"{rows} images ({errors} failed) -> {output}")
    return {"rows": rows, "errors": errors}
