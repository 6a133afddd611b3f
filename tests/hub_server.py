"""A local stand-in for the Hugging Face Hub's file API, for tests without the network (point ``HF_ENDPOINT`` at
``FakeHub.url``). It answers what ``huggingface_hub`` asks, the way the Hub answers:

  GET  /api/models/{repo}[/revision/{rev}]   {"id", "sha", "siblings": [{"rfilename"}], "gated", "private"}
  HEAD /{repo}/resolve/{rev}/{path}          X-Repo-Commit + ETag + Content-Length; weights (LFS) answer a 302 to
  GET  /{repo}/resolve/{rev}/{path}          the "CDN" (another host name: localhost) with X-Linked-Etag (their
  GET  /lfs/{sha256}                          sha256) and X-Linked-Size, and the CDN serves them without a token

Errors carry the Hub's ``X-Error-Code`` header, which huggingface_hub turns into its exceptions: an unknown repo is
401 (anonymous) / 404 ``RepoNotFound``, a gated repo without an accepted token is 401 (no token) / 403 (another
token) ``GatedRepo`` on file requests (its metadata stays public, as on the Hub), an unknown revision is 404
``RevisionNotFound``, an unknown file 404 ``EntryNotFound``. Every request is logged (method, path, whether it
carried a token) so tests can prove what was, and was not, downloaded.
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".model")


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str
    gated_token: str | None = None  # the one token that accepted the licence
    refs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    token: str | None


def commit_of(files: dict[str, bytes]) -> str:
    digest = hashlib.sha1()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class FakeHub:
    """``add(repo_id, files, gated_token=None)`` → its commit; ``start()`` → the endpoint URL; ``requests`` logs."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[Request] = []
        self.blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._server = None

    def add(self, repo_id: str, files: dict[str, bytes], gated_token: str | None = None, tags=()) -> str:
        commit = commit_of(files)
        self.repos[repo_id] = Repo(dict(files), commit, gated_token, {"main": commit, **{t: commit for t in tags}})
        self.blobs.update({hashlib.sha256(v).hexdigest(): v for v in files.values()})
        return commit

    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def downloads(self) -> list[str]:
        """Paths of the file requests (resolve and CDN) logged so far."""
        return [r.path for r in self.requests if "/resolve/" in r.path or r.path.startswith("/lfs/")]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, *args):  # quiet: the test reads hub.requests
        pass

    def do_HEAD(self):
        self._route(body=False)

    def do_GET(self):
        self._route(body=True)

    # ---------------------------------------------------------------------------------------------- routing

    def _token(self) -> str | None:
        value = self.headers.get("Authorization", "")
        return value[len("Bearer "):] if value.startswith("Bearer ") else None

    def _route(self, body: bool):
        path = unquote(urlsplit(self.path).path)
        self.hub.log(Request(self.command, path, self._token()))
        if path.startswith("/lfs/"):
            return self._cdn(path[len("/lfs/"):], body)
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/"):], body)
        if "/resolve/" in path:
            return self._resolve(path, body)
        self._error(404, "NotFound", "Not found", body)

    def _repo(self, repo_id: str, body: bool, files: bool) -> Repo | None:
        """The repo, or None after answering as the Hub does (unknown → RepoNotFound; gated files → GatedRepo)."""
        repo = self.hub.repos.get(repo_id)
        token = self._token()
        if repo is None:
            self._error(404 if token else 401, "RepoNotFound", "Repository not found", body)
            return None
        if files and repo.gated_token is not None and token != repo.gated_token:
            message = (f"Access to model {repo_id} is restricted and you are not in the authorized list. Visit "
                       f"https://huggingface.co/{repo_id} to ask for access." if token else
                       f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                       "to access it. Please log in.")
            self._error(403 if token else 401, "GatedRepo", message, body)
            return None
        return repo

    def _commit(self, repo: Repo, revision: str, body: bool) -> str | None:
        if revision in repo.refs:
            return repo.refs[revision]
        if revision == repo.commit:
            return revision
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        return None

    def _api(self, rest: str, body: bool):
        repo_id, _, revision = rest.partition("/revision/")
        repo = self._repo(repo_id, body, files=False)
        commit = repo and self._commit(repo, revision or "main", body)
        if commit:
            info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": False,
                    "gated": "manual" if repo.gated_token else False,
                    "siblings": [{"rfilename": name} for name in sorted(repo.files)]}
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

    def _resolve(self, path: str, body: bool):
        head, _, tail = path.lstrip("/").partition("/resolve/")
        revision, _, filename = tail.partition("/")
        repo = self._repo(head, body, files=True)
        commit = repo and self._commit(repo, revision, body)
        if not commit:
            return
        if filename not in repo.files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"", body,
                               {"X-Repo-Commit": commit})
        data = repo.files[filename]
        headers = {"X-Repo-Commit": commit}
        if filename.endswith(LFS_SUFFIXES):
            sha = hashlib.sha256(data).hexdigest()
            port = self.server.server_address[1]
            headers.update({"Location": f"http://localhost:{port}/lfs/{sha}", "X-Linked-Etag": f'"{sha}"',
                            "X-Linked-Size": str(len(data))})
            return self._send(302, b"", headers, body)
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # a git blob id, as the Hub's ETag
        self._send(200, data, dict(headers, ETag=f'"{blob}"'), body)

    def _cdn(self, sha: str, body: bool):
        data = self.hub.blobs.get(sha)
        if data is None:
            return self._error(404, "NotFound", "no such object", body)
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):  # resumed downloads
            start = int(self.headers["Range"][len("bytes="):].split("-")[0] or 0)
        self._send(206 if start else 200, data[start:], {"ETag": f'"{sha}"'}, body)

    # -------------------------------------------------------------------------------------------- answering

    def _error(self, status: int, code: str, message: str, body: bool, extra: dict | None = None):
        payload = json.dumps({"error": message}).encode()
        self._send(status, payload, {"X-Error-Code": code, "X-Error-Message": message,
                                     "Content-Type": "application/json", **(extra or {})}, body)

    def _send(self, status: int, data: bytes, headers: dict, body: bool):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and data:
            self.wfile.write(data)
