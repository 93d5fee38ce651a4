"""`onnx-mobilenets verify`: do the engines on this machine compute what the converter computed?

For each artifact, the deterministic golden inputs (`onnx_mobilenets.parity`) are run on every engine
of `onnx_mobilenets.cli.engines` (onnxruntime CPU, its CUDA and TensorRT providers where they bind,
OpenVINO and OpenCV where installed) and compared with a reference: the Keras model rebuilt from the
artifact's recorded weights when the [convert] extra is installed, else the logits the converter
stored in the artifact's metadata. The bound is the float32 error bound of `parity.Tolerance` for
the artifact's network, on CPUs as in the conversion gate and widened on GPUs for cuDNN's and
TensorRT's choice of algorithms (float16 artifacts: the float16 bound); each row reports the
difference, the bound and the headroom. An ORT format file (``NAME.ort``, `convert --ort`) runs in
onnxruntime only, and gets one row more: it must give its ``NAME.onnx``'s outputs exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from onnx_mobilenets import catalogue, download
from onnx_mobilenets.artifact import (
    ArtifactRecord,
    ArtifactSpec,
    Judgement,
    judge,
    ort_format_difference,
    ort_format_source,
    read_record,
)
from onnx_mobilenets.conversion.native_logs import native_logs_filtered
from onnx_mobilenets.errors import DownloadError, InvalidModelError
from onnx_mobilenets.model_bytes import is_ort_format
from onnx_mobilenets.preprocessing import network_input
from onnx_mobilenets.runtime.artifacts import cached_path
from onnx_mobilenets.tables import markdown_table

from .engines import TF32_OVERRIDE_ENV, engines_here

logger = logging.getLogger(__name__)


@dataclass
class VerifyRow:
    artifact: str  # the artifact's name (`ArtifactSpec.name`): the variant, and -image, -slim
    runtime: str  # e.g. "onnxruntime-CPU", "OpenVINO-CPU"
    version: str  # of that runtime
    reference: str  # "keras" or "golden"
    output: str  # what was compared: "logits", "probabilities" or "quantized logits"
    max_abs_diff: Optional[float]
    bound: Optional[float]  # the error bound at the sample closest to it
    headroom: Optional[float]  # bound / difference at that sample; None when identical or not run
    top1_agreement: Optional[float]
    status: str  # "pass", "fail" or "skipped"
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    @classmethod
    def judged(cls, name, runtime, version, reference, output, judgement: Judgement, note="") -> "VerifyRow":
        return cls(name, runtime, version, reference, output, judgement.max_difference, judgement.bound,
                   judgement.headroom, judgement.top1_agreement, "pass" if judgement.passed else "fail", note)

    @classmethod
    def not_run(cls, name, runtime, version, reference, output, status, note) -> "VerifyRow":
        return cls(name, runtime, version, reference, output, None, None, None, None, status, note)


def verify_artifact(path: Path, use_keras: bool = True, engines=None) -> list:
    """Rows for one artifact: Keras against the golden record (float artifacts), then each engine
    on the golden inputs, judged (`onnx_mobilenets.artifact.judge`) against the reference: Keras
    rebuilt from the recorded weights where it can be, else the golden record. `engines`: those to
    run it on, kept open for the caller's next artifact; by default every engine here, closed after."""
    if engines is None:
        engines = engines_here()
        try:
            return verify_artifact(path, use_keras, engines)
        finally:  # the independent engines' child processes end here, not whenever Python collects them
            for engine in engines:
                engine.close()
    path = Path(path)
    data = path.read_bytes()
    ort_format = is_ort_format(data)
    record = read_record(data, path)
    if record.golden is None:
        raise InvalidModelError(f"{path} carries no golden outputs: not an artifact made by onnx-mobilenets")
    inputs = record.golden_inputs()
    feeds = record.feeds(inputs)
    rows, reference, reference_name = [], record.golden.values, "golden"
    if record.quantization is None and use_keras:
        rows, reference, reference_name = _keras_reference(record, inputs)
    output = "quantized logits" if record.quantization else record.spec.output
    for engine in engines:
        def judged(outputs, engine=engine) -> VerifyRow:
            judgement = judge(record, outputs, reference=reference, device=engine.device, exact=engine.exact)
            # float rows: the engine's settings; quantized rows: how many logits are TFLite's, and why not
            note = engine.note if record.quantization is None else "; ".join([judgement.note, *judgement.problems])
            return VerifyRow.judged(record.name, engine.name, engine.version(), reference_name, output, judgement,
                                    note)

        if ort_format and not engine.reads_ort_format:
            rows.append(VerifyRow.not_run(record.name, engine.name, "", reference_name, output, "skipped",
                                          f"the ORT format is onnxruntime's own: {engine.label} reads the .onnx file"))
            continue
        rows.append(_engine_row(engine, path, feeds, record, reference_name, output, judged))
    if ort_format:
        rows.append(_ort_format_row(path, data, record, record.spec.output))
    return rows


