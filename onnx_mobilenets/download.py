"""The one downloader: cache folder, checksums, atomic writes, offline mode, mirrors, retries, safe
extraction.

Used for official TF-slim checkpoints and release tarballs (conversion) and published ONNX artifacts
(runtime); it needs nothing beyond the standard library and tqdm.

Environment:
- ``ONNX_MOBILENETS_HOME``: cache folder (default ``$XDG_CACHE_HOME/onnx_mobilenets`` or
  ``~/.cache/onnx_mobilenets``).
- ``ONNX_MOBILENETS_OFFLINE=1``: never touch the network; a file that is neither in the cache nor in
  a local mirror folder is an error. (A local folder is not the network.)
- ``ONNX_MOBILENETS_MIRROR``: a base URL or a local folder holding the official file names, used
  instead of the official host.
- ``ONNX_MOBILENETS_ARTIFACTS_URL``: a URL or a local folder of ONNX artifacts with their
  ``manifest.json`` (what ``onnx-mobilenets convert --output DIR`` writes), searched by the runtime
  after its cache.

Over the network, transient failures (a connection reset or dropped mid-file, a timeout, HTTP 5xx or
429) are retried with growing pauses, resuming where the file stopped when the server honours HTTP
ranges (else starting over); other HTTP errors (404, 403) fail at once.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Optional

from .errors import ChecksumError, DownloadError, OfflineError, UnsafeArchiveError
from .files import atomic_folder
from .progress import progress_bar

__all__ = [
    "cache_dir",
    "artifacts_dir",
    "verify_cached",
    "record_sha256",
    "recorded_sha256",
    "read_bytes",
    "is_offline",
    "fetch",
    "sha256_of",
    "safe_extract",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_TIMEOUT_S = 60  # per socket operation: a stalled server fails (and is retried) instead of hanging forever
# Pauses before each retry of a transient failure, in seconds: five attempts in all.
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)
_SHA_SUFFIX = ".sha256"  # sidecar recording the hash of a file the catalogue has no checksum for
ARTIFACTS_URL_ENV = "ONNX_MOBILENETS_ARTIFACTS_URL"
OFFLINE_ENV, MIRROR_ENV = "ONNX_MOBILENETS_OFFLINE", "ONNX_MOBILENETS_MIRROR"


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    home = os.environ.get("ONNX_MOBILENETS_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "onnx_mobilenets"


def artifacts_dir() -> Path:
    """Where `convert` writes by default and the runtime looks first: ``cache_dir()/artifacts``."""
    return cache_dir() / "artifacts"


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str,
    sha256: Optional[str] = None,
    *,
    subdir: str = "checkpoints",
    filename: Optional[str] = None,
    mirror: Optional[str] = None,
    progress: Optional[bool] = None,
) -> Path:
    """Return the cached copy of `url`, downloading it first if needed.

    The file is verified against `sha256` after download and on every reuse. Without a known
    checksum the file's hash is recorded next to it on download (and checked on reuse, which catches
    corruption but cannot prove authenticity), and a warning says it could not be verified.
    Downloads go to a temporary file that is renamed into place only once complete and verified, so
    no failure leaves a partial file in the cache.

    `url` may also be a local file path. `mirror` (default ``ONNX_MOBILENETS_MIRROR``; "" for none)
    is a base URL or a local folder holding the official file names. `progress` shows a progress
    bar on stderr; by default only when it is a terminal.
    """
    filename = filename or url.rsplit("/", 1)[-1]
    if not filename or "/" in filename or filename in (".", ".."):
        raise ValueError(f"cannot derive a cache file name from URL {url!r}")
    target = cache_dir() / subdir / filename
    if target.is_file():
        if verify_cached(target, sha256):
            logger.debug("using cached %s", target)
            return target
        logger.warning("cached %s does not match its checksum; removing it and downloading again", target)
        _remove_quietly(target)
        _remove_quietly(_sidecar(target))

    source = _source(url, filename, os.environ.get(MIRROR_ENV) or "" if mirror is None else mirror, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w+b") as out:
            _copy_from_source(source, out, filename, progress)
        _accept(tmp, target, sha256, filename, source)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return target


def _source(url: str, filename: str, mirror: str, target: Path) -> str:
    """Where the file comes from: the mirror's copy or `url`; OfflineError if that is the network."""
    source = _mirror_source(mirror, filename) if mirror else url
    if "://" in source and is_offline():
        raise OfflineError(
            f"{filename} is not in the cache ({target}) and {OFFLINE_ENV}=1 forbids downloading it from {source}. "
            f"Unset {OFFLINE_ENV}, put the file at {target}, or point {MIRROR_ENV} at a local folder that holds it."
        )
    return source


def _accept(tmp: Path, target: Path, sha256: Optional[str], filename: str, source: str) -> None:
    """Check the downloaded `tmp` and move it into place, with its hash recorded beside it."""
    actual = sha256_of(tmp)
    if sha256 is not None and actual != sha256.lower():
        raise ChecksumError(
            f"SHA-256 mismatch for {filename} from {source}: expected {sha256}, got {actual}. "
            f"The download is corrupt or not the official file; nothing was cached."
        )
    if sha256 is None:
        logger.warning("%s has no published checksum, so it could not be verified; recorded its SHA-256 %s in %s",
                       filename, actual, _sidecar(target))
    _sidecar(target).write_text(actual + "\n")  # lets every later reuse detect corruption
    os.replace(tmp, target)


