"""Regenerate the built-in model, onnx_mobilenets/data/mobilenet_v2_1.0_224_quant.onnx, with this
package's own pipeline, from a release tarball holding Google's .tflite (the official
quantized_v2_224_100.tgz, or the fixtures' copy of its .tflite):

    python tools/make_builtin_model.py ../shared/fixtures/checkpoints/quantized_v2_224_100.tgz

Needs the [convert] extra. The .tflite must be Google's byte for byte (`builtin.TFLITE_SHA256`); the
artifact records the official URL as its source and no tarball checksum (the tarball read may be a
repacked one; the .tflite's SHA-256 is what identifies the weights).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from onnx_mobilenets import builtin, catalogue
from onnx_mobilenets.conversion.convert import Source, convert
from onnx_mobilenets.conversion.quantized import read_tflite
from onnx_mobilenets.errors import ChecksumError
from onnx_mobilenets.files import atomic_write


def make_builtin(tarball, output: Path = builtin.PATH) -> Path:
    """Convert `tarball`'s .tflite into the built-in artifact at `output`; ChecksumError, before
    anything is converted or written, when the .tflite is not Google's."""
    found = hashlib.sha256(read_tflite(tarball)[0]).hexdigest()
    if found != builtin.TFLITE_SHA256:
        raise ChecksumError(f"{tarball} holds a .tflite with SHA-256 {found}, not Google's {builtin.TFLITE_SHA256}: "
                            "the built-in model is made only from Google's file")
    variant = catalogue.get_variant(builtin.SPEC.variant)
    with tempfile.TemporaryDirectory() as work:
        report = convert(builtin.SPEC, work, Source(variant.checkpoint_url, Path(tarball), sha256=None))
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, Path(report.path).read_bytes())
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tarball", help="a release tarball holding Google's mobilenet_v2_1.0_224_quant .tflite")
    parser.add_argument("--output", type=Path, default=builtin.PATH)
    args = parser.parse_args()
    path = make_builtin(args.tarball, args.output)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
