"""Typed results. Field names carry their format: ``xyxy`` is pixels in the
frame, ``score`` is the detector's confidence, ``similarity`` is cosine."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

UNKNOWN = "unknown"
# A class of objects that people marked as not plankton (debris, bubbles...): the
# identifier matches against it like a species, but answers ``unknown`` for it.
NOT_PLANKTON = "not plankton"


@dataclass(frozen=True)
class Detections:
    """Detector output for one frame.

    xyxy: N×4 float32, pixels (x1, y1, x2, y2) in the original frame.
    score: N float32 in [0, 1].
    """

    xyxy: np.ndarray
    score: np.ndarray

    def __post_init__(self):
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        if len(xyxy) != len(score):
            raise ValueError(f"{len(xyxy)} boxes but {len(score)} scores")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, index) -> "Detections":
        return Detections(self.xyxy[index], self.score[index])


@dataclass(frozen=True)
class Candidate:
    species: str
    similarity: float


@dataclass(frozen=True)
class Identification:
    """Best match for one embedding; ``species`` is ``UNKNOWN`` below threshold."""

    species: str
    similarity: float
    topk: tuple[Candidate, ...]


@dataclass(frozen=True)
class ObjectResult:
    """One object: box (pixels), detection score, species or ``unknown``,
    its cosine similarity and the top-k candidate species. ``corrected``:
    a person set the species (it is no longer the model's answer).
    ``embedding``: the D unit embedding it was identified from, when the
    cascade made it (kept for ``discover``; not part of equality)."""

    xyxy: tuple[float, float, float, float]
    det_score: float
    species: str
    similarity: float
    topk: tuple[Candidate, ...] = ()
    corrected: bool = False
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def is_unknown(self) -> bool:
        return self.species == UNKNOWN


@dataclass
class FrameResult:
    """All objects of one frame. ``image`` is the file name (or a label).
    ``stats``: image statistics of the decoded frame (``quality.image_stats``),
    filled in by the per-frame step of ``predict``."""

    image: str
    width: int
    height: int
    objects: list[ObjectResult] = field(default_factory=list)
    stats: dict = field(default_factory=dict, compare=False)

    @property
    def counts(self) -> dict[str, int]:
        """Objects per species (``unknown`` included), most common first."""
        return dict(Counter(o.species for o in self.objects).most_common())
