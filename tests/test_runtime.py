"""OnnxMobileNet: predictions on the fixture artifacts, every kind of input, bad input, threads,
providers (CUDA mocked), name resolution, and the predict/list/doctor commands."""

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gpu_check
import numpy as np
import onnxruntime as ort
import pytest
from browser_page import serving
from conftest import FIXTURE_NAMES, IMAGES, WITHOUT_TENSORFLOW, assert_top5_matches, pretend_cuda_is_installed
from PIL import Image

from onnx_mobilenets import (
    ChecksumError,
    InvalidImageError,
    InvalidModelError,
    ModelNotFoundError,
    OnnxMobileNet,
    Prediction,
    ProviderError,
)
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.cli.engines import OnnxRuntime
from onnx_mobilenets.download import cache_dir
from onnx_mobilenets.runtime import artifacts, providers


@pytest.fixture(scope="module")
def models(fixture_artifacts):
    out, _ = fixture_artifacts
    return {name: OnnxMobileNet(out / f"{name}.onnx", providers="cpu") for name in FIXTURE_NAMES}


def _input_kinds(path: Path):
    return {
        "path": path,
        "str": str(path),
        "pil": Image.open(path),
        "bytes": path.read_bytes(),
        "array": np.asarray(Image.open(path).convert("RGB")),
    }


@pytest.mark.parametrize("name", FIXTURE_NAMES)
@pytest.mark.parametrize("image", IMAGES)
def test_predict_gives_expected_top5_for_every_input_kind(models, fixtures, expected, name, image):
    path = fixtures / "images" / image
    results = {kind: models[name].predict(source) for kind, source in _input_kinds(path).items()}
    for kind, predictions in results.items():
        assert predictions == results["path"], f"{kind} differs from path"
    probs = models[name].predict_proba(path)[0]
    assert_top5_matches(probs, expected[name][image])
    top = results["path"]
    assert len(top) == 5 and isinstance(top[0], Prediction)
    assert top[0].class_index == expected[name][image][0]["class_index"]
    assert top[0].label == expected[name][image][0]["label"] and top[0].synset.startswith("n")


def test_properties_and_batches(models, fixtures):
    model = models["mobilenet_v2_1.0_224"]
    assert model.variant == "mobilenet_v2_1.0_224" and model.input_size == 224
    assert model.providers == ["CPUExecutionProvider"]
    assert len(model.labels) == 1000 and model.labels[386] == ("n02504458", "African elephant")
    paths = [fixtures / "images" / n for n in IMAGES]
    batch = model.preprocess(paths)
    assert batch.shape == (2, 224, 224, 3) and batch.dtype == np.float32
    assert -1.0 <= batch.min() and batch.max() <= 1.0
    probs = model.run(batch)
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(model.predict_proba(paths), probs)
    # Large inputs go through in batches of batch_size; the answers do not change.
    small_batches = OnnxMobileNet(model.path, providers="cpu", batch_size=2)
    five = paths * 2 + paths[:1]
    np.testing.assert_allclose(small_batches.predict_proba(five), np.concatenate([probs, probs, probs[:1]]), atol=1e-6)
    lists = model.predict(paths, top=3)
    assert len(lists) == 2 and all(len(item) == 3 for item in lists)
    stacked = np.stack([np.asarray(Image.open(p).convert("RGB").resize((300, 300))) for p in paths])
    assert len(model.predict(stacked)) == 2  # a 4-D uint8 array is a batch
    assert model.predict([]) == []


def _equivalent_pairs(source: Image.Image, tmp_path: Path):
    """(unusual image, its RGB equivalent) pairs."""
    rgb = source.convert("RGB")
    gray = rgb.convert("L")
    palette = rgb.quantize(colors=256)
    rgba = rgb.copy()
    rgba.putalpha(255)
    sixteen = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)  # 16-bit grayscale
    sixteen_path = tmp_path / "gray16.png"
    sixteen.save(sixteen_path)
    assert Image.open(sixteen_path).mode.startswith("I")
    cmyk_path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(cmyk_path, quality=95)
    assert Image.open(cmyk_path).mode == "CMYK"
    return {
        "grayscale": (gray, gray.convert("RGB")),
        "palette": (palette, palette.convert("RGB")),
        "rgba": (rgba, rgb),
        "16-bit png": (sixteen_path, gray.convert("RGB")),
        "cmyk jpeg": (cmyk_path, Image.open(cmyk_path).convert("RGB")),
        "la": (gray.convert("LA"), gray.convert("RGB")),
    }