def verify_cached(path: Path, sha256: Optional[str] = None) -> bool:
    """True if the cached `path` matches `sha256`, or without one the SHA-256 recorded beside it.

    A file with neither (placed in the cache by hand) is trusted once: its hash is recorded, so
    later corruption is caught, and a warning says it could not be verified.
    """
    expected = sha256
    if expected is None:
        sidecar = _sidecar(path)
        if not sidecar.is_file():
            actual = sha256_of(path)
            sidecar.write_text(actual + "\n")
            logger.warning("%s has no known checksum and could not be verified (SHA-256 %s)", path, actual)
            return True
        expected = sidecar.read_text().strip()
    return sha256_of(path) == expected.lower()


def record_sha256(path: Path, sha256: str) -> None:
    _sidecar(path).write_text(sha256 + "\n")


def recorded_sha256(path: Path) -> Optional[str]:
    """The SHA-256 recorded beside a cached file, if any."""
    sidecar = _sidecar(Path(path))
    return sidecar.read_text().strip() if sidecar.is_file() else None


def read_bytes(location: str) -> bytes:
    """The whole (small) file at a URL or local path, not cached: for manifests."""
    if "://" not in location and not Path(location).expanduser().is_file():
        raise FileNotFoundError(f"{location} does not exist")
    if "://" in location and is_offline():
        raise OfflineError(f"{OFFLINE_ENV}=1 forbids fetching {location}")
    buffer = io.BytesIO()
    source = location if "://" in location else str(Path(location).expanduser())
    _copy_from_source(source, buffer, location.rsplit("/", 1)[-1], progress=False)
    return buffer.getvalue()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + _SHA_SUFFIX)


def _mirror_source(mirror: str, filename: str) -> str:
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + filename
    folder = Path(mirror).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"mirror folder {folder} does not exist")
    return str(folder / filename)


def _copy_from_source(source: str, out, filename: str, progress: Optional[bool]) -> None:
    """Write `source` (URL or local path) into the binary file `out`."""
    if "://" not in source:
        if not Path(source).is_file():
            raise FileNotFoundError(f"{filename} is not in the mirror folder (looked for {source})")
        with open(source, "rb") as f:
            shutil.copyfileobj(f, out, _CHUNK)
        return
    for attempt, delay in enumerate((*RETRY_DELAYS, None), 1):
        try:
            _download(source, out, filename, progress)
            return
        except _Transient as e:
            if delay is None:
                raise DownloadError(f"downloading {source} failed after {attempt} attempts: {e}") from e
            logger.warning("downloading %s: %s; trying again in %g s (%d of %d)", filename, e, delay, attempt,
                           len(RETRY_DELAYS))
            time.sleep(delay)


class _Transient(Exception):
    """A failure worth another try: the network or the server, not the request."""


def _download(url: str, out, filename: str, progress: Optional[bool]) -> None:
    """One attempt: the rest of `url` after the bytes `out` already holds (all of it when the server
    ignores the range), appended to `out`."""
    start = out.seek(0, os.SEEK_END)
    headers = {"User-Agent": "onnx-mobilenets"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_TIMEOUT_S) as response:
            if start and response.status != 206:  # the server sends the whole file: start over
                out.seek(0)
                out.truncate()
                start = 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            _stream(response, out, start, total, filename, progress)
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code == 429:
            raise _Transient(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"downloading {url} failed: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):
            raise DownloadError(f"downloading {url} failed: cannot resolve its host ({e.reason})") from e
        raise _Transient(str(e.reason)) from e
    except (ConnectionError, TimeoutError, socket.timeout, http.client.HTTPException) as e:
        raise _Transient(f"{type(e).__name__}: {e}") from e


def _stream(src, out, start: int, total: Optional[int], filename: str, progress: Optional[bool]) -> None:
    bar = progress_bar(total, filename, unit="B", show=progress, unit_scale=True, unit_divisor=1024, initial=start)
    done = start
    try:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            out.write(chunk)
            done += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if total is not None and done != total:
        raise _Transient(f"the connection closed after {done} of {total} bytes")


def _remove_quietly(path: Path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def safe_extract(archive: Path, destination: Path) -> Path:
    """Extract a tar archive into `destination`, atomically; return `destination`.

    Members with absolute paths or ``..``, links, devices and other non-regular files are rejected
    before anything is written. Extraction happens in a temporary sibling folder that is renamed
    into place, so a failure leaves no half-extracted folder.
    """
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise UnsafeArchiveError(f"{archive} is not a readable tar archive: {e}") from e
    with tar:
        members = tar.getmembers()
        for member in members:
            _check_member(archive, member)
        with atomic_folder(destination) as tmp:
            # Python's own "data" filter (3.11.4+, 3.10.12+) as a second line of defence.
            safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **safety)
    return destination


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside the extraction folder")
    if member.issym() or member.islnk():
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} is a link (to {member.linkname!r}); links are not accepted"
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"{archive}: member {name!r} is a device, FIFO or other special file")
