"""What the web app does, without the web: reading uploads safely (images
and zips, in memory), running the models once per frame at the detector's
floor and caching the result, re-applying thresholds in milliseconds,
enrolling new species per session, and describing the model.

``app.py`` is a thin Gradio layer over ``Service``; everything here can be
tested and benchmarked without Gradio:

    python -m plankton.service --benchmark [--model DIR] [--objects 20]
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import json
import os
import sys
import threading
import time
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from .artifact import load_artifact
from .cascade import Cascade, FrameAnalysis
from .crops import CropConfig, extract_crops
from .images import IMAGE_EXTENSIONS, ImageError, read_image
from .metrics import per_class_table, predict_labels
from .prototypes import Prototypes
from .results import UNKNOWN, Detections, FrameResult
from .validation import FILE as VALIDATION_FILE
from .validation import ValidationSet
from .writers import CSV_COLUMNS, annotate, coco_results, csv_text, detection_rows, species_colour

# Limits for untrusted uploads (each can be overridden by an environment variable).
MAX_FRAMES = int(os.environ.get("PLANKTON_APP_MAX_FRAMES", 20))
MAX_PIXELS = int(os.environ.get("PLANKTON_APP_MAX_PIXELS", 25_000_000))
MAX_FILE_BYTES = int(os.environ.get("PLANKTON_APP_MAX_FILE_BYTES", 100 * 2**20))
MAX_ZIP_MEMBERS = 1000
MAX_ZIP_BYTES = 400 * 2**20
DISPLAY_SIDE = 1280  # annotated frames are drawn at most this wide/high
THUMB_SIDE = 64
MAX_TABLE_ROWS = 300
CACHE_FRAMES = 16  # analysed frames kept across sessions (keyed by file content)


class InputError(ValueError):
    """Nothing in an upload could be used; the message says why, per file."""


def resolve_model(repo_id: str | None = None, revision: str | None = None) -> tuple[Path, str]:
    """Where the app's model comes from: (folder, description for people).

    The Hub repo (argument or $PLANKTON_MODEL_REPO at $PLANKTON_MODEL_REVISION),
    resolved with a bounded timeout and checked against its checksums; else
    its cached copy; else $PLANKTON_MODEL_DIR or the bundled default."""
    from .hub import resolve_model_from_env

    resolved = resolve_model_from_env(repo_id, revision)
    return resolved.path, resolved.description


# ---------------------------------------------------------------- uploads


@dataclass
class Source:
    """One frame to decode: a display name and its encoded bytes."""

    name: str
    data: bytes


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is skipped ("" = silently), or None to read it."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if info.is_dir():
        return ""
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return "unsafe path, skipped"
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return ""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"):
        return "nested archive, not opened"
    if suffix not in IMAGE_EXTENSIONS:
        return "not an image file, skipped"
    if info.flag_bits & 0x1:
        return "encrypted, skipped"
    return None


def iter_zip(path: str | Path, name: str, problems: list[str], max_member_bytes: int = MAX_FILE_BYTES) -> Iterator[Source]:
    """Image members of a zip, read in memory one at a time (nothing is
    extracted to disk). Directories, hidden files, ``..`` or absolute
    paths, nested archives and non-images are skipped; the archive is
    refused if it has too many members or too many uncompressed bytes."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        problems.append(f"{name}: not a valid zip file ({' '.join(str(e).split()) or type(e).__name__})")
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
                problems.append(f"{member}: cannot read from the zip ({' '.join(str(e).split()) or type(e).__name__})")
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


# ---------------------------------------------------------------- analyses


@dataclass
class Computed:
    """The thresholds-free result of one frame's content (shared, read-only):
    the analysis at the detector floor, a downscaled copy for drawing, a
    thumbnail per detection and (with a validation set) map positions."""

    analysis: FrameAnalysis
    display: np.ndarray
    scale: float
    thumbs: list[str]
    layout: np.ndarray | None = None


@dataclass
class Frame:
    name: str
    computed: Computed

    @property
    def analysis(self) -> FrameAnalysis:
        return self.computed.analysis


