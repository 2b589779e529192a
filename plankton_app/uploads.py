"""Reading uploads safely: images and zips of images, in memory, with
limits for untrusted input. Every unusable file becomes one line in
``problems``; nothing is extracted to disk."""
from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from plankton.files import one_line
from plankton.run.inputs import member_problem

# Limits for untrusted uploads (each can be overridden by an environment variable).
MAX_FRAMES = int(os.environ.get("PLANKTON_APP_MAX_FRAMES", 20))
MAX_PIXELS = int(os.environ.get("PLANKTON_APP_MAX_PIXELS", 25_000_000))
MAX_FILE_BYTES = int(os.environ.get("PLANKTON_APP_MAX_FILE_BYTES", 100 * 2**20))
MAX_ZIP_MEMBERS = 1000
MAX_ZIP_BYTES = 400 * 2**20


class InputError(ValueError):
    """Nothing in an upload (or a request) could be used; the message says why."""


@dataclass
class Source:
    """One frame to decode: a display name and its encoded bytes."""

    name: str
    data: bytes


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is skipped ("" = silently), or None to read it: the
    command line's rules (``plankton.run.inputs.member_problem``), and a word
    for a person about members that are not images or are encrypted."""
    if info.is_dir():
        return ""
    why = member_problem(info.filename)
    if why == "" and not any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(info.filename.replace("\\", "/")).parts):
        return "not an image file, skipped"
    if why is None and info.flag_bits & 0x1:
        return "encrypted, skipped"
    return why


def iter_zip(path: str | Path, name: str, problems: list[str], max_member_bytes: int = MAX_FILE_BYTES) -> Iterator[Source]:
    """Image members of a zip, read in memory one at a time (nothing is
    extracted to disk). Directories, hidden files, ``..`` or absolute
    paths, nested archives and non-images are skipped; the archive is
    refused if it has too many members or too many uncompressed bytes."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        problems.append(f"{name}: not a valid zip file ({one_line(e)})")
        return
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_ZIP_MEMBERS:
            problems.append(f"{name}: {len(infos)} members exceeds the limit of {MAX_ZIP_MEMBERS}")
            return
        total = sum(i.file_size for i in infos)
        if total > MAX_ZIP_BYTES:
            problems.append(f"{name}: {total} uncompressed bytes exceeds the limit of {MAX_ZIP_BYTES}")
            return
        found = 0
        for info in infos:
            why = _member_problem(info)
            member = f"{name}/{info.filename}"
            if why is not None:
                if why:
                    problems.append(f"{member}: {why}")
                continue
            if info.file_size > max_member_bytes:
                problems.append(f"{member}: {info.file_size} bytes exceeds the limit of {max_member_bytes}")
                continue
            try:
                with zf.open(info) as f:
                    data = f.read(max_member_bytes + 1)  # bounded, whatever the header claims
            except (RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as e:
                problems.append(f"{member}: cannot read from the zip ({one_line(e)})")
                continue
            if len(data) > max_member_bytes:
                problems.append(f"{member}: more than {max_member_bytes} bytes, skipped")
                continue
            found += 1
            yield Source(member, data)
        if not found:
            problems.append(f"{name}: no image files inside")


def iter_sources(paths: Iterable[str | os.PathLike], problems: list[str]) -> Iterator[Source]:
    """Uploaded files (images or zips of images) → frames to decode, lazily.
    Unusable files add a one-line message to ``problems``."""
    for p in paths:
        p = Path(p)
        name = p.name
        try:
            size = p.stat().st_size
        except OSError:
            problems.append(f"{name}: file not found")
            continue
        if p.suffix.lower() == ".zip":
            yield from iter_zip(p, name, problems)
            continue
        if size > MAX_FILE_BYTES:
            problems.append(f"{name}: {size} bytes exceeds the limit of {MAX_FILE_BYTES}")
            continue
        yield Source(name, p.read_bytes())

