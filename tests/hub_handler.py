"""The test Hub's HTTP endpoints (see ``hub_server`` for what they serve)."""
from __future__ import annotations

import base64
import datetime as dt
import re
import fnmatch
import hashlib
import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, unquote, urlsplit

from hub_store import GITATTRIBUTES, SPACE_COLORS, SPACE_SDKS, Commit, Entry, HubError, Repo, lfs_pointer

def _split(path: str) -> list[str]:
    return [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []


class _Handler(BaseHTTPRequestHandler):
    hub = None  # the HubServer, set by HubServer.start (hub_server imports this module, not the reverse)
    protocol_version = "HTTP/1.1"
    server_version = "PlanktonTestHub/1"

    def log_message(self, format, *args):  # quiet
        pass

    # -- plumbing ------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str = "application/json", length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _dispatch(self) -> None:
        hub = self.hub
        url = urlsplit(self.path)
        with hub.lock:
            hub.requests.append((self.command, url.path))
            if self.headers.get("Authorization"):
                hub.authorizations.append(self.headers["Authorization"])
        if hub.hang is not None and hub.hang in url.path:
            self._body()
            hub.stopping.wait()
            self.close_connection = True
            return
        body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
        try:
            self._route(url.path, parse_qs(url.query), body)
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers.setdefault("X-Error-Message", e.message)
            self._json({"error": e.message} | e.body, e.status, headers)
        except (ValueError, KeyError, TypeError) as e:
            self._json({"error": f"bad request: {e}"}, 400, {"X-Error-Message": f"bad request: {e}"})

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # -- auth ----------------------------------------------------------------
    def _authorized(self) -> bool:
        return self.hub.token is None or self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _can_read(self) -> bool:
        return self._authorized() or self.headers.get("Authorization", "").removeprefix("Bearer ") in self.hub.read_tokens

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401 if not self._can_read() else 403, "Invalid credentials in Authorization header")

    def _repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        repo = self.hub.store(repo_type).get(repo_id)
        if repo is None or (repo.private and not self._can_read()):
            raise HubError(404 if repo is None else 401, "Repository not found", "RepoNotFound")
        return repo

    def _rev(self, repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # -- routes --------------------------------------------------------------
    def _route(self, path: str, query: dict, body: bytes) -> None:
        parts = _split(path)
        m, hub = self.command, self.hub
        with hub.lock:
            if parts[:2] == ["api", "whoami-v2"]:
                if not self.headers.get("Authorization") or not self._authorized():
                    raise HubError(401, "Invalid credentials in Authorization header")
                return self._json({"type": "user", "name": "tester", "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
            if parts[:3] == ["api", "repos", "create"] and m == "POST":
                self._require_write()
                data = json.loads(body)
                kind = data.get("type", "model")
                if kind not in ("model", "space"):
                    raise HubError(400, "this test server only hosts model and space repos")
                if kind == "space" and data.get("sdk") not in SPACE_SDKS:
                    raise HubError(400, f"a Space needs an sdk, one of {', '.join(SPACE_SDKS)}")
                repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else f"tester/{data['name']}"
                private = bool(data.get("private")) or data.get("visibility") == "private"
                repo = hub.create_repo(repo_id, private, kind, data.get("sdk"))
                for key in ("variables", "secrets"):  # create_repo(space_variables=..., space_secrets=...)
                    for item in data.get(key) or []:
                        self._set_setting(getattr(repo, key), item)
                return self._json({"url": f"{hub.url}/{'spaces/' if kind == 'space' else ''}{repo_id}", "name": repo_id, "id": repo_id})
            if parts[:2] == ["api", "validate-yaml"] and m == "POST":
                data = json.loads(body)
                return self._validate_yaml(data.get("content", ""), data.get("repoType") or "model")
            if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "spaces"):
                return self._api_repo("space" if parts[1] == "spaces" else "model", f"{parts[2]}/{parts[3]}", parts[4:], query, body)
            kind = "space" if parts[:1] == ["spaces"] else "model"  # git and resolve URLs of a Space start with spaces/
            if kind == "space":
                parts = parts[1:]
            if len(parts) >= 6 and parts[1].endswith(".git") and parts[2:6] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(f"{parts[0]}/{parts[1][:-4]}", json.loads(body), kind)
            if len(parts) >= 6 and parts[1].endswith(".git") and parts[2:6] == ["info", "lfs", "objects", "verify"]:
                data = json.loads(body)
                if data["oid"] not in hub.objects:
                    raise HubError(404, "object not uploaded")
                return self._json({"success": True})
            if len(parts) == 4 and parts[0] == "lfs-upload" and m == "PUT":
                return self._lfs_put(parts[3], body)
            if len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
                return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), kind)
        raise HubError(404, f"no route for {m} {path}")

    def _validate_yaml(self, content: str, repo_type: str = "model") -> None:
        import yaml

        errors, meta = [], None
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end < 0:
                errors.append({"message": "unterminated YAML front matter"})
            else:
                try:
                    meta = yaml.safe_load(content[3:end])
                    if meta is not None and not isinstance(meta, dict):
                        errors.append({"message": "YAML front matter is not a mapping"})
                except yaml.YAMLError as e:
                    errors.append({"message": f"invalid YAML: {e}"})
        if repo_type == "space" and not errors:  # the few Space settings the Hub checks that matter here
            meta = meta if isinstance(meta, dict) else {}
            if meta.get("sdk") not in SPACE_SDKS:
                errors.append({"message": f'"sdk" must be one of {", ".join(SPACE_SDKS)}'})
            for key in ("colorFrom", "colorTo"):
                if key in meta and meta[key] not in SPACE_COLORS:
                    errors.append({"message": f'"{key}" must be one of {", ".join(sorted(SPACE_COLORS))}'})
            if "python_version" in meta and not isinstance(meta["python_version"], str):
                errors.append({"message": '"python_version" must be a string'})
        if errors:
            return self._json({"errors": errors, "warnings": []}, 400)
        return self._json({"errors": [], "warnings": []})

    @staticmethod
    def _set_setting(settings: dict, item: dict) -> None:
        date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        settings[item["key"]] = {"value": str(item["value"]), "description": item.get("description"), "updatedAt": date}

    def _space_settings(self, repo: Repo, kind: str, body: bytes) -> None:
        """GET, POST (add or update) and DELETE on a Space's variables or secrets."""
        settings = getattr(repo, kind)
        if self.command == "GET":
            if kind == "secrets":
                self._require_write()  # secret names are for the Space's owners; their values are never returned
            return self._json({k: {f: v for f, v in s.items() if not (kind == "secrets" and f == "value")} for k, s in settings.items()})
        self._require_write()
        data = json.loads(body)
        if self.command == "POST":
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", data.get("key", "")) or "value" not in data:
                raise HubError(400, f"a {kind[:-1]} needs a key (letters, digits, _) and a value")
            self._set_setting(settings, data)
        elif self.command == "DELETE":
            settings.pop(data["key"], None)
        if kind == "secrets":
            return self._json({})
        return self._json({k: {f: v for f, v in s.items()} for k, s in settings.items()})

    def _api_repo(self, kind: str, repo_id: str, rest: list[str], query: dict, body: bytes) -> None:
        hub, m = self.hub, self.command
        repo = self._repo(repo_id, kind)
        if not rest or rest[0] == "revision":
            commit = self._rev(repo, rest[1] if len(rest) > 1 else "main")
            info = {
                "id": repo.id, "_id": repo.id, "author": repo.id.split("/")[0], "sha": commit.id,
                "private": repo.private, "disabled": False, "gated": False, "lastModified": commit.date, "tags": [],
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }
            return self._json(info | ({"sdk": repo.sdk} if kind == "space" else {"modelId": repo.id}))
        op = rest[0]
        if kind == "space" and op in ("variables", "secrets") and len(rest) == 1 and m in ("GET", "POST", "DELETE"):
            return self._space_settings(repo, op, body)
        if op == "refs":
            def refs(d, kind):
                return [{"name": n, "ref": f"refs/{kind}/{n}", "targetCommit": c} for n, c in sorted(d.items())]
            return self._json({"branches": refs(repo.branches, "heads"), "tags": refs(repo.tags, "tags"), "converts": [], "pullRequests": []})
        if op == "branch" and m == "POST":
            self._require_write()
            branch = rest[1]
            data = json.loads(body or b"{}")
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch} already exists")
            repo.branches[branch] = self._rev(repo, data.get("startingPoint") or "main").id
            return self._json({})
        if op == "tag" and m == "POST":
            self._require_write()
            data = json.loads(body)
            if data["tag"] in repo.tags:
                raise HubError(409, f"Tag {data['tag']} already exists")
            repo.tags[data["tag"]] = self._rev(repo, rest[1]).id
            return self._json({})
        if op == "tree" and m == "GET":
            commit = self._rev(repo, rest[1])
            prefix = "/".join(rest[2:])
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            return self._tree(commit, prefix, recursive)
        if op == "paths-info" and m == "POST":
            commit = self._rev(repo, rest[1])
            paths = parse_qs(body.decode()).get("paths", [])
            out = []
            for p in paths:
                if p in commit.files:
                    out.append(self._file_info(p, commit.files[p]))
                elif any(f.startswith(p.rstrip("/") + "/") for f in commit.files):
                    out.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
            return self._json(out)
        if op == "preupload" and m == "POST":
            self._require_write()
            commit = self._rev(repo, rest[1])
            files = []
            for f in json.loads(body)["files"]:
                lfs = f["size"] > hub.lfs_threshold or self._lfs_pattern(commit, f["path"])
                old = commit.files.get(f["path"])
                remote = (old.lfs if lfs else old.oid) if old else None
                files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": remote})
            return self._json({"files": files, "commitOid": commit.id})
        if op == "commit" and m == "POST":
            self._require_write()
            return self._commit(repo, rest[1], body, query)
        raise HubError(404, f"no route for {m} /api/{kind}s/{repo_id}/{'/'.join(rest)}")

    def _lfs_pattern(self, commit: Commit, path: str) -> bool:
        attrs = commit.files.get(".gitattributes")
        text = self.hub.objects[attrs.key].decode() if attrs else GITATTRIBUTES
        name = path.rsplit("/", 1)[-1]
        return any("filter=lfs" in line and (fnmatch.fnmatch(name, line.split()[0]) or fnmatch.fnmatch(path, line.split()[0])) for line in text.splitlines() if line.strip())

    @staticmethod
    def _file_info(path: str, e: Entry) -> dict:
        info = {"type": "file", "oid": e.oid, "size": e.size, "path": path}
        if e.lfs:
            info["lfs"] = {"oid": e.lfs, "size": e.size, "pointerSize": len(lfs_pointer(e.lfs, e.size))}
        return info

    def _tree(self, commit: Commit, prefix: str, recursive: bool) -> None:
        base = prefix.rstrip("/") + "/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in commit.files):
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        out, dirs = [], set()
        for p, e in sorted(commit.files.items()):
            if not p.startswith(base):
                continue
            rel = p[len(base):]
            parts = rel.split("/")
            for i in range(1, len(parts) if recursive else min(len(parts), 2)):
                dirs.add(base + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                out.append(self._file_info(p, e))
        out += [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d} for d in sorted(dirs)]
        self._json(out)

    def _commit(self, repo: Repo, revision: str, body: bytes, query: dict) -> None:
        if query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by this test server")
        header, adds, deletes = {}, {}, set()
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, "only base64 file content is supported")
                adds[value["path"]] = ("regular", base64.b64decode(value["content"]))
            elif key == "lfsFile":
                adds[value["path"]] = ("lfs", (value["oid"], int(value.get("size") or len(self.hub.objects.get(value["oid"], b"")))))
            elif key in ("deletedFile", "deletedFolder"):
                deletes.add(value["path"] + ("/" if key == "deletedFolder" else ""))
            else:
                raise HubError(400, f"unsupported commit operation {key}")
        message = header.get("summary") or "commit"
        if header.get("description"):
            message += "\n\n" + header["description"]
        sha = self.hub._commit(repo, revision, adds, deletes, message, parent=header.get("parentCommit"))
        self._json({"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo.id}/commit/{sha}", "pullRequestUrl": None})

    def _lfs_batch(self, repo_id: str, data: dict, kind: str = "model") -> None:
        self._require_write()
        self._repo(repo_id, kind)
        prefix = "spaces/" if kind == "space" else ""
        if data.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for o in data["objects"]:
            item = {"oid": o["oid"], "size": o["size"], "authenticated": True}
            if o["oid"] not in self.hub.objects:
                item["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{repo_id}/{o['oid']}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/{prefix}{repo_id}.git/info/lfs/objects/verify", "header": {}},
                }
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(), content_type="application/vnd.git-lfs+json")

    def _lfs_put(self, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its oid")
        self.hub.objects[oid] = body
        self.hub.lfs_uploads.append(oid)
        self._send(200, b"")

    def _resolve(self, repo_id: str, revision: str, path: str, kind: str = "model") -> None:
        repo = self._repo(repo_id, kind)
        commit = self._rev(repo, revision)
        e = commit.files.get(path)
        if e is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.id})
        data = self.hub.objects[e.key]
        if path in self.hub.tamper and self.command == "GET" and data:
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        headers = {"X-Repo-Commit": commit.id, "ETag": f'"{e.oid}"', "Accept-Ranges": "bytes"}
        if e.lfs:
            headers |= {"X-Linked-Etag": f'"{e.lfs}"', "X-Linked-Size": e.size}
        status, start = 200, 0
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        if m and self.command == "GET":
            start, status = int(m.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(status, data[start:], headers, content_type="application/octet-stream")
