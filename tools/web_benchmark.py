"""Speed in the browser, in headless Chromium.

    python tools/web_benchmark.py ARTIFACT-image.onnx [...] [--ort-web DIR] [--chromium PATH] [--json FILE]
    python tools/web_benchmark.py --peers [--work DIR] [--rounds N] [--json FILE]

The first form: ms per image of image-in artifacts (onnxruntime-web, WebAssembly, 1 and 2 threads)
against onnxruntime natively on the same number of threads.

Each artifact gets a site (`onnx-mobilenets web`) served on 127.0.0.1 with the headers that make the
page cross-origin isolated (Cross-Origin-Opener-Policy, -Embedder-Policy: without them WebAssembly
gets no threads). One 640x480 photo-like image goes through `model.probabilities` after warm-up runs
(the JIT tiers up: the first runs are several times slower), then the timed runs; natively the same
image through `OnnxMobileNet.run` with `threads` onnxruntime threads. It prints a Markdown table and
writes JSON.

`--peers`: the same network, MobileNet V2 1.0/224 with the fixtures' ImageNet weights, in the engines
a browser user would pick instead, in one Chromium, network time only (the input is handed to each
page once; `tools/web_peer/peer.html`): float in onnxruntime-web (our artifact; also with a fixed
batch, `freeDimensionOverrides`, NCHW input and each graph optimization level) and in TensorFlow.js's
wasm backend (our Keras model through `tensorflowjs_converter`); uint8 in onnxruntime-web (our QDQ
artifact) and in tfjs-tflite (Google's own `.tflite`); native onnxruntime for both. One and two
threads on a cross-origin-isolated page. Contenders run in turns of ROUND_SECONDS, in a new random
order each round (`bench.measure`), timed inside the page, and the ratios are medians of per-round
ratios. Every contender must give the native top-1 on the elephant photograph. Then one profiled
session of each engine on one thread says where its time goes, by kind of kernel (depthwise 3x3,
1x1 and full 3x3 convolutions, the rest by operator): onnxruntime-web's session profiler, TF.js's
`tf.profile`. `tensorflowjs` pins an older TensorFlow, so its converter runs in a venv of
its own under `--work` (made on first use); the npm packages come from `tools/web_peer/*/package-lock.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from browser_page import CHROMIUM_FLAGS, IMAGE_DATA_JS, image_data_args, open_page, serving

from onnx_mobilenets import OnnxMobileNet
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.parity import parity_images
from onnx_mobilenets.tables import markdown_table

REPO = Path(__file__).resolve().parents[1]


def browser_ms(page, image: np.ndarray, warmup: int, runs: int) -> list:
    """Per-call milliseconds of `window.model.probabilities` on `image`, measured in the page."""
    return page.evaluate(
        f"""async ([data, width, height, warmup, runs]) => {{
            {IMAGE_DATA_JS}
            for (let i = 0; i < warmup; i++) await window.model.probabilities(image);
            const times = [];
            for (let i = 0; i < runs; i++) {{
                const started = performance.now();
                await window.model.probabilities(image);
                times.push(performance.now() - started);
            }}
            return times;
        }}""", [*image_data_args(image), warmup, runs])


def native_ms(artifact: Path, image: np.ndarray, threads: int, warmup: int, runs: int) -> list:
    model = OnnxMobileNet(artifact, providers="cpu", threads=threads)
    batch = image[np.newaxis]
    for _ in range(warmup):
        model.run(batch)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.run(batch)
        times.append((time.perf_counter() - started) * 1000)
    return times


def measure(artifacts: list, ort_web: Path, chromium: str, warmup: int, runs: int) -> list:
    from playwright.sync_api import sync_playwright

    image = np.resize(parity_images(448, count=2, seed=11)[1], (480, 640, 3))
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnx-mobilenets-web-bench-") as root, serving(root, isolated=True) as base:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            for artifact in artifacts:
                if cli(["web", str(artifact), "--output", f"{root}/{artifact.stem}", "--ort-web", str(ort_web)]):
                    raise SystemExit(f"error: cannot make a site of {artifact}")
                for threads in (1, 2):
                    with open_page(browser, f"{base}/{artifact.stem}/?threads={threads}") as page:
                        isolated = page.evaluate("crossOriginIsolated")
                        first = browser_ms(page, image, 0, 1)[0]
                        web = browser_ms(page, image, warmup, runs)
                    native = native_ms(artifact, image, threads, warmup, runs)
                    rows.append({"artifact": artifact.stem, "threads": threads, "cross_origin_isolated": isolated,
                                 "browser_first_ms": first, "browser_ms": float(np.median(web)),
                                 "native_ms": float(np.median(native)),
                                 "browser_over_native": float(np.median(web) / np.median(native))})
                    print(json.dumps(rows[-1]), flush=True)
            browser.close()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="*", type=Path, help="image-in .onnx artifacts")
    parser.add_argument("--peers", action="store_true", help="instead: V2 1.0/224 against TF.js and tfjs-tflite")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache/onnx-mobilenets/web-peers",
                        help="with --peers: where the models and the converter's venv are kept")
    parser.add_argument("--fixtures", type=Path, default=Path(os.environ.get(
        "ONNX_MOBILENETS_FIXTURES", REPO.parent / "shared" / "fixtures")), help="with --peers: the test fixtures")
    parser.add_argument("--rounds", type=int, default=20, help="with --peers: rounds of runs (default 20)")
    parser.add_argument("--ort-web", type=Path, default=REPO / "tests/web/node_modules/onnxruntime-web/dist")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--warmup", type=int, default=30, help="untimed runs first (default 30)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.peers == bool(args.artifacts):
        parser.error("give image-in artifacts, or --peers")
    if args.peers:
        return peers(args)
    rows = measure(args.artifacts, args.ort_web, args.chromium, args.warmup, args.runs)
    print(markdown_table(
        ["artifact", "threads", "isolated", "browser, first run", "browser (median)", "native (median)",
         "browser / native"],
        [[r["artifact"], r["threads"], r["cross_origin_isolated"], f"{r['browser_first_ms']:.1f} ms",
          f"{r['browser_ms']:.1f} ms", f"{r['native_ms']:.1f} ms", f"{r['browser_over_native']:.1f}x"]
         for r in rows]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


def peers(args) -> int:
    import web_peers

    args.work.mkdir(parents=True, exist_ok=True)
    web_peers.prepare(args.work, args.fixtures)
    results = web_peers.measure(args.work, args.fixtures, args.chromium, args.rounds)
    print(web_peers.table(results))
    for engine, profile in results["profile"].items():
        kinds = ", ".join(f"{kind} {ms:.1f} ms" for kind, ms in profile["kernel_ms_per_run"].items() if ms >= 0.05)
        print(f"{engine}, one thread, {profile['model_run_ms']:.1f} ms a run (profiled): {kinds}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