def test_unusual_images_classify_like_their_rgb_equivalent(models, fixtures, tmp_path):
    model = models["mobilenet_v2_1.0_224"]
    source = Image.open(fixtures / "images" / "cheetah.jpg")
    for kind, (unusual, equivalent) in _equivalent_pairs(source, tmp_path).items():
        np.testing.assert_allclose(model.predict_proba(unusual), model.predict_proba(equivalent), atol=1e-6,
                                   err_msg=kind)
        assert model.predict(unusual)[0].label == "cheetah", kind


def test_transparent_pixels_go_over_white(models, fixtures, tmp_path):
    """A cut-out PNG (transparent at the left, opaque at the right) is classified as the photo over
    white, computed here by hand, not over black; a fully transparent image is a white one."""
    from onnx_mobilenets.runtime.images import load_image

    model = models["mobilenet_v2_1.0_224"]
    rgb = np.asarray(Image.open(fixtures / "images" / "cheetah.jpg").convert("RGB")).astype(int)
    height, width, _ = rgb.shape
    alpha = np.tile(np.linspace(0, 255, width).round().astype(int), (height, 1))[..., None]
    path = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8), "RGBA").save(path)
    over_white = np.rint((rgb * alpha + 255 * (255 - alpha)) / 255).astype(np.uint8)
    over_black = np.rint(rgb * alpha / 255).astype(np.uint8)
    assert np.abs(np.asarray(load_image(path), int) - over_white).max() <= 1  # Pillow's rounding, at most 1 off
    ours = model.predict_proba(path)
    np.testing.assert_allclose(ours, model.predict_proba(over_white), atol=2e-3)
    assert np.abs(ours - model.predict_proba(over_black)).max() > 0.01  # 10x the tolerance above
    clear = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    np.testing.assert_array_equal(model.predict_proba(clear), model.predict_proba(Image.new("RGB", (64, 48), "white")))


def test_gray_and_rgba_arrays(models, fixtures):
    """An HxW uint8 array is a grayscale image, HxWx1 the same; an HxWx4 one is RGBA, its
    transparent pixels over white (opaque: the RGB image itself)."""
    model = models["mobilenet_v2_1.0_224"]
    rgb = np.asarray(Image.open(fixtures / "images" / "cheetah.jpg").convert("RGB"))
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    as_rgb = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_array_equal(model.predict_proba(gray), model.predict_proba(as_rgb))
    np.testing.assert_array_equal(model.predict_proba(gray[..., None]), model.predict_proba(as_rgb))
    assert model.predict(gray)[0].label == "cheetah"
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(model.predict_proba(opaque), model.predict_proba(rgb))
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).round().astype(np.uint8), (rgb.shape[0], 1))
    cutout = np.dstack([rgb, alpha])
    over_white = np.rint((rgb.astype(int) * alpha[..., None] + 255 * (255 - alpha[..., None].astype(int))) / 255)
    ours = model.predict_proba(cutout)
    np.testing.assert_allclose(ours, model.predict_proba(over_white.astype(np.uint8)), atol=2e-3)
    assert np.abs(ours - model.predict_proba(rgb)).max() > 0.01  # the alpha channel was not dropped


