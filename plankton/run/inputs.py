"""What ``predict`` reads: folders, image files, globs, zip and tar
archives, and manifests (a text file, one path a line), enumerated lazily.

Both engines use this module. :func:`plan` runs in the driver and only
looks at the command-line arguments themselves (a stat each; a manifest is
split into byte ranges by its size, never read). :func:`expand` turns one
planned spec into frames as a generator: the local engine runs it in
process, the Ray engine inside the pipeline, so a manifest of a million
lines is never held in the driver.

A frame is an :class:`Item`. ``key`` (an absolute path, or
``ARCHIVE/MEMBER``) identifies it in the journal and deduplicates it;
``name`` (the file's base name) is what the outputs call it; ``shown``
names it in error messages, as the user wrote it. Archive members carry
their bytes (``data``), read while the archive is walked once in order: a
compressed tar cannot be reopened cheaply at one member.
"""
from __future__ import annotations

import glob
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterable, Iterator

import numpy as np

from plankton.files import one_line as _one_line
from plankton.images import IMAGE_EXTENSIONS, read_image

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
MANIFEST_SUFFIXES = (".txt", ".lst", ".list")
MAX_MEMBER_BYTES = 256 << 20  # an archive member above this is refused unread (a zip bomb's zeros)
MANIFEST_SPLIT_BYTES = 4 << 20  # ~40k lines per range: small enough to spread a big manifest over workers


@dataclass(frozen=True)
class Item:
    key: str
    name: str
    shown: str
    path: str = ""
    data: bytes | None = None
    error: str | None = None  # the input could not even be enumerated


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _kind(path: str) -> str:
    low = path.lower()
    if low.endswith(ZIP_SUFFIXES):
        return "zip"
    if low.endswith(TAR_SUFFIXES):
        return "tar"
    if low.endswith(MANIFEST_SUFFIXES):
        return "manifest"
    return "file"


def plan(paths: Iterable[str | os.PathLike], split_bytes: int = MANIFEST_SPLIT_BYTES) -> list[dict]:
    """Command-line inputs → specs (plain dicts, so they travel to Ray
    workers as rows). Paths become absolute here: workers have another
    working directory. A path that does not exist and matches no glob
    becomes an ``error`` spec, reported like a bad frame."""
    specs = []
    for given in map(os.fspath, paths):
        full = os.path.abspath(given)
        if os.path.isdir(full):
            specs.append({"kind": "folder", "path": full, "shown": given})
        elif os.path.isfile(full):
            kind = _kind(full)
            if kind == "manifest":
                size = os.path.getsize(full)
                for start in range(0, max(size, 1), split_bytes):
                    specs.append({"kind": kind, "path": full, "shown": given, "start": start, "end": start + split_bytes})
            else:
                specs.append({"kind": kind, "path": full, "shown": given})
        elif glob.has_magic(given):
            specs.append({"kind": "glob", "path": full, "shown": given, "cwd": os.getcwd()})  # workers have another cwd
        else:
            specs.append({"kind": "error", "path": full, "shown": given, "error": f"{given}: no such file or folder"})
    return specs


def _file(full: str, shown: str) -> Item:
    return Item(full, os.path.basename(full), shown, path=full)


def _folder(full: str, shown: str) -> Iterator[Item]:
    """Recursively, hidden entries skipped, sorted within each folder (so
    memory is one folder's listing, not the tree's)."""
    for folder, dirs, files in os.walk(full):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, full)
        for f in sorted(files):
            if _is_image(f):
                yield _file(os.path.join(folder, f), os.path.normpath(os.path.join(shown, rel, f)))


def member_problem(name: str) -> str | None:
    """Why an archive member is skipped ("" = silently), or None to read
    it; the same rules as the app's uploads. Members are only ever read
    into memory, never extracted, but a ``..`` or absolute name still
    says the archive was not made from a folder of frames."""
    name = name.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return "unsafe path, skipped"
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return ""
    if name.lower().endswith(ZIP_SUFFIXES + TAR_SUFFIXES + (".gz", ".7z", ".rar", ".bz2", ".xz")):
        return "nested archive, not opened"
    if not _is_image(name):
        return ""
    return None


def _members(full: str, shown: str, entries) -> Iterator[Item]:
    """``entries``: (member name, problem or None, size, read()) per member,
    in archive order → frames, and one error item per refused member."""
    found = reported = 0
    for name, problem, size, read_member in entries:
        key, label = (f"{full}/{name}", f"{shown}/{name}") if name else (f"{full}/", shown)
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        if problem is None:
            problem = member_problem(name)
        if problem is None and size > MAX_MEMBER_BYTES:
            problem = f"{size} bytes exceeds the limit of {MAX_MEMBER_BYTES}"
        if problem is None:
            try:
                data = read_member(MAX_MEMBER_BYTES + 1)  # bounded, whatever the header claims
                problem = f"more than {MAX_MEMBER_BYTES} bytes, skipped" if len(data) > MAX_MEMBER_BYTES else None
            except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error, zipfile.BadZipFile, tarfile.TarError) as e:
                problem = f"cannot read it from the archive ({_one_line(e)})"
        if problem is None:
            found += 1
            yield Item(key, base, label, path=full, data=data)
        elif problem:
            reported += 1
            yield Item(key, base, label, error=f"{label}: {problem}")
    if not found and not reported:
        yield Item(full, os.path.basename(full), shown, error=f"{shown}: no image files inside")


