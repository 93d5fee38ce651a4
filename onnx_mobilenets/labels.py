"""The 1000 ImageNet classes (WordNet id, label) in the standard ILSVRC-2012 order.

Read from ``data/imagenet_classes.tsv`` (see tools/make_imagenet_classes.py for its source). The
converter writes them into every artifact's metadata; the runtime reads them from there.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple:
    """((wnid, label), ...) for class indices 0..999."""
    text = resources.files("onnx_mobilenets").joinpath("data/imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split("\t")) for line in text.splitlines() if line and not line.startswith("#"))
    if len(rows) != 1000:
        raise RuntimeError(f"imagenet_classes.tsv holds {len(rows)} classes, expected 1000")
    return rows
