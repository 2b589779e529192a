"""The cascade: frame → detections → one batch of crops → embeddings →
species or unknown. Models run once per frame at the lowest detector
threshold; thresholds are applied afterwards, so they can move freely."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plankton.counting.quantify import CountModel
from plankton.model.detector import Detector
from plankton.geometry import fragments
from plankton.model.identifier import Identifier
from plankton.model.prototypes import identify
from plankton.model.prototypes import shifted_thresholds as rule
from plankton.results import Detections, FrameResult, ObjectResult


def shifted_thresholds(cls_conf: float, offsets: np.ndarray, n_classes: int) -> np.ndarray:
    """C per-class thresholds when the global one is ``cls_conf`` (zero
    offsets when none): ``prototypes.shifted_thresholds``, the one rule, which
    never moves a class past 1."""
    off = offsets if len(offsets) == n_classes else np.zeros(n_classes, np.float32)
    return rule(cls_conf, off)


@dataclass
class FrameAnalysis:
    """What the models computed for one frame, before thresholds.

    detections: N boxes (xyxy pixels) with scores ≥ ``det_floor``.
    embeddings: N×D unit embeddings. similarity: N×C cosine to each class
    in ``names``. offsets: C shifts of each class's threshold from the
    global one (per-class thresholds; zeros when there are none).
    ``resolve`` turns it into a FrameResult in microseconds.
    """

    image: str
    width: int
    height: int
    detections: Detections
    embeddings: np.ndarray
    similarity: np.ndarray
    names: list[str]
    det_floor: float
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    containment: float | None = None  # the fragment rule (see ``geometry.fragments``); None: off

    def thresholds(self, cls_conf: float) -> np.ndarray:
        """C per-class thresholds when the global one is ``cls_conf``."""
        return shifted_thresholds(cls_conf, self.offsets, len(self.names))

    def resolve(self, det_conf: float, cls_conf: float, topk: int = 3) -> FrameResult:
        return self.resolve_indexed(det_conf, cls_conf, topk)[0]

    def resolve_indexed(self, det_conf: float, cls_conf: float, topk: int = 3) -> tuple[FrameResult, np.ndarray]:
        """(FrameResult, K indices into ``detections`` of its objects, in
        order): the one place where the detector threshold and the fragment
        rule pick the objects, for everything that must point back at them."""
        if det_conf < self.det_floor:
            raise ValueError(f"det_conf {det_conf} is below the floor {self.det_floor} these detections were made at")
        keep = np.flatnonzero(self.detections.score >= det_conf)
        ids = identify(self.similarity[keep], self.names, self.thresholds(cls_conf), topk)
        if self.containment is not None and len(keep) > 1:
            whole = ~fragments(self.detections.xyxy[keep], [r.species for r in ids], self.containment)
            keep, ids = keep[whole], [r for r, w in zip(ids, whole) if w]
        objects = [
            ObjectResult(tuple(float(v) for v in self.detections.xyxy[i]), float(self.detections.score[i]), r.species, r.similarity, r.topk,
                         embedding=self.embeddings[i])
            for i, r in zip(keep, ids)
        ]
        return FrameResult(self.image, self.width, self.height, objects), keep


class Cascade:
    """Composes a Detector and an Identifier (with prototypes).

    det_floor: the lowest detector threshold a later ``resolve`` may ask
    for. config: the model's config.json as a dict ({} when built in code).
    path: the model folder it was loaded from, if any. runtime: "torch",
    "onnx" or "onnx-int8", whichever runs the networks. counts: the
    model's count calibration (``quantify.CountEvidence``), when it has one:
    its ``counting`` section then sets the default detector threshold (the
    counting point) and the fragment rule; ``det_floor`` stays the
    recall-first candidate floor."""

    def __init__(self, detector: Detector, identifier: Identifier, det_floor: float | None = None, *,
                 config: dict | None = None, path: str | Path | None = None, runtime: str = "torch", counts=None):
        if identifier.prototypes is None:
            raise ValueError("a Cascade needs an identifier with prototypes")
        self.detector, self.identifier = detector, identifier
        self.det_floor = min(detector.cfg.conf, 0.05) if det_floor is None else det_floor
        self.config: dict = config or {}
        self.path: Path | None = Path(path) if path is not None else None
        self.runtime = runtime
        self.counts = counts

    @property
    def frames_in_flight(self) -> int:
        """Frames worth analysing at once from separate threads: the
        OpenVINO streams the networks were compiled with, else 1 (one
        ONNX Runtime or PyTorch call already uses every core)."""
        return min(int(getattr(self.detector.model, "streams", 1)), int(getattr(self.identifier.model, "streams", 1)))

    @property
    def counting(self) -> dict:
        return self.config.get("counting") or {}

    @property
    def det_conf(self) -> float:
        """The default detector threshold: the counting point where the
        model has one, else the detector's own."""
        return float(self.counting.get("det_conf", self.detector.cfg.conf))

    @property
    def containment(self) -> float | None:
        c = self.counting.get("containment")
        return float(c) if c is not None and c <= 1 else None

    @property
    def cls_conf(self) -> float:
        return self.identifier.cfg.cls_conf

    @property
    def class_names(self) -> list[str]:
        return list(self.identifier.prototypes.names)

    def count_model(self, det_conf: float | None = None, cls_conf: float | None = None):
        """The count calibration at a run's thresholds (``quantify.CountModel``),
        or None for a model without one."""
        if self.counts is None:
            return None
        names = self.class_names
        thr = shifted_thresholds(self.cls_conf if cls_conf is None else cls_conf, self.identifier.cfg.offsets(names), len(names))
        return CountModel(self.counts, thr, self.det_conf if det_conf is None else det_conf)

    def analyse_boxes(self, image: np.ndarray, detections: Detections, name: str = "") -> FrameAnalysis:
        """Identify given boxes (ground truth, or a detector's)."""
        emb = self.identifier.embed_boxes(image, detections.xyxy)
        names = self.class_names
        H, W = image.shape[:2]
        return FrameAnalysis(name, W, H, detections, emb, self.identifier.similarity(emb), names,
                             float(detections.score.min(initial=0)), self.identifier.cfg.offsets(names), self.containment)

    def analyse(self, image: np.ndarray, name: str = "", tile: int | None = None, floor: float | None = None) -> FrameAnalysis:
        """H×W×3 uint8 RGB frame → FrameAnalysis at the detector floor."""
        return self.analyse_batch([image], [name], tile, floor)[0]

    def analyse_batch(self, images: list[np.ndarray], names: list[str] | None = None, tile: int | None = None, floor: float | None = None) -> list[FrameAnalysis]:
        floor = self.det_floor if floor is None else floor
        names = names or [""] * len(images)
        dets = self.detector.predict_batch(images, conf=floor, tile=tile)
        out = []
        for image, det, name in zip(images, dets, names):
            a = self.analyse_boxes(image, det, name)
            a.det_floor = floor
            out.append(a)
        return out

    def predict(self, image: np.ndarray, name: str = "", det_conf: float | None = None, cls_conf: float | None = None, tile: int | None = None) -> FrameResult:
        """Frame → FrameResult at the given (default: the model's) thresholds."""
        det_conf = self.det_conf if det_conf is None else det_conf
        a = self.analyse(image, name, tile, floor=min(self.det_floor, det_conf))
        return a.resolve(det_conf, self.cls_conf if cls_conf is None else cls_conf, self.identifier.cfg.topk)
