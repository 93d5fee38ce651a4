"""CUDA (or TensorRT) vs CPU for MobileNet artifacts: numeric parity against the rule `verify` applies,
and latency, as a table. For float, uint8 and image-in artifacts alike.

Run it on a machine with an NVIDIA GPU and onnxruntime-gpu:

    python tools/gpu_check.py ARTIFACT.onnx [ARTIFACT.onnx ...] [--candidate cuda|tensorrt] [--json FILE]

For each artifact, each provider runs the artifact's golden inputs and is judged as `verify` judges
it, against the golden record: a float artifact within the float32 bound (10x wider on GPUs, for
cuDNN's and TensorRT's choice of algorithms: `parity.tolerance_for(family, "gpu")`), a quantized one
step for step on the CPU and within `parity.OTHER_ENGINE` on a GPU. The table shows the largest
difference, the bound and the headroom, top-1 agreement, and median latency at batch 1 and 32. The
first run on a new GPU thus shows how much of the bound real hardware uses.
Exit status: 0 all pass, 1 a parity failure, 2 a provider is unavailable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from onnx_mobilenets.artifact import judge, read_record
from onnx_mobilenets.cli.engines import TF32_OVERRIDE_ENV, OnnxRuntime
from onnx_mobilenets.parity import parity_images, parity_inputs, parity_pixels
from onnx_mobilenets.tables import markdown_table


def median_latency_ms(session, batch, runs) -> float:
    name = session.get_inputs()[0].name
    session.run(None, {name: batch})  # warm-up (CUDA kernels, cuDNN algorithm choice)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def timing_batch(record, size: int) -> np.ndarray:
    """`size` inputs as the artifact takes them: images of 480x640 for an image-in artifact, the
    parity pixels for a quantized one, the parity inputs otherwise (in the artifact's layout)."""
    contract, R = record.preprocessing, record.resolution
    if contract.image_input:
        image = parity_images(2 * R, count=1, seed=7)[0]
        return np.stack([np.resize(image, (480, 640, 3))] * size)
    if contract.dtype == "uint8":
        return parity_pixels(R, count=size, seed=7)
    batch = parity_inputs(R, count=size, seed=7)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) if contract.layout == "NCHW" else batch


def check_artifact(path, reference: OnnxRuntime, candidate: OnnxRuntime, runs: int) -> list:
    """The two providers' rows for one artifact (each judged against the golden record as `verify`
    judges it), with their latencies."""
    record = read_record(path)
    feeds = record.feeds(record.golden_inputs())
    rows = []
    for engine in (reference, candidate):
        judgement = judge(record, engine.run(path, feeds), device=engine.device, exact=engine.exact)
        row = {"artifact": record.name, "runtime": engine.name, "reference": "golden",
               "output": "quantized logits" if record.quantization else record.spec.output,
               "max_abs_diff": judgement.max_difference, "bound": judgement.bound, "headroom": judgement.headroom,
               "top1_agreement": judgement.top1_agreement,
               "status": "pass" if judgement.passed else "fail",
               "note": "; ".join(n for n in (engine.note, judgement.note, *judgement.problems) if n)}
        for n in (1, 32):
            row[f"ms_batch{n}"] = median_latency_ms(engine.session(path), timing_batch(record, n), runs)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".onnx artifacts")
    parser.add_argument("--reference", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    parser.add_argument("--candidate", default="cuda", choices=("cpu", "cuda", "tensorrt"))
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    os.environ.setdefault(TF32_OVERRIDE_ENV, "0")  # before CUDA starts: TensorRT in float32, as verify runs it
    reference, candidate = OnnxRuntime(args.reference), OnnxRuntime(args.candidate)
    for engine in (reference, candidate):
        reason = engine.unavailable()
        if reason:
            print(f"error: {engine.name}: {reason}", file=sys.stderr)
            return 2
    rows = [row for model in args.models for row in check_artifact(model, reference, candidate, args.runs)]

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    print(markdown_table(
        ("model", "provider", "reference", "compared", "max abs diff", "bound", "headroom", "top-1", "ms b1",
         "ms b32", "result"),
        [[r["artifact"], r["runtime"], r["reference"], r["output"], cell(r["max_abs_diff"], ".2e"),
          cell(r["bound"], ".2e"),
          f"{r['headroom']:.0f}x" if r["headroom"] is not None else "identical" if r["max_abs_diff"] == 0 else "-",
          cell(r["top1_agreement"], ".0%"), f"{r['ms_batch1']:.2f}", f"{r['ms_batch32']:.1f}",
          r["status"].upper() + (f" ({r['note']})" if r["note"] else "")] for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    return 0 if all(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
