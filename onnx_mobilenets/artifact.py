"""The artifact: the ONNX file this package makes, what it records about itself, how a folder of
them lists it, and how an engine's outputs on it are judged. Conversion writes artifacts, and the
runtime, `verify`, `list`, `web` and the developer tools read them, through this module only.

- `ArtifactSpec`: the options that make one artifact of a variant (precision, preprocessing, image
  input, layout, output, opset, a fixed batch, float16). It owns the artifact's name
  (``VARIANT[-image][-slim][-fp16][-bN]``), its file name, where a folder keeps it, and which recorded
  options make a file already there "the same artifact".
- `ArtifactRecord`: what the file records (its ``metadata_props``: strings, JSON where structured),
  typed: its spec, its network's facts, its `Preprocessing`, its `Weights` (provenance), the
  conversion gate's numbers, its `Golden` outputs and, for the uint8 models, its `Quantization`.
  Read once from the bytes (`read_record`), written once (`ArtifactRecord.metadata`).
- `judge`: whether an engine's outputs on the golden inputs are the reference's, and if not why:
  within the float32 (float16) error bound of `parity.Tolerance` for float artifacts, step for step (or
  within `parity.OTHER_ENGINE`) of TFLite's integer logits for uint8 ones. The conversion gates,
  `verify` and the GPU check judge through it.
- the manifest beside a folder of artifacts (``manifest.json``: each file with its SHA-256).
- `runtime_form`: the bytes the runtime hands onnxruntime (int8 weights where exact and faster);
  `ort_format_difference`: how far an artifact's ORT format file is from it (0: as required).

Metadata keys: ``variant``, ``family``, ``alpha``, ``resolution``, ``output`` ("probabilities" or
"logits"), ``classes``, ``preprocessing``, ``labels`` (the ``[wnid, label]`` pairs in the standard
order), ``weights``, ``versions``, ``opset``, ``parity``, ``golden``, ``quantization`` (uint8
artifacts), ``batch`` (artifacts of a fixed batch size only) and ``float16`` ("true"; float16
artifacts only: weights and activations in float16, input and output float32 as in every float one).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

import numpy as np

from . import catalogue
from . import preprocessing as preprocessings
from .download import sha256_of
from .errors import InvalidModelError
from .files import atomic_write
from .labels import imagenet_classes
from .model_bytes import cpu_has_vnni, is_ort_format, read_metadata, with_int8_weights
from .parity import (
    EXACT,
    GOLDEN_COUNT,
    GOLDEN_SEED,
    OTHER_ENGINE,
    SMALLEST_PROBABILITY,
    check,
    check_quantized,
    parity_images,
    parity_inputs,
    parity_pixels,
    tolerance_for,
)
from .preprocessing import DEFAULT_PREPROCESSING, QUANTIZED_PREPROCESSING, Preprocessing
from .sessions import new_session, session_options

# Opset 17: accepted by onnxruntime >= 1.13, TensorRT >= 8.6 and OpenVINO >= 2022.3, and every op a
# MobileNet needs has been stable since opset 13; newer opsets add nothing it uses.
DEFAULT_OPSET = 17
MIN_OPSET = 13
OUTPUTS = ("probabilities", "logits")
PRECISIONS = catalogue.PRECISIONS
SUFFIX = ".onnx"
ORT_SUFFIX = ".ort"  # the same artifact in onnxruntime's ORT format (`convert --ort`), beside the .onnx file
OPERATORS_SUFFIX = ".required_operators.config"  # beside it: the operators onnxruntime's minimal build needs
IMAGE_INPUT_SUFFIX = "-image"  # of image-in artifacts' names, ``NAME-image.onnx``
FLOAT16_SUFFIX = "-fp16"
MANIFEST = "manifest.json"
RANDOM_WEIGHTS_WARNING = "UNTRAINED RANDOM WEIGHTS: not an ImageNet classifier; for tests and benchmarks only"
QUANTIZATION_SCHEME = ("QDQ; uint8 activations and per-tensor uint8 weights with zero points, exactly as in "
                       "Google's quantization-aware-trained .tflite")
REQUIRED_METADATA = ("variant", "family", "resolution", "output", "classes", "preprocessing", "labels", "weights")
_NAME = re.compile(r"^(?P<variant>[^/\\-]+)(?P<image>-image)?(?:-(?P<preprocessing>[a-z]+))?(?P<float16>-fp16)?"
                   r"(?:-b(?P<batch>\d+))?$")


# --- the spec -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArtifactSpec:
    """The options that make one artifact: what `convert` is asked for and what a file records of
    itself. A file already there is the artifact asked for when its recorded spec equals the spec
    asked for; options not in the name (layout, output, opset) make a different file of the same name."""

    variant: str  # the catalogue name (or, for a network built by hand, its Keras model's name)
    precision: str = "float32"  # "uint8": Google's quantized .tflite, as QDQ ONNX
    preprocessing: str = preprocessings.DEFAULT  # the one the artifact records ("slim": TF-slim's)
    image_input: bool = False  # the preprocessing inside the model, whose input is the decoded image
    layout: str = "NHWC"  # of the network's input
    output: str = "probabilities"  # or "logits"
    opset: int = DEFAULT_OPSET
    batch: Optional[int] = None  # a fixed batch size; None: the symbolic ``batch`` dimension
    float16: bool = False  # weights and activations in float16 (float variants; input and output stay float32)

    def __post_init__(self):
        problems = []
        if not isinstance(self.variant, str) or not self.variant or any(c in self.variant for c in "/\\"):
            problems.append(f"variant {self.variant!r}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision {self.precision!r} (one of {', '.join(PRECISIONS)})")
        if self.preprocessing not in preprocessings.NAMES:
            problems.append(f"preprocessing {self.preprocessing!r} (one of {', '.join(preprocessings.NAMES)})")
        if self.layout not in preprocessings.LAYOUTS or (self.precision == "uint8" and self.layout != "NHWC"):
            problems.append(f"layout {self.layout!r} (NHWC, or NCHW for float models)")
        if self.output not in OUTPUTS:
            problems.append(f"output {self.output!r} (one of {', '.join(OUTPUTS)})")
        if not _is_count(self.opset) or self.opset < MIN_OPSET:
            problems.append(f"opset {self.opset!r} (an integer from {MIN_OPSET})")
        if self.batch is not None and not _is_count(self.batch):
            problems.append(f"batch {self.batch!r} (a positive integer, or None for any)")
        if not isinstance(self.float16, bool) or (self.float16 and self.precision != "float32"):
            problems.append(f"float16 {self.float16!r} (True or False; True for float variants only, the uint8 "
                            "ones are Google's integer models as they are)")
        if problems:
            raise ValueError(f"invalid artifact options: {'; '.join(problems)}")

    @classmethod
    def of_variant(cls, name: str, **options) -> "ArtifactSpec":
        """The spec of catalogue variant `name` (a name or alias), its precision the catalogue's."""
        variant = catalogue.get_variant(name)
        return cls(variant.name, variant.precision, **options)

    @property
    def name(self) -> str:
        """The file stem and manifest key: the variant, then ``-image`` for an image-in artifact,
        ``-slim`` for one recording TF-slim's preprocessing, ``-fp16`` for float16, ``-bN`` for a
        fixed batch of N."""
        return (self.variant + (IMAGE_INPUT_SUFFIX if self.image_input else "")
                + ("" if self.preprocessing == preprocessings.DEFAULT else f"-{self.preprocessing}")
                + (FLOAT16_SUFFIX if self.float16 else "")
                + (f"-b{self.batch}" if self.batch else ""))

    @property
    def file_name(self) -> str:
        return self.name + SUFFIX

    def path_in(self, folder) -> Path:
        return Path(folder) / self.file_name

    @property
    def input_contract(self) -> Preprocessing:
        """What the network takes: float32 scaled to [-1, 1], or uint8 pixels for uint8 models."""
        base = QUANTIZED_PREPROCESSING if self.precision == "uint8" else DEFAULT_PREPROCESSING
        return replace(base, name=self.preprocessing, layout=self.layout, image_input=self.image_input)

    def runtime_equivalents(self) -> list:
        """The specs whose files serve the runtime as this one, best first: this one; for a tensor
        artifact recording another preprocessing, also the default one's (same network, same input:
        the runtime applies the preprocessing asked for itself)."""
        found = [self]
        if not self.image_input and self.preprocessing != preprocessings.DEFAULT:
            found.append(replace(self, preprocessing=preprocessings.DEFAULT))
        return found

    @classmethod
    def from_file_name(cls, file_name: str) -> Optional["ArtifactSpec"]:
        """The spec a file name states (variant, image input, preprocessing, float16, batch; the other
        options at their defaults), or None for a name that is not a catalogue artifact's."""
        stem = file_name[:-len(SUFFIX)] if file_name.endswith(SUFFIX) else None
        found = _NAME.match(stem or "")
        if not found or found["preprocessing"] not in (None, *preprocessings.NAMES[1:]):
            return None
        try:
            return cls.of_variant(found["variant"], image_input=bool(found["image"]),
                                  preprocessing=found["preprocessing"] or preprocessings.DEFAULT,
                                  batch=int(found["batch"]) if found["batch"] else None,
                                  float16=bool(found["float16"]))
        except ValueError:
            return None



