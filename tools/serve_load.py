"""Load on `onnx-mobilenets serve`: throughput and latency at several concurrencies, beside
`predict_stream` on the same images in the same run, and what batching buys.

    python tools/serve_load.py [--model NAME] [--requests 320] [--concurrency 1,8,32] [--json FILE] [--doc FILE]

Photo-like JPEGs (half 500x375, half 1600x1200) are made once. First `predict_stream` classifies
them in this process (the batch job's speed on this machine); then the server runs, on 127.0.0.1
only, with its default batching and again with ``--max-batch-size 1``, and a bounded async client
(aiohttp) sends each concurrency level its number of requests (or what fits in --max-seconds),
every one checked for a 200. It prints a Markdown table, writes JSON, and with --doc puts the table
between the ``<!-- serve_load -->`` markers of that file (docs/serving.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.measure import cpu_name, photo_like_jpegs

from onnx_mobilenets import OnnxMobileNet
from onnx_mobilenets.builtin import DEFAULT_MODEL
from onnx_mobilenets.model_bytes import cpu_has_vnni
from onnx_mobilenets.tables import markdown_table

MARKER = "<!-- serve_load -->"


def stream_rate(model: str, bodies: list, count: int) -> float:
    """Images per second of `predict_stream` over `count` of the bodies (after a warm-up batch)."""
    classifier = OnnxMobileNet(model)
    list(classifier.predict_stream(bodies[:32]))
    started = time.perf_counter()
    done = sum(1 for result in classifier.predict_stream(bodies[i % len(bodies)] for i in range(count))
               if result.error is None)
    return done / (time.perf_counter() - started)


class Server:
    """`onnx-mobilenets serve ARGS` on a free port of 127.0.0.1, up once it says so, until `stop`
    (the tests use it too). A free port can be taken by another process between the probe and the
    server's bind, so a start that fails is tried once more on a fresh port; then RuntimeError says
    why both failed, with the server's output."""

    def __init__(self, *args: str, env: dict = None):
        if env is None:  # a Ray of its own, not one this environment names
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        failures = []
        for _ in range(2):
            failure = self._start(args, env)
            if failure is None:
                return
            failures.append(failure)
        raise RuntimeError(f"serve {' '.join(args)} did not start:\n" + "\n---\n".join(failures))

    def _start(self, args, env):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        # stderr to a file: Ray processes left behind after a kill would hold a pipe open, and a
        # pipe nobody reads fills up with Ray's warnings and blocks the server.
        errors = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "onnx_mobilenets.cli", "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=errors, text=True, env=env, preexec_fn=ctrl_c_works)
        self.lines = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        deadline = time.time() + 240
        while not any(line.startswith("serving ") for line in self.lines):
            if self.process.poll() is not None or time.time() > deadline:
                self.process.kill()
                errors.seek(0)
                return f"exit status {self.process.wait()}: {''.join(self.lines)} {errors.read()[-3000:]}"
            time.sleep(0.2)
        return None

    @property
    def url(self) -> str:
        return f"{self.base}/v1/classify"

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM, as a service manager stops it; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def ctrl_c_works() -> None:
    """`preexec_fn` of a child process stopped with SIGINT, as Ctrl-C would: a shell that runs this
    (or the tests, which use it too) in the background starts it with SIGINT ignored, the children
    inherit that, and Python then keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


ROLES = (("replica", "ServeReplica"), ("HTTP proxy", "ProxyActor"), ("Ray's own", "ray"))


def cpu_seconds_by_process(server_pid: int) -> dict:
    """{(pid, start time): (role, CPU seconds so far)} of this process (the load client) and of the
    server's process tree (its Ray: the replica, the proxy, the rest): where the cores go while
    serving. Keyed by process, so that a difference only ever compares a process with itself."""
    import psutil

    me = psutil.Process()
    try:
        server = psutil.Process(server_pid)
        processes = [me, server, *server.children(recursive=True)]
    except psutil.NoSuchProcess:
        processes = [me]
    seconds = {}
    for process in processes:
        try:
            with process.oneshot():
                command, times, born = " ".join(process.cmdline()), process.cpu_times(), process.create_time()
        except psutil.Error:  # ended meanwhile
            continue
        role = "load client" if process.pid == me.pid else next((r for r, mark in ROLES if mark in command), None)
        if role is not None:
            seconds[(process.pid, born)] = (role, times.user + times.system)
    return seconds


def cores_by_role(before: dict, after: dict, elapsed: float) -> dict:
    """Cores each role used between two `cpu_seconds_by_process` snapshots `elapsed` seconds apart:
    the processes of the second, each less what it had used at the first (nothing, if it is new);
    a process that ended in between is not in the second, and its last seconds go uncounted."""
    cores = dict.fromkeys(["load client", *(role for role, _ in ROLES)], 0.0)
    for key, (role, seconds) in after.items():
        cores[role] += (seconds - before.get(key, (role, 0.0))[1]) / elapsed
    return cores


async def _load(server: Server, bodies: list, concurrency: int, count: int, max_seconds: float) -> dict:
    import aiohttp

    latencies, batch_sizes, failures = [], [], []
    todo = iter(range(count))
    deadline = time.perf_counter() + max_seconds

    async def client(session):
        for i in todo:  # shared by the clients: each request is sent once
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            async with session.post(server.url, data=bodies[i % len(bodies)]) as response:
                await response.read()
                if response.status != 200:
                    failures.append(response.status)
                    continue
                batch_sizes.append(int(response.headers["X-Batch-Size"]))
            latencies.append(time.perf_counter() - started)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:
        started, cpu_before = time.perf_counter(), cpu_seconds_by_process(server.process.pid)
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu_after = cpu_seconds_by_process(server.process.pid)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"concurrency": concurrency, "requests": len(latencies) + len(failures), "answered": len(latencies),
            "failed": len(failures), "images_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * quantiles[49], "p95_ms": 1000 * quantiles[94], "p99_ms": 1000 * quantiles[98],
            "mean_batch_size": statistics.fmean(batch_sizes) if batch_sizes else 0.0,
            "cores_used": cores_by_role(cpu_before, cpu_after, elapsed)}


def measure(model: str, bodies: list, settings: dict, levels: list, requests: int, max_seconds: float) -> list:
    rows = []
    for name, options in settings.items():
        server = Server("--model", model, *options)
        try:
            asyncio.run(_load(server, bodies, 8, 32, max_seconds))  # warm-up
            for concurrency in levels:
                row = asyncio.run(_load(server, bodies, concurrency, requests, max_seconds))
                rows.append({"server": name, **row})
                print(f"  {name}, concurrency {concurrency}: {row['images_per_s']:.1f} images/s", flush=True)
        finally:
            server.stop()
    return rows


def table(result: dict) -> str:
    stream = result["predict_stream_images_per_s"]
    rows = [[r["server"], r["concurrency"], f"{r['answered']}/{r['requests']}", f"{r['images_per_s']:.1f}",
             f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['mean_batch_size']:.1f}",
             f"{100 * r['images_per_s'] / stream:.0f} %",
             " / ".join(f"{cores:.2f}" for cores in r["cores_used"].values())] for r in result["rows"]]
    roles = " / ".join(result["rows"][0]["cores_used"]) if result["rows"] else ""
    machine = result["machine"]
    return (f"`{result['model']}` on {machine['cpu']} ({machine['cores']} cores, "
            f"{'with' if machine['vnni'] else 'without'} VNNI); `predict_stream` on the same images in the "
            f"same run: {stream:.1f} images/s.\n\n"
            + markdown_table(["server", "concurrency", "answered", "images/s", "p50 ms", "p95 ms", "p99 ms",
                              "mean batch", "of predict_stream", f"cores used: {roles}"], rows))


def write_into(doc: Path, text: str) -> None:
    """`text` between the two markers of `doc`."""
    before, found, rest = doc.read_text().partition(MARKER)
    _, found_end, after = rest.partition(MARKER)
    if not (found and found_end):
        raise SystemExit(f"{doc} has no pair of {MARKER} markers")
    doc.write_text(f"{before}{MARKER}\n{text}\n{MARKER}{after}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--images", type=int, default=64, help="photo-like JPEGs made (default 64)")
    parser.add_argument("--requests", type=int, default=320, help="requests per concurrency level (default 320)")
    parser.add_argument("--concurrency", default="1,8,32", help="levels, comma-separated (default 1,8,32)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="at most this long per level")
    parser.add_argument("--json", metavar="FILE", help="write the results here")
    parser.add_argument("--doc", metavar="FILE", help="put the table between this file's serve_load markers")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        bodies = [path.read_bytes() for path in photo_like_jpegs(Path(folder), args.images)]
    print(f"predict_stream on {args.requests} images...", flush=True)
    stream = stream_rate(args.model, bodies, args.requests)
    settings = {"batching (default)": [], "--max-batch-size 1": ["--max-batch-size", "1"]}
    rows = measure(args.model, bodies, settings, levels, args.requests, args.max_seconds)
    result = {"model": args.model, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "vnni": cpu_has_vnni()},
              "predict_stream_images_per_s": stream, "rows": rows}
    text = table(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    if args.doc:
        write_into(Path(args.doc), text)
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
