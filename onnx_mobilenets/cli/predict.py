"""`onnx-mobilenets predict`: a few images as a table, many into a file (resumable), or on Ray."""

from __future__ import annotations

import json
import sys
import time

from onnx_mobilenets.progress import progress_bar
from onnx_mobilenets.runtime import OnnxMobileNet
from onnx_mobilenets.runtime.model import DEFAULT_BATCH_SIZE
from onnx_mobilenets.tables import aligned_table

from . import outputs


def run(args) -> int:
    sources = outputs.expand_sources(args.paths, args.recursive)
    if args.resume and not args.output:
        raise ValueError("--resume continues an --output file; name it")
    if args.ray is not None:
        return _on_ray(args, sources)
    if not args.output:
        return _as_table(args, sources)
    fmt = outputs.output_format(args.output, args.format)
    done = outputs.finished_paths(args.output, fmt) if args.resume else set()
    writer = outputs.RowWriter(args.output, fmt, resume=args.resume)  # an unwritable output fails before any work
    todo = [s for s in sources if s not in done]
    try:
        model = model_of(args)
    except BaseException:
        writer.discard()  # no model, no run: leave no empty output behind
        raise
    try:
        return _to_file(args, model, todo, writer, skipped=len(sources) - len(todo))
    finally:
        writer.close()


def providers_of(text: str):
    """--providers: a name ("auto", "cuda", "cpu") or a comma-separated onnxruntime provider list."""
    return text.split(",") if "," in text else text


def model_of(args) -> OnnxMobileNet:
    """The model the command's --model, --providers, --batch-size and --preprocessing name."""
    providers = providers_of(args.providers)
    return OnnxMobileNet(args.model, providers=providers, batch_size=args.batch_size,
                         preprocessing=getattr(args, "preprocessing", None))


def _to_file(args, model, todo, writer, skipped) -> int:
    bar = progress_bar(len(todo), model.variant + (f" ({skipped} already done)" if skipped else ""),
                       show=None if not args.quiet else False)
    errors = done = 0
    started = time.perf_counter()
    rows = []
    try:
        for result in model.predict_stream(todo, top=args.top, workers=args.workers):
            rows.append(result.as_row())
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
    if bar is not None:
        print(f"{done} images ({errors} failed) in {seconds:.1f} s, {done / max(seconds, 1e-9):.1f} images/s "
              f"-> {args.output}", file=sys.stderr)
    return 1 if errors else 0


def _as_table(args, sources) -> int:
    """Without --output: a table (or --json) for a few images, in input order, errors included."""
    model = model_of(args)
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
            print(aligned_table(("rank", "class", "synset", "label", "probability"),
                                [(i, p.class_index, p.synset, p.label, f"{p.probability:.4f}")
                                 for i, p in enumerate(r.predictions, 1)]))
            print()
    return 1 if any(r.error for r in results) else 0


def _on_ray(args, sources) -> int:
    from onnx_mobilenets.runtime import ray as ray_runner

    if not args.output:
        raise ValueError("--ray writes Parquet: name the --output folder or URI")
    written = ray_runner.predict_to_parquet(sources, args.output, model=args.model, address=args.ray or None,
                                            top=args.top, batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
                                            quiet=args.quiet)
    return 1 if written["errors"] else 0
