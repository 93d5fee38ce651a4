"""Parity checks' shared parts: the deterministic input set, the error bound, the comparison.

`parity_inputs(resolution)` makes the same batch on any machine from NumPy and Pillow alone, so the
converter can record the model's outputs on it and any runtime anywhere can check itself against
them. The images have realistic statistics, not only uniform noise: smooth colour fields (like
out-of-focus photographs), textured fields, hard-edged patterns and plain noise, all in pixel space
[0, 255] and then scaled as the model expects.

`Tolerance` says how far two correct float32 evaluations of one network may drift apart, and
`check` compares outputs against a reference under it; the conversion gate, `verify`, the GPU check
and the tests all use these two, so "computes the same" means one thing everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image

GOLDEN_SEED = 20181
GOLDEN_COUNT = 8

# --- The error bound ----------------------------------------------------------------------------
# Why this rule. Each engine rounds every multiply-add to float32 (unit roundoff u = 2^-24), but two
# engines sum in different orders with different kernels (FMA or not, im2col or direct, blocked
# layouts), so correct results differ by about the sum of their rounding errors. BatchNorm keeps
# each layer's activations O(1), so each weighted layer adds a relative error of a few u (a length-n
# dot product's error grows like sqrt(n) u when rounding errors have random signs, and n runs from
# 9 to 1,792 here) and these add up along the L weighted layers of the longest path. The logits
# therefore differ by at most about ERROR_FACTOR * L * u times their scale, the sample's largest
# |logit|; the "1 +" keeps a floor for logits near zero that are differences of larger terms.
# ERROR_FACTOR = 8 stands for the sqrt(n) growth plus a safety margin; it is measured, not only
# argued: tests/test_tolerance.py converts 54 random networks (the catalogue's, widths 0.25-1.4 and
# off-catalogue ones, resolutions 96-224, confident and flat logits) and prints how much of the bound
# each used.
# Probabilities are compared as log-probabilities, which follow exactly: if no logit moves by more
# than d, log p_i = z_i - logsumexp(z) moves by less than 2d. (Comparing probabilities themselves
# would be blind to unlikely classes: a logit bias off by 0.5 moves a 1e-4 probability by 6e-5.)
# A real bug in one layer moves far more (tests/test_parity.py): on the fixture networks, BatchNorm's
# epsilon at 1e-5 instead of 1e-3 moves a logit by 4.8e-3 or more, 29x the bound; ReLU instead of
# ReLU6 by 1.5e-3 or more, 7x the bound.
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
ERROR_FACTOR = 8.0
# Weighted layers on the longest path, input to logits: V1 has 27 convolutions, V2 52 (stem, 16
# expand, 17 depthwise, 17 project, Conv_1), each plus the logits layer. tests check them against
# the exported graphs.
NETWORK_DEPTH = {"v1": 28, "v2": 53}
# GPUs: cuDNN and TensorRT pick their convolution algorithms per GPU and shape (implicit GEMM,
# Winograd, FFT, split-K reductions); the transform-based ones magnify rounding error by up to
# about an order of magnitude over direct summation, so GPU rows get 10x the CPU bound. TF32 is kept
# off on GPUs (see onnx_mobilenets.runtime.providers): a bound loose enough for TF32's 10-bit
# mantissa (about 1e-3 relative per layer) would also pass the epsilon bug above.
GPU_ALGORITHM_FACTOR = 10.0
# float16 artifacts (`convert --float16`) store every weight and every activation between layers in
# float16, whose unit roundoff is 2^-11: each weighted layer then adds a relative error of a few of
# those, which add up along the path as the float32 rounding errors do. So the same rule, with
# u = 2^-11 (8192x the float32 bound): it measures the float16 artifact against Keras' float32
# reference, and what it guards is the precision conversion (a tensor left in float32, an overflow,
# probabilities rounded to float16); the float32 gate, on the same network, guards the network.
# tests/test_float16.py measures the headroom on the fixture networks (36x and 63x on V1 0.25/128
# and V2 1.0/224) and shows what it catches.
FLOAT16_UNIT_ROUNDOFF = 2.0 ** -11


@dataclass(frozen=True)
class Tolerance:
    """How far two correct float32 evaluations of one network may differ, per sample."""

    depth: int  # weighted layers on the longest path
    factor: float = ERROR_FACTOR
    unit_roundoff: float = FLOAT32_UNIT_ROUNDOFF

    def logit_bounds(self, reference_logits: np.ndarray) -> np.ndarray:
        """(N,) bounds on |logit difference| for (N, classes) reference logits."""
        scale = 1.0 + np.abs(np.asarray(reference_logits, np.float64)).max(axis=1)
        return self.factor * self.depth * self.unit_roundoff * scale

    def log_probability_bounds(self, reference_logits: np.ndarray) -> np.ndarray:
        """(N,) bounds on |log-probability difference|: what the logit bound allows log-softmax to move."""
        return 2 * self.logit_bounds(reference_logits)

    def widened(self, by: float) -> "Tolerance":
        return Tolerance(self.depth, self.factor * by, self.unit_roundoff)


def tolerance_for(family: str, device: str = "cpu", float16: bool = False) -> Tolerance:
    """The bound for a network of `family` ("v1"/"v2") run on a "cpu" or "gpu" engine; with
    `float16`, for its float16 artifact."""
    if family not in NETWORK_DEPTH:
        raise ValueError(f"family must be one of {sorted(NETWORK_DEPTH)}, got {family!r}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    base = Tolerance(NETWORK_DEPTH[family], unit_roundoff=FLOAT16_UNIT_ROUNDOFF if float16 else FLOAT32_UNIT_ROUNDOFF)
    return base.widened(GPU_ALGORITHM_FACTOR) if device == "gpu" else base


@dataclass
class Agreement:
    """How `outputs` compare with a reference under a `Tolerance`."""

    output: str  # what was compared: "logits" or "log-probabilities"
    inputs: int
    max_abs_diff: float
    bound: float  # the bound of the sample that came closest to its own bound
    headroom: float  # min over samples of bound / difference (inf when identical)
    top1_agreement: float
    mismatches: list  # samples whose top-1 differs although the reference's top two are clearly apart
    reference_scale: float  # the largest |reference logit|: what the bound scales with

    @property
    def passed(self) -> bool:
        return self.headroom >= 1.0 and not self.mismatches

    def problems(self) -> list:
        found = []
        if self.headroom < 1.0:
            what = self.output[:-1]
            found.append(f"max |{what} difference| {self.max_abs_diff:.3g} exceeds its bound {self.bound:.3g}")
        if self.mismatches:
            found.append(f"top-1 differs on inputs {self.mismatches}")
        return found

    def as_dict(self) -> dict:
        return {"output": self.output, "inputs": self.inputs, "max_abs_diff": self.max_abs_diff,
                "bound": self.bound, "headroom": _finite(self.headroom), "top1_agreement": self.top1_agreement,
                "reference_scale": self.reference_scale}


def _finite(value: float) -> Optional[float]:
    return None if math.isinf(value) else value  # JSON has no infinity: None means "identical"


# Probabilities below this are compared as equal to it: float32 softmax cannot represent much less
# (exp underflows near e^-87), and no ranking depends on them.
SMALLEST_PROBABILITY = 1e-30


def check(reference_logits: np.ndarray, outputs: np.ndarray, output: str, tolerance: Tolerance,
          reference: Optional[np.ndarray] = None) -> Agreement:
    """Compare (N, classes) `outputs` ("logits" or "probabilities") with a reference.

    The per-sample bounds come from `reference_logits`; the values compared against are `reference`
    (default: `reference_logits`, or their softmax for probabilities). Probabilities are compared as
    log-probabilities. A top-1 mismatch counts only where the reference's two best logits are more
    than two logit bounds apart: closer than that, either answer is a correct float32 result.
    """
    if output not in ("logits", "probabilities"):
        raise ValueError(f"output must be 'logits' or 'probabilities', got {output!r}")
    reference_logits = np.asarray(reference_logits, np.float64)
    outputs = np.asarray(outputs, np.float64)
    logit_bounds = tolerance.logit_bounds(reference_logits)
    if output == "logits":
        expected = reference_logits if reference is None else np.asarray(reference, np.float64)
        compared, bounds = "logits", logit_bounds
    else:
        expected = log_softmax(reference_logits) if reference is None else _log(reference)
        outputs = _log(outputs)
        compared, bounds = "log-probabilities", tolerance.log_probability_bounds(reference_logits)
    if outputs.shape != expected.shape:
        raise ValueError(f"outputs have shape {outputs.shape}, the reference {expected.shape}")
    differences = np.abs(expected - outputs).max(axis=1)
    with np.errstate(divide="ignore"):
        room = np.where(differences > 0, bounds / np.maximum(differences, 1e-300), np.inf)
    worst = int(np.argmin(room))
    best_two = np.sort(reference_logits, axis=1)[:, -2:]
    ambiguous = (best_two[:, 1] - best_two[:, 0]) <= 2 * logit_bounds
    same = np.argmax(expected, axis=1) == np.argmax(outputs, axis=1)
    return Agreement(output=compared, inputs=len(expected), max_abs_diff=float(differences.max()),
                     bound=float(bounds[worst]), headroom=float(room[worst]), top1_agreement=float(np.mean(same)),
                     mismatches=np.flatnonzero(~(same | ambiguous)).tolist(),
                     reference_scale=float(np.abs(reference_logits).max()))


def _log(probabilities) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, np.float64), SMALLEST_PROBABILITY))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return np.maximum(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), np.log(SMALLEST_PROBABILITY))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, classes) logits, in their own dtype."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def parity_pixels(resolution: int, count: int = GOLDEN_COUNT, seed: int = GOLDEN_SEED) -> np.ndarray:
    """`count` uint8 RGB images (count, resolution, resolution, 3), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return np.stack([_pattern(rng, i, resolution, resolution) for i in range(count)])


