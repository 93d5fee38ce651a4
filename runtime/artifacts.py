"""Resolving a model name to an ONNX file: cache, published artifacts, local conversion, or a clear error."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

from onnx_mobilenets import catalogue, download, preprocessing
from onnx_mobilenets.artifact import MANIFEST, ArtifactSpec, manifest_lookup, parse_manifest
from onnx_mobilenets.errors import ChecksumError, ModelNotFoundError, OnnxMobileNetsError

logger = logging.getLogger(__name__)


def cached_path(spec: ArtifactSpec) -> Path:
    """Where the runtime's cache keeps `spec`'s artifact (where `onnx-mobilenets convert` writes)."""
    return spec.path_in(download.artifacts_dir())


def resolve_model(model, *, image_input: bool = False, preprocessing_name: str = preprocessing.DEFAULT) -> Path:
    """The .onnx file for `model`: a path, or a catalogue name or alias, whose artifact
    (`ArtifactSpec`: with `image_input`, `preprocessing_name`) `resolve_spec` finds."""
    if isinstance(model, os.PathLike) or (isinstance(model, str) and not catalogue.names_a_variant(model)):
        path = Path(model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist")
        return path
    if not isinstance(model, str):
        raise ValueError(f"model must be a catalogue name, an alias or a path to an .onnx file, got {model!r}")
    spec = ArtifactSpec.of_variant(model, image_input=image_input,  # ValueError with close matches when unknown
                                   preprocessing=preprocessing.check_name(preprocessing_name))
    return resolve_spec(spec)


def resolve_spec(spec: ArtifactSpec) -> Path:
    """`spec`'s artifact (or one that serves as it: `ArtifactSpec.runtime_equivalents`), found in
    order in (1) the cache (where `onnx-mobilenets convert` writes by default), (2) the manifest under
    ``ONNX_MOBILENETS_ARTIFACTS_URL``, verified against its SHA-256: a local folder (such as one
    `convert --output DIR` wrote) is used in place, a URL is downloaded and cached, (3) a local
    conversion of the official checkpoint when the [convert] extra is installed (in a subprocess,
    so TensorFlow never enters this process; then cached), else a `ModelNotFoundError` naming the
    command that gets it."""
    candidates = spec.runtime_equivalents()
    for candidate in candidates:
        path = cached_path(candidate)
        if path.is_file():
            if download.verify_cached(path):
                return path
            logger.warning("cached %s does not match its recorded SHA-256; fetching it again", path)
            path.unlink()
    base = os.environ.get(download.ARTIFACTS_URL_ENV)
    if base:
        return _fetch_published(base, candidates)
    options = (["--image-input"] if spec.image_input else []) + ["--preprocessing", spec.preprocessing]
    if conversion_available():
        return _convert_locally(spec, options)
    raise ModelNotFoundError(
        f"no ONNX file for {spec.name}: it is not in the cache ({cached_path(spec)}), {download.ARTIFACTS_URL_ENV} "
        "is not set, and the [convert] extra (TensorFlow, tf2onnx, onnx) is not installed. Get it with:\n"
        f"    pip install 'onnx-mobilenets[convert]' && onnx-mobilenets convert {spec.variant} {' '.join(options)}\n"
        f"or point {download.ARTIFACTS_URL_ENV} at a folder or URL of published artifacts (with manifest.json), "
        "or pass the path of an .onnx file."
    )


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


def _convert_locally(spec: ArtifactSpec, options: list) -> Path:
    logger.warning("converting %s from the official checkpoint (one time; the result is cached)", spec.name)
    command = [sys.executable, "-m", "onnx_mobilenets.conversion", spec.variant, "--output",
               str(download.artifacts_dir()), *options]
    result = subprocess.run(command, stdout=_stderr_fd())  # its messages stay visible, our stdout stays clean
    path = cached_path(spec)
    if result.returncode != 0 or not path.is_file():
        raise OnnxMobileNetsError(f"local conversion of {spec.name} failed (exit {result.returncode}): "
                                  f"{' '.join(command)}")
    return path
