"""A user's upload as the app holds it: the frames' cached analyses
(``Computed``, shared across sessions), the session's own prototypes when
it enrolled species, and ``View``, the session resolved at thresholds."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from plankton.pipeline.cascade import FrameAnalysis
from plankton.sample.measure import Sample
from plankton.model.prototypes import Prototypes
from plankton.results import NOT_PLANKTON, UNKNOWN, FrameResult
from plankton.run.writers import CSV_COLUMNS, csv_text, detection_rows

from .uploads import InputError

@dataclass
class Computed:
    """The thresholds-free result of one frame's content (shared): the
    analysis at the detector floor, a downscaled copy for drawing, (with a
    validation set) map positions and a native-resolution crop per
    detection. ``thumbs`` caches display crops made from those on first
    use (``plankton_app.thumbs``): most objects are never looked at."""

    analysis: FrameAnalysis
    display: np.ndarray
    scale: float
    layout: np.ndarray | None = None
    crops: list[np.ndarray] = field(default_factory=list)  # native-resolution object crops, for exports and thumbnails
    thumbs: dict = field(default_factory=dict, repr=False)  # (detection, µm per pixel) → (data URI, width, height)
    stats: dict = field(default_factory=dict)  # plankton.quality.image_stats of the decoded frame (Sample: watch the frames)
    source: bytes = field(default=b"", repr=False)  # the file as uploaded: Compare runs model B on the same pixels as model A


@dataclass
class Frame:
    name: str
    computed: Computed

    @property
    def analysis(self) -> FrameAnalysis:
        return self.computed.analysis


@dataclass(frozen=True)
class Correction:
    """A person's label for one detected object: the frame it is in (name
    and size), its box (xyxy pixels), the label (a species, a new name, or
    ``NOT_PLANKTON``) and the object's embedding, which is what a new
    model version learns from."""

    image: str
    width: int
    height: int
    xyxy: tuple[float, float, float, float]
    label: str
    embedding: np.ndarray = field(repr=False, compare=False)


@dataclass
class Session:
    """One user's upload: frames (cached analyses), object ids (the frame's
    start + detection index at the floor), the session's prototypes (the
    model's plus any enrolled species), their similarities and each
    class's threshold offset."""

    frames: list[Frame] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    prototypes: Prototypes | None = None  # None: the model's own
    similarity: list[np.ndarray] | None = None  # per frame, for ``prototypes``
    val_similarity: np.ndarray | None = None  # validation set vs ``prototypes``
    class_offsets: np.ndarray | None = None  # per class of ``prototypes``
    enrolled: list[str] = field(default_factory=list)
    corrections: dict[int, str] = field(default_factory=dict)  # object id → label, in this upload
    history: list[tuple[int, str | None]] = field(default_factory=list)  # (object id, its label before the change), for undo
    earlier: list[Correction] = field(default_factory=list)  # corrections of the session's earlier uploads
    sample: Sample = field(default_factory=Sample)
    version: str | None = None  # a model version saved from this session, now in use
    @property
    def starts(self) -> list[int]:
        out, n = [], 0
        for f in self.frames:
            out.append(n)
            n += len(f.analysis.detections)
        return out

    @property
    def n_detections(self) -> int:
        return sum(len(f.analysis.detections) for f in self.frames)

    def analysis(self, i: int) -> FrameAnalysis:
        """Frame i's analysis, named, with the session's prototypes."""
        f = self.frames[i]
        a = f.analysis
        if self.prototypes is None:
            return dataclasses.replace(a, image=f.name)
        return dataclasses.replace(a, image=f.name, similarity=self.similarity[i], names=list(self.prototypes.names), offsets=self.class_offsets)

    def emptied(self) -> "Session | None":
        """The session without its upload, keeping what outlives one: enrolled
        species, corrections (by box and embedding), the sample's scale and
        volume (None when there is nothing to keep)."""
        if self.prototypes is None and not self.corrections and not self.earlier and self.sample == Sample():
            return None
        return dataclasses.replace(self, frames=[], messages=[], similarity=[], corrections={}, history=[], earlier=self.all_corrections())

    def all_corrections(self) -> list[Correction]:
        """The corrections of earlier uploads, then this upload's, by object id."""
        now = []
        for oid, label in sorted(self.corrections.items()):
            fi, di = self.locate(oid)
            a = self.frames[fi].analysis
            now.append(Correction(self.frames[fi].name, a.width, a.height, tuple(float(v) for v in a.detections.xyxy[di]), label,
                                  a.embeddings[di]))
        return list(self.earlier) + now

    def locate(self, object_id: int) -> tuple[int, int]:
        """Object id → (frame index, detection index)."""
        for i, (off, f) in enumerate(zip(self.starts, self.frames)):
            if off <= object_id < off + len(f.analysis.detections):
                return i, object_id - off
        raise KeyError(object_id)


@dataclass
class View:
    """A session resolved at thresholds: what the UI shows."""

    frames: list[FrameResult]
    ids: list[np.ndarray]  # object ids of each frame's objects, in order
    det_conf: float
    cls_conf: float
    colours: dict = field(default_factory=dict)  # species → RGB for this upload (``palette.for_upload``)

    @property
    def n_objects(self) -> int:
        return sum(len(f.objects) for f in self.frames)

    @property
    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for f in self.frames:
            for o in f.objects:
                c[o.species] = c.get(o.species, 0) + 1
        known = sorted(((k, v) for k, v in c.items() if k != UNKNOWN), key=lambda kv: (-kv[1], kv[0]))
        return dict(known + ([(UNKNOWN, c[UNKNOWN])] if UNKNOWN in c else []))

    def objects(self) -> Iterator[tuple[int, FrameResult, object]]:
        for fr, ids in zip(self.frames, self.ids):
            for i, o in zip(ids, fr.objects):
                yield int(i), fr, o

    def to_json(self) -> dict:
        """JSON-able result for API clients."""
        frames = []
        for fr, ids in zip(self.frames, self.ids):
            objs = [{"id": int(i), "box": [round(v, 1) for v in o.xyxy], "det_score": round(o.det_score, 4), "species": o.species,
                     "similarity": round(o.similarity, 4), "top": [{"species": c.species, "similarity": round(c.similarity, 4)} for c in o.topk],
                     "corrected": o.corrected}
                    for i, o in zip(ids, fr.objects)]
            frames.append({"image": fr.image, "width": fr.width, "height": fr.height, "counts": fr.counts, "objects": objs})
        return {"det_conf": self.det_conf, "cls_conf": self.cls_conf, "n_objects": self.n_objects, "counts": self.counts, "frames": frames}

    def csv(self, um_per_px: float | None = None, counter=None) -> str:
        """detections.csv of the view; ``counter`` (a CountModel) adds the objects' probabilities."""
        return csv_text(detection_rows(self.frames, um_per_px, counter), CSV_COLUMNS)


def parse_ids(text: str) -> list[int]:
    """"3, 5 7-9" → [3, 5, 7, 8, 9]; InputError on anything else."""
    ids: list[int] = []
    for tok in str(text or "").replace(",", " ").replace(";", " ").split():
        try:
            if "-" in tok.strip("-"):
                a, b = tok.split("-", 1)
                a, b = int(a), int(b)
                if b < a or b - a > 1000:
                    raise ValueError
                ids += list(range(a, b + 1))
            else:
                ids.append(int(tok))
        except ValueError:
            raise InputError(f"Cannot read {tok!r} as an object number (use e.g. 3, 5, 7-9).") from None
    return ids

