"""Classification as a service: one Ray Serve deployment holding an `OnnxMobileNet` (the ``[serve]``
extra). `application` builds it for users who compose their own Serve apps; `serve_forever` is
`onnx-mobilenets serve`.

Each request's image is decoded and preprocessed in a thread of its replica, so a bad image is
answered alone (4xx, the Python API's message) and never enters a batch; only the network's run is
batched, by ``@serve.batch``, across the requests in flight. The HTTP API (docs/serving.md):

- ``POST /v1/classify[?top=K]``: the image's bytes as the body, or several images as
  ``multipart/form-data`` (each part one file); answers the top-K predictions.
- ``GET /v1/model``: the variant, precision, preprocessing, input contract and labels.
- ``GET /healthz``; ``GET /openapi.json`` and ``/docs`` (FastAPI's).

Every answer carries the model's name and the package version (in the JSON and in the
``X-Onnx-Mobilenets-Model`` / ``-Version`` headers); classification answers also say which replica
ran them and the size of the batch they ran in (``X-Replica``, ``X-Batch-Size``).
"""


import asyncio
import dataclasses
import logging
import os
import signal
import threading
from http import HTTPStatus
from typing import Optional

import onnx_mobilenets
from onnx_mobilenets.builtin import DEFAULT_MODEL
from onnx_mobilenets.errors import InvalidImageError
from onnx_mobilenets.published import artifact_contract, model_config
from onnx_mobilenets.runtime.ray import connect, model_from_shipped, shipped
from onnx_mobilenets.runtime.stream import check_top
from onnx_mobilenets.sessions import session_options

SERVE_INSTALL = "pip install 'onnx-mobilenets[serve]'"
try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from ray import serve
    from starlette.formparsers import MultiPartParser
except ImportError as e:
    raise ImportError(f"serving needs Ray Serve: {SERVE_INSTALL} ({e})") from None

APP_NAME = "onnx-mobilenets"
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_MAX_BODY_BYTES = 32 * 2**20
MAX_FILES_PER_REQUEST = 256
MODEL_HEADER, VERSION_HEADER = "X-Onnx-Mobilenets-Model", "X-Onnx-Mobilenets-Version"

api = FastAPI(title="onnx-mobilenets", version=onnx_mobilenets.__version__,
              description="MobileNet ImageNet classification (onnxruntime), batched by Ray Serve")

_CLASSIFY_OPENAPI = {
    "parameters": [{"name": "top", "in": "query", "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}}],
    "requestBody": {"required": True, "content": {
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {
            "type": "string", "format": "binary"}}}}},
}


