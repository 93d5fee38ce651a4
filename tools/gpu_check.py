"""CUDA vs CPU check for MobileNet artifacts: numeric parity and latency, as a table.

Run it on a machine with an NVIDIA GPU and onnxruntime-gpu:

    python tools/gpu_check.py artifacts/mobilenet_v2_1.0_224.onnx artifacts/mobilenet_v1_1.0_224.onnx

For each model it runs the same inputs (the deterministic parity set, realistic image statistics) on
the reference provider (CPU) and the candidate (CUDA), and reports the max absolute probability
difference, top-1 agreement (pass: <= 1e-4 and 100 %), and median latency at batch 1 and 32.
Exit status: 0 all pass, 1 a parity failure, 2 the candidate provider is unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from onnx_mobilenets import OnnxMobileNet, ProviderError
from onnx_mobilenets.parity import parity_inputs

TOLERANCE = 1e-4


def median_latency_ms(model, batch, runs):
    model.run(batch)  # warm-up (CUDA kernels, cuDNN algorithm choice)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(batch)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def check(path, reference, candidate, runs):
    ref = OnnxMobileNet(path, providers=reference)
    cand = OnnxMobileNet(path, providers=candidate)
    inputs = parity_inputs(ref.input_size, count=32, seed=7)
    if ref.metadata.get("preprocessing") and json.loads(ref.metadata["preprocessing"])["layout"] == "NCHW":
        inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    p_ref, p_cand = ref.run(inputs), cand.run(inputs)
    row = {
        "model": ref.variant,
        "reference": ref.providers[0],
        "candidate": cand.providers[0],
        "max_abs_diff_probabilities": float(np.abs(p_ref - p_cand).max()),
        "top1_agreement": float(np.mean(p_ref.argmax(1) == p_cand.argmax(1))),
    }
    for n in (1, 32):
        row[f"reference_ms_batch{n}"] = median_latency_ms(ref, inputs[:n], runs)
        row[f"candidate_ms_batch{n}"] = median_latency_ms(cand, inputs[:n], runs)
    row["pass"] = row["max_abs_diff_probabilities"] <= TOLERANCE and row["top1_agreement"] == 1.0
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help=".onnx artifacts (or catalogue names)")
    parser.add_argument("--reference", default="cpu")
    parser.add_argument("--candidate", default="cuda")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        rows = [check(m, args.reference, args.candidate, args.runs) for m in args.models]
    except ProviderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    header = ("model", "reference", "candidate", "max |dp|", "top-1", "ref ms b1", "cand ms b1", "ref ms b32",
              "cand ms b32", "result")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['model']} | {r['reference']} | {r['candidate']} | {r['max_abs_diff_probabilities']:.2e} | "
              f"{r['top1_agreement']:.0%} | {r['reference_ms_batch1']:.2f} | {r['candidate_ms_batch1']:.2f} | "
              f"{r['reference_ms_batch32']:.1f} | {r['candidate_ms_batch32']:.1f} | {'PASS' if r['pass'] else 'FAIL'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"tolerance": TOLERANCE, "rows": rows}, f, indent=1)
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
