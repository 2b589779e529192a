"""Result writers: CSV, COCO results JSON and annotated images. Files are
written to a temporary name and renamed, so an interrupted run never
leaves a file that looks complete."""
from __future__ import annotations

import colorsys
import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_path, atomic_write_text
from .measure import Sample, box_sizes_um, concentration_rows, counts_rows, species_columns
from .results import UNKNOWN, FrameResult

CSV_COLUMNS = ["image", "x1", "y1", "x2", "y2", "det_score", "species", "similarity", "top2", "top2_similarity", "top3", "top3_similarity",
               "width_um", "height_um", "esd_um", "corrected"]
CONCENTRATION_COLUMNS = ["species", "count", "volume_ml", "cells_per_ml", "cells_per_ml_low", "cells_per_ml_high"]


def _um(v: float) -> str:
    return "" if not np.isfinite(v) else f"{v:.2f}"


def detection_rows(frames: list[FrameResult], um_per_px: float | None = None) -> list[dict]:
    """One row per object: box (pixels), scores, species and runners-up,
    box-based sizes in µm (empty without a scale), and whether a person
    corrected the species."""
    rows = []
    for fr in frames:
        sizes = box_sizes_um(np.array([o.xyxy for o in fr.objects], np.float64).reshape(-1, 4), um_per_px)
        for o, (w, h, esd) in zip(fr.objects, sizes):
            row = {"image": fr.image, "x1": f"{o.xyxy[0]:.1f}", "y1": f"{o.xyxy[1]:.1f}", "x2": f"{o.xyxy[2]:.1f}", "y2": f"{o.xyxy[3]:.1f}",
                   "det_score": f"{o.det_score:.4f}", "species": o.species, "similarity": f"{o.similarity:.4f}",
                   "width_um": _um(w), "height_um": _um(h), "esd_um": _um(esd), "corrected": "yes" if o.corrected else ""}
            for j, c in enumerate(o.topk[1:3], start=2):
                row[f"top{j}"], row[f"top{j}_similarity"] = c.species, f"{c.similarity:.4f}"
            rows.append(row)
    return rows


def sample_tables(frames: list[FrameResult], sample: Sample, names: list[str] | None = None) -> dict[str, str]:
    """{file name: CSV text} of the per-sample tables: ``counts.csv`` (one
    row per frame, one column per species plus unknown and total) and
    ``concentration.csv`` (cells per ml with a 95% Poisson interval), both
    only when the volume imaged per frame is known."""
    if sample.volume_ul is None:
        return {}
    columns = species_columns(frames, names)
    conc = [r | {k: f"{r[k]:.6g}" for k in CONCENTRATION_COLUMNS[2:]} for r in concentration_rows(frames, sample)]
    return {"counts.csv": csv_text(counts_rows(frames, columns), ["image", *columns, "total"]),
            "concentration.csv": csv_text(conc, CONCENTRATION_COLUMNS)}


def csv_text(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_detections_csv(path: str | Path, frames: list[FrameResult], um_per_px: float | None = None) -> None:
    """One row per object: image, box (pixels), det_score, species, similarity, runners-up, sizes in µm."""
    atomic_write_text(path, csv_text(detection_rows(frames, um_per_px), CSV_COLUMNS))


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
    """A stable, distinct colour per species; ``unknown`` is always grey."""
    if name == UNKNOWN:
        return (150, 150, 150)
    hue = int(hashlib.md5(name.encode()).hexdigest()[:6], 16) / 0xFFFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def annotate(image: np.ndarray, frame: FrameResult, line: int = 2) -> Image.Image:
    """H×W×3 uint8 frame → PIL image with boxes and "species 0.87" labels;
    unknown objects get dashed-looking grey boxes labelled "unknown"."""
    im = Image.fromarray(image).convert("RGB")
    draw = ImageDraw.Draw(im)
    font = ImageFont.load_default(size=max(12, im.width // 110))
    for o in sorted(frame.objects, key=lambda o: o.det_score):
        colour = species_colour(o.species)
        x1, y1, x2, y2 = o.xyxy
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line if not o.is_unknown else 1)
        label = f"{o.species} {o.similarity:.2f}"
        tx, ty = x1, max(0, y1 - font.size - 4)
        box = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=colour)
        draw.text((tx, ty), label, fill=(0, 0, 0), font=font)
    return im


def save_annotated(path: str | Path, image: np.ndarray, frame: FrameResult) -> None:
    with atomic_path(path) as tmp:
        annotate(image, frame).save(tmp, format="JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG", quality=90)
