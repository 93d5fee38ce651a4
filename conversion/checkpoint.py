"""Loading Google's TF-slim checkpoints into the Keras MobileNets, by name and strictly.

Weight mapping is one pure function (`slim_variable_names`) from Keras layer names, which are the
slim scopes, to checkpoint variable names. Loading is all-or-nothing: every Keras weight must find
its variable with the right shape and every model variable of the checkpoint must be used, else a
`CheckpointError` lists what is missing, left over or mis-shaped and nothing is assigned.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from onnx_mobilenets import catalogue, download
from onnx_mobilenets.errors import CheckpointError

from .architecture import FAMILIES
from .layers import LOGITS_SCOPE, layer_name, scope_of

__all__ = ["load_slim_checkpoint", "resolve_checkpoint", "slim_variable_names", "CheckpointReport"]

logger = logging.getLogger(__name__)

EMA_SUFFIX = "ExponentialMovingAverage"
# Optimizer slots and bookkeeping found in released checkpoints; never part of the network.
_NON_MODEL_SUFFIXES = (EMA_SUFFIX, "RMSProp", "RMSProp_1", "Momentum", "Adam", "Adam_1")
_NON_MODEL_NAMES = ("global_step",)

# Keras weight name -> slim variable name, by layer type.
_CONV_WEIGHTS = {"kernel": "weights", "bias": "biases"}
_DEPTHWISE_WEIGHTS = {"kernel": "depthwise_weights"}
_BN_WEIGHTS = {n: n for n in ("gamma", "beta", "moving_mean", "moving_variance")}

PathLike = Union[str, os.PathLike]


@dataclass
class CheckpointReport:
    """What was loaded, for the artifact's provenance record."""

    source: str  # catalogue URL or local path as given
    prefix: str  # the checkpoint prefix actually read
    sha256: Optional[str]  # of the tarball, when the checkpoint came as one
    weights_source: str  # "ema" or "raw" as requested
    from_ema: list = field(default_factory=list)  # variables taken from their EMA shadow copy
    from_raw: list = field(default_factory=list)  # variables taken as is


def slim_variable_names(model) -> dict:
    """Map each Keras weight (by its path) to the slim checkpoint variable that holds it."""
    import keras

    names = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            table = _DEPTHWISE_WEIGHTS
        elif isinstance(layer, keras.layers.Conv2D):
            table = _CONV_WEIGHTS
        elif isinstance(layer, keras.layers.BatchNormalization):
            table = _BN_WEIGHTS
        else:
            raise CheckpointError(f"layer {layer.name!r} ({type(layer).__name__}) has weights but no slim mapping")
        scope = scope_of(layer.name)
        for weight in layer.weights:
            if weight.name not in table:
                raise CheckpointError(f"weight {weight.path!r} has no slim mapping")
            names[weight.path] = f"{scope}/{table[weight.name]}"
    return names


def is_model_variable(name: str) -> bool:
    """True for network variables; False for EMA copies, optimizer slots and global_step."""
    return name not in _NON_MODEL_NAMES and name.rsplit("/", 1)[-1] not in _NON_MODEL_SUFFIXES


def load_slim_checkpoint(model, source, weights_source: str = "ema", sha256: Optional[str] = None) -> CheckpointReport:
    """Load a TF-slim checkpoint into `model` (built by this package's MobileNet or MobileNetV2).

    `source` is a catalogue name (official checkpoint, downloaded and cached), a local tarball, a
    folder holding one checkpoint, or a checkpoint prefix. With ``weights_source="ema"`` each
    variable's ExponentialMovingAverage copy is used when present (what TF-slim's evaluation
    restores), else the raw one; ``"raw"`` forces the raw copies. A 1000-class model drops slim's
    background logit (index 0); a 1001-class model keeps all. `sha256`: the tarball's, when the
    caller knows it already (else it is computed).
    """
    import tensorflow as tf

    if weights_source not in ("ema", "raw"):
        raise ValueError(f"weights_source must be 'ema' or 'raw', got {weights_source!r}")
    prefix, sha256 = resolve_checkpoint(source, sha256)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as e:  # TF raises several types for unreadable files
        raise CheckpointError(f"cannot read checkpoint {prefix}: {e}") from e
    available = reader.get_variable_to_shape_map()
    report = CheckpointReport(source=str(source), prefix=prefix, sha256=sha256, weights_source=weights_source)

    weights_by_path = {w.path: w for w in model.weights}
    values, missing, mismatched, used = {}, [], [], set()
    for path, var_name in slim_variable_names(model).items():
        weight = weights_by_path[path]
        if var_name not in available:
            missing.append(f"{var_name} (for {path}, shape {list(weight.shape)})")
            continue
        used.add(var_name)
        shadow = f"{var_name}/{EMA_SUFFIX}"
        if weights_source == "ema" and shadow in available:
            value, origin = reader.get_tensor(shadow), report.from_ema
        else:
            value, origin = reader.get_tensor(var_name), report.from_raw
        value = _fit_logits_classes(var_name, np.asarray(value, dtype=np.float32), tuple(weight.shape))
        if tuple(value.shape) != tuple(weight.shape):
            mismatched.append(
                f"{var_name}: checkpoint {list(available[var_name])} vs model {list(weight.shape)}"
            )
            continue
        values[path] = value
        origin.append(var_name)

    unused = sorted(n for n in available if is_model_variable(n) and n not in used)
    if missing or unused or mismatched:
        raise CheckpointError(_mismatch_message(prefix, model, available, missing, unused, mismatched))

    for path, value in values.items():
        weights_by_path[path].assign(value)
    logger.info(
        "loaded %d variables from %s (%d from EMA copies, %d raw)",
        len(values), prefix, len(report.from_ema), len(report.from_raw),
    )
    return report


