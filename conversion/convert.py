"""The conversion pipeline behind `onnx-mobilenets convert`: one catalogue variant, float or uint8,
into ``DIR/NAME.onnx`` (`onnx_mobilenets.artifact.ArtifactSpec` names it), recorded in
``DIR/manifest.json``.

The weights' source is fetched once, here, for both kinds (`fetch_source`): the official checkpoint
or `.tflite` tarball (downloaded, verified, cached), a local checkpoint, or random weights. Float
variants then become the Keras model of that checkpoint, exported by `export.KerasGraph`; uint8
ones Google's `.tflite`, exported by `quantized.TfliteGraph`. Both end in the same tail
(`artifact.export_artifact`), and the artifact and the manifest are written atomically, so a
failure leaves neither half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import onnx_mobilenets
from onnx_mobilenets import catalogue, download
from onnx_mobilenets import preprocessing as preprocessing_module
from onnx_mobilenets.artifact import (
    DEFAULT_OPSET,
    MANIFEST,
    ArtifactSpec,
    Weights,
    manifest_entry,
    manifest_lookup,
    read_record,
    record_in_manifest,
)
from onnx_mobilenets.errors import OnnxMobileNetsError

from .artifact import ExportReport, export_artifact
from .build import build_variant, untrained_variant
from .export import KerasGraph
from .quantized import TfliteGraph


@dataclass(frozen=True)
class Source:
    """Where a conversion's weights come from, fetched: what the artifact's provenance records."""

    location: Optional[str]  # the official URL, or the local checkpoint's resolved path; None: random weights
    path: Optional[Path] = None  # the tarball, checkpoint folder or prefix on this machine
    sha256: Optional[str] = None  # of the tarball (None for a checkpoint folder or prefix)
    seed: Optional[int] = None  # of random weights


def fetch_source(variant: catalogue.Variant, checkpoint=None, random_weights: bool = False, seed: int = 0) -> Source:
    """The weights of `variant` a conversion reads, on this machine: `checkpoint` (a local tarball,
    folder or prefix), random weights (float variants only), or the official tarball, downloaded
    (verified, cached, retried) unless the cache has it."""
    if random_weights and checkpoint is not None:
        raise ValueError("choose either a checkpoint or random weights, not both")
    if random_weights:
        if variant.quantized:
            raise ValueError(f"{variant.name}: quantized models are converted from Google's .tflite as they are; "
                             "random weights, NCHW and the weights source apply to float checkpoints only")
        return Source(None, seed=seed)
    if checkpoint is None:
        tarball = download.fetch(variant.checkpoint_url, variant.checkpoint_sha256, subdir="checkpoints")
        return Source(variant.checkpoint_url, tarball, variant.checkpoint_sha256 or download.recorded_sha256(tarball))
    path = Path(checkpoint).expanduser()
    if not path.exists() and not Path(f"{path}.index").is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: not a tarball, a folder, or a prefix with {path}.index")
    return Source(str(path.resolve()), path, download.sha256_of(path) if path.is_file() else None)


def spec_for(name: str, *, opset: int = DEFAULT_OPSET, logits: bool = False, nchw: bool = False,
             preprocessing: str = preprocessing_module.DEFAULT, image_input: bool = False,
             weights_source: str = "ema", batch: Optional[int] = None, float16: bool = False) -> ArtifactSpec:
    """The spec of the artifact `convert` makes of catalogue variant `name` with these options."""
    variant = catalogue.get_variant(name)
    if variant.quantized and (nchw or float16 or weights_source != "ema"):
        raise ValueError(f"{variant.name}: quantized models are converted from Google's .tflite as they are; "
                         "random weights, NCHW, float16 and the weights source apply to float checkpoints only")
    if weights_source not in ("ema", "raw"):
        raise ValueError(f"weights_source must be 'ema' or 'raw', got {weights_source!r}")
    return ArtifactSpec.of_variant(name, preprocessing=preprocessing_module.check_name(preprocessing),
                                   image_input=image_input, layout="NCHW" if nchw else "NHWC",
                                   output="logits" if logits else "probabilities", opset=opset, batch=batch,
                                   float16=float16)


def convert(spec: ArtifactSpec, output_dir, source: Source, *, weights_source: str = "ema",
            images=None) -> ExportReport:
    """Write `spec`'s artifact, made from `source`, into `output_dir` and record it in its manifest
    (``download.artifacts_dir()`` is the runtime's cache, where `OnnxMobileNet(name)` looks first).
    `images`: preprocessed real images for the parity gate, as the network takes them (float32, or
    uint8 pixels for quantized variants)."""
    variant = catalogue.get_variant(spec.variant)
    output_dir = Path(output_dir)
    if variant.quantized:
        maker = TfliteGraph(variant, source.path, source.location, source.sha256)
    else:
        maker = KerasGraph(*_keras_model(variant, source, weights_source))
    report = export_artifact(maker, spec, spec.path_in(output_dir), images)
    record_in_manifest(output_dir, spec.name, manifest_entry(report.record, report.sha256, report.size, report.census))
    if output_dir.resolve() == download.artifacts_dir().resolve():
        download.record_sha256(Path(report.path), report.sha256)  # the cache checks it on every load
    return report


def _keras_model(variant, source: Source, weights_source: str) -> tuple:
    """(the Keras model of a float variant, the variant, the provenance of its weights)."""
    if source.location is None:
        return untrained_variant(variant.name, source.seed), variant, Weights.untrained(source.seed)
    model = build_variant(variant.name, weights=source.path, weights_source=weights_source, sha256=source.sha256)
    report = model.checkpoint_report
    return model, variant, Weights(source=source.location, sha256=source.sha256, weights_source=weights_source,
                                   variables_from_ema=len(report.from_ema), variables_raw=len(report.from_raw))


def is_up_to_date(spec: ArtifactSpec, output_dir, source: Source, weights_source: str = "ema") -> bool:
    """Whether `spec`'s artifact made from `source` is in `output_dir` already: the file matches its
    manifest's SHA-256, and its record states the same spec, the same source (the tarball's SHA-256,
    or the same random seed), the same weights source and this version of onnx-mobilenets."""
    path, manifest = spec.path_in(output_dir), Path(output_dir) / MANIFEST
    if not path.is_file() or not manifest.is_file():
        return False
    try:
        _, sha256 = manifest_lookup(manifest.read_bytes(), manifest, spec)
        if sha256 != download.sha256_of(path):
            return False
        record = read_record(path)
    except (KeyError, ValueError, OnnxMobileNetsError):
        return False
    weights = record.weights
    if record.spec != spec or record.versions.get("onnx_mobilenets") != onnx_mobilenets.__version__:
        return False
    if source.location is None:
        return weights.random and weights.seed == source.seed
    if weights.random or (weights.weights_source or "ema") != weights_source:
        return False
    return weights.sha256 == source.sha256


def convert_variant(name: str, output_dir, *, checkpoint=None, random_weights: bool = False, seed: int = 0,
                    opset: int = DEFAULT_OPSET, weights_source: str = "ema", logits: bool = False, nchw: bool = False,
                    images=None, preprocessing: str = preprocessing_module.DEFAULT,
                    image_input: bool = False, batch: Optional[int] = None, float16: bool = False) -> ExportReport:
    """Convert catalogue variant `name` into `output_dir` (`convert` with the spec these options
    make, from the source `fetch_source` fetches). With `image_input` the preprocessing
    (`preprocessing`, "default" or "slim") is inside the model, whose input is the decoded image,
    and the file is ``NAME-image.onnx`` (``NAME-image-slim.onnx``; a tensor artifact recording
    "slim" is ``NAME-slim.onnx``); with `batch` N its input takes exactly N (``NAME-bN.onnx``); with
    `float16` the network computes in float16 (``NAME-fp16.onnx``). Random
    weights make an untrained model (the metadata says so loudly)."""
    spec = spec_for(name, opset=opset, logits=logits, nchw=nchw, preprocessing=preprocessing, image_input=image_input,
                    weights_source=weights_source, batch=batch, float16=float16)
    source = fetch_source(catalogue.get_variant(name), checkpoint, random_weights, seed)
    return convert(spec, output_dir, source, weights_source=weights_source, images=images)
