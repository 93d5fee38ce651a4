"""The conversion pipeline behind `onnx-mobilenets convert`: build, load, export, record.

Writes ``DIR/NAME.onnx`` and keeps ``DIR/manifest.json`` (file, SHA-256, size, opset, parity) up to
date; both are written atomically, so a failure leaves neither half-written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from onnx_mobilenets import catalogue, download
from onnx_mobilenets._files import atomic_write

from .export import DEFAULT_OPSET, ExportReport, export_onnx

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RANDOM_WEIGHTS_WARNING = "UNTRAINED RANDOM WEIGHTS: not an ImageNet classifier; for tests and benchmarks only"


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
) -> ExportReport:
    """Convert catalogue variant `name` into ``output_dir/NAME.onnx`` and record it in the manifest
    (``download.artifacts_dir()`` is the runtime's cache, where `OnnxMobileNet(name)` looks first).

    Weights: the official checkpoint (downloaded, verified, cached), `checkpoint` (a local tarball,
    folder or prefix), or with `random_weights` an untrained model (the metadata says so loudly).
    """
    from . import build_variant
    from .weights import randomize_weights

    variant = catalogue.get_variant(name)
    if random_weights and checkpoint is not None:
        raise ValueError("choose either a checkpoint or random weights, not both")
    if random_weights:
        model = build_variant(variant.name, weights=None)
        randomize_weights(model, seed)
        provenance = {"random": True, "seed": seed, "warning": RANDOM_WEIGHTS_WARNING}
    else:
        model = build_variant(variant.name, weights=checkpoint or variant.name, weights_source=weights_source)
        report = model.checkpoint_report
        provenance = {
            "random": False,
            "source": variant.checkpoint_url if checkpoint is None else str(Path(checkpoint).resolve()),
            "sha256": report.sha256,
            "weights_source": weights_source,
            "variables_from_ema": len(report.from_ema),
            "variables_raw": len(report.from_raw),
        }
    output_dir = Path(output_dir)
    result = export_onnx(model, output_dir / f"{variant.name}.onnx", opset, logits=logits, nchw=nchw,
                         images=images, variant=variant, weights=provenance)
    record_in_manifest(output_dir, variant.name, result, provenance)
    if output_dir.resolve() == download.artifacts_dir().resolve():
        download.record_sha256(Path(result.path), result.sha256)  # the cache checks it on every load
    return result


def record_in_manifest(output_dir: Path, name: str, result: ExportReport, provenance: dict) -> Path:
    path = Path(output_dir) / MANIFEST
    manifest = read_manifest(path) if path.exists() else {"format": 1, "artifacts": {}}
    manifest["artifacts"][name] = {
        "file": Path(result.path).name,
        "sha256": result.sha256,
        "size": result.size,
        "opset": result.opset,
        "output": result.output,
        "layout": result.layout,
        "random_weights": bool(provenance.get("random")),
        "parity": result.parity,
        "census": result.census,
    }
    manifest["artifacts"] = dict(sorted(manifest["artifacts"].items()))
    atomic_write(path, (json.dumps(manifest, indent=1) + "\n").encode())
    return path


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a valid manifest: {e}") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), dict):
        raise ValueError(f"{path} is not an onnx-mobilenets manifest (no 'artifacts' table)")
    return manifest
