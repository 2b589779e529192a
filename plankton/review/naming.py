"""Name a cluster: ``discover RUN --out DIR --name 2="Species X"`` turns
every object of cluster 2 in ``DIR/clusters.csv`` into a correction, and
``--name 3="not plankton"`` into rejections, in ``DIR/corrections.coco.json``:
the COCO file ``enrol`` makes a new model version from
(``python -m plankton enrol --coco DIR/corrections.coco.json --out NEW``).

It names the clusters already written (the ones you looked at), never a
fresh clustering. Frame paths are written relative to DIR, so ``enrol``'s
default image root (the COCO file's folder) finds them. Objects of frames
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


def corrections(run, clusters: list[dict], names: dict[str, str], folder: Path, report: Callable[[str], None]) -> dict:
    """A COCO dict of the named clusters' objects (boxes from clusters.csv,
    frames from the run's quality.csv, sizes from its predictions.coco.json)."""
    sizes = {}
    try:
        sizes = {im["file_name"]: (im["width"], im["height"]) for im in json.loads((run.folder / "predictions.coco.json").read_text())["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    sources = {}
    for fr in run.frames:
        sources.setdefault(fr["image"], fr.get("source", ""))
    labels = sorted(set(names.values()))
    cats = {n: k + 1 for k, n in enumerate(labels)}
    images: dict[str, dict] = {}
    anns, skipped = [], 0
    for r in clusters:
        label = names.get(r["cluster"])
        if label is None:
            continue
        src = sources.get(r["image"], "")
        if not src or not os.path.isfile(src) or r["image"] not in sizes:
            skipped += 1
            continue
        im = images.setdefault(src, {"id": len(images) + 1, "file_name": Path(os.path.relpath(src, folder)).as_posix(),
                                     "width": sizes[r["image"]][0], "height": sizes[r["image"]][1]})
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": cats[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
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


__all__ = ["FILE", "parse_names", "corrections", "write_corrections"]
