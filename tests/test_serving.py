"""`onnx-mobilenets serve` for real: the Ray Serve application in a process of its own on 127.0.0.1,
asked over HTTP as applications would, under concurrency, bad input, two replicas on a two-node
cluster, and SIGTERM."""

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from bench.measure import photo_like_jpegs
from conftest import ctrl_c_works, require_module
from PIL import Image
from serve_load import Server

from onnx_mobilenets import OnnxMobileNet
from onnx_mobilenets.errors import InvalidImageError

pytestmark = pytest.mark.xdist_group("ray")  # one Ray at a time on two cores
RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module", autouse=True)
def serve_installed():
    require_module("ray.serve", "Ray Serve (the [serve] extra)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(url: str, body: bytes = None, headers: dict = None, timeout: float = 120):
    """(status, JSON answer, headers) of one request; POST when there is a body."""
    method = "POST" if body is not None else "GET"
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), response.headers  # case-insensitive
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def descendants(pid: int) -> set:
    """Every process below `pid` now (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids) -> list:
    living = []
    for pid in pids:
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                living.append(pid)
    return living


@pytest.fixture(scope="module")
def local_model():
    return OnnxMobileNet()  # the built-in model, as the server runs it


@pytest.fixture(scope="module")
def photos(fixtures, tmp_path_factory) -> list:
    """The fixture photographs and 18 photo-like JPEGs (the load tool's own), as bytes."""
    made = photo_like_jpegs(tmp_path_factory.mktemp("photos"), 18)
    return [p.read_bytes() for p in [*sorted((fixtures / "images").glob("*.jpg")), *made]]


def as_json(predictions) -> list:
    return [p._asdict() for p in predictions]


def same_predictions(answer: list, expected: list) -> bool:
    return ([(p["class_index"], p["synset"], p["label"]) for p in answer]
            == [(p["class_index"], p["synset"], p["label"]) for p in expected]
            and np.allclose([p["probability"] for p in answer], [p["probability"] for p in expected], atol=1e-6))


def _python_error(model, data) -> str:
    with pytest.raises((InvalidImageError, ValueError)) as caught:
        model.predict(data)
    return str(caught.value)


def _bomb() -> bytes:
    """A small PNG of more pixels than Pillow's limit (a decompression bomb)."""
    buffer = io.BytesIO()
    Image.new("1", (Image.MAX_IMAGE_PIXELS // 9000 + 10, 9000)).save(buffer, "PNG")
    return buffer.getvalue()


def doc_curl_lines() -> list:
    """The `curl` lines of docs/serving.md's API section, as a reader would paste them."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "serving.md").read_text()
    section = text.split("## The API", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("curl ")]


class TestOneServer:
    """The tests that share one server. It stops when they end, before the tests that start a Ray
    of their own: one Ray at a time on two cores."""

    @pytest.fixture(scope="class")
    def server(self):
        running = Server("--max-body-mb", "2")
        yield running
        running.stop()

    def test_200_requests_from_16_clients_get_predicts_answers_in_batches(self, server, local_model, photos):
        expected = [as_json(local_model.predict(data, top=3)) for data in photos]

        def one(i):
            return i % len(photos), ask(f"{server.base}/v1/classify?top=3", photos[i % len(photos)])

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(200)))
        batch_sizes = []
        for index, (status, answer, headers) in answers:
            assert status == 200, answer
            assert answer["model"] == "mobilenet_v2_1.0_224_quant" and answer["package_version"]
            assert answer["preprocessing"] == "default"
            assert same_predictions(answer["predictions"], expected[index]), (index, answer, expected[index])
            assert headers["X-Onnx-Mobilenets-Model"] == "mobilenet_v2_1.0_224_quant"
            batch_sizes.append(int(headers["X-Batch-Size"]))
        assert max(batch_sizes) > 1, batch_sizes  # requests in flight together ran as one batch
        assert max(batch_sizes) <= 32

    def test_several_images_in_one_multipart_request(self, server, local_model, photos):
        boundary = "x-onnx-mobilenets-test"
        parts = [("elephant.jpg", photos[1]), ("notes.txt", b"not an image"), ("photo.jpg", photos[3])]
        body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
                        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                        for name, data in parts) + f"--{boundary}--\r\n".encode()
        status, answer, _ = ask(f"{server.base}/v1/classify?top=2", body,
                                {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 200, answer
        results = answer["results"]
        assert [r["filename"] for r in results] == ["elephant.jpg", "notes.txt", "photo.jpg"]
        assert same_predictions(results[0]["predictions"], as_json(local_model.predict(photos[1], top=2)))
        assert results[1]["error"] == _python_error(local_model, b"not an image")
        assert same_predictions(results[2]["predictions"], as_json(local_model.predict(photos[3], top=2)))

    def test_each_bad_input_gets_its_4xx_and_the_python_message_and_the_next_request_is_served(
            self, server, local_model, photos):
        truncated = photos[0][: len(photos[0]) // 3]
        cases = [
            ("not an image", f"{server.base}/v1/classify", b"GIF89a? no, just text", 400),
            ("truncated JPEG", f"{server.base}/v1/classify", truncated, 400),
            ("empty body", f"{server.base}/v1/classify", b"", 400),
            ("decompression bomb", f"{server.base}/v1/classify", _bomb(), 400),
        ]
        for what, url, body, code in cases:
            status, answer, headers = ask(url, body)
            assert (status, answer["error"]) == (code, _python_error(local_model, body)), what
            assert answer["model"] == "mobilenet_v2_1.0_224_quant" and headers["X-Onnx-Mobilenets-Version"]
            status, answer, _ = ask(f"{server.base}/v1/classify", photos[1])
            assert status == 200 and answer["predictions"][0]["label"] == "African elephant", what
        for top in ("0", "1001", "five", "2.5"):
            status, answer, _ = ask(f"{server.base}/v1/classify?top={top}", photos[1])
            assert status == 400 and answer["error"].startswith("top must be an integer from 1 to 1000, got"), top
        too_large = photos[1] + bytes(2 * 2**20)  # over the server's --max-body-mb 2
        status, answer, _ = ask(f"{server.base}/v1/classify", too_large)
        assert status == 413 and "over the limit of 2097152 bytes" in answer["error"]
        status, answer, _ = ask(f"{server.base}/v1/classify", photos[1])
        assert status == 200

    def test_one_bad_image_in_a_full_batch_fails_alone(self, server, photos):
        bodies = [photos[i % len(photos)] for i in range(31)]
        bodies.insert(17, photos[2][:400])  # a truncated JPEG among them
        barrier = threading.Barrier(len(bodies))

        def one(body):
            barrier.wait()  # all at once, so they share batches
            return ask(f"{server.base}/v1/classify", body)

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(one, bodies))
        statuses = [status for status, _, _ in answers]
        assert statuses == [200] * 17 + [400] + [200] * 14
        assert max(int(h["X-Batch-Size"]) for s, _, h in answers if s == 200) > 1

    def test_model_description_health_and_openapi(self, server, local_model):
        status, about, _ = ask(f"{server.base}/v1/model")
        assert status == 200
        assert about["config"]["variant"] == "mobilenet_v2_1.0_224_quant" and about["config"]["precision"] == "uint8"
        contract = about["config"]["artifacts"]["mobilenet_v2_1.0_224_quant.onnx"]
        assert contract["input"]["shape"] == ["batch", 224, 224, 3] and contract["input"]["dtype"] == "uint8"
        assert about["labels"] == [list(pair) for pair in local_model.labels]
        assert ask(f"{server.base}/healthz")[:2] == (200, {"model": "mobilenet_v2_1.0_224_quant",
                                                           "package_version": about["package_version"],
                                                           "status": "ok"})
        status, schema, _ = ask(f"{server.base}/openapi.json")
        assert status == 200 and {"/v1/classify", "/v1/model", "/healthz"} <= set(schema["paths"])

    def test_the_docs_curl_lines_get_the_answers_they_promise(self, server, fixtures, tmp_path):
        lines = doc_curl_lines()
        assert len(lines) == 5, lines
        for name in ("elephant.jpg", "cheetah.jpg"):
            shutil.copy(fixtures / "images" / name, tmp_path / name)
        answers = []
        for line in lines:
            command = shlex.split(line.replace("localhost:8000", f"127.0.0.1:{server.port}"))
            done = subprocess.run([shutil.which("curl") or pytest.fail("curl is not installed"), "--fail-with-body",
                                   "--silent", "--show-error", *command[1:]], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            answers.append(json.loads(done.stdout))
        elephant, cheetah, both, about, health = answers
        assert elephant["predictions"][0]["label"] == "African elephant" and len(elephant["predictions"]) == 5
        assert [p["label"] for p in cheetah["predictions"]][:1] == ["cheetah"] and len(cheetah["predictions"]) == 3
        assert [(r["filename"], [p["label"] for p in r["predictions"]]) for r in both["results"]] == [
            ("elephant.jpg", ["African elephant"]), ("cheetah.jpg", ["cheetah"])]
        assert about["config"]["variant"] == "mobilenet_v2_1.0_224_quant"
        assert health["status"] == "ok"


def test_sigterm_answers_the_requests_in_flight_then_stops_every_ray_process(photos):
    running = Server("--batch-wait-ms", "2000", "--max-batch-size", "64")
    started_below = descendants(running.process.pid)
    assert any("raylet" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace") for p in started_below)
    with ThreadPoolExecutor(12) as pool:
        in_flight = [pool.submit(ask, f"{running.base}/v1/classify", photos[i % len(photos)]) for i in range(12)]
        # Stopped in the middle of the 2 s batch window: a second for the requests to reach the server
        # (0.1 s was not always enough with every core busy: one came after the stop and got a 404).
        time.sleep(1.0)
        stopping = time.time()
        running.process.send_signal(signal.SIGTERM)
        answers = [future.result() for future in in_flight]
    assert [status for status, _, _ in answers] == [200] * 12
    assert running.stop(timeout=60) == 0
    assert time.time() - stopping < 30
    time.sleep(1)
    assert alive(started_below) == []  # no raylet, GCS, worker or proxy left behind


@pytest.fixture()
def two_node_cluster(tmp_path):
    """A head and a second node, each with one CPU, started by `ray start --block` on this machine and
    stopped the way they were started (not `ray stop`, which would stop every Ray here)."""
    ray_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    port = free_port()
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    nodes = []
    try:
        for name, arguments in (("head", ["--head", f"--port={port}", "--include-dashboard=false",
                                          f"--temp-dir={ray_dir}"]),
                                ("node", [f"--address=127.0.0.1:{port}"])):
            log = tmp_path / f"{name}.log"
            with log.open("w") as out:  # a file, not a pipe that would fill up while the node runs
                nodes.append(subprocess.Popen([RAY, "start", *arguments, *common], stdout=out,
                                              stderr=subprocess.STDOUT, env=env, preexec_fn=ctrl_c_works))
            _wait_until_started(nodes[-1], log)
        yield f"127.0.0.1:{port}", env
    finally:
        for node in reversed(nodes):  # --block: each stops what it started, in a second or two
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=120)
            except subprocess.TimeoutExpired:  # the next one is still stopped
                node.kill()
        shutil.rmtree(ray_dir, ignore_errors=True)


def _wait_until_started(node: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while "Ray runtime started" not in log.read_text():
        assert node.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_two_replicas_on_a_two_node_cluster_both_answer(two_node_cluster, photos):
    address, env = two_node_cluster
    # Serve keeps requests on the proxy's node until its replica holds 2 x max-batch-size of them:
    # 32 clients and batches of 4 are more than one replica takes.
    running = Server("--address", address, "--replicas", "2", "--max-batch-size", "4", env=env)
    try:
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda i: ask(f"{running.base}/v1/classify", photos[i % len(photos)]), range(96)))
        assert [status for status, _, _ in answers] == [200] * 96
        assert len({headers["X-Replica"] for _, _, headers in answers}) == 2
    finally:
        assert running.stop(timeout=90) == 0


LOAD_TOOL = Path(__file__).resolve().parents[1] / "tools" / "serve_load.py"


def test_the_load_tool_measures_both_servers_and_writes_the_docs_table(tmp_path):
    doc = tmp_path / "serving.md"
    doc.write_text("before\n<!-- serve_load -->\nold table\n<!-- serve_load -->\nafter\n")
    done = subprocess.run([sys.executable, str(LOAD_TOOL), "--images", "4", "--requests", "12", "--concurrency", "1,4",
                           "--json", str(tmp_path / "load.json"), "--doc", str(doc)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads((tmp_path / "load.json").read_text())
    assert result["predict_stream_images_per_s"] > 0 and result["machine"]["cores"] == os.cpu_count()
    assert [(r["server"], r["concurrency"]) for r in result["rows"]] == [
        ("batching (default)", 1), ("batching (default)", 4), ("--max-batch-size 1", 1), ("--max-batch-size 1", 4)]
    for row in result["rows"]:
        assert (row["answered"], row["failed"]) == (12, 0) and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["cores_used"]["replica"] > 0  # psutil found the replica's process
    assert all(r["mean_batch_size"] == 1 for r in result["rows"] if r["server"] == "--max-batch-size 1")
    text = doc.read_text()
    assert text.startswith("before\n<!-- serve_load -->\n`") and text.endswith("\n<!-- serve_load -->\nafter\n")
    assert "old table" not in text and "| --max-batch-size 1 | 4 | 12/12 |" in text


def test_the_load_tool_compares_each_process_with_itself():
    """Cores by role between two snapshots: a process that ended in between (a stopped server's
    replica still going away) takes nothing away, and a new one, even on a reused pid, counts whole."""
    import serve_load

    before = {(11, 1.0): ("replica", 5.0), (12, 1.0): ("replica", 9.0), (13, 1.0): ("HTTP proxy", 4.0)}
    after = {(11, 1.0): ("replica", 6.0), (13, 1.0): ("HTTP proxy", 4.5), (12, 7.0): ("replica", 0.5)}
    cores = serve_load.cores_by_role(before, after, elapsed=2.0)
    assert cores == {"load client": 0.0, "replica": (1.0 + 0.5) / 2, "HTTP proxy": 0.25, "Ray's own": 0.0}


def test_the_docs_load_table_is_the_one_its_json_gives():
    import serve_load

    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "docs" / "serving-results.json").read_text())
    table = (root / "docs" / "serving.md").read_text().split(serve_load.MARKER)[1].strip()
    assert table == serve_load.table(result)
    assert {r["concurrency"] for r in result["rows"]} == {1, 8, 32}
    assert all(r["failed"] == 0 and r["answered"] == r["requests"] for r in result["rows"])


@pytest.mark.parametrize("option, value, message", [
    ("--batch-wait-ms", "-1", "must be a number of milliseconds from 0 to 10000, got '-1'"),
    ("--batch-wait-ms", "soon", "must be a number of milliseconds from 0 to 10000, got 'soon'"),
    ("--max-body-mb", "0", "must be a size in MB above 0 and at most 4096, got '0'"),
    ("--max-body-mb", "nan", "must be a size in MB above 0 and at most 4096, got 'nan'"),
    ("--max-batch-size", "0", "must be a whole number of at least 1, got '0'"),
    ("--replicas", "two", "must be a whole number of at least 1, got 'two'"),
])
def test_bad_serve_options_are_usage_errors_before_anything_starts(option, value, message):
    done = subprocess.run([sys.executable, "-m", "onnx_mobilenets.cli", "serve", option, value],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"argument {option}: {message}" in done.stderr, done.stderr
