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
from onnx_mobilenets.contract import golden_of
from onnx_mobilenets.conversion.native_logs import native_logs_filtered
from onnx_mobilenets.errors import DownloadError
from onnx_mobilenets.parity import (
    QUANT_MAX_STEPS,
    QUANT_MIN_IDENTICAL,
    SMALLEST_PROBABILITY,
    check,
    check_quantized,
    tolerance_for,
)
from onnx_mobilenets.runtime.artifacts import cached_artifact
from onnx_mobilenets.tables import markdown_table

from .engines import TF32_OVERRIDE_ENV, OnnxRuntime, engines_here

logger = logging.getLogger(__name__)


@dataclass
class VerifyRow:
    artifact: str  # variant name
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
    """Logits of the artifact's network rebuilt in Keras from its recorded weights, on `inputs`."""
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
    """Rows for one artifact: Keras against the golden record, then each engine against the reference."""
    path = Path(path)
    engines = engines_here() if engines is None else engines
    cpu = next((e for e in engines if isinstance(e, OnnxRuntime) and e.provider == "cpu"), OnnxRuntime("cpu"))
    meta = cpu.session(path).get_modelmeta().custom_metadata_map  # the CPU row reuses this session
    if "golden" not in meta or "variant" not in meta or "family" not in meta:
        raise ValueError(f"{path} carries no golden outputs: not an artifact made by onnx-mobilenets")
    name, family, output = meta["variant"], meta["family"], meta["output"]
    inputs, golden = golden_of(meta)
    layout = json.loads(meta["preprocessing"])["layout"]
    if "quantization" in meta:
        return _verify_quantized(path, name, output, json.loads(meta["quantization"]), inputs, golden, engines)
    rows = []
    reference, reference_name = golden, "golden"
    if use_keras:
        try:
            import tensorflow as tf

            version = tf.__version__
            reference, reference_name = keras_reference(meta, inputs), "keras"
        except ImportError:
            logger.info("the [convert] extra is not installed: comparing with the golden outputs")
        except (OSError, DownloadError) as e:  # checkpoint not here, or not downloadable (offline)
            rows.append(VerifyRow(name, "keras", version, "golden", "logits", None, None, None, None, "skipped",
                                  f"{e}"))
        else:
            agreement = check(golden, reference, "logits", tolerance_for(family, "cpu"))
            rows.append(_row(name, "keras", version, "golden", "logits", agreement))
    for engine in engines:
        reason = engine.unavailable()
        if reason:
            rows.append(
                VerifyRow(name, engine.name, "", reference_name, output, None, None, None, None, "skipped", reason)
            )
            continue
        try:
            outputs = engine.run(path, inputs, layout)
        except Exception as e:  # an engine that fails on the file is a failed row, not a crash
            rows.append(VerifyRow(name, engine.name, engine.version(), reference_name, output, None, None, None, None,
                                  "fail", f"could not run: {str(e).splitlines()[0][:160]}"))
            continue
        agreement = check(reference, outputs, output, tolerance_for(family, engine.device))
        rows.append(_row(name, engine.name, engine.version(), reference_name, output, agreement, engine.note))
    return rows


def _verify_quantized(path, name, output, quantization, pixels, golden, engines) -> list:
    """Rows for a quantized artifact: onnxruntime's CPU against TFLite's answers, step for step. Other
    engines and devices are not held to that rule: they compute QDQ graphs with their own rounding,
    as TFLite's own builtin kernels do (38-60 % identical to XNNPACK on the fixtures)."""
    rows = []
    for engine in engines:
        reason = engine.unavailable()
        if not reason and not (isinstance(engine, OnnxRuntime) and engine.provider == "cpu"):
            reason = ("not held to quantized parity, which is TFLite's XNNPACK arithmetic step for step: "
                      "onnxruntime's CPU QDQ kernels follow it, other engines and devices round their own way")
        if reason:
            rows.append(
                VerifyRow(
                    name, engine.name, "", "golden", "quantized logits", None, None, None, None, "skipped", reason
                )
            )
            continue
        try:
            ours = quantized_logits(engine.run(path, pixels, "NHWC"), output, quantization, golden)
        except Exception as e:  # an engine that fails on the file is a failed row, not a crash
            rows.append(VerifyRow(name, engine.name, engine.version(), "golden", "quantized logits", None, None, None,
                                  None, "fail", f"could not run: {str(e).splitlines()[0][:160]}"))
            continue
        agreement = check_quantized(golden, ours)
        note = (f"{agreement.identical:.1%} identical (at least {QUANT_MIN_IDENTICAL:.0%} required)"
                + ("; " + "; ".join(agreement.problems()) if not agreement.passed else ""))
        rows.append(VerifyRow(name, engine.name, engine.version(), "golden", "quantized logits",
                              float(agreement.max_steps), float(QUANT_MAX_STEPS), None, agreement.top1_agreement,
                              "pass" if agreement.passed else "fail", note))
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
    rows = []
    with native_logs_filtered():  # the Keras reference imports TensorFlow
        for path in targets:
            if not path.is_file():
                raise FileNotFoundError(f"artifact {path} does not exist")
            rows.extend(verify_artifact(path, use_keras=not args.no_keras))
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
