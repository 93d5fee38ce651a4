"""`onnx-mobilenets verify`: do the engines on this machine compute what the converter computed?

For each artifact, the deterministic golden inputs (`onnx_mobilenets.parity`) are run on every engine
of `onnx_mobilenets.cli.engines` (onnxruntime CPU, its CUDA and TensorRT providers where they bind,
OpenVINO and OpenCV where installed) and compared with a reference: the Keras model rebuilt from the
artifact's recorded weights when the [convert] extra is installed, else the logits the converter
stored in the artifact's metadata. The bound is the float32 error bound of `parity.Tolerance` for
the artifact's network, on CPUs as in the conversion gate and widened on GPUs for cuDNN's and
TensorRT's choice of algorithms; each row reports the difference, the bound and the headroom.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import catalogue, download
from onnx_mobilenets.contract import Preprocessing, artifact_name, check_metadata, golden_of
from onnx_mobilenets.conversion.native_logs import native_logs_filtered
from onnx_mobilenets.errors import DownloadError, InvalidModelError
from onnx_mobilenets.parity import (
    EXACT,
    OTHER_ENGINE,
    SMALLEST_PROBABILITY,
    check,
    check_quantized,
    tolerance_for,
)
from onnx_mobilenets.preprocessing import network_input
from onnx_mobilenets.runtime.artifacts import cached_artifact
from onnx_mobilenets.tables import markdown_table

from .engines import TF32_OVERRIDE_ENV, OnnxRuntime, engines_here

logger = logging.getLogger(__name__)


@dataclass
class VerifyRow:
    artifact: str  # variant name, and -image, -slim for image-in artifacts and slim's (`contract.artifact_name`)
    runtime: str  # e.g. "onnxruntime-CPU", "OpenVINO-CPU"
    version: str  # of that runtime
    reference: str  # "keras" or "golden"
    output: str  # what was compared: "logits" or "probabilities"
    max_abs_diff: Optional[float]
    bound: Optional[float]  # the error bound at the sample closest to it
    headroom: Optional[float]  # bound / difference at that sample; None when identical or not run
    top1_agreement: Optional[float]
    status: str  # "pass", "fail" or "skipped"
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "fail"


def quantized_logits(outputs: np.ndarray, output: str, quantization: dict, reference: np.ndarray) -> np.ndarray:
    """A quantized artifact's outputs as integer quantized logits. Logits: (z / scale + zero point).
    Probabilities fix the logits only up to a constant per sample (log p = z - logsumexp z); that
    constant is the one that puts most of them on the reference's, a whole number of steps."""
    scale, zero_point = quantization["logits_scale"], quantization["logits_zero_point"]
    if output == "logits":
        return np.rint(np.asarray(outputs, np.float64) / scale + zero_point).astype(int)
    relative = np.log(np.maximum(np.asarray(outputs, np.float64), SMALLEST_PROBABILITY)) / scale
    offset = np.median(reference - relative, axis=1, keepdims=True)
    return np.rint(relative + offset).astype(int)


def keras_reference(metadata: dict, inputs: np.ndarray) -> np.ndarray:
    """Logits of the artifact's network rebuilt in Keras from its recorded weights, on NHWC `inputs`."""
    from onnx_mobilenets.conversion import build_variant, logits_model, randomize_weights

    weights = json.loads(metadata["weights"])
    name = metadata["variant"]
    if weights.get("random"):
        model = build_variant(name, weights=None)
        randomize_weights(model, int(weights.get("seed", 0)))
    else:
        source = weights.get("source", "")
        checkpoint = name if "://" in source else source
        if "://" not in source and not Path(source).exists():
            raise FileNotFoundError(f"the checkpoint {source} recorded in the artifact is not on this machine")
        model = build_variant(name, weights=checkpoint, weights_source=weights.get("weights_source", "ema"))
    return np.asarray(logits_model(model)(inputs, training=False), np.float32)


def _row(name, runtime, version, reference, output, agreement, note="") -> VerifyRow:
    return VerifyRow(name, runtime, version, reference, output, agreement.max_abs_diff, agreement.bound,
                     None if math.isinf(agreement.headroom) else agreement.headroom, agreement.top1_agreement,
                     "pass" if agreement.passed else "fail", note)


