"""The conversion pipeline behind `onnx-mobilenets convert`: one catalogue variant, float or uint8,
into ``DIR/NAME.onnx``, recorded in ``DIR/manifest.json``.

Float variants: the Keras model of the official checkpoint (downloaded, verified, cached), of a
local checkpoint, or of random weights, exported by `export_onnx`. Quantized variants: Google's
`.tflite` from its release tarball, exported by `quantized.export_quantized`. Both end in the same
tail (`artifact.write_artifact`); both files are written atomically, so a failure leaves neither
half-written.
"""

from __future__ import annotations

import json
from pathlib import Path

from onnx_mobilenets import __version__, catalogue, contract, download
from onnx_mobilenets import preprocessing as preprocessing_module
from onnx_mobilenets.errors import OnnxMobileNetsError
from onnx_mobilenets.model_bytes import read_metadata

from .artifact import DEFAULT_OPSET, ExportReport, manifest_entry
from .export import export_onnx
from .quantized import export_quantized


def convert_variant(
    name: str,
    output_dir,
    *,
    checkpoint=None,
    random_weights: bool = False,
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    weights_source: str = "ema",
    logits: bool = False,
    nchw: bool = False,
    images=None,
    preprocessing: str = preprocessing_module.DEFAULT,
    image_input: bool = False,
) -> ExportReport:
    """Convert catalogue variant `name` into ``output_dir/NAME.onnx`` and record it in the manifest
    (``download.artifacts_dir()`` is the runtime's cache, where `OnnxMobileNet(name)` looks first).
    With `image_input` the preprocessing (`preprocessing`, "default" or "slim") is inside the model,
    whose input is the decoded image, and the file is ``NAME-image.onnx`` (``NAME-image-slim.onnx``;
    a tensor artifact recording "slim" is ``NAME-slim.onnx``).

    Weights: the official checkpoint or `.tflite` tarball (downloaded, verified, cached),
    `checkpoint` (a local tarball, folder or prefix), or for float variants, with `random_weights`,
    an untrained model (the metadata says so loudly). `images`: preprocessed real images for the
    parity gate, as the network takes them (float32, or uint8 pixels for quantized variants).
    """
    variant = catalogue.get_variant(name)
    if random_weights and checkpoint is not None:
        raise ValueError("choose either a checkpoint or random weights, not both")
    output_dir = Path(output_dir)
    artifact = contract.artifact_name(variant.name, image_input, preprocessing)
    path = output_dir / f"{artifact}.onnx"
    inputs = dict(preprocessing=preprocessing, image_input=image_input)
    if variant.quantized:
        if random_weights or nchw or weights_source != "ema":
            raise ValueError(f"{variant.name}: quantized models are converted from Google's .tflite as they are; "
                             "random weights, NCHW and the weights source apply to float checkpoints only")
        tarball, source = _release_tarball(variant, checkpoint)
        report = export_quantized(variant, tarball, source, path, opset, logits=logits, images=images, **inputs)
    else:
        model, provenance = _keras_model(variant, checkpoint, random_weights, seed, weights_source)
        report = export_onnx(model, path, opset, logits=logits, nchw=nchw, images=images, variant=variant,
                             weights=provenance, **inputs)
    contract.record_in_manifest(output_dir, artifact, manifest_entry(report))
    if output_dir.resolve() == download.artifacts_dir().resolve():
        download.record_sha256(path, report.sha256)  # the cache checks it on every load
    return report


def _keras_model(variant, checkpoint, random_weights: bool, seed: int, weights_source: str) -> tuple:
    """The Keras model of a float variant and the provenance of its weights."""
    from . import build_variant
    from .weights import randomize_weights

    if random_weights:
        model = build_variant(variant.name, weights=None)
        randomize_weights(model, seed)
        return model, {"random": True, "seed": seed, "warning": contract.RANDOM_WEIGHTS_WARNING}
    model = build_variant(variant.name, weights=checkpoint or variant.name, weights_source=weights_source)
    report = model.checkpoint_report
    return model, {
        "random": False,
        "source": variant.checkpoint_url if checkpoint is None else str(Path(checkpoint).resolve()),
        "sha256": report.sha256,
        "weights_source": weights_source,
        "variables_from_ema": len(report.from_ema),
        "variables_raw": len(report.from_raw),
    }


def _release_tarball(variant, checkpoint) -> tuple:
    """(the tarball holding a quantized variant's .tflite, where it came from)."""
    if checkpoint is None:
        tarball = download.fetch(variant.checkpoint_url, variant.checkpoint_sha256, subdir="checkpoints")
        return tarball, variant.checkpoint_url
    return Path(checkpoint), str(Path(checkpoint).resolve())


def is_up_to_date(name: str, output_dir, *, checkpoint=None, random_weights: bool = False, seed: int = 0,
                  opset: int = DEFAULT_OPSET, weights_source: str = "ema", logits: bool = False, nchw: bool = False,
                  preprocessing: str = preprocessing_module.DEFAULT, image_input: bool = False) -> bool:
    """Whether the artifact `convert_variant` would write with these arguments is in `output_dir`
    already: the file matches its manifest's SHA-256, and its metadata records the same source (the
    tarball's SHA-256, or the same random seed), the same options (opset, layout, output,
    preprocessing, image input, weights source) and this version of onnx-mobilenets. The official
    tarball is fetched (from the cache when it is there) to know its SHA-256."""
    variant = catalogue.get_variant(name)
    output_dir = Path(output_dir)
    artifact = contract.artifact_name(variant.name, image_input, preprocessing)
    path, manifest = output_dir / f"{artifact}.onnx", output_dir / contract.MANIFEST
    if not path.is_file() or not manifest.is_file():
        return False
    entry = contract.parse_manifest(manifest.read_bytes(), manifest).get(artifact)
    if not isinstance(entry, dict) or entry.get("sha256") != download.sha256_of(path):
        return False
    metadata = read_metadata(path.read_bytes())
    try:
        recorded = contract.Preprocessing.from_json(metadata["preprocessing"])
        weights, versions = json.loads(metadata["weights"]), json.loads(metadata["versions"])
        options = (metadata["opset"], metadata["output"], recorded.layout, recorded.name, recorded.image_input)
    except (KeyError, ValueError, OnnxMobileNetsError):
        return False
    wanted = (str(opset), "logits" if logits else "probabilities", "NCHW" if nchw else "NHWC", preprocessing,
              image_input)
    if options != wanted or versions.get("onnx_mobilenets") != __version__:
        return False
    if random_weights:
        return weights.get("random") is True and weights.get("seed") == seed
    if weights.get("random") or weights.get("weights_source", "ema") != weights_source:
        return False
    return weights.get("sha256") == _source_sha256(variant, checkpoint)


def _source_sha256(variant, checkpoint):
    """The SHA-256 of the tarball a conversion reads (None for a checkpoint folder or prefix)."""
    if checkpoint is None:
        return download.sha256_of(download.fetch(variant.checkpoint_url, variant.checkpoint_sha256))
    path = Path(checkpoint)
    return download.sha256_of(path) if path.is_file() else None
