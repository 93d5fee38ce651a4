"""`onnx-mobilenets list`: the catalogue, with what the cache holds."""

from __future__ import annotations

from onnx_mobilenets import catalogue, download
from onnx_mobilenets.runtime.artifacts import cached_artifact
from onnx_mobilenets.tables import aligned_table


def run(args) -> int:
    header = ("name", "family", "alpha", "res", "precision", "top-1", "top-5", "MMACs", "Mparams", "sha256", "cached")
    rows = [(v.name, v.family, v.alpha, v.resolution, v.precision, _percent(v.top1), _percent(v.top5), v.macs_millions,
             f"{v.params_millions:.2f}", "published" if v.checkpoint_sha256 else "-",
             "onnx" if cached_artifact(v.name).is_file() else "-")
            for v in catalogue.list_variants(args.family, args.precision)]
    print(aligned_table(header, rows))
    print(f"\naliases: {', '.join(f'{a} = {n}' for a, n in catalogue.ALIASES.items())}; cache: {download.cache_dir()}")
    print("uint8: Google's quantization-aware-trained models; top-1/top-5 '-' where Google publishes none")
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1f}"