def _loads(text):
    """json.loads, for text read from a file that may be anything: JSON nested too deeply for the
    parser (a RecursionError) is malformed JSON like any other, a ValueError (found by
    tools/fuzz_artifact.py's kind of input; tests/fuzz_crashers/)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def fixed_batches(batch: np.ndarray, size: int) -> list:
    """`batch` in pieces of exactly `size` for an artifact of that fixed batch: the last piece
    padded with copies of its last row (their answers are dropped)."""
    pieces = [batch[i:i + size] for i in range(0, len(batch), size)]
    if pieces and len(pieces[-1]) < size:
        pieces[-1] = np.concatenate([pieces[-1], np.repeat(pieces[-1][-1:], size - len(pieces[-1]), axis=0)])
    return pieces


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# --- the record ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """Where an artifact's weights come from (metadata key ``weights``)."""

    random: bool = False
    source: Optional[str] = None  # the official URL, or the local checkpoint or tarball it was read from
    sha256: Optional[str] = None  # of the tarball read
    seed: Optional[int] = None  # of random weights
    weights_source: Optional[str] = None  # "ema" or "raw" (TF-slim checkpoints)
    variables_from_ema: Optional[int] = None
    variables_raw: Optional[int] = None
    tflite_member: Optional[str] = None  # Google's .tflite inside the release tarball
    tflite_sha256: Optional[str] = None
    warning: Optional[str] = None

    @classmethod
    def untrained(cls, seed: int) -> "Weights":
        return cls(random=True, seed=seed, warning=RANDOM_WEIGHTS_WARNING)

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, record: dict) -> "Weights":
        known = {f.name for f in fields(cls)}  # a newer package's extra provenance is not ours to read
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True, eq=False)
class Golden:
    """The reference's outputs on the golden inputs (metadata key ``golden``): Keras' float32
    logits (``kind`` "logits") or TFLite's uint8 quantized logits ("quantized_logits"), on
    `ArtifactRecord.golden_inputs`."""

    values: np.ndarray  # (count, 1000)
    kind: str = "logits"
    count: int = GOLDEN_COUNT
    seed: int = GOLDEN_SEED

    DTYPES = {"logits": "<f4", "quantized_logits": "|u1"}


