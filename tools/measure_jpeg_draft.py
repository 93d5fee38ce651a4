"""How much JPEG draft decoding changes predictions: the measurement behind
`onnx_mobilenets.preprocessing.DRAFT_MIN_CROP`.

Pillow can decode a JPEG at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), several times cheaper
than decoding every pixel. The runtime lets it do so only while the crop keeps at least
DRAFT_MIN_CROP times the model's resolution. For each model and each candidate minimum, this
classifies every photo decoded in full and decoded drafted, and counts, among the photos the
decoder actually shrank, those whose top-1 class changed.

    python tools/measure_jpeg_draft.py PHOTOS_DIR MODEL.onnx [MODEL.onnx ...] [--min-crop 1 2 4] [--json FILE]

Photographs only tell: the geometry is what matters (the photo's shorter side over the model's
resolution), so small-resolution models on ordinary photos stand for large photos on 224 models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from onnx_mobilenets import OnnxMobileNet, preprocessing
from onnx_mobilenets.runtime.images import load_image
from onnx_mobilenets.tables import markdown_table


def top1_and_probability(model: OnnxMobileNet, image) -> tuple:
    x = preprocessing.network_input(image, model.input_size, model.input_contract)
    p = model.run(x[np.newaxis])[0]
    return int(np.argmax(p)), p


def measure(model_path: Path, photos: list, minimums: list) -> list:
    model = OnnxMobileNet(model_path, providers="cpu")
    full = {photo: top1_and_probability(model, load_image(photo)) for photo in photos}
    rows = []
    for minimum in minimums:
        size = preprocessing.draft_size(model.input_size, minimum)
        drafted = changed = 0
        moved = []
        for photo in photos:
            image = load_image(photo, size)
            if image.size == load_image(photo).size:
                continue  # the decoder did not shrink this one
            drafted += 1
            top1, p = top1_and_probability(model, image)
            reference, q = full[photo]
            changed += top1 != reference
            moved.append(float(np.abs(p - q).max()))
        rows.append({"model": model.variant, "resolution": model.input_size, "min_crop": minimum,
                     "photos": len(photos), "drafted": drafted, "top1_changed": changed,
                     "top1_changed_share": changed / drafted if drafted else None,
                     "median_max_dp": float(np.median(moved)) if moved else None,
                     "max_dp": max(moved) if moved else None})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", help="a folder of JPEG photographs")
    parser.add_argument("models", nargs="+", help=".onnx artifacts")
    parser.add_argument("--min-crop", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="candidate minimum crop sides, in multiples of the resolution")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not photos:
        raise SystemExit(f"error: no JPEG files in {args.photos}")
    rows = [row for model in args.models for row in measure(Path(model), photos, args.min_crop)]
    print(markdown_table(
        ["model", "min crop / R", "photos drafted", "top-1 changed", "median max |dp|", "max |dp|"],
        [[r["model"], f"{r['min_crop']:g}", f"{r['drafted']} of {r['photos']}",
          "-" if r["drafted"] == 0 else f"{r['top1_changed']} ({r['top1_changed_share']:.1%})",
          "-" if r["median_max_dp"] is None else f"{r['median_max_dp']:.4f}",
          "-" if r["max_dp"] is None else f"{r['max_dp']:.3f}"] for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
