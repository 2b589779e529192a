"""Watch the frames: per-frame image statistics, the range they took over
the training frames, and the flags of a frame outside that range.

Image statistics are measured on a grey copy of the frame downscaled to
at most ``SCALE`` pixels on its longer side (area interpolation): fast on
any frame size, and the variance of the Laplacian is then comparable
between frames of different resolutions.

- ``focus``: variance of the Laplacian of that copy (sharp edges → large);
- ``brightness``: its mean grey level (0–255); ``contrast``: its standard deviation;
- ``covered``: share of the frame inside at least one object box;
- ``objects``, ``unknown_share`` (of the objects), ``mean_similarity``.

The training range (``frame_quality.json`` in the model folder, written by
``training/frame_ranges.py``) is, per statistic, the 1st to 99th
percentile over the training frames widened by ``MARGIN`` of that spread
on each side (for focus in log10, since it spans orders of magnitude). A
statistic is only flagged on the side where a departure means trouble
(``SIDES``): few objects or little coverage is a normal frame. The object
statistics depend on the thresholds: a run at other thresholds than the
ranges were measured at (recorded in the file) is not flagged on them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from plankton.results import UNKNOWN, FrameResult

SCALE = 640
RANGES_FILE = "frame_quality.json"
PERCENTILES = (1.0, 99.0)
MARGIN = 0.10
IMAGE_STATS = ("focus", "brightness", "contrast")
SIDES = {"focus": "both", "brightness": "both", "contrast": "both", "covered": "high", "objects": "high",
         "unknown_share": "high", "mean_similarity": "low"}
LOG_SCALE = ("focus",)
FLAG_NAMES = {("brightness", "low"): "dark", ("brightness", "high"): "bright"}
COLUMNS = ["image", *SIDES, "flags", "source"]


def image_stats(image: np.ndarray) -> dict:
    """H×W×3 (or H×W) uint8 frame → {focus, brightness, contrast}."""
    import cv2

    a = np.asarray(image)
    grey = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) if a.ndim == 3 and a.shape[2] == 3 else (a[..., 0] if a.ndim == 3 else a)
    H, W = grey.shape[:2]
    s = min(1.0, SCALE / max(H, W, 1))
    if s < 1.0:
        grey = cv2.resize(grey, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
    g = grey.astype(np.float32)
    return {"focus": round(float(cv2.Laplacian(g, cv2.CV_32F).var()), 4), "brightness": round(float(g.mean()), 4),
            "contrast": round(float(g.std()), 4)}


def covered_share(boxes, width: int, height: int) -> float:
    """Share of a width×height frame inside at least one xyxy box (overlaps
    counted once), on a grid of at most 1024 cells a side."""
    if not boxes or width <= 0 or height <= 0:
        return 0.0
    s = min(1.0, 1024 / max(width, height))
    mask = np.zeros((max(1, round(height * s)), max(1, round(width * s))), bool)
    for x1, y1, x2, y2 in boxes:
        mask[max(0, math.floor(y1 * s)):max(0, math.ceil(y2 * s)), max(0, math.floor(x1 * s)):max(0, math.ceil(x2 * s))] = True
    return float(mask.mean())


def frame_values(frame: FrameResult) -> dict:
    """Every statistic of one frame; None where it has no value (no objects,
    or image statistics a frame from an older journal lacks)."""
    n = len(frame.objects)
    v = {k: frame.stats.get(k) for k in IMAGE_STATS}
    v["covered"] = covered_share([o.xyxy for o in frame.objects], frame.width, frame.height)
    v["objects"] = n
    v["unknown_share"] = sum(o.species == UNKNOWN for o in frame.objects) / n if n else None
    v["mean_similarity"] = float(np.mean([o.similarity for o in frame.objects])) if n else None
    return v


def _widen(lo: float, hi: float, log: bool) -> tuple[float, float]:
    if log:
        a, b = math.log10(max(lo, 1e-9)), math.log10(max(hi, 1e-9))
        d = MARGIN * (b - a)
        return 10 ** (a - d), 10 ** (b + d)
    d = MARGIN * (hi - lo)
    return lo - d, hi + d


def compute_ranges(values: dict[str, list], **about) -> dict:
    """{statistic: per-frame values over the training frames} → the
    ``frame_quality.json`` document (``about``: where they came from)."""
    stats = {}
    for name, side in SIDES.items():
        x = np.array([v for v in values.get(name, []) if v is not None], np.float64)
        if not len(x):
            continue
        p_lo, p_hi = (float(np.percentile(x, q)) for q in PERCENTILES)
        lo, hi = _widen(p_lo, p_hi, name in LOG_SCALE)
        stats[name] = {"low": lo if side in ("both", "low") else None, "high": hi if side in ("both", "high") else None,
                       f"p{PERCENTILES[0]:g}": p_lo, "median": float(np.median(x)), f"p{PERCENTILES[1]:g}": p_hi, "frames": len(x)}
    method = (f"per statistic, the percentiles {PERCENTILES[0]:g} to {PERCENTILES[1]:g} over the training frames, widened by "
              f"{MARGIN:.0%} of that spread on each side (focus in log10); image statistics on a grey copy at most {SCALE} px a side")
    return {"format": 1, "method": method, "scale": SCALE, **about, "stats": stats}


def load_ranges(folder: str | Path | None) -> tuple[dict | None, str | None]:
    """(the model's training ranges or None, why there are none or None)."""
    if folder is None:
        return None, "no model folder"
    path = Path(folder) / RANGES_FILE
    if not path.is_file():
        return None, f"the model has no {RANGES_FILE}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc.get("stats"), dict):
            raise ValueError("no 'stats' section")
    except (ValueError, UnicodeDecodeError, AttributeError) as e:
        return None, f"{path.name} is not readable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    if doc.get("scale", SCALE) != SCALE:
        return None, f"{path.name} was measured at {doc.get('scale')} px, this plankton measures at {SCALE}"
    return doc, None


# Which statistics depend on which threshold: measured at other thresholds, their range says nothing about the frames.
DEPENDS = {"det_conf": ("covered", "objects", "unknown_share", "mean_similarity"), "cls_conf": ("unknown_share",)}


def for_thresholds(ranges: dict | None, det_conf: float | None, cls_conf: float | None) -> tuple[dict | None, list[str]]:
    """The ranges without the statistics that depend on a threshold other
    than the one they were measured at; and the names left out."""
    if not ranges:
        return ranges, []
    measured = ranges.get("thresholds") or {}
    drop: list[str] = []
    for name, value in (("det_conf", det_conf), ("cls_conf", cls_conf)):
        if value is not None and measured.get(name) is not None and abs(float(measured[name]) - float(value)) > 1e-9:
            drop += [k for k in DEPENDS[name] if k not in drop]
    if not drop:
        return ranges, []
    return {**ranges, "stats": {k: v for k, v in ranges["stats"].items() if k not in drop}}, drop


def flags(values: dict, ranges: dict | None) -> list[str]:
    """Names of the statistics outside the training range, e.g. ``focus_low``, ``dark``."""
    out = []
    for name, r in ((ranges or {}).get("stats") or {}).items():
        v = values.get(name)
        if v is None or name not in SIDES:
            continue
        for side, outside in (("low", r.get("low") is not None and v < r["low"]), ("high", r.get("high") is not None and v > r["high"])):
            if outside:
                out.append(FLAG_NAMES.get((name, side), f"{name}_{side}"))
    return out


def _fmt(v) -> str:
    if v is None:
        return ""
    return str(v) if isinstance(v, int) else f"{v:.4g}"


def quality_rows(frames: list[FrameResult], sources: list[str], ranges: dict | None) -> list[dict]:
    """One row per frame, in the given order; ``source``: where the frame
    was read from (a path, or ARCHIVE/MEMBER), for crops cut later."""
    rows = []
    for fr, src in zip(frames, sources):
        v = frame_values(fr)
        rows.append({"image": fr.image, **{k: _fmt(v[k]) for k in SIDES}, "flags": ";".join(flags(v, ranges)), "source": src})
    return rows


def drift_line(frames: list[FrameResult], ranges: dict | None) -> str | None:
    """One line when the run as a whole leaves the training range: its
    unknown share (over all objects) above the per-frame high, or its
    median focus outside the focus range; else None."""
    stats = (ranges or {}).get("stats") or {}
    parts = []
    objs = [o for f in frames for o in f.objects]
    share, high = (sum(o.species == UNKNOWN for o in objs) / len(objs) if objs else None), (stats.get("unknown_share") or {}).get("high")
    if share is not None and high is not None and share > high:
        parts.append(f"unknown share {share:.2f} is above the training frames' {high:.2f}")
    focus = [f.stats["focus"] for f in frames if f.stats.get("focus") is not None]
    r = stats.get("focus") or {}
    if focus and r:
        med = float(np.median(focus))
        if (r.get("low") is not None and med < r["low"]) or (r.get("high") is not None and med > r["high"]):
            parts.append(f"median focus {med:.4g} is outside the training frames' {r.get('low', 0):.4g}–{r.get('high', 0):.4g}")
    return "this run does not look like the training frames: " + "; ".join(parts) + " (see quality.csv)" if parts else None


__all__ = ["COLUMNS", "RANGES_FILE", "SCALE", "SIDES", "image_stats", "covered_share", "frame_values", "compute_ranges", "load_ranges", "for_thresholds",
           "flags", "quality_rows", "drift_line"]