def _fit_logits_classes(var_name: str, value: np.ndarray, model_shape: tuple) -> np.ndarray:
    """Drop slim's background class (index 0) when the model has 1000 classes."""
    if var_name.split("/", 1)[-1].startswith(LOGITS_SCOPE) and value.shape[-1] == 1001 and model_shape[-1] == 1000:
        return value[..., 1:]
    return value


def _mismatch_message(prefix, model, available, missing, unused, mismatched) -> str:
    lines = [f"checkpoint {prefix} does not fit model {model.name!r}:"]
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches: " + "; ".join(mismatched[:5]))
        hint = _width_hint(model, available)
        if hint:
            lines.append("  " + hint)
    if missing:
        lines.append(f"  {len(missing)} model weights not in the checkpoint: " + "; ".join(missing[:5]))
    if unused:
        lines.append(f"  {len(unused)} checkpoint variables left over: " + ", ".join(unused[:5]))
    lines.append("  (is it the checkpoint of another family, alpha or depth_multiplier?)")
    return "\n".join(lines)


def _width_hint(model, available) -> Optional[str]:
    """Say which alpha the checkpoint's stem width belongs to, when the widths disagree."""
    for family in FAMILIES.values():
        ckpt_shape = available.get(f"{family.stem_scope}/weights")
        if ckpt_shape is None:
            continue
        try:
            model_width = model.get_layer(layer_name(family.stem_scope)).kernel.shape[-1]
        except ValueError:
            return f"the checkpoint is a MobileNet {family.name.upper()}; the model is not"
        alphas = sorted({v.alpha for v in catalogue.list_variants(family.name)
                         if family.stem_width(v.alpha) == ckpt_shape[-1]})
        if alphas and model_width != ckpt_shape[-1]:
            return (
                f"the checkpoint's stem has {ckpt_shape[-1]} channels, as a MobileNet {family.name.upper()} of "
                f"alpha {' or '.join(map(str, alphas))} has; this model's stem has {model_width}: the alphas differ"
            )
    return None


def resolve_checkpoint(source, sha256: Optional[str] = None) -> tuple:
    """Turn a checkpoint source into (prefix, tarball SHA-256 or None).

    A catalogue name or alias downloads the official tarball (verified, cached); a tarball is
    safely extracted into the cache (`sha256`: its SHA-256 when known, else computed); a folder must
    hold exactly one checkpoint; anything else is taken as a prefix (``.../model.ckpt`` with
    ``model.ckpt.index`` beside it).
    """
    if catalogue.names_a_variant(source):
        variant = catalogue.get_variant(source)  # ValueError with close matches if unknown
        tarball = download.fetch(variant.checkpoint_url, variant.checkpoint_sha256, subdir="checkpoints")
        sha256 = variant.checkpoint_sha256 or download.recorded_sha256(tarball)
        return _prefix_in_folder(_extracted(tarball, sha256)), sha256
    path = Path(os.fspath(source)).expanduser()
    if path.is_file() and _is_tarball(path):
        sha256 = sha256 or download.sha256_of(path)
        return _prefix_in_folder(_extracted(path, sha256)), sha256
    if path.is_dir():
        return _prefix_in_folder(path), None
    if Path(str(path) + ".index").is_file():
        return str(path), None
    if path.is_file():
        raise ValueError(f"{path} is not a checkpoint tarball (.tgz, .tar.gz, .tar) nor a checkpoint prefix")
    raise FileNotFoundError(f"no checkpoint at {path}: not a tarball, a folder, or a prefix with {path}.index")


def _is_tarball(path: Path) -> bool:
    return path.name.endswith((".tgz", ".tar.gz", ".tar"))


def _extracted(tarball: Path, sha256: Optional[str]) -> Path:
    stem = tarball.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    # Keyed by content, so a changed tarball of the same name is never confused with the old one.
    folder = download.cache_dir() / "extracted" / f"{stem}-{(sha256 or 'unverified')[:16]}"
    if folder.is_dir() and any(folder.rglob("*.index")):
        return folder
    return download.safe_extract(tarball, folder)


def _prefix_in_folder(folder: Path) -> str:
    indexes = sorted(folder.rglob("*.index"))
    if not indexes:
        raise FileNotFoundError(f"no checkpoint (*.index file) in {folder}")
    if len(indexes) > 1:
        raise ValueError(
            f"{folder} holds {len(indexes)} checkpoints ({', '.join(p.name for p in indexes)}); "
            "pass the prefix of the one you want"
        )
    return str(indexes[0])[: -len(".index")]
