"""Models where users look for them: `publish` writes a Hugging Face Hub model repository (artifacts,
labels, config.json, a model card the Hub's own `ModelCard` reads, a manifest of every file), and the
runtime gets models from the Hub, here a local stand-in on 127.0.0.1 behind huggingface_hub
(HF_ENDPOINT): downloaded, checked against the manifest, retried, cached, offline."""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hub_server import serving_hub
from huggingface_hub import ModelCard

from onnx_mobilenets import OnnxMobileNet, get_variant
from onnx_mobilenets.artifact import read_record
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.download import artifacts_dir
from onnx_mobilenets.errors import ChecksumError, ModelNotFoundError
from onnx_mobilenets.runtime import artifacts
from onnx_mobilenets.sessions import new_session

FLOAT = "mobilenet_v1_0.25_128"
QUANT = "mobilenet_v1_0.25_128_quant"
NAMESPACE = "test-namespace"
ELEPHANT = "elephant.jpg"


@pytest.fixture(scope="module")
def published(quant_artifacts, tmp_path_factory) -> Path:
    """`publish QUANT --from` the quantized fixtures' folder: the repository folder."""
    out = tmp_path_factory.mktemp("published")
    assert cli(["publish", QUANT, "--from", str(quant_artifacts), "--output", str(out)]) == 0
    return out / QUANT


def test_publish_writes_a_hub_model_repository(fixture_artifacts, converted, fixtures, tmp_path, capsys):
    """A variant's tensor and image-in artifacts and an `evaluate --json` report become one folder:
    the artifacts as they were, labels.txt, config.json stating each file's real input and output,
    a model card whose YAML huggingface_hub reads back (license, library, tags, dataset, task, and
    a model-index with the published and the measured accuracy), and a manifest of every file."""
    source = tmp_path / "converted"
    source.mkdir()
    for path in (fixture_artifacts[0] / f"{FLOAT}.onnx", converted(FLOAT, image_input=True)):
        shutil.copy(path, source / path.name)
    labelled = tmp_path / "labelled"
    for image, wnid in ((ELEPHANT, "n02504458"), ("cheetah.jpg", "n02130308")):
        (labelled / wnid).mkdir(parents=True)
        shutil.copy(fixtures / "images" / image, labelled / wnid / image)
    assert cli(["evaluate", str(labelled), "--model", str(source / f"{FLOAT}.onnx"), "--json", "--quiet"]) == 0
    report = tmp_path / "evaluation.json"
    report.write_text(capsys.readouterr().out)
    evaluation = json.loads(report.read_text())

    assert cli(["publish", FLOAT, "--from", str(source), "--output", str(tmp_path / "out"),
                "--evaluation", str(report)]) == 0
    folder = tmp_path / "out" / FLOAT
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["README.md", "config.json", "labels.txt", "manifest.json", f"{FLOAT}-image.onnx", f"{FLOAT}.onnx"]
    for name in (f"{FLOAT}.onnx", f"{FLOAT}-image.onnx"):
        assert (folder / name).read_bytes() == (source / name).read_bytes()

    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["files"]) == [f for f in files if f != "manifest.json"]
    for name, entry in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert sorted(manifest["artifacts"]) == [FLOAT, f"{FLOAT}-image"]

    record = read_record(folder / f"{FLOAT}.onnx")
    labels = (folder / "labels.txt").read_text().splitlines()
    assert [tuple(line.split("\t")) for line in labels] == list(record.labels) and len(labels) == 1000
    config = json.loads((folder / "config.json").read_text())
    assert config["variant"] == FLOAT and config["resolution"] == 128 and config["labels"] == "labels.txt"
    for name, contract in config["artifacts"].items():
        session = new_session(folder / contract["file"])
        (inp,), (out,) = session.get_inputs(), session.get_outputs()
        assert (contract["input"]["name"], contract["input"]["shape"]) == (inp.name, inp.shape), name
        assert (contract["output"]["name"], contract["output"]["shape"]) == (out.name, out.shape), name
        assert contract["image_input"] == name.endswith("-image")
    assert config["artifacts"][f"{FLOAT}-image"]["input"]["dtype"] == "uint8"

    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag, data.datasets) == (
        "apache-2.0", "onnx", "image-classification", ["imagenet-1k"])
    assert "onnx" in data.tags and "mobilenet-v1" in data.tags
    results = {r.metric_name: r for r in data.eval_results}
    variant = get_variant(FLOAT)
    assert results["top-1 accuracy (published)"].metric_value == variant.top1 == 41.5
    assert results["top-5 accuracy (published)"].metric_value == variant.top5
    assert results["top-1 accuracy (published)"].source_url == variant.accuracy_source[1]
    measured = [r for name, r in results.items() if "measured on 2 images, default preprocessing" in name]
    assert sorted(r.metric_value for r in measured) == sorted([round(100 * evaluation["top1"], 2),
                                                               round(100 * evaluation["top5"], 2)])
    assert all(r.dataset_type == "imagenet-1k" for r in data.eval_results)
    for needed in (record.weights.sha256, f"/{FLOAT}\")", "```python", "```js",
                   "arXiv:1704.04861", "Preprocessing"):
        assert needed in card.text, needed