def test_jpeg_draft_decodes_large_jpegs_smaller(models, fixtures, tmp_path):
    """jpeg_draft=True: a JPEG much larger than the crop needs is decoded at a reduced scale (a
    different, close input, the same answer); a small JPEG, a PIL image and an array are not."""
    from onnx_mobilenets.runtime.images import load_image

    path = models["mobilenet_v1_0.25_128"].path
    drafted, exact = (OnnxMobileNet(path, providers="cpu", jpeg_draft=draft) for draft in (True, False))
    photo = Image.open(fixtures / "images" / "cheetah.jpg").convert("RGB")
    large = tmp_path / "large.jpg"
    photo.resize((photo.width * 4, photo.height * 4), Image.BICUBIC).save(large, quality=92)
    assert load_image(large, draft_size=300).width < photo.width * 4 <= load_image(large).width
    a, b = drafted.preprocess(large), exact.preprocess(large)
    assert 0 < np.abs(a - b).max() < 0.5  # float inputs in [-1, 1]: another decode of the same photo
    assert drafted.predict(large)[0].label == exact.predict(large)[0].label == "cheetah"
    small = tmp_path / "small.jpg"  # the crop needs all of it
    photo.resize((500, 300)).save(small, quality=92)
    np.testing.assert_array_equal(drafted.preprocess(small), exact.preprocess(small))
    decoded = Image.open(large)
    np.testing.assert_array_equal(drafted.preprocess(decoded), exact.preprocess(decoded))
    np.testing.assert_array_equal(drafted.preprocess(np.asarray(decoded)), exact.preprocess(np.asarray(decoded)))


def test_threads_and_graph_optimization_level_reach_onnxruntime(fixture_artifacts, fixtures, tmp_path):
    """OnnxMobileNet(threads=, graph_optimization_level=) set the session's options: with
    optimizations off onnxruntime runs the file's graph as it is (nothing fused), and the answers do
    not change."""
    path = fixture_artifacts[0] / "mobilenet_v1_0.25_128.onnx"
    image = fixtures / "images" / "cheetah.jpg"
    as_run = {}
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{level.name}.onnx")
        model = OnnxMobileNet(path, providers="cpu", threads=1, graph_optimization_level=level,
                              session_options=options)
        assert model._session.get_session_options().intra_op_num_threads == 1
        assert model._session.get_session_options().graph_optimization_level == level
        as_run[level.name] = (len(onnx_nodes(tmp_path / f"{level.name}.onnx")), model.predict_proba(image))
    file_nodes = len(onnx_nodes(path))
    assert as_run["ORT_DISABLE_ALL"][0] == file_nodes > as_run["ORT_ENABLE_ALL"][0]
    np.testing.assert_allclose(as_run["ORT_DISABLE_ALL"][1], as_run["ORT_ENABLE_ALL"][1], atol=1e-5)
    for bad in (0, -1, 1.5, "2"):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            OnnxMobileNet(path, providers="cpu", threads=bad)


def onnx_nodes(path) -> list:
    import onnx

    return list(onnx.load(str(path)).graph.node)


def test_exif_rotated_jpeg_matches_the_upright_image(models, fixtures, tmp_path):
    model = models["mobilenet_v2_1.0_224"]
    upright = Image.open(fixtures / "images" / "cheetah.jpg").convert("RGB")  # a clear winner, unlike elephant
    upright_path = tmp_path / "upright.jpg"
    upright.save(upright_path, quality=95)
    # Stored rotated by 90 degrees, with EXIF orientation 6 ("rotate 90 CW to display").
    rotated_path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.ROTATE_90).save(rotated_path, quality=95, exif=exif)
    straight, turned = model.predict_proba(upright_path)[0], model.predict_proba(rotated_path)[0]
    assert int(np.argmax(straight)) == int(np.argmax(turned))
    assert np.abs(straight - turned).max() < 0.02
    ignored = model.predict_proba(np.asarray(Image.open(rotated_path).convert("RGB")))[0]  # pixels as stored
    assert np.abs(ignored - straight).max() > np.abs(turned - straight).max()


def test_one_pixel_image(models):
    model = models["mobilenet_v1_0.25_128"]
    pixel = np.array([[[200, 30, 40]]], np.uint8)
    flat = np.full((50, 50, 3), (200, 30, 40), np.uint8)
    np.testing.assert_allclose(model.predict_proba(pixel), model.predict_proba(flat), atol=1e-6)
    assert len(model.predict(pixel)) == 5


