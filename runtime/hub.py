"""Artifacts from the Hugging Face Hub, through `huggingface_hub` (its cache, ETags, resumed
downloads, and its retries of 408/429/5xx answers and network errors: five tries with growing
pauses, as the package's own downloader does). A Hub whose host name does not resolve (no network)
is not retried: its cached copy is used, else the next source is tried at once.

Read at each call, as the user's shell has them now: ``HF_ENDPOINT`` (another Hub, or a local
stand-in), ``HF_HUB_CACHE`` / ``HF_HOME``, ``HF_HUB_OFFLINE``; ``ONNX_MOBILENETS_OFFLINE=1`` also
means cached files only. Every file is checked against the repository's ``manifest.json`` before it
is used; one that does not match is removed from huggingface_hub's cache and raises ChecksumError.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from onnx_mobilenets import download
from onnx_mobilenets.artifact import MANIFEST, ArtifactSpec, manifest_lookup, parse_manifest
from onnx_mobilenets.errors import ChecksumError, DownloadError, ModelNotFoundError
from onnx_mobilenets.published import HubAddress

_TRUE = ("1", "true", "yes", "on")


def fetch_artifact(address: HubAddress, choose: Callable[[dict], ArtifactSpec]) -> tuple:
    """(spec, local path) of the artifact that `choose` picks from the repository's manifest
    (its ``artifacts`` table) at `address`, downloaded (or found in the cache) and checked.
    ModelNotFoundError when the repository, revision or file is not there (or not cached, offline),
    DownloadError when the Hub cannot be reached, ChecksumError for a file not as its manifest says."""
    manifest = _download(address, MANIFEST).read_bytes()
    where = f"{address}/{MANIFEST}"
    try:
        spec = choose(parse_manifest(manifest, where))
        file, sha256 = manifest_lookup(manifest, where, spec)
        if file != spec.file_name:  # no other name reaches the disk (a "../" one, say)
            raise ValueError(f"its entry {spec.name} names the file {file!r}, not {spec.file_name}")
    except (KeyError, TypeError, ValueError) as e:
        raise ModelNotFoundError(f"{where} lists no usable artifact: {e}") from None
    path = _download(address, file)
    actual = download.sha256_of(path)
    if actual != sha256:
        _evict(path)
        raise ChecksumError(f"{file} from {address} has SHA-256 {actual}, but the repository's manifest says "
                            f"{sha256}: it was tampered with or corrupted; nothing was kept")
    return spec, path


def is_offline() -> bool:
    return download.is_offline() or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _download(address: HubAddress, filename: str) -> Path:
    from huggingface_hub import constants, hf_hub_download  # here: the runtime's import stays light
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{address}/{filename}"
    # Where huggingface_hub will ask; if its host does not resolve, its cached copy only, if any.
    unreachable = None if is_offline() else _unresolvable(_endpoint() or constants.ENDPOINT)
    try:
        return Path(hf_hub_download(address.repo_id, filename, revision=address.revision, endpoint=_endpoint(),
                                    cache_dir=_cache_dir(), local_files_only=is_offline() or bool(unreachable)))
    except LocalEntryNotFoundError as e:  # offline (or the Hub unreachable) and not in the cache
        if is_offline():
            raise ModelNotFoundError(f"{where} is not in huggingface_hub's cache, and offline mode forbids "
                                     "downloading it") from None
        raise DownloadError(f"{where} could not be downloaded: {unreachable or e.__cause__ or e}") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"the Hub has no repository {address.repo_id} (or it is private)") from None
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"{address.repo_id} has no revision {address.revision!r}") from None
    except EntryNotFoundError:
        raise ModelNotFoundError(f"{address} has no file {filename}") from None
    except (HfHubHTTPError, OSError) as e:
        raise DownloadError(f"{where} could not be downloaded: {e}") from None


def _unresolvable(endpoint: str) -> Optional[str]:
    """Why the Hub's host name does not resolve here (no network, as on a plane), or None. There
    huggingface_hub tries five times over 23 s before it gives up, while the sources after the Hub
    (a local conversion) wait. Behind a proxy the proxy resolves it: not checked."""
    if urllib.request.getproxies():  # HTTPS_PROXY and the like, as the environment names them
        return None
    parts = urllib.parse.urlsplit(endpoint)
    try:
        socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                           type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        return f"{parts.hostname} does not resolve ({e})"
    return None


def _endpoint():
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or None


def _cache_dir():
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None


def _evict(path: Path) -> None:
    """Remove a downloaded file from huggingface_hub's cache: its snapshot link and its blob."""
    blob = path.resolve()
    for victim in (path, blob):
        try:
            os.remove(victim)
        except FileNotFoundError:
            pass
