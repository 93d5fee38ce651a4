"""The benchmark's contenders: our artifacts and wrapper against keras.applications through
tf2onnx, Keras itself, TFLite, and many images through predict_stream, the command line and Ray."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
from PIL import Image

from onnx_mobilenets import catalogue
from onnx_mobilenets.artifact import ArtifactSpec, runtime_form
from onnx_mobilenets.conversion import convert_variant, untrained_variant
from onnx_mobilenets.conversion.quantized import interpreter, read_tflite
from onnx_mobilenets.model_bytes import cpu_has_vnni
from onnx_mobilenets.parity import parity_inputs, parity_pixels
from onnx_mobilenets.runtime import OnnxMobileNet
from onnx_mobilenets.sessions import new_session, session_options

from .measure import measure_alternating, paired_ratio, photo_like_jpegs, summarize


def time_by_layer_kind(model: bytes, feed: dict, threads: int, runs: int = 100) -> dict:
    """Where one run's time goes, from onnxruntime's own profiler: ms in depthwise convolutions, in
    the other convolutions, and in everything else (each node's median over `runs`, summed), on the
    graph as onnxruntime runs it (after its fusions; a convolution is depthwise when its group count
    is above 1)."""
    with tempfile.TemporaryDirectory(prefix="onnx-mobilenets-profile-") as tmp:
        options = session_options()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        options.optimized_model_filepath = str(Path(tmp) / "as_run.onnx")
        session = new_session(model, options=options, threads=threads)
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

    runs = np.asarray(runs)
    return {"import_s": float(np.median(runs[:, 0])), "first_prediction_s": float(np.median(runs[:, 1])),
            "peak_rss_mb": float(np.median(runs[:, 2]) / 1024)}


def bench_variant(name, work: Path, threads: int, rounds: int, round_seconds: float, peak_gflops: float) -> dict:
    variant = catalogue.get_variant(name)
    model = untrained_variant(name, 0)  # the weights of `convert --random-weights`
    artifacts = work / "artifacts"
    ours = ArtifactSpec.of_variant(name).path_in(artifacts)
    if not ours.is_file():
        print(f"  converting {name} (random weights)...", flush=True)
        convert_variant(name, artifacts, random_weights=True)
    half = ArtifactSpec.of_variant(name, float16=True).path_in(artifacts)
    if not half.is_file():
        print(f"  converting {name} to float16 (random weights)...", flush=True)
        convert_variant(name, artifacts, random_weights=True, float16=True)
    theirs = work / f"keras_applications_{name}.onnx"
    if not theirs.is_file():
        print("  exporting keras.applications (same weights) with tf2onnx defaults...", flush=True)
        keras_applications_onnx(variant, theirs, model)
    jpeg = sample_jpeg(variant.resolution, work / f"sample_{variant.resolution}.jpg")

    forward = tf.function(lambda x: model(x, training=False))
    raw, raw_theirs = new_session(ours, threads=threads), new_session(theirs, threads=threads)
    raw_half = new_session(half, threads=threads)
    wrapper = OnnxMobileNet(ours, providers="cpu", threads=threads)
    in_ours, in_theirs = raw.get_inputs()[0].name, raw_theirs.get_inputs()[0].name
    x1, x32 = parity_inputs(variant.resolution, count=1, seed=3), parity_inputs(variant.resolution, count=32, seed=3)
    t1, t32 = tf.constant(x1), tf.constant(x32)

    batch1 = {
        "ort_raw_b1": lambda: raw.run(None, {in_ours: x1}),
        "wrapper_run_b1": lambda: wrapper.run(x1),
        "wrapper_predict_jpeg": lambda: wrapper.predict(jpeg),
        "keras_apps_tf2onnx_b1": lambda: raw_theirs.run(None, {in_theirs: x1}),
        "ort_float16_b1": lambda: raw_half.run(None, {in_ours: x1}),
        "keras_predict_b1": lambda: model.predict(x1, verbose=0),
        "tf_function_b1": lambda: forward(t1).numpy(),
    }
    batch32 = {
        "ort_raw_b32": lambda: raw.run(None, {in_ours: x32}),
        "wrapper_run_b32": lambda: wrapper.run(x32),
        "keras_apps_tf2onnx_b32": lambda: raw_theirs.run(None, {in_theirs: x32}),
        "ort_float16_b32": lambda: raw_half.run(None, {in_ours: x32}),
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
        # the float16 artifact on this CPU: time of float32 over float16 (above 1: float16 is faster)
        "float16_speedup_b1": paired_ratio(samples, "ort_raw_b1", "ort_float16_b1"),
        "float16_speedup_b32": paired_ratio(samples, "ort_raw_b32", "ort_float16_b32"),
        "float16_size_over_float": half.stat().st_size / ours.stat().st_size,
    }
    process = startup_and_memory(name, work, jpeg)
    return {"variant": name, "resolution": variant.resolution, "macs_millions": variant.macs_millions,
            "contenders": results, "ratios": ratios, "process": process}


def throughput_artifacts(work: Path, names: list, quantized: list) -> dict:
    """V2 1.0/224 float (random weights) and its int8 sibling, when measured above; otherwise the
    first variants asked for."""
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
    variant = catalogue.get_variant(name)
    float_name = variant.name[:-len(catalogue.QUANT_SUFFIX)]
    artifacts = work / "artifacts"
    int8_path, float_path = artifacts / f"{variant.name}.onnx", artifacts / f"{float_name}.onnx"
    if not int8_path.is_file():
        print(f"  converting {variant.name} from Google's .tflite...", flush=True)
        convert_variant(variant.name, artifacts)
    if not float_path.is_file():
        print(f"  converting {float_name} (random weights)...", flush=True)
        convert_variant(float_name, artifacts, random_weights=True)
    tarball = work / "checkpoints" / variant.checkpoint_filename  # where the downloader cached it
    tflite_model, _ = read_tflite(tarball)

    int8 = OnnxMobileNet(int8_path, providers="cpu", threads=threads)
    stored_session = new_session(
        int8_path, threads=threads
    )  # the file's own uint8 weights: the exact path without VNNI
    float_session = new_session(float_path, threads=threads)
    float_input = float_session.get_inputs()[0].name
    tflite_session = interpreter(tflite_model, xnnpack=True, threads=threads)
    tflite_input = tflite_session.get_input_details()[0]["index"]
    R = variant.resolution
    p1, p32 = parity_pixels(R, count=1, seed=3), parity_pixels(R, count=32, seed=3)
    x1, x32 = parity_inputs(R, count=1, seed=3), parity_inputs(R, count=32, seed=3)

    def tflite(pixels):  # the .tflite is fixed at batch 1: a batch is that many invocations
        for image in pixels:
            tflite_session.set_tensor(tflite_input, image[None])
            tflite_session.invoke()

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
    print(f"  generating {count} photo-like JPEGs...", flush=True)
    paths = photo_like_jpegs(work / "photos", count)
    listing = work / "photos.txt"
    listing.write_text("\n".join(map(str, paths)) + "\n")
    results = {"images": count, "batch_size": batch_size, "cores": os.cpu_count(), "artifacts": {}}
    for label, artifact in artifacts.items():
        print(f"  {label}: limit, naive loop, predict_stream, command line...", flush=True)
        command = [sys.executable, "-m", "onnx_mobilenets.cli", "predict", f"@{listing}", "--model", str(artifact),
                   "--output", str(work / f"{label}.parquet"), "--quiet", "--batch-size", str(batch_size)]
        results["artifacts"][label] = _many_images(artifact, paths, command, threads, batch_size)
    # Then Ray, once for every artifact (its start-up reported on its own), idle during nothing else.
    with _local_ray() as ray_start:
        for label, artifact in artifacts.items():
            print(f"  {label}: Ray...", flush=True)
            figures = results["artifacts"][label]
            ray_rate = _ray_rate(paths, artifact, batch_size) if ray_start is not None else None
            figures.update({"ray_images_per_s": ray_rate, "ray_start_s": ray_start,
                            "ray_over_stream": ray_rate / figures["stream_images_per_s"] if ray_rate else None})
    label, artifact = next(iter(artifacts.items()))
    print(f"  peak memory of predict_stream over {count} and {10 * count} images ({label})...", flush=True)
    one, ten = (_peak_memory_mb(Path(artifact), listing, repeat, batch_size) for repeat in (1, 10))
    results["memory"] = {"artifact": label, "peak_mb_1x": one, "peak_mb_10x": ten, "growth_mb": ten - one}
    return results


def _many_images(artifact, paths: list, command: list, threads: int, batch_size: int) -> dict:
    """One artifact's rates over `paths`: the machine's limit, a naive loop, predict_stream and the
    command line (`command`)."""
    count = len(paths)
    model = OnnxMobileNet(artifact, providers="cpu", threads=threads, batch_size=batch_size)
    single = OnnxMobileNet(artifact, providers="cpu", threads=1, batch_size=batch_size)
    sample = paths[: min(len(paths), 100)]
    # Core-seconds per image: decoding and preprocessing on one thread (CPU time, so waiting
    # costs nothing), inference of whole batches on one onnxruntime thread.
    cpu_started = time.process_time()
    decoded = single.preprocess(sample)
    decode = (time.process_time() - cpu_started) / len(sample)
    batch = np.concatenate([decoded] * (batch_size // len(decoded) + 1))[:batch_size]
    single.run(batch)
    infer = min(_seconds(lambda: single.run(batch)) for _ in range(3)) / batch_size
    limit = os.cpu_count() / (decode + infer)
    naive = count / _seconds(lambda: [model.predict(p) for p in paths])
    streamed = count / _seconds(lambda: sum(1 for _ in model.predict_stream(paths)))
    cli_rate = count / _seconds(lambda: subprocess.run(command, check=True, capture_output=True))
    return {"decode_core_s_per_image": decode, "inference_core_s_per_image": infer, "limit_images_per_s": limit,
            "naive_images_per_s": naive, "stream_images_per_s": streamed, "cli_parquet_images_per_s": cli_rate,
            "stream_over_limit": streamed / limit, "stream_over_naive": streamed / naive}


@contextlib.contextmanager
def _local_ray():
    """A local Ray on every core for the block; yields how long it took to start, or None without the
    [ray] extra."""
    try:
        import ray
    except ImportError:
        yield None
        return
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), logging_level="ERROR", log_to_driver=False, include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield time.perf_counter() - started
    finally:
        ray.shutdown()


def _ray_rate(paths, artifact, batch_size) -> float:
    """Images/s of runtime.ray.classify on the local Ray of `_local_ray`."""
    from onnx_mobilenets.runtime import ray as ray_runner

    seconds = _seconds(lambda: ray_runner.classify([str(p) for p in paths], artifact, batch_size=batch_size).take_all())
    return len(paths) / seconds


# --- report ---------------------------------------------------------------------------------------
