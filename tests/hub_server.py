"""A small Hugging Face Hub–compatible HTTP server for tests, on 127.0.0.1.

It serves the endpoints that huggingface_hub 2.4 uses to push and pull a
model repo over plain HTTP (with ``HF_HUB_DISABLE_XET=1``): create repo,
validate-yaml, preupload, LFS batch + basic upload + verify, NDJSON commit,
refs, branch and tag creation, revision info, tree and paths-info, and
resolve (HEAD and GET, with X-Repo-Commit, ETag and X-Linked-* headers).

Space repos (``create_repo(repo_type="space", space_sdk=...)``) use the same
endpoints under ``/api/spaces/…``, ``/spaces/….git/info/lfs`` and
``/spaces/…/resolve``, plus a Space's variables and secrets: GET, POST
(add or update ``{"key", "value", "description"}``) and DELETE (``{"key"}``)
on ``/api/spaces/{id}/variables`` and ``/api/spaces/{id}/secrets``, as
``HfApi.add_space_variable`` & co. call them. Secret values are never
returned by the API; tests read them from ``server.spaces[id].secrets``,
as the Space's container would get them.

State is kept in memory. Commits are real: a commit id is the sha1 of the
commit's content (parent, tree, message), regular files have git blob ids and
large files are LFS objects addressed by sha256, as on the Hub.

Fault injection, for tests of the pulling side:

* ``server.tamper = {"detector.safetensors"}`` flips a byte of those files
  in GET responses (HEAD metadata stays correct, sizes are unchanged);
* ``server.hang = ""`` makes every request hang (the connection is accepted
  and read, but never answered) until the server stops; ``server.hang =
  "/resolve/"`` hangs only requests whose path contains that text;
* ``server.delete_file(repo_id, path)`` commits the removal of a file.

``server.requests`` records ``(method, path)`` of every request and
``server.authorizations`` every Authorization header received. Models are
in ``server.repos``, Spaces in ``server.spaces`` (ids may repeat across the two).

    with HubServer() as hub:
        HfApi(endpoint=hub.url).create_repo("org/model")

Standard library only; never binds anything but 127.0.0.1.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from http.server import ThreadingHTTPServer

from hub_handler import _Handler
from hub_store import GITATTRIBUTES, LFS_THRESHOLD, Commit, Entry, HubError, Repo, git_blob_id, lfs_pointer

class _Server(ThreadingHTTPServer):
    # socketserver's default backlog is 5: huggingface_hub fetches a snapshot with 8 threads, and on a
    # loaded 2-core machine a sixth connection was refused, so the client gave up and fell back
    request_queue_size = 64


class HubServer:
    """The server. ``token``: when set, writes (and reads of private repos)
    need ``Authorization: Bearer <token>``. ``read_tokens``: tokens that may
    read private repos but write nothing (a fine-grained read-only token)."""

    def __init__(self, token: str | None = None, lfs_threshold: int = LFS_THRESHOLD, read_tokens: tuple[str, ...] = ()):
        self.token = token
        self.read_tokens = set(read_tokens)
        self.lfs_threshold = lfs_threshold
        self.repos: dict[str, Repo] = {}  # model repos
        self.spaces: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}
        self.lfs_uploads: list[str] = []  # sha256 of each LFS object received
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str] = []
        self.tamper: set[str] = set()
        self.hang: str | None = None
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="hub-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases hanging handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # -- repository operations (also used directly by tests) -----------------
    def store(self, repo_type: str) -> dict[str, Repo]:
        return self.spaces if repo_type == "space" else self.repos

    def create_repo(self, repo_id: str, private: bool = False, repo_type: str = "model", sdk: str | None = None) -> Repo:
        with self.lock:
            store = self.store(repo_type)
            url = f"{self.url}/{'spaces/' if repo_type == 'space' else ''}{repo_id}"
            if repo_id in store:
                # the Hub answers 409 with the repo's url, which create_repo(exist_ok=True) reads
                raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
            repo = store[repo_id] = Repo(repo_id, private, type=repo_type, sdk=sdk)
            self._commit(repo, "main", {".gitattributes": ("regular", GITATTRIBUTES.encode())}, set(), "initial commit", create_branch=True)
            return repo

    def delete_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> str:
        """Commit the removal of ``path`` on branch ``revision``; returns the new commit id."""
        with self.lock:
            return self._commit(self.store(repo_type)[repo_id], revision, {}, {path}, f"Delete {path}")

    def _store(self, data: bytes) -> Entry:
        key = git_blob_id(data)
        self.objects[key] = data
        return Entry(oid=key, size=len(data), key=key)

    def _commit(self, repo: Repo, branch: str, adds: dict, deletes: set[str], message: str, parent: str | None = None, create_branch: bool = False) -> str:
        head = repo.branches.get(branch)
        if head is None and not create_branch:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        if parent is not None and parent != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files) if head else {}
        for path in deletes:
            if path.endswith("/"):
                files = {p: e for p, e in files.items() if not p.startswith(path)}
            elif path in files:
                del files[path]
            elif not any(p.startswith(path + "/") for p in files):
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            else:
                files = {p: e for p, e in files.items() if not p.startswith(path + "/")}
        for path, (kind, value) in adds.items():
            if kind == "regular":
                files[path] = self._store(value)
            else:  # lfs: value = (sha256, size)
                sha, size = value
                if sha not in self.objects:
                    raise HubError(400, f"LFS object {sha} of {path} was never uploaded")
                files[path] = Entry(oid=git_blob_id(lfs_pointer(sha, size)), size=size, key=sha, lfs=sha)
        date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        content = json.dumps({"parent": head, "tree": {p: e.oid for p, e in sorted(files.items())}, "message": message, "date": date}, sort_keys=True)
        commit_id = hashlib.sha1(content.encode()).hexdigest()
        repo.commits[commit_id] = Commit(commit_id, head, files, message, date)
        repo.branches[branch] = commit_id
        return commit_id


__all__ = ["HubServer", "HubError", "git_blob_id", "lfs_pointer"]
