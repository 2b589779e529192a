"""Where an embedder run's starting weights came from (``train_embedder
--init``), so that a continued run keeps its whole training history: the
artifact's learning curve then shows every stage, not only the last one.
"""
from __future__ import annotations

import json
from pathlib import Path

from plankton.files import sha256

KEEP = ("backbone", "best_val_f1_macro", "selected", "history", "train_crops", "val_crops", "hardware", "device", "args", "init_from")


def parent_record(init: str | Path | None) -> dict | None:
    """The run an ``--init`` file came from: its sha256 and, when the file
    sits in a train_embedder folder (next to its ``embedder.json``), that
    run's history and settings, its own parent included. None without --init."""
    if not init:
        return None
    init = Path(init)
    record = {"file": init.name, "sha256": sha256(init) if init.exists() else None}
    info = init.parent / "embedder.json"
    if info.exists():
        record |= {k: v for k, v in json.loads(info.read_text()).items() if k in KEEP}
    return record


def kept_epoch(run: dict) -> int | None:
    """The epoch whose weights a run kept: its last (``selected: last``) or
    the one with the best validation F1-macro (the default, and older runs)."""
    history = run.get("history") or []
    if not history:
        return None
    if run.get("selected") == "last":
        return history[-1]["epoch"]
    return max(history, key=lambda r: r["val_f1_macro"])["epoch"]


def stages(run: dict) -> list[dict]:
    """A run and its ancestors, oldest first."""
    chain = [run]
    while chain[-1].get("init_from"):
        chain.append(chain[-1]["init_from"])
    return chain[::-1]


def chained_history(run: dict) -> list[dict]:
    """One learning curve over all stages: each stage's epochs up to the one
    it kept (the next stage started from those weights), numbered on from
    there, with a ``stage`` field (1 = the first run)."""
    curve, offset = [], 0
    chain = stages(run)
    for i, st in enumerate(chain):
        history = st.get("history") or []
        stop = kept_epoch(st) if i < len(chain) - 1 else None
        curve += [r | {"epoch": offset + r["epoch"], "stage": i + 1} for r in history if stop is None or r["epoch"] <= stop]
        offset += stop or 0
    return curve


def summary(run: dict) -> dict:
    """The artifact's record of an embedder run: ``history`` over all stages
    (chained_history) and one entry per stage with its epochs, the epoch it
    kept, wall time, hardware and settings; ``init_sha256`` names the
    weights a continued stage started from."""
    chain = stages(run)
    rows = []
    for i, st in enumerate(chain):
        history = st.get("history") or []
        rows.append({"epochs_done": len(history), "kept_epoch": kept_epoch(st), "wall_s": (history or [{}])[-1].get("wall_s"),
                     "hardware": st.get("hardware"), "device": st.get("device"), "args": st.get("args"),
                     "init_sha256": (st.get("init_from") or {}).get("sha256") if i else None})
    return {"history": chained_history(run), "stages": rows}
