"""The `onnx-mobilenets` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from pathlib import Path

from . import catalogue, download
from ._native_logs import native_logs_filtered


def _cmd_list(args) -> int:
    from .runtime.artifacts import cached_artifact

    rows = [("name", "family", "alpha", "res", "precision", "top-1", "top-5", "MMACs", "Mparams", "sha256", "cached")]
    for v in catalogue.list_variants(args.family, args.precision):
        cached = cached_artifact(v.name).is_file()
        rows.append((v.name, v.family, str(v.alpha), str(v.resolution), v.precision, _percent(v.top1), _percent(v.top5),
                     str(v.macs_millions), f"{v.params_millions:.2f}", "published" if v.checkpoint_sha256 else "-",
                     "onnx" if cached else "-"))
    _print_table(rows)
    print(f"\naliases: {', '.join(f'{a} = {n}' for a, n in catalogue.ALIASES.items())}; cache: {download.cache_dir()}")
    print("uint8: Google's quantization-aware-trained models; top-1/top-5 '-' where Google publishes none")
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cmd_predict(args) -> int:
    from . import batch

    sources = batch.expand_sources(args.paths, args.recursive)
    if args.resume and not args.output:
        raise ValueError("--resume continues an --output file; name it")
    if args.ray is not None:
        return _predict_on_ray(args, sources)
    if not args.output:
        return _predict_table(args, sources)
    fmt = batch.output_format(args.output, args.format)
    done = batch.finished_paths(args.output, fmt) if args.resume else set()
    writer = batch.RowWriter(args.output, fmt, resume=args.resume)  # an unwritable output fails before any work
    todo = [s for s in sources if s not in done]
    try:
        model = _model(args)
        return _predict_to_file(args, model, todo, writer, skipped=len(sources) - len(todo))
    finally:
        writer.close()


def _model(args):
    from .runtime import OnnxMobileNet

    providers = args.providers.split(",") if "," in args.providers else args.providers
    return OnnxMobileNet(args.model, providers=providers, batch_size=args.batch_size)


def _predict_to_file(args, model, todo, writer, skipped) -> int:
    import time

    show = sys.stderr.isatty() and not args.quiet
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="img", dynamic_ncols=True, file=sys.stderr,
                   desc=f"{model.variant}" + (f" ({skipped} already done)" if skipped else ""))
    errors = done = 0
    started = time.perf_counter()
    rows = []
    from .batch import result_row

    try:
        for result in model.predict_stream(todo, top=args.top, workers=args.workers):
            rows.append(result_row(result))
            errors += result.error is not None
            done += 1
            if len(rows) >= model.batch_size:
                writer.write(rows)
                rows = []
            if bar is not None:
                bar.update(1)
                if result.error is not None:
                    bar.set_postfix(errors=errors, refresh=False)
        writer.write(rows)
    except KeyboardInterrupt:
        writer.write(rows)
        print(f"\ninterrupted after {done} of {len(todo)} images; {args.output} holds every finished row: "
              "rerun with --resume to finish", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    if show:
        print(f"{done} images ({errors} failed) in {seconds:.1f} s, {done / max(seconds, 1e-9):.1f} images/s "
              f"-> {args.output}", file=sys.stderr)
    return 1 if errors else 0


def _predict_table(args, sources) -> int:
    """Without --output: a table (or --json) for a few images, in input order, errors included."""
    model = _model(args)
    results = list(model.predict_stream(sources, top=args.top, workers=args.workers))
    if args.json:
        print(json.dumps({
            "model": model.variant, "providers": model.providers,
            "results": [{"image": str(r.source), "predictions": [p._asdict() for p in r.predictions or []],
                         "error": r.error} for r in results],
        }, indent=1))
    else:
        for r in results:
            print(f"{r.source}  ({model.variant}, {model.providers[0]})")
            if r.error:
                print(f"  error: {r.error}\n")
                continue
            rows = [("rank", "class", "synset", "label", "probability")]
            rows += [(str(i), str(p.class_index), p.synset, p.label, f"{p.probability:.4f}")
                     for i, p in enumerate(r.predictions, 1)]
            _print_table(rows)
            print()
    return 1 if any(r.error for r in results) else 0


def _predict_on_ray(args, sources) -> int:
    from .runtime import ray as ray_runner

    if not args.output:
        raise ValueError("--ray writes Parquet: name the --output folder or URI")
    written = ray_runner.predict_to_parquet(sources, args.output, model=args.model, address=args.ray or None,
                                            top=args.top, batch_size=args.batch_size, quiet=args.quiet)
    return 1 if written["errors"] else 0


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate, labelled_images

    model = _model(args)
    items = labelled_images(args.folder, model.labels, args.labels)
    writer = None
    if args.output:
        from . import batch

        writer = batch.RowWriter(args.output, batch.output_format(args.output, None))
    bar = None
    if sys.stderr.isatty() and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", dynamic_ncols=True, file=sys.stderr, desc=model.variant)
    try:
        report = evaluate(model, items, workers=args.workers, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    rows = report.pop("rows")
    if writer is not None:
        writer.write([{k: r[k] for k in batch.COLUMNS} for r in rows])
        writer.close()
    variant = _catalogue_variant(report["model"])
    report["published_top1"] = variant.top1 if variant else None
    report["published_top5"] = variant.top5 if variant else None
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        def percent(value):
            return "-" if value is None else f"{100 * value:.2f} %"

        print(f"{report['model']}: top-1 {percent(report['top1'])}, top-5 {percent(report['top5'])} on "
              f"{report['classified']} images ({report['errors']} could not be read), "
              f"{report['images_per_s']:.1f} images/s")
        if variant and variant.top1 is not None:
            print(f"published for {variant.name}: top-1 {variant.top1:.1f} %, top-5 {variant.top5:.1f} % "
                  "(on ImageNet's 50,000 validation images)")
    return 1 if report["errors"] else 0


def _catalogue_variant(name):
    try:
        return catalogue.get_variant(name)
    except ValueError:
        return None


def _cmd_verify(args) -> int:
    # Before anything loads CUDA: TensorRT then computes in float32, which is what verify checks
    # (onnxruntime has no per-session TF32 switch for TensorRT; see onnx_mobilenets.engines).
    os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from . import verify
    from .runtime.artifacts import artifacts_dir, cached_artifact, looks_like_path

    if args.all:
        targets = sorted(artifacts_dir().glob("*.onnx")) + [Path(t) for t in args.targets if looks_like_path(t)]
    elif args.targets:
        targets = []
        for target in args.targets:
            if looks_like_path(target):
                targets.append(Path(target))
            else:
                path = cached_artifact(catalogue.get_variant(target).name)
                if not path.is_file():
                    raise FileNotFoundError(f"{target} is not in the cache ({path}); convert it or pass a path")
                targets.append(path)
    else:
        raise ValueError("name artifacts (catalogue names or .onnx paths), or pass --all for the whole cache")
    if not targets:
        raise FileNotFoundError(f"no artifacts in the cache ({artifacts_dir()}) to verify")
    rows = []
    with native_logs_filtered():  # the Keras reference imports TensorFlow
        for path in targets:
            if not path.is_file():
                raise FileNotFoundError(f"artifact {path} does not exist")
            rows.extend(verify.verify_artifact(path, use_keras=not args.no_keras))
    print(verify.rows_as_json(rows) if args.json else verify.format_table(rows))
    failed = [r for r in rows if not r.passed]
    if failed and not args.json:
        print(f"\n{len(failed)} of {len(rows)} comparisons FAILED", file=sys.stderr)
    return 1 if failed else 0


def _cmd_bench(args) -> int:
    from .benchmark import main as bench_main

    return bench_main(args.bench_args)


def _cmd_doctor(args) -> int:
    from .runtime import doctor

    print(doctor.report())
    return 0


def _cmd_convert(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter is not for users
    with native_logs_filtered():  # the lines TF_CPP_MIN_LOG_LEVEL cannot silence
        return _convert(args)


def _convert(args) -> int:
    try:
        from .conversion.convert import convert_variant
        from .conversion.export import DEFAULT_OPSET
        from .conversion.quantized import convert_quantized
    except ImportError as e:
        raise SystemExit(f"error: conversion needs the [convert] extra: pip install 'onnx-mobilenets[convert]' ({e})")
    if args.all == bool(args.names):
        raise ValueError("name one or more variants, or pass --all")
    if args.all and args.checkpoint:
        raise ValueError("--checkpoint names one variant's weights; it cannot be used with --all")
    if args.checkpoint and len(args.names) != 1:
        raise ValueError("--checkpoint goes with exactly one variant name")
    if args.all:  # the quantized models exist only as Google's trained .tflite files: no random weights
        variants = catalogue.list_variants(precision="float32" if args.random_weights else None)
    else:
        variants = [catalogue.get_variant(n) for n in args.names]
    quantized = [v.name for v in variants if v.quantized]
    if quantized and (args.random_weights or args.nchw or args.weights_source != "ema"):
        raise ValueError(f"{', '.join(quantized)}: quantized models are converted from Google's .tflite as they are; "
                         "--random-weights, --nchw and --weights-source apply to float checkpoints only")
    images = _parity_images(args.parity_image, variants) if args.parity_image else None
    opset = args.opset or DEFAULT_OPSET
    output = Path(args.output) if args.output else download.artifacts_dir()
    for i, variant in enumerate(variants, 1):
        name = variant.name
        print(f"[{i}/{len(variants)}] {name}: converting (opset {opset}"
              f"{', random weights' if args.random_weights else ''})...", flush=True)
        if variant.quantized:
            report = convert_quantized(name, output, checkpoint=args.checkpoint, opset=opset, logits=args.logits,
                                       images=images[name] if images else None)
        else:
            report = convert_variant(
                name, output, checkpoint=args.checkpoint, random_weights=args.random_weights, opset=opset,
                weights_source=args.weights_source, logits=args.logits, nchw=args.nchw,
                images=images[name] if images else None,
            )
        census = ", ".join(f"{op} {n}" for op, n in report.census.items())
        parity = report.parity
        print(f"    wrote {report.path} ({report.size / 1e6:.1f} MB, sha256 {report.sha256[:12]}...)")
        if variant.quantized:
            agreement = parity["runtime"]
            print(f"    gates passed; parity with TFLite (XNNPACK) on {parity['inputs']} inputs: "
                  f"{agreement['identical']:.1%} of quantized logits identical, at most {agreement['max_steps']} "
                  f"step apart, top-1 agreement {agreement['top1_agreement']:.0%}")
        else:
            print(f"    gates passed; parity with Keras on {parity['inputs']} inputs: "
                  + ", ".join(f"max |d{short}| {parity[kind]['max_abs_diff']:.1e} "
                              f"(bound {parity[kind]['bound']:.1e}, {_headroom(parity[kind]['headroom'])})"
                              for kind, short in (("logits", "logit"), ("log_probabilities", "log p")))
                  + f", top-1 agreement {parity['top1_agreement']:.0%}")
        print(f"    nodes: {census}", flush=True)
        _release_tensorflow_memory()
    if output.resolve() == download.artifacts_dir().resolve():
        print(f"The artifacts are in the runtime's cache ({output}): OnnxMobileNet(NAME) finds them by name.")
    else:
        print(f"To load them by name: export {download.ARTIFACTS_URL_ENV}={output.resolve()} (or pass the .onnx path).")
    if args.random_weights:
        print("NOTE: these artifacts carry UNTRAINED RANDOM WEIGHTS (tests and benchmarks only).")
    return 0


def _headroom(value) -> str:
    return "identical" if value is None else f"{value:.0f}x headroom"


def _release_tensorflow_memory() -> None:
    """Forget the Keras graphs of the last model, so `--all` runs in constant memory."""
    import keras

    keras.backend.clear_session()


def _parity_images(paths, variants) -> dict:
    """Real images, preprocessed for each variant (resolution, float or uint8), for the parity gate."""
    import numpy as np

    from . import preprocessing
    from .runtime.images import load_image

    images = [load_image(p) for p in paths]
    return {v.name: np.stack([preprocessing.network_input(im, v.resolution, v.preprocessing) for im in images])
            for v in variants}


def _print_table(rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnx-mobilenets", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="show the catalogue of published variants")
    p.add_argument("--family", choices=("v1", "v2"))
    p.add_argument("--precision", choices=catalogue.PRECISIONS, help="float32 checkpoints or uint8 quantized models")
    p.set_defaults(run=_cmd_list)

    p = commands.add_parser("convert", help="convert TF-slim checkpoints into validated ONNX files")
    p.add_argument("names", nargs="*", metavar="NAME", help="catalogue names or aliases (v1, v2)")
    p.add_argument("--all", action="store_true", help="every catalogue variant: 38 float and 38 uint8 "
                                                       "(with --random-weights the 38 float ones)")
    p.add_argument("--checkpoint", help="local slim checkpoint (tarball, folder or prefix), or for a *_quant variant "
                                        "its release tarball, instead of the official download")
    p.add_argument("--output", help="output folder (default: the runtime's cache, where OnnxMobileNet(NAME) looks)")
    p.add_argument("--opset", type=int, help="ONNX opset, 13 to the newest tf2onnx supports (default 17)")
    p.add_argument("--weights-source", choices=("ema", "raw"), default="ema")
    p.add_argument("--logits", action="store_true", help="output logits instead of probabilities")
    p.add_argument("--nchw", action="store_true", help="take NCHW input instead of NHWC")
    p.add_argument("--random-weights", action="store_true", help="untrained weights (benchmarks, tests)")
    p.add_argument("--parity-image", action="append", metavar="FILE", help="real image for the parity gate (repeatable)")
    p.set_defaults(run=_cmd_convert)

    p = commands.add_parser("predict", help="classify images: a few as a table, many into a file (onnxruntime only)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="an image, a folder of images (by extension), or @FILE listing paths one per line")
    p.add_argument("--model", default="v2", help="alias, catalogue name or .onnx path (default v2)")
    p.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    p.add_argument("--recursive", action="store_true", help="look for images in subfolders too")
    p.add_argument("--output", metavar="FILE", help="write rows here as they come (.csv, .jsonl, .parquet); "
                                                    "with --ray a Parquet folder or URI")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), help="output format (default: from FILE's suffix)")
    p.add_argument("--batch-size", type=int, default=32, help="images per inference batch (default 32)")
    p.add_argument("--workers", type=int, help="decoding threads (default: the number of cores)")
    p.add_argument("--resume", action="store_true", help="skip the images the --output file already has")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", action="store_true", help="without --output: print JSON instead of a table")
    p.add_argument("--providers", default="auto", help="auto, cuda, cpu, or a comma-separated onnxruntime provider list")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Ray cluster (ADDRESS, else RAY_ADDRESS, else a local one); writes Parquet")
    p.set_defaults(run=_cmd_predict)

    p = commands.add_parser("evaluate", help="top-1/top-5 accuracy on a labelled image folder")
    p.add_argument("folder", metavar="DIR", help="images in synset-named class folders (n01440764/...), or see --labels")
    p.add_argument("--model", default="v2", help="alias, catalogue name or .onnx path (default v2)")
    p.add_argument("--labels", metavar="FILE.csv", help="file,label rows (label: synset or class index 0..999)")
    p.add_argument("--output", metavar="FILE", help="also write the per-image rows (.csv, .jsonl, .parquet)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, help="decoding threads (default: the number of cores)")
    p.add_argument("--providers", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_evaluate)

    p = commands.add_parser("verify", help="check the runtimes here against Keras or the artifacts' golden outputs")
    p.add_argument("targets", nargs="*", metavar="NAME_OR_PATH", help="cached catalogue names or .onnx paths")
    p.add_argument("--all", action="store_true", help="every artifact in the cache")
    p.add_argument("--no-keras", action="store_true", help="compare with the golden outputs even if TensorFlow is installed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_verify)

    p = commands.add_parser("bench", help="benchmark against the alternatives (same as tools/benchmark.py)",
                            add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(run=_cmd_bench)

    p = commands.add_parser("doctor", help="report onnxruntime wheels, providers, CUDA libraries and the cache")
    p.set_defaults(run=_cmd_doctor)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    main_thread = threading.current_thread() is threading.main_thread()
    # A `kill` stops a long run like Ctrl-C does: files are closed and say how far they got.
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a package error: say what failed without a traceback
        from .errors import OnnxMobileNetsError

        if isinstance(e, OnnxMobileNetsError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