@dataclass(frozen=True)
class Quantization:
    """How a uint8 artifact quantizes (metadata key ``quantization``), as Google's .tflite does."""

    input_scale: float
    input_zero_point: int
    logits_scale: float
    logits_zero_point: int
    int8_view: tuple = ()  # weights and zero points the runtime may hand onnxruntime as int8 (value - 128)
    scheme: str = QUANTIZATION_SCHEME

    def quantized_logits(self, outputs, output: str, reference=None) -> np.ndarray:
        """An artifact's outputs as integer quantized logits. Logits: (z / scale + zero point).
        Probabilities fix the logits only up to a constant per sample (log p = z - logsumexp z):
        that constant is the one that puts most of them on the `reference`'s, a whole number of steps."""
        outputs = np.asarray(outputs, np.float64)
        if output == "logits":
            return np.rint(outputs / self.logits_scale + self.logits_zero_point).astype(np.int64)
        if reference is None:
            raise ValueError("quantized logits from probabilities need the reference's to fix their offset")
        relative = np.log(np.maximum(outputs, SMALLEST_PROBABILITY)) / self.logits_scale
        offset = np.median(np.asarray(reference) - relative, axis=1, keepdims=True)
        return np.rint(relative + offset).astype(np.int64)


@dataclass(frozen=True, eq=False)
class ArtifactRecord:
    """Everything an artifact records about itself, typed."""

    spec: ArtifactSpec
    family: str  # "v1" or "v2"
    alpha: str  # the width multiplier as written in the catalogue; "" for a network off the catalogue
    resolution: int
    classes: int  # 1000, or 1001 with slim's background class first
    weights: Weights
    versions: dict = field(default_factory=dict)  # of onnx-mobilenets and the packages that made it
    preprocessing: Optional[Preprocessing] = None  # default: the spec's input contract
    parity: dict = field(default_factory=dict)  # the conversion gate's numbers
    golden: Optional[Golden] = None
    quantization: Optional[Quantization] = None
    labels: tuple = ()  # ((wnid, label), ...) of the 1000 ImageNet classes; default: the standard ones

    def __post_init__(self):
        if self.preprocessing is None:
            object.__setattr__(self, "preprocessing", self.spec.input_contract)
        if not self.labels:
            object.__setattr__(self, "labels", imagenet_classes())

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def random_weights(self) -> bool:
        return self.weights.random

    @property
    def description(self) -> str:
        """The artifact's one-line description (its ONNX doc_string)."""
        kind = "quantization-aware-trained uint8 " if self.quantization else ""
        text = (f"{self.spec.variant}: Google's {kind}MobileNet {self.family.upper()} ImageNet classifier, "
                "made by onnx-mobilenets.")
        return (RANDOM_WEIGHTS_WARNING + ". " + text) if self.random_weights else text

    # --- the golden inputs, as the network and as the file take them

    def golden_inputs(self, count: int = GOLDEN_COUNT, seed: int = GOLDEN_SEED):
        """The deterministic inputs the golden record was computed on (`onnx_mobilenets.parity`):
        float32 NHWC network inputs for float artifacts, uint8 pixels for uint8 ones, and for an
        image-in artifact a list of decoded images of different sizes."""
        if self.golden is not None:
            count, seed = self.golden.count, self.golden.seed
        if self.preprocessing.image_input:
            return parity_images(self.resolution, count=count, seed=seed)
        if self.preprocessing.dtype == "uint8":
            return parity_pixels(self.resolution, count=count, seed=seed)
        return parity_inputs(self.resolution, count=count, seed=seed, scale=self.preprocessing.scale,
                             offset=self.preprocessing.offset)

    def feeds(self, inputs) -> list:
        """What an engine is fed for `inputs` (as `golden_inputs` makes them): the batch in the
        network's layout, or each image of an image-in artifact as a batch of one. A fixed batch of
        B takes B at a time: the batch in pieces of B (the last one padded with its last input), an
        image B times (`answers` picks the outputs that answer the inputs)."""
        size = self.spec.batch
        if self.preprocessing.image_input:
            return [np.repeat(image[np.newaxis], size or 1, axis=0) for image in inputs]
        if self.preprocessing.layout == "NCHW":
            inputs = np.transpose(inputs, (0, 3, 1, 2))
        if not size:
            return [np.ascontiguousarray(inputs)]
        return [np.ascontiguousarray(piece) for piece in fixed_batches(inputs, size)]

    def answers(self, outputs, count: int) -> np.ndarray:
        """The rows of an engine's outputs on `feeds`, concatenated, that answer the `count` inputs."""
        size = self.spec.batch
        if not size:
            return outputs
        return outputs[::size][:count] if self.preprocessing.image_input else outputs[:count]

    # --- writing and reading

    def metadata(self) -> dict:
        """Every metadata entry of the artifact, as strings."""
        labels = [list(c) for c in self.labels]
        if self.classes == 1001:
            labels = [["background", "background"]] + labels
        metadata = {
            "variant": self.spec.variant, "family": self.family, "alpha": str(self.alpha),
            "resolution": str(self.resolution), "output": self.spec.output, "classes": str(self.classes),
            "preprocessing": json.dumps(asdict(self.preprocessing)), "labels": json.dumps(labels),
            "weights": json.dumps(self.weights.as_dict()), "versions": json.dumps(self.versions),
            "opset": str(self.spec.opset), "parity": json.dumps(self.parity),
        }
        if self.golden is not None:
            metadata["golden"] = self._golden_json()
        if self.quantization is not None:
            metadata["quantization"] = json.dumps({**asdict(self.quantization),
                                                   "int8_view": list(self.quantization.int8_view)})
        if self.spec.batch is not None:
            metadata["batch"] = str(self.spec.batch)
        if self.spec.float16:
            metadata["float16"] = "true"
        return metadata

    def _golden_json(self) -> str:
        golden = self.golden
        dtype = Golden.DTYPES[golden.kind]
        maker = ("parity_images" if self.preprocessing.image_input
                 else "parity_pixels" if self.preprocessing.dtype == "uint8" else "parity_inputs")
        return json.dumps({
            "inputs": f"onnx_mobilenets.parity.{maker}({self.resolution}, count={golden.count}, seed={golden.seed})",
            "seed": golden.seed, "count": golden.count, "values": golden.kind, "dtype": dtype,
            "shape": list(golden.values.shape),
            "values_base64": base64.b64encode(np.ascontiguousarray(golden.values.astype(dtype)).tobytes()).decode(),
        })

    @classmethod
    def from_metadata(cls, metadata: dict, where) -> "ArtifactRecord":
        """The record of an artifact's metadata; InvalidModelError naming `where` and what is wrong."""
        missing = [k for k in REQUIRED_METADATA if k not in metadata]
        if missing:
            raise InvalidModelError(f"{where} is not a MobileNet artifact made by onnx-mobilenets (metadata lacks "
                                    f"{', '.join(missing)})")
        try:
            return _record_of(metadata)
        except InvalidModelError as e:
            raise InvalidModelError(f"{where}: {e}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise InvalidModelError(f"{where} has unreadable metadata ({type(e).__name__}: {e}): it was made by "
                                    "another version of onnx-mobilenets; convert it again") from None


