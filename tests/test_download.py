"""The downloader against a local HTTP server on 127.0.0.1, and safe extraction."""

import hashlib
import io
import logging
import tarfile

import pytest
from flaky_server import serving

from onnx_mobilenets import ChecksumError, DownloadError, OfflineError, UnsafeArchiveError, download
from onnx_mobilenets.download import cache_dir, fetch, safe_extract

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    """Retries without the pauses between them (what they are for is a real server's recovery)."""
    monkeypatch.setattr(download, "RETRY_DELAYS", (0, 0, 0, 0))


@pytest.fixture
def server():
    names = ("good.tgz", "unverified.tgz", "local.tgz", "absent.tgz", "bad.tgz")
    with serving({name: PAYLOAD for name in names}) as httpd:
        yield httpd


def _cache_files():
    root = cache_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_good_file_is_cached_and_reused_without_a_new_request(server):
    path = fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD and path.parent == cache_dir() / "checkpoints"
    assert fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA) == path
    assert server.requests == [("good.tgz", None)]
    assert _cache_files() == ["checkpoints/good.tgz", "checkpoints/good.tgz.sha256"]


def test_checksum_mismatch_raises_and_caches_nothing(server):
    with pytest.raises(ChecksumError, match="expected 0000"):
        fetch(f"{server.base}/models/good.tgz", "0" * 64)
    assert _cache_files() == []


def test_transient_failures_are_retried_and_a_dropped_file_resumes(server):
    """A 500, then a connection dropped after a third of the file: the download goes on from the
    byte where it stopped (HTTP Range), and the file is whole."""
    server.faults["good.tgz"] = ["500", "drop"]
    path = fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("good.tgz", None), ("good.tgz", None), ("good.tgz", f"bytes={len(PAYLOAD) // 3}-")]
    assert _cache_files() == ["checkpoints/good.tgz", "checkpoints/good.tgz.sha256"]


def test_a_server_without_ranges_is_read_again_from_the_start(tmp_path):
    with serving({"good.tgz": PAYLOAD}, {"good.tgz": ["drop"]}, ranges=False) as server:
        assert fetch(f"{server.base}/good.tgz", PAYLOAD_SHA).read_bytes() == PAYLOAD
        assert [asked for _, asked in server.requests] == [None, f"bytes={len(PAYLOAD) // 3}-"]  # asked, not given


def test_failures_that_persist_or_are_final_leave_nothing(server):
    server.faults["good.tgz"] = ["drop"] * 5  # every attempt: 1 + len(RETRY_DELAYS)
    with pytest.raises(DownloadError, match="failed after 5 attempts: the connection closed after"):
        fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA)
    assert _cache_files() == []
    with pytest.raises(DownloadError, match="HTTP 404"):  # final: not retried
        fetch(f"{server.base}/models/missing.tgz")
    assert [name for name, _ in server.requests].count("missing.tgz") == 1
    assert _cache_files() == []


def test_unreachable_server_is_a_download_error(server):
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(DownloadError, match="failed"):
        fetch(f"http://127.0.0.1:{port}/models/good.tgz", PAYLOAD_SHA)
    assert _cache_files() == []


def test_offline_mode_raises_a_clear_error(server, monkeypatch):
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    with pytest.raises(OfflineError, match="ONNX_MOBILENETS_OFFLINE=1 forbids downloading"):
        fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA)
    assert server.requests == []
    monkeypatch.delenv("ONNX_MOBILENETS_OFFLINE")
    fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA)
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    assert fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA).is_file()  # cached files still work


def test_offline_allows_a_local_mirror_folder_not_a_url(server, tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "local.tgz").write_bytes(PAYLOAD)
    monkeypatch.setenv("ONNX_MOBILENETS_OFFLINE", "1")
    assert fetch("https://official.invalid/x/local.tgz", PAYLOAD_SHA, mirror=str(folder)).read_bytes() == PAYLOAD
    with pytest.raises(OfflineError, match=r"forbids downloading it from http://127\.0\.0\.1:\d+/m/unverified\.tgz"):
        fetch("https://official.invalid/x/unverified.tgz", mirror=f"{server.base}/m")
    assert server.requests == []


def test_unknown_checksum_is_recorded_and_reported(server, caplog):
    with caplog.at_level(logging.WARNING, logger="onnx_mobilenets.download"):
        path = fetch(f"{server.base}/models/unverified.tgz", None)
    assert "could not be verified" in caplog.text
    assert (path.parent / "unverified.tgz.sha256").read_text().strip() == PAYLOAD_SHA
    # The recorded hash still catches a corrupted cached copy, which is fetched again.
    path.write_bytes(b"corrupted")
    assert fetch(f"{server.base}/models/unverified.tgz", None).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_corrupted_cached_copy_is_replaced(server):
    path = fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA)
    path.write_bytes(PAYLOAD[:-1] + b"x")
    assert fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_mirror_base_url_and_local_folder(server, tmp_path, monkeypatch):
    path = fetch("https://official.invalid/models/good.tgz", PAYLOAD_SHA, mirror=f"{server.base}/mirror/")
    assert server.requests == [("good.tgz", None)] and path.read_bytes() == PAYLOAD
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "local.tgz").write_bytes(PAYLOAD)
    monkeypatch.setenv("ONNX_MOBILENETS_MIRROR", str(folder))
    assert fetch("https://official.invalid/x/local.tgz", PAYLOAD_SHA).read_bytes() == PAYLOAD
    with pytest.raises(FileNotFoundError, match="not in the mirror folder"):
        fetch("https://official.invalid/x/absent.tgz", PAYLOAD_SHA)
    (folder / "bad.tgz").write_bytes(b"not it")
    with pytest.raises(ChecksumError):
        fetch("https://official.invalid/x/bad.tgz", PAYLOAD_SHA)
    assert sorted(_cache_files()) == ["checkpoints/good.tgz", "checkpoints/good.tgz.sha256",
                                      "checkpoints/local.tgz", "checkpoints/local.tgz.sha256"]


def test_progress_bar_is_drawn_when_asked(server, capsys):
    fetch(f"{server.base}/models/good.tgz", PAYLOAD_SHA, progress=True)
    assert "good.tgz: 100%" in capsys.readouterr().err  # tqdm's bar


def _tarball(path, build):
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def _add_file(tar, name, data=b"data"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar, name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def _add_device(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    tar.addfile(info)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda t: (_add_file(t, "./ok.txt"), _add_file(t, "../evil.txt")), "outside the extraction folder"),
        (lambda t: _add_file(t, "/etc/evil.txt"), "outside the extraction folder"),
        (lambda t: _add_file(t, "a/../../evil.txt"), "outside the extraction folder"),
        (lambda t: _add_link(t, "link", "/etc/passwd"), "is a link"),
        (lambda t: _add_link(t, "hard", "ok.txt", tarfile.LNKTYPE), "is a link"),
        (lambda t: _add_device(t, "dev"), "device"),
    ],
)
def test_unsafe_archives_are_rejected_before_writing(tmp_path, build, message):
    archive = _tarball(tmp_path / "evil.tgz", build)
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tgz"]


def test_safe_extract_of_a_good_archive(tmp_path):
    archive = _tarball(
        tmp_path / "good.tgz", lambda t: (_add_file(t, "./m.ckpt.index", b"i"), _add_file(t, "./sub/x", b"x"))
    )
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "m.ckpt.index").read_bytes() == b"i" and (out / "sub" / "x").read_bytes() == b"x"
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    with pytest.raises(UnsafeArchiveError, match="not a readable tar archive"):
        safe_extract(tmp_path / "junk.tgz", tmp_path / "junk")
