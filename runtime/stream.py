"""Classifying any number of images as a stream: decoding in threads, overlapping with inference.

Pillow releases the GIL while it decodes and resizes, so a pool of threads prepares images while
onnxruntime (its own threads) classifies the previous batch. At most `prefetch` images are in
flight, so memory stays flat however many sources there are. Results come back in input order,
one per source: its predictions, or the error that stopped it (a bad image never stops the others).
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, NamedTuple, Optional

import numpy as np

from onnx_mobilenets.errors import InvalidImageError

# Failures that belong to one source: it is unreadable, missing, not an image. Anything else is a
# bug and stops the stream.
SOURCE_ERRORS = (InvalidImageError, OSError)


# The columns of a result as a row (what `predict --output` writes and Ray's Dataset holds).
COLUMNS = ("path", "class_indices", "synsets", "labels", "probabilities", "error")


class StreamResult(NamedTuple):
    source: object  # as given
    predictions: Optional[list]  # the top `Prediction`s, or None when `error` says why not
    error: Optional[str] = None

    def as_row(self) -> dict:
        """The result as a row of COLUMNS: the top-k values as lists, "" for no error."""
        predictions = self.predictions or []
        return {"path": str(self.source), "class_indices": [p.class_index for p in predictions],
                "synsets": [p.synset for p in predictions], "labels": [p.label for p in predictions],
                "probabilities": [round(p.probability, 6) for p in predictions], "error": self.error or ""}


class Steps(NamedTuple):
    """What a stream does to each source, a model's own steps: `load` one source into the array the
    model takes (in a decoding thread), `probabilities` of a list of such arrays, `top_predictions`
    of one probability vector."""

    load: Callable
    probabilities: Callable
    top_predictions: Callable


def check_top(top) -> None:
    """ValueError unless `top` is a number of classes to report: 1 to 1000."""
    if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= 1000:
        raise ValueError(f"top must be an integer from 1 to 1000, got {top!r}")


def predict_stream(steps: Steps, sources: Iterable, top: int = 5, *, workers: Optional[int] = None,
                   batch_size: int = 32, prefetch: Optional[int] = None) -> Iterator[StreamResult]:
    """One `StreamResult` per source, in input order (see `OnnxMobileNet.predict_stream`)."""
    check_top(top)
    workers = os.cpu_count() or 1 if workers is None else workers
    prefetch = 2 * batch_size + workers if prefetch is None and isinstance(batch_size, int) else prefetch
    for name, value in (("workers", workers), ("batch_size", batch_size), ("prefetch", prefetch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(sources, np.ndarray) and sources.ndim == 4:
        sources = list(sources)
    return _results(steps, iter(sources), top, workers, batch_size, prefetch)


def _results(steps: Steps, pending, top: int, workers: int, batch_size: int, prefetch: int):
    window = deque()  # (source, future) in input order
    pool = ThreadPoolExecutor(workers, thread_name_prefix="onnx-mobilenets-decode")
    try:
        while True:
            window.extend((s, pool.submit(steps.load, s))
                          for s in itertools.islice(pending, max(0, prefetch - len(window))))
            if not window:
                return
            group = [window.popleft() for _ in range(min(batch_size, len(window)))]
            # Refill before waiting on the group, so decoding goes on while this batch is classified.
            window.extend((s, pool.submit(steps.load, s))
                          for s in itertools.islice(pending, max(0, prefetch - len(window))))
            arrays, outcomes = [], []
            for source, future in group:
                try:
                    arrays.append(future.result())
                    outcomes.append((source, len(arrays) - 1))
                except SOURCE_ERRORS as e:
                    outcomes.append((source, f"{type(e).__name__}: {e}"))
            probabilities = steps.probabilities(arrays) if arrays else None
            for source, outcome in outcomes:
                if isinstance(outcome, str):
                    yield StreamResult(source, None, outcome)
                else:
                    yield StreamResult(source, steps.top_predictions(probabilities[outcome], top), None)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