def _record_of(metadata: dict) -> ArtifactRecord:
    contract = _preprocessing_of(metadata["preprocessing"])
    quantization = None
    if "quantization" in metadata:
        record = _loads(metadata["quantization"])
        quantization = Quantization(**{**record, "int8_view": tuple(record.get("int8_view", ()))})
    spec = ArtifactSpec(metadata["variant"], "uint8" if contract.dtype == "uint8" else "float32", contract.name,
                        contract.image_input, contract.layout, metadata["output"], int(metadata["opset"]),
                        int(metadata["batch"]) if "batch" in metadata else None,
                        _flag(metadata.get("float16", "false"), "float16"))
    classes = int(metadata["classes"])
    return ArtifactRecord(
        spec=spec, family=metadata["family"], alpha=metadata.get("alpha", ""), resolution=int(metadata["resolution"]),
        classes=classes, weights=Weights.from_dict(_loads(metadata["weights"])),
        versions=_loads(metadata.get("versions", "{}")), preprocessing=contract,
        parity=_loads(metadata.get("parity", "{}")),
        golden=_golden_of(metadata["golden"]) if "golden" in metadata else None, quantization=quantization,
        labels=_labels_of(metadata["labels"], classes))


def _flag(text: str, key: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"metadata {key} is {text!r}, not 'true' or 'false'")
    return text == "true"


