"""`OnnxMobileNet`: a MobileNet artifact in onnxruntime, from image to labelled predictions."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import NamedTuple, Optional

import numpy as np
import onnxruntime as ort

from onnx_mobilenets import contract
from onnx_mobilenets import preprocessing as preprocessing_module
from onnx_mobilenets.contract import Preprocessing
from onnx_mobilenets.errors import InvalidModelError, ProviderError
from onnx_mobilenets.model_bytes import runtime_form
from onnx_mobilenets.parity import softmax
from onnx_mobilenets.sessions import quiet_options

from .artifacts import resolve_model
from .images import load_image
from .providers import create_session

logger = logging.getLogger(__name__)


class Prediction(NamedTuple):
    class_index: int  # 0..999, standard ILSVRC-2012 order
    synset: str  # WordNet id, e.g. "n02504458"
    label: str  # e.g. "African elephant"
    probability: float


class OnnxMobileNet:
    """A MobileNet ImageNet classifier running in onnxruntime.

    `model`: an alias ("v1", "v2"), a catalogue name ("mobilenet_v2_1.4_224") or the path of an
    .onnx artifact made by this package. `providers`: "auto" (CUDA when it really works, else CPU),
    "cuda" (an error instead of a silent CPU fallback), "cpu", or an explicit onnxruntime provider
    list. `threads`: onnxruntime intra-op threads (default: onnxruntime's choice, all cores).
    `batch_size`: how many images go through the network at once. `preprocessing`: None for the one
    the artifact records (the package's default), or "slim" for TF-slim's evaluation preprocessing
    exactly (to reproduce the published accuracies; see `onnx_mobilenets.preprocessing`).
    `jpeg_draft`: decode large JPEG files and bytes at a reduced scale (the decoder's DCT scaling)
    where the crop keeps at least twice the model's resolution: faster, but not the preprocessing's
    answer (measured: a different top-1 on 8-20 % of the photos it shrinks; docs/preprocessing.md).
    Labels, input type and layout are read from the artifact's metadata.

    One instance may be shared by many threads.
    """

    def __init__(
        self,
        model="v2",
        providers="auto",
        threads: Optional[int] = None,
        *,
        device_id: int = 0,
        batch_size: int = 32,
        preprocessing: Optional[str] = None,
        jpeg_draft: bool = False,
        graph_optimization_level: Optional[ort.GraphOptimizationLevel] = None,
        session_options: Optional[ort.SessionOptions] = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        if preprocessing is not None:
            preprocessing_module.check_name(preprocessing)
        self.path = resolve_model(model)
        self.batch_size = batch_size
        self.jpeg_draft = jpeg_draft

        options = session_options or quiet_options()
        if threads is not None:
            options.intra_op_num_threads = threads
        if graph_optimization_level is not None:
            options.graph_optimization_level = graph_optimization_level
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise InvalidModelError(f"cannot read {self.path}: {e}") from e
        try:
            data = runtime_form(data)  # quantized artifacts: int8 weights where that is exact and faster
        except InvalidModelError as e:
            raise InvalidModelError(f"{self.path} is not a valid ONNX model: {e}") from None
        try:
            self._session = create_session(data, providers, device_id, options)
        except (ProviderError, ValueError):  # the caller's provider choice: already a clear message
            raise
        except Exception as e:  # onnxruntime's own exception types differ between versions
            raise InvalidModelError(f"{self.path} is not a valid ONNX model: {e}") from None
        self._read_metadata()
        if self._contract.image_input and preprocessing not in (None, self._contract.name):
            raise ValueError(f"{self.path} holds its preprocessing ({self._contract.name}) inside: it cannot apply "
                             f"{preprocessing}; convert an artifact with that one")
        self._input = dataclasses.replace(self._contract, name=preprocessing or self._contract.name)

    @property
    def preprocessing(self) -> str:
        """The preprocessing this instance applies: "default" or "slim"."""
        return self._input.name

    def _read_metadata(self) -> None:
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        contract.check_metadata(meta, self.path)
        try:
            self.metadata = meta
            self._contract = Preprocessing.from_json(meta["preprocessing"])
            self._resolution = int(meta["resolution"])
            self._output_is_logits = meta["output"] == "logits"
            self._drop_background = int(meta["classes"]) == 1001  # slim's background class: predictions skip it
            self._labels = contract.labels_of(meta)
        except (ValueError, TypeError) as e:
            raise InvalidModelError(f"{self.path} has unreadable metadata: {e}") from None
        if contract.is_random(meta):
            warnings.warn(f"{self.path}: {contract.RANDOM_WEIGHTS_WARNING}: its predictions mean nothing", stacklevel=3)

        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InvalidModelError(f"{self.path} must have one input and one output")
        self._input_name, self._output_name = inputs[0].name, outputs[0].name
        R = self._resolution
        if self._contract.image_input:
            expected = [3]  # any height and width
        else:
            expected = [3, R, R] if self._contract.layout == "NCHW" else [R, R, 3]
        if len(inputs[0].shape) != 4 or [d for d in inputs[0].shape[1:] if isinstance(d, int)] != expected:
            raise InvalidModelError(
                f"{self.path} input shape {inputs[0].shape} does not match its metadata ({expected})"
            )

    # --- properties -----------------------------------------------------------------------------
    @property
    def variant(self) -> str:
        return self.metadata["variant"]

    @property
    def input_size(self) -> int:
        """The side of the square image the network sees (its resolution)."""
        return self._resolution

    @property
    def input_contract(self) -> Preprocessing:
        """What the network takes, as the artifact records it: dtype, scaling, layout, preprocessing."""
        return self._contract

    @property
    def labels(self) -> tuple:
        """((wnid, label), ...) for class indices 0..999."""
        return self._labels

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
        return self.batch_from_arrays([self.load_array(item) for item in items])

    def load_array(self, source) -> np.ndarray:
        """One image source as the array the model takes: the (R, R, 3) network input (decoded,
        preprocessed, scaled or rounded as its metadata says), or for an image-in artifact the
        decoded (H, W, 3) RGB image. Safe to call from many threads."""
        draft = preprocessing_module.draft_size(self._resolution) if self.jpeg_draft else None
        image = load_image(source, draft)
        if self._contract.image_input:
            return np.asarray(image)
        return preprocessing_module.network_input(image, self._resolution, self._input)

    def batch_from_arrays(self, arrays) -> np.ndarray:
        """Arrays from `load_array` as one batch in the model's layout."""
        if self._contract.image_input and len({a.shape for a in arrays}) > 1:
            raise ValueError("an image-in artifact takes a batch of images of one size; these differ "
                             f"({sorted({a.shape for a in arrays})}): use predict() or probabilities_of()")
        if len(arrays) == 1:
            batch = arrays[0][np.newaxis]  # a view: no copy for the common single image
        elif arrays:
            batch = np.stack(arrays)
        else:
            empty = (0, 1, 1, 3) if self._contract.image_input else (0, self._resolution, self._resolution, 3)
            batch = np.zeros(empty, self._contract.dtype)
        if self._contract.layout == "NCHW" and not self._contract.image_input:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        return batch

    def probabilities_of(self, arrays) -> np.ndarray:
        """Probabilities (N, 1000) for arrays from `load_array`; an image-in artifact's images of
        different sizes go through in one batch per size."""
        if not self._contract.image_input:
            return self.run(self.batch_from_arrays(arrays))
        result = np.zeros((len(arrays), 1000), np.float32)
        by_shape = {}
        for index, array in enumerate(arrays):
            by_shape.setdefault(array.shape, []).append(index)
        for indices in by_shape.values():
            result[indices] = self.run(np.stack([arrays[i] for i in indices]))
        return result

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, 1000) for a batch as the model takes it: float32 for float artifacts,
        uint8 pixels (preprocessed, not scaled) for quantized ones (`preprocess` makes either), or
        uint8 decoded images (N, H, W, 3) of any one size for image-in artifacts."""
        batch = np.asarray(batch)
        self._check_batch(batch)
        outputs = [
            self._session.run([self._output_name], {self._input_name: batch[i: i + self.batch_size]})[0]
            for i in range(0, len(batch), self.batch_size)
        ]
        if len(outputs) == 1:
            result = outputs[0]
        else:
            result = np.concatenate(outputs) if outputs else np.zeros((0, 1000), np.float32)
        if self._drop_background:
            result = result[:, 1:]
        if self._output_is_logits or self._drop_background:
            result = softmax(result)
        return result

    def _check_batch(self, batch: np.ndarray) -> None:
        R = self._resolution
        if self._contract.image_input:
            if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[3] != 3 or 0 in batch.shape[1:3]:
                raise ValueError(f"run() takes decoded images, uint8 (N, H, W, 3), for this image-in artifact; "
                                 f"got {batch.dtype} {batch.shape}")
            return
        shape = (3, R, R) if self._contract.layout == "NCHW" else (R, R, 3)
        if batch.dtype != self._contract.dtype:
            what = ("uint8 pixels (0..255, preprocessed, not scaled: the model quantizes them itself)"
                    if self._contract.dtype == "uint8" else "a float32 batch")
            raise ValueError(f"run() takes {what} for {self.variant}, got {batch.dtype}")
        if batch.ndim != 4 or batch.shape[1:] != shape:
            raise ValueError(f"run() takes a batch of shape (N, {', '.join(map(str, shape))}), got {batch.shape}")

    def predict_proba(self, images) -> np.ndarray:
        """Probabilities (N, 1000) for one image or a list of images."""
        items, _ = _as_list(images)
        chunks = [self.probabilities_of([self.load_array(item) for item in items[i: i + self.batch_size]])
                  for i in range(0, len(items), self.batch_size)]
        if len(chunks) == 1:
            return chunks[0]
        return np.concatenate(chunks) if chunks else np.zeros((0, 1000), np.float32)

    def predict(self, images, top: int = 5):
        """The `top` most probable classes: a list of `Prediction` for one image, or one such list
        per image for a list of images."""
        if not isinstance(top, int) or not 1 <= top <= 1000:
            raise ValueError(f"top must be an integer from 1 to 1000, got {top!r}")
        items, single = _as_list(images)
        probabilities = self.predict_proba(items)
        results = [self.top_predictions(p, top) for p in probabilities]
        return results[0] if single else results

    def predict_stream(self, sources, top: int = 5, *, workers: Optional[int] = None,
                       batch_size: Optional[int] = None, prefetch: Optional[int] = None):
        """Classify any number of images: yields one `StreamResult(source, predictions, error)` per
        source, in input order. `sources` may be any iterable (a generator of paths, say), consumed
        as the stream goes. `workers` threads (default: the number of cores) decode and preprocess
        while onnxruntime classifies batches of `batch_size` (default: this instance's); at most
        `prefetch` images (default 2 x batch_size + workers) are in flight, so memory stays flat. An
        image that cannot be read gives a result whose `error` says why; the stream goes on."""
        from .stream import predict_stream

        return predict_stream(self, sources, top, workers=workers, batch_size=batch_size, prefetch=prefetch)

    def top_predictions(self, probabilities: np.ndarray, top: int = 5) -> list:
        """The `top` most probable classes of one (1000,) probability vector, as `Prediction`s."""
        best = np.argsort(-probabilities, kind="stable")[:top]
        return [Prediction(int(i), self._labels[i][0], self._labels[i][1], float(probabilities[i])) for i in best]


def _as_list(images):
    """(list of image sources, whether a single image was given)."""
    if isinstance(images, (list, tuple)):
        return list(images), False
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images), False
    return [images], True
