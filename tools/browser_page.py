"""Driving the site `onnx-mobilenets web` writes from Python: a static file server on 127.0.0.1, the
Chromium flags for a headless browser in a closed network, a page waited on until it is ready, and
an image handed to the page as ImageData. Used by tools/web_benchmark.py and the tests (pytest puts
tools/ on the path)."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import threading

import numpy as np

from onnx_mobilenets.cli.web import IsolatedHandler, QuietHandler

# Headless Chromium as root in a closed network: no sandbox, no GPU, no background connections.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]

# JavaScript that turns the arguments `image_data_args` makes into `image`, an ImageData.
IMAGE_DATA_JS = """const image = new ImageData(Uint8ClampedArray.from(atob(data), (c) => c.charCodeAt(0)),
                                               width, height);"""


@contextlib.contextmanager
def serving(folder, isolated: bool = False):
    """A static file server on 127.0.0.1 over `folder`; yields its base URL. `isolated`: with the
    cross-origin isolation headers `web --serve` sends (WebAssembly gets threads only then)."""
    handler = functools.partial(IsolatedHandler if isolated else QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def open_page(browser, url: str, expect: str = "ready", init_script: str = ""):
    """A page of the site at `url`, once it has loaded its model ("ready") or failed to ("error");
    an AssertionError with the page's message when that is not `expect`. `init_script`: JavaScript
    run before the page's own (to stand in for a browser feature)."""
    page = browser.new_page()
    try:
        if init_script:
            page.add_init_script(init_script)
        page.goto(url)
        page.wait_for_function("['ready', 'error'].includes(document.body.dataset.state)", timeout=120_000)
        assert page.evaluate("document.body.dataset.state") == expect, page.text_content("#message")
        yield page
    finally:
        page.close()


def image_data_args(image: np.ndarray) -> list:
    """[data, width, height] for `IMAGE_DATA_JS`: an (H, W, 3) uint8 RGB image as opaque RGBA."""
    height, width, _ = image.shape
    rgba = np.concatenate([image, np.full((height, width, 1), 255, np.uint8)], axis=2)
    return [base64.b64encode(rgba.tobytes()).decode(), width, height]