@dataclass
class Session:
    """One user's upload: frames (cached analyses), object ids (offset per
    frame + detection index at the floor), the session's prototypes (the
    model's plus any enrolled species) and their similarities."""

    frames: list[Frame] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    prototypes: Prototypes | None = None  # None: the model's own
    similarity: list[np.ndarray] | None = None  # per frame, for ``prototypes``
    val_similarity: np.ndarray | None = None  # validation set vs ``prototypes``
    enrolled: list[str] = field(default_factory=list)

    @property
    def offsets(self) -> list[int]:
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
        return dataclasses.replace(a, image=f.name, similarity=self.similarity[i], names=list(self.prototypes.names))

    def emptied(self) -> "Session | None":
        """The session without its upload, keeping enrolled species (None if there are none)."""
        if self.prototypes is None:
            return None
        return dataclasses.replace(self, frames=[], messages=[], similarity=[])

    def locate(self, object_id: int) -> tuple[int, int]:
        """Object id → (frame index, detection index)."""
        for i, (off, f) in enumerate(zip(self.offsets, self.frames)):
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
                     "similarity": round(o.similarity, 4), "top": [{"species": c.species, "similarity": round(c.similarity, 4)} for c in o.topk]}
                    for i, o in zip(ids, fr.objects)]
            frames.append({"image": fr.image, "width": fr.width, "height": fr.height, "counts": fr.counts, "objects": objs})
        return {"det_conf": self.det_conf, "cls_conf": self.cls_conf, "n_objects": self.n_objects, "counts": self.counts, "frames": frames}

    def csv(self) -> str:
        return csv_text(detection_rows(self.frames), CSV_COLUMNS)


