"""Speed of our artifacts and wrapper against the alternatives and against the machine's limit.

    python tools/benchmark.py            (or, from a checkout: onnx-mobilenets bench)

The measurement is in tools/bench/measure.py, the contenders in tools/bench/contenders.py, the
report in tools/bench/report.py; they use only the package's public API.

For each variant (default: V1 and V2 at 1.0/224 and the smallest of each family), on random-weight
artifacts made on the spot (no downloads), it measures in one run, alternating the contenders round
by round so that drift hits all alike, after warm-up:

- onnxruntime CPU through a raw InferenceSession on our artifact (batch 1 latency, batch 32 throughput),
  and on its float16 artifact (`convert --float16`): what float16 does on this CPU, and its size;
- `OnnxMobileNet.run` on the same batches, and `OnnxMobileNet.predict` on a JPEG file (decode included);
- the same weights in Keras `model.predict` and in a `tf.function`;
- `keras.applications.MobileNet`/`MobileNetV2` exported with tf2onnx's defaults, in onnxruntime;
- the machine's limit: the variant's FLOPs over a measured float32 matrix-multiply rate;
- start-up (`OnnxMobileNet(name)` on a cached artifact to the first prediction) and the peak resident
  memory of a process that loads the runtime and predicts once;
- for Google's quantized models (default `mobilenet_v2_1.0_224_quant`, its tarball taken from
  --mirror, by default the test fixtures when they are beside the repository, else downloaded):
  the int8 artifact in onnxruntime (as `OnnxMobileNet` runs it, and with the file's own uint8
  weights), Google's `.tflite` in TFLite's interpreter (XNNPACK, same thread count) and our float
  artifact of the same variant, at batch 1 and 32, as paired ratios; where batch 1's time goes
  (onnxruntime's profiler: depthwise convolutions, other convolutions, the rest), int8 and float;
  and the file sizes;
- many images (--throughput N, default 1,000 generated photo-like JPEGs, half 500x375 and half
  1600x1200) through V2 1.0/224, float and int8: a naive loop (open one image, predict one),
  `predict_stream`, the command line writing Parquet, and Ray on this machine; against the
  machine's limit for the job, cores / (decode-and-preprocess core-seconds per image + inference
  core-seconds per image at the batch size); and the peak memory of predict_stream over 10x the
  images against 1x.

It prints a Markdown table and writes JSON (and, with --markdown, a Markdown report).
Needs the [convert] extra.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from onnx_mobilenets import catalogue

DEFAULT_VARIANTS = ("mobilenet_v1_1.0_224", "mobilenet_v2_1.0_224", "mobilenet_v1_0.25_128", "mobilenet_v2_0.35_96")
DEFAULT_QUANTIZED = ("mobilenet_v2_1.0_224_quant",)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="onnx-mobilenets bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", default=list(DEFAULT_VARIANTS), metavar="NAME")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="threads for every contender (default: all cores)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per measurement")
    parser.add_argument("--round-seconds", type=float, default=0.2, help="time per contender per round")
    parser.add_argument("--json", default="benchmarks.json", help="JSON output (default benchmarks.json)")
    parser.add_argument("--markdown", help="also write a Markdown report here (e.g. docs/benchmark-results.md)")
    parser.add_argument("--work-dir", help="where random-weight artifacts are made and kept (default: a temp dir)")
    parser.add_argument("--quantized", nargs="*", default=list(DEFAULT_QUANTIZED), metavar="NAME",
                        help="quantized variants to measure (default: %(default)s; none: --quantized)")
    parser.add_argument("--throughput", type=int, default=1000, metavar="N",
                        help="images for the many-images benchmark (0: skip it; default 1000)")
    parser.add_argument("--mirror", default=_fixture_mirror(),
                        help="folder holding the quantized release tarballs under their official names "
                             "(default: the test fixtures beside the repository, if there)")
    return parser.parse_args(argv)


def _fixture_mirror():
    folder = Path(os.environ.get("ONNX_MOBILENETS_FIXTURES", Path(__file__).resolve().parents[1].parent / "shared"
                                 / "fixtures")) / "checkpoints"
    return str(folder) if folder.is_dir() else None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads < 1:
        raise SystemExit("error: --threads must be at least 1")
    # Thread pools are sized when NumPy's BLAS and TensorFlow start: set the environment and re-run.
    wanted = str(args.threads)
    if any(os.environ.get(k) != wanted for k in THREAD_ENV):
        env = dict(os.environ, **{k: wanted for k in THREAD_ENV}, TF_CPP_MIN_LOG_LEVEL="3")
        return subprocess.call([sys.executable, str(Path(__file__).resolve()), *argv], env=env)
    return run(args)


# --- measurement ----------------------------------------------------------------------------------

def run(args) -> int:
    # Imported here, once main() has set the thread environment: TensorFlow and the BLAS libraries size
    # their thread pools when they load.
    from bench.contenders import bench_quantized, bench_throughput, bench_variant, throughput_artifacts
    from bench.measure import machine_info, matmul_gflops
    from bench.report import markdown

    names = [catalogue.get_variant(v).name for v in args.variants]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-mobilenets-bench-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["ONNX_MOBILENETS_HOME"] = str(work)  # the start-up test finds the artifacts as cached
        print(f"measuring the float32 matmul rate on {args.threads} threads...", flush=True)
        peak = matmul_gflops(args.rounds, args.round_seconds)
        report = {"machine": machine_info(args.threads), "matmul_gflops": peak, "variants": []}
        for name in names:
            print(f"{name}:", flush=True)
            report["variants"].append(bench_variant(name, work, args.threads, args.rounds, args.round_seconds, peak))
        if args.mirror:
            os.environ["ONNX_MOBILENETS_MIRROR"] = args.mirror
        report["quantized"] = []
        for name in args.quantized:
            print(f"{name}:", flush=True)
            report["quantized"].append(bench_quantized(name, work, args.threads, args.rounds, args.round_seconds))
        if args.throughput:
            print("many images:", flush=True)
            report["throughput"] = bench_throughput(throughput_artifacts(work, names, args.quantized), work,
                                                    args.threads, args.throughput)
    report["seconds"] = time.perf_counter() - started
    table = markdown(report)
    print()
    print(table)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json} ({report['seconds']:.0f} s in all)")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(
            "# Benchmark results\n\nProduced by `python tools/benchmark.py --markdown docs/benchmark-results.md`; "
            "what it measures and what the numbers mean: [benchmarks.md](benchmarks.md).\n\n" + table
        )
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
