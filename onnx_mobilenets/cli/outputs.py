"""Classifying many images from the command line: sources, result rows (`StreamResult.as_row`)
written as they come (CSV, JSON Lines, Parquet), and resuming a run that was stopped.

Rows: ``path``, ``class_indices``, ``synsets``, ``labels``, ``probabilities`` (the top k of each) and
``error`` (empty, or why that image could not be classified). CSV and JSON Lines are appended to
and flushed batch by batch, so a run stopped by Ctrl-C or a crash leaves every finished row
readable (at worst a torn last line, which --resume drops). Parquet keeps its index at the end of
the file, so the rows first go to a line journal beside it (``FILE.partial.jsonl``) and the Parquet
file is written from it when the run ends, is interrupted, or resumes after a crash.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Optional

from onnx_mobilenets.runtime.stream import COLUMNS

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FORMATS = ("csv", "jsonl", "parquet")
LIST_SEPARATOR = "|"  # between the top-k values inside one CSV cell
JOURNAL_SUFFIX = ".partial.jsonl"
PARQUET_INSTALL = "pip install 'onnx-mobilenets[parquet]'"


def expand_sources(arguments: Iterable[str], recursive: bool = False) -> list:
    """The image paths that PATH arguments name: a file as it is; a folder's image files (by
    extension, sorted; `recursive` descends); ``@FILE`` the paths listed in FILE, one per line.
    Duplicates are dropped, keeping the first. A missing path or an empty folder is an error."""
    found, seen = [], set()

    def add(path: str):
        if path not in seen:
            seen.add(path)
            found.append(path)

    def expand(argument: str, depth: int = 0):
        if argument.startswith("@"):
            listing = Path(argument[1:])
            if not listing.is_file():
                raise FileNotFoundError(f"list of paths {listing} does not exist")
            for line in listing.read_text(encoding="utf-8").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    expand(line, depth + 1)
            return
        path = Path(argument)
        if path.is_dir():
            images = [str(p) for p in folder_images(path, recursive)]
            if not images:
                raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)}"
                                 f"{'' if recursive else '; --recursive looks in subfolders'})")
            for image in images:
                add(image)
        elif path.exists() or depth:  # a listed path that went missing becomes an error row, not a stop
            add(str(path))
        else:
            raise FileNotFoundError(f"{path} does not exist")

    for argument in arguments:
        expand(argument)
    return found


def folder_images(folder: Path, recursive: bool):
    """The image files of `folder` (by extension), sorted; in its subfolders too when `recursive`."""
    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(root) / f for f in sorted(files) if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def output_format(path, chosen: Optional[str]) -> str:
    if chosen:
        if chosen not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {chosen!r}")
        return chosen
    suffix = Path(path).suffix.lower()
    by_suffix = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
    if suffix not in by_suffix:
        raise ValueError(
            f"cannot tell the output format from {path}: name it .csv, .jsonl or .parquet, or pass --format"
        )
    return by_suffix[suffix]


# --- reading what a file already holds (--resume) ------------------------------------------------

def finished_paths(path, fmt: str) -> set:
    """The paths an existing output file (and, for Parquet, its journal) already has rows for.
    Refuses, leaving the file untouched, one that is not an output of this format or is corrupt;
    only a torn last line of a CSV or JSON Lines file (a run killed mid-write) is cut off."""
    path = Path(path)
    done = set()
    if fmt == "parquet":
        if path.exists():
            done |= {row["path"] for row in _parquet_rows(path)}
        journal = _journal(path)
        if journal.exists():
            done |= _line_file_paths(journal, "jsonl")
        return done
    if path.exists():
        done |= _line_file_paths(path, fmt)
    return done


def _line_file_paths(path: Path, fmt: str) -> set:
    data = path.read_bytes()
    torn = bool(data) and not data.endswith(b"\n")
    complete = data[:data.rfind(b"\n") + 1] if torn else data
    try:
        rows = list(_parse_lines(complete.decode("utf-8"), fmt))
    except (ValueError, KeyError, csv.Error, UnicodeDecodeError) as e:
        raise ValueError(f"--resume: {path} is not a {fmt.upper()} predictions file made by onnx-mobilenets "
                         f"({e}); it was left as it is") from None
    if torn:  # the last row was being written when the run stopped: drop it, it is done again
        with open(path, "r+b") as f:
            f.truncate(len(complete))
    return {row["path"] for row in rows}


def _parse_lines(text: str, fmt: str):
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if text and tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"its header is {reader.fieldnames}, expected {list(COLUMNS)}")
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"row {reader.line_num} does not have {len(COLUMNS)} columns")
            yield row
        return
    for number, line in enumerate(text.splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {number} is not JSON: {e}") from None
        if not isinstance(row, dict) or set(row) != set(COLUMNS):
            raise ValueError(f"line {number} does not hold the columns {list(COLUMNS)}")
        yield row


def _parquet_rows(path: Path):
    pq = _pyarrow_parquet()
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises its own types for files that are not Parquet
        raise ValueError(f"--resume: {path} is not a readable Parquet file ({e}); it was left as it is") from None
    if tuple(table.column_names) != COLUMNS:
        raise ValueError(f"--resume: {path} has columns {table.column_names}, not those of onnx-mobilenets "
                         f"predictions ({list(COLUMNS)}); it was left as it is")
    for batch in table.to_batches(65536):
        yield from batch.to_pylist()


def _journal(path: Path) -> Path:
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"Parquet output needs pyarrow: {PARQUET_INSTALL}") from None
    return pq


# --- writing ------------------------------------------------------------------------------------

class RowWriter:
    """Appends result rows to an output file of one format; `close` makes a Parquet file complete."""

    def __init__(self, path, fmt: str, resume: bool = False):
        self.path, self.fmt = Path(path), fmt
        if fmt == "parquet":
            _pyarrow_parquet()  # fail now, not after the work, if pyarrow is missing
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"the folder of the output file, {self.path.parent}, does not exist")
        if self.path.is_dir():
            raise ValueError(f"the output {self.path} is a folder; give a file name")
        target = _journal(self.path) if fmt == "parquet" else self.path
        fresh = not (resume and target.exists() and target.stat().st_size > 0)
        self._keep_previous = resume  # Parquet: the rows an earlier run wrote stay
        self._created = not target.exists()
        try:
            self._file = open(target, "w" if fresh and not resume else "a", encoding="utf-8", newline="")
        except OSError as e:
            raise ValueError(f"cannot write the output {target}: {e.strerror or e}") from None
        self._csv = csv.writer(self._file, lineterminator="\n") if fmt == "csv" else None
        if self._csv and fresh:
            self._csv.writerow(COLUMNS)
            self._file.flush()

    def write(self, rows) -> None:
        for row in rows:
            if self._csv:
                self._csv.writerow([row["path"], *(LIST_SEPARATOR.join(map(str, row[c])) for c in COLUMNS[1:5]),
                                    row["error"]])
            else:
                self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        if self.fmt == "parquet":
            _parquet_from_journal(self.path, self._keep_previous)

    def discard(self) -> None:
        """Close without a result: the run could not start. A file this writer created is removed
        (a resumed one is left as it was)."""
        self._file.close()
        if self._created:
            Path(self._file.name).unlink(missing_ok=True)


def _parquet_from_journal(path: Path, keep_previous: bool, chunk: int = 50_000) -> None:
    """Write `path` from its previous rows (when kept) and its journal, atomically; drop the journal."""
    import pyarrow as pa

    pq = _pyarrow_parquet()
    schema = pa.schema([("path", pa.string()), ("class_indices", pa.list_(pa.int32())),
                        ("synsets", pa.list_(pa.string())), ("labels", pa.list_(pa.string())),
                        ("probabilities", pa.list_(pa.float32())), ("error", pa.string())])
    journal = _journal(path)
    temporary = path.with_name(f".{path.name}.writing")
    with pq.ParquetWriter(temporary, schema) as writer:
        if keep_previous and path.exists():
            for batch in pq.ParquetFile(path).iter_batches(chunk):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
        rows = []
        if journal.exists():
            with open(journal, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):  # a torn last line is left for --resume to redo
                        rows.append(json.loads(line))
                    if len(rows) >= chunk:
                        writer.write_table(pa.Table.from_pylist(rows, schema))
                        rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema))
    os.replace(temporary, path)
    if journal.exists():
        journal.unlink()