def test_bad_input_gets_a_clear_error_and_the_model_keeps_working(models, fixtures, tmp_path, monkeypatch):
    model = models["mobilenet_v1_0.25_128"]
    good = fixtures / "images" / "elephant.jpg"
    reference = model.predict(good)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a picture\n")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:5000])
    cases = [
        (tmp_path / "missing.jpg", FileNotFoundError, "does not exist"),
        (empty, InvalidImageError, "is empty"),
        (b"", InvalidImageError, "empty"),
        (text, InvalidImageError, "not an image format"),
        (truncated, InvalidImageError, "truncated"),
        (np.zeros((2, 4, 4, 3, 1), np.uint8), InvalidImageError, "shape"),
        (np.zeros(10, np.uint8), InvalidImageError, "shape"),
        (np.zeros((4, 4, 2), np.uint8), InvalidImageError, "shape"),
        (np.zeros((4, 4, 3), np.float32), InvalidImageError, "uint8"),
        (np.zeros((0, 4, 3), np.uint8), InvalidImageError, "no pixels"),
        (12345, InvalidImageError, "cannot read an image from a int"),
        (tmp_path, InvalidImageError, "is not a file"),
    ]
    for source, error, message in cases:
        with pytest.raises(error, match=message):
            model.predict(source)
        assert model.predict(good) == reference
    assert issubclass(InvalidImageError, ValueError)

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)  # a 650x406 JPEG is now a "bomb"
    with pytest.raises(InvalidImageError, match="decompression bomb"):
        model.predict(good)
    monkeypatch.undo()
    assert model.predict(good) == reference
    with pytest.raises(ValueError, match="top must be"):
        model.predict(good, top=0)
    with pytest.raises(ValueError, match="float32"):
        model.run(np.zeros((1, 128, 128, 3), np.float64))
    with pytest.raises(ValueError, match="shape"):
        model.run(np.zeros((1, 224, 224, 3), np.float32))


def test_bad_models_get_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 50)
    with pytest.raises(InvalidModelError, match="not a valid ONNX model"):
        OnnxMobileNet(corrupt, providers="cpu")
    from onnx_mobilenets.cli.doctor import probe_model

    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(probe_model())
    with pytest.raises(InvalidModelError, match="not a MobileNet artifact"):
        OnnxMobileNet(foreign, providers="cpu")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        OnnxMobileNet(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="unknown MobileNet variant 'mobilenet_v5'"):
        OnnxMobileNet("mobilenet_v5")
    with pytest.raises(ValueError, match="batch_size"):
        OnnxMobileNet(corrupt, batch_size=0)


def test_cuda_on_a_machine_without_cuda(fixture_artifacts, monkeypatch):
    out, _ = fixture_artifacts
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="offers no CUDAExecutionProvider"):
        OnnxMobileNet(out / "mobilenet_v1_0.25_128.onnx", providers="cuda")
    model = OnnxMobileNet(out / "mobilenet_v1_0.25_128.onnx", providers="auto")
    assert model.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="providers must be"):
        OnnxMobileNet(out / "mobilenet_v1_0.25_128.onnx", providers="gpu")