def parity_images(resolution: int, count: int = GOLDEN_COUNT, seed: int = GOLDEN_SEED) -> list:
    """`count` uint8 RGB images of different sizes (half to three times `resolution` on each side,
    tall, wide and odd ones), deterministic in `seed`: the golden inputs of image-in artifacts."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(resolution // 2, 3 * resolution + 1, (count, 2))
    return [_pattern(rng, i, int(height), int(width)) for i, (height, width) in enumerate(sizes)]


def _pattern(rng, i: int, height: int, width: int) -> np.ndarray:
    kind = i % 4
    if kind in (0, 1):  # smooth colour field, upsampled from a coarse grid
        coarse = rng.integers(0, 256, (int(rng.integers(2, 9)),) * 2 + (3,), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.float32)
        if kind == 1:  # plus fine texture
            image = image + rng.normal(0, 24, image.shape)
    elif kind == 2:  # stripes and checks with random colours
        yy, xx = np.mgrid[0:height, 0:width]
        period = int(rng.integers(4, 32))
        mask = ((xx // period + yy // max(1, period // 2)) % 2).astype(bool)
        colours = rng.integers(0, 256, (2, 3))
        image = np.where(mask[..., None], colours[0], colours[1]).astype(np.float32)
    else:  # uniform noise
        image = rng.uniform(0, 255, (height, width, 3))
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def parity_inputs(resolution: int, count: int = GOLDEN_COUNT, seed: int = GOLDEN_SEED,
                  scale: float = 1 / 127.5, offset: float = -1.0) -> np.ndarray:
    """`parity_pixels` scaled to the model's input range, float32 NHWC."""
    return parity_pixels(resolution, count, seed).astype(np.float32) * np.float32(scale) + np.float32(offset)


