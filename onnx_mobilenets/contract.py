"""The artifact's contract: what every ONNX file this package makes records about itself (its
``metadata_props``, all strings, JSON where structured) and the manifest beside a folder of them.
`onnx_mobilenets.conversion` writes it; `onnx_mobilenets.runtime`, `verify` and any other consumer
read it, through this module only.

Metadata keys: ``variant``, ``family``, ``alpha``, ``resolution``, ``output`` ("probabilities" or
"logits"), ``classes``, ``preprocessing`` (a `Preprocessing` record), ``labels`` (the 1000 ``[wnid,
label]`` pairs in the standard order), ``weights`` (provenance: checkpoint or .tflite source and
SHA-256, or ``random: true``), ``versions``, ``opset``, ``parity`` (the conversion gate's numbers),
``golden`` (the reference's logits on the deterministic parity inputs, for checks without
TensorFlow), and for quantized artifacts ``quantization``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np

from . import preprocessing
from .errors import InvalidModelError
from .files import atomic_write
from .labels import imagenet_classes
from .parity import GOLDEN_COUNT, GOLDEN_SEED, parity_images, parity_inputs, parity_pixels

REQUIRED_METADATA = ("variant", "family", "resolution", "output", "classes", "preprocessing", "labels", "weights")
MANIFEST = "manifest.json"
IMAGE_INPUT_SUFFIX = "-image"  # of image-in artifacts' names, ``NAME-image.onnx``
RANDOM_WEIGHTS_WARNING = "UNTRAINED RANDOM WEIGHTS: not an ImageNet classifier; for tests and benchmarks only"
OUTPUTS = ("probabilities", "logits")


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
    layout: str = "NHWC"  # of the network's input
    # True: the preprocessing is inside the model, whose input is decoded images (uint8 [N, H, W, 3],
    # RGB, any size) rather than the network's input.
    image_input: bool = False

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


def artifact_name(variant: str, image_input: bool = False, preprocessing_name: str = preprocessing.DEFAULT) -> str:
    """The file stem and manifest key of an artifact: the variant's name, then ``-image`` for an
    image-in artifact and ``-slim`` for one that records TF-slim's preprocessing."""
    return (variant + (IMAGE_INPUT_SUFFIX if image_input else "")
            + ("" if preprocessing_name == preprocessing.DEFAULT else f"-{preprocessing_name}"))


# --- writing ------------------------------------------------------------------------------------

def artifact_metadata(*, variant: str, family: str, alpha, resolution: int, output: str, classes: int,
                      input_contract: Preprocessing, weights: dict, versions: dict, opset: int, parity: dict,
                      golden: str, quantization: Optional[dict] = None) -> dict:
    """Every metadata entry of an artifact, as strings."""
    labels = [list(c) for c in imagenet_classes()]
    if classes == 1001:
        labels = [["background", "background"]] + labels
    metadata = {
        "variant": variant, "family": family, "alpha": str(alpha), "resolution": str(resolution), "output": output,
        "classes": str(classes), "preprocessing": input_contract.to_json(), "labels": json.dumps(labels),
        "weights": json.dumps(weights), "versions": json.dumps(versions), "opset": str(opset),
        "parity": json.dumps(parity), "golden": golden,
    }
    if quantization is not None:
        metadata["quantization"] = json.dumps(quantization)
    return metadata


def describe(metadata: dict) -> str:
    """The artifact's one-line description (its ONNX doc_string)."""
    kind = "quantization-aware-trained uint8 " if "quantization" in metadata else ""
    text = (f"{metadata['variant']}: Google's {kind}MobileNet {metadata['family'].upper()} ImageNet classifier, "
            "made by onnx-mobilenets.")
    return (RANDOM_WEIGHTS_WARNING + ". " + text) if is_random(metadata) else text