def test_thread_safety(models, fixtures):
    model = models["mobilenet_v1_0.25_128"]
    sources = [fixtures / "images" / n for n in IMAGES]
    serial = [model.predict_proba(sources[i % 2]) for i in range(50)]

    def work(thread):
        return [model.predict_proba(sources[i % 2]) for i in range(50)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    for per_thread in results:
        for got, want in zip(per_thread, serial):
            np.testing.assert_array_equal(got, want)


class _FakeSession:
    """Stands in for onnxruntime.InferenceSession: binds CUDA or not, as told."""

    bind_cuda = True
    calls = []

    def __init__(self, data, sess_options=None, providers=None):
        _FakeSession.calls.append(providers)
        self._providers = [p[0] if isinstance(p, tuple) else p for p in providers]
        if not self.bind_cuda:
            self._providers = [p for p in self._providers if p != "CUDAExecutionProvider"]

    def get_providers(self):
        return self._providers


@pytest.fixture
def fake_cuda(monkeypatch):
    pretend_cuda_is_installed(monkeypatch, _FakeSession)
    _FakeSession.calls = []
    return _FakeSession


def test_cuda_provider_binding_is_checked(fake_cuda, caplog, monkeypatch):
    fake_cuda.bind_cuda = True
    session = providers.create_session(b"model", "cuda", device_id=1)
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    cuda_entry = fake_cuda.calls[-1][0]
    assert cuda_entry == (
        "CUDAExecutionProvider",
        {"device_id": 1, "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": 0},
    )
    assert providers.create_session(b"model", "auto").get_providers()[0] == "CUDAExecutionProvider"

    fake_cuda.bind_cuda = False
    with pytest.raises(ProviderError, match="installed but did not bind"):
        providers.create_session(b"model", "cuda")
    monkeypatch.setattr(providers, "_logged_cpu_fallback", False)
    with caplog.at_level("INFO", logger="onnx_mobilenets.runtime.providers"):
        session = providers.create_session(b"model", "auto")
        providers.create_session(b"model", "auto")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert caplog.text.count("running on the CPU") == 1  # logged once

    assert providers.create_session(b"model", "cpu").get_providers() == ["CPUExecutionProvider"]
    assert fake_cuda.calls[-1] == ["CPUExecutionProvider"]
    explicit = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    fake_cuda.bind_cuda = True
    providers.create_session(b"model", explicit)
    assert fake_cuda.calls[-1] == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    with pytest.raises(ProviderError, match="has no TensorrtExecutionProvider"):
        providers.create_session(b"model", ["TensorrtExecutionProvider"])


TWO_WHEELS = {"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"}


@pytest.fixture
def two_wheels(monkeypatch):
    """Both onnxruntime wheels installed, as far as package metadata can tell."""

    def version(name):
        if name in TWO_WHEELS:
            return TWO_WHEELS[name]
        raise providers.importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(providers.importlib.metadata, "version", version)


def test_both_onnxruntime_wheels_are_detected(two_wheels, monkeypatch):
    assert providers.installed_onnxruntime_wheels() == TWO_WHEELS
    warning = providers.conflicting_wheels_warning()
    assert "several onnxruntime wheels" in warning and "pip uninstall -y onnxruntime onnxruntime-gpu" in warning
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ProviderError, match="several onnxruntime wheels"):
        providers.requested_providers("cuda")


