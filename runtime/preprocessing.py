"""Image preprocessing for slim ImageNet MobileNets, driven by a `Preprocessing` contract that the
runtime reads from the artifact's metadata. Only Pillow and NumPy: this runs wherever the runtime runs.
"""

from __future__ import annotations

import json
import math

import numpy as np
from PIL import Image

from onnx_mobilenets.catalogue import Preprocessing

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

# JPEG draft decoding keeps the crop at least this many times the model's resolution, so the
# antialiased resize still sees enough pixels: measured on the fixtures, it moves probabilities by
# less than 0.01 (the tolerance of the expected results is 0.02).
DRAFT_OVERSAMPLING = 2.0


def contract_from_metadata(text: str) -> Preprocessing:
    """The `preprocessing` metadata entry of an artifact as a `Preprocessing`."""
    fields = json.loads(text)
    return Preprocessing(**fields)


def check_contract(contract: Preprocessing) -> None:
    if contract.crop != "center_square":
        raise ValueError(f"unsupported crop {contract.crop!r} in the preprocessing contract")
    if contract.resize not in _RESAMPLE:
        raise ValueError(f"unsupported resize method {contract.resize!r} in the preprocessing contract")
    if contract.channel_order != "RGB" or contract.layout not in ("NHWC", "NCHW"):
        raise ValueError(f"unsupported channel order/layout {contract.channel_order}/{contract.layout}")
    if not 0 < contract.crop_fraction <= 1:
        raise ValueError(f"crop fraction must be in (0, 1], got {contract.crop_fraction}")


def draft_size(resolution: int, contract: Preprocessing) -> int:
    """The smallest image side a JPEG may be decoded at without changing the result beyond tolerance."""
    return math.ceil(DRAFT_OVERSAMPLING * resolution / contract.crop_fraction)


def crop_box(width: int, height: int, fraction: float) -> tuple:
    """The centred square crop of `fraction` of the shorter side, edges rounded to whole pixels."""
    side = min(width, height) * fraction
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    left, top, right, bottom = (int(round(v)) for v in box)
    # A very thin image could round to an empty crop: keep at least one pixel each way.
    return left, top, max(right, left + 1), max(bottom, top + 1)


def image_to_array(image: Image.Image, resolution: int, contract: Preprocessing) -> np.ndarray:
    """Crop, resize and scale an RGB PIL image into a float32 (resolution, resolution, 3) array."""
    check_contract(contract)
    # Crop first, then resize: resizing with a `box` would let the filter read pixels outside it.
    cropped = image.crop(crop_box(image.width, image.height, contract.crop_fraction))
    resized = cropped.resize((resolution, resolution), _RESAMPLE[contract.resize])
    array = np.asarray(resized, dtype=np.float32)  # a new array: scaled in place, no temporaries
    array *= np.float32(contract.scale)
    array += np.float32(contract.offset)
    return array
