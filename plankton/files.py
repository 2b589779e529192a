"""Small file helpers with no heavy imports (no torch, no Ultralytics), so
that writing a CSV or checking a download stays cheap: atomic writes,
sha256 checksums and one-line error messages."""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def one_line(e: BaseException) -> str:
    """An exception as one line for people: its message with whitespace
    folded, or its type's name when it has no message."""
    return " ".join(str(e).split()) or type(e).__name__


def sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed to
    ``path`` (readable by others: 0644), on any error it is removed. So an
    interrupted write never leaves a file that looks complete."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users (a web app's account)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield an empty temporary folder beside ``path``; on success it
    replaces ``path`` (files 0644, folders 0755: readable by a web app's
    account), on any error it is removed and ``path`` is left as it was."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        for p in [tmp, *tmp.rglob("*")]:
            os.chmod(p, 0o644 if p.is_file() else 0o755)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


__all__ = ["atomic_folder", "atomic_path", "atomic_write_bytes", "atomic_write_text", "one_line", "sha256"]


def portable(obj, root: str | Path | None = None):
    """``obj`` (JSON-like) with every absolute path made relative to
    ``root`` (default: the working directory) when inside it, else cut to
    its last component: a model's record travels to other machines and to
    the Hub, where this machine's folders mean nothing."""
    root = Path(root or os.getcwd()).resolve()
    if isinstance(obj, dict):
        return {k: portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, root) for v in obj]
    if isinstance(obj, str) and (obj.startswith("/") or (len(obj) > 2 and obj[1] == ":" and obj[2] in "\\/")):
        p = Path(obj)
        try:
            return p.resolve().relative_to(root).as_posix()
        except ValueError:
            return p.name
    return obj
