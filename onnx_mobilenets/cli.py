"""The `onnx-mobilenets` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from pathlib import Path

from . import catalogue, download
from ._native_logs import native_logs_filtered


def _cmd_list(args) -> int:
    from .runtime.artifacts import cached_artifact

    rows = [("name", "family", "alpha", "res", "top-1", "top-5", "MMACs", "Mparams", "ckpt sha256", "cached")]
    for v in catalogue.list_variants(args.family):
        cached = cached_artifact(v.name).is_file()
        rows.append((v.name, v.family, str(v.alpha), str(v.resolution), f"{v.top1:.1f}", f"{v.top5:.1f}",
                     str(v.macs_millions), f"{v.params_millions:.2f}", "published" if v.checkpoint_sha256 else "-",
                     "onnx" if cached else "-"))
    _print_table(rows)
    print(f"\naliases: {', '.join(f'{a} = {n}' for a, n in catalogue.ALIASES.items())}; cache: {download.cache_dir()}")
    return 0


def _cmd_predict(args) -> int:
    from .runtime import OnnxMobileNet

    providers = args.providers.split(",") if "," in args.providers else args.providers
    model = OnnxMobileNet(args.model, providers=providers)
    results = model.predict(list(args.images), top=args.top)
    if args.json:
        print(json.dumps({
            "model": model.variant, "providers": model.providers,
            "results": [{"image": str(path), "predictions": [p._asdict() for p in preds]}
                        for path, preds in zip(args.images, results)],
        }, indent=1))
        return 0
    for path, preds in zip(args.images, results):
        print(f"{path}  ({model.variant}, {model.providers[0]})")
        rows = [("rank", "class", "synset", "label", "probability")]
        rows += [(str(r), str(p.class_index), p.synset, p.label, f"{p.probability:.4f}") for r, p in enumerate(preds, 1)]
        _print_table(rows)
        print()
    return 0


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
    except ImportError as e:
        raise SystemExit(f"error: conversion needs the [convert] extra: pip install 'onnx-mobilenets[convert]' ({e})")
    if args.all == bool(args.names):
        raise ValueError("name one or more variants, or pass --all")
    if args.all and args.checkpoint:
        raise ValueError("--checkpoint names one variant's weights; it cannot be used with --all")
    if args.checkpoint and len(args.names) != 1:
        raise ValueError("--checkpoint goes with exactly one variant name")
    names = [v.name for v in catalogue.list_variants()] if args.all else [catalogue.get_variant(n).name for n in args.names]
    images = _parity_images(args.parity_image, names) if args.parity_image else None
    opset = args.opset or DEFAULT_OPSET
    output = Path(args.output) if args.output else download.artifacts_dir()
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}: converting (opset {opset}"
              f"{', random weights' if args.random_weights else ''})...", flush=True)
        report = convert_variant(
            name, output, checkpoint=args.checkpoint, random_weights=args.random_weights, opset=opset,
            weights_source=args.weights_source, logits=args.logits, nchw=args.nchw,
            images=images[name] if images else None,
        )
        census = ", ".join(f"{op} {n}" for op, n in report.census.items())
        parity = report.parity
        print(f"    wrote {report.path} ({report.size / 1e6:.1f} MB, sha256 {report.sha256[:12]}...)")
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


def _parity_images(paths, names):
    """Real images, preprocessed for each variant's resolution, for the parity gate."""
    import numpy as np
    from PIL import Image

    from .runtime.preprocessing import image_to_array

    images = [Image.open(p).convert("RGB") for p in paths]
    return {
        name: np.stack([image_to_array(im, catalogue.get_variant(name).resolution, catalogue.SLIM_EVAL_PREPROCESSING)
                        for im in images])
        for name in names
    }


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
    p.set_defaults(run=_cmd_list)

    p = commands.add_parser("convert", help="convert TF-slim checkpoints into validated ONNX files")
    p.add_argument("names", nargs="*", metavar="NAME", help="catalogue names or aliases (v1, v2)")
    p.add_argument("--all", action="store_true", help="every catalogue variant")
    p.add_argument("--checkpoint", help="local slim checkpoint (tarball, folder or prefix) instead of the official one")
    p.add_argument("--output", help="output folder (default: the runtime's cache, where OnnxMobileNet(NAME) looks)")
    p.add_argument("--opset", type=int, help="ONNX opset, 13 to the newest tf2onnx supports (default 17)")
    p.add_argument("--weights-source", choices=("ema", "raw"), default="ema")
    p.add_argument("--logits", action="store_true", help="output logits instead of probabilities")
    p.add_argument("--nchw", action="store_true", help="take NCHW input instead of NHWC")
    p.add_argument("--random-weights", action="store_true", help="untrained weights (benchmarks, tests)")
    p.add_argument("--parity-image", action="append", metavar="FILE", help="real image for the parity gate (repeatable)")
    p.set_defaults(run=_cmd_convert)

    p = commands.add_parser("predict", help="classify images (onnxruntime only)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default="v2", help="alias, catalogue name or .onnx path (default v2)")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--providers", default="auto", help="auto, cuda, cpu, or a comma-separated onnxruntime provider list")
    p.set_defaults(run=_cmd_predict)

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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.run(args)
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


if __name__ == "__main__":
    sys.exit(main())
