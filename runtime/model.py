"""`OnnxMobileNet`: a MobileNet artifact in onnxruntime, from image to labelled predictions."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import NamedTuple, Optional

import numpy as np
import onnxruntime as ort

from onnx_mobilenets import preprocessing as preprocessing_module
from onnx_mobilenets.artifact import RANDOM_WEIGHTS_WARNING, fixed_batches, read_record, runtime_form
from onnx_mobilenets.builtin import DEFAULT_MODEL
from onnx_mobilenets.errors import InvalidModelError, ProviderError
from onnx_mobilenets.parity import softmax
from onnx_mobilenets.preprocessing import Preprocessing
from onnx_mobilenets.sessions import session_options as make_session_options

from . import stream
from .artifacts import resolve_model
from .images import load_image
from .providers import create_session

logger = logging.getLogger(__name__)
DEFAULT_BATCH_SIZE = 32


class Prediction(NamedTuple):
    class_index: int  # 0..999, standard ILSVRC-2012 order
    synset: str  # WordNet id, e.g. "n02504458"
    label: str  # e.g. "African elephant"
    probability: float


class OnnxMobileNet:
    """A MobileNet ImageNet classifier running in onnxruntime.

    `model`: an alias ("v1", "v2"), a catalogue name ("mobilenet_v2_1.4_224"), a Hub repository
    ("hf://owner/repo[@revision]") or the path of an .onnx artifact made by this package; by default
    the built-in model (Google's uint8 MobileNet V2 1.0/224, "v2_quant"), which needs no network.
    `providers`: "auto" (CUDA when it really works, else CPU), "cuda" (an error instead of a silent
    CPU fallback), "cpu", or an explicit onnxruntime provider list. `threads`: onnxruntime intra-op
    threads (default: onnxruntime's choice, all cores). `batch_size`: how many images go through
    the network at once (default 32; a fixed-batch artifact, ``NAME-bN``, takes N at a time, the
    last batch padded). `preprocessing`: None for the one the artifact records (the package's
    default), or "slim" for TF-slim's evaluation preprocessing exactly (to reproduce the published
    accuracies; see `onnx_mobilenets.preprocessing`).
    `jpeg_draft`: decode large JPEG files and bytes at a reduced scale (the decoder's DCT scaling)
    where the crop keeps at least twice the model's resolution: faster, but not the preprocessing's
    answer (measured: a different top-1 on 8-20 % of the photos it shrinks; docs/preprocessing.md).
    Labels, input type and layout are read from the artifact's metadata.

    One instance may be shared by many threads.
    """

    def __init__(
        self,
        model=DEFAULT_MODEL,
        providers="auto",
        threads: Optional[int] = None,
        *,
        device_id: int = 0,
        batch_size: Optional[int] = None,
        preprocessing: Optional[str] = None,
        jpeg_draft: bool = False,
        graph_optimization_level: Optional[ort.GraphOptimizationLevel] = None,
        session_options: Optional[ort.SessionOptions] = None,
    ):
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        if preprocessing is not None:
            preprocessing_module.check_name(preprocessing)
        self.path = resolve_model(model, preprocessing_name=preprocessing or preprocessing_module.DEFAULT)
        self.jpeg_draft = jpeg_draft
        options = make_session_options(threads, graph_optimization_level, base=session_options)
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise InvalidModelError(f"cannot read {self.path}: {e}") from e
        self.record = read_record(data, self.path)  # before the session: a file that is no artifact fails here
        try:
            self._session = create_session(runtime_form(data), providers, device_id, options)
        except (ProviderError, ValueError):  # the caller's provider choice: already a clear message
            raise
        except Exception as e:  # onnxruntime's own exception types differ between versions
            raise InvalidModelError(f"{self.path} is not a valid ONNX model: {e}") from None
        self._check_io()
        contract = self.record.preprocessing
        if contract.image_input and preprocessing not in (None, contract.name):
            raise ValueError(f"{self.path} holds its preprocessing ({contract.name}) inside: it cannot apply "
                             f"{preprocessing}; convert an artifact with that one")
        self._input = dataclasses.replace(contract, name=preprocessing or contract.name)
        fixed = self.record.spec.batch
        if fixed and batch_size not in (None, fixed):
            raise ValueError(f"{self.path} takes batches of exactly {fixed} (converted with --batch {fixed}): "
                             f"batch_size must be {fixed} or None, got {batch_size}")
        self.batch_size = fixed or batch_size or DEFAULT_BATCH_SIZE
        if self.record.random_weights:
            warnings.warn(f"{self.path}: {RANDOM_WEIGHTS_WARNING}: its predictions mean nothing", stacklevel=2)

    @property
    def preprocessing(self) -> str:
        """The preprocessing this instance applies: "default" or "slim"."""
        return self._input.name

    @property
    def metadata(self) -> dict:
        """The artifact's metadata entries, as strings (`record` holds them typed)."""
        return self.record.metadata()

    def _check_io(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InvalidModelError(f"{self.path} must have one input and one output")
        self._input_name, self._output_name = inputs[0].name, outputs[0].name
        contract, R = self.record.preprocessing, self.record.resolution
        if contract.image_input:
            expected = [3]  # any height and width
        else:
            expected = [3, R, R] if contract.layout == "NCHW" else [R, R, 3]
        if len(inputs[0].shape) != 4 or [d for d in inputs[0].shape[1:] if isinstance(d, int)] != expected:
            raise InvalidModelError(
                f"{self.path} input shape {inputs[0].shape} does not match its metadata ({expected})"
            )

    # --- properties -----------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.record.spec.variant

    @property
    def input_size(self) -> int:
        """The side of the square image the network sees (its resolution)."""
        return self.record.resolution

    @property
    def input_contract(self) -> Preprocessing:
        """What the network takes, as the artifact records it: dtype, scaling, layout, preprocessing."""
        return self.record.preprocessing

    @property
    def labels(self) -> tuple:
        """((wnid, label), ...) for class indices 0..999."""
        return self.record.labels

    @property
    def providers(self) -> list:
        """The execution providers the session actually uses, in priority order."""
        return self._session.get_providers()

    def __repr__(self) -> str:
        return f"OnnxMobileNet({self.variant!r}, providers={self.providers}, path='{self.path}')"

    # --- the pipeline ---------------------------------------------------------------------------
    def preprocess(self, images) -> np.ndarray:
        """The batch the model receives for `images` (one image or a list of them): float32, or
        uint8 pixels for a quantized artifact; for an image-in artifact the decoded images
        themselves, which must then be of one size to make one batch."""
        items, _ = _as_list(images)
        return self._batch_of([self._load(item) for item in items])

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, 1000) for a batch as the model takes it: float32 for float artifacts,
        uint8 pixels (preprocessed, not scaled) for quantized ones (`preprocess` makes either), or
        uint8 decoded images (N, H, W, 3) of any one size for image-in artifacts."""
        batch = np.asarray(batch)
        self._check_batch(batch)
        fixed = self.record.spec.batch
        if fixed and len(batch) != fixed:
            raise ValueError(f"run() takes batches of exactly {fixed} for {self.path.name} (a fixed-batch artifact), "
                             f"got {len(batch)}; predict() and predict_proba() take any number of images")
        outputs = [
            self._session.run([self._output_name], {self._input_name: batch[i: i + self.batch_size]})[0]
            for i in range(0, len(batch), self.batch_size)
        ]
        if len(outputs) == 1:
            result = outputs[0]
        else:
            result = np.concatenate(outputs) if outputs else np.zeros((0, 1000), np.float32)
        background = self.record.classes == 1001  # slim's background class: predictions skip it
        if background:
            result = result[:, 1:]
        if self.record.spec.output == "logits" or background:
            result = softmax(result)
        return result

    def predict_proba(self, images) -> np.ndarray:
        """Probabilities (N, 1000) for one image or a list of images."""
        items, _ = _as_list(images)
        chunks = [self._probabilities_of([self._load(item) for item in items[i: i + self.batch_size]])
                  for i in range(0, len(items), self.batch_size)]
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks) if chunks else np.zeros((0, 1000), np.float32)

    def predict(self, images, top: int = 5):
        """The `top` most probable classes: a list of `Prediction` for one image, or one such list
        per image for a list of images."""
        stream.check_top(top)
        items, single = _as_list(images)
        probabilities = self.predict_proba(items)
        results = [self._top_predictions(p, top) for p in probabilities]
        return results[0] if single else results

    def predict_stream(self, sources, top: int = 5, *, workers: Optional[int] = None,
                       batch_size: Optional[int] = None, prefetch: Optional[int] = None):
        """Classify any number of images: yields one `StreamResult(source, predictions, error)` per
        source, in input order. `sources` may be any iterable (a generator of paths, say), consumed
        as the stream goes. `workers` threads (default: the number of cores) decode and preprocess
        while onnxruntime classifies batches of `batch_size` (default: this instance's); at most
        `prefetch` images (default 2 x batch_size + workers) are in flight, so memory stays flat. An
        image that cannot be read gives a result whose `error` says why; the stream goes on."""
        return stream.predict_stream(self.steps, sources, top, workers=workers,
                                     batch_size=self.batch_size if batch_size is None else batch_size,
                                     prefetch=prefetch)

    @property
    def steps(self) -> stream.Steps:
        """The pipeline's three steps, for code that schedules them itself (`predict_stream`, the
        Ray Serve deployment of `onnx_mobilenets.serving`): `load` one source into the array the
        network takes (thread-safe: decode in many threads), `probabilities` of a list of such
        arrays (any number, batched as this instance batches), `top_predictions` of one row."""
        return stream.Steps(self._load, self._probabilities_of, self._top_predictions)

    # --- its steps --------------------------------------------------------------------------------
    def _load(self, source) -> np.ndarray:
        """One image source as the array the model takes: the (R, R, 3) network input (decoded,
        preprocessed, scaled or rounded as its metadata says), or for an image-in artifact the
        decoded (H, W, 3) RGB image. Safe to call from many threads."""
        R = self.record.resolution
        image = load_image(source, preprocessing_module.draft_size(R) if self.jpeg_draft else None)
        if self.record.preprocessing.image_input:
            return np.asarray(image)
        return preprocessing_module.network_input(image, R, self._input)

    def _batch_of(self, arrays) -> np.ndarray:
        """Arrays from `_load` as one batch in the model's layout."""
        contract, R = self.record.preprocessing, self.record.resolution
        if contract.image_input and len({a.shape for a in arrays}) > 1:
            raise ValueError("an image-in artifact takes a batch of images of one size; these differ "
                             f"({sorted({a.shape for a in arrays})}): use predict() or predict_proba()")
        if len(arrays) == 1:
            batch = arrays[0][np.newaxis]  # a view: no copy for the common single image
        elif arrays:
            batch = np.stack(arrays)
        else:
            batch = np.zeros((0, 1, 1, 3) if contract.image_input else (0, R, R, 3), contract.dtype)
        if contract.layout == "NCHW" and not contract.image_input:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return batch

    def _probabilities_of(self, arrays) -> np.ndarray:
        """Probabilities (N, 1000) for arrays from `_load`; an image-in artifact's images of
        different sizes go through in one batch per size."""
        if not self.record.preprocessing.image_input:
            return self._run_any_count(self._batch_of(arrays))
        result = np.zeros((len(arrays), 1000), np.float32)
        by_shape = {}
        for index, array in enumerate(arrays):
            by_shape.setdefault(array.shape, []).append(index)
        for indices in by_shape.values():
            result[indices] = self._run_any_count(np.stack([arrays[i] for i in indices]))
        return result

    def _run_any_count(self, batch: np.ndarray) -> np.ndarray:
        """`run` on any number of inputs; a fixed-batch artifact gets them in pieces of its size."""
        fixed = self.record.spec.batch
        if not fixed or len(batch) == fixed:
            return self.run(batch)
        if not len(batch):
            return np.zeros((0, 1000), np.float32)
        return np.concatenate([self.run(piece) for piece in fixed_batches(batch, fixed)])[:len(batch)]

    def _check_batch(self, batch: np.ndarray) -> None:
        contract, R = self.record.preprocessing, self.record.resolution
        if contract.image_input:
            if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3 or 0 in batch.shape[1:3]:
                raise ValueError(f"run() takes decoded images, uint8 (N, H, W, 3), for this image-in artifact; "
                                 f"got {batch.dtype} {batch.shape}")
            return
        shape = (3, R, R) if contract.layout == "NCHW" else (R, R, 3)
        if batch.dtype != contract.dtype:
            what = ("uint8 pixels (0..255, preprocessed, not scaled: the model quantizes them itself)"
                    if contract.dtype == "uint8" else "a float32 batch")
            raise ValueError(f"run() takes {what} for {self.variant}, got {batch.dtype}")
        if batch.ndim != 4 or batch.shape[1:] != shape:
            raise ValueError(f"run() takes a batch of shape (N, {', '.join(map(str, shape))}), got {batch.shape}")

    def _top_predictions(self, probabilities: np.ndarray, top: int = 5) -> list:
        """The `top` most probable classes of one (1000,) probability vector, as `Prediction`s."""
        best = np.argsort(-probabilities, kind="stable")[:top]
        labels = self.record.labels
        return [Prediction(int(i), labels[i][0], labels[i][1], float(probabilities[i])) for i in best]


def _as_list(images):
    """(list of image sources, whether a single image was given)."""
    if isinstance(images, (list, tuple)):
        return list(images), False
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), False
    return [images], True
