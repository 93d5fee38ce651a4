"""Parity checks' shared parts: the deterministic input set, the tolerances, the comparison.

`parity_inputs(resolution)` makes the same batch on any machine from NumPy and Pillow alone, so the
converter can record the model's outputs on it and any runtime anywhere can check itself against
them. The images have realistic statistics, not only uniform noise: smooth colour fields (like
out-of-focus photographs), textured fields, hard-edged patterns and plain noise, all in pixel space
[0, 255] and then scaled as the model expects.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

GOLDEN_SEED = 20181
GOLDEN_COUNT = 8

# What "computes the same" means, for the conversion gate and for `verify` alike.
PROBABILITY_TOLERANCE = 1e-5
LOGIT_TOLERANCE = 1e-4


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits, in their own dtype."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def agreement(reference: np.ndarray, outputs: np.ndarray, tolerance: float) -> tuple:
    """(max abs difference, top-1 agreement, top-1 mismatches that count) of `outputs` against
    `reference`, both (N, classes). A top-1 mismatch does not count where the reference itself
    cannot tell its two best classes apart (closer than `tolerance`): either answer is right."""
    diff = float(np.abs(np.asarray(reference, np.float64) - outputs).max())
    best_two = np.sort(reference, axis=1)[:, -2:]
    ambiguous = (best_two[:, 1] - best_two[:, 0]) < tolerance
    same = np.argmax(reference, axis=1) == np.argmax(outputs, axis=1)
    return diff, float(np.mean(same)), np.flatnonzero(~(same | ambiguous)).tolist()


def parity_pixels(resolution: int, count: int = GOLDEN_COUNT, seed: int = GOLDEN_SEED) -> np.ndarray:
    """`count` uint8 RGB images (count, resolution, resolution, 3), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        kind = i % 4
        if kind in (0, 1):  # smooth colour field, upsampled from a coarse grid
            coarse = rng.integers(0, 256, (int(rng.integers(2, 9)),) * 2 + (3,), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize((resolution, resolution), Image.BILINEAR), np.float32)
            if kind == 1:  # plus fine texture
                field = field + rng.normal(0, 24, field.shape)
            image = field
        elif kind == 2:  # stripes and checks with random colours
            yy, xx = np.mgrid[0:resolution, 0:resolution]
            period = int(rng.integers(4, 32))
            mask = ((xx // period + yy // max(1, period // 2)) % 2).astype(bool)
            colours = rng.integers(0, 256, (2, 3))
            image = np.where(mask[..., None], colours[0], colours[1]).astype(np.float32)
        else:  # uniform noise
            image = rng.uniform(0, 255, (resolution, resolution, 3))
        images.append(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return np.stack(images)


def parity_inputs(resolution: int, count: int = GOLDEN_COUNT, seed: int = GOLDEN_SEED,
                  scale: float = 1 / 127.5, offset: float = -1.0) -> np.ndarray:
    """`parity_pixels` scaled to the model's input range, float32 NHWC."""
    return parity_pixels(resolution, count, seed).astype(np.float32) * np.float32(scale) + np.float32(offset)