def golden_record(values: np.ndarray, kind: str, resolution: int, image_input: bool = False) -> str:
    """The ``golden`` entry: the reference's outputs on the first GOLDEN_COUNT parity inputs, as
    float32 "logits" (Keras) or uint8 "quantized_logits" (TFLite); for an image-in artifact, on
    what its preprocessing makes of the parity images (`parity.parity_images`)."""
    dtype = {"logits": "<f4", "quantized_logits": "|u1"}[kind]
    maker = "parity_images" if image_input else "parity_inputs" if kind == "logits" else "parity_pixels"
    return json.dumps({
        "inputs": f"onnx_mobilenets.parity.{maker}({resolution}, count={GOLDEN_COUNT}, seed={GOLDEN_SEED})",
        "seed": GOLDEN_SEED, "count": GOLDEN_COUNT, "values": kind, "dtype": dtype, "shape": list(values.shape),
        "values_base64": base64.b64encode(np.ascontiguousarray(values.astype(dtype)).tobytes()).decode("ascii"),
    })


# --- reading ------------------------------------------------------------------------------------

def check_metadata(metadata: dict, where) -> None:
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise InvalidModelError(f"{where} is not a MobileNet artifact made by onnx-mobilenets (metadata lacks "
                                f"{', '.join(missing)})")


def is_random(metadata: dict) -> bool:
    return bool(json.loads(metadata.get("weights", "{}")).get("random"))


def labels_of(metadata: dict) -> tuple:
    """((wnid, label), ...) for class indices 0..999 (slim's background class, when kept, skipped)."""
    labels = json.loads(metadata["labels"])
    if int(metadata["classes"]) == 1001 and labels:
        labels = labels[1:]
    if not labels or len(labels) != 1000:
        raise InvalidModelError("the artifact does not carry the 1000 ImageNet labels")
    return tuple((str(w), str(label)) for w, label in labels)


def golden_of(metadata: dict) -> tuple:
    """(inputs, reference values) recorded in an artifact's metadata: float32 NHWC inputs and Keras'
    logits for float artifacts, uint8 pixels and TFLite's quantized logits for quantized ones; for
    image-in artifacts the inputs are a list of images of different sizes."""
    golden = json.loads(metadata["golden"])
    if golden.get("values") not in ("logits", "quantized_logits"):
        raise InvalidModelError("the artifact's golden record holds no logits: it was made by an older "
                                "onnx-mobilenets; convert it again")
    values = np.frombuffer(base64.b64decode(golden["values_base64"]), dtype=golden["dtype"]).reshape(golden["shape"])
    values = values.astype(int if golden["values"] == "quantized_logits" else np.float32)
    resolution, count, seed = int(metadata["resolution"]), golden["count"], golden["seed"]
    contract = Preprocessing.from_json(metadata["preprocessing"])
    if contract.image_input:
        return parity_images(resolution, count=count, seed=seed), values
    if golden["values"] == "quantized_logits":
        return parity_pixels(resolution, count=count, seed=seed), values
    return parity_inputs(resolution, count=count, seed=seed, scale=contract.scale, offset=contract.offset), values


# --- the manifest of a folder of artifacts -------------------------------------------------------

def parse_manifest(data: bytes, where) -> dict:
    """A manifest's ``artifacts`` table {name: entry}; ValueError naming `where` when it is not one."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where} is not a valid manifest: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), dict):
        raise ValueError(f"{where} is not an onnx-mobilenets manifest (no 'artifacts' table)")
    return manifest["artifacts"]


def record_in_manifest(folder, name: str, entry: dict) -> Path:
    """Add or replace `name`'s entry in ``folder/manifest.json``, atomically."""
    path = Path(folder) / MANIFEST
    artifacts = parse_manifest(path.read_bytes(), path) if path.exists() else {}
    artifacts[name] = entry
    manifest = {"format": 1, "artifacts": dict(sorted(artifacts.items()))}
    atomic_write(path, (json.dumps(manifest, indent=1) + "\n").encode())
    return path
