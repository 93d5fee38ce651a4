"""The `onnx-mobilenets` command line: the parser, and `main`, which runs one command module and turns
the errors users can cause into a message and an exit status (2: usage, 1: a failed job)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from onnx_mobilenets import catalogue, preprocessing
from onnx_mobilenets.builtin import DEFAULT_MODEL
from onnx_mobilenets.errors import OnnxMobileNetsError

from . import bench, convert, doctor, evaluate, listing, predict, publish, serve, verify, web

MODEL_HELP = (f"alias, catalogue name, hf://owner/repo[@revision] or .onnx path (default {DEFAULT_MODEL}: the "
              "built-in model, no download)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnx-mobilenets",
                                     description="MobileNet V1 and V2 as validated ONNX models")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("list", help="show the catalogue of published variants")
    p.add_argument("--family", choices=("v1", "v2"))
    p.add_argument("--precision", choices=catalogue.PRECISIONS, help="float32 checkpoints or uint8 quantized models")
    p.set_defaults(run=listing.run)

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
    p.add_argument(
        "--parity-image", action="append", metavar="FILE", help="real image for the parity gate (repeatable)"
    )
    p.add_argument("--force", action="store_true", help="convert again even what is up to date in the output folder")
    p.add_argument("--image-input", action="store_true",
                   help="the preprocessing inside the model, whose input is the decoded image (NAME-image.onnx)")
    _preprocessing_option(p, "the preprocessing the artifact records (holds with --image-input)", preprocessing.DEFAULT)
    p.add_argument("--batch", type=_positive, metavar="N",
                   help="a fully static input of batch N (NAME-bN.onnx): what NNAPI and CoreML take whole")
    p.add_argument("--float16", action="store_true",
                   help="the network in float16 (NAME-fp16.onnx): half the size, for GPUs; slower on most CPUs")
    p.add_argument("--ort", action="store_true", help="also NAME.ort, for onnxruntime's minimal mobile build, and "
                                                      "NAME.required_operators.config, the operators it needs")
    p.set_defaults(run=convert.run)

    p = commands.add_parser("predict", help="classify images: a few as a table, many into a file (onnxruntime only)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="an image, a folder of images (by extension), or @FILE listing paths one per line")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--top", type=_classes, default=5, help="classes per image (default 5)")
    p.add_argument("--recursive", action="store_true", help="look for images in subfolders too")
    p.add_argument("--output", metavar="FILE", help="write rows here as they come (.csv, .jsonl, .parquet); "
                                                    "with --ray a Parquet folder or URI")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), help="output format (default: from FILE's suffix)")
    p.add_argument("--batch-size", type=_positive, help="images per inference batch (default 32, or a fixed-batch "
                                                        "artifact's own)")
    p.add_argument("--workers", type=_positive, help="decoding threads (default: the number of cores)")
    p.add_argument("--resume", action="store_true", help="skip the images the --output file already has")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.add_argument("--json", action="store_true", help="without --output: print JSON instead of a table")
    p.add_argument(
        "--providers", default="auto", help="auto, cuda, cpu, or a comma-separated onnxruntime provider list"
    )
    _preprocessing_option(p, "the artifact's own (default), or slim: TF-slim's evaluation preprocessing exactly")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Ray cluster (ADDRESS, else RAY_ADDRESS, else a local one); writes Parquet")
    p.set_defaults(run=predict.run)

    p = commands.add_parser("evaluate", help="top-1/top-5 accuracy on a labelled image folder")
    p.add_argument(
        "folder", metavar="DIR", help="images in synset-named class folders (n01440764/...), or see --labels"
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--labels", metavar="FILE.csv", help="file,label rows (label: synset or class index 0..999)")
    p.add_argument("--output", metavar="FILE", help="also write the per-image rows (.csv, .jsonl, .parquet)")
    p.add_argument("--batch-size", type=_positive, help="default 32, or a fixed-batch artifact's own")
    p.add_argument("--workers", type=_positive, help="decoding threads (default: the number of cores)")
    p.add_argument("--providers", default="auto")
    _preprocessing_option(p, "the artifact's own (default), or slim: TF-slim's, to reproduce the published accuracy")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=evaluate.run)

    p = commands.add_parser("verify", help="check the runtimes here against Keras or the artifacts' golden outputs")
    p.add_argument("targets", nargs="*", metavar="NAME_OR_PATH", help="cached catalogue names or .onnx paths")
    p.add_argument("--all", action="store_true", help="every artifact in the cache")
    p.add_argument(
        "--no-keras", action="store_true", help="compare with the golden outputs even if TensorFlow is installed"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--mobile", action="store_true", help="instead: what NNAPI and CoreML would take of each artifact "
                                                         "(onnxruntime's mobile usability checker; needs onnx)")
    p.set_defaults(run=verify.run)

    p = commands.add_parser("bench", help="benchmark against the alternatives (same as tools/benchmark.py)",
                            add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p.set_defaults(run=bench.run)

    p = commands.add_parser("web", help="write a static site that classifies images in the browser (onnxruntime-web)")
    p.add_argument("name", nargs="?", metavar="NAME", help="catalogue name or alias (its image-in artifact, found or "
                                                           "converted), or the path of an image-in .onnx")
    p.add_argument("--output", metavar="DIR", help="the site's folder")
    p.add_argument("--serve", metavar="DIR", help="instead: serve a site written before, cross-origin isolated "
                                                  "(WebAssembly threads), on 127.0.0.1")
    p.add_argument("--port", type=_port, default=8000, help="with --serve (default 8000; 0: any free port)")
    p.add_argument("--ort-web", metavar="DIR",
                   help="copy onnxruntime-web from this dist folder (offline sites) instead of its pinned URL")
    _preprocessing_option(p, "the preprocessing inside the artifact", preprocessing.DEFAULT)
    p.set_defaults(run=web.run)

    p = commands.add_parser("publish", help="converted artifacts as Hugging Face Hub model repositories (model cards)")
    p.add_argument("names", nargs="*", metavar="NAME", help="catalogue names or aliases")
    p.add_argument("--all", action="store_true", help="every variant with converted artifacts")
    p.add_argument("--output", required=True, metavar="DIR", help="one folder per variant goes here")
    p.add_argument("--from", dest="source", metavar="DIR", help="the artifacts' folder (default: the runtime's cache)")
    p.add_argument("--evaluation", action="append", metavar="FILE.json",
                   help="an `evaluate --json` report: its measured accuracy goes into the card (repeatable)")
    p.set_defaults(run=publish.run)

    p = commands.add_parser("serve", help="classify over HTTP (Ray Serve, batching requests): POST /v1/classify")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_positive, default=8000)
    p.add_argument("--replicas", type=_positive, default=1, help="copies of the model, across the cluster's nodes")
    p.add_argument("--max-batch-size", type=_positive, default=32, help="requests batched into one run (default 32)")
    p.add_argument("--batch-wait-ms", type=_milliseconds, default=5.0,
                   help="how long a batch waits to fill (default 5)")
    p.add_argument("--max-body-mb", type=_megabytes, default=32.0, help="larger request bodies get 413 (default 32)")
    p.add_argument("--address", metavar="RAY_ADDRESS", help="a running Ray cluster (default: RAY_ADDRESS, else "
                                                            "a local Ray started and stopped with the server)")
    p.add_argument("--providers", default="auto", help="auto, cuda, cpu, or a comma-separated provider list")
    p.add_argument("--threads", type=_positive, help="onnxruntime threads per replica (default: all cores)")
    p.set_defaults(run=serve.run)

    p = commands.add_parser("doctor", help="report onnxruntime wheels, providers, CUDA libraries and the cache")
    p.set_defaults(run=doctor.run)
    return parser


def _preprocessing_option(command, meaning: str, default=None) -> None:
    command.add_argument("--preprocessing", choices=preprocessing.NAMES, default=default,
                         help=f"{meaning} (default: {default})" if default else meaning)


def _positive(text: str) -> int:
    """An argument that must be a whole number of at least 1: refused with the usage errors, before
    anything is read or written."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text!r}")
    return int(text)


def _classes(text: str) -> int:
    value = _positive(text)
    if value > 1000:
        raise argparse.ArgumentTypeError(f"must be at most 1000 (the ImageNet classes), got {text!r}")
    return value


def _number_within(text: str, accepts, meaning: str) -> float:
    """A number that `accepts` takes, else a usage error saying it `must be ...`."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not accepts(value):
        raise argparse.ArgumentTypeError(f"must be {meaning}, got {text!r}")
    return value


def _milliseconds(text: str) -> float:
    return _number_within(text, lambda v: 0 <= v <= 10_000, "a number of milliseconds from 0 to 10000")


def _megabytes(text: str) -> float:
    return _number_within(text, lambda v: 0 < v <= 4096, "a size in MB above 0 and at most 4096")


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
    except OnnxMobileNetsError as e:  # a package error: say what failed without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
