"""`tools/web_benchmark.py --peers`: MobileNet V2 1.0/224 in onnxruntime-web against the engines a browser
user would pick instead (TensorFlow.js wasm for float, tfjs-tflite for uint8), and native onnxruntime,
in one Chromium; see web_benchmark.py's docstring for the method."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime
from bench.measure import cpu_name, measure_alternating, paired_ratio, round_ratios, summarize
from browser_page import CHROMIUM_FLAGS, open_page, serving
from PIL import Image

from onnx_mobilenets import OnnxMobileNet
from onnx_mobilenets.artifact import ArtifactSpec
from onnx_mobilenets.catalogue import get_variant
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.model_bytes import cpu_has_vnni
from onnx_mobilenets.sessions import new_session, session_options
from onnx_mobilenets.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]
PEER_FOLDER = REPO / "tools" / "web_peer"
FLOAT, QUANT = "mobilenet_v2_1.0_224", "mobilenet_v2_1.0_224_quant"
FLOAT_TARBALL, QUANT_TARBALL = "mobilenet_v2_1.0_224.tgz", "quantized_v2_224_100.tgz"
TFJS_CONVERTER = "tensorflowjs==4.22.0"  # pins TensorFlow 2.19: a venv of its own
# What the page serves under which URL: the engines from their npm folders, then the work folder.
SITE_FOLDERS = {"ort": REPO / "tests/web/node_modules/onnxruntime-web/dist",
                "tfjs": PEER_FOLDER / "tfjs/node_modules/@tensorflow",
                "tflite": PEER_FOLDER / "tflite/node_modules/@tensorflow"}
ENGINE_PACKAGES = ("onnxruntime-web", "@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm", "@tensorflow/tfjs-tflite")
WARMUP_SECONDS = 1.0  # per page, first: the browser compiles WebAssembly in tiers, the first runs are slow
ROUND_SECONDS = 0.3  # each contender's turn in a round: at least three runs (the slowest takes ~90 ms)
PROFILE_SECONDS = 2.0


def artifact(name: str, folder: str = "onnx", **options) -> str:
    """The work-folder path of the artifact of `name` with `options` (`ArtifactSpec` names it)."""
    return ArtifactSpec.of_variant(name, **options).path_in(folder).as_posix()


@dataclass
class Contender:
    """One engine on one model: `engine` is "native" or a peer.html engine (ort, tfjs, tflite)."""

    label: str
    engine: str
    model: str  # a path under the work folder
    precision: str  # "float" or "uint8": which input it takes and which native row it is judged against
    threads: int
    query: dict = field(default_factory=dict)  # more peer.html parameters
    compare_with: str = ""  # the contender whose per-round ratio to this one is reported
    nchw: bool = False  # the model takes NCHW input (`convert --nchw`)


def contenders() -> list:
    rows = []
    for threads in (1, 2):
        t = f"{threads} thread{'s' if threads > 1 else ''}"
        rows += [
            Contender(f"onnxruntime-web float, {t}", "ort", artifact(FLOAT), "float", threads,
                      compare_with=f"TF.js wasm float, {t}"),
            Contender(f"TF.js wasm float, {t}", "tfjs", "tfjs/model.json", "float", threads),
            Contender(f"onnxruntime-web uint8, {t}", "ort", artifact(QUANT), "uint8", threads,
                      compare_with=f"tfjs-tflite uint8, {t}"),
            Contender(f"tfjs-tflite uint8, {t}", "tflite", "tflite/model.tflite", "uint8", threads),
            Contender(f"native onnxruntime float, {t}", "native", artifact(FLOAT), "float", threads),
            Contender(f"native onnxruntime uint8, {t}", "native", artifact(QUANT), "uint8", threads),
        ]
    # What the artifact and the session control, on one thread, each against the default float row.
    base = "onnxruntime-web float, 1 thread"
    rows += [
        Contender("ort-web float, fixed batch artifact (-b1)", "ort", artifact(FLOAT, batch=1), "float", 1,
                  compare_with=base),
        Contender("ort-web float, freeDimensionOverrides batch=1", "ort", artifact(FLOAT), "float", 1,
                  {"batch": 1}, compare_with=base),
        Contender("ort-web float, NCHW input artifact", "ort", artifact(FLOAT, "onnx-nchw"), "float", 1,
                  compare_with=base, nchw=True),
        Contender("ort-web float, NCHW and fixed batch (-b1)", "ort", artifact(FLOAT, "onnx-nchw", batch=1), "float", 1,
                  compare_with="TF.js wasm float, 1 thread", nchw=True),
        *[Contender(f"ort-web float, graphOptimizationLevel {level}", "ort", artifact(FLOAT), "float", 1,
                    {"level": level}, compare_with=base) for level in ("extended", "basic", "disabled")],
    ]
    return rows


# --- preparing the models -------------------------------------------------------------------------

def prepare(work: Path, fixtures: Path) -> None:
    """Our artifacts, Google's .tflite and the TF.js model under `work`, each made once."""
    checkpoints = fixtures / "checkpoints"
    for tarball in (FLOAT_TARBALL, QUANT_TARBALL):
        if not (checkpoints / tarball).is_file():
            raise SystemExit(f"error: {checkpoints / tarball} is missing (the test fixtures; --fixtures DIR)")
    float_checkpoint = str(checkpoints / FLOAT_TARBALL)
    for args in (["--output", str(work / "onnx")], ["--output", str(work / "onnx"), "--batch", "1"],
                 ["--output", str(work / "onnx-nchw"), "--nchw"],
                 ["--output", str(work / "onnx-nchw"), "--nchw", "--batch", "1"]):
        _convert([FLOAT, "--checkpoint", float_checkpoint, *args])
    _convert([QUANT, "--checkpoint", str(checkpoints / QUANT_TARBALL), "--output", str(work / "onnx")])
    tflite = work / "tflite" / "model.tflite"
    if not tflite.is_file():
        tflite.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(checkpoints / QUANT_TARBALL) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(".tflite"))
            tflite.write_bytes(tar.extractfile(member).read())
    if not (work / "tfjs" / "model.json").is_file():
        _export_saved_model(float_checkpoint, work / "saved_model")
        _tfjs_convert(work / "saved_model", work / "tfjs", work / "tfjs-venv")
    for folder in (PEER_FOLDER / "tfjs", PEER_FOLDER / "tflite"):
        if not (folder / "node_modules").is_dir():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True)
    if not SITE_FOLDERS["ort"].is_dir():
        raise SystemExit(f"error: {SITE_FOLDERS['ort']} is missing: run `npm ci` in tests/web")


