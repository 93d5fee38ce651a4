"""The benchmark's report: targets, and the Markdown tables of docs/benchmark-results.md."""

from __future__ import annotations

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
    names = ["ort_raw_b1", "wrapper_run_b1", "wrapper_predict_jpeg", "keras_apps_tf2onnx_b1", "ort_float16_b1",
             "tf_function_b1", "keras_predict_b1", "ort_raw_b32", "wrapper_run_b32", "keras_apps_tf2onnx_b32",
             "ort_float16_b32", "tf_function_b32", "keras_predict_b32"]
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
            text = f"{value:.0%}" if key.startswith("fraction") or key.endswith("size_over_float") else f"{value:.2f}"
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
        lines.append(
            f"| batch 1 profile, {kind} (int8 / float) | "
            + " | ".join(
                f"{q['profile_b1_ms']['int8'][kind]:.2f} / {q['profile_b1_ms']['float'][kind]:.2f}" for q in quantized
            )
            + " |"
        )
    lines.append("| file sizes (int8 / float / .tflite) | " + " | ".join(
        f"{q['sizes_mb']['int8']:.1f} / {q['sizes_mb']['float']:.1f} / {q['sizes_mb']['tflite']:.1f} MB"
        for q in quantized) + " |")
    return lines