def test_publish_refuses_what_it_cannot_publish(quant_artifacts, tmp_path, capsys):
    """Usage errors and what is not there (2) before any work; a changed artifact (1): an error
    naming it, and no folder at all."""
    out = tmp_path / "out"
    assert cli(["publish", QUANT, "--all", "--output", str(out)]) == 2
    assert cli(["publish", "--output", str(out)]) == 2
    assert cli(["publish", "mobilenet_v9", "--output", str(out)]) == 2
    assert cli(["publish", "mobilenet_v2_0.35_96", "--from", str(quant_artifacts), "--output", str(out)]) == 2
    assert "nothing converted for mobilenet_v2_0.35_96" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"top1": 0.5}')
    assert cli(["publish", QUANT, "--from", str(quant_artifacts), "--output", str(out), "--evaluation",
                str(tmp_path / "bad.json")]) == 2
    changed = tmp_path / "changed"
    shutil.copytree(quant_artifacts, changed)
    (changed / f"{QUANT}.onnx").write_bytes((changed / f"{QUANT}.onnx").read_bytes() + b"\0")
    assert cli(["publish", QUANT, "--from", str(changed), "--output", str(out)]) == 1
    assert not out.exists()


@pytest.fixture
def hub(published, monkeypatch):
    """The stand-in serving `published` as NAMESPACE/QUANT; the runtime pointed at it, and no local
    conversion to fall back on."""
    with serving_hub() as hub:
        hub.commit = hub.add_folder(f"{NAMESPACE}/{QUANT}", published)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("ONNX_MOBILENETS_HUB_NAMESPACE", NAMESPACE)
        monkeypatch.setattr(artifacts, "conversion_available", lambda: False)
        yield hub


def downloads(hub) -> list:
    return [path.rsplit("/", 1)[-1] for method, path in hub.requests if "/resolve/" in path]


def test_a_name_comes_from_the_hub_checked_and_cached(hub, published, fixtures):
    """An empty cache: `OnnxMobileNet(NAME)` asks the Hub (a 500 the first time is retried), checks
    the artifact against the repository's manifest, keeps it in the cache and runs it; a second
    instance makes no request at all."""
    hub.faults["manifest.json"] = ["500"]
    model = OnnxMobileNet(QUANT)
    assert model.path == artifacts_dir() / f"{QUANT}.onnx"
    assert model.path.read_bytes() == (published / f"{QUANT}.onnx").read_bytes()
    assert downloads(hub).count("manifest.json") >= 3  # the 500, then HEAD and GET
    assert f"{QUANT}.onnx" in downloads(hub)
    reference = OnnxMobileNet(published / f"{QUANT}.onnx")
    image = fixtures / "images" / ELEPHANT
    assert model.predict(image) == reference.predict(image)
    asked = len(hub.requests)
    OnnxMobileNet(QUANT)
    assert len(hub.requests) == asked


def test_a_hub_address_at_a_revision(hub, published, monkeypatch):
    """``hf://owner/repo`` and ``hf://owner/repo@COMMIT`` name any repository; the file is
    huggingface_hub's cached copy, and offline it is used without a request."""
    model = OnnxMobileNet(f"hf://{NAMESPACE}/{QUANT}")
    assert model.path.read_bytes() == (published / f"{QUANT}.onnx").read_bytes()
    assert str(model.path).startswith(os.environ["HF_HUB_CACHE"])
    at_commit = OnnxMobileNet(f"hf://{NAMESPACE}/{QUANT}@{hub.commit}")
    assert at_commit.path.read_bytes() == model.path.read_bytes()
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    asked = len(hub.requests)
    assert OnnxMobileNet(f"hf://{NAMESPACE}/{QUANT}@{hub.commit}").path == at_commit.path
    assert len(hub.requests) == asked
    with pytest.raises(ModelNotFoundError, match="no revision"):
        monkeypatch.delenv("ONNX_MOBILENETS_OFFLINE")
        OnnxMobileNet(f"hf://{NAMESPACE}/{QUANT}@v9")
    for bad in ("hf://just-a-name", "hf://a/b@", "hf://a/b/c"):
        with pytest.raises(ValueError, match="not a Hub address"):
            OnnxMobileNet(bad)


