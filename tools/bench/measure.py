"""The benchmark's measurement: alternating contenders round by round, paired ratios, summaries,
the machine's float32 matmul rate and description."""

from __future__ import annotations

import functools
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image

from onnx_mobilenets.model_bytes import cpu_has_vnni


def _time_calls(fn, seconds):
    """Per-call times (s) of `fn` over about `seconds`, after two untimed calls: the previous
    contender's thread pool may still be spinning, and caches hold its data, not this one's."""
    fn()
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        times.append(end - start)
        if end >= deadline and len(times) >= 3:
            return times


SETTLE_SECONDS = 0.2  # TensorFlow's and onnxruntime's idle worker threads keep spinning for a while


def measure_alternating(groups, rounds: int, round_seconds: float) -> dict:
    """{name: [[per-call seconds of round 0], [round 1], ...]} for contenders given as groups of dicts.

    A contender is a function, timed here call by call, or an object that times its own calls
    (`times(seconds) -> per-call seconds`, at least three calls: a page in a browser, timed inside
    the page). Every round runs every group, and within a group every contender, in a new (seeded)
    random order, pausing between contenders so the previous one's spinning thread pools are idle.
    The contenders that are compared with each other sit in one group, so each round measures them
    seconds apart: their per-round ratio cancels the slow drift of a shared, noisy machine.
    """
    order = random.Random(0)
    contenders = {name: fn for group in groups for name, fn in group.items()}
    timers = {name: fn.times if hasattr(fn, "times") else functools.partial(_time_calls, fn)
              for name, fn in contenders.items()}
    for timer in timers.values():
        timer(0)  # warm-up: at least three calls
    samples = {name: [] for name in contenders}
    groups = [list(group) for group in groups]
    for _ in range(rounds):
        order.shuffle(groups)
        for names in groups:
            order.shuffle(names)
            for name in names:
                time.sleep(SETTLE_SECONDS)
                samples[name].append(timers[name](round_seconds))
    return samples


def round_ratios(samples: dict, numerator: str, denominator: str) -> list:
    """Per round, the ratio of the two contenders' medians within the round."""
    return [float(np.median(a) / np.median(b)) for a, b in zip(samples[numerator], samples[denominator])]


def paired_ratio(samples: dict, numerator: str, denominator: str) -> float:
    """Median over rounds of the ratio of the two contenders' medians within the round."""
    return float(np.median(round_ratios(samples, numerator, denominator)))


def summarize(rounds) -> dict:
    t = np.concatenate([np.asarray(r) for r in rounds]) * 1000
    return {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "calls": int(len(t))}


def matmul_gflops(rounds: int, round_seconds: float) -> float:
    """Measured float32 matrix-multiply rate on these cores (NumPy's BLAS, its threads set by the
    environment), in GFLOP/s: timed like one contender, `rounds` of `round_seconds`."""
    n = 1024
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    samples = measure_alternating([{"matmul": lambda: a @ b}], rounds, round_seconds)["matmul"]
    return 2 * n ** 3 / float(np.median(np.concatenate(samples))) / 1e9


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), what benchmarks say they ran on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict:
    import onnxruntime
    import tensorflow as tf

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "tensorflow": tf.__version__, "platform": platform.platform(),
            "vnni": cpu_has_vnni()}


# --- what the benchmarks feed -----------------------------------------------------------------------


def photo_like_jpegs(folder: Path, count: int, seed: int = 0) -> list:
    """`count` JPEGs that decode like photographs: smooth colour fields with fine texture, half of
    them 500x375 and half 1600x1200."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        size = (500, 375) if i % 2 == 0 else (1600, 1200)
        path = folder / f"photo_{i:05d}_{size[0]}x{size[1]}.jpg"
        if not path.is_file():
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize(size, Image.BILINEAR), np.float32)
            field += rng.normal(0, 12, field.shape).astype(np.float32)
            Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths
