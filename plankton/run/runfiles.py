"""What a ``predict`` run keeps for later questions, and how to read it back.

- ``quality.csv``: one row per frame (``quality.quality_rows``), in the
  order of ``detections.csv``, with the ``source`` each frame was read
  from, so crops can be cut again without the inputs being named again;
- ``embeddings.safetensors``: the objects' embeddings, one row per row of
  ``detections.csv``, in the same order, so ``discover`` never runs the
  embedder again. Tensors: ``embeddings`` (N×D float16, unit length),
  ``frame`` (N int32: the row of the object's frame in ``quality.csv``),
  ``object`` (N int32: its index in that frame), ``nearest`` (N int32,
  into ``names`` of the ``plankton`` metadata (JSON); -1 when none) and
  ``nearest_similarity`` (N float32): the best species even for an
  ``unknown`` object, which ``detections.csv`` does not name. An object
  from a journal written before embeddings were kept has a NaN row.

Read back with :func:`read_run`; rows are checked against detections.csv.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plankton.files import atomic_path, atomic_write_text
from plankton.quality import COLUMNS, drift_line, for_thresholds, image_stats, load_ranges, quality_rows
from plankton.results import FrameResult

EMBEDDINGS, QUALITY, DETECTIONS = "embeddings.safetensors", "quality.csv", "detections.csv"
FORMAT = "plankton-embeddings/1"


def keep_for_later(frame: FrameResult, image: np.ndarray) -> FrameResult:
    """What the per-frame step keeps for these files: the frame's image
    statistics (while the decoded frame exists, so both engines and
    ``--resume`` agree), and each embedding as its own float16 copy: half
    the memory, and no view keeping the frame's every candidate alive."""
    from dataclasses import replace

    frame.stats = image_stats(image)
    frame.objects = [o if o.embedding is None else replace(o, embedding=np.array(o.embedding, np.float16)) for o in frame.objects]
    return frame


def frame_order(frames: dict[str, FrameResult]) -> list[str]:
    """Keys in output order: the order ``batch.write_outputs`` writes."""
    return sorted(frames, key=lambda k: (frames[k].image, k))


def write_embeddings(path: Path, ordered: list[FrameResult]) -> int:
    """Writes ``embeddings.safetensors``; returns how many objects had no
    embedding (frames from an older journal): their rows are NaN."""
    from safetensors.numpy import save_file

    objs = [(i, j, o) for i, fr in enumerate(ordered) for j, o in enumerate(fr.objects)]
    dim = next((len(o.embedding) for _, _, o in objs if o.embedding is not None), 0)
    emb = np.full((len(objs), dim), np.nan, np.float16)
    for k, (_, _, o) in enumerate(objs):
        if o.embedding is not None and len(o.embedding) == dim:
            emb[k] = o.embedding
    names = sorted({o.topk[0].species for _, _, o in objs if o.topk})
    index = {n: k for k, n in enumerate(names)}
    tensors = {"embeddings": emb, "frame": np.array([i for i, _, _ in objs], np.int32), "object": np.array([j for _, j, _ in objs], np.int32),
               "nearest": np.array([index[o.topk[0].species] if o.topk else -1 for _, _, o in objs], np.int32),
               "nearest_similarity": np.array([o.topk[0].similarity if o.topk else np.nan for _, _, o in objs], np.float32)}
    with atomic_path(path) as tmp:
        # One metadata key: safetensors writes several in no fixed order, and equal runs should be equal bytes.
        save_file(tensors, str(tmp), metadata={"plankton": json.dumps({"format": FORMAT, "names": names})})
    return int(np.isnan(emb).any(axis=1).sum()) if dim else len(objs)


def write_run_files(out: Path, frames: dict[str, FrameResult], model_folder, note, thresholds: tuple = (None, None)) -> str | None:
    """quality.csv and embeddings.safetensors of a finished run; ``note``
    (informational, e.g. None under --quiet) is told when the model has
    no training ranges, or some do not apply at the run's ``thresholds``
    (det_conf, cls_conf). Returns the drift line (or None)."""
    from plankton.run.writers import csv_text

    order = frame_order(frames)
    ordered = [frames[k] for k in order]
    ranges, why = load_ranges(model_folder)
    ranges, dropped = for_thresholds(ranges, *thresholds)
    if ranges is None and note:
        note(f"quality: quality.csv has no flags: {why}")
    elif dropped and note:
        note(f"quality: {', '.join(dropped)} not flagged: the training ranges were measured at the model's default thresholds, not this run's")
    atomic_write_text(Path(out) / QUALITY, csv_text(quality_rows(ordered, order, ranges), COLUMNS))
    write_embeddings(Path(out) / EMBEDDINGS, ordered)
    return drift_line(ordered, ranges)


# ---------------------------------------------------------------- reading a run back

class RunError(ValueError):
    """A run folder that cannot be read; the message is one line."""


@dataclass
class Run:
    """A finished ``predict`` run: detections.csv rows, quality.csv rows
    (frames, in order), and, when present, the embeddings aligned with
    the detections (``frame``: each detection's row in ``frames``)."""

    folder: Path
    detections: list[dict]
    frames: list[dict]
    frame: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    nearest: list[str] | None = None
    nearest_similarity: np.ndarray | None = None

    def box(self, i: int) -> tuple[float, float, float, float]:
        r = self.detections[i]
        return tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2"))


def _csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise RunError(f"{path}: not found (is {path.parent} a finished predict run?)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RunError(f"{path}: cannot be read ({str(e).splitlines()[0]})") from None


def read_run(folder: str | Path, embeddings: bool = True) -> Run:
    """Read a run folder; RunError naming the problem. ``embeddings``: they
    are needed (RunError when absent or misaligned)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RunError(f"{folder}: no such run folder")
    run = Run(folder, _csv(folder / DETECTIONS), _csv(folder / QUALITY) if (folder / QUALITY).exists() else [])
    if not embeddings:
        return run
    path = folder / EMBEDDINGS
    if not path.exists():
        raise RunError(f"{path}: not found (the run was made before predict kept embeddings, or with objects that had none)")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in ("embeddings", "frame", "nearest", "nearest_similarity")}
        names = json.loads(meta.get("plankton", "{}")).get("names", [])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise RunError(f"{path}: not a readable embeddings file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    n = len(run.detections)
    if len(t["embeddings"]) != n or not run.frames or (n and int(t["frame"].max()) >= len(run.frames)):
        raise RunError(f"{path}: {len(t['embeddings'])} embeddings for {n} detections and {len(run.frames)} frames: not from this run's files")
    if any(run.frames[int(fi)]["image"] != r["image"] for fi, r in zip(t["frame"], run.detections)):
        raise RunError(f"{path}: its rows do not follow detections.csv (files from different runs?)")
    emb = t["embeddings"].astype(np.float32)
    run.embeddings = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)  # NaN rows (no embedding) stay NaN
    run.frame = t["frame"].astype(int)
    run.nearest = [names[k] if 0 <= k < len(names) else "" for k in t["nearest"]]
    run.nearest_similarity = t["nearest_similarity"].astype(np.float32)
    return run


def frame_index(run: Run) -> np.ndarray:
    """Each detection's row in ``run.frames``; -1 where that cannot be told.
    The embeddings' own index when they were read; else quality.csv's
    ``objects`` per frame, in the order both files are written; else the
    image name, only where one frame has it (two frames may share a name:
    the CLI walks subfolders)."""
    if run.frame is not None:
        return run.frame
    counts = [fr.get("objects") or "" for fr in run.frames]
    if counts and all(c.isdigit() for c in counts) and sum(map(int, counts)) == len(run.detections):
        idx = np.repeat(np.arange(len(counts)), [int(c) for c in counts])
        if all(run.frames[f]["image"] == r["image"] for f, r in zip(idx, run.detections)):
            return idx
    frames_of = Counter(fr["image"] for fr in run.frames)
    only = {fr["image"]: i for i, fr in enumerate(run.frames) if frames_of[fr["image"]] == 1}
    return np.array([only.get(r["image"], -1) for r in run.detections], int)


def frame_keys(run: Run) -> list[str]:
    """Each frame of ``run.frames`` named by its path relative to the run's
    input: its ``source`` relative to the folder all the run's sources
    share, so ``a/frame.jpg`` and ``b/frame.jpg`` stay two frames, and two
    runs on the same frames, even moved, name them alike. A frame with no
    recorded source keeps its image name."""
    sources = [fr.get("source") or "" for fr in run.frames]
    try:
        root = os.path.commonpath([os.path.dirname(s) for s in sources if s]) if any(sources) else None
    except ValueError:  # sources on different drives
        root = None
    return [Path(os.path.relpath(s, root)).as_posix() if s and root is not None else fr["image"] for fr, s in zip(run.frames, sources)]


def detection_keys(run) -> list[str]:
    """The key (``frame_keys``) of each detection's frame: what keeps objects
    of two frames with one name apart in compare, discover and naming.
    A run without frames (the app's, whose image names are already unique)
    or a detection whose frame cannot be told keeps its image name."""
    frames = getattr(run, "frames", None)
    if not frames:
        return [r["image"] for r in run.detections]
    keys = frame_keys(run)
    return [keys[f] if f >= 0 else r["image"] for f, r in zip(frame_index(run), run.detections)]


def locate(run: Run, rows: list[dict]) -> list[int | None]:
    """Rows that name an object by its frame and box (``image``, ``x1`` …
    ``y2``, as clusters.csv does) → each one's row in ``run.detections``.
    ``image`` may be a frame key (``detection_keys``) or, from a file
    written before frames were keyed, an image name. None where no object
    fits, or where objects of several frames of that name do."""
    keys = detection_keys(run)
    by_key: dict[tuple, list[int]] = defaultdict(list)
    by_name: dict[tuple, list[int]] = defaultdict(list)
    fi = frame_index(run) if run.frames else np.full(len(run.detections), -1)
    for i, (key, r) in enumerate(zip(keys, run.detections)):
        by_key[(key, _box(r))].append(i)
        by_name[(r["image"], _box(r))].append(i)
    used: set[int] = set()
    out: list[int | None] = []
    for r in rows:
        try:
            box = _box(r)
        except (KeyError, TypeError, ValueError):
            out.append(None)
            continue
        fits = by_key.get((r.get("image"), box)) or by_name.get((r.get("image"), box)) or []
        if len({int(fi[i]) for i in fits}) > 1:
            out.append(None)  # the name alone cannot say which frame
            continue
        free = [i for i in fits if i not in used]  # one frame: identical boxes (if ever) are taken in turn
        out.append(free[0] if free else None)
        used.update(free[:1])
    return out


def _box(r: dict) -> tuple[float, ...]:
    return tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2"))


__all__ = ["DETECTIONS", "EMBEDDINGS", "QUALITY", "Run", "RunError", "keep_for_later", "frame_order", "frame_index", "frame_keys", "detection_keys",
           "locate", "read_run", "write_embeddings", "write_run_files"]
