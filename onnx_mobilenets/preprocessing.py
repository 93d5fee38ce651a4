"""How a decoded image becomes the network's input: each preprocessing defined once, computed alike
everywhere.

Both preprocessings are defined as ONNX operations (``onnx_mobilenets.conversion.preprocessing_graph``
writes them into image-in artifacts, so C++, C#, Java, OpenVINO or a web page compute them without
our Python); this module is their NumPy twin, which the runtime uses. Tests hold the twin to the
ONNX graph within 1e-3 on the 0-255 scale, in onnxruntime and OpenVINO, on many image shapes: to
get there it computes the resize coordinates in float32 exactly as ONNX Resize does.

``default`` (version 1), for every model, float and uint8::

    m = min(W, H); start = m // 16        # = int((m - 0.875 m) / 2): tf.image.central_crop's truncation
    side = m - 2 start; left, top = (W - side) // 2, (H - side) // 2
    crop = pixels[top:top+side, left:left+side]
    f = the largest power of two in 1..64 with R f <= side
    big = bilinear resize of crop to (R f, R f)   # ONNX Resize: linear, half_pixel, no antialias
    x = the mean of each f x f block of big        # (R, R, 3) float32 in 0..255

The square crop keeps the photo's aspect ratio; bilinear resizing to a multiple of R and averaging
blocks gives a well antialiased result from plain, portable ops (ONNX Resize with ``antialias=1``
is computed differently by different engines).

``slim`` (version 1) is TF-slim's evaluation exactly (``inception_preprocessing.preprocess_for_eval``):
``tf.image.central_crop(image, 0.875)`` crops each axis on its own (start = H // 16, which is
``int((H - 0.875 H) / 2)`` in float64; likewise W), then ``tf.compat.v1.image.resize_bilinear`` to
(R, R) with TF1's defaults (``align_corners=False``, ``half_pixel_centers=False``: output pixel i
samples input coordinate ``i * in / R``, ONNX Resize's ``asymmetric`` mode), no antialias. The
published accuracies were measured with it.

Then float models get ``x / 127.5 - 1`` (TF-slim's ``(x / 255 - 0.5) * 2``) and uint8 models ``x``
rounded half to even and clipped to 0..255 (ONNX ``Round``, NumPy ``rint``).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT = "default"
SLIM = "slim"
NAMES = (DEFAULT, SLIM)
VERSION = 1
MAX_BLOCK = 64  # the largest f of the default preprocessing
LAYOUTS = ("NHWC", "NCHW")
DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class Preprocessing:
    """An input contract: which preprocessing makes a network's input from a decoded image, and how
    the resulting 0..255 pixels are fed to it. Every artifact records its own (metadata key
    ``preprocessing``, `onnx_mobilenets.artifact`)."""

    name: str = DEFAULT  # or SLIM, TF-slim's evaluation exactly
    version: int = VERSION
    dtype: str = "float32"  # "uint8": pixels rounded and fed as they are; the model quantizes them itself
    scale: float = 1.0 / 127.5  # float32 input: x * scale + offset maps [0, 255] to [-1, 1]
    offset: float = -1.0
    channel_order: str = "RGB"
    layout: str = "NHWC"  # of the network's input
    # True: the preprocessing is inside the model, whose input is decoded images (uint8 [N, H, W, 3],
    # RGB, any size) rather than the network's input.
    image_input: bool = False

    def problems(self) -> list:
        """What this package cannot apply of the contract (empty when it can)."""
        found = []
        if self.name not in NAMES or self.version != VERSION:
            found.append(f"preprocessing {self.name!r} version {self.version}")
        if self.dtype not in DTYPES:
            found.append(f"input dtype {self.dtype!r}")
        if self.channel_order != "RGB" or self.layout not in LAYOUTS:
            found.append(f"channel order/layout {self.channel_order}/{self.layout}")
        return found


DEFAULT_PREPROCESSING = Preprocessing()
# The quantized models take the same pixels, rounded to uint8: their input quantization (scale 1/128,
# zero point 128) does the scaling inside the model.
QUANTIZED_PREPROCESSING = Preprocessing(dtype="uint8", scale=1.0, offset=0.0)

# With `OnnxMobileNet(jpeg_draft=True)` JPEG files are decoded at a reduced scale (the decoder's 1/2, 1/4
# or 1/8 DCT scaling) as long as the crop keeps at least this many times the model's resolution. It is
# off by default: the decoder's scaling is not this preprocessing, and measured on 1,000 ImageNet photos
# (tools/measure_jpeg_draft.py, docs/preprocessing.md) it changed the top-1 of 8-20 % of the photos it
# shrank at this setting.
DRAFT_MIN_CROP = 2.0

_F32 = np.float32


def check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"preprocessing must be one of {', '.join(NAMES)}, got {name!r}")
    return name


def crop_box(width: int, height: int, name: str = DEFAULT) -> tuple:
    """(left, top, right, bottom) of the crop `name` takes from a `width` x `height` image."""
    check_name(name)
    if name == DEFAULT:
        m = min(width, height)
        side = m - 2 * (m // 16)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    left, top = width // 16, height // 16
    return left, top, width - left, height - top


def block_factor(side: int, resolution: int) -> int:
    """f of the default preprocessing: the largest power of two up to 64 with resolution * f <= side."""
    f = 1
    while f < MAX_BLOCK and resolution * f * 2 <= side:
        f *= 2
    return f


def draft_size(resolution: int, min_crop: float = DRAFT_MIN_CROP) -> int:
    """The smallest side a JPEG may be decoded at: the crop (7/8 of it, or a little more) then keeps
    `min_crop` times the resolution."""
    return math.ceil(min_crop * resolution * 16 / 14)


def pixels(image, resolution: int, name: str = DEFAULT) -> np.ndarray:
    """The (resolution, resolution, 3) float32 pixels (0..255) that preprocessing `name` makes of an
    RGB image (a PIL image or a uint8 (H, W, 3) array)."""
    crop, plan = _crop_and_plan(image, resolution, name)
    return _resample(crop, plan)


def network_input(image, resolution: int, contract) -> np.ndarray:
    """The (resolution, resolution, 3) array a network with input `contract` (a `Preprocessing`)
    takes for an RGB image: ``x * scale + offset`` in float32, or for "uint8" networks the pixels
    rounded half to even, exactly as ONNX Resize, ReduceMean and Round compute them in onnxruntime
    (a value near .5 is recomputed in onnxruntime's own float32 arithmetic, so the rounding goes the
    same way)."""
    crop, plan = _crop_and_plan(image, resolution, contract.name)
    x = _resample(crop, plan)
    if contract.dtype == "uint8":
        return _round_like_onnxruntime(x, crop, plan)
    x *= _F32(contract.scale)
    x += _F32(contract.offset)
    return x


def _crop_and_plan(image, resolution: int, name: str) -> tuple:
    """The crop of `image` as a uint8 array, and the samples each axis takes from it."""
    check_name(name)
    if isinstance(image, Image.Image):
        box = crop_box(image.width, image.height, name)
        crop = np.asarray(image.crop(box))
    else:
        left, top, right, bottom = crop_box(image.shape[1], image.shape[0], name)
        crop = np.ascontiguousarray(image[top:bottom, left:right])
    height, width = crop.shape[:2]
    if name == DEFAULT:
        f = block_factor(height, resolution)
        return crop, (f, (height, resolution * f, "half_pixel"), (width, resolution * f, "half_pixel"))
    return crop, (1, (height, resolution, "asymmetric"), (width, resolution, "asymmetric"))


@functools.lru_cache(maxsize=256)
def _samples(in_size: int, out_size: int, mode: str) -> tuple:
    """ONNX Resize's linear samples along one axis, as onnxruntime computes them: for each output
    position the two input positions it reads and their float32 weights.

    The source coordinate is computed in float32 (``(x + 0.5) / scale - 0.5`` with ``scale = out /
    in``, or ``x / scale`` for "asymmetric") and clamped to the image; its float32 rounding moves a
    sample by up to 4e-3 on the 0-255 scale, so it is reproduced, not computed more exactly."""
    scale = _F32(out_size) / _F32(in_size)
    x = np.arange(out_size, dtype=_F32)
    source = (x + _F32(0.5)) / scale - _F32(0.5) if mode == "half_pixel" else x / scale
    source = np.clip(source, _F32(0), _F32(in_size - 1))
    first = np.minimum(source.astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    to_second = np.abs(source - first.astype(_F32))  # the weight of `second`
    to_first = np.abs(source - second.astype(_F32))  # the weight of `first`
    at_edge = first == second
    to_second[at_edge] = to_first[at_edge] = _F32(0.5)
    return first, second, to_first, to_second


@functools.lru_cache(maxsize=256)
def _taps(samples: tuple, f: int) -> tuple:
    """The mean of each `f` consecutive `_samples(*samples)` as taps: the input positions each output
    reads and their weights, as two (taps, outputs) arrays."""
    in_size = samples[0]
    first, second, to_first, to_second = _samples(*samples)
    outputs = len(first) // f
    low = first.reshape(outputs, f)[:, 0]
    count = int((second.reshape(outputs, f)[:, -1] - low).max()) + 1
    low = np.minimum(low, in_size - count)
    weights = np.zeros((outputs, count))
    output = np.arange(len(first)) // f
    np.add.at(weights, (output, first - low[output]), to_first.astype(np.float64) / f)
    np.add.at(weights, (output, second - low[output]), to_second.astype(np.float64) / f)
    indices = low[:, None] + np.arange(count)
    return np.ascontiguousarray(indices.T), np.ascontiguousarray(weights.T.astype(_F32))


def _resample(crop: np.ndarray, plan: tuple) -> np.ndarray:
    """`crop` resampled along rows, then columns, with the taps of `plan`. The arrays are handled as
    (rows, columns x 3) matrices, so every gather and every weight broadcast runs along whole rows
    or single elements (NumPy is several times slower on 3-value chunks)."""
    f, row_samples, column_samples = plan
    scratch = _scratch()
    height, width = crop.shape[:2]
    row_indices, row_weights = _taps(row_samples, f)
    column_indices, column_weights = _taps(column_samples, f)
    by_rows = _weighted_taps(crop.reshape(height, width * 3), row_indices, row_weights[:, :, None], 0, scratch, "rows")
    column_indices = ((column_indices * 3)[:, :, None] + np.arange(3)).reshape(len(column_indices), -1)
    column_weights = np.repeat(column_weights, 3, axis=1)[:, None, :]
    result = _weighted_taps(by_rows, column_indices, column_weights, 1, scratch, "columns")
    return result.reshape(row_indices.shape[1], -1, 3).copy()


def _round_like_onnxruntime(x: np.ndarray, crop: np.ndarray, plan: tuple) -> np.ndarray:
    """`x` rounded half to even to uint8, as onnxruntime rounds the ONNX definition's own float32
    values. `x` is within 2e-4 of them, which decides every pixel but those near .5: those are
    recomputed as onnxruntime computes them (checked bit for bit by the tests): each linear sample as
    ``(wx_a wy_a) X[ya, xa] + (wx_b wy_a) X[ya, xb] + (wx_a wy_b) X[yb, xa] + (wx_b wy_b) X[yb, xb]``,
    left to right in float32, and the block mean as a left-to-right float32 sum in memory order
    divided by f * f."""
    near_half = np.abs(x - np.floor(x) - _F32(0.5)) < _F32(1e-3)
    if near_half.any():
        rows, columns, channels = np.nonzero(near_half)
        x[rows, columns, channels] = _exact_values(crop, plan, rows, columns, channels)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _exact_values(crop, plan, rows, columns, channels) -> np.ndarray:
    f, row_samples, column_samples = plan
    y_first, y_second, y_to_first, y_to_second = _samples(*row_samples)
    x_first, x_second, x_to_first, x_to_second = _samples(*column_samples)
    block = np.arange(f)
    y = (rows[:, None, None] * f + block[None, :, None])  # (pixels, f, 1): i, the outer index
    x = (columns[:, None, None] * f + block[None, None, :])  # (pixels, 1, f): j, the inner index
    c = channels[:, None, None]

    def at(y_index, x_index):
        return crop[y_index[y], x_index[x], c].astype(_F32)

    samples = ((x_to_first[x] * y_to_first[y]) * at(y_first, x_first)
               + (x_to_second[x] * y_to_first[y]) * at(y_first, x_second)
               + (x_to_first[x] * y_to_second[y]) * at(y_second, x_first)
               + (x_to_second[x] * y_to_second[y]) * at(y_second, x_second))
    sums = np.cumsum(samples.reshape(len(rows), f * f), axis=1, dtype=_F32)[:, -1]
    return sums / _F32(f * f)


def _weighted_taps(array, indices, weights, axis: int, scratch, role: str) -> np.ndarray:
    """sum over k of weights[k] * array taken at indices[k] along `axis`."""
    shape = list(array.shape)
    shape[axis] = indices.shape[1]
    out = scratch.get(f"{role}.out", tuple(shape), _F32)
    term = scratch.get(f"{role}.term", tuple(shape), _F32)
    gathered = scratch.get(f"{role}.gathered", tuple(shape), array.dtype)
    for k in range(len(indices)):
        np.take(array, indices[k], axis=axis, out=gathered)
        np.multiply(gathered, weights[k], out=out if k == 0 else term)
        if k:
            out += term
    return out


class _Scratch:
    """Reusable work arrays, one set per thread. A fresh NumPy array of this size costs more in page
    faults (memory the OS must map and zero) than the arithmetic done in it."""

    def __init__(self):
        self._buffers = {}

    def get(self, key: str, shape: tuple, dtype) -> np.ndarray:
        size = math.prod(shape)
        buffer = self._buffers.get((key, np.dtype(dtype)))
        if buffer is None or buffer.size < size:
            buffer = np.empty(size, dtype)
            self._buffers[(key, np.dtype(dtype))] = buffer
        return buffer[:size].reshape(shape)


_local = threading.local()


def _scratch() -> _Scratch:
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        scratch = _local.scratch = _Scratch()
    return scratch
