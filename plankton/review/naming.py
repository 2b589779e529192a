"""Name a cluster: ``discover RUN --out DIR --name 2="Species X"`` turns
every object of cluster 2 in ``DIR/clusters.csv`` into a correction, and
``--name 3="not plankton"`` into rejections, in ``DIR/corrections.coco.json``:
the COCO file ``enrol`` makes a new model version from
(``python -m plankton enrol --coco DIR/corrections.coco.json --out NEW``).

It names the clusters already written (the ones you looked at), never a
fresh clustering. Each object is found again in the run by its frame and
box, so two frames that share a file name (``a/frame.jpg``,
``b/frame.jpg``) stay two images. Frame paths are written relative to
DIR, so ``enrol``'s default image root (the COCO file's folder) finds
them. Objects of frames
read from an archive cannot be listed (a COCO file names files) and are
left out with one line.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from plankton.results import UNKNOWN

FILE = "corrections.coco.json"


def parse_names(pairs: list[str]) -> dict[str, str]:
    """["2=Species X", ...] → {"2": "Species X"}; ValueError naming a bad one."""
    out = {}
    for p in pairs:
        cluster, sep, label = p.partition("=")
        label = " ".join(label.split())
        if not sep or not cluster.strip() or not label:
            raise ValueError(f"--name {p!r}: expected CLUSTER=NAME, e.g. 2=\"Chlorella sp\"")
        if label == UNKNOWN:
            raise ValueError(f"--name {p!r}: '{UNKNOWN}' is the model's answer, not a name; use a species, a new name, or 'not plankton'")
        out[cluster.strip()] = label
    return out


def frame_sizes(run) -> list[tuple[int, int] | None]:
    """(width, height) of each frame of ``run.frames``, from its
    predictions.coco.json (written in the same order); None where unknown."""
    try:
        images = json.loads((run.folder / "predictions.coco.json").read_text())["images"]
        sizes = [(int(im["width"]), int(im["height"])) for im in images]
        names = [im["file_name"] for im in images]
    except (OSError, ValueError, KeyError, TypeError):
        return [None] * len(run.frames)
    if names == [fr["image"] for fr in run.frames]:
        return sizes
    unique = {n: s for n, s in zip(names, sizes) if names.count(n) == 1}  # another order: by name, where one frame has it
    return [unique.get(fr["image"]) for fr in run.frames]


def corrections(run, clusters: list[dict], names: dict[str, str], folder: Path, report: Callable[[str], None]) -> dict:
    """A COCO dict of the named clusters' objects: each row of clusters.csv
    found among the run's objects (``runfiles.locate``: by its frame and
    box), its frame file from quality.csv and its size from
    predictions.coco.json. Two frames that share a file name stay two
    images."""
    from plankton.run.runfiles import frame_index, locate

    named = [r for r in clusters if r.get("cluster") in names]
    found = locate(run, named)
    fi, sizes = frame_index(run), frame_sizes(run)
    labels = sorted(set(names.values()))
    cats = {n: k + 1 for k, n in enumerate(labels)}
    images: dict[int, dict] = {}
    anns, unplaced, skipped = [], 0, 0
    for r, i in zip(named, found):
        f = -1 if i is None else int(fi[i])
        if f < 0:
            unplaced += 1
            continue
        src = run.frames[f].get("source") or ""
        if not src or not os.path.isfile(src) or sizes[f] is None:
            skipped += 1
            continue
        im = images.setdefault(f, {"id": len(images) + 1, "file_name": Path(os.path.relpath(src, folder)).as_posix(),
                                   "width": sizes[f][0], "height": sizes[f][1]})
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cats[names[r["cluster"]]], "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    if unplaced:
        report(f"{unplaced} objects left out of {FILE}: clusters.csv does not say which frame they are in (not this run's objects, or a frame "
               "name several frames share); run discover again without --name")
    if skipped:
        report(f"{skipped} objects left out of {FILE}: their frames are in an archive or no longer where the run read them")
    return {"images": list(images.values()), "categories": [{"id": i, "name": n} for n, i in cats.items()], "annotations": anns}


def write_corrections(run, folder: Path, pairs: list[str], err: Callable[[str], None]) -> int:
    """The ``--name`` path of ``discover``; returns the exit status."""
    import csv

    from plankton.files import atomic_write_text

    try:
        names = parse_names(pairs)
    except ValueError as e:
        err(str(e))
        return 2
    path = folder / "clusters.csv"
    if not path.is_file():
        err(f"{path}: not found; run discover without --name first, look at the clusters, then name them")
        return 2
    with open(path, newline="", encoding="utf-8") as f:
        clusters = list(csv.DictReader(f))
    have = {r["cluster"] for r in clusters}
    for c in sorted(set(names) - have):
        err(f"--name {c}=…: {path} has no cluster {c!r} (it has {', '.join(sorted(have, key=lambda x: (not x.isdigit(), x.zfill(6))))})")
    coco = corrections(run, clusters, {c: n for c, n in names.items() if c in have}, folder, err)
    if not coco["annotations"]:
        err(f"nothing to write to {folder / FILE}")
        return 2
    atomic_write_text(folder / FILE, json.dumps(coco, indent=1) + "\n")
    print(f"{len(coco['annotations'])} corrections ({', '.join(c['name'] for c in coco['categories'])}) → {folder / FILE}; "
          f"then: python -m plankton enrol --coco {folder / FILE} --out NEW_MODEL_DIR", file=sys.stderr)
    return 0


__all__ = ["FILE", "parse_names", "frame_sizes", "corrections", "write_corrections"]