def _ort_format_row(path: Path, data: bytes, record: ArtifactRecord, output: str) -> VerifyRow:
    """An ORT format file against the .onnx file beside it, both in onnxruntime on the CPU:
    identical outputs required (`onnx_mobilenets.artifact.ort_format_difference`)."""
    import onnxruntime as ort

    source = ort_format_source(path)
    runtime = "onnxruntime-CPU (ORT format)"
    if not source.is_file():
        return VerifyRow.not_run(record.name, runtime, ort.__version__, source.name, output, "skipped",
                                 f"no {source.name} beside it to compare with")
    difference = ort_format_difference(data, source.read_bytes())
    return VerifyRow(record.name, runtime, ort.__version__, source.name, output, difference, 0.0, None, None,
                     "pass" if difference == 0.0 else "fail", "identical outputs required")


def _keras_reference(record: ArtifactRecord, inputs) -> tuple:
    """([Keras' row], the reference logits, its name): Keras rebuilt from the recorded weights when
    TensorFlow is here and the checkpoint can be had (its row checks it against the golden record),
    else the golden record."""
    try:
        import tensorflow as tf
    except ImportError:
        logger.info("the [convert] extra is not installed: comparing with the golden outputs")
        return [], record.golden.values, "golden"
    from onnx_mobilenets.conversion import keras_reference

    if record.preprocessing.image_input:  # Keras takes what the preprocessing's NumPy twin makes of the images
        twin = dataclasses.replace(record.preprocessing, layout="NHWC", image_input=False)
        inputs = np.stack([network_input(image, record.resolution, twin) for image in inputs])
    try:
        reference = keras_reference(record, inputs)
    except (OSError, DownloadError) as e:  # checkpoint not here, or not downloadable (offline)
        return [VerifyRow.not_run(record.name, "keras", tf.__version__, "golden", "logits", "skipped", f"{e}")], \
            record.golden.values, "golden"
    judgement = judge(record, reference, output="logits")
    return [VerifyRow.judged(record.name, "keras", tf.__version__, "golden", "logits", judgement)], reference, "keras"


def _engine_row(engine, path, feeds, record, reference_name, output, judged) -> VerifyRow:
    """One engine's row: skipped with the reason when it cannot run here; failed when it fails or
    crashes on the file; else what `judged` makes of its outputs. An engine that does not claim to
    run image-in artifacts (dynamic shapes) is not failed on one: its row is skipped, saying what it
    did (refused it, crashed, or computed something else: the numbers stay in the row)."""
    reason = engine.unavailable()
    if reason:
        return VerifyRow.not_run(record.name, engine.name, "", reference_name, output, "skipped", reason)
    unclaimed = record.preprocessing.image_input and not engine.runs_image_input
    try:
        row = judged(engine.run(path, feeds))
    except Exception as e:  # an engine that fails on the file is a row, never the end of verify
        message = f"could not run: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"
        row = VerifyRow.not_run(record.name, engine.name, engine.version(), reference_name, output, "fail", message)
    if unclaimed and row.status == "fail":
        row.status = "skipped"
        what = row.note or "wrong outputs"
        row.note = f"{engine.label} does not run image-in artifacts (dynamic shapes) right: {what}"
    return row


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
    if args.mobile:
        return _mobile(targets, args.json)
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


def _mobile(targets: list, as_json: bool) -> int:
    """The phone execution providers' share of each artifact (`onnx_mobilenets.cli.mobile`)."""
    from .mobile import mobile_usability

    rows, dynamic = [], set()
    for path in targets:
        if not path.is_file():
            raise FileNotFoundError(f"artifact {path} does not exist")
        if is_ort_format(path.read_bytes()):
            raise ValueError(f"verify --mobile checks .onnx files (onnxruntime's checker reads ONNX): pass "
                             f"{ort_format_source(path).name}, the .ort file's source")
        if read_record(path).spec.batch is None:
            dynamic.add(path.stem)
        rows.extend(mobile_usability(path))
    if as_json:
        print(json.dumps([{**asdict(r), "coverage": r.coverage} for r in rows], indent=1))
        return 0
    print(markdown_table(["artifact", "execution provider", "supported nodes", "partitions", "worth trying"],
                         [[r.artifact, r.execution_provider, f"{r.supported}/{r.nodes} ({r.coverage:.0%})",
                           r.partitions, r.verdict] for r in rows]))
    held_back = sorted({r.artifact for r in rows if r.artifact in dynamic and r.supported < r.nodes})
    if held_back:
        print(f"\n{', '.join(held_back)}: a dynamic batch keeps nodes off NNAPI and CoreML; "
              "`onnx-mobilenets convert NAME --batch 1` makes the input static.")
    return 0


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
    path = cached_path(ArtifactSpec.of_variant(name))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not in the cache ({path}); convert it or pass a path")
    return path
