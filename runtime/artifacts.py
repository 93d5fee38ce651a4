"""Resolving a model to an ONNX file: the cache, the built-in model, published artifacts (a folder or URL,
the Hugging Face Hub), local conversion, or a clear error."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from onnx_mobilenets import builtin, catalogue, download, preprocessing
from onnx_mobilenets.artifact import MANIFEST, ArtifactSpec, manifest_lookup, parse_manifest
from onnx_mobilenets.builtin import builtin_path
from onnx_mobilenets.errors import ChecksumError, DownloadError, ModelNotFoundError, OnnxMobileNetsError
from onnx_mobilenets.files import atomic_write
from onnx_mobilenets.published import HUB_NAMESPACE_ENV, HubAddress, hub_address_of, is_hub_address, parse_hub_address

from . import hub

logger = logging.getLogger(__name__)


def cached_path(spec: ArtifactSpec) -> Path:
    """Where the runtime's cache keeps `spec`'s artifact (where `onnx-mobilenets convert` writes)."""
    return spec.path_in(download.artifacts_dir())


def resolve_model(model, *, image_input: bool = False, preprocessing_name: str = preprocessing.DEFAULT) -> Path:
    """The .onnx file for `model`: a path; a Hub address ``hf://owner/repo[@revision]`` (its
    artifact for `image_input` and `preprocessing_name`, downloaded and checked); or a catalogue
    name or alias, whose artifact (`ArtifactSpec`) `resolve_spec` finds."""
    if is_hub_address(model):
        return _from_hub_address(parse_hub_address(model), image_input, preprocessing.check_name(preprocessing_name))
    if isinstance(model, os.PathLike) or (isinstance(model, str) and not catalogue.names_a_variant(model)):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return path
    if not isinstance(model, str):
        raise ValueError(f"model must be a catalogue name, an alias, a Hub address (hf://owner/repo) or a path to an "
                         f".onnx file, got {model!r}")
    spec = ArtifactSpec.of_variant(model, image_input=image_input,  # ValueError with close matches when unknown
                                   preprocessing=preprocessing.check_name(preprocessing_name))
    return resolve_spec(spec)


def resolve_spec(spec: ArtifactSpec) -> Path:
    """`spec`'s artifact (or one that serves as it: `ArtifactSpec.runtime_equivalents`), found in
    order in (1) the cache (where `onnx-mobilenets convert` writes by default), (2) the built-in
    model (`onnx_mobilenets.builtin`), (3) the manifest under ``ONNX_MOBILENETS_ARTIFACTS_URL``,
    verified against its SHA-256: a local folder (such as one `convert --output DIR` wrote) is used
    in place, a URL is downloaded and cached, (4) the Hugging Face Hub (the variant's repository
    under `published.hub_namespace()`; downloaded, checked against its manifest, cached), (5) a local
    conversion of the official checkpoint when the [convert] extra is installed (in a subprocess, so
    TensorFlow never enters this process; then cached), else a `ModelNotFoundError` naming every
    source tried and the command that gets it. A file that does not match its checksum raises
    ChecksumError wherever it comes from."""
    candidates = spec.runtime_equivalents()
    for candidate in candidates:
        path = cached_path(candidate)
        if path.is_file():
            if download.verify_cached(path):
                return path
            logger.warning("cached %s does not match its recorded SHA-256; fetching it again", path)
            path.unlink()
    tried = [f"the cache ({cached_path(spec)}): not there"]
    for candidate in candidates:
        found = builtin_path(candidate)
        if found:
            return found
    tried.append(f"the built-in model: it is {builtin.SPEC.name}")
    for source, fetch in _remote_sources(candidates):
        try:
            return fetch()
        except ChecksumError:
            raise
        except (FileNotFoundError, DownloadError) as e:  # ModelNotFoundError among them: try the next source
            tried.append(f"{source}: {e}")
    options = (["--image-input"] if spec.image_input else []) + ["--preprocessing", spec.preprocessing]
    if conversion_available():
        return _convert_locally(spec, options, tried)
    tried.append("local conversion: the [convert] extra (TensorFlow, tf2onnx, onnx) is not installed")
    raise ModelNotFoundError(
        f"no ONNX file for {spec.name}. Tried:\n" + "".join(f"  - {t}\n" for t in tried) + "Get it with:\n"
        f"    pip install 'onnx-mobilenets[convert]' && onnx-mobilenets convert {spec.variant} {' '.join(options)}\n"
        f"or point {download.ARTIFACTS_URL_ENV} at a folder or URL of published artifacts (with manifest.json), "
        "or pass the path of an .onnx file."
    )


def _remote_sources(candidates: list) -> list:
    """(what it is, how to fetch from it) of the sources after the cache and the built-in model, in order."""
    base = os.environ.get(download.ARTIFACTS_URL_ENV)
    address = hub_address_of(candidates[0].variant)
    sources = []
    if base:
        sources.append((f"{download.ARTIFACTS_URL_ENV}={base}", lambda: _fetch_published(base, candidates)))
    else:
        sources.append((download.ARTIFACTS_URL_ENV, _not_set))
    if address:
        sources.append((f"the Hugging Face Hub ({address})", lambda: _keep_in_cache(*hub.fetch_artifact(
            address, lambda table: _first_listed(candidates, table)))))
    else:
        sources.append((f"the Hugging Face Hub ({HUB_NAMESPACE_ENV} is empty)", _not_set))
    return sources


def _not_set():
    raise ModelNotFoundError("not set")


def _first_listed(candidates: list, table: dict) -> ArtifactSpec:
    for candidate in candidates:
        if candidate.name in table:
            return candidate
    raise KeyError(f"none of {', '.join(c.name for c in candidates)} among {', '.join(sorted(table))}")


def _keep_in_cache(spec: ArtifactSpec, path: Path) -> Path:
    """A checked download from the Hub, copied into the cache: later instances find it there with no request."""
    target = atomic_write(cached_path(spec), path.read_bytes())
    download.record_sha256(target, download.sha256_of(target))
    return target


def _from_hub_address(address: HubAddress, image_input: bool, preprocessing_name: str) -> Path:
    """The artifact of the repository at `address` for these options: the one recording
    `preprocessing_name`, else (for a tensor artifact) the default one, which serves every preprocessing."""
    wanted = [preprocessing_name] + ([] if image_input or preprocessing_name == preprocessing.DEFAULT
                                     else [preprocessing.DEFAULT])

    def choose(table: dict) -> ArtifactSpec:
        listed = [ArtifactSpec.from_file_name(e["file"]) for e in table.values()
                  if isinstance(e, dict) and isinstance(e.get("file"), str)]
        for name in wanted:
            for spec in listed:
                if spec and spec.image_input == image_input and spec.preprocessing == name and spec.batch is None:
                    return spec
        kind = "image-in" if image_input else "tensor"
        raise KeyError(f"no {kind} artifact recording {' or '.join(wanted)} among {', '.join(sorted(table))}")

    return hub.fetch_artifact(address, choose)[1]


def _fetch_published(base: str, candidates: list) -> Path:
    """The first of `candidates` that the manifest at `base` lists, checked against its SHA-256."""
    is_url = "://" in base
    join = (lambda f: base.rstrip("/") + "/" + f) if is_url else (lambda f: str(Path(base).expanduser() / f))
    where = join(MANIFEST)
    try:
        manifest = download.read_bytes(where)
        listed = [spec for spec in candidates if spec.name in parse_manifest(manifest, where)]
        found = listed[0] if listed else candidates[0]
        file, sha256 = manifest_lookup(manifest, where, found)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelNotFoundError(f"the artifacts at {base} have no valid manifest entry for {candidates[0].name} "
                                 f"({e!r})") from None
    if not is_url:  # a folder on this machine: use the file where it is, once its checksum is right
        path = Path(join(file))
        if not path.is_file():
            raise FileNotFoundError(f"{path} is listed in {where} but does not exist")
        actual = download.sha256_of(path)
        if actual != sha256:
            raise ChecksumError(f"{path} has SHA-256 {actual}, but its manifest says {sha256}: it changed after "
                                "conversion; convert it again")
        return path
    return download.fetch(join(file), sha256, subdir="artifacts", filename=found.file_name, mirror="")


def conversion_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tf2onnx", "onnx"))


def _stderr_fd():
    try:
        return sys.stderr.fileno()
    except (AttributeError, ValueError, OSError):  # replaced or captured stderr without a descriptor
        return None


def _convert_locally(spec: ArtifactSpec, options: list, tried: list) -> Path:
    logger.warning("converting %s from the official checkpoint (one time; the result is cached)", spec.name)
    command = [sys.executable, "-m", "onnx_mobilenets.conversion", spec.variant, "--output",
               str(download.artifacts_dir()), *options]
    result = subprocess.run(command, stdout=_stderr_fd())  # its messages stay visible, our stdout stays clean
    path = cached_path(spec)
    if result.returncode != 0 or not path.is_file():
        raise OnnxMobileNetsError(f"no ONNX file for {spec.name}: the local conversion, the last source after\n"
                                  + "".join(f"  - {t}\n" for t in tried)
                                  + f"failed (exit {result.returncode}; its messages are above): {' '.join(command)}")
    return path
