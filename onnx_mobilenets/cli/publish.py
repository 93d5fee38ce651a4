"""`onnx-mobilenets publish NAME... | --all --output DIR`: artifacts already converted (the cache, or
``--from DIR``) as one folder per variant, laid out as a Hugging Face Hub model repository
(`onnx_mobilenets.published`): the variant's artifacts, ``labels.txt``, ``config.json`` (the input
contract of each artifact), the model card ``README.md`` (generated from the artifacts' metadata, with
a ``model-index`` of the published accuracy and, from ``--evaluation FILE.json``, the measured one)
and ``manifest.json`` with every file's SHA-256. Uploading is the Hub's own ``hf upload``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import onnx_mobilenets
from onnx_mobilenets import builtin, catalogue, download
from onnx_mobilenets.artifact import (
    MANIFEST,
    SUFFIX,
    ArtifactSpec,
    manifest_entry,
    manifest_lookup,
    read_record,
    write_folder_manifest,
)
from onnx_mobilenets.errors import ChecksumError, ModelNotFoundError
from onnx_mobilenets.files import atomic_folder
from onnx_mobilenets.published import CONFIG, LABELS, MODEL_CARD, artifact_contract, hub_namespace, model_config

from .model_card import model_card


def run(args) -> int:
    if args.all == bool(args.names):
        raise ValueError("publish takes NAME... or --all (one of them)")
    source = Path(args.source).expanduser() if args.source else download.artifacts_dir()
    if args.source and not source.is_dir():
        raise FileNotFoundError(f"--from {source} is not a folder")
    evaluations = [_read_evaluation(path) for path in args.evaluation or []]
    found = artifacts_by_variant(source, use_builtin=not args.source)
    names = sorted(found) if args.all else [catalogue.get_variant(n).name for n in args.names]
    if not names:
        raise ModelNotFoundError(f"{source} holds no converted artifacts to publish; convert some first")
    missing = [n for n in names if n not in found]
    if missing:
        raise ModelNotFoundError(f"nothing converted for {', '.join(missing)} in {source}: run "
                                 f"onnx-mobilenets convert {' '.join(missing)} first")
    for name in names:
        folder = publish_variant(name, found[name], Path(args.output) / name,
                                 [e for e in evaluations if e.get("model") == name])
        print(f"{folder}: {', '.join(sorted(p.name for p in found[name]))} with {LABELS}, {CONFIG}, {MODEL_CARD}, "
              f"{MANIFEST}")
    print(f"Upload one with: hf upload OWNER/REPO {Path(args.output) / names[0]} .")
    return 0


def artifacts_by_variant(folder: Path, use_builtin: bool) -> dict:
    """{variant: [artifact paths]} of the catalogue artifacts in `folder` (the built-in model for
    its variant when `use_builtin` and the folder has none of it)."""
    found = {}
    for path in sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []:
        spec = ArtifactSpec.from_file_name(path.name)
        if spec is not None:
            found.setdefault(spec.variant, []).append(path)
    if use_builtin and builtin.SPEC.variant not in found and builtin.PATH.is_file():
        found[builtin.SPEC.variant] = [builtin.PATH]
    return found


def publish_variant(name: str, paths: list, folder: Path, evaluations: list) -> Path:
    """Write `name`'s repository folder from its artifacts at `paths`, whole or not at all: made in
    a temporary sibling, then put in the place of any earlier one; return the folder."""
    artifacts = [(data, read_record(data, path)) for path, data in ((p, _checked_bytes(p)) for p in paths)]
    with atomic_folder(folder) as work:
        _write_repository(name, artifacts, work, evaluations)
    return folder


def _write_repository(name: str, artifacts: list, folder: Path, evaluations: list) -> None:
    entries, contracts = {}, {}
    for data, record in artifacts:
        (folder / record.spec.file_name).write_bytes(data)
        entries[record.name] = manifest_entry(record, download.sha256_of(folder / record.spec.file_name), len(data),
                                              {})
        contracts[record.name] = artifact_contract(record, data)
    records = [record for _, record in artifacts]
    (folder / LABELS).write_text("".join(f"{wnid}\t{label}\n" for wnid, label in records[0].labels))
    config = model_config(records[0], contracts, onnx_mobilenets.__version__)
    (folder / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    address = f"hf://{hub_namespace() or 'OWNER'}/{name}"
    (folder / MODEL_CARD).write_text(model_card(catalogue.get_variant(name), records, evaluations, address))
    write_folder_manifest(folder, entries)


def _checked_bytes(path: Path) -> bytes:
    """An artifact's bytes, checked against its folder's manifest (or the cache's record of it)."""
    data = path.read_bytes()
    manifest, spec = path.parent / MANIFEST, ArtifactSpec.from_file_name(path.name)
    expected = None
    if manifest.is_file() and spec is not None:
        with contextlib.suppress(KeyError):
            file, expected = manifest_lookup(manifest.read_bytes(), manifest, spec)
            expected = expected if file == path.name else None
    expected = expected or download.recorded_sha256(path)
    if expected is not None and download.sha256_of(path) != expected:
        raise ChecksumError(f"{path} does not match its recorded SHA-256 {expected}: it changed after conversion; "
                            "convert it again")
    return data


def _read_evaluation(path) -> dict:
    """An `evaluate --json` report; ValueError naming the file when it is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--evaluation {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"--evaluation {path} is not JSON: {e}") from None
    needed = ("model", "top1", "top5", "images", "preprocessing")
    if not isinstance(report, dict) or any(k not in report for k in needed):
        raise ValueError(f"--evaluation {path} is not an `onnx-mobilenets evaluate --json` report "
                         f"(it needs {', '.join(needed)})")
    return report
