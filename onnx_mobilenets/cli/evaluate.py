"""`onnx-mobilenets evaluate`: top-1 and top-5 accuracy on a labelled image folder, to check an
artifact against the catalogue's published accuracy (ImageNet's 50,000 validation images, with
TF-slim's evaluation preprocessing: ``--preprocessing slim``).

Labels come from the layout most people keep, one folder per synset
(``n01440764/ILSVRC2012_val_00000293.JPEG``), or from a CSV file of ``file,label`` rows where the
label is a WordNet id (``n01440764``) or a class index 0..999 and the file is relative to the folder.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Optional

from onnx_mobilenets import catalogue
from onnx_mobilenets.progress import progress_bar

from . import outputs
from .predict import model_of


def run(args) -> int:
    model = model_of(args)
    items = labelled_images(args.folder, model.labels, args.labels)
    writer = outputs.RowWriter(args.output, outputs.output_format(args.output, None)) if args.output else None
    bar = progress_bar(len(items), model.variant, show=None if not args.quiet else False)
    try:
        report = evaluate(model, items, workers=args.workers, progress=bar)
    except BaseException:
        if writer is not None:
            writer.discard()  # the rows are written at the end: an interrupted run leaves no partial file
        raise
    finally:
        if bar is not None:
            bar.close()
    rows = report.pop("rows")
    if writer is not None:
        writer.write([{k: r[k] for k in outputs.COLUMNS} for r in rows])
        writer.close()
    variant = _catalogue_variant(report["model"])
    report["published_top1"] = variant.top1 if variant else None
    report["published_top5"] = variant.top5 if variant else None
    report["preprocessing"] = model.preprocessing
    print(json.dumps(report, indent=1) if args.json else _summary(report, variant))
    return 1 if report["errors"] else 0


def _summary(report: dict, variant) -> str:
    def percent(value):
        return "-" if value is None else f"{100 * value:.2f} %"

    lines = [f"{report['model']}: top-1 {percent(report['top1'])}, top-5 {percent(report['top5'])} on "
             f"{report['classified']} images ({report['errors']} could not be read), "
             f"{report['images_per_s']:.1f} images/s, {report['preprocessing']} preprocessing"]
    if variant and variant.top1 is not None:
        lines.append(f"published for {variant.name}: top-1 {variant.top1:.1f} %, top-5 {variant.top5:.1f} % "
                     "(on ImageNet's 50,000 validation images, TF-slim's preprocessing: --preprocessing slim)")
    return "\n".join(lines)


def _catalogue_variant(name):
    try:
        return catalogue.get_variant(name)
    except ValueError:
        return None


def labelled_images(folder, classes, labels_csv: Optional[str] = None) -> list:
    """[(image path, class index)], from synset-named subfolders of `folder` or from `labels_csv`.
    `classes` are the model's ((wnid, label), ...) in class-index order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    index_of = {wnid: i for i, (wnid, _) in enumerate(classes)}
    if labels_csv:
        return _from_csv(folder, Path(labels_csv), index_of, len(classes))
    items, unknown = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if sub.name not in index_of:
            unknown.append(sub.name)
            continue
        items += [(str(path), index_of[sub.name]) for path in outputs.folder_images(sub, recursive=True)]
    if unknown:
        raise ValueError(f"{folder}: subfolders {', '.join(unknown[:5])}{'...' if len(unknown) > 5 else ''} are not "
                         "ImageNet synsets (n01440764, ...); name class folders by synset or pass --labels FILE.csv")
    if not items:
        raise ValueError(f"{folder} holds no synset-named subfolders with images; or pass --labels FILE.csv")
    return items


def _from_csv(folder: Path, path: Path, index_of: dict, count: int) -> list:
    if not path.is_file():
        raise FileNotFoundError(f"labels file {path} does not exist")
    items = []
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row or (number == 1 and row[0].strip().lower() in ("file", "path", "image")):
                continue
            if len(row) < 2:
                raise ValueError(f"{path} line {number}: expected 'file,label', got {row}")
            name, label = row[0].strip(), row[1].strip()
            if label in index_of:
                index = index_of[label]
            elif label.isdigit() and int(label) < count:
                index = int(label)
            else:
                raise ValueError(
                    f"{path} line {number}: label {label!r} is neither a synset nor a class index 0..{count - 1}"
                )
            image = Path(name) if Path(name).is_absolute() else folder / name
            items.append((str(image), index))
    if not items:
        raise ValueError(f"{path} lists no images")
    return items


def evaluate(model, items, *, workers: Optional[int] = None, progress=None) -> dict:
    """Top-1/top-5 of `model` on [(path, class index)]; images that cannot be read are counted as
    errors, not as wrong answers. Returns the numbers and the per-image rows."""
    started = time.perf_counter()
    truth = dict(items)
    top1 = top5 = errors = 0
    rows = []
    for result in model.predict_stream([path for path, _ in items], top=5, workers=workers):
        row = result.as_row()
        row["true_class_index"] = truth[str(result.source)]
        rows.append(row)
        if result.error:
            errors += 1
        else:
            top1 += row["class_indices"][0] == row["true_class_index"]
            top5 += row["true_class_index"] in row["class_indices"]
        if progress is not None:
            progress.update(1)
    seconds = time.perf_counter() - started
    classified = len(items) - errors
    return {"model": model.variant, "images": len(items), "classified": classified, "errors": errors,
            "top1": top1 / classified if classified else None, "top5": top5 / classified if classified else None,
            "seconds": seconds, "images_per_s": len(items) / seconds if seconds else None, "rows": rows}