def verify_artifact(path: Path, use_keras: bool = True, engines=None) -> list:
    """Rows for one artifact: Keras against the golden record, then each engine against the reference.
    The golden inputs are the parity inputs, or for an image-in artifact images of many sizes."""
    path = Path(path)
    engines = engines_here() if engines is None else engines
    cpu = next((e for e in engines if isinstance(e, OnnxRuntime) and e.provider == "cpu"), OnnxRuntime("cpu"))
    meta = dict(cpu.session(path).get_modelmeta().custom_metadata_map)  # the CPU row reuses this session
    check_metadata(meta, path)
    if "golden" not in meta:
        raise InvalidModelError(f"{path} carries no golden outputs: not an artifact made by onnx-mobilenets")
    input_contract = Preprocessing.from_json(meta["preprocessing"])
    inputs, golden = golden_of(meta)
    feeds = _feeds(inputs, input_contract)
    name = artifact_name(meta["variant"], input_contract.image_input, input_contract.name)
    if "quantization" in meta:
        return _verify_quantized(path, name, meta, feeds, golden, engines, input_contract.image_input)
    family, output = meta["family"], meta["output"]
    rows, reference, reference_name = _float_reference(name, meta, inputs, input_contract, golden, use_keras)

    for engine in engines:
        def judge(outputs, engine=engine) -> VerifyRow:
            agreement = check(reference, outputs, output, tolerance_for(family, engine.device))
            return _row(name, engine.name, engine.version(), reference_name, output, agreement, engine.note)

        rows.append(_engine_row(engine, path, feeds, name, reference_name, output, input_contract.image_input, judge))
    return rows


def _feeds(inputs, input_contract) -> list:
    """What the engines are fed: the golden batch in the network's layout, or each golden image."""
    if input_contract.image_input:
        return [image[np.newaxis] for image in inputs]
    if input_contract.layout == "NCHW":
        inputs = inputs.transpose(0, 3, 1, 2)
    return [np.ascontiguousarray(inputs)]


def _float_reference(name: str, meta: dict, inputs, input_contract, golden, use_keras: bool) -> tuple:
    """([Keras' row], the reference logits, its name): Keras rebuilt from the recorded weights when
    TensorFlow is here and the checkpoint can be had (its row checks it against the golden record),
    else the golden record."""
    family = meta["family"]
    if not use_keras:
        return [], golden, "golden"
    try:
        import tensorflow as tf
    except ImportError:
        logger.info("the [convert] extra is not installed: comparing with the golden outputs")
        return [], golden, "golden"
    if input_contract.image_input:  # Keras takes what the preprocessing's NumPy twin makes of the images
        twin = dataclasses.replace(input_contract, layout="NHWC", image_input=False)
        inputs = np.stack([network_input(image, int(meta["resolution"]), twin) for image in inputs])
    try:
        reference = keras_reference(meta, inputs)
    except (OSError, DownloadError) as e:  # checkpoint not here, or not downloadable (offline)
        skipped = VerifyRow(name, "keras", tf.__version__, "golden", "logits", None, None, None, None, "skipped",
                            f"{e}")
        return [skipped], golden, "golden"
    agreement = check(golden, reference, "logits", tolerance_for(family, "cpu"))
    return [_row(name, "keras", tf.__version__, "golden", "logits", agreement)], reference, "keras"


def _engine_row(engine, path, feeds, name, reference_name, output, image_input: bool, judge) -> VerifyRow:
    """One engine's row: skipped with the reason when it cannot run here; failed when it fails or
    crashes on the file; else what `judge` makes of its outputs. An engine that does not claim to
    run image-in artifacts (dynamic shapes) is not failed on one: its row is skipped, saying what it
    did (refused it, crashed, or computed something else: the numbers stay in the row)."""
    reason = engine.unavailable()
    if reason:
        return VerifyRow(name, engine.name, "", reference_name, output, None, None, None, None, "skipped", reason)
    unclaimed = image_input and not engine.runs_image_input
    try:
        row = judge(engine.run(path, feeds))
    except Exception as e:  # an engine that fails on the file is a row, never the end of verify
        message = f"could not run: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"
        row = VerifyRow(name, engine.name, engine.version(), reference_name, output, None, None, None, None, "fail",
                        message)
    if unclaimed and row.status == "fail":
        row.status = "skipped"
        what = row.note or "wrong outputs"
        row.note = f"{engine.label} does not run image-in artifacts (dynamic shapes) right: {what}"
    return row


