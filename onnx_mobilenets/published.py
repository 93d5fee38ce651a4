"""Published models: one folder per variant, laid out as a Hugging Face Hub model repository (what
`onnx-mobilenets publish` writes, what the runtime downloads from the Hub), and the addresses that
name one on the Hub.

A folder holds the variant's artifacts (``NAME.onnx``, ``NAME-image.onnx``, ...; `ArtifactSpec`
names them), `LABELS`, `CONFIG` (the input contract, for code that reads no ONNX metadata), the
model card `MODEL_CARD`, and ``manifest.json``: the artifacts table `convert --output` writes (so
the folder also serves as ``ONNX_MOBILENETS_ARTIFACTS_URL``) and every other file's SHA-256
(`artifact.write_folder_manifest`). The runtime checks each file it downloads against it.

On the Hub a catalogue name is the repository of that name under `hub_namespace()`
(``ONNX_MOBILENETS_HUB_NAMESPACE``, default ``onnx-mobilenets``; empty: names are never looked up
on the Hub), and any repository is addressed as ``hf://owner/repo[@revision]``.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Optional

from .sessions import new_session

CONFIG = "config.json"
MODEL_CARD = "README.md"
LABELS = "labels.txt"  # one "wnid<TAB>label" line per class, in the standard ILSVRC-2012 order
HUB_NAMESPACE_ENV = "ONNX_MOBILENETS_HUB_NAMESPACE"
DEFAULT_HUB_NAMESPACE = "onnx-mobilenets"
HUB_SCHEME = "hf://"
# The Hub's rules for a repository id: owner/name, letters, digits, '-', '_', '.'; no '--' or '..'.
_REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


@dataclass(frozen=True)
class HubAddress:
    """A model repository on the Hub, at a revision (a branch, tag or commit)."""

    repo_id: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"{HUB_SCHEME}{self.repo_id}@{self.revision}"


def is_hub_address(model) -> bool:
    return isinstance(model, str) and model.startswith(HUB_SCHEME)


def parse_hub_address(text: str) -> HubAddress:
    """``hf://owner/repo[@revision]`` as a `HubAddress`; ValueError saying what is wrong."""
    if not is_hub_address(text):
        raise ValueError(f"a Hub address starts with {HUB_SCHEME}, got {text!r}")
    repo_id, _, revision = text[len(HUB_SCHEME):].partition("@")
    if not _REPO_ID.match(repo_id) or (revision == "" and "@" in text) or any(c in revision for c in " \\?#"):
        raise ValueError(f"{text!r} is not a Hub address: expected {HUB_SCHEME}owner/repo or "
                         f"{HUB_SCHEME}owner/repo@revision")
    return HubAddress(repo_id, revision or "main")


def hub_namespace() -> Optional[str]:
    """The Hub namespace whose repositories are named after catalogue variants; None when disabled."""
    return os.environ.get(HUB_NAMESPACE_ENV, DEFAULT_HUB_NAMESPACE).strip() or None


def hub_address_of(variant: str) -> Optional[HubAddress]:
    """Where the Hub keeps catalogue variant `variant`'s artifacts; None when Hub lookups are off."""
    namespace = hub_namespace()
    return HubAddress(f"{namespace}/{variant}") if namespace else None


def artifact_contract(record, data: bytes) -> dict:
    """What code in any language needs to feed one artifact and read its answer (`config.json`'s
    ``artifacts`` entries; `onnx-mobilenets serve`'s ``GET /v1/model``)."""
    session = new_session(data)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    contract = record.preprocessing
    return {
        "file": record.spec.file_name, "image_input": contract.image_input,
        "input": {"name": inp.name, "shape": inp.shape, "dtype": contract.dtype if not contract.image_input
                  else "uint8", "layout": contract.layout if not contract.image_input else "NHWC"},
        "output": {"name": out.name, "shape": out.shape, "kind": record.spec.output},
        "preprocessing": asdict(contract), "opset": record.spec.opset,
    }


def model_config(record, artifacts: dict, package_version: str) -> dict:
    """`CONFIG`: the variant and the contract of each of its artifacts (file name -> `artifact_contract`),
    as this package's `package_version` writes it."""
    return {
        "model_type": f"mobilenet_{record.family}", "variant": record.spec.variant, "family": record.family,
        "alpha": record.alpha, "resolution": record.resolution, "precision": record.spec.precision,
        "num_classes": 1000, "labels": LABELS, "label_order": "ILSVRC-2012 (Keras decode_predictions)",
        "artifacts": artifacts, "weights": record.weights.as_dict(),
        "onnx_mobilenets": package_version,
    }
