"""An HTTP server on 127.0.0.1 for the download tests: serves files by name, honours byte ranges (or
not), and fails requests on purpose, once each, in the ways networks fail."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        name = self.path.rsplit("/", 1)[-1]
        asked = self.headers.get("Range")
        server.requests.append((name, asked))
        fault = server.faults.get(name, []).pop(0) if server.faults.get(name) else None
        if fault == "500":
            self.send_error(500, "planted failure")
            return
        if name not in server.files:
            self.send_error(404)
            return
        body = server.files[name]
        start = int(re.match(r"bytes=(\d+)-", asked).group(1)) if asked and server.ranges else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if fault == "slow":  # a trickle: 64 KiB every 0.2 s, so a client can be stopped in the middle
            for at in range(start, len(body), 65536):
                self.wfile.write(body[at:at + 65536])
                self.wfile.flush()
                time.sleep(0.2)
            return
        if fault == "drop":  # a third of the file, then the connection closes
            self.wfile.write(body[start:start + (len(body) - start) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serving(files: dict, faults: dict = None, ranges: bool = True):
    """A server of `files` ({name: bytes}) at any path ending in the name; `faults` ({name: ["500",
    "drop", "slow", ...]}) are used up one per request. Yields the server: ``.base`` (its URL), ``.files``,
    ``.faults`` and ``.requests`` ([(name, Range header)]) can be read and changed while it runs."""
    with running(_Handler) as server:
        server.files, server.faults, server.ranges, server.requests = dict(files), dict(faults or {}), ranges, []
        server.base = f"http://127.0.0.1:{server.server_address[1]}"
        yield server


@contextlib.contextmanager
def running(handler):
    """A threading HTTP server of `handler` on a free port of 127.0.0.1, serving until the block ends."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