def test_runtime_imports_no_tensorflow(fixture_artifacts, fixtures):
    out, _ = fixture_artifacts
    code = WITHOUT_TENSORFLOW + (
        "from onnx_mobilenets import OnnxMobileNet\n"
        f"model = OnnxMobileNet({str(out / 'mobilenet_v2_1.0_224.onnx')!r})\n"
        f"print(model.predict({str(fixtures / 'images' / 'cheetah.jpg')!r})[0].label)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["cheetah", "[]"]


def test_name_resolution_cache_and_published_artifacts(fixture_artifacts, tmp_path, monkeypatch):
    out, reports = fixture_artifacts
    name = "mobilenet_v1_0.25_128"
    monkeypatch.setattr(artifacts, "conversion_available", lambda: False)
    with pytest.raises(ModelNotFoundError) as info:
        OnnxMobileNet(name)
    assert f"onnx-mobilenets convert {name}" in str(info.value) and "ONNX_MOBILENETS_ARTIFACTS_URL" in str(info.value)

    # A folder of converted artifacts (what `convert --output DIR` writes): used in place, checked
    # against its manifest's SHA-256.
    monkeypatch.setenv("ONNX_MOBILENETS_ARTIFACTS_URL", str(out))
    assert OnnxMobileNet(name).path == out / f"{name}.onnx"
    assert not (cache_dir() / "artifacts").exists()  # nothing copied
    changed = tmp_path / "changed"
    shutil.copytree(out, changed)
    (changed / f"{name}.onnx").write_bytes((out / f"{name}.onnx").read_bytes() + b"\0")
    monkeypatch.setenv("ONNX_MOBILENETS_ARTIFACTS_URL", str(changed))
    with pytest.raises(ChecksumError, match="changed after conversion"):
        OnnxMobileNet(name)

    # Published artifacts at a URL: downloaded, checked, cached; the cache then comes first.
    with serving(out) as url:
        monkeypatch.setenv("ONNX_MOBILENETS_ARTIFACTS_URL", url)
        model = OnnxMobileNet(name)
    cached = cache_dir() / "artifacts" / f"{name}.onnx"
    assert model.path == cached and cached.read_bytes() == (out / f"{name}.onnx").read_bytes()
    monkeypatch.setenv("ONNX_MOBILENETS_ARTIFACTS_URL", str(tmp_path / "nowhere"))
    assert OnnxMobileNet(name).path == cached
    cached.write_bytes(cached.read_bytes()[:-10] + b"x" * 10)  # corrupted in the cache
    with pytest.raises(FileNotFoundError):  # not reused; the (now missing) source is asked again
        OnnxMobileNet(name)
    assert not cached.exists()

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["artifacts"][name]["sha256"] = "0" * 64
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with serving(bad) as url:
        monkeypatch.setenv("ONNX_MOBILENETS_ARTIFACTS_URL", url)
        with pytest.raises(ChecksumError):
            OnnxMobileNet(name)
        assert not cached.exists()
        with pytest.raises(ModelNotFoundError, match="no valid manifest entry"):
            OnnxMobileNet("mobilenet_v2_0.5_96")


TENSORFLOW_LOG_LINE = re.compile(r"absl::InitializeLog|cudart_stub|oneDNN|cuda drivers|tensorflow/|^[IWE]\d{4} ", re.M)


def test_what_convert_writes_is_what_the_runtime_finds(fixtures, tmp_path):
    """From a clean cache: `convert NAME` (the official file name, served by a mirror), then
    OnnxMobileNet(NAME) in a process without TensorFlow classifies without converting again; the
    conversion prints no TensorFlow log lines."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz", mirror / "mobilenet_v1_0.25_160.tgz")
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(tmp_path / "home"), ONNX_MOBILENETS_MIRROR=str(mirror))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as in a user's shell
    converted = subprocess.run([sys.executable, "-m", "onnx_mobilenets.cli", "convert", "mobilenet_v1_0.25_160"],
                               capture_output=True, text=True, env=env)
    assert converted.returncode == 0, converted.stderr
    printed = converted.stdout + converted.stderr
    assert not TENSORFLOW_LOG_LINE.search(printed), printed
    artifact = tmp_path / "home" / "artifacts" / "mobilenet_v1_0.25_160.onnx"
    assert f"wrote {artifact}" in converted.stdout and "finds them by name" in converted.stdout
    written = artifact.stat().st_mtime_ns

    code = WITHOUT_TENSORFLOW + (
        "from onnx_mobilenets import OnnxMobileNet\n"
        "model = OnnxMobileNet('mobilenet_v1_0.25_160')\n"
        f"print(model.path, model.predict({str(fixtures / 'images' / 'cheetah.jpg')!r})[0].label)\n"
    )
    used = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == [str(artifact), "cheetah"]
    assert "converting" not in used.stderr and artifact.stat().st_mtime_ns == written


def test_name_resolution_converts_locally_when_it_can(fixtures, tmp_path):
    """The official name of a variant without a published checksum, served from a mirror folder
    holding the fixture tarball: the runtime converts it in a subprocess and caches the result, and
    TensorFlow, tf2onnx and onnx never enter the caller's process."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(fixtures / "checkpoints" / "mobilenet_v1_0.25_128.tgz", mirror / "mobilenet_v1_0.25_160.tgz")
    env = dict(os.environ, ONNX_MOBILENETS_HOME=str(tmp_path / "home"), ONNX_MOBILENETS_MIRROR=str(mirror))
    code = (
        "import sys\n"
        "from onnx_mobilenets import OnnxMobileNet\n"
        "model = OnnxMobileNet('mobilenet_v1_0.25_160')\n"
        f"print(model.path, model.input_size, model.predict({str(fixtures / 'images' / 'cheetah.jpg')!r})[0].label)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf2onnx', 'onnx', 'keras')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [str(tmp_path / "home" / "artifacts" / "mobilenet_v1_0.25_160.onnx"), "160", "cheetah"]
    assert lines[1] == "[]"


def test_published_artifacts_come_before_a_local_conversion(fixture_artifacts, monkeypatch):
    """With the [convert] extra installed, a name listed under ONNX_MOBILENETS_ARTIFACTS_URL is
    taken from there: no local conversion is even tried."""
    out, _ = fixture_artifacts
    name = "mobilenet_v1_0.25_128"
    monkeypatch.setenv("ONNX_MOBILENETS_ARTIFACTS_URL", str(out))
    assert artifacts.conversion_available()

    def no_conversion(*args, **kwargs):
        raise AssertionError(f"converted locally: {args}")

    monkeypatch.setattr(artifacts.subprocess, "run", no_conversion)
    assert OnnxMobileNet(name, providers="cpu").path == out / f"{name}.onnx"


def test_cli_predict_list_doctor(fixture_artifacts, fixtures, capsys):
    out, _ = fixture_artifacts
    image = str(fixtures / "images" / "cheetah.jpg")
    assert cli(["predict", image, "--model", str(out / "mobilenet_v2_1.0_224.onnx"), "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "cheetah" in table and "rank" in table and table.count("\n") >= 5
    elephant = str(fixtures / "images" / "elephant.jpg")
    assert cli(["predict", image, elephant, image, "--json", "--model", str(out / "mobilenet_v1_0.25_128.onnx"),
                "--providers", "cpu"]) == 0  # a path given twice is classified once
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "mobilenet_v1_0.25_128" and len(data["results"]) == 2
    assert data["results"][0]["predictions"][0]["label"] == "cheetah"
    assert cli(["predict", str(fixtures / "missing.jpg"), "--model", str(out / "mobilenet_v1_0.25_128.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err

    assert cli(["list", "--family", "v2"]) == 0
    listing = capsys.readouterr().out
    assert "mobilenet_v2_1.4_224" in listing and "mobilenet_v1" not in listing.split("aliases")[0]
    rows = {line.split()[0]: line.split() for line in listing.split("aliases")[0].splitlines()[2:] if line.strip()}
    assert rows["mobilenet_v2_1.0_224_quant"][1:7] == ["v2", "1.0", "224", "uint8", "70.8", "89.9"]
    assert rows["mobilenet_v2_0.5_160_quant"][1:7] == ["v2", "0.5", "160", "uint8", "-", "-"]  # none published
    assert cli(["list", "--precision", "uint8"]) == 0
    table = capsys.readouterr().out.split("aliases")[0]
    assert table.count("_quant") == 38 and "float32" not in table
    rows = {line.split()[0]: line.split() for line in table.splitlines()[2:] if line.strip()}
    assert rows["mobilenet_v1_1.0_224_quant"][4:7] == ["uint8", "70.1", "88.9"]
    assert cli(["doctor"]) == 0
    report = capsys.readouterr().out
    assert "CPUExecutionProvider: ok" in report and "libcudnn.so.9" in report and "cache:" in report
    from onnx_mobilenets.model_bytes import cpu_has_vnni

    assert ("int8 weights, fast" if cpu_has_vnni() else "uint8 weights, exact") in report


def _listed(capsys) -> dict:
    """`list`'s table as {name: cells}."""
    table = capsys.readouterr().out.split("aliases")[0]
    return {line.split()[0]: line.split() for line in table.splitlines()[2:] if line.strip()}


def test_list_shows_what_is_cached(fixture_artifacts, capsys):
    out, _ = fixture_artifacts
    assert cli(["list", "--family", "v1"]) == 0
    assert {cells[-1] for cells in _listed(capsys).values()} == {"-"}
    (cache_dir() / "artifacts").mkdir(parents=True)
    shutil.copy(out / "mobilenet_v1_0.25_128.onnx", cache_dir() / "artifacts")
    assert cli(["list", "--family", "v1"]) == 0
    cached = {name for name, cells in _listed(capsys).items() if cells[-1] == "onnx"}
    assert cached == {"mobilenet_v1_0.25_128"}


def test_doctor_prints_the_fix_for_two_onnxruntime_wheels(two_wheels, capsys):
    assert cli(["doctor"]) == 0
    report = capsys.readouterr().out
    assert "wheels installed: onnxruntime 1.20.0, onnxruntime-gpu 1.20.0" in report
    warning = next(line for line in report.splitlines() if "WARNING" in line)
    assert 'pip uninstall -y onnxruntime onnxruntime-gpu && pip install --no-deps "onnxruntime-gpu>=1.19"' in warning


class _OffByAGpu(OnnxRuntime):
    """A stand-in GPU provider: onnxruntime's CPU session, its logit of class 10 moved by `shift` (in
    logits for float artifacts, in quantization steps for quantized ones)."""

    def __init__(self, shift: float):
        super().__init__("cpu")
        self.provider, self.device, self.name, self.shift = "cuda", "gpu", "stand-in-GPU", shift

    def unavailable(self):
        return None

    def session(self, path):
        return OnnxRuntime.session(OnnxRuntime("cpu"), path)

    def run(self, path, feeds):
        probabilities = OnnxRuntime("cpu").run(path, feeds).astype(np.float64)
        meta = self.session(path).get_modelmeta().custom_metadata_map
        step = json.loads(meta["quantization"])["logits_scale"] if "quantization" in meta else 1.0
        logits = np.log(np.maximum(probabilities, 1e-30))
        logits[:, 10] += self.shift * step
        z = np.exp(logits - logits.max(1, keepdims=True))
        return (z / z.sum(1, keepdims=True)).astype(np.float32)


def test_gpu_check_judges_a_gpu_by_the_gpu_rules(fixture_artifacts, quant_artifacts, tmp_path):
    """tools/gpu_check.py holds a GPU to `verify`'s GPU rules: on a float artifact, 10x the CPU
    bound (a logit moved by 3 CPU bounds passes there, would fail on a CPU, and by 30 fails); on a
    quantized one, the rule for other engines (3 steps pass, 12 fail)."""
    float_path = out_path = fixture_artifacts[0] / "mobilenet_v1_0.25_128.onnx"
    meta = OnnxRuntime("cpu").session(float_path).get_modelmeta().custom_metadata_map
    from onnx_mobilenets.artifact import golden_of
    from onnx_mobilenets.parity import tolerance_for

    _, golden = golden_of(meta)
    cpu_bound = float(tolerance_for("v1", "cpu").logit_bounds(golden).min())
    gpu_bounds = tolerance_for("v1", "gpu").log_probability_bounds(golden)  # the artifact gives probabilities
    for shift, expected in ((3 * cpu_bound, "pass"), (30 * cpu_bound, "fail")):
        cpu, gpu = gpu_check.check_artifact(float_path, OnnxRuntime("cpu"), _OffByAGpu(shift), runs=2)
        assert (cpu["status"], gpu["status"]) == ("pass", expected), (shift, gpu)
        # the bound reported is the GPU one (10x the CPU one) at one of the golden samples
        assert np.isclose(gpu_bounds, gpu["bound"], rtol=1e-6).any(), (gpu["bound"], gpu_bounds)
        assert gpu["ms_batch1"] > 0 and gpu["ms_batch32"] > 0
    off_cpu = _OffByAGpu(3 * cpu_bound)
    off_cpu.device = "cpu"  # the same outputs held to the CPU bound: refused
    assert gpu_check.check_artifact(float_path, OnnxRuntime("cpu"), off_cpu, runs=1)[1]["status"] == "fail"
    quant_path = quant_artifacts / "mobilenet_v2_1.0_224_quant.onnx"
    for shift, expected in ((3, "pass"), (12, "fail")):
        _, gpu = gpu_check.check_artifact(quant_path, OnnxRuntime("cpu"), _OffByAGpu(shift), runs=1)
        assert gpu["status"] == expected and gpu["output"] == "quantized logits", gpu
    script = Path(__file__).resolve().parents[1] / "tools" / "gpu_check.py"
    table = subprocess.run([sys.executable, str(script), str(out_path), str(quant_path), "--candidate", "cpu", "--runs",
                            "2", "--json", str(tmp_path / "gpu.json")], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "| bound | headroom |" in table.stdout and table.stdout.count("PASS") == 4
    assert len(json.loads((tmp_path / "gpu.json").read_text())["rows"]) == 4
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        no_cuda = subprocess.run([sys.executable, str(script), str(out_path)], capture_output=True, text=True)
        assert no_cuda.returncode == 2 and "offers no CUDAExecutionProvider" in no_cuda.stderr


def test_random_weight_artifacts_warn_loudly(tmp_path):
    from onnx_mobilenets.conversion.convert import convert_variant

    convert_variant("mobilenet_v1_0.25_128", tmp_path, random_weights=True)
    with pytest.warns(UserWarning, match="UNTRAINED RANDOM WEIGHTS"):
        OnnxMobileNet(tmp_path / "mobilenet_v1_0.25_128.onnx", providers="cpu")
