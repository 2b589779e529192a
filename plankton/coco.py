"""COCO detection annotations, loaded with validation (the train/val split
over frames is training's: ``training/splits.py``). Boxes are pixels: ``xywh`` as in COCO, ``xyxy`` corners."""
from __future__ import annotations

import hashlib
import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np


_SHOWN_PROBLEMS = 3


class CocoError(ValueError):
    """Invalid COCO input; ``problems`` lists every problem found, one line each."""

    def __init__(self, message: str, problems: Iterable[str] = ()):
        super().__init__(message)
        self.problems = list(problems) or [message]


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str  # relative to the dataset's image_root, may hold a subfolder
    width: int
    height: int


@dataclass(frozen=True)
class CocoBox:
    id: int
    image_id: int
    category_id: int
    xywh: tuple[float, float, float, float]

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        x, y, w, h = self.xywh
        return (x, y, x + w, y + h)


@dataclass(frozen=True)
class Category:
    id: int
    name: str


@dataclass
class CocoDataset:
    """Validated annotations. Treat as read-only; derive with ``subset``."""

    images: dict[int, CocoImage]
    boxes: list[CocoBox]
    categories: dict[int, Category]
    image_root: Path
    problems: list[str] = field(default_factory=list)
    source: Path | None = None  # the annotation file, when loaded from one
    sha256: str | None = None  # of the annotation file's bytes as loaded
    _by_image: dict[int, list[CocoBox]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def boxes_of(self, image_id: int) -> list[CocoBox]:
        if self._by_image is None:
            self._by_image = defaultdict(list)
            for b in self.boxes:
                self._by_image[b.image_id].append(b)
        return list(self._by_image.get(image_id, ()))

    def path_of(self, image_id: int) -> Path:
        return self.image_root / self.images[image_id].file_name

    def xyxy_of(self, image_id: int) -> np.ndarray:
        """N×4 float32 (x1, y1, x2, y2) pixels, in the order of ``boxes_of``."""
        boxes = [b.xyxy for b in self.boxes_of(image_id)]
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)

    def subset(self, image_ids: Iterable[int]) -> CocoDataset:
        """The given frames and their boxes; all categories are kept."""
        keep = set(image_ids)
        missing = keep - self.images.keys()
        if missing:
            raise KeyError(f"image ids not in the dataset: {sorted(missing)[:10]}")
        return CocoDataset(
            images={i: im for i, im in self.images.items() if i in keep},
            boxes=[b for b in self.boxes if b.image_id in keep],
            categories=dict(self.categories), image_root=self.image_root,
            problems=list(self.problems), source=self.source, sha256=self.sha256)

    def to_dict(self) -> dict:
        """Plain COCO dict (with area and iscrowd, as pycocotools expects)."""
        return {
            "images": [{"id": im.id, "file_name": im.file_name, "width": im.width,
                        "height": im.height} for im in self.images.values()],
            "annotations": [{"id": b.id, "image_id": b.image_id, "category_id": b.category_id,
                             "bbox": list(b.xywh), "area": b.xywh[2] * b.xywh[3], "iscrowd": 0}
                            for b in self.boxes],
            "categories": [{"id": c.id, "name": c.name, "supercategory": ""}
                           for c in self.categories.values()],
        }


def as_int(v) -> int | None:
    # Some exporters write 1920.0; accept integral floats, never bools.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not v.is_integer():
        return None
    return int(v)


def _fmt_box(b) -> str:
    return "[" + ", ".join(f"{v:g}" for v in b) + "]"


