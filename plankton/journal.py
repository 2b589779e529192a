"""Resumable batch runs. Each finished frame is appended to
``OUT/.progress.jsonl`` (flushed and fsynced); a killed run leaves at most
a torn last line, which is ignored. ``--resume`` reuses the finished
frames, keyed by path, so none is done twice; the final outputs are only
written, atomically, once every frame is done. The Ray engine appends one
block of frames at a time (one write, one fsync), as its workers finish
them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .results import Candidate, FrameResult, ObjectResult

NAME = ".progress.jsonl"


def frame_to_dict(frame: FrameResult) -> dict:
    return {"image": frame.image, "width": frame.width, "height": frame.height,
            "objects": [[list(o.xyxy), o.det_score, o.species, o.similarity, [[c.species, c.similarity] for c in o.topk]] for o in frame.objects]}


def frame_from_dict(d: dict) -> FrameResult:
    objects = [ObjectResult(tuple(xyxy), score, species, sim, tuple(Candidate(s, v) for s, v in topk)) for xyxy, score, species, sim, topk in d["objects"]]
    return FrameResult(d["image"], d["width"], d["height"], objects)


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
