"""Result writers: CSV, COCO results JSON and annotated images. Files are
written to a temporary name and renamed, so an interrupted run never
leaves a file that looks complete."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from plankton import palette
from plankton.files import atomic_path, atomic_write_text
from plankton.sample.measure import Sample, box_sizes_um, concentration_rows, counts_rows, species_columns
from plankton.results import UNKNOWN, FrameResult
from plankton.sample.meta import KEYS as SAMPLE_META_KEYS
from plankton.sample.meta import SampleMeta

CSV_COLUMNS = ["image", "x1", "y1", "x2", "y2", "det_score", "species", "similarity", "top2", "top2_similarity", "top3", "top3_similarity",
               "width_um", "height_um", "esd_um", "corrected", "p_object", "p_species"]
CONCENTRATION_COLUMNS = ["species", "count", "volume_ml", "cells_per_ml", "cells_per_ml_low", "cells_per_ml_high",
                         "count_est", "count_est_low", "count_est_high", "cells_per_ml_est", "cells_per_ml_est_low", "cells_per_ml_est_high"]


def _um(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.2f}"


def _p(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.3f}"


def detection_rows(frames: list[FrameResult], um_per_px: float | None = None, counter=None) -> list[dict]:
    """One row per object: box (pixels), scores, species and runners-up,
    box-based sizes in µm (empty without a scale), whether a person
    corrected the species, and with a count calibration (``counter``, a
    ``quantify.CountModel``) P(a distinct object) and P(the name is right)."""
    rows = []
    for fr in frames:
        sizes = box_sizes_um(np.array([o.xyxy for o in fr.objects], np.float64).reshape(-1, 4), um_per_px)
        probs = zip(*counter.probabilities(fr)) if counter is not None else [(np.nan, np.nan)] * len(fr.objects)
        for o, (w, h, esd), (p_obj, p_sp) in zip(fr.objects, sizes, probs):
            row = {"image": fr.image, "x1": f"{o.xyxy[0]:.1f}", "y1": f"{o.xyxy[1]:.1f}", "x2": f"{o.xyxy[2]:.1f}", "y2": f"{o.xyxy[3]:.1f}",
                   "det_score": f"{o.det_score:.4f}", "species": o.species, "similarity": f"{o.similarity:.4f}",
                   "width_um": _um(w), "height_um": _um(h), "esd_um": _um(esd), "corrected": "yes" if o.corrected else "",
                   "p_object": _p(p_obj), "p_species": _p(p_sp)}
            for j, c in enumerate(o.topk[1:3], start=2):
                row[f"top{j}"], row[f"top{j}_similarity"] = c.species, f"{c.similarity:.4f}"
            rows.append(row)
    return rows


def sample_tables(frames: list[FrameResult], sample: Sample, names: list[str] | None = None, meta: SampleMeta | None = None,
                  counter=None) -> dict[str, str]:
    """{file name: CSV text} of the per-sample tables: ``counts.csv`` (one
    row per frame, one column per species plus unknown and total) and
    ``concentration.csv`` (cells per ml with a 95% Poisson interval), both
    only when the volume imaged per frame is known. ``meta``: the sample's
    place and time, repeated on each concentration row in columns after
    the others (so each row stands alone when tables are concatenated).
    ``counter`` (a ``quantify.CountModel``): the estimated counts beside the
    raw ones, in both tables."""
    if sample.volume_ul is None:
        return {}
    columns = species_columns(frames, names)
    estimate = counter.estimate(frames) if counter is not None else None
    conc = [r | {k: f"{r[k]:.6g}" for k in CONCENTRATION_COLUMNS[2:] if k in r} for r in concentration_rows(frames, sample, estimate=estimate)]
    extra = []
    if meta is not None and not meta.is_empty():
        extra = list(SAMPLE_META_KEYS)
        conc = [r | {k: "" if v is None else (f"{v:.10g}" if isinstance(v, float) else v) for k, v in meta.as_dict().items()} for r in conc]
    expected = [counter.expected(f) for f in frames] if counter is not None else None
    est_columns = [f"{c}_est" for c in [*columns, "total"]] if expected is not None else []
    return {"counts.csv": csv_text(counts_rows(frames, columns, expected), ["image", *columns, "total", *est_columns]),
            "concentration.csv": csv_text(conc, CONCENTRATION_COLUMNS + extra)}


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_detections_csv(path: str | Path, frames: list[FrameResult], um_per_px: float | None = None, counter=None) -> None:
    """One row per object: image, box (pixels), det_score, species, similarity, runners-up, sizes in µm, probabilities."""
    atomic_write_text(path, csv_text(detection_rows(frames, um_per_px, counter), CSV_COLUMNS))


def coco_results(frames: list[FrameResult], categories: list[dict], image_ids: dict[str, int] | None = None) -> dict:
    """Frames → a COCO file: ``images``, ``categories`` (with an extra
    "unknown" category) and ``annotations`` with bbox [x, y, w, h] pixels,
    ``score`` (detection score), ``similarity`` and ``species``."""
    cats = [dict(c) for c in categories]
    by_name = {c["name"]: c["id"] for c in cats}
    if UNKNOWN in by_name:
        unknown_id = by_name[UNKNOWN]
    else:
        unknown_id = max(by_name.values(), default=0) + 1
        cats.append({"id": unknown_id, "name": UNKNOWN})
    images, anns = [], []
    for n, fr in enumerate(frames, start=1):
        iid = (image_ids or {}).get(fr.image, n)
        images.append({"id": iid, "file_name": fr.image, "width": fr.width, "height": fr.height})
        for o in fr.objects:
            x1, y1, x2, y2 = o.xyxy
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": by_name.get(o.species, unknown_id),
                         "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)], "area": round((x2 - x1) * (y2 - y1), 2),
                         "iscrowd": 0, "score": round(o.det_score, 5), "similarity": round(o.similarity, 5), "species": o.species})
    return {"images": images, "categories": cats, "annotations": anns}


def write_coco(path: str | Path, frames: list[FrameResult], categories: list[dict]) -> None:
    atomic_write_text(path, json.dumps(coco_results(frames, categories)) + "\n")


def species_colour(name: str) -> tuple[int, int, int]:
    """A species' box and legend colour (``plankton.palette``: look-alikes
    get distant colours once a model's mapping is in use); ``unknown`` is
    always grey."""
    return palette.colour(name)


def annotate(image: np.ndarray, frame: FrameResult, line: int = 2, numbers: list[int] | None = None,
             colours: dict[str, tuple[int, int, int]] | None = None) -> Image.Image:
    """H×W×3 uint8 frame → PIL image with boxes and "species 0.87" labels
    ("#3 species 0.87" with ``numbers``, one per object); unknown objects
    get thin grey boxes labelled "unknown". ``colours``: a model's mapping
    (``palette.for_prototypes``), else the one in use."""
    im = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(12, im.width // 110))
    tags = numbers if numbers is not None and len(numbers) == len(frame.objects) else [None] * len(frame.objects)
    for o, tag in sorted(zip(frame.objects, tags), key=lambda t: t[0].det_score):
        colour = (colours or {}).get(o.species) or species_colour(o.species)
        x1, y1, x2, y2 = o.xyxy
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line if not o.is_unknown else 1)
        label = (f"#{tag} " if tag is not None else "") + f"{o.species} {o.similarity:.2f}"
        tx, ty = x1, max(0, y1 - font.size - 4)
        box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=colour)
        # dark palette colours (olive, brown, violet) need white text to stay legible
        text = (0, 0, 0) if palette.lab(colour)[0] > 55 else (255, 255, 255)
        draw.text((tx, ty), label, fill=text, font=font)
    return im


def save_annotated(path: str | Path, image: np.ndarray, frame: FrameResult) -> None:
    with atomic_path(path) as tmp:
        annotate(image, frame).save(tmp, format="JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=90)
