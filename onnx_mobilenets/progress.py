"""Progress bars (tqdm) for long jobs, shown only where someone watches: on a terminal."""

from __future__ import annotations

import sys
from typing import Optional


def progress_bar(total: Optional[int], description: str, unit: str = "img", show: Optional[bool] = None, **options):
    """A tqdm bar on stderr, or None when `show` is False (default: only when stderr is a terminal)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=unit, dynamic_ncols=True, file=sys.stderr, **options)
