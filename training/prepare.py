"""COCO → the detector's YOLO data set (one super-class, native-resolution
frames or tiles) and the identifier's crop index, from a frame-level split.

    python -m training.prepare --coco PATH/TO/studycase/annotations.coco.json --out work/data
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .args import coco_arg, seed_arg
from plankton.coco import CocoDataset, load_coco
from training.splits import split_frames, write_split
from plankton.results import NOT_PLANKTON
from plankton.geometry import tile_origins

from .common import log, setup, write_json


def _yolo_lines(xyxy: np.ndarray, W: int, H: int) -> list[str]:
    """N×4 xyxy pixels → YOLO 'class cx cy w h' lines, normalised to the frame."""
    lines = []
    for x1, y1, x2, y2 in xyxy:
        lines.append(f"0 {(x1 + x2) / 2 / W:.6f} {(y1 + y2) / 2 / H:.6f} {(x2 - x1) / W:.6f} {(y2 - y1) / H:.6f}")
    return lines


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard link where possible (cheap), else copy; never a symlink, which
    would not travel with the data set to another machine."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_frames(ds: CocoDataset, ids: list[int], out: Path, split: str) -> dict[int, Path]:
    """Whole frames with YOLO labels; returns each frame's new path."""
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    paths = {}
    for i in tqdm(ids, desc=f"detector {split} frames", unit="frame"):
        im = ds.images[i]
        stem = f"{i:06d}_{Path(im.file_name).stem}"
        paths[i] = out / "images" / split / f"{stem}{Path(im.file_name).suffix}"
        _link_or_copy(ds.path_of(i), paths[i])
        (out / "labels" / split / f"{stem}.txt").write_text("\n".join(_yolo_lines(ds.xyxy_of(i), im.width, im.height)) + "\n")
    return paths


def write_tiles(ds: CocoDataset, ids: list[int], out: Path, split: str, tile: int, overlap: int, min_visible: float = 0.6) -> int:
    """Native-resolution tile×tile tiles. A box keeps its clipped part in a
    tile when at least ``min_visible`` of its area is inside."""
    from PIL import Image

    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    n = 0
    for i in tqdm(ids, desc=f"detector {split} tiles", unit="frame"):
        im, boxes = ds.images[i], ds.xyxy_of(i)
        frame = Image.open(ds.path_of(i)).convert("RGB")
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) if len(boxes) else np.zeros(0)
        for x, y in tile_origins(im.width, im.height, tile, overlap):
            tw, th = min(tile, im.width), min(tile, im.height)
            clipped = boxes.copy()
            clipped[:, [0, 2]] = (clipped[:, [0, 2]] - x).clip(0, tw)
            clipped[:, [1, 3]] = (clipped[:, [1, 3]] - y).clip(0, th)
            inside = np.prod(clipped[:, 2:] - clipped[:, :2], axis=1) if len(boxes) else np.zeros(0)
            keep = inside >= min_visible * np.maximum(area, 1)
            stem = f"{i:06d}_{x}_{y}"
            frame.crop((x, y, x + tw, y + th)).save(out / "images" / split / f"{stem}.jpg", quality=95)
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(_yolo_lines(clipped[keep], tw, th)) + "\n")
            n += 1
    return n


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    coco_arg(p)
    p.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    p.add_argument("--out", default="work/data")
    p.add_argument("--val-fraction", type=float, default=0.2)
    seed_arg(p)
    p.add_argument("--tile", type=int, default=0, help="0: whole frames for training; else tile side in pixels")
    p.add_argument("--tile-overlap", type=int, default=160)
    p.add_argument("--limit", type=int, default=0, help="use only this many frames (for quick tests)")
    p.add_argument("--no-audit", action="store_true", help="skip the dataset audit (OUT/audit/, see training.audit)")
    args = p.parse_args(argv)
    setup(args.seed)

    ds = load_coco(args.coco, args.images, strict=False)
    # Boxes people marked "not plankton" (the app's corrections) are not objects: neither detector targets nor a species.
    negatives = {c.id for c in ds.categories.values() if c.name == NOT_PLANKTON}
    if negatives:
        ds = dataclasses.replace(ds, boxes=[b for b in ds.boxes if b.category_id not in negatives],
                                 categories={i: c for i, c in ds.categories.items() if i not in negatives})
    for problem in ds.problems:
        log.warning("skipped: %s", problem)
    if args.limit:
        ds = ds.subset(sorted(ds.images)[: args.limit])
    train_ids, val_ids = split_frames(ds, args.val_fraction, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_split(out / "split.json", train_ids, val_ids, ds, seed=args.seed, val_fraction=args.val_fraction)
    if not args.no_audit:  # of the whole annotation file as given, problems included (see training.audit)
        from .audit import run_audit

        run_audit(args.coco, args.images, out / "audit")

    det = out / "detector"
    if det.exists():
        shutil.rmtree(det)
    frames = write_frames(ds, val_ids, det, "val")
    if args.tile:
        n_train = write_tiles(ds, train_ids, det, "train", args.tile, args.tile_overlap)
        frames |= write_frames(ds, train_ids, out / "frames", "train")
    else:
        frames |= write_frames(ds, train_ids, det, "train")
        n_train = len(train_ids)
    # No absolute path: the folder must work wherever it is copied.
    (det / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: plankton\n")

    crops = []
    for split, ids in (("train", train_ids), ("val", val_ids)):
        for i in ids:
            for b in ds.boxes_of(i):
                crops.append({"split": split, "image_id": i, "ann_id": b.id, "file": frames[i].relative_to(out).as_posix(), "xyxy": [float(v) for v in b.xyxy], "category_id": b.category_id})
    cats = [{"id": c.id, "name": c.name} for c in sorted(ds.categories.values(), key=lambda c: c.id)]
    write_json(out / "crops.json", {"categories": cats, "crops": crops})
    summary = {"train_frames": len(train_ids), "val_frames": len(val_ids), "detector_train_images": n_train, "crops": len(crops), "skipped": ds.problems}
    write_json(out / "prepare.json", summary)
    log.info("prepared %s", summary)
    return summary


if __name__ == "__main__":
    main()
