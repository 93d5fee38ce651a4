"""A local stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for huggingface_hub pointed at
it with ``HF_ENDPOINT``: model repositories held in memory, served as the Hub serves them.

- ``HEAD``/``GET /{owner}/{repo}/resolve/{revision}/{file}``: the file, with ``X-Repo-Commit`` (the
  revision's commit), ``ETag`` and ``Content-Length`` (what huggingface_hub's `get_hf_file_metadata`
  reads), byte ranges honoured; a missing repository, revision or file is a 404 with the Hub's
  ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound);
- ``GET /api/models/{owner}/{repo}/revision/{revision}``: the repository's id, commit and files.

Faults ({file: ["500", ...]}) are used up one per request of that file, as in flaky_server.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import re
from pathlib import Path
from urllib.parse import unquote

from flaky_server import running

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self):  # noqa: N802 (http.server's naming)
        self._answer(body=False)

    def do_GET(self):  # noqa: N802
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        hub, path = self.server.hub, unquote(self.path.split("?", 1)[0])
        hub.requests.append((self.command, path))
        api = _API.match(path)
        if api:
            return self._api(hub, api["repo"], api["revision"] or "main", body)
        found = _RESOLVE.match(path)
        if not found:
            return self._error(404, "RepoNotFound", body)
        fault = hub.faults.get(found["file"], []).pop(0) if hub.faults.get(found["file"]) else None
        if fault == "500":
            return self._error(500, None, body)
        if found["repo"] not in hub.repos:
            return self._error(404, "RepoNotFound", body)
        commit = hub.commit_of(found["repo"], found["revision"])
        if commit is None:
            return self._error(404, "RevisionNotFound", body)
        files = hub.repos[found["repo"]][commit]
        if found["file"] not in files:
            return self._error(404, "EntryNotFound", body, {"X-Repo-Commit": commit})
        data = files[found["file"]]
        start = 0
        asked = re.match(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if asked and body:
            start = int(asked.group(1))
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start:])

    def _api(self, hub, repo: str, revision: str, body: bool) -> None:
        commit = hub.commit_of(repo, revision) if repo in hub.repos else None
        if commit is None:
            return self._error(404, "RepoNotFound" if repo not in hub.repos else "RevisionNotFound", body)
        answer = json.dumps({"id": repo, "modelId": repo, "sha": commit, "private": False,
                             "siblings": [{"rfilename": f} for f in sorted(hub.repos[repo][commit])]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if body:
            self.wfile.write(answer)

    def _error(self, status: int, code, body: bool, headers: dict = None) -> None:
        message = json.dumps({"error": code or "planted failure"}).encode()
        self.send_response(status)
        for key, value in {**({"X-Error-Code": code} if code else {}), **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        if body:
            self.wfile.write(message)

    def log_message(self, *args):
        pass


class Hub:
    """The repositories served: {repo id: {commit: {file: bytes}}}, with branches pointing at commits."""

    def __init__(self):
        self.repos, self.branches, self.faults, self.requests = {}, {}, {}, []

    def add_folder(self, repo: str, folder: Path, branch: str = "main") -> str:
        """Commit every file of `folder` as `repo` at `branch`; returns the commit id."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        commit = hashlib.sha1(repr(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                              .encode()).hexdigest()
        self.repos.setdefault(repo, {})[commit] = files
        self.branches[(repo, branch)] = commit
        return commit

    def commit_of(self, repo: str, revision: str):
        if revision in self.repos.get(repo, {}):
            return revision
        return self.branches.get((repo, revision))


@contextlib.contextmanager
def serving_hub():
    """A running stand-in; yields its `Hub` with ``.endpoint`` (for HF_ENDPOINT)."""
    with running(_Handler) as server:
        server.hub = hub = Hub()
        hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        yield hub