def _verify_quantized(path, name: str, meta, feeds, golden, engines, image_input: bool) -> list:
    """Rows for a quantized artifact, against TFLite's answers (its golden record): onnxruntime's
    CPU step for step (`parity.EXACT`); other engines and devices, which round their own way, under
    `parity.OTHER_ENGINE`."""
    output = meta["output"]
    quantization = json.loads(meta["quantization"])
    rows = []
    for engine in engines:
        rule = EXACT if isinstance(engine, OnnxRuntime) and engine.provider == "cpu" else OTHER_ENGINE

        def judge(outputs, engine=engine, rule=rule) -> VerifyRow:
            agreement = check_quantized(golden, quantized_logits(outputs, output, quantization, golden), rule)
            note = (f"{agreement.identical:.1%} identical (at least {rule.min_identical:.0%} required)"
                    + ("; " + "; ".join(agreement.problems()) if not agreement.passed else ""))
            return VerifyRow(name, engine.name, engine.version(), "golden", "quantized logits",
                             float(agreement.max_steps), float(rule.max_steps), None, agreement.top1_agreement,
                             "pass" if agreement.passed else "fail", note)

        rows.append(_engine_row(engine, path, feeds, name, "golden", "quantized logits", image_input, judge))
    return rows


def rows_as_json(rows) -> str:
    return json.dumps([asdict(r) for r in rows], indent=1)


def format_table(rows) -> str:
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    return markdown_table(
        [
            "artifact",
            "runtime",
            "version",
            "reference",
            "output",
            "max abs diff",
            "bound",
            "headroom",
            "top-1",
            "result",
        ],
        [
            [
                r.artifact,
                r.runtime,
                r.version or "-",
                r.reference,
                r.output,
                cell(r.max_abs_diff, ".2e"),
                cell(r.bound, ".2e"),
                f"{r.headroom:.0f}x" if r.headroom is not None else ("identical" if r.max_abs_diff == 0 else "-"),
                cell(r.top1_agreement, ".0%"),
                r.status.upper() + (f" ({r.note})" if r.note else ""),
            ]
            for r in rows
        ],
    )


def run(args) -> int:
    # Before anything loads CUDA: TensorRT then computes in float32, which is what verify checks
    # (onnxruntime has no per-session TF32 switch for TensorRT; see onnx_mobilenets.cli.engines).
    os.environ.setdefault(TF32_OVERRIDE_ENV, "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    targets = _targets(args)
    rows, engines = [], engines_here()
    with native_logs_filtered():  # the Keras reference imports TensorFlow
        try:
            for path in targets:
                if not path.is_file():
                    raise FileNotFoundError(f"artifact {path} does not exist")
                rows.extend(verify_artifact(path, use_keras=not args.no_keras, engines=engines))
        finally:  # the engines' processes write to the filtered stderr: they end first
            for engine in engines:
                engine.close()
    print(rows_as_json(rows) if args.json else format_table(rows))
    failed = [r for r in rows if not r.passed]
    if failed and not args.json:
        print(f"\n{len(failed)} of {len(rows)} comparisons FAILED", file=sys.stderr)
    return 1 if failed else 0


def _targets(args) -> list:
    """The artifacts named (cached catalogue names or paths), or with --all every cached one."""
    if args.all:
        targets = sorted(download.artifacts_dir().glob("*.onnx"))
        targets += [Path(t) for t in args.targets if not catalogue.names_a_variant(t)]
        if not targets:
            raise FileNotFoundError(f"no artifacts in the cache ({download.artifacts_dir()}) to verify")
        return targets
    if not args.targets:
        raise ValueError("name artifacts (catalogue names or .onnx paths), or pass --all for the whole cache")
    return [_cached(t) if catalogue.names_a_variant(t) else Path(t) for t in args.targets]


def _cached(name: str) -> Path:
    path = cached_artifact(catalogue.get_variant(name).name)
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in the cache ({path}); convert it or pass a path")
    return path
