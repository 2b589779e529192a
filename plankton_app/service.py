"""What the web app does, without the web: analysing uploads (each frame's
models run once, at the detector's floor, and are cached by content),
re-applying thresholds in milliseconds, enrolling species per session, and
what the model's stored validation set says at any threshold. ``app.py``
and ``plankton_app.tabs`` are thin Gradio layers over ``Service``."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from plankton.pipeline.cascade import Cascade
from plankton.sample.ecotaxa import object_crop
from plankton.files import one_line
from plankton.artifact.gallery import FILE as GALLERY_FILE
from plankton.artifact.gallery import Exemplars
from plankton.images import ImageError, read_image
from plankton import palette
from plankton.quality import image_stats
from plankton.results import NOT_PLANKTON, UNKNOWN
from plankton.artifact.validation import FILE as VALIDATION_FILE
from plankton.artifact.validation import ValidationSet
from plankton.run.writers import coco_results

from . import render
from .answers import ValidationAnswers
from .versions import Versions
from .privacy import public
from .render import downscale
from .session import Computed, Frame, Session, View
from .uploads import MAX_FRAMES, MAX_PIXELS, InputError, iter_sources

CACHE_FRAMES = 16  # analysed frames kept across sessions (keyed by file content)


class Service(ValidationAnswers, Versions):
    """A loaded model and everything the app does with it (what its
    stored validation set says: ``ValidationAnswers``; a session's own
    species and saved versions: ``Versions``)."""

    def __init__(self, cascade: Cascade, description: str = ""):
        self.cascade = cascade
        self.config = cascade.config
        self.folder = cascade.path or Path(".")
        self.description = description or str(self.folder)
        self.topk = cascade.identifier.cfg.topk
        self.problems: list[str] = []  # optional artifact files that could not be read
        self.hub_repo: str | None = None  # the Hub repo the model came from (``load``): Compare offers its revisions
        self.validation = self._optional(VALIDATION_FILE, ValidationSet.load)
        self.metrics = self._optional("metrics.json", lambda p: json.loads(Path(p).read_text(encoding="utf-8")))
        self.reliability = self.folder / "reliability.png" if (self.folder / "reliability.png").is_file() else None
        self.exemplars = self._optional(GALLERY_FILE, Exemplars.load)
        self._cache: OrderedDict[str, Computed] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._colours = palette.for_prototypes(cascade.identifier.prototypes)
        self._pairs = palette.look_alikes(cascade.identifier.prototypes)
        palette.use(self._colours)  # what is drawn outside an upload (legends, the Species tab) uses one mapping

    @classmethod
    def load(cls, folder: str | Path | None = None, repo_id: str | None = None, revision: str | None = None, device: str = "cpu") -> "Service":
        """Load the model once: ``folder``; else the Hub repo (argument or
        $PLANKTON_MODEL_REPO), its cached copy, $PLANKTON_MODEL_DIR or the
        bundled model, in that order (``plankton.hub.load_resolved``). The
        runtime is "auto": ONNX Runtime where the artifact carries current
        ONNX files (same outputs, faster on the CPU)."""
        from plankton.hub import ENV_REPO

        if folder is not None:
            from plankton.pipeline.load import load_artifact

            service = cls(load_artifact(folder, device=device, runtime="auto"), f"--model {folder}")
        else:
            from plankton.hub import load_resolved

            cascade, resolved = load_resolved(repo_id, revision, device=device, runtime="auto")
            service = cls(cascade, resolved.description)
        service.hub_repo = repo_id or os.environ.get(ENV_REPO, "").strip() or None  # whose revisions Compare may load
        return service

    def _optional(self, name: str, loader):
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return loader(path)
        except Exception as e:  # a broken optional file must not stop the app
            self.problems.append(f"{name}: {one_line(e)}")
            return None

    # ---- thresholds
    @property
    def det_floor(self) -> float:
        return float(self.cascade.det_floor)

    @property
    def det_conf(self) -> float:
        return float(self.cascade.det_conf)

    @property
    def cls_conf(self) -> float:
        return float(self.cascade.cls_conf)

    @property
    def class_names(self) -> list[str]:
        return list(self.cascade.identifier.prototypes.names)

    # ---- analysis (runs the models)
    def compute(self, image: np.ndarray, key: str | None = None) -> Computed:
        """Run both models on one H×W×3 frame at the detector floor (cached by ``key``)."""
        if key is not None:
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
        with self._model_lock:
            analysis = self.cascade.analyse(image, "")
        display, scale = downscale(image)
        layout = self.validation.place(analysis.embeddings) if self.validation is not None else None
        crops = [np.ascontiguousarray(object_crop(image, b)) for b in analysis.detections.xyxy]
        computed = Computed(analysis, np.ascontiguousarray(display), scale, layout, crops)
        computed.stats = image_stats(image)  # while the full frame exists, as predict measures it (quality.csv)
        if key is not None:
            with self._cache_lock:
                self._cache[key] = computed
                while len(self._cache) > CACHE_FRAMES:
                    self._cache.popitem(last=False)
        return computed

    def analyse(self, paths: Iterable[str | os.PathLike], progress: Callable[[float, str], None] | None = None,
                previous: Session | None = None) -> Session:
        """Uploaded files → a Session (models run once per new frame).
        Unusable files become ``session.messages``; InputError if nothing
        could be used. Enrolled species, corrections and the sample's
        settings of ``previous`` carry over."""
        paths = [p for p in (paths or []) if p]
        if not paths:
            raise InputError("No file uploaded.")
        problems: list[str] = []
        session = Session()
        for src in iter_sources(paths, problems):
            if len(session.frames) >= MAX_FRAMES:  # stop reading: the rest is not even decompressed
                problems.append(f"more than {MAX_FRAMES} frames: only the first {MAX_FRAMES} were analysed")
                break
            try:
                image = read_image(src.data, max_pixels=MAX_PIXELS, name=src.name)
            except ImageError as e:
                problems.append(str(e))
                continue
            if progress is not None:
                progress(len(session.frames) / max(len(paths), len(session.frames) + 1), f"Analysing {src.name}")
            key = hashlib.sha256(src.data).hexdigest()
            try:
                computed = self.compute(image, key)
            except MemoryError:  # e.g. crops of a 200000×10 frame: skip it, keep serving
                problems.append(f"{src.name}: out of memory analysing a {image.shape[1]}x{image.shape[0]} frame")
                continue
            computed.source = computed.source or src.data
            session.frames.append(Frame(src.name, computed))
        session.messages = problems
        if not session.frames:
            raise InputError("No usable image in the upload. " + " · ".join(problems))
        if previous is not None:  # what outlives an upload: enrolled species, corrections, the sample, a saved version
            session = dataclasses.replace(session, earlier=previous.all_corrections(), sample=previous.sample, version=previous.version)
            if previous.prototypes is not None:
                session = self._with_prototypes(session, previous.prototypes, previous.enrolled)
        return session

    # ---- thresholds (fast; no model)
    def clamp(self, det_conf: float | None, cls_conf: float | None) -> tuple[float, float]:
        det = self.det_conf if det_conf is None else float(det_conf)
        cls = self.cls_conf if cls_conf is None else float(cls_conf)
        return max(det, self.det_floor), cls

    def refilter(self, session: Session, det_conf: float | None = None, cls_conf: float | None = None, keep_rejected: bool = False) -> View:
        """Apply thresholds to cached analyses (no model runs), then the
        session's corrections: a corrected object takes its label (and is
        marked corrected), one marked not plankton leaves the results
        (unless ``keep_rejected``: Review shows them, to be undone)."""
        det, cls = self.clamp(det_conf, cls_conf)
        frames, ids = [], []
        for i, off in enumerate(session.starts):
            a = session.analysis(i)
            fr, kept = a.resolve_indexed(det, cls, self.topk)
            oid = off + kept
            if session.corrections:
                pairs = [(k, o if k not in session.corrections else dataclasses.replace(o, species=session.corrections[k], corrected=True))
                         for k, o in zip(oid.tolist(), fr.objects)]
                pairs = [(k, o) for k, o in pairs if keep_rejected or o.species != NOT_PLANKTON]
                fr = dataclasses.replace(fr, objects=[o for _, o in pairs])
                oid = np.array([k for k, _ in pairs], int)
            frames.append(fr)
            ids.append(oid)
        return View(frames, ids, det, cls, self.colours(session))

    def colours(self, session: Session) -> dict:
        """Species colours for this upload: distinct ones for the species it
        holds (top-1 at the detector floor, and names given in corrections),
        so they do not move with the sliders."""
        found: Counter = Counter(session.corrections.values())
        for i in range(len(session.frames)):
            a = session.analysis(i)
            if len(a.similarity):
                found.update(np.asarray(a.names, dtype=object)[np.asarray(a.similarity).argmax(1)].tolist())
        present = [n for n, _ in found.most_common() if n not in (UNKNOWN, NOT_PLANKTON)]
        return palette.for_upload(present, self._pairs, self._colours)

    # ---- corrections
    def correct(self, session: Session, object_id: int, label: str) -> Session:
        """A new session in which object ``object_id`` of the upload is
        ``label``: a known species, a new name, or ``NOT_PLANKTON``; an empty
        label removes the correction."""
        label = " ".join(str(label or "").split())
        if label == UNKNOWN:
            raise InputError(f"'{UNKNOWN}' is the model's answer, not a label; choose a species, a new name, or '{NOT_PLANKTON}'.")
        try:
            object_id = int(object_id)
        except (TypeError, ValueError):
            raise InputError(f"{object_id!r} is not an object number.") from None
        if not 0 <= object_id < session.n_detections:
            raise InputError(f"No object {object_id} in this upload (ids go from 0 to {session.n_detections - 1}).")
        before = session.corrections.get(object_id)
        if (before or "") == label:
            return session
        corrections = {k: v for k, v in session.corrections.items() if k != object_id} | ({object_id: label} if label else {})
        return dataclasses.replace(session, corrections=corrections, history=session.history + [(object_id, before)])

    def undo(self, session: Session) -> tuple[Session, int]:
        """The session before its last correction (of this upload), and the
        object it concerned; InputError when there is nothing to undo."""
        if not session.history:
            raise InputError("Nothing to undo: no corrections made since this upload.")
        object_id, before = session.history[-1]
        corrections = {k: v for k, v in session.corrections.items() if k != object_id} | ({object_id: before} if before else {})
        return dataclasses.replace(session, corrections=corrections, history=session.history[:-1]), object_id

    def corrections_coco(self, session: Session) -> dict:
        """The session's corrections as a COCO file: the frames (file names as
        uploaded; a zip member by its path inside the zip), the boxes and
        their labels. Input for ``python -m plankton classify``, for
        ``python -m plankton enrol`` and for training."""
        corrections = session.all_corrections()
        cats = [dict(c) for c in self.config.get("categories", [])]
        for label in sorted({c.label for c in corrections} - {c["name"] for c in cats}):
            cats.append({"id": max((c["id"] for c in cats), default=0) + 1, "name": label})
        by_name = {c["name"]: c["id"] for c in cats}
        images: dict[str, dict] = {}
        anns = []
        for c in corrections:
            name = c.image.split(".zip/", 1)[-1]
            im = images.setdefault(name, {"id": len(images) + 1, "file_name": name, "width": c.width, "height": c.height})
            x1, y1, x2, y2 = c.xyxy
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": by_name[c.label], "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                         "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
        return {"info": {"description": f"corrections made in the plankton app on model {self.config.get('name')!r}"},
                "images": list(images.values()), "categories": cats, "annotations": anns}

    def coco(self, view: View, session: Session | None = None) -> dict:
        """The view as COCO results; species enrolled or named by corrections get categories too."""
        cats = [dict(c) for c in self.config.get("categories", [])] or [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        extra = list(session.enrolled if session else []) + sorted({o.species for f in view.frames for o in f.objects if o.corrected})
        for name in extra:
            if name not in {c["name"] for c in cats} and name != UNKNOWN:
                cats.append({"id": max((c["id"] for c in cats), default=0) + 1, "name": name})
        return coco_results(view.frames, cats)

    # ---- the sample: sizes, concentrations, exports
    def counter(self, view: View):
        """The model's count calibration at the view's thresholds
        (``quantify.CountModel``), or None for a model without one."""
        return self.cascade.count_model(view.det_conf, view.cls_conf)

    def sample_files(self, session: Session, view: View, meta=None, sample_id: str | None = None) -> dict[str, str | bytes]:
        """{file name: contents} of the sample's downloads at these thresholds,
        corrections applied: detections with sizes, counts and concentration
        (with a volume), and each format's download (``plankton.sample.formats``:
        EcoTaxa, Darwin Core). ``meta``: the sample's place and time (SampleMeta);
        ``sample_id``: its id in the exports (default: a new unique one)."""
        from plankton.run.writers import sample_tables

        from . import exports

        sample_id = sample_id or exports.default_sample_id()
        counter = self.counter(view)
        files: dict[str, str | bytes] = {"detections.csv": view.csv(session.sample.um_per_px, counter)}
        files |= sample_tables(view.frames, session.sample, [n for n in self.class_names if n != NOT_PLANKTON], meta, counter)
        files |= exports.downloads(self, session, view, meta, sample_id, files.get("concentration.csv"))
        return files

    # ---- the model
    def model_info(self) -> dict:
        c = self.config
        prot = c.get("prototypes", {})
        return {
            "name": c.get("name"),
            "source": self.public(self.description),
            "created": c.get("created"),
            "versions": c.get("versions", {}),
            "training": c.get("training") or (self.metrics or {}).get("training"),
            "classes": list(prot.get("names", self.class_names)),
            "runtime": self.cascade.runtime,
            "detector": {k: c.get("detector", {}).get(k) for k in ("architecture", "imgsz", "conf", "tile")},
            "embedder": {k: c.get("embedder", {}).get(k) for k in ("backbone", "dim", "size_features")} | {"crop": c.get("identifier", {}).get("crop")},
            "defaults": {"det_conf": self.det_conf, "cls_conf": self.cls_conf},  # where the app's sliders start
            "thresholds": {"det_floor": self.det_floor, "det_conf": self.det_conf, "cls_conf": self.cls_conf,
                           "class_thresholds": dict(self.cascade.identifier.cfg.class_thresholds)},
            "counting": c.get("counting"),  # the counting point and its cross-validated figures
            "has_validation": self.validation is not None,
            "metrics": {k: v for k, v in (self.metrics or {}).items() if k in ("detection", "end_to_end", "split")}
                       | {"identification": {k: v for k, v in ((self.metrics or {}).get("identification") or {}).items() if not isinstance(v, (list, dict))}},
            "problems": [self.public(p) for p in self.problems],
        }

    def public(self, text: str) -> str:
        """``text`` with the model's folder, and any absolute path, cut to its last part: the server's disk is private."""
        return public(text, self.folder)

    # ---- start-up
    def warm_up(self, frame: str | os.PathLike | None = None) -> float:
        """One full inference, so the first user does not pay for lazy
        initialisation; ``frame`` (e.g. an example) stays cached, so its
        first use is instant. Returns seconds taken."""
        t = time.perf_counter()
        key = None
        if frame is not None:
            data = Path(frame).read_bytes()
            image, key = read_image(data, max_pixels=MAX_PIXELS, name=str(frame)), hashlib.sha256(data).hexdigest()
        else:
            image = np.random.default_rng(0).integers(150, 230, size=(720, 1280, 3), dtype=np.uint8)
        computed = self.compute(image, key)
        computed.source = computed.source or (data if frame is not None else b"")
        session = Session([Frame("warm-up", computed)])
        view = self.refilter(session)
        render.annotated(session, view)
        return time.perf_counter() - t

