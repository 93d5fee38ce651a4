"""The artifact's contract: what every ONNX file this package makes records about itself, written by
`onnx_mobilenets.conversion` and read by `onnx_mobilenets.runtime` (and any other consumer)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from . import preprocessing
from .errors import InvalidModelError


@dataclass(frozen=True)
class Preprocessing:
    """The input contract an artifact records (metadata key ``preprocessing``): which preprocessing of
    `onnx_mobilenets.preprocessing` makes its input from a decoded image, and how the resulting
    0..255 pixels are fed to the network."""

    name: str = preprocessing.DEFAULT  # or preprocessing.SLIM, TF-slim's evaluation exactly
    version: int = preprocessing.VERSION
    dtype: str = "float32"  # "uint8": pixels rounded and fed as they are; the model quantizes them itself
    scale: float = 1.0 / 127.5  # float32 input: x * scale + offset maps [0, 255] to [-1, 1]
    offset: float = -1.0
    channel_order: str = "RGB"
    layout: str = "NHWC"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        """The record of an artifact's metadata, checked; InvalidModelError naming what is wrong."""
        try:
            record = json.loads(text)
            known = {f.name for f in fields(cls)}
            if not isinstance(record, dict) or set(record) != known:
                raise ValueError(f"its fields are {sorted(record) if isinstance(record, dict) else record}, "
                                 f"expected {sorted(known)}")
            contract = cls(**record)
        except (ValueError, TypeError) as e:
            raise InvalidModelError(f"unreadable preprocessing record ({e}): the artifact was made by another "
                                    "version of onnx-mobilenets; convert it again") from None
        problems = []
        if contract.name not in preprocessing.NAMES or contract.version != preprocessing.VERSION:
            problems.append(f"preprocessing {contract.name!r} version {contract.version}")
        if contract.dtype not in ("float32", "uint8"):
            problems.append(f"input dtype {contract.dtype!r}")
        if contract.channel_order != "RGB" or contract.layout not in ("NHWC", "NCHW"):
            problems.append(f"channel order/layout {contract.channel_order}/{contract.layout}")
        if problems:
            raise InvalidModelError(f"unsupported {', '.join(problems)} in the artifact's preprocessing record")
        return contract


DEFAULT_PREPROCESSING = Preprocessing()
# The quantized models take the same pixels, rounded to uint8: their input quantization (scale 1/128,
# zero point 128) does the scaling inside the model.
QUANTIZED_PREPROCESSING = Preprocessing(dtype="uint8", scale=1.0, offset=0.0)
