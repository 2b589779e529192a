"""Resumable batch runs. Each finished frame is appended to
``OUT/.progress.jsonl`` (flushed and fsynced); a killed run leaves at most
a torn last line, which is ignored. ``--resume`` reuses the finished
frames, keyed by path, so none is done twice; the final outputs are only
written, atomically, once every frame is done. The Ray engine appends one
block of frames at a time (one write, one fsync), as its workers finish
them. A frame carries its objects' embeddings (float16) and its image
statistics, so a resumed run and the Ray engine write the same
``embeddings.safetensors`` and ``quality.csv`` as one local run."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from plankton.results import Candidate, FrameResult, ObjectResult

NAME = ".progress.jsonl"


def _pack_embeddings(frame: FrameResult) -> str | None:
    """The objects' embeddings as base64 float16 (``discover`` needs no
    more precision), or None unless every object has one."""
    embs = [o.embedding for o in frame.objects]
    if not embs or any(e is None for e in embs):
        return None
    return base64.b64encode(np.stack(embs).astype("<f2").tobytes()).decode("ascii")


def _unpack_embeddings(text: str | None, n: int) -> list:
    if not text or not n:
        return [None] * n
    flat = np.frombuffer(base64.b64decode(text), dtype="<f2")
    return list(flat.reshape(n, -1).copy()) if flat.size % n == 0 else [None] * n


def frame_to_dict(frame: FrameResult) -> dict:
    d = {"image": frame.image, "width": frame.width, "height": frame.height,
         "objects": [[list(o.xyxy), o.det_score, o.species, o.similarity, [[c.species, c.similarity] for c in o.topk]] for o in frame.objects]}
    emb = _pack_embeddings(frame)
    return d | ({"embeddings": emb} if emb else {}) | ({"stats": frame.stats} if frame.stats else {})


def frame_from_dict(d: dict) -> FrameResult:
    embs = _unpack_embeddings(d.get("embeddings"), len(d["objects"]))
    objects = [ObjectResult(tuple(xyxy), score, species, sim, tuple(Candidate(s, v) for s, v in topk), embedding=e)
               for (xyxy, score, species, sim, topk), e in zip(d["objects"], embs)]
    return FrameResult(d["image"], d["width"], d["height"], objects, stats=dict(d.get("stats") or {}))


class Journal:
    """``settings`` (model, thresholds, tiling) must match for a resume to
    reuse anything; otherwise the run starts over."""

    def __init__(self, out: Path, settings: dict, resume: bool):
        self.path, self.done, self.stale = Path(out) / NAME, {}, False
        if resume and self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            records = []
            for line in lines:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # the line a killed run was writing
                    continue
            if records and records[0].get("settings") == settings:
                self.done = {r["path"]: frame_from_dict(r["frame"]) for r in records[1:] if "path" in r}
            else:
                self.stale = True
        if not self.done:
            self.path.write_text(json.dumps({"settings": settings}) + "\n", encoding="utf-8")
        self._file = open(self.path, "a", encoding="utf-8")

    def add(self, key: str, frame: FrameResult) -> None:
        self.add_many([(key, frame_to_dict(frame))])

    def add_many(self, records: list[tuple[str, dict]]) -> None:
        """(key, frame as ``frame_to_dict`` makes it) pairs, made durable together."""
        if not records:
            return
        self._file.write("".join(json.dumps({"path": key, "frame": frame}) + "\n" for key, frame in records))
        self._file.flush()
        os.fsync(self._file.fileno())

    def finish(self) -> None:
        """The outputs are complete: the journal is no longer needed."""
        self._file.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._file.close()