def _preprocessing_of(text: str) -> Preprocessing:
    try:
        record = _loads(text)
        known = {f.name for f in fields(Preprocessing)}
        if not isinstance(record, dict) or set(record) != known:
            raise ValueError(f"its fields are {sorted(record) if isinstance(record, dict) else record}, "
                             f"expected {sorted(known)}")
        contract = Preprocessing(**record)
    except (ValueError, TypeError) as e:
        raise InvalidModelError(f"unreadable preprocessing record ({e}): the artifact was made by another version "
                                "of onnx-mobilenets; convert it again") from None
    problems = contract.problems()
    if problems:
        raise InvalidModelError(f"unsupported {', '.join(problems)} in the artifact's preprocessing record")
    return contract


def _labels_of(text: str, classes: int) -> tuple:
    labels = _loads(text)
    if classes == 1001 and labels:
        labels = labels[1:]  # slim's background class
    if not labels or len(labels) != 1000:
        raise InvalidModelError("the artifact does not carry the 1000 ImageNet labels")
    return tuple((str(wnid), str(label)) for wnid, label in labels)


def _golden_of(text: str) -> Golden:
    golden = _loads(text)
    if golden.get("values") not in Golden.DTYPES:
        raise InvalidModelError("the artifact's golden record holds no logits: it was made by an older "
                                "onnx-mobilenets; convert it again")
    values = np.frombuffer(base64.b64decode(golden["values_base64"]), dtype=golden["dtype"]).reshape(golden["shape"])
    values = values.astype(np.int64 if golden["values"] == "quantized_logits" else np.float32)
    return Golden(values, golden["values"], int(golden["count"]), int(golden["seed"]))


