"""Turning whatever the user holds into an upright RGB PIL image, or a clear error.

Accepted: a path (str or os.PathLike), bytes, a PIL image, or a NumPy uint8 array (HxW grayscale,
HxWx3 RGB, HxWx4 RGBA). EXIF orientation is applied; every Pillow mode becomes RGB (transparent
pixels over white, 16-bit images scaled to 8 bits rather than clipped).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from onnx_mobilenets.errors import InvalidImageError

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(source, draft_size: Optional[int] = None) -> Image.Image:
    """An upright RGB image from `source`.

    `draft_size`: for JPEG files and bytes, let the decoder scale the image down by a power of two
    as long as both sides stay at least this large (decoding at 1/2..1/8 scale is several times
    faster). PIL images given by the caller are never modified.
    """
    if isinstance(source, Image.Image):
        return to_rgb(_upright(source, in_place=False))
    if isinstance(source, np.ndarray):
        return to_rgb(image_from_array(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InvalidImageError("the image bytes are empty")
        return _decoded(io.BytesIO(data), "the image bytes", draft_size)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"image file {path} does not exist")
        if not path.is_file():
            raise InvalidImageError(f"{path} is not a file")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"image file {path} is empty")
        with open(path, "rb") as f:  # PermissionError and the like are the caller's to see as they are
            return _decoded(f, str(path), draft_size)
    raise InvalidImageError(
        f"cannot read an image from a {type(source).__name__}; pass a path, bytes, a PIL image or a uint8 array"
    )


# What Pillow raises on corrupt files, besides its own UnidentifiedImageError: bare OSError ("could
# not create decoder object", "Truncated File Read", "Unsupported BMP pixel depth"), SyntaxError,
# ValueError, struct.error and a few more from its format parsers.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, ZeroDivisionError,
                  struct.error)


def _decoded(fp, name: str, draft_size: Optional[int]) -> Image.Image:
    """An upright RGB image decoded from an open file; every decoding failure an InvalidImageError."""
    try:
        return to_rgb(_decode(fp, name, draft_size))
    except InvalidImageError:
        raise
    except _DECODE_ERRORS as e:
        raise InvalidImageError(
            f"{name} could not be decoded (corrupt or truncated?): {type(e).__name__}: {e}"
        ) from None


def _decode(fp, name: str, draft_size: Optional[int]) -> Image.Image:
    try:
        image = Image.open(fp)
    except UnidentifiedImageError:
        raise InvalidImageError(f"{name} is not an image format Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise InvalidImageError(f"{name} is too large to decode safely: {e}") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        # Pillow only warns between 1x and 2x its limit; we refuse at 1x, before decoding.
        raise InvalidImageError(
            f"{name} has {image.width}x{image.height} = {image.width * image.height} pixels, more than "
            f"PIL.Image.MAX_IMAGE_PIXELS ({limit}); refusing a possible decompression bomb"
        )
    if draft_size and image.format == "JPEG":
        image.draft("RGB", (draft_size, draft_size))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"{name} could not be decoded (truncated or corrupt?): {e}") from None
    return _upright(image, in_place=True)


_ORIENTATION = 0x0112  # EXIF tag


def _upright(image: Image.Image, in_place: bool) -> Image.Image:
    """Apply the EXIF orientation. Only when there is one to apply: Pillow's exif_transpose copies
    the whole image even when nothing needs turning. A caller's image is never modified."""
    if image.getexif().get(_ORIENTATION, 1) in (1, None):
        return image
    if in_place:
        ImageOps.exif_transpose(image, in_place=True)
        return image
    return ImageOps.exif_transpose(image)


def image_from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise InvalidImageError(f"image arrays must be uint8 (0..255), got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        raise InvalidImageError(f"image arrays must be HxW, HxWx3 (RGB) or HxWx4 (RGBA), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InvalidImageError(f"image array has no pixels (shape {array.shape})")
    return Image.fromarray(np.ascontiguousarray(array), mode)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit samples: scale 0..65535 to 0..255 (Pillow's own conversion would clip at 255).
        values = np.asarray(image, dtype=np.float64) / 257.0
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode == "F":
        return Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
