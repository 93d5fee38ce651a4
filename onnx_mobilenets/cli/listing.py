"""`onnx-mobilenets list`: the catalogue, with every artifact the cache holds of each variant."""

from __future__ import annotations

from onnx_mobilenets import builtin, catalogue, download
from onnx_mobilenets.artifact import SUFFIX, ArtifactSpec
from onnx_mobilenets.tables import aligned_table


def cached_kinds() -> dict:
    """{variant: its cached artifacts' kinds}, a kind being what the artifact's name adds to the
    variant's ("image", "slim", "image-slim", "b1", ...), or "onnx" for the plain tensor artifact;
    and "built-in" for the model the package carries."""
    kinds = {}
    folder = download.artifacts_dir()
    for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        spec = ArtifactSpec.from_file_name(path.name)
        if spec is not None:
            kind = spec.name[len(spec.variant) + 1:] or "onnx"
            kinds.setdefault(spec.variant, []).append(kind)
    if builtin.PATH.is_file():
        kinds.setdefault(builtin.SPEC.variant, []).append("built-in")
    return {variant: sorted(found, key=lambda k: (k != "onnx", k)) for variant, found in kinds.items()}


def run(args) -> int:
    header = ("name", "family", "alpha", "res", "precision", "top-1", "top-5", "MMACs", "Mparams", "sha256", "cached")
    cached = cached_kinds()
    rows = [(v.name, v.family, v.alpha, v.resolution, v.precision, _percent(v.top1), _percent(v.top5), v.macs_millions,
             f"{v.params_millions:.2f}", "published" if v.checkpoint_sha256 else "-",
             ",".join(cached.get(v.name, ["-"])))
            for v in catalogue.list_variants(args.family, args.precision)]
    print(aligned_table(header, rows))
    print(f"\naliases: {', '.join(f'{a} = {n}' for a, n in catalogue.ALIASES.items())}; cache: {download.cache_dir()}")
    print("uint8: Google's quantization-aware-trained models; top-1/top-5 '-' where Google publishes none")
    print("cached: onnx = the tensor artifact; image = image-in (preprocessing inside); slim = TF-slim's "
          "preprocessing; fp16 = float16; bN = a fixed batch of N; built-in = in the package, no download")
    return 0


def _percent(value) -> str:
    return "-" if value is None else f"{value:.1f}"
