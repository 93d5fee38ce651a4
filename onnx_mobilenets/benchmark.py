"""Speed of our artifacts and wrapper against the alternatives and against the machine's limit.

    python tools/benchmark.py            (or: onnx-mobilenets bench)

For each variant (default: V1 and V2 at 1.0/224 and the smallest of each family), on random-weight
artifacts made on the spot (no downloads), it measures in one run, alternating the contenders round
by round so that drift hits all alike, after warm-up:

- onnxruntime CPU through a raw InferenceSession on our artifact (batch 1 latency, batch 32 throughput);
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
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .runtime.model_bytes import cpu_has_vnni, runtime_form

DEFAULT_VARIANTS = ("mobilenet_v1_1.0_224", "mobilenet_v2_1.0_224", "mobilenet_v1_0.25_128", "mobilenet_v2_0.35_96")
DEFAULT_QUANTIZED = ("mobilenet_v2_1.0_224_quant",)
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="onnx-mobilenets bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", default=list(DEFAULT_VARIANTS), metavar="NAME")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every contender (default: all cores)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per measurement")
    parser.add_argument("--round-seconds", type=float, default=0.2, help="time per contender per round")
    parser.add_argument("--json", default="benchmarks.json", help="JSON output (default benchmarks.json)")
    parser.add_argument("--markdown", help="also write a Markdown report here (e.g. docs/benchmarks.md)")
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
        return subprocess.call([sys.executable, "-m", "onnx_mobilenets.benchmark", *argv], env=env)
    return run(args)


# --- measurement ----------------------------------------------------------------------------------

def _time_calls(fn, seconds):
    """Per-call times (s) of `fn` over about `seconds`, after two untimed calls: the previous
    contender's thread pool may still be spinning, and caches hold its data, not this one's."""
    fn()
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        fn()
        end = time.perf_counter()
        times.append(end - start)
        if end >= deadline and len(times) >= 3:
            return times


SETTLE_SECONDS = 0.2  # TensorFlow's and onnxruntime's idle worker threads keep spinning for a while


def measure_alternating(groups, rounds: int, round_seconds: float) -> dict:
    """{name: [[per-call seconds of round 0], [round 1], ...]} for contenders given as groups of dicts.

    Every round runs every group, and within a group every contender, in a new (seeded) random
    order, pausing between contenders so the previous one's spinning thread pools are idle. The
    contenders that are compared with each other sit in one group, so each round measures them
    seconds apart: their per-round ratio cancels the slow drift of a shared, noisy machine.
    """
    import random

    order = random.Random(0)
    contenders = {name: fn for group in groups for name, fn in group.items()}
    for fn in contenders.values():
        for _ in range(3):
            fn()
    samples = {name: [] for name in contenders}
    groups = [list(group) for group in groups]
    for _ in range(rounds):
        order.shuffle(groups)
        for names in groups:
            order.shuffle(names)
            for name in names:
                time.sleep(SETTLE_SECONDS)
                samples[name].append(_time_calls(contenders[name], round_seconds))
    return samples


def paired_ratio(samples: dict, numerator: str, denominator: str) -> float:
    """Median over rounds of the ratio of the two contenders' medians within the round."""
    import numpy as np

    return float(np.median([np.median(a) / np.median(b) for a, b in zip(samples[numerator], samples[denominator])]))


def summarize(rounds) -> dict:
    import numpy as np

    t = np.concatenate([np.asarray(r) for r in rounds]) * 1000
    return {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "calls": int(len(t))}


def matmul_gflops(threads: int, seconds: float = 2.0) -> float:
    """Measured float32 matrix-multiply rate on these cores (NumPy's BLAS), in GFLOP/s."""
    import numpy as np

    n = 1024
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    rounds = measure_alternating([{"matmul": lambda: a @ b}], rounds=3, round_seconds=seconds / 3)["matmul"]
    return 2 * n ** 3 / float(np.median(np.concatenate(rounds))) / 1e9


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import tensorflow as tf

    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "tensorflow": tf.__version__, "platform": platform.platform(),
            "vnni": cpu_has_vnni()}


