"""Many images: OnnxMobileNet.predict_stream (order, errors, bounded memory), every corrupt image an
InvalidImageError (seeded fuzzing), `predict` into CSV/JSON Lines/Parquet with --resume after
Ctrl-C or a kill, bad input, and `evaluate` on a labelled folder."""

import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import IMAGES, ctrl_c_works
from PIL import Image

from onnx_mobilenets import InvalidImageError, OnnxMobileNet
from onnx_mobilenets.cli import main as cli
from onnx_mobilenets.cli import outputs as batch_module
from onnx_mobilenets.parity import parity_pixels

V1 = "mobilenet_v1_0.25_128"


@pytest.fixture(scope="module")
def v1_path(fixture_artifacts):
    out, _ = fixture_artifacts
    return out / f"{V1}.onnx"


@pytest.fixture(scope="module")
def model(v1_path):
    return OnnxMobileNet(v1_path, providers="cpu", batch_size=4)


def _photos(folder: Path, count: int, seed: int = 0) -> list:
    """`count` small photo-like JPEGs (smooth colour fields with texture) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = parity_pixels(96, count=count, seed=seed)
    paths = []
    for i, image in enumerate(pixels):
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(image).save(path, quality=85)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def photos_to_stop(tmp_path_factory) -> list:
    """150 paths (symbolic links, to spare the disk) for a run to be stopped midway: 60 to one
    2000x1500 photo-like JPEG, each about 25 ms to decode and preprocess, so a run over them one at
    a time lasts seconds, long enough to be stopped midway; then 90 to a 200x150 one, so the run
    that completes it is short."""
    folder = tmp_path_factory.mktemp("photos_to_stop")
    small = Image.fromarray(parity_pixels(256, count=1, seed=3)[0]).resize((2000, 1500), Image.BILINEAR)
    noise = np.random.default_rng(0).integers(-20, 20, (1500, 2000, 3))
    large = Image.fromarray(np.clip(np.asarray(small, int) + noise, 0, 255).astype(np.uint8))
    originals = {"large": folder / "large.jpg", "small": folder / "small.jpg"}
    large.save(originals["large"], quality=90)
    large.resize((200, 150), Image.BILINEAR).save(originals["small"], quality=90)
    paths = [folder / f"img_{i:04d}.jpg" for i in range(150)]
    for i, path in enumerate(paths):
        path.symlink_to(originals["large" if i < 60 else "small"])
    return paths


def test_stream_keeps_order_reports_errors_and_matches_predict(model, fixtures, tmp_path):
    good = [fixtures / "images" / n for n in IMAGES]
    junk = tmp_path / "junk.jpg"
    junk.write_text("not an image")
    sources = [good[0], tmp_path / "missing.jpg", good[1], junk, good[1].read_bytes(), Image.open(good[0]),
               good[0], good[1], str(good[0]), np.asarray(Image.open(good[1]).convert("RGB"))]
    results = list(model.predict_stream(sources, top=3, workers=3, batch_size=3))
    assert [r.source is s for r, s in zip(results, sources)] == [True] * len(sources)
    assert [r.error is None for r in results] == [True, False, True, False, True, True, True, True, True, True]
    assert results[1].error.startswith("FileNotFoundError") and "missing.jpg" in results[1].error
    assert results[3].error.startswith("InvalidImageError") and results[3].predictions is None
    for result in results:
        if result.error is None:
            expected = model.predict(result.source, top=3)
            assert [p.class_index for p in result.predictions] == [p.class_index for p in expected]
            np.testing.assert_allclose([p.probability for p in result.predictions],
                                       [p.probability for p in expected], atol=1e-6)
    assert list(model.predict_stream([])) == []
    with pytest.raises(ValueError, match="top"):
        list(model.predict_stream(good, top=0))
    with pytest.raises(ValueError, match="workers"):
        list(model.predict_stream(good, workers=0))


def test_stream_reads_its_sources_lazily_and_boundedly(model, fixtures):
    """A generator of sources is consumed as the stream goes: never more than `prefetch` ahead."""
    taken = []

    def sources():
        for i in range(10_000):
            taken.append(i)
            yield fixtures / "images" / IMAGES[i % 2]

    stream = model.predict_stream(sources(), workers=2, batch_size=4, prefetch=10)
    for count, result in enumerate(stream, 1):
        assert result.error is None
        assert len(taken) <= count + 10 + 4, (count, len(taken))
        if count == 50:
            break
    stream.close()
    assert len(taken) < 100


def test_fuzzed_images_are_predicted_or_refused_clearly(model, fixtures):
    """Seeded corruptions of JPEG, PNG, BMP, GIF, WebP and TIFF files (bytes flipped, truncated,
    inserted, header fields overwritten): each predicts or raises InvalidImageError, none takes
    more than 2 s, and the instance keeps working."""
    rng = np.random.default_rng(2026)
    base = np.asarray(Image.open(fixtures / "images" / "cheetah.jpg").convert("RGB").resize((64, 48)))
    originals = {}
    for fmt, options in {
        "JPEG": {},
        "PNG": {},
        "BMP": {},
        "GIF": {},
        "WEBP": {},
        "TIFF": {"compression": "tiff_lzw"},
    }.items():
        buffer = io.BytesIO()
        Image.fromarray(base).save(buffer, fmt, **options)
        originals[fmt] = buffer.getvalue()
    reference = model.predict_proba(fixtures / "images" / "cheetah.jpg")
    outcomes = {"predicted": 0, "refused": 0}
    slowest = 0.0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corrupt EXIF blocks it meets
        for case in range(3000):
            fmt = list(originals)[case % len(originals)]
            data = bytearray(originals[fmt])
            kind = case // len(originals) % 4
            if kind == 0:
                for _ in range(int(rng.integers(1, 10))):
                    data[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                data = data[:int(rng.integers(1, len(data)))]
            elif kind == 2:
                at = int(rng.integers(0, len(data)))
                data[at:at] = rng.integers(0, 256, int(rng.integers(1, 20))).astype(np.uint8).tobytes()
            else:
                at, n = int(rng.integers(0, min(64, len(data)))), int(rng.integers(1, 8))
                data[at:at + n] = rng.integers(0, 256, n).astype(np.uint8).tobytes()
            started = time.perf_counter()
            try:
                model.predict_proba(bytes(data))
                outcomes["predicted"] += 1
            except InvalidImageError:
                outcomes["refused"] += 1
            slowest = max(slowest, time.perf_counter() - started)
    assert outcomes["predicted"] > 300 and outcomes["refused"] > 300, outcomes
    assert slowest < 60, slowest  # no hang (a safety limit, not a speed target: that is the benchmark's)
    np.testing.assert_array_equal(model.predict_proba(fixtures / "images" / "cheetah.jpg"), reference)


def test_permission_denied_is_an_error_row(model, fixtures, monkeypatch):
    """An unreadable file (simulated: the tests may run as root, who reads anything) is a row."""
    from onnx_mobilenets.runtime import images

    real_open = open
    locked = str(fixtures / "images" / "elephant.jpg")

    def guarded_open(path, *args, **kwargs):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", guarded_open, raising=False)
    results = list(model.predict_stream([locked, fixtures / "images" / "cheetah.jpg"]))
    assert results[0].error.startswith("PermissionError") and "Permission denied" in results[0].error
    assert results[1].error is None and results[1].predictions[0].label == "cheetah"


def _read_rows(path: Path, fmt: str) -> list:
    if fmt == "csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return pq.read_table(path).to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_predict_to_a_file_with_every_source_kind(v1_path, fixtures, tmp_path, fmt, capsys):
    folder = tmp_path / "photos"
    _photos(folder / "a", 3)
    _photos(folder / "a" / "deeper", 2, seed=1)
    (folder / "a" / "notes.txt").write_text("not an image, not listed")
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two more\n{fixtures / 'images' / 'cheetah.jpg'}\n\n{tmp_path / 'gone.jpg'}\n")
    output = tmp_path / f"out.{fmt}"
    code = cli(["predict", str(folder / "a"), f"@{listing}", "--recursive", "--output", str(output),
                "--model", str(v1_path), "--top", "3", "--batch-size", "4"])
    assert code == 1  # two images could not be classified
    rows = _read_rows(output, fmt)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 3 + 2 + 1 + 2  # photos, deeper photos, broken, listed two
    assert str(folder / "a" / "notes.txt") not in paths
    by_path = {r["path"]: r for r in rows}
    assert by_path[str(folder / "a" / "broken.jpg")]["error"].startswith("InvalidImageError")
    assert by_path[str(tmp_path / "gone.jpg")]["error"].startswith("FileNotFoundError")
    cheetah = by_path[str(fixtures / "images" / "cheetah.jpg")]
    labels = cheetah["labels"].split("|") if fmt == "csv" else cheetah["labels"]
    assert labels[0] == "cheetah" and len(labels) == 3 and not cheetah["error"]
    assert capsys.readouterr().err == ""  # not a terminal: no bar, no summary


def _on_a_terminal(arguments: list, size=None) -> tuple:
    """`onnx-mobilenets ARGUMENTS` with a pseudo-terminal for stdout and stderr, as a user at a
    terminal runs it, `size` (rows, columns) or none reported: (exit status, what the terminal showed)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    terminal, child_side = pty.openpty()
    if size:
        fcntl.ioctl(child_side, termios.TIOCSWINSZ, struct.pack("HHHH", *size, 0, 0))
    run = subprocess.Popen([sys.executable, "-m", "onnx_mobilenets.cli", *arguments], stdin=subprocess.DEVNULL,
                           stdout=child_side, stderr=child_side)
    os.close(child_side)
    shown = []
    while True:
        try:
            data = os.read(terminal, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        shown.append(data)
    os.close(terminal)
    return run.wait(timeout=600), b"".join(shown).decode(errors="replace")


@pytest.mark.parametrize("size", [None, (30, 100)], ids=["unsized", "100-columns"])
def test_a_terminal_gets_a_progress_bar_and_a_summary_unless_quiet(v1_path, tmp_path, size):
    photos = _photos(tmp_path / "photos", 40)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    arguments = ["predict", str(tmp_path / "photos"), "--model", str(v1_path), "--batch-size", "8"]
    code, screen = _on_a_terminal([*arguments, "--output", str(tmp_path / "a.csv")], size)
    assert code == 1, screen  # one image could not be classified
    assert "41/41" in screen and "img/s" in screen and "errors=1" in screen, screen  # tqdm's bar
    assert "41 images (1 failed) in " in screen and f"-> {tmp_path / 'a.csv'}" in screen, screen
    code, screen = _on_a_terminal([*arguments, "--output", str(tmp_path / "b.csv"), "--quiet"], size)
    assert code == 1 and screen.strip() == "", screen
    assert len(_read_rows(tmp_path / "b.csv", "csv")) == len(photos) + 1


def test_format_names_the_output_format_and_workers_keep_the_order(v1_path, tmp_path, capsys):
    """--format overrides the file's suffix; any number of decoding threads gives the same rows in
    the same order; a number of threads below 1 is a usage error."""
    _photos(tmp_path / "photos", 12)
    common = ["predict", str(tmp_path / "photos"), "--model", str(v1_path), "--batch-size", "5"]
    assert cli([*common, "--output", str(tmp_path / "rows.txt"), "--format", "jsonl", "--workers", "1"]) == 0
    assert cli([*common, "--output", str(tmp_path / "rows.data"), "--format", "csv", "--workers", "3"]) == 0
    as_jsonl = [json.loads(line) for line in (tmp_path / "rows.txt").read_text().splitlines()]
    as_csv = list(csv.DictReader(io.StringIO((tmp_path / "rows.data").read_text())))
    assert len(as_jsonl) == 12 and [r["path"] for r in as_jsonl] == [r["path"] for r in as_csv]
    assert [r["labels"] for r in as_jsonl] == [r["labels"].split("|") for r in as_csv]
    for option, value in (("--workers", "0"), ("--batch-size", "-3"), ("--top", "1001"), ("--top", "five")):
        with pytest.raises(SystemExit) as usage:
            cli([*common, "--output", str(tmp_path / "c.csv"), option, value])
        assert usage.value.code == 2 and f"argument {option}: must be" in capsys.readouterr().err
    # A model that cannot be loaded leaves no empty output behind either.
    assert cli([*common, "--output", str(tmp_path / "c.csv"), "--model", str(tmp_path / "missing.onnx")]) == 2
    assert not (tmp_path / "c.csv").exists()


def _slow_run(v1_path, paths_file, output, extra=()):
    """`predict` in a subprocess, one image per batch so that it can be stopped midway."""
    return subprocess.Popen([sys.executable, "-m", "onnx_mobilenets.cli", "predict", f"@{paths_file}", "--output",
                             str(output), "--model", str(v1_path), "--batch-size", "1", "--workers", "1", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_works)


def _wait_for_rows(output: Path, fmt: str, at_least: int, timeout: float = 120):
    watched = output.with_name(output.name + batch_module.JOURNAL_SUFFIX) if fmt == "parquet" else output
    deadline = time.time() + timeout
    while time.time() < deadline:
        if watched.exists() and watched.read_text().count("\n") > at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"{watched} did not grow")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_stopped_run_leaves_a_readable_file_and_resume_completes_it(v1_path, photos_to_stop, tmp_path, fmt, stop):
    photos = photos_to_stop  # stopped after 20 rows, 40 large photos (a second) from the small ones
    paths_file = tmp_path / "paths.txt"
    paths_file.write_text("\n".join(map(str, photos)) + "\n")
    output = tmp_path / f"out.{fmt}"
    run = _slow_run(v1_path, paths_file, output)
    _wait_for_rows(output, fmt, 20)
    run.send_signal(stop)
    run.communicate(timeout=120)
    if stop in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or `kill`: the run ends as it does on Ctrl-C
        assert run.returncode == 130
        partial = _read_rows(output, fmt)  # readable, every row whole
        assert 0 < len(partial) < len(photos)
    else:  # killed outright: the rows written so far are there (Parquet: in its journal)
        journal = output.with_name(output.name + batch_module.JOURNAL_SUFFIX)
        text = (journal if fmt == "parquet" else output).read_text()
        assert 0 < text.count("\n") < len(photos) + 1
    # The resumed run in this process: what a new process would do, without starting one.
    assert cli(["predict", f"@{paths_file}", "--output", str(output), "--model", str(v1_path), "--resume"]) == 0
    rows = _read_rows(output, fmt)
    assert sorted(r["path"] for r in rows) == sorted(map(str, photos))  # every image exactly once
    assert all(not r["error"] for r in rows)
    assert not output.with_name(output.name + batch_module.JOURNAL_SUFFIX).exists()


def test_bad_input_gets_a_clear_message_and_loses_nothing(v1_path, tmp_path, capsys):
    photos = _photos(tmp_path / "photos", 3)
    (tmp_path / "empty").mkdir()
    model = ["--model", str(v1_path)]
    cases = [
        (["predict", str(tmp_path / "nowhere.jpg"), "--output", str(tmp_path / "o.csv")], "does not exist"),
        (["predict", str(tmp_path / "empty"), "--output", str(tmp_path / "o.csv")], "holds no images"),
        (["predict", str(photos[0]), "--output", str(tmp_path / "no" / "such" / "o.csv")], "does not exist"),
        (["predict", str(photos[0]), "--output", "/proc/o.csv"], "cannot write the output"),
        (["predict", str(photos[0]), "--output", str(tmp_path / "o.txt")], "cannot tell the output format"),
        (["predict", str(photos[0]), "--resume"], "--resume continues an --output file"),
    ]
    for arguments, message in cases:
        assert cli(arguments + model) == 2, arguments
        assert message in capsys.readouterr().err, arguments
    assert not (tmp_path / "o.csv").exists()

    # --resume refuses a file of another format, or a corrupt one, and leaves it as it was.
    jsonl = tmp_path / "done.jsonl"
    assert cli(["predict", str(photos[0]), "--output", str(jsonl)] + model) == 0
    as_csv = tmp_path / "actually_jsonl.csv"
    shutil.copy(jsonl, as_csv)
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text(jsonl.read_text() + "{half a row\n" + jsonl.read_text())
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_bytes(b"PAR1 not really")
    for path in (as_csv, corrupt, not_parquet):
        before = path.read_bytes()
        assert cli(["predict", str(tmp_path / "photos"), "--output", str(path), "--resume"] + model) == 2
        assert "left as it is" in capsys.readouterr().err
        assert path.read_bytes() == before


def test_ray_is_named_when_it_is_not_installed(v1_path, tmp_path):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from onnx_mobilenets.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    photo = _photos(tmp_path / "p", 1)[0]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "predict",
            str(photo),
            "--ray",
            "--output",
            str(tmp_path / "o"),
            "--model",
            str(v1_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "pip install 'onnx-mobilenets[ray]'" in result.stderr


def test_an_unreachable_ray_address_fails_fast_and_clearly(v1_path, tmp_path, capsys):
    photo = _photos(tmp_path / "p", 1)[0]
    started = time.perf_counter()
    assert cli(["predict", str(photo), "--ray", "127.0.0.1:9", "--output", str(tmp_path / "o"), "--model",
                str(v1_path)]) == 1
    assert "cannot reach a Ray cluster at 127.0.0.1:9" in capsys.readouterr().err
    assert time.perf_counter() - started < 120  # not Ray's minutes of retries (a safety limit, not a speed target)


def test_evaluate_on_a_labelled_folder(v1_path, fixtures, tmp_path, capsys):
    """Expected numbers by hand, from expected.json's top-5 for the V1 fixture: the cheetah photo's
    top-1 is cheetah (n02130308), the elephant photo's African elephant (n02504458) with tusker
    (n01871265) in its top-5; neither has tench (n01440764) in its top-5."""
    folder = tmp_path / "val"
    layout = {"n02130308": "cheetah.jpg", "n02504458": "elephant.jpg", "n01871265": "elephant.jpg",
              "n01440764": "cheetah.jpg"}
    for synset, image in layout.items():
        (folder / synset).mkdir(parents=True)
        shutil.copy(fixtures / "images" / image, folder / synset / f"{synset}_{image}")
    (folder / "n02130308" / "broken.JPEG").write_bytes(b"nothing")
    assert cli(["evaluate", str(folder), "--model", str(v1_path), "--json"]) == 1  # one image unreadable
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["classified"], report["errors"]) == (5, 4, 1)
    assert report["top1"] == pytest.approx(2 / 4) and report["top5"] == pytest.approx(3 / 4)
    assert report["published_top1"] == 41.5  # the catalogue's number for mobilenet_v1_0.25_128

    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\n"
                      "n02130308/n02130308_cheetah.jpg,n02130308\n"
                      "n02504458/n02504458_elephant.jpg,386\n"  # a class index works too
                      "n01871265/n01871265_elephant.jpg,n01871265\n")
    assert cli(["evaluate", str(folder), "--labels", str(labels), "--model", str(v1_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["top1"] == pytest.approx(2 / 3) and report["top5"] == pytest.approx(1.0)
    # The report for people, with the published numbers beside ours; --output keeps every image's row.
    rows = tmp_path / "rows.jsonl"
    assert cli(["evaluate", str(folder), "--labels", str(labels), "--model", str(v1_path), "--output", str(rows)]) == 0
    report = capsys.readouterr().out
    assert "mobilenet_v1_0.25_128: top-1 66.67 %, top-5 100.00 % on 3 images (0 could not be read)" in report, report
    assert "published for mobilenet_v1_0.25_128: top-1 41.5 %, top-5 66.3 %" in report, report
    written = {Path(r["path"]).name: r for r in map(json.loads, rows.read_text().splitlines())}
    assert set(written) == {"n02130308_cheetah.jpg", "n02504458_elephant.jpg", "n01871265_elephant.jpg"}
    assert written["n02130308_cheetah.jpg"]["labels"][0] == "cheetah" and not written["n02130308_cheetah.jpg"]["error"]
    (folder / "holiday").mkdir()
    assert cli(["evaluate", str(folder), "--model", str(v1_path)]) == 2
    assert "not ImageNet synsets" in capsys.readouterr().err
