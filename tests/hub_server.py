"""A Hugging Face Hub look-alike for tests, standard library only.

The real ``huggingface_hub`` client talks to it over HTTP, so tests exercise the same code paths
as against huggingface.co without network access. Only model repos are served. Every file is
committed "regular" (inline base64 in the commit NDJSON, never LFS/Xet), so the client needs
``HF_HUB_DISABLE_XET=1``. File ETags, tree ``oid`` and sibling ``blobId`` are git blob SHA-1s,
like the Hub's for non-LFS files, so the client's "unchanged file" check works. A commit with
``create_pr=1`` opens a pull request: a new ``refs/pr/N`` ref, listed by ``list_repo_refs`` and
readable as a revision, with the ``pullRequestUrl`` the client turns into ``CommitInfo.pr_revision``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

USER = "test-user"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
_REPO_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|refs|branch|preupload|commit|tree)(?:/(.*))?)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def git_blob_sha(content: bytes) -> str:
    """Git object id of a blob, the id the Hub reports for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An error answered with the status and ``X-Error-Code`` that ``hf_raise_for_status`` maps."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


@dataclass
class Repo:
    """One model repo: immutable commits (sha -> {path: bytes}), branches and pull-request refs (name -> sha)."""

    private: bool
    created_at: str = field(default_factory=_now)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    modified: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, tuple[str, str]] = field(default_factory=dict)  # sha -> (summary, description)


class RepoStore:
    """Thread-safe in-memory store of model repos; every commit is a full, never-mutated snapshot."""

    def __init__(self) -> None:
        self._repos: dict[str, Repo] = {}
        self._lock = threading.Lock()

    def create(self, repo_id: str, private: bool) -> bool:
        """Create ``repo_id`` with an initial ``.gitattributes`` commit on main; False if it exists."""
        with self._lock:
            if repo_id in self._repos:
                return False
            repo = self._repos[repo_id] = Repo(private=private)
            self._add_commit(repo, "main", {".gitattributes": GITATTRIBUTES})
            return True

    def get(self, repo_id: str, authorized: bool) -> Repo:
        """The repo; private repos are invisible (404) without a valid token, as on the Hub."""
        repo = self._repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    @staticmethod
    def resolve(repo: Repo, revision: str) -> tuple[str, dict[str, bytes]]:
        """Map a branch name or a full commit sha to (commit sha, files)."""
        sha = repo.branches.get(revision, revision)
        if sha not in repo.commits:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]

    def create_branch(self, repo: Repo, branch: str, starting_point: str | None) -> None:
        with self._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            repo.branches[branch] = self.resolve(repo, starting_point or "main")[0]

    def delete_branch(self, repo: Repo, branch: str) -> None:
        with self._lock:
            if branch == "main":
                raise HubError(403, "The main branch cannot be deleted")
            if repo.branches.pop(branch, None) is None:
                raise HubError(404, f"Branch {branch} not found", "RevisionNotFound")

    def open_pull_request(self, repo: Repo, base: str) -> str:
        """A new ``refs/pr/N`` ref at the head of ``base``, as the Hub opens for ``create_pr=1`` commits."""
        with self._lock:
            head = self.resolve(repo, base)[0]
            number = 1 + sum(name.startswith("refs/pr/") for name in repo.branches)
            repo.branches[f"refs/pr/{number}"] = head
            return f"refs/pr/{number}"

    def commit(self, repo: Repo, branch: str, ops: list[dict], parent: str | None) -> str:
        """Apply NDJSON operations on top of ``branch`` and move the branch to the new commit."""
        with self._lock:
            if branch not in repo.branches:
                raise HubError(404, f"Branch {branch} not found (commits go to branches)", "RevisionNotFound")
            head = repo.branches[branch]
            if parent is not None and parent != head:
                raise HubError(412, f"Parent commit {parent} is not the head of {branch} ({head})")
            files = dict(repo.commits[head])
            for op in ops:
                key, value = op.get("key"), op.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"Unsupported encoding for {path}: {value.get('encoding')}")
                    files[path] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    files = {p: c for p, c in files.items() if not p.startswith(path.rstrip("/") + "/")}
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r} (this test Hub accepts regular files only)")
            return self._add_commit(repo, branch, files)

    @staticmethod
    def _add_commit(repo: Repo, branch: str, files: dict[str, bytes]) -> str:
        sha = secrets.token_hex(20)
        repo.commits[sha], repo.branches[branch], repo.modified[sha] = files, sha, _now()
        return sha