def test_a_tampered_file_is_refused_and_not_kept(hub, published, tmp_path):
    """The Hub serves an artifact whose bytes are not those its manifest records: ChecksumError, and
    neither the cache nor huggingface_hub's cache keeps it."""
    tampered = tmp_path / "tampered"
    shutil.copytree(published, tampered)
    data = bytearray((tampered / f"{QUANT}.onnx").read_bytes())
    data[-100] ^= 1
    (tampered / f"{QUANT}.onnx").write_bytes(bytes(data))
    hub.add_folder(f"{NAMESPACE}/{QUANT}", tampered)  # the new main
    with pytest.raises(ChecksumError, match="manifest says"):
        OnnxMobileNet(QUANT)
    assert not (artifacts_dir() / f"{QUANT}.onnx").exists()
    kept = [p for p in Path(os.environ["HF_HUB_CACHE"]).rglob("*") if p.is_file() and p.stat().st_size > 100_000]
    assert kept == []


def test_what_is_not_on_the_hub_names_every_source(hub, published, monkeypatch):
    """A repository the Hub lacks: ModelNotFoundError naming the cache, the built-in model,
    ONNX_MOBILENETS_ARTIFACTS_URL, the Hub and local conversion. Offline, a name whose files
    huggingface_hub has cached is found; one it has not fails with that same error."""
    with pytest.raises(ModelNotFoundError) as info:
        OnnxMobileNet("mobilenet_v2_0.35_96_quant")
    message = str(info.value)
    for source in ("the cache", "the built-in model", "ONNX_MOBILENETS_ARTIFACTS_URL", "the Hugging Face Hub",
                   f"no repository {NAMESPACE}/mobilenet_v2_0.35_96_quant", "local conversion",
                   "onnx-mobilenets convert mobilenet_v2_0.35_96_quant"):
        assert source in message, source

    OnnxMobileNet(QUANT)  # downloaded once
    (artifacts_dir() / f"{QUANT}.onnx").unlink()  # not in our cache any more: huggingface_hub's only
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    asked = len(hub.requests)
    model = OnnxMobileNet(QUANT)
    assert model.path.read_bytes() == (published / f"{QUANT}.onnx").read_bytes() and len(hub.requests) == asked
    with pytest.raises(ModelNotFoundError, match="offline mode forbids"):
        OnnxMobileNet("mobilenet_v1_0.5_160_quant")


def test_a_hub_whose_host_does_not_resolve_is_passed_over_at_once(hub, published, monkeypatch):
    """No network (the Hub's host name does not resolve): what huggingface_hub has cached is used,
    and a name it has not is a source tried and named, at once (huggingface_hub alone retries the
    lookup for 23 s while the next source waits)."""
    address = f"hf://{NAMESPACE}/{QUANT}"
    downloaded = OnnxMobileNet(address).path
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid")  # .invalid never resolves (RFC 6761)
    for proxy in [name for name in os.environ if name.lower().endswith("_proxy")]:  # no proxy to ask either
        monkeypatch.delenv(proxy)
    assert OnnxMobileNet(address).path == downloaded
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="hub.example.invalid does not resolve"):
        OnnxMobileNet("mobilenet_v2_0.35_96_quant")
    assert time.monotonic() - started < 5


def test_a_manifest_naming_another_file_is_refused(hub, published, tmp_path):
    """A repository whose manifest entry for the artifact names some other file (``../``, say):
    nothing is downloaded under that name; the name is not found there."""
    other = "mobilenet_v1_0.5_128_quant"
    folder = tmp_path / other
    folder.mkdir()
    manifest = json.loads((published / "manifest.json").read_text())
    manifest["artifacts"] = {other: {**manifest["artifacts"][QUANT], "file": f"../{QUANT}.onnx"}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    hub.add_folder(f"{NAMESPACE}/{other}", folder)
    with pytest.raises(ModelNotFoundError, match="names the file"):
        OnnxMobileNet(other)
    assert not [path for method, path in hub.requests if path.endswith(".onnx") and other in path]
