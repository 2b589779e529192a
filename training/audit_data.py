"""The dataset audit's findings, without any plotting (that is ``audit_report``):
the COCO file read as it is, its counts and box sizes, its frames read from
disk, and a warning for each problem, naming what it found.

The file is parsed here rather than with ``plankton.coco.load_coco``, because
``load_coco`` drops what it cannot use (both entries of a duplicate image id,
for one) and the audit must describe what the file holds, problems included.
"""
from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from plankton import coco as data
from plankton.model.crops import CropConfig, extract_crops
from plankton.images import ImageError, read_image

# key → heading in the report; the order is the report's
WARNING_KINDS = {
    "duplicate_image_ids": "Duplicate image ids",
    "duplicate_files": "One file listed under several image ids",
    "missing_files": "Missing files",
    "unreadable_files": "Unreadable files",
    "size_mismatch": "Frames whose size differs from their COCO entry",
    "identical_frames": "Byte-identical frames",
    "empty_categories": "Categories with no boxes",
    "outside_frame": "Boxes outside the frame",
    "zero_area": "Boxes of zero area",
    "below_stride": "Boxes smaller than the detector's smallest stride",
    "malformed": "Malformed entries (left out of every count)",
}


class AuditError(ValueError):
    """The annotation file cannot be audited at all (unreadable, not COCO)."""


def read_coco_json(path: str | os.PathLike) -> tuple[dict, str]:
    """The COCO document and the sha256 of its bytes (``plankton.coco``'s reader)."""
    try:
        doc, raw = data.read_coco_json(path)
    except data.CocoError as e:
        raise AuditError(str(e)) from None
    return doc, hashlib.sha256(raw).hexdigest()


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class Entry:
    """One entry of ``images``; an id may have several (a warning)."""
    image_id: int
    file_name: str
    width: int | None  # None when the entry's own value is missing or invalid
    height: int | None


@dataclass
class Survey:
    """What the annotation file holds. Boxes with a valid bbox, a known image
    and a known category are all kept, zero-area ones included: they are in
    the file, so they are counted (and warned about)."""
    categories: dict[int, str]
    entries: list[Entry]  # every image entry with an id and a file name, in file order
    boxes: list[data.CocoBox]
    warnings: dict[str, list[dict]] = field(default_factory=lambda: {k: [] for k in WARNING_KINDS})

    def warn(self, kind: str, message: str, **details) -> None:
        self.warnings[kind].append({"message": message, **details})

    @property
    def image_ids(self) -> list[int]:
        return sorted({e.image_id for e in self.entries})

    def first_entries(self) -> dict[int, Entry]:
        """image id → its first entry, the one its boxes are checked against."""
        first: dict[int, Entry] = {}
        for e in self.entries:
            first.setdefault(e.image_id, e)
        return first


def _group(entries: list, kind: str, survey: Survey) -> dict[int, list[dict]]:
    groups: dict[int, list[dict]] = defaultdict(list)
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            survey.warn("malformed", f"{kind}[{i}]: expected an object, got {type(e).__name__}")
        elif data.as_int(e.get("id")) is None:
            survey.warn("malformed", f"{kind}[{i}]: missing or non-integer id {e.get('id')!r}")
        else:
            groups[data.as_int(e["id"])].append(e)
    return groups


def _survey_categories(doc: dict, s: Survey) -> None:
    for cid, group in _group(doc["categories"], "categories", s).items():
        name = group[0].get("name")
        if len(group) > 1:
            names = ", ".join(str(g.get("name")) for g in group)
            s.warn("malformed", f"category id {cid} appears {len(group)} times (names {names})", category_id=cid)
        elif not isinstance(name, str) or not name.strip():
            s.warn("malformed", f"category {cid}: missing name", category_id=cid)
        else:
            s.categories[cid] = name


def _survey_images(doc: dict, s: Survey) -> None:
    for iid, group in _group(doc["images"], "images", s).items():
        files = [g.get("file_name") for g in group]
        if len(group) > 1:
            s.warn("duplicate_image_ids", f"image id {iid} appears {len(group)} times (files {', '.join(map(str, files))})",
                   image_id=iid, files=files)
        for e, fn in zip(group, files):
            if not isinstance(fn, str) or not fn:
                s.warn("malformed", f"image {iid}: missing file_name", image_id=iid)
                continue
            w, h = data.as_int(e.get("width")), data.as_int(e.get("height"))
            if w is None or h is None or w <= 0 or h <= 0:
                s.warn("malformed", f"image {iid} ({fn}): missing or invalid width/height "
                                    f"({e.get('width')!r} x {e.get('height')!r})", image_id=iid, file_name=fn)
                w = h = None
            s.entries.append(Entry(iid, fn, w, h))
    # One frame under two ids would let its boxes fall on both sides of a split.
    ids_of = defaultdict(list)
    for e in s.entries:
        ids_of[os.path.normpath(e.file_name)].append(e.image_id)
    for fn, ids in ids_of.items():
        ids = sorted(set(ids))
        if len(ids) > 1:
            s.warn("duplicate_files", f"file {fn} is listed under image ids {', '.join(map(str, ids))}",
                   file_name=fn, image_ids=ids)


def _parse_bbox(v) -> tuple[float, float, float, float] | None:
    if (isinstance(v, (list, tuple)) and len(v) == 4 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        return tuple(float(x) for x in v)
    return None


def _survey_boxes(doc: dict, s: Survey) -> None:
    known = set(s.image_ids)
    for aid, group in _group(doc["annotations"], "annotations", s).items():
        if len(group) > 1:  # both are boxes someone drew, so both stay counted
            s.warn("malformed", f"annotation id {aid} appears {len(group)} times "
                                f"(images {', '.join(str(g.get('image_id')) for g in group)})", ann_id=aid)
        for e in group:
            iid, cid, xywh = data.as_int(e.get("image_id")), data.as_int(e.get("category_id")), _parse_bbox(e.get("bbox"))
            if iid not in known:
                s.warn("malformed", f"annotation {aid}: unknown image id {e.get('image_id')!r}", ann_id=aid)
            elif cid not in s.categories:
                s.warn("malformed", f"annotation {aid} (image {iid}): unknown category id {e.get('category_id')!r}",
                       ann_id=aid)
            elif xywh is None:
                s.warn("malformed", f"annotation {aid} (image {iid}): bbox must be 4 finite numbers, "
                                    f"got {e.get('bbox')!r}", ann_id=aid)
            else:
                s.boxes.append(data.CocoBox(aid, iid, cid, xywh))


def _check_boxes(s: Survey, min_stride: float) -> None:
    entries = s.first_entries()
    for b in s.boxes:
        entry = entries[b.image_id]
        x, y, w, h = b.xywh
        where = f"annotation {b.id} (image {b.image_id}, {entry.file_name}, {s.categories[b.category_id]})"
        box = "[" + ", ".join(map(_fmt, b.xywh)) + "]"
        details = dict(ann_id=b.id, image_id=b.image_id, file_name=entry.file_name, bbox=list(b.xywh))
        if w <= 0 or h <= 0:
            # A box with no area has no size either: no other box check applies.
            s.warn("zero_area", f"{where}: box {box} has zero area (width {_fmt(w)}, height {_fmt(h)})", **details)
            continue
        W, H = entry.width, entry.height
        if W is not None and (x < 0 or y < 0 or x + w > W or y + h > H):
            s.warn("outside_frame", f"{where}: box {box} extends outside the {W}x{H} frame", **details)
        if max(b.xywh[2:]) < min_stride:
            # The whole object fits inside one cell of the finest detection grid.
            s.warn("below_stride", f"{where}: box {box} is {_fmt(w)}x{_fmt(h)} px, smaller than the "
                                   f"detector's smallest stride ({_fmt(min_stride)} px)", **details)
    has_boxes = {b.category_id for b in s.boxes}
    for cid, name in sorted(s.categories.items()):
        if cid not in has_boxes:
            s.warn("empty_categories", f"category {cid} ({name}) has no boxes", category_id=cid, name=name)


def survey_coco(doc: dict, min_stride: float = 8.0) -> Survey:
    """Parse a COCO document as it is and record every annotation-level warning."""
    s = Survey({}, [], [])
    _survey_categories(doc, s)
    _survey_images(doc, s)
    _survey_boxes(doc, s)
    _check_boxes(s, min_stride)
    return s


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {"n": len(values), **{k: round(float(v), 2) for k, v in zip(("min", "q1", "median", "q3", "max"), q)}}


def statistics(s: Survey, um_per_px: float | None = None) -> dict:
    """Counts per species and per frame, box sizes (longer side, in µm when a
    scale is given, else px) and which species share frames."""
    scale = um_per_px or 1.0
    boxes_of, frames_of, sizes_of = Counter(), defaultdict(set), defaultdict(list)
    for b in s.boxes:
        boxes_of[b.category_id] += 1
        frames_of[b.category_id].add(b.image_id)
        if b.xywh[2] > 0 and b.xywh[3] > 0:
            sizes_of[b.category_id].append(round(max(b.xywh[2:]) * scale, 2))
    total = len(s.boxes)
    species = sorted(({"id": cid, "name": name, "boxes": boxes_of[cid], "frames": len(frames_of[cid]),
                       "share": boxes_of[cid] / total if total else 0.0,
                       "size": _summary(sizes_of[cid]), "sizes": sorted(sizes_of[cid])}
                      for cid, name in s.categories.items()), key=lambda r: (-r["boxes"], r["name"]))
    per_frame = Counter({i: 0 for i in s.image_ids})
    per_frame.update(b.image_id for b in s.boxes)
    present = [r for r in species if r["boxes"]]
    co = [[len(frames_of[a["id"]] & frames_of[b["id"]]) for b in present] for a in present]
    return {
        "totals": {"frames": len(per_frame), "boxes": total, "categories": len(s.categories),
                   "species_with_boxes": len(present)},
        "size_unit": "µm" if um_per_px else "px",
        "species": species,
        "objects_per_frame": {"per_frame": {str(i): n for i, n in sorted(per_frame.items())},
                              "histogram": {str(k): v for k, v in sorted(Counter(per_frame.values()).items())}},
        "cooccurrence": {"species": [r["name"] for r in present], "frames": co},
    }


def pick_examples(s: Survey, per_species: int, seed: int = 0) -> dict[int, list[data.CocoBox]]:
    """Up to ``per_species`` boxes per species, from as many different frames
    as possible, grouped by image id (so each frame is cut once)."""
    usable = {e.image_id for e in s.entries}
    dup = {w["image_id"] for w in s.warnings["duplicate_image_ids"]}  # which file is meant is unknown
    by_species = defaultdict(list)
    for b in s.boxes:
        if b.image_id in usable and b.image_id not in dup and b.xywh[2] > 0 and b.xywh[3] > 0:
            by_species[b.category_id].append(b)
    rng = random.Random(seed)
    picks = defaultdict(list)
    for cid in sorted(by_species):
        boxes = by_species[cid]
        rng.shuffle(boxes)
        seen, first, rest = set(), [], []
        for b in boxes:
            (rest if b.image_id in seen else first).append(b)
            seen.add(b.image_id)
        for b in (first + rest)[:per_species]:
            picks[b.image_id].append(b)
    return picks


def _jpeg_b64(crop: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def scan_frames(s: Survey, root: Path, picks: dict[int, list[data.CocoBox]] | None = None,
                crop_cfg: CropConfig | None = None) -> dict[int, list[dict]]:
    """Read every listed file once: missing, unreadable, wrongly sized and
    byte-identical frames become warnings. Returns the example crops of
    ``picks``, per category id, each with its JPEG as base64."""
    picks, crop_cfg = picks or {}, crop_cfg or CropConfig()
    crops = defaultdict(list)
    by_hash = defaultdict(list)
    todo = {}  # a file listed under several ids is read once (that is its own warning)
    for e in s.entries:
        todo.setdefault(os.path.normpath(e.file_name), e)
    for e in tqdm(list(todo.values()), desc="audit: reading frames", unit="frame"):
        path = root / e.file_name
        where = dict(image_id=e.image_id, file_name=e.file_name)
        if not path.is_file():
            s.warn("missing_files", f"image {e.image_id}: file {e.file_name} not found", **where)
            continue
        try:
            data = path.read_bytes()
        except OSError as err:
            s.warn("unreadable_files", f"image {e.image_id}: {e.file_name}: cannot read ({err.strerror or err})", **where)
            continue
        by_hash[hashlib.sha256(data).hexdigest()].append(e)
        try:
            image = read_image(data, name=e.file_name)
        except ImageError as err:  # its message starts with the file name
            s.warn("unreadable_files", f"image {e.image_id}: {err}", **where)
            continue
        H, W = image.shape[:2]
        if e.width is not None and (W, H) != (e.width, e.height):
            s.warn("size_mismatch", f"image {e.image_id}: {e.file_name} is {W}x{H} pixels, its COCO entry says "
                                    f"{e.width}x{e.height}", **where, actual=[W, H], listed=[e.width, e.height])
        boxes = picks.get(e.image_id, [])
        if boxes:
            xyxy = np.array([(x, y, x + w, y + h) for x, y, w, h in (b.xywh for b in boxes)], np.float32)
            for b, crop in zip(boxes, extract_crops(image, xyxy, crop_cfg)):
                crops[b.category_id].append({"image_id": b.image_id, "ann_id": b.id, "file_name": e.file_name,
                                             "bbox": list(b.xywh), "jpeg": _jpeg_b64(crop)})
    for group in by_hash.values():
        if len(group) > 1:
            names = ", ".join(f"{g.file_name} (image {g.image_id})" for g in group)
            s.warn("identical_frames", f"{len(group)} files are byte-identical: {names}",
                   files=[g.file_name for g in group], image_ids=[g.image_id for g in group])
    return dict(crops)