# --- Quantized artifacts: TFLite's integer arithmetic, step for step ------------------------------
# A quantized artifact is right when it computes what Google's TFLite interpreter computes on its
# default CPU path (XNNPACK). onnxruntime's CPU QDQ kernels follow it step for step (`EXACT`): the
# quantized logits (the uint8 input of the graph's SOFTMAX) within one step everywhere and identical
# on at least 95 % of values, the same top-1 wherever TFLite's two best logits are at least two steps
# apart. One step of slack because requantization rounding may differ by one in rare ties.
# Other engines and devices round their own way (`OTHER_ENGINE`), as TFLite's own builtin kernels do
# (up to 7 steps from XNNPACK on the fixtures). Measured on the two fixtures, 32 golden inputs and 100
# ImageNet photos each: OpenVINO 2026.4 within 6 steps, 50-75 % identical; OpenCV 5.0 within 7, 50-75 %
# identical; both with a different top-1 only where TFLite's two best logits were at most one step
# apart. So: within 8 steps, at least 40 % identical, the same top-1 where the two best are 3 or more
# steps apart. A broken weight moves logits by tens of steps.


@dataclass(frozen=True)
class QuantizedRule:
    max_steps: int
    min_identical: float
    clear_top1_steps: int


EXACT = QuantizedRule(max_steps=1, min_identical=0.95, clear_top1_steps=2)
OTHER_ENGINE = QuantizedRule(max_steps=8, min_identical=0.40, clear_top1_steps=3)


@dataclass
class QuantizedAgreement:
    inputs: int
    identical: float  # share of logits equal to the reference's
    max_steps: int  # largest difference, in quantization steps
    top1_agreement: float
    mismatches: list  # samples whose top-1 differs although the reference's top two are clearly apart
    rule: QuantizedRule = EXACT

    @property
    def passed(self) -> bool:
        return not self.problems()

    def problems(self) -> list:
        found = []
        if self.max_steps > self.rule.max_steps:
            found.append(f"quantized logits differ by up to {self.max_steps} steps (at most {self.rule.max_steps} "
                         "allowed)")
        if self.identical < self.rule.min_identical:
            found.append(f"only {self.identical:.1%} of quantized logits identical (at least "
                         f"{self.rule.min_identical:.0%} required)")
        if self.mismatches:
            found.append(f"top-1 differs on inputs {self.mismatches}")
        return found

    def as_dict(self) -> dict:
        return {"inputs": self.inputs, "identical": self.identical, "max_steps": self.max_steps,
                "top1_agreement": self.top1_agreement}


def check_quantized(reference: np.ndarray, outputs: np.ndarray, rule: QuantizedRule = EXACT) -> QuantizedAgreement:
    """Compare (N, classes) integer quantized logits with a reference (TFLite's) under `rule`."""
    reference = np.asarray(reference, np.int64)
    outputs = np.asarray(outputs, np.int64)
    if outputs.shape != reference.shape:
        raise ValueError(f"outputs have shape {outputs.shape}, the reference {reference.shape}")
    steps = np.abs(reference - outputs)
    best_two = np.sort(reference, axis=1)[:, -2:]
    clear = (best_two[:, 1] - best_two[:, 0]) >= rule.clear_top1_steps
    same = np.argmax(reference, axis=1) == np.argmax(outputs, axis=1)
    return QuantizedAgreement(inputs=len(reference), identical=float(np.mean(steps == 0)), max_steps=int(steps.max()),
                              top1_agreement=float(np.mean(same)), mismatches=np.flatnonzero(clear & ~same).tolist(),
                              rule=rule)
