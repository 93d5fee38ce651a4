"""An ONNX file's bytes, read and re-expressed without the `onnx` package (the runtime has only
onnxruntime, NumPy and Pillow).

Two jobs, on the protobuf wire format of `ModelProto` (stable since ONNX's first release), and
one question:
- `read_metadata`: the ``metadata_props`` strings (`onnx_mobilenets.artifact` reads its record from
  them), so the runtime can prepare a session before creating it;
- `with_int8_weights`: the quantized artifacts' uint8 weights and zero points re-expressed as int8.
  ``(w - z) * s`` does not change when 128 is taken from both ``w`` and ``z``, and for bytes that is
  flipping the top bit, so the file keeps its length and every other byte: only each tensor's
  ``data_type`` (UINT8 = 2 -> INT8 = 3, one byte either way) and its ``raw_data`` change;
- `cpu_has_vnni`: whether to (`onnx_mobilenets.artifact.runtime_form` decides with it).

ORT format files (``.ort``, onnxruntime's own flatbuffer format for its minimal mobile build, made by
`convert --ort`) are told apart by their flatbuffer file identifier; they keep the ONNX file's
``metadata_props``, which `read_metadata` reads through onnxruntime (their graph is already
optimized for onnxruntime, and their weights are never rewritten).

Why int8 at all: onnxruntime's fast x86 kernels multiply uint8 activations by int8 weights (VNNI:
one instruction, 32-bit sums); with uint8 weights it takes a slower u8 x u8 path. But on x86 CPUs
without VNNI (AVX2 or AVX-512 only) the u8 x s8 instruction adds pairs of products in 16 bits and
saturates, which changes results. So the file keeps TFLite's exact uint8 weights (right for any
consumer, on any CPU), and the runtime re-expresses them as int8 only where this CPU has
AVX512-VNNI: fast there, exact everywhere.

The decision is ours, not onnxruntime's: its option ``session.x64quantprecision`` turns int8
weights back into uint8 wherever its u8 x u8 and u8 x s8 kernel tables differ, which is every x86
CPU with AVX2, VNNI or not (MLAS ``MlasPlatformU8S8Overflow``), so with it the fast kernels are
never used. CPUs with only the VEX-encoded AVX-VNNI (Alder Lake-class desktops) are not seen by
NumPy's feature table and keep the exact, slower uint8 path.
"""

from __future__ import annotations

import importlib

import numpy as np

from onnx_mobilenets.errors import InvalidModelError

# Field numbers from onnx.proto.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INITIALIZER = 5
_TENSOR_DATA_TYPE, _TENSOR_NAME, _TENSOR_RAW_DATA = 2, 8, 9
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
ORT_FORMAT_IDENTIFIER = b"ORTM"
_UINT8, _INT8 = 2, 3
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def _varint(data, pos: int) -> tuple:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise InvalidModelError("truncated or corrupt ONNX file (bad varint)")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data, start: int, end: int):
    """(field number, wire type, value start, value end) of each field of the message in data[start:end]."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, after = _varint(data, pos)
        elif wire == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            after = pos + length
        elif wire == _FIXED64:
            after = pos + 8
        elif wire == _FIXED32:
            after = pos + 4
        else:
            raise InvalidModelError(f"corrupt ONNX file (wire type {wire})")
        if after > end:
            raise InvalidModelError("truncated or corrupt ONNX file")
        yield field, wire, pos, after
        pos = after


def _submessages(data, start, end, field_number):
    for field, wire, begin, finish in _fields(data, start, end):
        if field == field_number and wire == _LENGTH_DELIMITED:
            yield begin, finish


def is_ort_format(model: bytes) -> bool:
    """Whether `model` is an ORT format file (flatbuffer file identifier ``ORTM`` at bytes 4-8)."""
    return model[4:8] == ORT_FORMAT_IDENTIFIER


def read_metadata(model: bytes) -> dict:
    """The ``metadata_props`` of an ONNX model (or of an ORT format one), as a dict of strings."""
    if is_ort_format(model):
        return _ort_format_metadata(model)
    metadata = {}
    for begin, end in _submessages(model, 0, len(model), _MODEL_METADATA):
        entry = {field: bytes(model[b:e]).decode("utf-8", "replace")
                 for field, wire, b, e in _fields(model, begin, end) if wire == _LENGTH_DELIMITED}
        metadata[entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
    return metadata


def _ort_format_metadata(model: bytes) -> dict:
    from onnx_mobilenets.sessions import new_session

    try:
        session = new_session(bytes(model))
    except Exception as e:  # onnxruntime's exception types differ between versions
        raise InvalidModelError(f"unreadable ORT format model: {str(e).splitlines()[0] if str(e) else e}") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def with_int8_weights(model: bytes, names) -> bytes:
    """A copy of `model` in which the initializers called `names` (uint8, stored as raw_data) are
    int8 with the same dequantized values. Raises InvalidModelError if one is missing or not so stored."""
    wanted = set(names)
    patched = bytearray(model)
    view = np.frombuffer(patched, np.uint8)
    found = set()
    for graph_start, graph_end in _submessages(model, 0, len(model), _MODEL_GRAPH):
        for begin, end in _submessages(model, graph_start, graph_end, _GRAPH_INITIALIZER):
            name, dtype_at, raw = None, None, None
            for field, wire, b, e in _fields(model, begin, end):
                if field == _TENSOR_NAME and wire == _LENGTH_DELIMITED:
                    name = bytes(model[b:e]).decode("utf-8", "replace")
                elif field == _TENSOR_DATA_TYPE and wire == _VARINT:
                    dtype_at = b
                elif field == _TENSOR_RAW_DATA and wire == _LENGTH_DELIMITED:
                    raw = (b, e)
            if name not in wanted:
                continue
            if dtype_at is None or model[dtype_at] != _UINT8 or raw is None:
                raise InvalidModelError(f"initializer {name!r} is not a uint8 tensor stored as raw_data")
            patched[dtype_at] = _INT8
            view[raw[0]:raw[1]] ^= 0x80
            found.add(name)
    if found != wanted:
        raise InvalidModelError(f"initializers {sorted(wanted - found)} named in the metadata are not in the model")
    return bytes(patched)


def cpu_has_vnni() -> bool:
    """Whether this process runs on a CPU with AVX512-VNNI that the OS lets it use: NumPy's own
    CPUID reading, so an emulator's CPU (``qemu-x86_64 -cpu Haswell``) is seen as it is emulated,
    which /proc/cpuinfo (the host's) would not show. False where it cannot tell."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):  # NumPy 2, 1
        try:
            features = importlib.import_module(module).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return bool(features.get("AVX512VNNI"))
    return False