def _group_by_id(entries: list, kind: str, problems: list[str]) -> dict[int, list[dict]]:
    """id → entries with that id, in file order; malformed entries become problems."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            problems.append(f"{kind}[{i}]: expected an object, got {type(e).__name__}")
        elif as_int(e.get("id")) is None:
            problems.append(f"{kind}[{i}]: missing or non-integer id {e.get('id')!r}")
        else:
            groups[as_int(e["id"])].append(e)
    return groups


def _parse_categories(entries: list, problems: list[str]) -> tuple[dict[int, Category], set[int]]:
    groups = _group_by_id(entries, "categories", problems)
    cats = {}
    for cid, group in groups.items():
        name = group[0].get("name")
        if len(group) > 1:
            names = ", ".join(str(g.get("name")) for g in group)
            problems.append(f"category id {cid} appears {len(group)} times (names {names})")
        elif not isinstance(name, str) or not name.strip():
            problems.append(f"category {cid}: missing name")
        else:
            cats[cid] = Category(cid, name)
    return cats, set(groups)


def _parse_images(entries: list, root: Path, check_files: bool,
                  problems: list[str]) -> tuple[dict[int, CocoImage], set[int]]:
    groups = _group_by_id(entries, "images", problems)
    images = {}
    for iid, group in groups.items():
        e = group[0]
        fn, w, h = e.get("file_name"), as_int(e.get("width")), as_int(e.get("height"))
        if len(group) > 1:
            # Ambiguous which file the boxes belong to, so none of them is kept.
            files = ", ".join(str(g.get("file_name")) for g in group)
            problems.append(f"image id {iid} appears {len(group)} times (files {files})")
        elif not isinstance(fn, str) or not fn:
            problems.append(f"image {iid}: missing file_name")
        elif w is None or h is None or w <= 0 or h <= 0:
            problems.append(f"image {iid} ({fn}): missing or invalid width/height "
                            f"({e.get('width')!r}x{e.get('height')!r})")
        elif check_files and not (root / fn).is_file():
            problems.append(f"image {iid}: file {fn} not found under {root}")
        else:
            images[iid] = CocoImage(iid, fn, w, h)
    # One frame under two ids would let its boxes leak across the split.
    by_file = defaultdict(list)
    for im in images.values():
        by_file[os.path.normpath(im.file_name)].append(im.id)
    for fn, ids in by_file.items():
        if len(ids) > 1:
            problems.append(f"file {fn} is listed under image ids {', '.join(map(str, ids))}")
            for i in ids:
                del images[i]
    return images, set(groups)


def _parse_box(e: dict, where: str, im: CocoImage, tolerance: float,
               problems: list[str]) -> tuple[float, float, float, float] | None:
    """Validated COCO bbox clipped to the frame, or None after recording a problem."""
    bbox = e.get("bbox")
    if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) for v in bbox)):
        problems.append(f"{where}: bbox must be 4 finite numbers, got {bbox!r}")
        return None
    x, y, w, h = map(float, bbox)
    if w <= 0 or h <= 0:
        problems.append(f"{where}: box {_fmt_box(bbox)} has non-positive width or height")
        return None
    if x < -tolerance or y < -tolerance or x + w > im.width + tolerance or y + h > im.height + tolerance:
        problems.append(f"{where}: box {_fmt_box(bbox)} extends outside the "
                        f"{im.width}x{im.height} frame")
        return None
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(im.width)), min(y + h, float(im.height))
    if x1 <= x0 or y1 <= y0:
        problems.append(f"{where}: box {_fmt_box(bbox)} is empty once clipped to the frame")
        return None
    return (x0, y0, x1 - x0, y1 - y0)


def _parse_boxes(entries: list, images: dict[int, CocoImage], image_ids: set[int],
                 categories: dict[int, Category], category_ids: set[int],
                 tolerance: float, problems: list[str]) -> list[CocoBox]:
    # Boxes of images or categories that were dropped for their own problem
    # are dropped quietly: that problem is already reported.
    boxes = []
    for aid, group in _group_by_id(entries, "annotations", problems).items():
        e = group[0]
        iid, cid = as_int(e.get("image_id")), as_int(e.get("category_id"))
        if len(group) > 1:
            on = ", ".join(str(g.get("image_id")) for g in group)
            problems.append(f"annotation id {aid} appears {len(group)} times (images {on})")
        elif iid not in image_ids:
            problems.append(f"annotation {aid}: unknown image id {e.get('image_id')!r}")
        elif cid not in category_ids:
            problems.append(f"annotation {aid}: unknown category id {e.get('category_id')!r}")
        elif iid in images and cid in categories:
            im = images[iid]
            where = f"annotation {aid} (image {iid}, {im.file_name})"
            xywh = _parse_box(e, where, im, tolerance, problems)
            if xywh is not None:
                boxes.append(CocoBox(aid, iid, cid, xywh))
    return boxes


def read_coco_json(path: str | os.PathLike) -> tuple[dict, bytes]:
    """A COCO file's document (images, annotations and categories as lists)
    and its bytes; CocoError, one line, when it is not one."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CocoError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise CocoError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise CocoError(f"{path}: missing key '{key}'")
        if not isinstance(doc[key], list):
            raise CocoError(f"{path}: '{key}' must be a list, got {type(doc[key]).__name__}")
    return doc, raw


def load_coco(json_path: str | os.PathLike, image_root: str | os.PathLike | None = None, *,
              check_files: bool = True, strict: bool = True, tolerance: float = 1.0) -> CocoDataset:
    """Load and validate a COCO detection file.

    ``file_name`` is resolved under ``image_root`` (default: the JSON's folder).
    Boxes outside the frame by at most ``tolerance`` px are clipped. With
    ``strict`` any problem raises CocoError; otherwise bad entries are dropped
    and each problem is listed in ``.problems``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    json_path = Path(json_path)
    root = Path(image_root) if image_root is not None else json_path.parent
    doc, raw = read_coco_json(json_path)
    problems: list[str] = []
    categories, category_ids = _parse_categories(doc["categories"], problems)
    images, image_ids = _parse_images(doc["images"], root, check_files, problems)
    boxes = _parse_boxes(doc["annotations"], images, image_ids, categories, category_ids,
                         tolerance, problems)
    if strict and problems:
        shown = "; ".join(problems[:_SHOWN_PROBLEMS])
        more = len(problems) - _SHOWN_PROBLEMS
        tail = f" ... and {more} more problem{'s' * (more > 1)}" if more > 0 else ""
        raise CocoError(f"{json_path}: {shown}{tail}", problems)
    return CocoDataset(images, boxes, categories, root, problems, json_path,
                       hashlib.sha256(raw).hexdigest())
