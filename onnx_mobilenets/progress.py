"""Progress bars (tqdm) for long jobs, shown only where someone watches: on a terminal."""

from __future__ import annotations

import os
import sys
from typing import Optional


def progress_bar(total: Optional[int], description: str, unit: str = "img", show: Optional[bool] = None, **options):
    """A tqdm bar on stderr, or None when `show` is False (default: only when stderr is a terminal)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    from tqdm import tqdm

    # A terminal that reports no size (0 x 0: pseudo-terminals nobody sized, some CI consoles) gets
    # no bar at all from tqdm, which fits bars to the screen: give it 80 x 24 there.
    sized = _columns() > 0
    return tqdm(total=total, desc=description, unit=unit, dynamic_ncols=sized, ncols=None if sized else 80,
                nrows=None if sized else 24, file=sys.stderr, **options)


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 0