def _data_uri(crop: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _downscale(image: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    H, W = image.shape[:2]
    s = min(1.0, side / max(H, W))
    if s >= 1.0:
        return image, 1.0
    import cv2

    return cv2.resize(image, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA), s


def _scaled(frame: FrameResult, s: float) -> FrameResult:
    if s == 1.0:
        return frame
    objs = [dataclasses.replace(o, xyxy=tuple(v * s for v in o.xyxy)) for o in frame.objects]
    return FrameResult(frame.image, round(frame.width * s), round(frame.height * s), objs)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class Service:
    """A loaded model and everything the app does with it."""

    def __init__(self, cascade: Cascade, description: str = ""):
        self.cascade = cascade
        self.config: dict = getattr(cascade, "config", {}) or {}
        self.folder = Path(getattr(cascade, "path", "") or ".")
        self.description = description
        self.topk = cascade.identifier.cfg.topk
        self.problems: list[str] = []  # optional artifact files that could not be read
        self.validation = self._optional(VALIDATION_FILE, ValidationSet.load)
        self.metrics = self._optional("metrics.json", lambda p: json.loads(Path(p).read_text(encoding="utf-8")))
        self.confusion = self.folder / "confusion.png" if (self.folder / "confusion.png").is_file() else None
        self.reliability = self.folder / "reliability.png" if (self.folder / "reliability.png").is_file() else None
        self._cache: OrderedDict[str, Computed] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._model_lock = threading.Lock()

    @classmethod
    def load(cls, folder: str | Path | None = None, description: str | None = None, device: str = "cpu") -> "Service":
        """Load the model once: ``folder`` or, by default, ``resolve_model()``."""
        if folder is None:
            folder, d = resolve_model()
            description = description or d
        # ONNX Runtime where the artifact carries current .onnx files (same outputs, faster on CPU).
        return cls(load_artifact(folder, device=device, runtime="auto"), description or str(folder))

    def _optional(self, name: str, loader):
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            return loader(path)
        except Exception as e:  # a broken optional file must not stop the app
            self.problems.append(f"{name}: {_one_line(e)}")
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
        crop_cfg = self.cascade.identifier.cfg.crop
        thumbs_cfg = CropConfig(size=THUMB_SIDE, context=crop_cfg.context, min_side=crop_cfg.min_side)
        thumbs = [_data_uri(c) for c in extract_crops(image, analysis.detections.xyxy, thumbs_cfg)]
        display, scale = _downscale(image, DISPLAY_SIDE)
        layout = self.validation.place(analysis.embeddings) if self.validation is not None else None
        computed = Computed(analysis, np.ascontiguousarray(display), scale, thumbs, layout)
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
        could be used. Species enrolled in ``previous`` carry over."""
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
            session.frames.append(Frame(src.name, computed))
        session.messages = problems
        if not session.frames:
            raise InputError("No usable image in the upload. " + " · ".join(problems))
        if previous is not None and previous.prototypes is not None:
            session = self._with_prototypes(session, previous.prototypes, previous.enrolled)
        return session

    # ---- thresholds (fast; no model)
    def clamp(self, det_conf: float | None, cls_conf: float | None) -> tuple[float, float]:
        det = self.det_conf if det_conf is None else float(det_conf)
        cls = self.cls_conf if cls_conf is None else float(cls_conf)
        return max(det, self.det_floor), cls

    def refilter(self, session: Session, det_conf: float | None = None, cls_conf: float | None = None) -> View:
        """Apply thresholds to cached analyses: no model runs."""
        det, cls = self.clamp(det_conf, cls_conf)
        frames, ids = [], []
        for i, off in enumerate(session.offsets):
            a = session.analysis(i)
            frames.append(a.resolve(det, cls, self.topk))
            # FrameAnalysis.resolve keeps detections with score ≥ det_conf, in order
            ids.append(off + np.flatnonzero(a.detections.score >= det))
        return View(frames, ids, det, cls)

    def annotated(self, session: Session, view: View) -> list[tuple[Image.Image, str]]:
        """(annotated image at display size, caption) per frame."""
        out = []
        for f, fr in zip(session.frames, view.frames):
            img = annotate(f.computed.display, _scaled(fr, f.computed.scale))
            counts = fr.counts
            caption = f"{f.name}: {len(fr.objects)} object{'s' if len(fr.objects) != 1 else ''}"
            if counts.get(UNKNOWN):
                caption += f" ({counts[UNKNOWN]} unknown)"
            out.append((img, caption))
        return out

    def table(self, session: Session, view: View, limit: int = MAX_TABLE_ROWS) -> tuple[list[list], int]:
        """Rows for the objects table (HTML cells for crop and species) and
        the total number of objects (rows beyond ``limit`` are left out)."""
        rows = []
        for oid, fr, o in view.objects():
            if len(rows) >= limit:
                break
            fi, di = session.locate(oid)
            thumb = session.frames[fi].computed.thumbs[di]
            alts = " · ".join(f"{html.escape(c.species)} {c.similarity:.2f}" for c in o.topk)
            rows.append([oid, html.escape(fr.image), f'<img src="{thumb}" alt="object {oid}" width="56" height="56">',
                         species_html(o.species), round(o.similarity, 3), round(o.det_score, 3), alts])
        return rows, view.n_objects

    def coco(self, view: View, session: Session | None = None) -> dict:
        cats = [dict(c) for c in self.config.get("categories", [])] or [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        known = {c["name"] for c in cats}
        for name in (session.enrolled if session else []):
            if name not in known:
                cats.append({"id": max((c["id"] for c in cats), default=0) + 1, "name": name})
        return coco_results(view.frames, cats)

    # ---- enrolment
    def _with_prototypes(self, session: Session, prototypes: Prototypes, enrolled: list[str]) -> Session:
        sims = [prototypes.similarity(f.analysis.embeddings) for f in session.frames]
        val = prototypes.similarity(self.validation.embeddings) if self.validation is not None else None
        return dataclasses.replace(session, prototypes=prototypes, similarity=sims, val_similarity=val, enrolled=list(enrolled))

    def enrol(self, session: Session, name: str, object_ids: Iterable[int]) -> Session:
        """A new species (or new examples of one) from objects of the upload,
        by id: a new session whose prototypes include it. No retraining; the
        model shared by all users is unchanged."""
        name = " ".join(str(name or "").split())
        if not name:
            raise InputError("Give the new species a name.")
        if name == UNKNOWN:
            raise InputError(f"'{UNKNOWN}' is reserved; choose another name.")
        ids = sorted(set(int(i) for i in object_ids))
        if not ids:
            raise InputError("Choose at least one object (its # in the table).")
        bad = [i for i in ids if not 0 <= i < session.n_detections]
        if bad:
            raise InputError(f"No object {', '.join(map(str, bad))} in this upload (ids go from 0 to {session.n_detections - 1}).")
        emb = []
        for i in ids:
            fi, di = session.locate(i)
            emb.append(session.frames[fi].analysis.embeddings[di])
        base = session.prototypes or self.cascade.identifier.prototypes
        protos = base.enrol(name, np.stack(emb))
        return self._with_prototypes(session, protos, session.enrolled + ([name] if name not in session.enrolled else []))

    # ---- the model
    def model_info(self) -> dict:
        c = self.config
        prot = c.get("prototypes", {})
        return {
            "name": c.get("name"),
            "source": self.description,
            "folder": str(self.folder),
            "created": c.get("created"),
            "versions": c.get("versions", {}),
            "training": c.get("training") or (self.metrics or {}).get("training"),
            "classes": list(prot.get("names", self.class_names)),
            "detector": {k: c.get("detector", {}).get(k) for k in ("architecture", "imgsz", "conf", "tile")},
            "embedder": {k: c.get("embedder", {}).get(k) for k in ("backbone", "dim")},
            "thresholds": {"det_floor": self.det_floor, "det_conf": self.det_conf, "cls_conf": self.cls_conf},
            "has_validation": self.validation is not None,
            "metrics": {k: v for k, v in (self.metrics or {}).items() if k in ("detection", "end_to_end", "coverage_summary")},
            "problems": list(self.problems),
        }

    def per_class(self, cls_conf: float | None = None, session: Session | None = None) -> list[dict]:
        """Per-species precision/recall/F1/support on the stored validation
        set at ``cls_conf`` (with a session's enrolled species, if any).
        Without a validation set: the table stored in metrics.json."""
        cls = self.cls_conf if cls_conf is None else float(cls_conf)
        if self.validation is None:
            return list(((self.metrics or {}).get("identification") or {}).get("per_class") or [])
        sim, names = self._val_similarity(session)
        return per_class_table(np.asarray(self.validation.true_names, dtype=object), sim, names, cls)

    def _val_similarity(self, session: Session | None) -> tuple[np.ndarray, list[str]]:
        if session is not None and session.val_similarity is not None:
            return session.val_similarity, list(session.prototypes.names)
        return self.validation.similarity, list(self.validation.class_names)

    def coverage(self, cls_conf: float, session: Session | None = None) -> dict | None:
        """Share of validation objects that get a name at ``cls_conf``, and
        the accuracy on those."""
        if self.validation is None or not len(self.validation.true_names):
            return None
        sim, names = self._val_similarity(session)
        pred = predict_labels(sim, names, float(cls_conf))
        true = np.asarray(self.validation.true_names, dtype=object)
        named = pred != UNKNOWN
        return {"n": int(len(true)), "coverage": float(named.mean()), "accuracy": float(np.mean(pred[named] == true[named])) if named.any() else float("nan")}

    # ---- embeddings map
    def embedding_figure(self, session: Session | None = None, view: View | None = None):
        """Plotly figure: validation embeddings in their stored 2-D layout,
        coloured by true species, prototypes as stars, and the current
        upload's objects (placed by nearest stored neighbours) as diamonds.
        None without a validation set."""
        import plotly.graph_objects as go

        v = self.validation
        if v is None:
            return None
        fig = go.Figure()
        true = np.asarray(v.true_names, dtype=object)
        best = v.similarity.max(1) if v.similarity.size else np.zeros(len(true))
        match = np.asarray(v.class_names, dtype=object)[v.similarity.argmax(1)] if v.similarity.size else true
        for name in sorted(set(true)):
            m = true == name
            fig.add_trace(go.Scattergl(
                x=v.layout[m, 0], y=v.layout[m, 1], mode="markers", name=name, legendgroup=name,
                marker=dict(size=6, color=_rgb(name), opacity=0.55),
                customdata=np.stack([match[m], best[m]], 1),
                hovertemplate=f"<b>{html.escape(name)}</b> (validation)<br>best match: %{{customdata[0]}}<br>similarity: %{{customdata[1]:.2f}}<extra></extra>"))
        pl = np.asarray(v.prototype_layout, np.float32).reshape(-1, 2)
        pnames = list(v.class_names)[: len(pl)]
        if session is not None and session.prototypes is not None:
            for name in session.enrolled:
                i = session.prototypes.names.index(name)
                pl = np.vstack([pl, v.place(session.prototypes.means[i : i + 1])])
                pnames.append(name)
        fig.add_trace(go.Scatter(
            x=pl[:, 0], y=pl[:, 1], mode="markers", name="prototypes", text=pnames,
            marker=dict(symbol="star", size=15, color=[_rgb(n) for n in pnames], line=dict(color="black", width=1.2)),
            hovertemplate="<b>prototype</b><br>%{text}<extra></extra>"))
        if session is not None and view is not None and view.n_objects:
            xy, text, colours = [], [], []
            for oid, fr, o in view.objects():
                fi, di = session.locate(oid)
                lay = session.frames[fi].computed.layout
                if lay is None:
                    continue
                xy.append(lay[di])
                text.append(f"<b>object #{oid}</b> · {html.escape(fr.image)}<br>species: {html.escape(o.species)}<br>similarity: {o.similarity:.2f}")
                colours.append(_rgb(o.species))
            if xy:
                xy = np.asarray(xy)
                fig.add_trace(go.Scatter(
                    x=xy[:, 0], y=xy[:, 1], mode="markers", name="this upload", text=text,
                    marker=dict(symbol="diamond", size=11, color=colours, line=dict(color="black", width=1.5)),
                    hovertemplate="%{text}<extra></extra>"))
        fig.update_layout(
            height=640, margin=dict(l=10, r=10, t=30, b=10), template="plotly_white", hovermode="closest",
            legend=dict(font=dict(size=10), itemsizing="constant"), xaxis=dict(visible=False), yaxis=dict(visible=False),
            title=dict(text=f"{len(true)} validation objects · {len(pnames)} prototypes" + (f" · {view.n_objects} uploaded objects" if view is not None and session is not None else ""), font=dict(size=13)))
        return fig

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
        session = Session([Frame("warm-up", computed)])
        view = self.refilter(session)
        self.annotated(session, view)
        self.table(session, view)
        return time.perf_counter() - t


def _rgb(name: str) -> str:
    r, g, b = species_colour(name)
    return f"rgb({r},{g},{b})"


def species_html(name: str) -> str:
    """A species name with its box colour as a swatch; unknown in grey italics."""
    swatch = f'<span style="display:inline-block;width:0.8em;height:0.8em;border-radius:2px;margin-right:0.35em;vertical-align:-0.05em;background:{_rgb(name)}"></span>'
    label = f"<i>{UNKNOWN}</i>" if name == UNKNOWN else html.escape(name)
    return swatch + label


def counts_html(view: View | None) -> str:
    """Counts per species as a small HTML table, colour-keyed like the boxes."""
    if view is None:
        return ""
    counts = view.counts
    if not counts:
        return "<p>No objects at these thresholds.</p>"
    total = sum(counts.values())
    rows = "".join(f'<tr><td>{species_html(k)}</td><td style="text-align:right">{v}</td><td style="text-align:right">{100 * v / total:.0f}%</td></tr>' for k, v in counts.items())
    return (f'<table class="counts"><thead><tr><th>Species</th><th style="text-align:right">Count</th><th style="text-align:right">Share</th></tr></thead>'
            f'<tbody>{rows}</tbody><tfoot><tr><td><b>Total</b></td><td style="text-align:right"><b>{total}</b></td><td></td></tr></tfoot></table>')


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


# ---------------------------------------------------------------- benchmark


def synthetic_session(service: Service, image: np.ndarray, n_objects: int = 20, seed: int = 0) -> Session:
    """A session with one frame and exactly ``n_objects`` boxes spread over
    the frame (scores spread over [floor, 1]), whatever the detector does:
    what the slider benchmark needs."""
    rng = np.random.default_rng(seed)
    H, W = image.shape[:2]
    wh = rng.uniform(30, 120, size=(n_objects, 2))
    xy = rng.uniform(0, 1, size=(n_objects, 2)) * (np.array([W, H]) - wh)
    dets = Detections(np.hstack([xy, xy + wh]), np.sort(rng.uniform(service.det_floor, 1.0, n_objects))[::-1])
    with service._model_lock:
        analysis = service.cascade.analyse_boxes(image, dets, "benchmark")
    analysis.det_floor = service.det_floor
    crop_cfg = service.cascade.identifier.cfg.crop
    thumbs = [_data_uri(c) for c in extract_crops(image, dets.xyxy, CropConfig(THUMB_SIDE, crop_cfg.context, crop_cfg.min_side))]
    display, scale = _downscale(image, DISPLAY_SIDE)
    layout = service.validation.place(analysis.embeddings) if service.validation is not None else None
    return Session([Frame("benchmark", Computed(analysis, display, scale, thumbs, layout))])


def benchmark_refilter(service: Service, image: np.ndarray | None = None, n_objects: int = 20, repeats: int = 50) -> dict:
    """Time what one slider move costs on the server for a frame with
    ``n_objects`` objects: re-filter, annotate, encode the image as the
    gallery does (JPEG), build table, counts, CSV and COCO. Milliseconds."""
    if image is None:
        image = np.random.default_rng(0).integers(150, 230, size=(1080, 1920, 3), dtype=np.uint8)
    session = synthetic_session(service, image, n_objects)
    rng = np.random.default_rng(1)
    parts: dict[str, list[float]] = {k: [] for k in ("refilter", "annotate+encode", "table+counts", "csv+coco", "total")}
    for _ in range(repeats):
        det, cls = float(rng.uniform(service.det_floor, 0.5)), float(rng.uniform(0, 0.9))
        t0 = time.perf_counter()
        view = service.refilter(session, det, cls)
        t1 = time.perf_counter()
        for img, _ in service.annotated(session, view):
            img.save(io.BytesIO(), format="JPEG", quality=85)
        t2 = time.perf_counter()
        service.table(session, view)
        counts_html(view)
        t3 = time.perf_counter()
        view.csv()
        json.dumps(service.coco(view, session))
        t4 = time.perf_counter()
        for k, a, b in (("refilter", t0, t1), ("annotate+encode", t1, t2), ("table+counts", t2, t3), ("csv+coco", t3, t4), ("total", t0, t4)):
            parts[k].append((b - a) * 1000)
    return {k: {"median_ms": round(float(np.median(v)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2)} for k, v in parts.items()} | {"objects": n_objects, "repeats": repeats}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m plankton.service", description="Benchmark the app's slider re-filter (no Gradio).")
    p.add_argument("--benchmark", action="store_true", help="time a slider change (default action)")
    p.add_argument("--model", default=None, help="model folder (default: resolve_model())")
    p.add_argument("--frame", default=None, help="frame to use (default: the first committed test frame, else noise)")
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    from .artifact import ArtifactError

    try:
        service = Service.load(args.model)
    except ArtifactError as e:
        print(f"plankton.service: {e} (set PLANKTON_MODEL_DIR or --model)", file=sys.stderr)
        return 1
    frame = args.frame
    if frame is None:
        found = sorted((Path(__file__).resolve().parent.parent / "tests" / "data" / "frames").glob("*.jpg"))
        frame = found[0] if found else None
    image = read_image(frame) if frame else None
    print(json.dumps(benchmark_refilter(service, image, args.objects, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
