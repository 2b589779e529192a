"""Files the app offers for download, written under the system temp dir and
named by their content, so repeated slider moves reuse the same files.
Gradio serves its own copies; old folders are pruned now and then."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from plankton.files import atomic_write_bytes

ROOT = Path(tempfile.gettempdir()) / "plankton-app"
MAX_AGE_S = 3 * 3600
_last_prune = [0.0]


def prune(max_age: float = MAX_AGE_S, every: float = 600) -> None:
    """Remove download folders older than ``max_age`` seconds, at most every ``every`` seconds."""
    now = time.time()
    if now - _last_prune[0] < every:
        return
    _last_prune[0] = now
    for folder in ROOT.glob("*"):
        try:
            if now - folder.stat().st_mtime > max_age:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def write(files: dict[str, str | bytes]) -> list[str]:
    """{file name: text or bytes} → their paths, in one folder named by the
    hash of all contents (a file already there is not written again)."""
    prune()
    blobs = {name: data.encode("utf-8") if isinstance(data, str) else data for name, data in files.items()}
    digest = hashlib.sha256()
    for name, data in blobs.items():
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    folder = ROOT / digest.hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in blobs.items():
        path = folder / name
        if not path.exists():
            atomic_write_bytes(path, data)
        paths.append(str(path))
    return paths