class RequestError(Exception):
    """A request the service refuses: its HTTP status and the message the caller reads."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How the deployment runs; checked where it is made, so a bad value fails before Ray starts."""

    replicas: int = 1
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    providers: object = "auto"
    threads: Optional[int] = None  # onnxruntime's intra-op threads per replica
    num_cpus: float = 1  # Ray CPUs each replica holds

    def __post_init__(self):
        for name in ("replicas", "max_batch_size", "max_body_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.batch_wait_ms, (int, float)) or not 0 <= self.batch_wait_ms <= 10_000:
            raise ValueError(f"batch_wait_ms must be from 0 to 10000, got {self.batch_wait_ms!r}")
        if not isinstance(self.num_cpus, (int, float)) or self.num_cpus < 0:
            raise ValueError(f"num_cpus must be a number of at least 0, got {self.num_cpus!r}")


# Defined before the deployment: serve.ingress pickles the routes as they are when it runs.
def _top(text: Optional[str]) -> int:
    if text is None:
        return 5
    try:
        top = int(text)
    except ValueError:
        top = text
    check_top(top)  # the Python API's message
    return top


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")


async def _read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it is over `limit` bytes, before reading it all
    when its Content-Length says so."""
    too_large = RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                             f"the request body is over the limit of {limit} bytes (serve --max-body-mb)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _files_of(request: Request, body: bytes) -> list:
    """(filename, bytes) of each file part of a multipart body; RequestError when there is none."""
    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=MAX_FILES_PER_REQUEST).parse()
    except Exception as e:  # starlette's MultiPartException and python-multipart's own errors
        raise RequestError(HTTPStatus.BAD_REQUEST, f"the multipart body could not be parsed: {e}") from None
    files = []
    for _, value in form.multi_items():
        if hasattr(value, "read"):  # an UploadFile; plain fields are ignored
            files.append((value.filename or f"file {len(files) + 1}", await value.read()))
    if not files:
        raise RequestError(HTTPStatus.BAD_REQUEST, "the multipart body holds no file: send each image as a file part")
    return files


@serve.deployment(name="Classifier")
@serve.ingress(api)
class Classifier:
    """One replica: an OnnxMobileNet made from the shipped artifact, and the HTTP routes."""

    def __init__(self, artifact: bytes, sha256: str, options: ServeOptions):
        session = session_options()  # quiet, like every session of the package
        # The replica shares its cores with the decoders and the HTTP proxy: onnxruntime's threads
        # would spin on them between batches (docs/serving.md: 34.5 -> 43.7 images/s at 32 clients).
        session.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model, self._folder = model_from_shipped(artifact, sha256, providers=options.providers,
                                                      threads=options.threads, session_options=session)
        self.steps = self.model.steps
        self.options = options
        self._probabilities.set_max_batch_size(options.max_batch_size)
        self._probabilities.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)
        record = self.model.record
        self.name = record.name
        self.replica = serve.get_replica_context().replica_id.unique_id
        config = model_config(record, {record.spec.file_name: artifact_contract(record, artifact)},
                              onnx_mobilenets.__version__)
        self.about = {**self._stamp(), "preprocessing": self.model.preprocessing, "config": config,
                      "labels": [list(pair) for pair in record.labels]}

    def _stamp(self) -> dict:
        return {"model": self.name, "package_version": onnx_mobilenets.__version__}

    def _answer(self, body: dict, status: int = 200, **headers) -> JSONResponse:
        headers = {MODEL_HEADER: self.name, VERSION_HEADER: onnx_mobilenets.__version__, **headers}
        return JSONResponse({**self._stamp(), **body}, status_code=status, headers=headers)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_MS / 1000)
    async def _probabilities(self, arrays: list) -> list:
        # In a thread: the event loop goes on taking requests, which form the next batch meanwhile.
        rows = await asyncio.to_thread(self.steps.probabilities, arrays)
        return [(row, len(arrays)) for row in rows]

    async def _classify_one(self, data: bytes, top: int) -> tuple:
        """(predictions as JSON, the size of the batch it ran in); InvalidImageError for a bad image."""
        array = await asyncio.to_thread(self.steps.load, data)
        row, batch_size = await self._probabilities(array)
        predictions = [p._asdict() for p in self.steps.top_predictions(row, top)]
        return predictions, batch_size

    @api.post("/v1/classify", openapi_extra=_CLASSIFY_OPENAPI,
              summary="Classify one image (the body) or several (multipart/form-data)")
    async def classify(self, request: Request):
        try:
            top = _top(request.query_params.get("top"))
            body = await _read_body(request, self.options.max_body_bytes)
            if _is_multipart(request):
                return await self._classify_files(request, body, top)
            predictions, batch_size = await self._classify_one(body, top)
        except RequestError as e:
            return self._answer({"error": str(e)}, e.status)
        except (InvalidImageError, ValueError) as e:
            return self._answer({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        return self._answer({"preprocessing": self.model.preprocessing, "predictions": predictions},
                            **{"X-Replica": self.replica, "X-Batch-Size": str(batch_size)})

    async def _classify_files(self, request: Request, body: bytes, top: int):
        files = await _files_of(request, body)
        outcomes = await asyncio.gather(*(self._classify_one(data, top) for _, data in files), return_exceptions=True)
        results, batch_sizes = [], [1]
        for (filename, _), outcome in zip(files, outcomes):
            if isinstance(outcome, (InvalidImageError, ValueError)):
                results.append({"filename": filename, "error": str(outcome)})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append({"filename": filename, "predictions": outcome[0]})
                batch_sizes.append(outcome[1])
        return self._answer({"preprocessing": self.model.preprocessing, "results": results},
                            **{"X-Replica": self.replica, "X-Batch-Size": str(max(batch_sizes))})

    @api.get("/v1/model", summary="The model: variant, precision, preprocessing, input contract, labels")
    async def model_info(self):
        return self._answer(self.about)

    @api.get("/healthz", summary="200 while the replica can classify")
    async def healthz(self):
        return self._answer({"status": "ok"})


def application(model=DEFAULT_MODEL, options: Optional[ServeOptions] = None, **option_values):
    """The Ray Serve application serving `model` (resolved here, then shipped to every replica, so
    replicas on other machines need no copy): pass it to ``serve.run``. Options are `ServeOptions`'
    fields, as an object or as keywords."""
    options = options or ServeOptions(**option_values)
    artifact, sha256 = shipped(model)
    deployment = Classifier.options(
        num_replicas=options.replicas, ray_actor_options={"num_cpus": options.num_cpus},
        # Ray Serve's default (5 requests in flight per replica) would cap every batch at 5; two
        # batches' worth lets the next one fill while one runs. Beyond that, requests go to other
        # replicas (Serve prefers those on the proxy's own node until they are full).
        max_ongoing_requests=2 * options.max_batch_size,
        graceful_shutdown_wait_loop_s=0.5)  # how often a stopping replica looks for requests left
    return deployment.bind(artifact, sha256, options)


def serve_forever(model=DEFAULT_MODEL, *, host: str = "127.0.0.1", port: int = 8000, address: Optional[str] = None,
                  options: Optional[ServeOptions] = None, on_ready=print) -> None:
    """`onnx-mobilenets serve`: run the application on a local Ray (or the cluster at `address`)
    until SIGTERM or Ctrl-C, then drain the requests in flight and stop: with a local Ray, every Ray
    process this started; on a cluster, the application (and Serve, when nothing else runs on it)."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be from 1 to 65535, got {port}")
    app = application(model, options or ServeOptions())
    # "local": a Ray of its own, even where `ray start` left a cluster that ray.init() would join.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    stop, previous = threading.Event(), {}
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its start-up lines, which ours replaces
    try:
        connect(address, need_data=False)
        # After ray.init, which sets a SIGTERM handler of its own (it exits at once).
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
        # One HTTP proxy, on the head node (nodes sharing a machine cannot all bind the port).
        serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/")
        on_ready(f"serving {model} on http://{host}:{port}/v1/classify (Ctrl-C or SIGTERM stops it)")
        while not stop.wait(0.5):
            pass
        on_ready("stopping: answering the requests in flight first")
    finally:
        _stop(own_ray=address == "local")
        for s, handler in previous.items():
            signal.signal(s, handler)


def _stop(own_ray: bool) -> None:
    """Deleting the application lets each replica finish the requests it holds (Serve's graceful
    shutdown) before it stops; then Serve goes too, on a cluster only when nothing else runs on it."""
    import ray

    if not ray.is_initialized():
        return
    try:
        serve.delete(APP_NAME)  # first, while the proxy still carries the answers back
        if own_ray or not serve.status().applications:
            serve.shutdown()
    finally:
        ray.shutdown()
