"""MobileNets in a real browser: the site `onnx-mobilenets web` writes, in Debian's Chromium driven by
Playwright, with onnxruntime-web from npm (tests/web/package-lock.json). The browser is one more
engine under `verify`'s rules; the page classifies the fixture photographs, and says what is wrong
with bad input while it keeps working."""

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from browser_page import CHROMIUM_FLAGS, IMAGE_DATA_JS, image_data_args, open_page, serving
from conftest import REPO_ROOT, require, require_module
from PIL import Image

from onnx_mobilenets import download
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.cli.engines import Engine, OnnxRuntime
from onnx_mobilenets.cli.verify import verify_artifact

# The image-in artifacts `converted` makes are shared with test_image_input.py: one worker makes them.
pytestmark = pytest.mark.xdist_group("image_in")

ORT_WEB = REPO_ROOT / "tests" / "web" / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# (variant, preprocessing)
PARITY_CASES = [("mobilenet_v1_0.25_128", "default"), ("mobilenet_v1_0.25_128", "slim"),
                ("mobilenet_v1_0.25_128_quant", "default"), ("mobilenet_v1_0.25_128_quant", "slim")]


@pytest.fixture(scope="module")
def browser():
    playwright_api = require_module("playwright.sync_api", "Playwright for Python (the [dev] extra)")
    require(Path(CHROMIUM).is_file(), "Debian's chromium (.ci/run installs it with apt)")
    require((ORT_WEB / "ort.wasm.min.js").is_file(), "onnxruntime-web (npm ci in tests/web; .ci/run does it)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A static file server on 127.0.0.1 over a folder of sites; yields (folder, base URL)."""
    root = tmp_path_factory.mktemp("sites")
    with serving(root) as base:
        yield root, base


def _site(artifact: Path, folder: Path) -> Path:
    assert cli(["web", str(artifact), "--output", str(folder), "--ort-web", str(ORT_WEB)]) == 0
    return folder


class Browser(Engine):
    """The model a page loaded, as an engine for `verify`: its probabilities for each fed image."""

    name = label = "onnxruntime-web (Chromium)"
    note = "WebAssembly"

    def __init__(self, page, version: str):
        self.page, self._version = page, version

    def version(self) -> str:
        return self._version

    def run(self, path, feeds: list) -> np.ndarray:
        rows = []
        for feed in feeds:  # each (1, H, W, 3): one image, as ImageData (RGBA)
            rows.append(self.page.evaluate(
                f"""async ([data, width, height]) => {{
                    {IMAGE_DATA_JS}
                    return Array.from(await window.model.probabilities(image));
                }}""", image_data_args(feed[0])))
        return np.asarray(rows, np.float32)


@pytest.fixture(scope="module")
def parity_sites(served, converted, tmp_path_factory):
    """{(variant, preprocessing): (image-in artifact, its site's URL)}, and a tampered one."""
    root, base = served
    out = tmp_path_factory.mktemp("web_artifacts")
    sites = {}
    for name, chosen in PARITY_CASES:
        artifact = converted(name, chosen, image_input=True)
        folder = f"{name}-{chosen}"
        _site(artifact, root / folder)
        sites[name, chosen] = (artifact, f"{base}/{folder}/")
    tampered = onnx.load(sites["mobilenet_v1_0.25_128", "default"][0])
    gemm = next(n for n in tampered.graph.node if n.op_type == "Gemm")
    bias = next(i for i in tampered.graph.initializer if i.name == gemm.input[2])
    values = onnx.numpy_helper.to_array(bias).copy()
    values[10] += 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    path = out / "tampered-image.onnx"
    onnx.save(tampered, str(path))
    _site(path, root / "tampered")
    sites["tampered"] = (path, f"{base}/tampered/")
    return sites


@pytest.mark.parametrize("name, chosen", [(c[0], c[1]) for c in PARITY_CASES])
def test_the_browser_computes_what_onnxruntime_computes(browser, parity_sites, name, chosen):
    """The golden images (8 sizes) in the browser and in onnxruntime, judged by `verify`'s rules against
    the artifact's golden record: float within the float32 bound, uint8 within the rule for engines
    that round their own way; and the same top-1 as onnxruntime in Python on the same pixels."""
    path, url = parity_sites[name, chosen]
    with open_page(browser, url) as page:
        version = page.evaluate("ort.env.versions.web")
        cpu, web = verify_artifact(path, use_keras=False, engines=[OnnxRuntime("cpu"), Browser(page, version)])
        assert cpu.status == "pass" and web.status == "pass", (cpu, web)
        assert web.runtime.startswith("onnxruntime-web") and web.version == "1.30.0"
        assert web.top1_agreement == 1.0


def test_a_tampered_artifact_fails_in_the_browser(browser, parity_sites):
    path, url = parity_sites["tampered"]
    with open_page(browser, url) as page:
        (row,) = verify_artifact(path, use_keras=False, engines=[Browser(page, "1.30.0")])
        assert row.status == "fail" and row.max_abs_diff > row.bound


@pytest.fixture(scope="module")
def v2_site(served, converted, tmp_path_factory):
    """`onnx-mobilenets web v2 --output site --ort-web ...`, the image-in artifact of the V2 fixture in the cache."""
    root, base = served
    home = tmp_path_factory.mktemp("v2_home")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ONNX_MOBILENETS_HOME", str(home))
        download.artifacts_dir().mkdir(parents=True)
        shutil.copy(converted("mobilenet_v2_1.0_224", image_input=True), download.artifacts_dir())
        assert cli(["web", "v2", "--output", str(root / "v2"), "--ort-web", str(ORT_WEB)]) == 0
    return f"{base}/v2/"


def _classify_file(page, path) -> str:
    """The top-1 label the page shows for a file picked in its file input (or its message)."""
    page.evaluate("document.getElementById('results').textContent = ''")
    page.set_input_files("#file", str(path))
    page.wait_for_function("document.body.dataset.state === 'ready' && (document.querySelector('#results .row') "
                           "|| document.getElementById('message').textContent)", timeout=120_000)
    row = page.query_selector("#results .row .label")
    return row.text_content() if row else page.text_content("#message")


def test_the_page_classifies_the_photographs(browser, v2_site, fixtures, tmp_path):
    with open_page(browser, v2_site) as page:
        assert "mobilenet_v2_1.0_224 (default preprocessing)" in page.text_content("#about")
        assert _classify_file(page, fixtures / "images" / "elephant.jpg") in ("African elephant", "tusker")
        assert len(page.query_selector_all("#results .row")) == 5
        assert "ms" in page.text_content("#speed")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        assert _classify_file(page, fixtures / "images" / "cheetah.jpg") == "cheetah"
    shot = np.asarray(Image.open(tmp_path / "page.png").convert("RGB"))
    assert shot.std() > 20 and len(np.unique(shot.reshape(-1, 3), axis=0)) > 1000  # a photo and bars, not blank


def test_bad_input_gets_a_message_and_the_page_keeps_working(browser, served, v2_site, fixtures, tmp_path):
    with open_page(browser, v2_site) as page:
        text = tmp_path / "notes.jpg"
        text.write_text("not an image at all")
        assert "is not an image this browser can decode" in _classify_file(page, text)
        huge = tmp_path / "huge.png"
        Image.new("RGB", (9500, 9500), (40, 120, 200)).save(huge, optimize=False, compress_level=1)
        assert "too large to classify" in _classify_file(page, huge)
        assert _classify_file(page, fixtures / "images" / "cheetah.jpg") == "cheetah"  # still working
    root, base = served
    broken = root / "broken"
    shutil.copytree(root / "v2", broken)
    (broken / "site.json").write_text((broken / "site.json").read_text().replace("models/", "missing/"))
    # Both files are missing: the model is named, whichever 404 arrives first (it once raced).
    with open_page(browser, f"{base}/broken/", expect="error") as page:
        assert "cannot load missing/mobilenet_v2_1.0_224-image.onnx: HTTP 404" in page.text_content("#message")
    no_labels = root / "no-labels"
    shutil.copytree(root / "v2", no_labels)
    (no_labels / "models" / "mobilenet_v2_1.0_224-image.labels.json").unlink()
    with open_page(browser, f"{base}/no-labels/", expect="error") as page:
        assert "cannot load models/mobilenet_v2_1.0_224-image.labels.json: HTTP 404" in page.text_content("#message")


def test_the_web_command_refuses_what_it_cannot_serve_and_writes_nothing(fixture_artifacts, parity_sites, tmp_path,
                                                                         capsys):
    out, _ = fixture_artifacts
    assert cli(["web", str(out / "mobilenet_v1_0.25_128.onnx"), "--output", str(tmp_path / "a")]) == 2
    assert "needs an image-in artifact" in capsys.readouterr().err
    image_in, _ = parity_sites["mobilenet_v1_0.25_128", "default"]
    assert cli(["web", str(image_in), "--output", str(tmp_path / "b"), "--ort-web", str(tmp_path)]) == 2
    assert "lacks ort.wasm.min.js" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_readme_javascript_runs_in_a_page(browser, served, v2_site, fixtures):
    """The README's three lines of JavaScript, as they stand, in a page of their own beside the site's
    files, on an <img> of the elephant."""
    readme = (REPO_ROOT / "README.md").read_text()
    (sample,) = [block.split("```")[0] for block in readme.split("```js\n")[1:]]
    root, base = served
    folder = root / "v2"
    shutil.copy(fixtures / "images" / "elephant.jpg", folder / "elephant.jpg")
    # The sample verbatim at a module's top level (its import must be there); the image loaded first
    # by a module before it, errors of any kind recorded by a classic script.
    (folder / "wait.js").write_text('const image = document.querySelector("img");\n'
                                    'if (!image.complete) await new Promise((done) => image.onload = done);\n')
    (folder / "readme.html").write_text(f"""<!doctype html>
<img src="elephant.jpg">
<script>
addEventListener("error", (event) => {{ window.sampleResult = String(event.message); }});
addEventListener("unhandledrejection", (event) => {{ window.sampleResult = String(event.reason); }});
</script>
<script src="ort/ort.wasm.min.js"></script>
<script type="module">
import "./wait.js";
ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
{sample}
window.sampleResult = predictions;
</script>""")
    page = browser.new_page()
    try:
        page.goto(f"{base}/v2/readme.html")
        page.wait_for_function("window.sampleResult !== undefined", timeout=120_000)
        predictions = page.evaluate("window.sampleResult")
    finally:
        page.close()
    assert isinstance(predictions, list), predictions
    assert len(predictions) == 5 and predictions[0]["label"] in ("African elephant", "tusker")
    assert set(predictions[0]) == {"classIndex", "synset", "label", "probability"}
    assert predictions[0]["probability"] >= predictions[1]["probability"] > 0


def _threads_of(page) -> dict:
    return page.evaluate("({isolated: crossOriginIsolated, shared: typeof SharedArrayBuffer !== 'undefined', "
                         "threads: ort.env.wasm.numThreads, about: document.getElementById('about').textContent})")


def test_web_serve_makes_the_page_cross_origin_isolated_with_threads(browser, served, v2_site, fixtures):
    """`web --serve DIR` (its own process, as a user runs it) sends the headers `web` writes into
    `_headers`: the page is cross-origin isolated and runs onnxruntime-web on more than one thread.
    The same site from a host without them (the plain server) still works, on one thread."""
    root, _ = served
    site = root / "v2"
    headers = (site / "_headers").read_text()
    assert "Cross-Origin-Opener-Policy: same-origin" in headers
    assert "Cross-Origin-Embedder-Policy: require-corp" in headers
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "onnx_mobilenets.cli", "web", "--serve", str(site),
                               "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert f"at http://127.0.0.1:{port}/" in server.stdout.readline()
        with open_page(browser, f"http://127.0.0.1:{port}/") as page:
            isolated = _threads_of(page)
            assert isolated["isolated"] and isolated["shared"] and isolated["threads"] > 1, isolated
            assert f"{isolated['threads']} threads" in isolated["about"]
            assert _classify_file(page, fixtures / "images" / "elephant.jpg") in ("African elephant", "tusker")
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0  # SIGTERM stops it as Ctrl-C does
    with open_page(browser, v2_site) as page:
        plain = _threads_of(page)
        assert not plain["isolated"] and plain["threads"] == 1 and "1 thread" in plain["about"], plain
        assert _classify_file(page, fixtures / "images" / "elephant.jpg") in ("African elephant", "tusker")


def test_web_serve_refuses_what_is_not_a_site(tmp_path, capsys):
    assert cli(["web", "--serve", str(tmp_path)]) == 2
    assert "is not a site `onnx-mobilenets web` wrote (it lacks index.html" in capsys.readouterr().err
    assert cli(["web", "v2", "--serve", str(tmp_path)]) == 2
    assert "give no NAME or --output" in capsys.readouterr().err
    assert cli(["web", "v2"]) == 2
    assert "web needs NAME and --output DIR" in capsys.readouterr().err



def _stand_in_gpu(software: bool = False, device_fails: bool = False) -> str:
    """JavaScript giving the page a WebGPU adapter of our own (this Chromium has none: --disable-gpu):
    a hardware one by default, a software one (what SwiftShader reports), or one whose device fails
    (a broken driver). Its device is a stand-in too: only the page's own checks may use it."""
    device = ('async () => { throw new Error("the stand-in GPU has no device"); }' if device_fails
              else "async () => ({ destroy() {} })")
    return f"""Object.defineProperty(Navigator.prototype, "gpu", {{ configurable: true, get() {{ return {{
      requestAdapter: async () => ({{
        info: {{ vendor: "stand-in", description: "GPU", isFallbackAdapter: {str(software).lower()} }},
        features: new Set(), limits: {{}}, requestDevice: {device},
      }}),
    }}; }} }});"""


def _backend_of(page) -> dict:
    return page.evaluate("""({backend: window.model.backend, reason: window.model.fallbackReason,
        about: document.getElementById("about").textContent, title: document.getElementById("about").title,
        builds: [...document.scripts].map((s) => s.src.split("/").pop()).filter((n) => n.startsWith("ort."))})""")


def test_the_page_runs_on_webassembly_where_webgpu_would_not_help(browser, v2_site, fixtures):
    """WebGPU first only where there is a hardware adapter that makes a device; else the WebAssembly
    build, and the page says why not WebGPU (a tooltip on its engine line)."""
    cases = {"": "no WebGPU adapter", _stand_in_gpu(software=True): "the only WebGPU adapter is a software one",
             _stand_in_gpu(device_fails=True): "cannot make a device: the stand-in GPU has no device"}
    for init_script, reason in cases.items():
        with open_page(browser, v2_site, init_script=init_script) as page:
            got = _backend_of(page)
            assert got["backend"] == "wasm" and got["builds"] == ["ort.wasm.min.js"], got
            assert reason in got["reason"] and got["title"] == f"not WebGPU: {got['reason']}", got
            assert "WebAssembly" in got["about"], got
    with open_page(browser, v2_site, init_script=_stand_in_gpu(device_fails=True)) as page:
        assert _classify_file(page, fixtures / "images" / "elephant.jpg") in ("African elephant", "tusker")


def test_a_webgpu_failure_falls_back_to_webassembly_unless_webgpu_was_asked_for(browser, v2_site):
    """`load` with a usable adapter tries WebGPU; when onnxruntime-web fails there (a stand-in that
    refuses WebGPU sessions), the model runs on WebAssembly and says why. Asked for by name, WebGPU's
    failure is an error, not a quiet fallback; an unknown backend is refused."""
    with open_page(browser, v2_site + "?backend=wasm", init_script=_stand_in_gpu()) as page:
        got = _backend_of(page)
        assert got["backend"] == "wasm" and got["builds"] == ["ort.wasm.min.js"] and got["reason"] == "", got
        results = page.evaluate("""async () => {
            const { load } = await import("./mobilenet.js");
            const refusing = { ...ort, InferenceSession: { create: (bytes, options) =>
                options.executionProviders[0] === "webgpu" ? Promise.reject(new Error("stand-in: no WebGPU kernels"))
                : ort.InferenceSession.create(bytes, options) } };
            const url = "models/mobilenet_v2_1.0_224-image.onnx";
            const model = await load(url, { ort: refusing });
            const image = new ImageData(new Uint8ClampedArray(64 * 48 * 4).fill(200), 64, 48);
            const sum = (await model.probabilities(image)).reduce((a, b) => a + b, 0);
            const asked = await load(url, { ort: refusing, backend: "webgpu" }).then(() => "loaded", (e) => e.message);
            const unknown = await load(url, { backend: "cuda" }).then(() => "loaded", (e) => e.message);
            return { backend: model.backend, reason: model.fallbackReason, sum, asked, unknown };
        }""")
    assert results["backend"] == "wasm" and results["reason"] == "WebGPU failed: stand-in: no WebGPU kernels", results
    assert abs(results["sum"] - 1) < 1e-4, results
    assert results["asked"] == "WebGPU failed: stand-in: no WebGPU kernels", results
    assert results["unknown"] == "backend must be one of auto, webgpu, wasm, got cuda", results
    # The page: ?backend=webgpu where there is no adapter at all (onnxruntime-web's own WebGPU start
    # fails) is the page's error; so is an unknown backend.
    with open_page(browser, v2_site + "?backend=webgpu", expect="error") as page:
        assert "WebGPU failed:" in page.text_content("#message")
    with open_page(browser, v2_site + "?backend=cuda", expect="error") as page:
        assert "backend must be one of auto, webgpu, wasm, got cuda" in page.text_content("#message")
