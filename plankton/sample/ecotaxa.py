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
(EcoTaxa's "unclassified"); corrected objects are ``validated``. The
category is the class's scientific name (``plankton.artifact.taxonomy``:
``Chlorella``, not ``Chlorella sp``), which EcoTaxa matches against its
taxonomy without a person mapping names by hand; ``object_label`` keeps
the model's own label.

Ids carry the sample id (``<sample>_<frame>_<n>``), so two samples whose
cameras restarted their numbering do not collide in one project. The
sample's place and time (``SampleMeta``) fill ``object_lat``/``lon``/
``date``/``time``/``depth_min``/``max`` on every row; the fields
EcoTaxa's default project formulae read (ecotaxa_back, ``FORMULAE``:
``total_water_volume = sam.tot_vol/1000``, ``subsample_coef =
1/ssm.sub_part``, ``individual_volume`` from ``obj.area`` and
``ssm.pixel_size``) are ``sample_tot_vol`` (litres imaged in the whole
sample), ``acq_sub_part`` (1: every imaged object is in the file),
``acq_pixel_size`` (mm per pixel) and ``object_area`` (px², the ellipse
inscribed in the box, so that its ESD is ``object_esd_um``).

``object_similarity`` is the model's cosine similarity to the predicted
class. EcoTaxa's importer stores 1.0 as the score of every ``predicted``
row (``PSEUDO_TRAINING_SCORE``; a TODO in its ``TSVFile.py`` to read one
from a column): the column is where the score survives.
"""
from __future__ import annotations

import csv
import io
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from plankton.files import atomic_path, atomic_write_bytes
from plankton.sample.exports import ExportJob
from plankton.sample.measure import box_sizes_um
from plankton.results import UNKNOWN, FrameResult
from plankton.sample.meta import SampleMeta
from plankton.artifact.taxonomy import Taxonomy

STATUSES = ("predicted", "validated", "dubious")
TABLES = ("object", "sample", "acq", "process", "img")
NEEDS_ID = ("object", "sample", "acq", "process")
COLUMNS = [  # (name, type)
    ("img_file_name", "t"), ("img_rank", "f"), ("object_id", "t"),
    ("object_lat", "f"), ("object_lon", "f"), ("object_date", "t"), ("object_time", "t"), ("object_depth_min", "f"), ("object_depth_max", "f"),
    ("object_annotation_category", "t"), ("object_annotation_status", "t"), ("object_label", "t"),
    ("object_similarity", "f"), ("object_det_score", "f"), ("object_top2", "t"), ("object_top2_similarity", "f"),
    ("object_bbox_x", "f"), ("object_bbox_y", "f"), ("object_bbox_width", "f"), ("object_bbox_height", "f"),
    ("object_width_um", "f"), ("object_height_um", "f"), ("object_esd_um", "f"), ("object_area", "f"),
    ("acq_id", "t"), ("acq_frame", "t"), ("acq_sub_part", "f"), ("acq_pixel_size", "f"), ("acq_um_per_px", "f"), ("acq_volume_ul", "f"),
    ("sample_id", "t"), ("sample_station", "t"), ("sample_tot_vol", "f"), ("sample_frames", "f"),
    ("process_id", "t"), ("process_software", "t"), ("process_model", "t"),
]
CROP_PADDING = 0.25  # of the box's longer side, on each side: a little context, as EcoTaxa vignettes have


@dataclass(frozen=True)
class ExportInfo:
    """What the whole export shares: the sample's name, the optical scale
    (µm per pixel, or None), the volume per frame (µl, or None), the
    software and model that made the predictions, the sample's place and
    time, the taxonomy that names the classes (None: derived from the
    labels) and the number of frames imaged (those without objects too,
    for the volume; None: unknown)."""

    sample_id: str
    um_per_px: float | None = None
    volume_ul: float | None = None
    software: str = "plankton"
    model: str = ""
    meta: SampleMeta | None = None
    taxonomy: Taxonomy | None = None
    frames: int | None = None


def _num(v, digits: int = 4) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.{digits}g}"


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
        info, taxonomy = self.info, self.info.taxonomy or Taxonomy()
        shared = self._shared()
        for i, (o, crop, (w, h, esd)) in enumerate(zip(frame.objects, crops, sizes)):
            oid = f"{_slug(info.sample_id)}_{stem}_{i:04d}"
            name = f"{oid}.png"
            with atomic_path(self.folder / name) as tmp:
                Image.fromarray(np.ascontiguousarray(crop)).save(tmp, format="PNG")
            category = taxonomy.name(o.species) if o.species != UNKNOWN else ""
            top2 = o.topk[1] if len(o.topk) > 1 else None
            x1, y1, x2, y2 = o.xyxy
            self.rows.append(shared | {
                "img_file_name": name, "img_rank": "0", "object_id": oid,
                "object_annotation_category": category,
                "object_annotation_status": ("validated" if o.corrected else "predicted") if category else "",
                "object_label": o.species,
                "object_similarity": f"{o.similarity:.4f}", "object_det_score": f"{o.det_score:.4f}",
                "object_top2": top2.species if top2 else "", "object_top2_similarity": f"{top2.similarity:.4f}" if top2 else "",
                "object_bbox_x": f"{x1:.1f}", "object_bbox_y": f"{y1:.1f}", "object_bbox_width": f"{x2 - x1:.1f}", "object_bbox_height": f"{y2 - y1:.1f}",
                "object_width_um": _num(w), "object_height_um": _num(h), "object_esd_um": _num(esd),
                "object_area": f"{np.pi / 4 * max(x2 - x1, 0) * max(y2 - y1, 0):.1f}",
                "acq_id": f"{info.sample_id}_{stem}", "acq_frame": frame.image,
            })

    def _shared(self) -> dict:
        """The columns every row of the sample has alike."""
        info, meta = self.info, self.info.meta or SampleMeta()
        litres = info.frames * info.volume_ul / 1e6 if info.frames is not None and info.volume_ul is not None else None
        return {
            "object_lat": _num(meta.latitude, 9), "object_lon": _num(meta.longitude, 9),
            "object_date": meta.date.replace("-", ""), "object_time": meta.time.replace(":", ""),
            "object_depth_min": _num(meta.depth_min, 6), "object_depth_max": _num(meta.depth_max, 6),
            "acq_sub_part": "1", "acq_pixel_size": _num(info.um_per_px / 1000 if info.um_per_px else None, 6),
            "acq_um_per_px": _num(info.um_per_px), "acq_volume_ul": _num(info.volume_ul),
            "sample_id": info.sample_id, "sample_station": meta.station, "sample_tot_vol": _num(litres, 6),
            "sample_frames": "" if info.frames is None else str(info.frames),
            "process_id": f"{info.sample_id}_{_slug(info.model) or 'model'}", "process_software": info.software, "process_model": info.model,
        }

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


def info_of(job: ExportJob) -> ExportInfo:
    return ExportInfo(job.sample_id, job.sample.um_per_px, job.sample.volume_ul, job.software,
                      job.model, meta=job.meta, taxonomy=job.taxonomy, frames=len(job.frames))


def _fill(job: ExportJob, folder: Path) -> Path:
    export = EcotaxaExport(folder, info_of(job))
    for frame, crops in job.crops():
        if isinstance(crops, Exception):  # e.g. a file changed since it was analysed: its objects are left out, the rest goes on
            job.report(f"EcoTaxa export: {crops}")
        else:
            export.add(frame, crops)
    return export.close()


def write(job: ExportJob, folder: str | Path) -> Path:
    """The import folder ``folder``, then checked against EcoTaxa's rules
    (each problem reported in one line); returns the TSV's path."""
    tsv = _fill(job, Path(folder))
    for problem in check_folder(folder):
        job.report(f"EcoTaxa export: {problem}")
    return tsv


def data(job: ExportJob) -> bytes:
    """The import folder, zipped (its files at the top level). Not checked:
    the app zips it again at every change of a slider."""
    with tempfile.TemporaryDirectory() as tmp:
        _fill(job, Path(tmp))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in sorted(Path(tmp).iterdir()):
                zf.write(p, p.name)
    return buf.getvalue()


def _text(path: Path) -> str:
    raw = path.read_bytes()
    return raw.decode("utf-8-sig") if raw.startswith(b"\xef\xbb\xbf") else raw.decode("latin-1")


def _place_and_time(r: dict) -> list[str]:
    """EcoTaxa's own checks of the predefined place and time columns
    (``TSVFile``): lat in -90..90, lon in -180..180, dates YYYYMMDD or
    YYYY-MM-DD, times HHMM[SS] or HH:MM:SS."""
    out = []
    for key, bound in (("object_lat", 90), ("object_lon", 180)):
        v = r.get(key, "").strip()
        try:
            bad = bool(v) and not -bound <= float(v) <= bound
        except ValueError:
            bad = True
        if bad:
            out.append(f"{key} = {v!r} is outside -{bound}..{bound}")
    date, time = r.get("object_date", "").strip(), r.get("object_time", "").strip()
    if date and not re.fullmatch(r"\d{8}|\d{4}-\d{2}-\d{2}", date):
        out.append(f"object_date = {date!r} is not YYYYMMDD or YYYY-MM-DD")
    if time and not re.fullmatch(r"\d{1,6}|\d{2}:\d{2}:\d{2}", time):
        out.append(f"object_time = {time!r} is not HHMMSS or HH:MM:SS")
    return out


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
            problems += [f"{tsv.name} line {line}: {p}" for p in _place_and_time(r)]
    return problems
