"""`onnx-mobilenets convert`: catalogue variants into validated ONNX artifacts (the [convert] extra)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from onnx_mobilenets import catalogue, download, preprocessing
from onnx_mobilenets.conversion.native_logs import native_logs_filtered
from onnx_mobilenets.errors import OnnxMobileNetsError
from onnx_mobilenets.runtime.images import load_image

CONVERT_EXTRA = "pip install 'onnx-mobilenets[convert]'"


def run(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is not for users
    with native_logs_filtered():  # the lines TF_CPP_MIN_LOG_LEVEL cannot silence
        try:
            from onnx_mobilenets.conversion import DEFAULT_OPSET
        except ImportError as e:
            raise SystemExit(f"error: conversion needs the [convert] extra: {CONVERT_EXTRA} ({e})") from None
        variants = _variants(args)
        images = _parity_images(args.parity_image, variants) if args.parity_image else None
        output = Path(args.output) if args.output else download.artifacts_dir()
        options = dict(opset=args.opset or DEFAULT_OPSET, logits=args.logits, nchw=args.nchw,
                       preprocessing=args.preprocessing, image_input=args.image_input,
                       weights_source=args.weights_source, batch=args.batch, float16=args.float16)
        outcomes = {}  # name -> "converted", "up to date", or why it failed
        try:
            for i, variant in enumerate(variants, 1):
                outcomes[variant.name] = _convert_one(f"[{i}/{len(variants)}] {variant.name}", variant, output, args,
                                                      options, images[variant.name] if images else None)
        except KeyboardInterrupt:
            print("\ninterrupted: no partial file is left; a rerun does what is left", file=sys.stderr)
            _summary(outcomes, variants, output, args.random_weights)
            return 130
    return _summary(outcomes, variants, output, args.random_weights)


def _convert_one(label: str, variant, output: Path, args, options: dict, images) -> str:
    """Convert one variant unless its artifact is up to date; its outcome, printed as it goes. The
    weights' source is fetched once, for both."""
    from onnx_mobilenets.conversion.convert import convert, fetch_source, is_up_to_date, spec_for

    try:
        spec = spec_for(variant.name, **options)
        source = fetch_source(variant, args.checkpoint, args.random_weights)
        if not args.force and is_up_to_date(spec, output, source, options["weights_source"]):
            print(f"{label}: up to date ({spec.path_in(output)})", flush=True)
            outcome = "up to date"
        else:
            print(f"{label}: converting (opset {spec.opset}{', random weights' if args.random_weights else ''})...",
                  flush=True)
            report = convert(spec, output, source, weights_source=options["weights_source"], images=images)
            print(_described(report, variant), flush=True)
            outcome = "converted"
        if args.ort:
            _write_ort_format(spec.path_in(output))
    except (OnnxMobileNetsError, FileNotFoundError, ValueError) as e:
        reason = " ".join(str(e).split())  # one line
        print(f"{label}: FAILED: {reason}", file=sys.stderr, flush=True)
        return reason
    finally:
        _release_tensorflow_memory()
    return outcome


def _write_ort_format(path: Path) -> None:
    """The artifact in ORT format beside it, made again each time (it takes seconds)."""
    from onnx_mobilenets.conversion.ort_format import write_ort_format

    made, operators = write_ort_format(path)
    print(f"    wrote {made} ({made.stat().st_size / 1e6:.1f} MB, the same outputs as the .onnx file exactly) and "
          f"its operator list for onnxruntime's minimal build, {operators.name}", flush=True)


def _summary(outcomes: dict, variants: list, output: Path, random_weights: bool) -> int:
    """Print what was converted, up to date, failed or not reached; exit status 0 only when every
    requested model is there."""
    converted = [n for n, o in outcomes.items() if o == "converted"]
    current = [n for n, o in outcomes.items() if o == "up to date"]
    failed = {n: o for n, o in outcomes.items() if o not in ("converted", "up to date")}
    missing = [v.name for v in variants if v.name not in outcomes]
    print(f"\n{len(converted)} converted, {len(current)} already up to date, {len(failed)} failed"
          + (f", {len(missing)} not reached" if missing else "") + f" (of {len(variants)}), in {output}")
    for name, reason in failed.items():
        print(f"  FAILED {name}: {reason}")
    if failed or missing:
        print("Run the same command again to do only what is left.")
    if output.resolve() == download.artifacts_dir().resolve():
        print(f"The artifacts are in the runtime's cache ({output}): OnnxMobileNet(NAME) finds them by name.")
    else:
        print(f"To load them by name: export {download.ARTIFACTS_URL_ENV}={output.resolve()} (or pass the .onnx path).")
    if random_weights:
        print("NOTE: these artifacts carry UNTRAINED RANDOM WEIGHTS (tests and benchmarks only).")
    return 1 if failed or missing else 0


def _variants(args) -> list:
    """The variants the command names, its arguments checked before any work."""
    if args.all == bool(args.names):
        raise ValueError("name one or more variants, or pass --all")
    if args.all and args.checkpoint:
        raise ValueError("--checkpoint names one variant's weights; it cannot be used with --all")
    if args.checkpoint and len(args.names) != 1:
        raise ValueError("--checkpoint goes with exactly one variant name")
    if args.all:  # the quantized models exist only as Google's trained .tflite files: no random weights
        return catalogue.list_variants(precision="float32" if args.random_weights else None)
    variants = [catalogue.get_variant(n) for n in args.names]
    quantized = [v.name for v in variants if v.quantized]
    if quantized and (args.random_weights or args.nchw or args.float16 or args.weights_source != "ema"):
        raise ValueError(f"{', '.join(quantized)}: quantized models are converted from Google's .tflite as they are; "
                         "--random-weights, --nchw, --float16 and --weights-source apply to float checkpoints only")
    return variants


def _described(report, variant) -> str:
    """What the command prints of a written artifact: where, its gates' numbers, its nodes."""
    parity = report.parity
    lines = [f"    wrote {report.path} ({report.size / 1e6:.1f} MB, sha256 {report.sha256[:12]}...)"]
    if variant.quantized:
        agreement = parity["runtime"]
        lines.append(f"    gates passed; parity with TFLite (XNNPACK) on {parity['inputs']} inputs: "
                     f"{agreement['identical']:.1%} of quantized logits identical, at most {agreement['max_steps']} "
                     f"step apart, top-1 agreement {agreement['top1_agreement']:.0%}")
    else:
        lines.append(f"    gates passed; parity with Keras on {parity['inputs']} inputs: "
                     + ", ".join(f"max |d{short}| {parity[kind]['max_abs_diff']:.1e} "
                                 f"(bound {parity[kind]['bound']:.1e}, {_headroom(parity[kind]['headroom'])})"
                                 for kind, short in (("logits", "logit"), ("log_probabilities", "log p")))
                     + f", top-1 agreement {parity['top1_agreement']:.0%}")
    lines.append("    nodes: " + ", ".join(f"{op} {n}" for op, n in report.census.items()))
    return "\n".join(lines)


def _headroom(value) -> str:
    return "identical" if value is None else f"{value:.0f}x headroom"


def _release_tensorflow_memory() -> None:
    """Forget the Keras graphs of the last model, so `--all` runs in constant memory."""
    import keras

    keras.backend.clear_session()


def _parity_images(paths, variants) -> dict:
    """Real images, preprocessed for each variant (resolution, float or uint8), for the parity gate."""
    images = [load_image(p) for p in paths]
    return {v.name: np.stack([preprocessing.network_input(im, v.resolution, v.preprocessing) for im in images])
            for v in variants}
