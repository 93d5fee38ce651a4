"""Markdown tables: how the command line, `verify` and the developer tools print rows."""

from __future__ import annotations


def markdown_table(header, rows) -> str:
    """A Markdown table of `header` and `rows` (sequences of cells, turned into text)."""
    lines = ["| " + " | ".join(str(c) for c in header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
