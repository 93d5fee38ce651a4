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
    if contract.crop_edges not in ("round", "floor"):
        raise ValueError(f"unsupported crop edges {contract.crop_edges!r} in the preprocessing contract")
    if contract.dtype not in ("float32", "uint8"):
        raise ValueError(f"unsupported input dtype {contract.dtype!r} in the preprocessing contract")


def draft_size(resolution: int, contract: Preprocessing):
    """The smallest image side a JPEG may be decoded at without changing the result beyond tolerance;
    None for quantized models, whose logits move in whole steps: a drafted decode moved a
    probability of the V1 0.25/128 quantized fixture by 0.06."""
    if contract.dtype == "uint8":
        return None
    return math.ceil(DRAFT_OVERSAMPLING * resolution / contract.crop_fraction)


def crop_box(width: int, height: int, fraction: float, edges: str = "round") -> tuple:
    """The centred square crop of `fraction` of the shorter side, edges rounded ("round") or
    truncated ("floor") to whole pixels."""
    side = min(width, height) * fraction
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    to_pixel = math.floor if edges == "floor" else round
    left, top, right, bottom = (int(to_pixel(v)) for v in box)
    # A very thin image could round to an empty crop: keep at least one pixel each way.
    return left, top, max(right, left + 1), max(bottom, top + 1)


def image_to_array(image: Image.Image, resolution: int, contract: Preprocessing) -> np.ndarray:
    """Crop, resize and scale an RGB PIL image into a (resolution, resolution, 3) array: float32, or
    for quantized models (dtype "uint8") the pixels as they are."""
    check_contract(contract)
    # Crop first, then resize: resizing with a `box` would let the filter read pixels outside it.
    cropped = image.crop(crop_box(image.width, image.height, contract.crop_fraction, contract.crop_edges))
    resized = cropped.resize((resolution, resolution), _RESAMPLE[contract.resize])
    if contract.dtype == "uint8":
        return np.asarray(resized, dtype=np.uint8)
    array = np.asarray(resized, dtype=np.float32)  # a new array: scaled in place, no temporaries
    array *= np.float32(contract.scale)
    array += np.float32(contract.offset)
    return array
