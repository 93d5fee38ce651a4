"""`onnx-mobilenets evaluate`: top-1 and top-5 accuracy on a labelled image folder, to check an
artifact against the catalogue's published accuracy (ImageNet's 50,000 validation images).

Labels come from the layout most people keep, one folder per synset
(``n01440764/ILSVRC2012_val_00000293.JPEG``), or from a CSV file of ``file,label`` rows where the
label is a WordNet id (``n01440764``) or a class index 0..999 and the file is relative to the folder.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Optional

from .batch import _folder_images, result_row


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
        items += [(str(path), index_of[sub.name]) for path in _folder_images(sub, recursive=True)]
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
                raise ValueError(f"{path} line {number}: label {label!r} is neither a synset nor a class index 0..{count - 1}")
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
        row = result_row(result)
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
