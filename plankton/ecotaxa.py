"""Export objects as an EcoTaxa import folder, and check a folder against
EcoTaxa's import rules.

The format, as EcoTaxa's importer reads it (ecotaxa_back, ``TSVFile`` and
``GlobalMapping``): a tab-separated ``ecotaxa_*.tsv`` whose first line
names the columns ``prefix_field`` (prefixes ``object``, ``sample``,
``acq``, ``process`` and ``img``); a second line gives each column's type,
``[t]`` text or ``[f]`` float; then one object per line. ``object_id`` and
``img_file_name`` (an image beside the TSV) are required and their pair
is unique; a table with any column needs its ``*_id``; a status
(``predicted``, ``validated``, ``dubious``) needs a category and a
category needs a status. The file is read as Latin-1 unless it starts
with a UTF-8 byte-order mark, so it is written as UTF-8 with one.

Objects the model left ``unknown`` get neither category nor status
(EcoTaxa's "unclassified"); corrected objects are ``validated``.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_path, atomic_write_bytes
from .measure import box_sizes_um
from .results import UNKNOWN, FrameResult

STATUSES = ("predicted", "validated", "dubious")
TABLES = ("object", "sample", "acq", "process", "img")
NEEDS_ID = ("object", "sample", "acq", "process")
COLUMNS = [  # (name, type)
    ("img_file_name", "t"), ("img_rank", "f"), ("object_id", "t"),
    ("object_annotation_category", "t"), ("object_annotation_status", "t"),
    ("object_similarity", "f"), ("object_det_score", "f"), ("object_top2", "t"), ("object_top2_similarity", "f"),
    ("object_bbox_x", "f"), ("object_bbox_y", "f"), ("object_bbox_width", "f"), ("object_bbox_height", "f"),
    ("object_width_um", "f"), ("object_height_um", "f"), ("object_esd_um", "f"),
    ("acq_id", "t"), ("acq_frame", "t"), ("acq_um_per_px", "t"), ("acq_volume_ul", "t"),
    ("sample_id", "t"), ("process_id", "t"), ("process_software", "t"), ("process_model", "t"),
]
CROP_PADDING = 0.25  # of the box's longer side, on each side: a little context, as EcoTaxa vignettes have


@dataclass(frozen=True)
class ExportInfo:
    """What the whole export shares: the sample's name, the optical scale
    (µm per pixel, or None), the volume per frame (µl, or None), and the
    software and model that made the predictions."""

    sample_id: str
    um_per_px: float | None = None
    volume_ul: float | None = None
    software: str = "plankton"
    model: str = ""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "frame"


def object_crop(image: np.ndarray, xyxy, padding: float = CROP_PADDING) -> np.ndarray:
    """H×W×3 frame and one xyxy pixel box → the box with ``padding`` of its
    longer side around it, clipped to the frame (native resolution)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    pad = padding * max(x2 - x1, y2 - y1, 1.0)
    H, W = image.shape[:2]
    a, b = int(max(0, np.floor(x1 - pad))), int(max(0, np.floor(y1 - pad)))
    c, d = int(min(W, np.ceil(x2 + pad))), int(min(H, np.ceil(y2 + pad)))
    return image[b : max(d, b + 1), a : max(c, a + 1)]


class EcotaxaExport:
    """Writes an import folder frame by frame (``add``), then the TSV
    (``close``). Crops are PNG files named by object id."""

    def __init__(self, folder: str | Path, info: ExportInfo):
        self.folder, self.info = Path(folder), info
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self._ids: set[str] = set()

    def add_image(self, image: np.ndarray, frame: FrameResult) -> None:
        """One frame (H×W×3 uint8) and its objects, cut from it."""
        self.add(frame, [object_crop(image, o.xyxy) for o in frame.objects])

    def add(self, frame: FrameResult, crops: list[np.ndarray]) -> None:
        """One frame's objects and their crops (``object_crop``), in order."""
        stem = _slug(Path(frame.image).stem)
        while stem in self._ids:  # two frames of the same name (a.jpg, a.png)
            stem += "_"
        self._ids.add(stem)
        sizes = box_sizes_um(np.array([o.xyxy for o in frame.objects], np.float64).reshape(-1, 4), self.info.um_per_px)
        if len(crops) != len(frame.objects):
            raise ValueError(f"{frame.image}: {len(crops)} crops for {len(frame.objects)} objects")
        for i, (o, crop, (w, h, esd)) in enumerate(zip(frame.objects, crops, sizes)):
            oid = f"{stem}_{i:04d}"
            name = f"{oid}.png"
            with atomic_path(self.folder / name) as tmp:
                Image.fromarray(np.ascontiguousarray(crop)).save(tmp, format="PNG")
            named = o.species != UNKNOWN
            top2 = o.topk[1] if len(o.topk) > 1 else None
            x1, y1, x2, y2 = o.xyxy
            num = lambda v: "" if v is None or not np.isfinite(v) else f"{v:.4g}"  # noqa: E731
            self.rows.append({
                "img_file_name": name, "img_rank": "0", "object_id": oid,
                "object_annotation_category": o.species if named else "",
                "object_annotation_status": ("validated" if o.corrected else "predicted") if named else "",
                "object_similarity": f"{o.similarity:.4f}", "object_det_score": f"{o.det_score:.4f}",
                "object_top2": top2.species if top2 else "", "object_top2_similarity": f"{top2.similarity:.4f}" if top2 else "",
                "object_bbox_x": f"{x1:.1f}", "object_bbox_y": f"{y1:.1f}", "object_bbox_width": f"{x2 - x1:.1f}", "object_bbox_height": f"{y2 - y1:.1f}",
                "object_width_um": num(w), "object_height_um": num(h), "object_esd_um": num(esd),
                "acq_id": f"{self.info.sample_id}_{stem}", "acq_frame": frame.image,
                "acq_um_per_px": num(self.info.um_per_px), "acq_volume_ul": num(self.info.volume_ul),
                "sample_id": self.info.sample_id, "process_id": f"{self.info.sample_id}_{_slug(self.info.model) or 'model'}",
                "process_software": self.info.software, "process_model": self.info.model,
            })

    def close(self) -> Path:
        """Write ``ecotaxa_<sample>.tsv`` (atomically) and return its path."""
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow([c for c, _ in COLUMNS])
        w.writerow([f"[{t}]" for _, t in COLUMNS])
        for r in self.rows:
            w.writerow([r[c] for c, _ in COLUMNS])
        path = self.folder / f"ecotaxa_{_slug(self.info.sample_id)}.tsv"
        atomic_write_bytes(path, buf.getvalue().encode("utf-8-sig"))
        return path


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return raw.decode("utf-8-sig") if raw.startswith(b"\xef\xbb\xbf") else raw.decode("latin-1")


def check_folder(folder: str | Path) -> list[str]:
    """Every way ``folder``'s ``ecotaxa_*.tsv`` files break EcoTaxa's import
    rules (see the module docstring), one line each; [] when none."""
    folder = Path(folder)
    tsvs = sorted(folder.glob("ecotaxa*.tsv"))
    if not tsvs:
        return [f"{folder}: no ecotaxa*.tsv file"]
    problems: list[str] = []
    for tsv in tsvs:
        rows = list(csv.reader(io.StringIO(_text(tsv)), delimiter="\t"))
        if len(rows) < 2:
            problems.append(f"{tsv.name}: needs a header line and a type line")
            continue
        header, types = [h.strip().lower() for h in rows[0]], rows[1]
        if len(types) != len(header):
            problems.append(f"{tsv.name}: the type line has {len(types)} fields for {len(header)} columns")
        for name, t in zip(header, types):
            prefix = name.split("_", 1)[0]
            if "_" not in name or prefix not in TABLES:
                problems.append(f"{tsv.name}: column {name!r} is not prefix_field with a prefix in {', '.join(TABLES)}")
            if t not in ("[t]", "[f]"):
                problems.append(f"{tsv.name}: column {name!r} has type {t!r}, not [t] or [f]")
        for prefix in NEEDS_ID:
            if any(h.startswith(prefix + "_") for h in header) and f"{prefix}_id" not in header:
                problems.append(f"{tsv.name}: {prefix}_id is required when there are {prefix}_ columns")
        numeric = [i for i, t in enumerate(types) if t == "[f]"]
        seen: dict[tuple[str, str], int] = {}
        for line, values in enumerate(rows[2:], start=3):
            if len(values) != len(header):
                problems.append(f"{tsv.name} line {line}: {len(values)} fields for {len(header)} columns")
                continue
            r = dict(zip(header, values))
            if not r.get("object_id", "").strip():
                problems.append(f"{tsv.name} line {line}: no object_id")
            image = folder / r.get("img_file_name", "")
            if not r.get("img_file_name") or not image.is_file():
                problems.append(f"{tsv.name} line {line}: image {r.get('img_file_name')!r} is missing")
            else:
                try:
                    with Image.open(image) as im:
                        im.verify()
                except Exception:
                    problems.append(f"{tsv.name} line {line}: image {r['img_file_name']!r} cannot be read")
            key = (r.get("object_id", ""), r.get("img_file_name", ""))
            if key in seen:
                problems.append(f"{tsv.name} line {line}: object {key[0]!r} with image {key[1]!r} repeats line {seen[key]}")
            seen[key] = line
            status, category = r.get("object_annotation_status", "").strip(), r.get("object_annotation_category", "").strip()
            if status and status.lower() not in STATUSES:
                problems.append(f"{tsv.name} line {line}: status {status!r} is not one of {', '.join(STATUSES)}")
            if bool(status) != bool(category):
                problems.append(f"{tsv.name} line {line}: a status needs a category and a category a status ({status!r}, {category!r})")
            for i in numeric:
                v = values[i].strip()
                try:
                    float(v) if v else None
                except ValueError:
                    problems.append(f"{tsv.name} line {line}: {header[i]} = {v!r} is not a number")
    return problems
