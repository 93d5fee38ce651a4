"""Coverage-guided fuzzing (atheris, libFuzzer) of the artifact reader: the bytes of a downloaded
.onnx file are untrusted input. For any input, `read_record` (the protobuf walk of
`onnx_mobilenets.model_bytes` and the metadata parser of `onnx_mobilenets.artifact`) and
`runtime_form` (the int8 re-expression of a uint8 artifact's weights) must return or raise
`InvalidModelError`: any other exception, a hang (over `--timeout` seconds on one input) or a memory
blow-up (over `--rss-limit-mb`) is a bug, and libFuzzer stops there, writing the input to
``--crashes DIR``. Keep each crasher, once fixed, in tests/fuzz_crashers/ (tests/test_fuzz.py runs them).

    python tools/fuzz_artifact.py --seconds 60 [--corpus DIR] [--crashes DIR]

The seeds are small artifacts made here: a one-node graph carrying the built-in model's whole
metadata record, and one with a uint8 initializer its quantization metadata names. Prints the number
of inputs run and what was found; exit status 0 when nothing was.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
MANIFEST_SEED = (b'{"format": 1, "artifacts": {"mobilenet_v2_1.0_224_quant": {"file": "a", "sha256": "00"}}, '
                 b'"files": {"a": {"sha256": "00", "size": 1}}}')


METADATA_KEYS = ("variant", "family", "alpha", "resolution", "output", "classes", "preprocessing", "labels",
                 "weights", "versions", "opset", "parity", "golden", "quantization", "batch")


@functools.lru_cache(maxsize=1)
def _real_metadata() -> dict:
    from onnx_mobilenets import builtin
    from onnx_mobilenets.artifact import read_record

    return read_record(builtin.PATH).metadata()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def seed_models() -> dict:
    """{name: bytes} of the seed inputs: small ONNX models (hand-written protobuf, as onnx.proto
    lays them out) with real metadata records."""
    metadata = _real_metadata()
    entries = b"".join(_field(14, _field(1, k.encode()) + _field(2, v.encode())) for k, v in metadata.items())
    tensor = (_varint(1 << 3) + _varint(4) + _varint(2 << 3) + _varint(2)  # dims [4], data_type UINT8
              + _field(8, b"w") + _field(9, bytes([0, 1, 128, 255])))  # name "w", raw_data
    graph = _field(1, _field(1, b"x") + _field(2, b"y") + _field(4, b"Relu")) + _field(2, b"g") + _field(5, tensor)
    quantization = json.loads(metadata["quantization"])
    quantization["int8_view"] = ["w"]
    small = {**metadata, "quantization": json.dumps(quantization)}
    int8 = b"".join(_field(14, _field(1, k.encode()) + _field(2, v.encode())) for k, v in small.items())
    header = _varint(1 << 3) + _varint(8)  # ir_version 8
    return {"record": header + _field(7, graph) + entries, "int8_view": header + _field(7, graph) + int8,
            "manifest": MANIFEST_SEED, "empty": b""}


def dictionary() -> list:
    """libFuzzer tokens: the metadata keys and JSON's punctuation, so that mutations build JSON."""
    keys = list(METADATA_KEYS) + ["int8_view", "values_base64", "artifacts", "files", "sha256"]
    tokens = [f'"{k}"' for k in keys] + ["[", "]", "{", "}", ":", ",", '"', "null", "true", "-1", "1e309", "\\u0000"]
    return ['"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in tokens]


def one_input(data: bytes) -> None:
    """The properties: `read_record` and `runtime_form` return or raise InvalidModelError; the
    manifest readers (a downloaded manifest.json) return or raise ValueError (KeyError: no entry)."""
    from onnx_mobilenets.artifact import (
        ArtifactRecord,
        manifest_lookup,
        read_record,
        runtime_form,
    )
    from onnx_mobilenets.builtin import SPEC
    from onnx_mobilenets.errors import InvalidModelError

    try:
        read_record(data)
    except InvalidModelError:
        pass
    try:
        runtime_form(data, int8_weights=True)
    except InvalidModelError:
        pass
    if data:  # the same bytes as one metadata value of a real record: the parser's paths, not the wire format's
        key = METADATA_KEYS[data[0] % len(METADATA_KEYS)]
        try:
            ArtifactRecord.from_metadata({**_real_metadata(), key: data[1:].decode("utf-8", "replace")}, "fuzz")
        except InvalidModelError:
            pass
    try:
        manifest_lookup(data, "manifest", SPEC)
    except (ValueError, KeyError):
        pass


def _fuzz(args) -> None:
    """In the child process: run libFuzzer on `one_input`, the package's modules instrumented."""
    import atheris

    with atheris.instrument_imports(include=["onnx_mobilenets"]):
        import onnx_mobilenets.artifact  # noqa: F401
        import onnx_mobilenets.model_bytes  # noqa: F401
    libfuzzer = [sys.argv[0], str(args.corpus), f"-max_total_time={args.seconds}", f"-timeout={args.timeout}",
                 f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={args.max_len}", "-print_final_stats=1",
                 f"-artifact_prefix={args.crashes}/", f"-dict={args.tokens}"]
    atheris.Setup(libfuzzer, one_input)
    atheris.Fuzz()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="the budget (default 60)")
    parser.add_argument("--corpus", type=Path, help="the working corpus (default: a temporary folder, seeded)")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where a crasher is written")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--max-len", type=int, default=200_000, help="largest input, in bytes (default 200000)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _fuzz(args)
        return 0
    with tempfile.TemporaryDirectory() as work:
        corpus = args.corpus or Path(work) / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        tokens = Path(work) / "tokens.dict"
        tokens.write_text("\n".join(dictionary()) + "\n")
        for name, data in seed_models().items():
            (corpus / f"seed-{name}").write_bytes(data)
        args.crashes.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--child", "--seconds", str(args.seconds), "--corpus", str(corpus),
                   "--crashes", str(args.crashes), "--timeout", str(args.timeout), "--rss-limit-mb",
                   str(args.rss_limit_mb), "--max-len", str(args.max_len), "--tokens", str(tokens)]
        result = subprocess.run(command, capture_output=True, text=True)
    log = result.stdout + result.stderr
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
    crashers = sorted(str(p) for p in args.crashes.iterdir())
    print(f"inputs run: {runs[-1] if runs else 'unknown'} in {args.seconds} s budget; "
          f"findings: {len(crashers) or 'none'}")
    if not crashers:
        with contextlib.suppress(OSError):
            args.crashes.rmdir()  # no findings, no folder left behind
    if result.returncode != 0 or crashers:
        print(log[-6000:])
        print("crashers:", *crashers, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
