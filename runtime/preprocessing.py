"""Image preprocessing for slim ImageNet MobileNets, driven by a `Preprocessing` contract.

Only Pillow and NumPy: this runs wherever the runtime runs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from onnx_mobilenets.catalogue import Preprocessing

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def crop_box(width: int, height: int, fraction: float) -> tuple:
    """The centred square crop of `fraction` of the shorter side, edges rounded to whole pixels."""
    side = min(width, height) * fraction
    box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    return tuple(int(round(v)) for v in box)


def image_to_array(image: Image.Image, resolution: int, contract: Preprocessing) -> np.ndarray:
    """Crop, resize and scale an RGB PIL image into a float32 (resolution, resolution, 3) array."""
    if contract.crop != "center_square":
        raise ValueError(f"unsupported crop {contract.crop!r} in the preprocessing contract")
    if contract.resize not in _RESAMPLE:
        raise ValueError(f"unsupported resize method {contract.resize!r} in the preprocessing contract")
    box = crop_box(image.width, image.height, contract.crop_fraction)
    resized = image.resize((resolution, resolution), _RESAMPLE[contract.resize], box=box)
    array = np.asarray(resized, dtype=np.float32)
    return array * np.float32(contract.scale) + np.float32(contract.offset)