# --- contenders -----------------------------------------------------------------------------------

def _session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_by_layer_kind(model: bytes, feed: dict, threads: int, runs: int = 100) -> dict:
    """Where one run's time goes, from onnxruntime's own profiler: ms in depthwise convolutions, in
    the other convolutions, and in everything else (each node's median over `runs`, summed), on the
    graph as onnxruntime runs it (after its fusions; a convolution is depthwise when its group count
    is above 1)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="onnx-mobilenets-profile-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "as_run.onnx")
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        groups = {node.name: next((a.i for a in node.attribute if a.name == "group"), 1)
                  for node in onnx.load(str(Path(tmp) / "as_run.onnx")).graph.node}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["name"][:-len("_kernel_time")], event["args"]["op_name"])
            durations.setdefault(key, []).append(event["dur"] / 1000)
    kinds = {"depthwise_conv_ms": 0.0, "other_conv_ms": 0.0, "rest_ms": 0.0}
    for (node, op), times in durations.items():
        kind = "rest_ms" if "Conv" not in op else "depthwise_conv_ms" if groups.get(node, 1) > 1 else "other_conv_ms"
        kinds[kind] += float(np.median(times))
    return kinds


def keras_applications_onnx(variant, path: Path, weights_from) -> Path:
    """keras.applications' MobileNet/MobileNetV2 exported with tf2onnx's defaults, carrying the same
    weights as `weights_from` (our model), so both graphs compute the same numbers: the comparison
    is of graphs, not of weight statistics (denormals, for one, cost time)."""
    import keras
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    shape = (variant.resolution, variant.resolution, 3)
    if variant.family == "v1":
        model = keras.applications.MobileNet(input_shape=shape, alpha=variant.alpha, weights=None)
    else:
        model = keras.applications.MobileNetV2(input_shape=shape, alpha=variant.alpha, weights=None)
    # Both list their weights in the same layer order; only V2's Dense logits are [C, K], not [1, 1, C, K].
    ours, theirs = weights_from.weights, model.weights
    if len(ours) != len(theirs) or any(int(np.prod(a.shape)) != int(np.prod(b.shape)) for a, b in zip(ours, theirs)):
        raise RuntimeError(f"keras.applications' {model.name} does not line up with our {weights_from.name}")
    for a, b in zip(ours, theirs):
        b.assign(np.reshape(a.numpy(), b.shape))
    spec = (tf.TensorSpec((None,) + shape, tf.float32, name="input"),)
    try:  # what a user would call first
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec)
    except Exception:  # Keras 3 models may need the tf.function route
        function = tf.function(lambda x: model(x, training=False), input_signature=spec)
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec)
    path.write_bytes(proto.SerializeToString())
    return path


def sample_jpeg(resolution: int, path: Path) -> Path:
    """A photograph-like JPEG of `resolution` pixels square (smooth colour field with texture)."""
    from PIL import Image

    from .parity import parity_pixels

    Image.fromarray(parity_pixels(resolution, count=2, seed=11)[1]).save(path, quality=90)
    return path


def startup_and_memory(name: str, home: Path, jpeg: Path, repeats: int = 3) -> dict:
    """In fresh processes: import time, OnnxMobileNet(name) on a cached artifact to the first
    prediction, and the peak resident memory after one prediction."""
    code = (
        "import time\n"
        "t0 = time.perf_counter()\n"
        "from onnx_mobilenets import OnnxMobileNet\n"
        "t1 = time.perf_counter()\n"
        f"model = OnnxMobileNet({name!r}, providers='cpu')\n"
        f"model.predict({str(jpeg)!r})\n"
        "t2 = time.perf_counter()\n"
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(t1 - t0, t2 - t1, hwm)\n"
    )
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(home), ONNX_MOBILENETS_OFFLINE="1")
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        runs.append([float(v) for v in out.stdout.split()])
    import numpy as np

    runs = np.asarray(runs)
    return {"import_s": float(np.median(runs[:, 0])), "first_prediction_s": float(np.median(runs[:, 1])),
            "peak_rss_mb": float(np.median(runs[:, 2]) / 1024)}


def bench_variant(name, work: Path, threads: int, rounds: int, round_seconds: float, peak_gflops: float) -> dict:
    import keras
    import tensorflow as tf

    from . import catalogue
    from .conversion import build_variant
    from .conversion.convert import convert_variant
    from .conversion.weights import randomize_weights
    from .parity import parity_inputs
    from .runtime import OnnxMobileNet

    variant = catalogue.get_variant(name)
    model = build_variant(name, weights=None)
    randomize_weights(model, 0)  # the weights of `convert --random-weights`
    artifacts = work / "artifacts"
    ours = artifacts / f"{name}.onnx"
    if not ours.is_file():
        print(f"  converting {name} (random weights)...", flush=True)
        convert_variant(name, artifacts, random_weights=True)
    theirs = work / f"keras_applications_{name}.onnx"
    if not theirs.is_file():
        print("  exporting keras.applications (same weights) with tf2onnx defaults...", flush=True)
        keras_applications_onnx(variant, theirs, model)
    jpeg = sample_jpeg(variant.resolution, work / f"sample_{variant.resolution}.jpg")

    forward = tf.function(lambda x: model(x, training=False))
    raw, raw_theirs = _session(ours, threads), _session(theirs, threads)
    wrapper = OnnxMobileNet(ours, providers="cpu", threads=threads)
    in_ours, in_theirs = raw.get_inputs()[0].name, raw_theirs.get_inputs()[0].name
    x1, x32 = parity_inputs(variant.resolution, count=1, seed=3), parity_inputs(variant.resolution, count=32, seed=3)
    t1, t32 = tf.constant(x1), tf.constant(x32)

    batch1 = {
        "ort_raw_b1": lambda: raw.run(None, {in_ours: x1}),
        "wrapper_run_b1": lambda: wrapper.run(x1),
        "wrapper_predict_jpeg": lambda: wrapper.predict(jpeg),
        "keras_apps_tf2onnx_b1": lambda: raw_theirs.run(None, {in_theirs: x1}),
        "keras_predict_b1": lambda: model.predict(x1, verbose=0),
        "tf_function_b1": lambda: forward(t1).numpy(),
    }
    batch32 = {
        "ort_raw_b32": lambda: raw.run(None, {in_ours: x32}),
        "wrapper_run_b32": lambda: wrapper.run(x32),
        "keras_apps_tf2onnx_b32": lambda: raw_theirs.run(None, {in_theirs: x32}),
        "keras_predict_b32": lambda: model.predict(x32, verbose=0),
        "tf_function_b32": lambda: forward(t32).numpy(),
    }
    print(f"  measuring {len(batch1) + len(batch32)} contenders x {rounds} rounds...", flush=True)
    samples = measure_alternating([batch1, batch32], rounds, round_seconds)
    results = {k: summarize(v) for k, v in samples.items()}
    flops = 2 * variant.macs_millions * 1e6
    for key, stats in results.items():
        batch = 32 if key.endswith("b32") else 1
        stats["images_per_s"] = batch / (stats["median_ms"] / 1000)
        stats["fraction_of_matmul_peak"] = flops * batch / (stats["median_ms"] / 1000) / (peak_gflops * 1e9)
    keras.backend.clear_session()

    ratios = {  # each the median over rounds of the within-round ratio (see measure_alternating)
        "wrapper_run_over_raw_b1": paired_ratio(samples, "wrapper_run_b1", "ort_raw_b1"),
        "wrapper_run_over_raw_b32": paired_ratio(samples, "wrapper_run_b32", "ort_raw_b32"),
        "predict_jpeg_over_raw_b1": paired_ratio(samples, "wrapper_predict_jpeg", "ort_raw_b1"),
        "speed_vs_keras_apps_b1": paired_ratio(samples, "keras_apps_tf2onnx_b1", "ort_raw_b1"),
        "speed_vs_keras_apps_b32": paired_ratio(samples, "keras_apps_tf2onnx_b32", "ort_raw_b32"),
        "speedup_vs_keras_predict_b1": paired_ratio(samples, "keras_predict_b1", "ort_raw_b1"),
        "speedup_vs_tf_function_b1": paired_ratio(samples, "tf_function_b1", "ort_raw_b1"),
        "fraction_of_matmul_peak_b32": results["ort_raw_b32"]["fraction_of_matmul_peak"],
    }
    process = startup_and_memory(name, work, jpeg)
    return {"variant": name, "resolution": variant.resolution, "macs_millions": variant.macs_millions,
            "contenders": results, "ratios": ratios, "process": process}


def _throughput_artifacts(work: Path, names: list, quantized: list) -> dict:
    """V2 1.0/224 float (random weights) and its int8 sibling, when measured above; otherwise the
    first variants asked for."""
    from .conversion.convert import convert_variant

    artifacts = work / "artifacts"
    float_name = "mobilenet_v2_1.0_224" if "mobilenet_v2_1.0_224" in names else names[0]
    if not (artifacts / f"{float_name}.onnx").is_file():
        convert_variant(float_name, artifacts, random_weights=True)
    chosen = {"float": artifacts / f"{float_name}.onnx"}
    int8 = artifacts / f"{float_name}_quant.onnx"
    if not int8.is_file() and quantized:
        int8 = artifacts / f"{quantized[0]}.onnx"
    if int8.is_file():
        chosen["int8"] = int8
    return chosen


def bench_quantized(name, work: Path, threads: int, rounds: int, round_seconds: float) -> dict:
    """The int8 artifact in onnxruntime against TFLite (XNNPACK) on the same .tflite and against our
    float artifact of the same variant (random weights: speed does not depend on the values)."""
    import onnxruntime as ort

    from . import catalogue
    from .conversion.convert import convert_variant
    from .conversion.quantized import _interpreter, convert_quantized, read_tflite
    from .parity import parity_inputs, parity_pixels
    from .runtime import OnnxMobileNet

    variant = catalogue.get_variant(name)
    float_name = variant.name[:-len(catalogue.QUANT_SUFFIX)]
    artifacts = work / "artifacts"
    int8_path, float_path = artifacts / f"{variant.name}.onnx", artifacts / f"{float_name}.onnx"
    if not int8_path.is_file():
        print(f"  converting {variant.name} from Google's .tflite...", flush=True)
        convert_quantized(variant.name, artifacts)
    if not float_path.is_file():
        print(f"  converting {float_name} (random weights)...", flush=True)
        convert_variant(float_name, artifacts, random_weights=True)
    tarball = work / "checkpoints" / variant.checkpoint_filename  # where the downloader cached it
    tflite_model, _ = read_tflite(tarball)

    int8 = OnnxMobileNet(int8_path, providers="cpu", threads=threads)
    stored_session = _session(int8_path, threads)  # the file's own uint8 weights: the exact path without VNNI
    float_session = _session(float_path, threads)
    float_input = float_session.get_inputs()[0].name
    interpreter = _interpreter(tflite_model, xnnpack=True, threads=threads)
    tflite_input = interpreter.get_input_details()[0]["index"]
    R = variant.resolution
    p1, p32 = parity_pixels(R, count=1, seed=3), parity_pixels(R, count=32, seed=3)
    x1, x32 = parity_inputs(R, count=1, seed=3), parity_inputs(R, count=32, seed=3)

    def tflite(pixels):  # the .tflite is fixed at batch 1: a batch is that many invocations
        for image in pixels:
            interpreter.set_tensor(tflite_input, image[None])
            interpreter.invoke()

    batch1 = {"int8_ort_b1": lambda: int8.run(p1), "tflite_xnnpack_b1": lambda: tflite(p1),
              "float_ort_b1": lambda: float_session.run(None, {float_input: x1}),
              "int8_ort_stored_weights_b1": lambda: stored_session.run(None, {"images": p1})}
    batch32 = {"int8_ort_b32": lambda: int8.run(p32), "tflite_xnnpack_b32": lambda: tflite(p32),
               "float_ort_b32": lambda: float_session.run(None, {float_input: x32}),
               "int8_ort_stored_weights_b32": lambda: stored_session.run(None, {"images": p32})}
    print(f"  measuring {len(batch1) + len(batch32)} contenders x {rounds} rounds...", flush=True)
    samples = measure_alternating([batch1, batch32], rounds, round_seconds)
    ratios = {
        "int8_speedup_vs_float_b1": paired_ratio(samples, "float_ort_b1", "int8_ort_b1"),
        "int8_speedup_vs_tflite_b1": paired_ratio(samples, "tflite_xnnpack_b1", "int8_ort_b1"),
        "int8_speedup_vs_float_b32": paired_ratio(samples, "float_ort_b32", "int8_ort_b32"),
        "int8_speedup_vs_tflite_b32": paired_ratio(samples, "tflite_xnnpack_b32", "int8_ort_b32"),
        "int8_weights_speedup_b1": paired_ratio(samples, "int8_ort_stored_weights_b1", "int8_ort_b1"),
        "int8_weights_speedup_b32": paired_ratio(samples, "int8_ort_stored_weights_b32", "int8_ort_b32"),
        "int8_size_over_float": int8_path.stat().st_size / float_path.stat().st_size,
    }
    print("  profiling batch 1 by layer kind...", flush=True)
    profile_b1 = {"int8": time_by_layer_kind(runtime_form(int8_path.read_bytes()), {"images": p1}, threads),
                  "float": time_by_layer_kind(float_path.read_bytes(), {float_input: x1}, threads)}
    return {"variant": variant.name, "float_variant": float_name, "runtime_uses_int8_weights":
            cpu_has_vnni(), "contenders": {k: summarize(v) for k, v in samples.items()}, "ratios": ratios,
            "profile_b1_ms": profile_b1,
            "sizes_mb": {"int8": int8_path.stat().st_size / 1e6, "float": float_path.stat().st_size / 1e6,
                         "tflite": len(tflite_model) / 1e6}, "onnxruntime": ort.__version__}


def photo_like_jpegs(folder: Path, count: int, seed: int = 0) -> list:
    """`count` JPEGs that decode like photographs: smooth colour fields with fine texture, half of
    them 500x375 and half 1600x1200."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        size = (500, 375) if i % 2 == 0 else (1600, 1200)
        path = folder / f"photo_{i:05d}_{size[0]}x{size[1]}.jpg"
        if not path.is_file():
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            field = np.asarray(Image.fromarray(coarse).resize(size, Image.BILINEAR), np.float32)
            field += rng.normal(0, 12, field.shape).astype(np.float32)
            Image.fromarray(np.clip(field, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _peak_memory_mb(artifact: Path, listing: Path, repeat: int, batch_size: int) -> float:
    """Peak resident memory (VmHWM) of a process streaming the listed images `repeat` times."""
    code = (
        "import sys\n"
        "from onnx_mobilenets import OnnxMobileNet\n"
        "paths = open(sys.argv[2]).read().split()\n"
        f"model = OnnxMobileNet(sys.argv[1], providers='cpu', batch_size={batch_size})\n"
        f"count = sum(1 for _ in model.predict_stream(path for _ in range({repeat}) for path in paths))\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "print(count, hwm)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(artifact), str(listing)], capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[1]) / 1024


def bench_throughput(artifacts: dict, work: Path, threads: int, count: int, batch_size: int = 32) -> dict:
    """Many images through each artifact ({label: path}); see the module docstring."""

    from .runtime import OnnxMobileNet

    print(f"  generating {count} photo-like JPEGs...", flush=True)
    paths = photo_like_jpegs(work / "photos", count)
    listing = work / "photos.txt"
    listing.write_text("\n".join(map(str, paths)) + "\n")
    results = {"images": count, "batch_size": batch_size, "cores": os.cpu_count(), "artifacts": {}}
    for label, artifact in artifacts.items():
        print(f"  {label}: limit, naive loop, predict_stream, command line, Ray...", flush=True)
        model = OnnxMobileNet(artifact, providers="cpu", threads=threads, batch_size=batch_size)
        single = OnnxMobileNet(artifact, providers="cpu", threads=1, batch_size=batch_size)
        sample = paths[: min(len(paths), 100)]
        # Core-seconds per image: decoding and preprocessing on one thread (CPU time, so waiting
        # costs nothing), inference of whole batches on one onnxruntime thread.
        cpu_started = time.process_time()
        arrays = [single.load_array(p) for p in sample]
        decode = (time.process_time() - cpu_started) / len(sample)
        batch = single.batch_from_arrays((arrays * (batch_size // len(arrays) + 1))[:batch_size])
        single.run(batch)
        infer = min(_seconds(lambda: single.run(batch)) for _ in range(3)) / batch_size
        limit = os.cpu_count() / (decode + infer)

        naive = count / _seconds(lambda: [model.predict(p) for p in paths])
        streamed = count / _seconds(lambda: sum(1 for _ in model.predict_stream(paths)))
        command = [sys.executable, "-m", "onnx_mobilenets.cli", "predict", f"@{listing}", "--model", str(artifact),
                   "--output", str(work / f"{label}.parquet"), "--quiet", "--batch-size", str(batch_size)]
        cli_rate = count / _seconds(lambda: subprocess.run(command, check=True, capture_output=True))
        ray_rate, ray_start = _ray_rate(paths, artifact, batch_size)
        results["artifacts"][label] = {
            "decode_core_s_per_image": decode, "inference_core_s_per_image": infer, "limit_images_per_s": limit,
            "naive_images_per_s": naive, "stream_images_per_s": streamed, "cli_parquet_images_per_s": cli_rate,
            "ray_images_per_s": ray_rate, "ray_start_s": ray_start,
            "stream_over_limit": streamed / limit, "stream_over_naive": streamed / naive,
            "ray_over_stream": ray_rate / streamed if ray_rate else None,
        }
    label, artifact = next(iter(artifacts.items()))
    print(f"  peak memory of predict_stream over {count} and {10 * count} images ({label})...", flush=True)
    one, ten = (_peak_memory_mb(Path(artifact), listing, repeat, batch_size) for repeat in (1, 10))
    results["memory"] = {"artifact": label, "peak_mb_1x": one, "peak_mb_10x": ten, "growth_mb": ten - one}
    return results


def _ray_rate(paths, artifact, batch_size) -> tuple:
    """Images/s of runtime.ray.classify on a local Ray (start-up of Ray itself reported apart), or
    (None, None) without the [ray] extra."""
    try:
        import ray
    except ImportError:
        return None, None
    from .runtime import ray as ray_runner

    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    start = time.perf_counter() - started
    try:
        seconds = _seconds(lambda: ray_runner.classify([str(p) for p in paths], artifact,
                                                       batch_size=batch_size).take_all())
    finally:
        ray.shutdown()
    return len(paths) / seconds, start


# --- report ---------------------------------------------------------------------------------------

TARGETS = {
    "wrapper_run_over_raw_b1": ("<=", 1.05), "wrapper_run_over_raw_b32": ("<=", 1.05),
    "predict_jpeg_over_raw_b1": ("<=", 1.5), "speed_vs_keras_apps_b1": (">=", 0.97),
    "speed_vs_keras_apps_b32": (">=", 0.97), "speedup_vs_keras_predict_b1": (">=", 5.0),
    "speedup_vs_tf_function_b1": (">=", 2.0),
    "int8_speedup_vs_float_b1": (">=", 1.4), "int8_speedup_vs_tflite_b1": (">=", 1.2),
    "int8_speedup_vs_float_b32": (">", 1.0), "int8_speedup_vs_tflite_b32": (">", 1.0),
    "stream_over_limit": (">=", 0.9), "stream_over_naive": (">=", 1.2), "ray_over_stream": (">=", 0.7),
    "growth_mb": ("<=", 50.0),
}


def _meets(value, rule):
    op, bound = rule
    return {"<=": value <= bound, ">=": value >= bound, ">": value > bound}[op]


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} threads; Python {m['python']}, "
             f"onnxruntime {m['onnxruntime']}, TensorFlow {m['tensorflow']}. "
             f"Measured float32 matmul rate: {report['matmul_gflops']:.1f} GFLOP/s.", ""]
    names = ["ort_raw_b1", "wrapper_run_b1", "wrapper_predict_jpeg", "keras_apps_tf2onnx_b1", "tf_function_b1",
             "keras_predict_b1", "ort_raw_b32", "wrapper_run_b32", "keras_apps_tf2onnx_b32", "tf_function_b32",
             "keras_predict_b32"]
    lines.append("Median latency in ms (p10-p90); batch 32 also as images/s and fraction of the matmul rate. "
                 "Ratios are medians over rounds of within-round ratios (contenders compared with each other "
                 "run seconds apart, in random order).")
    lines.append("")
    lines.append("| contender | " + " | ".join(v["variant"] for v in report["variants"]) + " |")
    lines.append("|---|" + "---|" * len(report["variants"]))
    for name in names:
        cells = []
        for v in report["variants"]:
            s = v["contenders"][name]
            cell = f"{s['median_ms']:.2f} ({s['p10_ms']:.2f}-{s['p90_ms']:.2f})"
            if name.endswith("b32"):
                cell += f", {s['images_per_s']:.0f} img/s, {s['fraction_of_matmul_peak']:.0%}"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio (target) | " + " | ".join(v["variant"] for v in report["variants"]) + " |",
              "|---|" + "---|" * len(report["variants"])]
    for key in report["variants"][0]["ratios"]:
        rule = TARGETS.get(key)
        label = f"{key} ({rule[0]} {rule[1]})" if rule else key
        cells = []
        for v in report["variants"]:
            value = v["ratios"][key]
            text = f"{value:.0%}" if key.startswith("fraction") else f"{value:.2f}"
            if rule:
                text += "" if _meets(value, rule) else " MISSED"
            cells.append(text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| process | " + " | ".join(v["variant"] for v in report["variants"]) + " |",
              "|---|" + "---|" * len(report["variants"])]
    for key, fmt in (("import_s", "{:.3f} s"), ("first_prediction_s", "{:.3f} s"), ("peak_rss_mb", "{:.0f} MB")):
        lines.append(f"| {key} | " + " | ".join(fmt.format(v["process"][key]) for v in report["variants"]) + " |")
    if report.get("quantized"):
        lines += quantized_markdown(report)
    if report.get("throughput"):
        lines += throughput_markdown(report["throughput"])
    return "\n".join(lines) + "\n"


def throughput_markdown(t: dict) -> list:
    labels = list(t["artifacts"])
    lines = ["", f"Many images: {t['images']} generated photo-like JPEGs (half 500x375, half 1600x1200), "
                 f"batch {t['batch_size']}, {t['cores']} cores. Limit = cores / (decode-and-preprocess + inference "
                 "core-seconds per image). The command line's rate includes its start-up and model load; Ray's "
                 "includes starting its actors but not Ray itself (ray_start_s).", "",
             "| images/s | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key in ("limit_images_per_s", "naive_images_per_s", "stream_images_per_s", "cli_parquet_images_per_s",
                "ray_images_per_s", "ray_start_s", "decode_core_s_per_image", "inference_core_s_per_image"):
        cells = []
        for label in labels:
            value = t["artifacts"][label][key]
            cells.append("-" if value is None else (f"{value * 1000:.2f} ms" if "core_s" in key else f"{value:.1f}"))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    for key in ("stream_over_limit", "stream_over_naive", "ray_over_stream"):
        rule = TARGETS[key]
        cells = []
        for label in labels:
            value = t["artifacts"][label][key]
            cells.append("-" if value is None else f"{value:.2f}" + ("" if _meets(value, rule) else " MISSED"))
        lines.append(f"| {key} ({rule[0]} {rule[1]}) | " + " | ".join(cells) + " |")
    m = t["memory"]
    growth = m["growth_mb"]
    lines.append(f"| peak memory, predict_stream ({m['artifact']}): {t['images']} / {10 * t['images']} images | "
                 f"{m['peak_mb_1x']:.0f} / {m['peak_mb_10x']:.0f} MB, growth {growth:.0f} MB (<= 50)"
                 + ("" if growth <= 50 else " MISSED") + " |" + " |" * (len(labels) - 1))
    return lines


def quantized_markdown(report: dict) -> list:
    quantized = report["quantized"]
    if report["machine"]["vnni"]:
        form = ("this CPU has AVX512-VNNI, so `OnnxMobileNet` (int8_ort) hands onnxruntime int8 weights, which "
                "its fast u8 x s8 kernels take; int8_ort_stored_weights is the file's own uint8 weights in a raw "
                "session, the exact path CPUs without VNNI get")
    else:
        form = ("this CPU has no AVX512-VNNI, so `OnnxMobileNet` (int8_ort) runs the file's own uint8 weights "
                "through onnxruntime's exact u8 x u8 kernels, the same as int8_ort_stored_weights")
    lines = ["", f"Quantized models ({form}). TFLite: Google's .tflite in ai-edge-litert's interpreter, XNNPACK, "
                 "same threads; its batch 32 is 32 invocations (the model is fixed at batch 1).", "",
             "| contender | " + " | ".join(q["variant"] for q in quantized) + " |",
             "|---|" + "---|" * len(quantized)]
    for name in ("int8_ort_b1", "int8_ort_stored_weights_b1", "tflite_xnnpack_b1", "float_ort_b1", "int8_ort_b32",
                 "int8_ort_stored_weights_b32", "tflite_xnnpack_b32", "float_ort_b32"):
        cells = [f"{q['contenders'][name]['median_ms']:.2f} ({q['contenders'][name]['p10_ms']:.2f}-"
                 f"{q['contenders'][name]['p90_ms']:.2f})" for q in quantized]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key in quantized[0]["ratios"]:
        rule = TARGETS.get(key)
        cells = [f"{q['ratios'][key]:.2f}" + ("" if not rule or _meets(q["ratios"][key], rule) else " MISSED")
                 for q in quantized]
        lines.append(f"| {key}" + (f" ({rule[0]} {rule[1]})" if rule else "") + " | " + " | ".join(cells) + " |")
    for kind in ("depthwise_conv_ms", "other_conv_ms", "rest_ms"):
        lines.append(f"| batch 1 profile, {kind} (int8 / float) | " + " | ".join(
            f"{q['profile_b1_ms']['int8'][kind]:.2f} / {q['profile_b1_ms']['float'][kind]:.2f}" for q in quantized) + " |")
    lines.append("| file sizes (int8 / float / .tflite) | " + " | ".join(
        f"{q['sizes_mb']['int8']:.1f} / {q['sizes_mb']['float']:.1f} / {q['sizes_mb']['tflite']:.1f} MB"
        for q in quantized) + " |")
    return lines


def run(args) -> int:
    from . import catalogue

    names = [catalogue.get_variant(v).name for v in args.variants]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnx-mobilenets-bench-") as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["ONNX_MOBILENETS_HOME"] = str(work)  # the start-up test finds the artifacts as cached
        print(f"measuring the float32 matmul rate on {args.threads} threads...", flush=True)
        peak = matmul_gflops(args.threads)
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
            report["throughput"] = bench_throughput(_throughput_artifacts(work, names, args.quantized), work,
                                                    args.threads, args.throughput)
    report["seconds"] = time.perf_counter() - started
    table = markdown(report)
    print()
    print(table)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.json} ({report['seconds']:.0f} s in all)")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text("# Benchmarks\n\nProduced by `python tools/benchmark.py --markdown docs/benchmarks.md`.\n\n" + table)
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