def _zip(full: str, shown: str) -> Iterator[Item]:
    try:
        zf = zipfile.ZipFile(full)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        yield Item(full, os.path.basename(full), shown, error=f"{shown}: not a valid zip file ({_one_line(e)})")
        return

    def entries():
        for info in zf.infolist():
            if info.is_dir():
                continue
            problem = "encrypted, skipped" if info.flag_bits & 0x1 else None

            def read_member(limit, info=info):
                with zf.open(info) as f:
                    return f.read(limit)
            yield info.filename, problem, info.file_size, read_member

    with zf:
        yield from _members(full, shown, entries())


def _tar(full: str, shown: str) -> Iterator[Item]:
    """Members in archive order, streaming: a .tar.gz is decompressed once."""
    try:
        tf = tarfile.open(full, mode="r|*")
    except (OSError, EOFError, tarfile.TarError) as e:
        yield Item(full, os.path.basename(full), shown, error=f"{shown}: not a valid tar file ({_one_line(e)})")
        return

    def entries():
        try:
            for member in tf:
                if member.isfile():  # links, devices and folders are not frames
                    yield member.name, None, member.size, lambda limit, m=member: tf.extractfile(m).read(limit)
        except (OSError, EOFError, tarfile.TarError, zlib.error) as e:
            yield "", f"the archive is damaged from here on ({_one_line(e)})", 0, None

    with tf:
        yield from _members(full, shown, entries())


def _manifest_lines(full: str, start: int, end: int | None) -> Iterator[str]:
    """The lines that *start* in [start, end): each line belongs to exactly
    one range, however the file was split."""
    with open(full, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the rest of a line that started before this range (or just its newline)
        while end is None or f.tell() < end:
            line = f.readline()
            if not line:
                return
            yield line.decode("utf-8", errors="replace").strip()


def _manifest(spec: dict) -> Iterator[Item]:
    """One path a line, relative to the manifest's folder; blank lines and
    lines starting with # are skipped. A line may name an image or an
    archive (not a folder or another manifest: a line costs no stat)."""
    base = os.path.dirname(spec["path"])
    for line in _manifest_lines(spec["path"], spec.get("start", 0), spec.get("end")):
        if not line or line.startswith("#"):
            continue
        full = os.path.normpath(os.path.join(base, line))
        kind = _kind(full)
        if kind in ("zip", "tar"):
            yield from (_zip if kind == "zip" else _tar)(full, line)
        else:
            yield _file(full, line)


def _path(full: str, shown: str) -> Iterator[Item]:
    """A path found by a glob: a folder, an archive or a file (a manifest
    matched by a glob is read as a frame: globs pick frames)."""
    if os.path.isdir(full):
        yield from _folder(full, shown)
    elif _kind(full) == "zip":
        yield from _zip(full, shown)
    elif _kind(full) == "tar":
        yield from _tar(full, shown)
    else:
        yield _file(full, shown)


def expand(spec: dict) -> Iterator[Item]:
    """One planned spec → its frames, lazily."""
    kind, full, shown = spec["kind"], spec["path"], spec["shown"]
    if kind == "error":
        yield Item(full, os.path.basename(full), shown, error=spec["error"])
    elif kind == "folder":
        yield from _folder(full, shown)
    elif kind == "zip":
        yield from _zip(full, shown)
    elif kind == "tar":
        yield from _tar(full, shown)
    elif kind == "manifest":
        yield from _manifest(spec)
    elif kind == "glob":
        hits = 0
        for hit in glob.iglob(full, recursive=True):
            hits += 1
            yield from _path(hit, hit if os.path.isabs(shown) else os.path.relpath(hit, spec["cwd"]))
        if not hits:
            yield Item(full, os.path.basename(full), shown, error=f"{shown}: no file matches this pattern")
    else:
        yield _file(full, shown)


def iter_items(paths: Iterable[str | os.PathLike], skip: set[str] | frozenset[str] = frozenset()) -> Iterator[Item]:
    """Every frame of the inputs, once each (first occurrence wins), lazily;
    keys in ``skip`` (frames a resumed run already has) are left out."""
    seen: set[str] = set()
    for spec in plan(paths):
        for item in expand(spec):
            if item.key in seen or item.key in skip:
                continue
            seen.add(item.key)
            yield item


def read(item: Item, max_pixels: int | None) -> np.ndarray:
    """Decode a frame; ImageError (one line, naming it) if it cannot be."""
    if item.data is not None:
        return read_image(item.data, max_pixels=max_pixels, name=item.shown)
    return read_image(item.path, max_pixels=max_pixels, name=item.shown)


__all__ = ["Item", "plan", "expand", "iter_items", "member_problem", "read", "MANIFEST_SUFFIXES", "TAR_SUFFIXES", "ZIP_SUFFIXES"]