def read_record(source, where=None) -> ArtifactRecord:
    """The record of the artifact whose bytes (or path) `source` is; InvalidModelError when it is
    not an ONNX file, or not one this package made."""
    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    where = where or (source if isinstance(source, (str, Path)) else "the model")
    try:
        metadata = read_metadata(data)
    except InvalidModelError as e:
        raise InvalidModelError(f"{where} is not a valid ONNX model: {e}") from None
    return ArtifactRecord.from_metadata(metadata, where)


def golden_of(metadata: dict) -> tuple:
    """(golden inputs, the reference's values) an artifact's metadata records (`ArtifactRecord`)."""
    record = ArtifactRecord.from_metadata(metadata, "the artifact")
    if record.golden is None:
        raise InvalidModelError("the artifact carries no golden outputs")
    return record.golden_inputs(), record.golden.values


# --- the judge ----------------------------------------------------------------------------------

@dataclass
class Judgement:
    """An engine's outputs against the reference, under the artifact's rule."""

    compared: str  # "logits", "log-probabilities" or "quantized logits"
    inputs: int
    max_difference: float  # of the values compared; in quantization steps for quantized logits
    bound: float  # the bound at the sample that came closest to it; the steps allowed for quantized logits
    headroom: Optional[float]  # bound / difference at that sample; None when identical or counted in steps
    top1_agreement: float
    problems: list  # why it fails; empty when it passes
    numbers: dict  # the comparison's figures, as a parity record keeps them
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.problems


def judge(record: ArtifactRecord, outputs, *, output: Optional[str] = None, reference=None, device: str = "cpu",
          exact: bool = True) -> Judgement:
    """Whether `outputs` (N, classes), an engine's `output` (default: the artifact's own,
    "probabilities" or "logits") on the golden inputs, are the `reference`'s (default: the golden
    record's), and if not why: for a float artifact within the float32 (float16 artifacts: the
    float16) bound of its network on a `device` ("cpu" or "gpu") engine; for a uint8 one, its
    quantized logits step for step with TFLite's (`exact`: an engine that follows TFLite's
    arithmetic, onnxruntime on the CPU) or within `parity.OTHER_ENGINE` (engines and devices that
    round their own way)."""
    output = output or record.spec.output
    if reference is None:
        if record.golden is None:
            raise InvalidModelError("the artifact carries no golden outputs to judge by")
        reference = record.golden.values
    outputs = record.answers(np.asarray(outputs), len(reference))  # a fixed batch's padding dropped
    if record.quantization is None:
        agreement = check(reference, outputs, output, tolerance_for(record.family, device, record.spec.float16))
        return Judgement(agreement.output, agreement.inputs, agreement.max_abs_diff, agreement.bound,
                         None if np.isinf(agreement.headroom) else agreement.headroom, agreement.top1_agreement,
                         agreement.problems(), agreement.as_dict())
    rule = EXACT if exact else OTHER_ENGINE
    agreement = check_quantized(reference, record.quantization.quantized_logits(outputs, output, reference), rule)
    note = f"{agreement.identical:.1%} identical (at least {rule.min_identical:.0%} required)"
    return Judgement("quantized logits", agreement.inputs, float(agreement.max_steps), float(rule.max_steps), None,
                     agreement.top1_agreement, agreement.problems(), agreement.as_dict(), note)


# --- what the runtime runs ----------------------------------------------------------------------

