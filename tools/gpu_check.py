"""CUDA vs CPU check for MobileNet artifacts: numeric parity against the bound, and latency, as a table.

Run it on a machine with an NVIDIA GPU and onnxruntime-gpu:

    python tools/gpu_check.py artifacts/mobilenet_v2_1.0_224.onnx artifacts/mobilenet_v1_1.0_224.onnx

For each artifact it runs the golden inputs (`onnx_mobilenets.parity`) on the reference provider
(CPU) and the candidate (CUDA, TF32 off as the runtime runs it), and prints the largest difference
next to the bound `verify` applies to that provider (`parity.tolerance_for(family, "gpu")`) and the
headroom between them, top-1 agreement, and median latency at batch 1 and 32. The first run on a new
GPU thus shows how much of the bound real hardware uses.
Exit status: 0 all pass, 1 a parity failure, 2 a provider is unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from onnx_mobilenets.cli.engines import OnnxRuntime
from onnx_mobilenets.contract import golden_of
from onnx_mobilenets.parity import check, parity_inputs, tolerance_for
from onnx_mobilenets.tables import markdown_table


def median_latency_ms(session, batch, runs):
    name = session.get_inputs()[0].name
    session.run(None, {name: batch})  # warm-up (CUDA kernels, cuDNN algorithm choice)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def check_artifact(path, reference: OnnxRuntime, candidate: OnnxRuntime, runs: int) -> dict:
    meta = reference.session(path).get_modelmeta().custom_metadata_map
    if "quantization" in meta:
        raise SystemExit(f"error: {path} is a quantized artifact: its parity is TFLite's CPU arithmetic step for "
                         "step; check it with `onnx-mobilenets verify`")
    inputs, golden_logits = golden_of(meta)
    layout = json.loads(meta["preprocessing"])["layout"]
    output = meta["output"]
    ref_out = reference.run(path, inputs, layout)
    cand_out = candidate.run(path, inputs, layout)
    agreement = check(
        golden_logits, cand_out, output, tolerance_for(meta["family"], candidate.device), reference=ref_out
    )
    row = {
        "model": meta["variant"],
        "reference": reference.name,
        "candidate": candidate.name + (f" ({candidate.note})" if candidate.note else ""),
        **agreement.as_dict(),
    }
    timing = parity_inputs(int(meta["resolution"]), count=32, seed=7)
    if layout == "NCHW":
        timing = np.ascontiguousarray(timing.transpose(0, 3, 1, 2))
    for n in (1, 32):
        row[f"reference_ms_batch{n}"] = median_latency_ms(reference.session(path), timing[:n], runs)
        row[f"candidate_ms_batch{n}"] = median_latency_ms(candidate.session(path), timing[:n], runs)
    row["pass"] = agreement.passed
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".onnx artifacts")
    parser.add_argument("--reference", default="cpu", choices=("cpu", "cuda", "tensorrt"))
    parser.add_argument("--candidate", default="cuda", choices=("cpu", "cuda", "tensorrt"))
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    reference, candidate = OnnxRuntime(args.reference), OnnxRuntime(args.candidate)
    for engine in (reference, candidate):
        reason = engine.unavailable()
        if reason:
            print(f"error: {engine.name}: {reason}", file=sys.stderr)
            return 2
    rows = [check_artifact(m, reference, candidate, args.runs) for m in args.models]
    header = ("model", "reference", "candidate", "output", "max abs diff", "bound", "headroom", "top-1", "ref ms b1",
              "cand ms b1", "ref ms b32", "cand ms b32", "result")
    print(markdown_table(header, [
        [r["model"], r["reference"], r["candidate"], r["output"], f"{r['max_abs_diff']:.2e}", f"{r['bound']:.2e}",
         "identical" if r["headroom"] is None else f"{r['headroom']:.0f}x", f"{r['top1_agreement']:.0%}",
         f"{r['reference_ms_batch1']:.2f}", f"{r['candidate_ms_batch1']:.2f}", f"{r['reference_ms_batch32']:.1f}",
         f"{r['candidate_ms_batch32']:.1f}", "PASS" if r["pass"] else "FAIL"] for r in rows]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
