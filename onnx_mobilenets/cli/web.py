"""`onnx-mobilenets web NAME --output DIR`: a static site that classifies images in the browser with
onnxruntime-web, served by any static file host (``python -m http.server -d DIR``, GitHub Pages).

DIR gets ``index.html`` (pick or drop an image, see the top-5 as labelled bars, the model and its
speed), ``mobilenet.js`` (the classifier: `load(modelUrl)`, `classify(image, {top})`), the image-in
artifact under ``models/`` with its labels beside it (``NAME.labels.json``, from the artifact's own
metadata), ``site.json`` (what the page loads) and ``_headers``, the cross-origin isolation headers
in the format Netlify and Cloudflare Pages read: WebAssembly gets threads only on a cross-origin-
isolated page, so the page runs on one thread from hosts that send no such headers (GitHub Pages,
``python -m http.server``) and on several from those that do. onnxruntime-web comes from a pinned
URL, or with ``--ort-web`` from a local ``onnxruntime-web/dist`` copied into the site (for offline
sites, and for hosts whose isolated pages cannot load the CDN's files).

`onnx-mobilenets web --serve DIR` serves such a site on this machine with those headers.
"""

from __future__ import annotations

import functools
import http.server
import json
from importlib import resources
from pathlib import Path

from onnx_mobilenets.artifact import read_record
from onnx_mobilenets.files import atomic_write
from onnx_mobilenets.runtime.artifacts import resolve_model

ORT_WEB_VERSION = "1.30.0"  # the version tests/web/package-lock.json pins and the tests ran
ORT_WEB_URL = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_WEB_VERSION}/dist/"
# onnxruntime-web's WebAssembly build: the script, and what it loads (SIMD, threads when allowed); and
# its WebGPU build, which the page loads instead where the browser has a hardware GPU adapter.
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEBGPU_FILES = ("ort.webgpu.min.js", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
PAGE_FILES = ("index.html", "mobilenet.js")
# What makes a page cross-origin isolated, so that WebAssembly may use threads (SharedArrayBuffer).
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
HEADERS_FILE = "_headers"  # Netlify's and Cloudflare Pages' format: a path pattern, then its headers


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file handler that does not log each request."""

    def log_message(self, *args):
        pass


class IsolatedHandler(QuietHandler):
    """A static file handler that sends `ISOLATION_HEADERS` with every response."""

    def end_headers(self):
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        super().end_headers()


def run(args) -> int:
    if args.serve:
        if args.name or args.output:
            raise ValueError("web --serve DIR serves a site already written: give no NAME or --output with it")
        return serve(Path(args.serve), args.port)
    if not args.name or not args.output:
        raise ValueError("web needs NAME and --output DIR (or --serve DIR to serve a site written before)")
    artifact = resolve_model(args.name, image_input=True, preprocessing_name=args.preprocessing)
    data = artifact.read_bytes()
    record = read_record(data, artifact)
    if not record.preprocessing.image_input:
        raise ValueError(f"{artifact} takes the network's input, not images: the page needs an image-in artifact "
                         f"(onnx-mobilenets convert NAME --image-input)")
    if args.ort_web:
        _check_ort_web(Path(args.ort_web))  # before anything is written
    site = Path(args.output)
    site.mkdir(parents=True, exist_ok=True)
    pages = resources.files("onnx_mobilenets.runtime").joinpath("web")
    for name in PAGE_FILES:
        atomic_write(site / name, pages.joinpath(name).read_bytes())
    model = f"models/{artifact.stem}.onnx"
    atomic_write(site / model, data)
    labels = {"variant": record.spec.variant, "preprocessing": record.preprocessing.name, "labels": record.labels}
    atomic_write(site / f"models/{artifact.stem}.labels.json", json.dumps(labels).encode())
    ort_files = _ort_web(args.ort_web, site)
    atomic_write(site / "site.json", json.dumps({
        "model": model, "ort": ort_files + ORT_FILES[0], "ortWebgpu": ort_files + ORT_WEBGPU_FILES[0],
        "ortFiles": ort_files, "threads": "auto", "backend": "auto"}, indent=1).encode())
    headers = "".join(f"  {name}: {value}\n" for name, value in ISOLATION_HEADERS.items())
    atomic_write(site / HEADERS_FILE, f"/*\n{headers}".encode())
    print(f"wrote {site}: index.html, mobilenet.js, {model} ({len(data) / 1e6:.1f} MB) and its labels, "
          f"onnxruntime-web {'copied from ' + str(args.ort_web) if args.ort_web else 'from ' + ORT_WEB_URL}, "
          f"{HEADERS_FILE}")
    print(f"Try it here: onnx-mobilenets web --serve {site}  (cross-origin isolated: WebAssembly threads). Any "
          "static host serves it; on one without those headers it runs on one thread.")
    return 0


def serve(site: Path, port: int, host: str = "127.0.0.1") -> int:
    """Serve the site folder `site` on http://host:port/ with `ISOLATION_HEADERS`, until Ctrl-C."""
    missing = [name for name in (*PAGE_FILES, "site.json") if not (site / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{site} is not a site `onnx-mobilenets web` wrote (it lacks {', '.join(missing)})")
    handler = functools.partial(IsolatedHandler, directory=str(site))
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ValueError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None
    with server:
        print(f"serving {site} at http://{host}:{server.server_address[1]}/ (cross-origin isolated); Ctrl-C stops",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", flush=True)
    return 0


def _check_ort_web(folder: Path) -> None:
    missing = [name for name in (*ORT_FILES, *ORT_WEBGPU_FILES) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"--ort-web {folder} lacks {', '.join(missing)}: give onnxruntime-web's dist folder "
                                "(node_modules/onnxruntime-web/dist after `npm install onnxruntime-web`)")


def _ort_web(local, site: Path) -> str:
    """The folder onnxruntime-web's files are loaded from: relative to the site when copied into it."""
    if not local:
        return ORT_WEB_URL
    folder = Path(local)
    for name in (*ORT_FILES, *ORT_WEBGPU_FILES):
        atomic_write(site / "ort" / name, (folder / name).read_bytes())
    return "ort/"
