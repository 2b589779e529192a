"""What a visitor may see of the server: no path on its disk, in any
message, table or download. One rule, used by every message that quotes
an exception or a file."""
from __future__ import annotations

import re
from pathlib import Path

# An absolute POSIX or Windows path (or ~/...): its folders are cut, its last part stays (a file's own name says what failed).
_PATH = re.compile(r"(?<![\w.:/])(?:/|~/|[A-Za-z]:\\)(?:[^\s/\\()'\"]+[/\\])*([^\s/\\()'\"]+)")


def public(text, *folders: str | Path) -> str:
    """``text`` with each of ``folders`` (and any absolute path) cut to its last part."""
    text = str(text)
    for folder in folders:
        if folder is not None and str(folder) not in ("", "."):
            text = text.replace(str(folder), Path(folder).name)
    return _PATH.sub(r"\1", text)


__all__ = ["public"]
