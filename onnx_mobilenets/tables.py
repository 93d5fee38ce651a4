"""Markdown tables: how the command line, `verify` and the developer tools print rows."""

from __future__ import annotations


def markdown_table(header, rows) -> str:
    """A Markdown table of `header` and `rows` (sequences of cells, turned into text)."""
    lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def aligned_table(header, rows) -> str:
    """A plain-text table for a terminal: columns padded to their widest cell, a rule under the header."""
    table = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
