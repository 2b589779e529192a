"""The test Hub's state: repos, commits with git blob ids, LFS objects.
Served over HTTP by ``hub_handler`` and started by ``hub_server``."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

LFS_THRESHOLD = 10 * 1024 * 1024  # the Hub stores files over 10 MB in LFS
GITATTRIBUTES = "".join(
    f"{p} filter=lfs diff=lfs merge=lfs -text\n"
    for p in ("*.bin", "*.ckpt", "*.h5", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.tar.gz", "*.zip", "*tfevents*")
)
SHA40 = re.compile(r"^[0-9a-f]{40}$")
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}



def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree. ``key`` addresses its bytes in the
    server's object store (the git blob id, or the sha256 for LFS)."""

    oid: str  # git blob id (of the LFS pointer for LFS files)
    size: int
    key: str
    lfs: str | None = None  # sha256 of the content for LFS files


@dataclass
class Commit:
    id: str
    parent: str | None
    files: dict[str, Entry]
    message: str
    date: str


@dataclass
class Repo:
    id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    type: str = "model"  # or "space"
    sdk: str | None = None  # a Space's SDK
    variables: dict[str, dict] = field(default_factory=dict)  # a Space's: key -> {"value", "description", "updatedAt"}
    secrets: dict[str, dict] = field(default_factory=dict)  # a Space's: key -> {"value", "description", "updatedAt"}

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if SHA40.match(revision) and revision in self.commits:
            return revision
        return None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.body = status, message, code, headers or {}, body or {}


