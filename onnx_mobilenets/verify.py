"""`onnx-mobilenets verify`: do the runtimes on this machine compute what the converter computed?

For each artifact, the deterministic golden inputs (`onnx_mobilenets.parity`) are run on every
onnxruntime provider that binds here (CPU, and CUDA when it works) and compared with a reference:
the Keras model rebuilt from the artifact's recorded weights when the [convert] extra is installed,
else the golden outputs the converter stored in the artifact's metadata. Tolerances are those of
the conversion gate: probabilities within 1e-5 (logits 1e-4), identical top-1.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import DownloadError
from .parity import LOGIT_TOLERANCE, PROBABILITY_TOLERANCE, agreement, parity_inputs

logger = logging.getLogger(__name__)


@dataclass
class VerifyRow:
    artifact: str  # variant name
    runtime: str  # e.g. "onnxruntime-CPU"
    reference: str  # "keras" or "golden"
    max_abs_diff: Optional[float]
    top1_agreement: Optional[float]
    passed: bool
    note: str = ""


def golden_of(metadata: dict):
    """(inputs NHWC float32, reference outputs, output kind) recorded in an artifact's metadata."""
    golden = json.loads(metadata["golden"])
    prep = json.loads(metadata["preprocessing"])
    values = np.frombuffer(base64.b64decode(golden["values_base64"]), dtype=golden["dtype"]).reshape(golden["shape"])
    inputs = parity_inputs(int(metadata["resolution"]), count=golden["count"], seed=golden["seed"],
                           scale=prep["scale"], offset=prep["offset"])
    return inputs, values.astype(np.float32), golden["output"]


def keras_reference(metadata: dict, inputs: np.ndarray) -> np.ndarray:
    """The artifact's network rebuilt in Keras from its recorded weights, run on `inputs`."""
    from .conversion import build_variant
    from .conversion.export import _logits_model
    from .conversion.weights import randomize_weights

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
    network = _logits_model(model) if metadata["output"] == "logits" else model
    return np.asarray(network(inputs, training=False), np.float32)


def open_session(path: Path, provider: str):
    """A session on the raw artifact on one onnxruntime provider (checked to really bind)."""
    import onnxruntime as ort

    from .runtime.providers import create_session

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return create_session(str(path), provider, session_options=options)


def runtime_outputs(session, inputs: np.ndarray, layout: str) -> tuple:
    """(outputs, bound provider name) of `session` on the NHWC `inputs`."""
    feed = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2)) if layout == "NCHW" else inputs
    name = session.get_inputs()[0].name
    return session.run(None, {name: feed})[0], session.get_providers()[0]


def runtimes_here() -> list:
    """The providers to check: the CPU always, CUDA when onnxruntime offers it."""
    import onnxruntime as ort

    return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])


def compare(reference: np.ndarray, outputs: np.ndarray, kind: str) -> tuple:
    """(max abs difference, top-1 agreement, passed) with the conversion gate's tolerances."""
    tolerance = LOGIT_TOLERANCE if kind == "logits" else PROBABILITY_TOLERANCE
    diff, top1, mismatches = agreement(reference, outputs, tolerance)
    return diff, top1, diff <= tolerance and not mismatches


def verify_artifact(path: Path, use_keras: bool = True) -> list:
    """Rows for one artifact: each runtime here against the reference, plus Keras against the golden record."""
    path = Path(path)
    cpu = open_session(path, "cpu")  # reads the metadata, then runs the CPU row
    meta = cpu.get_modelmeta().custom_metadata_map
    if "golden" not in meta or "variant" not in meta:
        raise ValueError(f"{path} carries no golden outputs: not an artifact made by onnx-mobilenets")
    name = meta["variant"]
    inputs, golden, kind = golden_of(meta)
    layout = json.loads(meta["preprocessing"])["layout"]
    rows = []
    reference, reference_name = golden, "golden"
    if use_keras:
        try:
            reference, reference_name = keras_reference(meta, inputs), "keras"
        except ImportError:
            logger.info("the [convert] extra is not installed: comparing with the golden outputs")
        except (OSError, DownloadError) as e:  # checkpoint not here, or not downloadable (offline)
            rows.append(VerifyRow(name, "keras", "golden", None, None, True, f"skipped: {e}"))
        else:
            diff, top1, ok = compare(golden, reference, kind)
            rows.append(VerifyRow(name, "keras", "golden", diff, top1, ok))
    for provider in runtimes_here():
        try:
            session = cpu if provider == "cpu" else open_session(path, provider)
            outputs, bound = runtime_outputs(session, inputs, layout)
        except Exception as e:  # a provider that cannot run here is a failed row, not a crash
            rows.append(VerifyRow(name, f"onnxruntime-{provider.upper()}", reference_name, None, None, False,
                                  f"could not run: {str(e).splitlines()[0][:120]}"))
            continue
        diff, top1, ok = compare(reference, outputs, kind)
        label = "onnxruntime-" + bound.replace("ExecutionProvider", "")
        rows.append(VerifyRow(name, label, reference_name, diff, top1, ok))
    return rows


def format_table(rows) -> str:
    lines = ["| artifact | runtime | reference | max abs diff | top-1 agreement | result |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.2e}"
        top1 = "-" if r.top1_agreement is None else f"{r.top1_agreement:.0%}"
        result = ("PASS" if r.passed else "FAIL") + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.artifact} | {r.runtime} | {r.reference} | {diff} | {top1} | {result} |")
    return "\n".join(lines)