def _convert(args: list) -> None:
    if cli(["convert", *args]):
        raise SystemExit(f"error: onnx-mobilenets convert {' '.join(args)} failed")


def _export_saved_model(checkpoint: str, folder: Path) -> None:
    """Our Keras V2 1.0/224 with the fixture weights as a SavedModel: image batch in, probabilities out."""
    import tensorflow as tf

    from onnx_mobilenets.conversion import build_variant, logits_model

    logits = logits_model(build_variant(FLOAT, weights=checkpoint))
    resolution = get_variant(FLOAT).resolution

    @tf.function(input_signature=[tf.TensorSpec([1, resolution, resolution, 3], tf.float32, name="input")])
    def serve(images):
        return {"probabilities": tf.nn.softmax(logits(images, training=False))}

    module = tf.Module()
    module.logits = logits
    tf.saved_model.save(module, str(folder), signatures={"serving_default": serve})


def _tfjs_convert(saved_model: Path, output: Path, venv: Path) -> None:
    """tensorflowjs_converter, from a venv of its own. Its import of tensorflow_decision_forests fails
    on a protobuf clash and nothing of it is used for a MobileNet: an empty stand-in takes its place."""
    converter = venv / "bin" / "tensorflowjs_converter"
    if not converter.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", TFJS_CONVERTER], check=True)
    stand_in = venv / "stand-ins" / "tensorflow_decision_forests"
    stand_in.mkdir(parents=True, exist_ok=True)
    (stand_in / "__init__.py").write_text("# empty: tensorflowjs imports it, a MobileNet does not need it\n")
    env = dict(os.environ, PYTHONPATH=str(stand_in.parent), TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([converter, "--input_format=tf_saved_model", "--output_format=tfjs_graph_model",
                    "--signature_name=serving_default", str(saved_model), str(output)], check=True, env=env)


# --- measuring ------------------------------------------------------------------------------------

def inputs(work: Path, fixtures: Path) -> dict:
    """precision -> the network input of the elephant photograph, as our runtime makes it."""
    image = Image.open(fixtures / "images" / "elephant.jpg").convert("RGB")
    return {"float": OnnxMobileNet(work / artifact(FLOAT), providers="cpu").preprocess(image),
            "uint8": OnnxMobileNet(work / artifact(QUANT), providers="cpu").preprocess(image)}


class Native:
    """onnxruntime in this process, `threads` intra-op threads, spinning off as in the browser; a
    call is one run (what `bench.measure` times)."""

    def __init__(self, path: Path, batch: np.ndarray, threads: int):
        options = session_options(threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.model, self.batch = OnnxMobileNet(path, providers="cpu", session_options=options), batch
        self.threads = threads

    def __call__(self) -> None:
        self.model.run(self.batch)

    def output(self) -> np.ndarray:
        return self.model.run(self.batch)[0]


class InPage:
    """A peer.html page: the input handed over once, the runs timed inside the page."""

    def __init__(self, page, batch: np.ndarray):
        self.page = page
        page.evaluate("""([data, dtype, shape]) => window.bench.setInput(
                             Uint8Array.from(atob(data), (c) => c.charCodeAt(0)), dtype, shape)""",
                      [_base64(batch), str(batch.dtype), list(batch.shape)])
        self.threads = page.evaluate("window.bench.threads")

    def times(self, seconds: float) -> list:
        """Per-run seconds over about `seconds` (at least three runs) after two untimed ones, timed in
        the page (as `bench.measure` times a function)."""
        return [t / 1000 for t in self.page.evaluate("""async (seconds) => {
            await window.bench.run();
            await window.bench.run();
            const times = [];
            const deadline = performance.now() + seconds * 1000;
            while (times.length < 3 || performance.now() < deadline) {
                const started = performance.now();
                await window.bench.run();
                times.push(performance.now() - started);
            }
            return times;
        }""", seconds)]

    def output(self) -> np.ndarray:
        output = np.asarray(self.page.evaluate("async () => Array.from(await window.bench.run())"), np.float64)
        # Google's .tflite has 1001 classes, "background" first; our artifacts drop it (docs/quantized.md).
        return output[1:] if len(output) == 1001 else output


def _base64(array: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode()


def _page_url(base: str, contender: Contender, batch_dim: str) -> str:
    query = {"engine": contender.engine, "model": f"/work/{contender.model}", "threads": contender.threads,
             **contender.query}
    if "batch" in query:
        query["batchDim"] = batch_dim
    return f"{base}/peer.html?" + "&".join(f"{k}={v}" for k, v in query.items())


def measure(work: Path, fixtures: Path, chromium: str, rounds: int) -> dict:
    from playwright.sync_api import sync_playwright

    batches = inputs(work, fixtures)
    batch_dim = _batch_dim(work / artifact(FLOAT))
    site = work / "site"
    site.mkdir(exist_ok=True)
    for name, folder in {**SITE_FOLDERS, "work": work}.items():
        link = site / name
        if not link.is_symlink():
            link.symlink_to(folder.resolve())
    (site / "peer.html").write_bytes((PEER_FOLDER / "peer.html").read_bytes())
    rows = contenders()
    with serving(site, isolated=True) as base, sync_playwright() as playwright, contextlib.ExitStack() as stack:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        stack.callback(browser.close)
        runners = {}
        for c in rows:
            batch = batches[c.precision].transpose(0, 3, 1, 2).copy() if c.nchw else batches[c.precision]
            if c.engine == "native":
                runners[c.label] = Native(work / c.model, batch, c.threads)
            else:
                page = stack.enter_context(open_page(browser, _page_url(base, c, batch_dim)))
                runners[c.label] = InPage(page, batch)
        native_top1 = {p: int(np.argmax(runners[f"native onnxruntime {p}, 1 thread"].output()))
                       for p in ("float", "uint8")}
        agreement = {}
        for c in rows:
            top1 = int(np.argmax(runners[c.label].output()))
            agreement[c.label] = top1
            if top1 != native_top1[c.precision]:
                raise SystemExit(f"error: {c.label} gives class {top1} for the elephant, native onnxruntime "
                                 f"{native_top1[c.precision]}: the contenders do not run the same network")
        for runner in runners.values():
            if isinstance(runner, InPage):
                runner.times(WARMUP_SECONDS)
        samples = measure_alternating([runners], rounds, ROUND_SECONDS)
        profile = {f"onnxruntime-web {p}": _profile(browser, base, work, batch_dim, artifact(name), batches[p])
                   for p, name in (("float", FLOAT), ("uint8", QUANT))}
        profile["TF.js float"] = _tfjs_profile(browser, base, batches["float"])
    results = {}
    for c in rows:
        summary = summarize(samples[c.label])
        summary.update(engine=c.engine, precision=c.precision, threads_asked=c.threads,
                       threads=runners[c.label].threads, top1=agreement[c.label])
        if c.compare_with:
            summary["compared_with"] = c.compare_with
            ratios = round_ratios(samples, c.label, c.compare_with)
            summary["ratio"] = float(np.median(ratios))
            summary["ratio_p10"], summary["ratio_p90"] = (float(np.percentile(ratios, q)) for q in (10, 90))
        if c.engine != "native":
            summary["over_native"] = paired_ratio(samples, c.label, f"native onnxruntime {c.precision}, {c.threads} "
                                                  f"thread{'s' if c.threads > 1 else ''}")
        results[c.label] = summary
    return {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "vnni": cpu_has_vnni(),
                        "avx512": "avx512f" in Path("/proc/cpuinfo").read_text(),
                        "chromium": _chromium_version(chromium)},
            "versions": {"onnxruntime": onnxruntime.__version__, **_npm_versions()},
            "rounds": rounds, "round_seconds": ROUND_SECONDS, "contenders": results, "profile": profile}


def _profile(browser, base: str, base_folder: Path, batch_dim: str, model: str, batch: np.ndarray) -> dict:
    """Where onnxruntime-web's time goes: its session profiler (printed to the console by the wasm
    build) over PROFILE_SECONDS of runs of `model` (under `base_folder`) on one thread, kernel time
    summed by kind (`_kind`; onnxruntime's fused kernels keep the name of the Conv they replace)."""
    contender = Contender("profile", "ort", model, "", 1, {"profile": 1})
    messages = []
    with open_page(browser, _page_url(base, contender, batch_dim)) as page:
        page.on("console", lambda message: messages.append(message.text))
        InPage(page, batch).times(PROFILE_SECONDS)
        page.evaluate("window.bench.endProfiling()")
        page.wait_for_timeout(500)
    return ort_profile_summary(messages, conv_kinds(base_folder / model))


def ort_profile_summary(messages: list, kinds: dict) -> dict:
    """onnxruntime-web's profile (the console `messages` of a profiled session: one JSON event per
    line) summed per run by kind: `kinds` {Conv node name: kind}, other nodes by operator."""
    by_kind = defaultdict(float)
    session_runs = []
    for event in _profile_events(messages):
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            # (the layout transformer renames the nodes it moves to NHWC: NAME_token_N)
            node = re.sub(r"_token_\d+$", "", event["name"][:-len("_kernel_time")])
            by_kind[kinds.get(node, event["args"]["op_name"])] += event["dur"] / 1000
        elif event.get("cat") == "Session" and event.get("name") == "model_run":
            session_runs.append(event["dur"] / 1000)
    if not session_runs:
        raise SystemExit("error: onnxruntime-web printed no profile (its console output changed?)")
    return _per_run(by_kind, len(session_runs), float(np.mean(session_runs)))


def _tfjs_profile(browser, base: str, batch: np.ndarray, runs: int = 20) -> dict:
    """The same for TF.js (wasm, one thread): `tf.profile`'s kernel times over `runs` runs."""
    contender = Contender("profile", "tfjs", "tfjs/model.json", "float", 1)
    with open_page(browser, _page_url(base, contender, "")) as page:
        runner = InPage(page, batch)
        runner.times(WARMUP_SECONDS)
        kernels = page.evaluate("""async (runs) => {
            const kernels = [];
            for (let i = 0; i < runs; i++) {
                const started = performance.now();
                const info = await tf.profile(() => window.bench.run());
                const ms = performance.now() - started;
                // "name__op" entries wrap the kernels they call: counted through those
                kernels.push(...info.kernels.filter((k) => !k.name.endsWith("__op")).map((k) => (
                    { name: k.name, filter: k.inputShapes[1] || [], ms: k.kernelTimeMs })));
                kernels.push({ name: "(run)", filter: [], ms });
            }
            return kernels;
        }""", runs)
    by_kind = defaultdict(float)
    for kernel in kernels:
        if kernel["name"] != "(run)":
            shape = kernel["filter"]  # TF's filter layout: H, W, in, out (depthwise: H, W, channels, 1)
            by_kind[_kind(kernel["name"], [0, 0, *shape[:2]] if len(shape) == 4 else [],
                          depthwise="Depthwise" in kernel["name"])] += kernel["ms"]
    run_ms = [k["ms"] for k in kernels if k["name"] == "(run)"]
    return _per_run(by_kind, runs, float(np.mean(run_ms)))


def _kind(op: str, weights_shape: list, depthwise: bool) -> str:
    """A kernel's kind: a convolution by its filter (depthwise 3x3, 1x1, full 3x3), else its op."""
    if "Conv" not in op or len(weights_shape) != 4:
        return op
    size = "x".join(map(str, weights_shape[2:]))
    return f"depthwise {size} conv" if depthwise else f"{size} conv"


def conv_kinds(path: Path) -> dict:
    """{Conv node name: its `_kind`} of an ONNX file, float or QDQ (weights behind a DequantizeLinear)."""
    import onnx

    graph = onnx.load(str(path)).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in shapes:
            shapes[node.output[0]] = shapes[node.input[0]]
    kinds = {}
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in shapes:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            kinds[node.name] = _kind("Conv", shapes[node.input[1]], depthwise=group > 1)
    return kinds


def _per_run(by_kind: dict, runs: int, run_ms: float) -> dict:
    total = sum(by_kind.values())
    return {"runs": runs, "model_run_ms": run_ms,
            "kernel_ms_per_run": {kind: ms / runs for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "kernel_share": {kind: ms / total for kind, ms in by_kind.items()}}


def _profile_events(messages: list):
    for text in messages:
        for line in text.splitlines():
            line = line.strip().rstrip(",")
            if line.startswith("{") and line.endswith("}"):
                with contextlib.suppress(json.JSONDecodeError):
                    yield json.loads(line)


def _batch_dim(path: Path) -> str:
    """The name onnxruntime gives the artifact's free batch dimension (what freeDimensionOverrides takes)."""
    return str(new_session(path).get_inputs()[0].shape[0])


def _npm_versions() -> dict:
    """The version of each engine's npm package, as its lock file installed it."""
    found = {}
    for lock in (REPO / "tests/web/package-lock.json", *sorted(PEER_FOLDER.glob("*/package-lock.json"))):
        for path, package in json.loads(lock.read_text())["packages"].items():
            name = path.rpartition("node_modules/")[2]
            if name in ENGINE_PACKAGES:
                found[name] = package["version"]
    return found


def _chromium_version(chromium: str) -> str:
    return subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()


def table(results: dict) -> str:
    rows = []
    for label, r in results["contenders"].items():
        ratio = (f"{r['ratio']:.2f}x ({r['ratio_p10']:.2f}-{r['ratio_p90']:.2f}) {r['compared_with']}"
                 if "ratio" in r else "")
        native = f"{r['over_native']:.1f}x" if "over_native" in r else ""
        rows.append([label, r["threads"], f"{r['median_ms']:.1f} ms", ratio, native])
    return markdown_table(["contender", "threads used", "median", "time over (p10-p90 of rounds)", "over native"], rows)