def int8_weight_names(metadata: dict) -> list:
    """The weights and zero points a uint8 artifact's metadata marks as re-expressible in int8;
    empty for a float artifact."""
    if "quantization" not in metadata:
        return []
    try:
        names = _loads(metadata["quantization"])["int8_view"]
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidModelError(f"unreadable quantization metadata: {e}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidModelError("unreadable quantization metadata: int8_view is not a list of names")
    return names


def runtime_form(data: bytes, int8_weights: Optional[bool] = None) -> bytes:
    """The bytes to create an onnxruntime session from: for a uint8 artifact its weights as int8
    where that is both exact and faster (`int8_weights`; default: this CPU has VNNI, see
    `onnx_mobilenets.model_bytes`), else as stored; any other model, and any ORT format file,
    unchanged."""
    if is_ort_format(data):
        return data
    names = int8_weight_names(read_metadata(data))
    if int8_weights is None:
        int8_weights = cpu_has_vnni()
    if not names or not int8_weights:
        return data
    return with_int8_weights(data, names)


def ort_format_files(onnx_path) -> tuple:
    """(NAME.ort, NAME.required_operators.config): where an artifact's ORT format files go, beside
    NAME.onnx (named as onnxruntime's converter names them)."""
    onnx_path = Path(onnx_path)
    return (onnx_path.with_name(onnx_path.stem + ORT_SUFFIX), onnx_path.with_name(onnx_path.stem + OPERATORS_SUFFIX))


def ort_format_source(ort_path) -> Path:
    """The .onnx file an ORT format file was made from: NAME.onnx beside NAME.ort."""
    return Path(ort_path).with_suffix(SUFFIX)


def ort_format_difference(ort_data: bytes, onnx_data: bytes) -> float:
    """The largest difference between an ORT format file's outputs (`convert --ort`) and its .onnx
    file's, on the .onnx file's golden inputs in onnxruntime on the CPU: 0.0 when identical, as
    they must be. The ORT file holds the graph onnxruntime optimized without platform-specific
    rewrites, so the .onnx file runs at the same level (extended, no x86 blocked layouts)."""
    import onnxruntime as ort

    record = read_record(onnx_data, "the .onnx file")
    feeds = record.feeds(record.golden_inputs())
    as_stored = new_session(ort_data)
    reference = new_session(onnx_data, options=session_options(
        graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED))
    name = reference.get_inputs()[0].name
    differences = [np.abs(as_stored.run(None, {name: feed})[0].astype(np.float64)
                          - reference.run(None, {name: feed})[0].astype(np.float64)).max() for feed in feeds]
    return float(max(differences))


# --- the manifest of a folder of artifacts -------------------------------------------------------

def manifest_entry(record: ArtifactRecord, sha256: str, size: int, census: dict) -> dict:
    """What a folder's manifest keeps about one artifact."""
    return {"file": record.spec.file_name, "sha256": sha256, "size": size, "opset": record.spec.opset,
            "output": record.spec.output, "layout": record.spec.layout, "random_weights": record.random_weights,
            "parity": record.parity, "census": census}


def parse_manifest(data: bytes, where) -> dict:
    """A manifest's ``artifacts`` table {name: entry}; ValueError naming `where` when it is not one."""
    try:
        manifest = _loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where} is not a valid manifest: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("artifacts"), dict):
        raise ValueError(f"{where} is not an onnx-mobilenets manifest (no 'artifacts' table)")
    return manifest["artifacts"]


def manifest_lookup(data: bytes, where, spec: ArtifactSpec) -> tuple:
    """(file name, SHA-256) of `spec`'s artifact in a manifest; KeyError when it has none."""
    entry = parse_manifest(data, where).get(spec.name)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not isinstance(entry.get("sha256"),
                                                                                                  str):
        raise KeyError(f"{where} has no valid entry for {spec.name}")
    return entry["file"], entry["sha256"]


def record_in_manifest(folder, name: str, entry: dict) -> Path:
    """Add or replace `name`'s entry in ``folder/manifest.json``, atomically."""
    path = Path(folder) / MANIFEST
    artifacts = parse_manifest(path.read_bytes(), path) if path.exists() else {}
    artifacts[name] = entry
    return _write_manifest(path, {"format": 1, "artifacts": dict(sorted(artifacts.items()))})


def write_folder_manifest(folder, artifacts: dict) -> Path:
    """``folder/manifest.json`` for a published folder: the `artifacts` table, and a ``files`` table
    with the SHA-256 and size of every other file in the folder (subfolders included)."""
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"sha256": sha256_of(path),
                                                      "size": path.stat().st_size}
    return _write_manifest(folder / MANIFEST, {"format": 1, "artifacts": dict(sorted(artifacts.items())),
                                               "files": files})


def _write_manifest(path: Path, manifest: dict) -> Path:
    atomic_write(path, (json.dumps(manifest, indent=1) + "\n").encode())
    return path