class HubHandler(BaseHTTPRequestHandler):
    """Routes the Hub REST calls the client makes for model repos to the server's ``RepoStore``."""

    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:
        """Silent: test output should show failures, not access logs."""

    def do_GET(self) -> None:
        """Every method goes through one router; HEAD answers GET's headers without the body."""
        method, url = self.command, urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        try:
            self._authenticate()
            if method in ("GET", "HEAD") and (match := _RESOLVE.match(url.path)):
                return self._resolve(match[1], unquote(match[2]), unquote(match[3]))
            if match := _REPO_API.match(url.path):
                return self._repo_api(method, match[1], match[2], match[3] or "")
            if (method, url.path) == ("POST", "/api/repos/create"):
                return self._create_repo()
            if (method, url.path) == ("POST", "/api/validate-yaml"):
                return self._json({"errors": [], "warnings": []})
            if (method, url.path) == ("GET", "/api/whoami-v2"):
                return self._json({"type": "user", "name": USER, "orgs": [], "auth": {"type": "access_token"}})
            raise HubError(404, f"No route for {method} {url.path}")
        except HubError as err:
            self._error(err)
        except (ValueError, KeyError) as err:  # malformed JSON, NDJSON or base64 from the client
            self._error(HubError(400, f"Malformed request: {err!r}"))

    do_HEAD = do_POST = do_DELETE = do_GET

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("ascii", "backslashreplace").decode()}
        headers.update({"X-Error-Code": err.code} if err.code else {})
        headers.update({"X-Repo-Commit": err.commit} if err.commit else {})
        self._send(err.status, json.dumps({"error": err.message}).encode(), headers, "application/json")

    def _authenticate(self) -> None:
        auth = self.headers.get("Authorization", "")
        given = auth.removeprefix("Bearer ").strip() if auth else None
        if self.server.token is not None and given is not None and given != self.server.token:
            raise HubError(401, "Invalid credentials in Authorization header")
        self.authorized = self.server.token is None or given == self.server.token

    def _require_write(self) -> None:
        if not self.authorized:
            raise HubError(401, "You must be authenticated to write")

    def _create_repo(self) -> None:
        self._require_write()
        payload = json.loads(self.body or b"{}")
        if payload.get("type", "model") != "model":
            raise HubError(400, f"This test Hub serves model repos only, not {payload.get('type')!r}")
        repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
        url = f"{self.server.endpoint}/{repo_id}"
        if not self.server.store.create(repo_id, payload.get("visibility", "public") == "private"):
            conflict = {"error": "You already created this model repo", "url": url}
            return self._send(409, json.dumps(conflict).encode(), {}, "application/json")
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_api(self, method: str, repo_id: str, action: str | None, raw_rest: str) -> None:
        store, rest = self.server.store, unquote(raw_rest)
        repo = store.get(repo_id, self.authorized)
        if method == "GET" and action in (None, "revision"):
            return self._json(self._model_info(repo_id, repo, rest or "main"))
        if method == "GET" and action == "refs":
            refs = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()
                    if not b.startswith("refs/pr/")]
            pulls = [{"name": b.removeprefix("refs/pr/"), "ref": b, "targetCommit": s} for b, s in repo.branches.items()
                     if b.startswith("refs/pr/")]
            return self._json({"branches": refs, "converts": [], "tags": [], "pullRequests": pulls})
        if method == "GET" and action == "tree":
            revision, _, path = raw_rest.partition("/")
            recursive = self.query.get("recursive") in ("true", "1", "True")
            return self._json(self._tree(repo, unquote(revision), unquote(path), recursive))
        self._require_write()
        if method in ("POST", "DELETE") and action == "branch":
            if method == "DELETE":
                store.delete_branch(repo, rest)
            else:
                store.create_branch(repo, rest, json.loads(self.body or b"{}").get("startingPoint"))
            return self._json({})
        if method == "POST" and action == "preupload":
            files = store.resolve(repo, rest)[1]
            return self._json({"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                 "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
                for f in json.loads(self.body)["files"]
            ]})
        if method == "POST" and action == "commit":
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
            header = next((line["value"] for line in lines if line.get("key") == "header"), {})
            ops = [line for line in lines if line.get("key") != "header"]
            pull = store.open_pull_request(repo, rest) if self.query.get("create_pr") == "1" else None
            sha = store.commit(repo, pull or rest, ops, None if pull else header.get("parentCommit"))
            repo.descriptions[sha] = (header.get("summary", ""), header.get("description", ""))
            pr_url = f"{self.server.endpoint}/{repo_id}/discussions/{pull.removeprefix('refs/pr/')}" if pull else None
            return self._json({"success": True, "commitOid": sha, "commitMessage": header.get("summary", ""),
                               "commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{sha}",
                               "hookOutput": "", "pullRequestUrl": pr_url})
        raise HubError(405, f"{method} not supported on {action or 'repo'}")

    @staticmethod
    def _model_info(repo_id: str, repo: Repo, revision: str) -> dict:
        sha, files = RepoStore.resolve(repo, revision)
        siblings = [{"rfilename": p, "size": len(c), "blobId": git_blob_sha(c)} for p, c in sorted(files.items())]
        return {"_id": repo_id, "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha,
                "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
                "lastModified": repo.modified[sha], "createdAt": repo.created_at, "siblings": siblings}

    @staticmethod
    def _tree(repo: Repo, revision: str, path: str, recursive: bool) -> list[dict]:
        sha, files = RepoStore.resolve(repo, revision)
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        below = {p[len(prefix):]: c for p, c in files.items() if p.startswith(prefix)}
        if prefix and not below:
            raise HubError(404, f"Path {path} not found at {revision}", "EntryNotFound", sha)
        folders = {"/".join(parts[:i]) for parts in (p.split("/") for p in below) for i in range(1, len(parts))}
        entries = [{"type": "file", "path": prefix + p, "size": len(c), "oid": git_blob_sha(c)}
                   for p, c in below.items() if recursive or "/" not in p]
        entries += [{"type": "directory", "path": prefix + d, "size": 0,
                     "oid": hashlib.sha1(f"{sha}:{prefix}{d}".encode()).hexdigest()}
                    for d in folders if recursive or "/" not in d]
        return sorted(entries, key=lambda e: e["path"])

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        sha, files = self.server.store.resolve(self.server.store.get(repo_id, self.authorized), revision)
        if filename not in files:
            raise HubError(404, f"Entry not found: {filename}", "EntryNotFound", sha)
        content = files[filename]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"'}
        self._send(200, content, headers, "application/octet-stream")

    def _json(self, payload: object) -> None:
        self._send(200, json.dumps(payload).encode(), {}, "application/json")

    def _send(self, status: int, data: bytes, headers: dict[str, str], content_type: str) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Type": content_type, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: RepoStore
    token: str | None
    endpoint: str


class HubServer:
    """Start/stop a Hub look-alike on ``host:port`` (0 = a free port); the store survives restarts.

    ``token=None`` disables authentication; otherwise writes and private repos need ``Bearer <token>``
    and a wrong token is answered 401.
    """

    def __init__(self, port: int = 0, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.token = host, port, token
        self.store = RepoStore()
        self._server: _Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> "HubServer":
        """Bind and serve in a daemon thread; a restart reuses the same port and store."""
        if self._server is None:
            server = _Server((self.host, self.port), HubHandler)
            self.port = server.server_address[1]
            server.store, server.token, server.endpoint = self.store, self.token, self.endpoint
            threading.Thread(target=server.serve_forever, args=(0.1,), name="hub-server", daemon=True).start()
            self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and close the socket, so clients get connection errors.

        Responses are HTTP/1.0 (one request per connection), so no kept-alive connection outlives this.
        """
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
