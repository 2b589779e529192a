"""Measure issue 30's checks on frames the model did not learn from.

    python -m experiments.check_unknowns --model models/default --coco DATA/annotations.coco.json --out work/unknowns [--split val]

1. ``predict`` on the split's frames: how many frames get quality flags
   (each one a false alarm: these frames are like the training ones);
2. the same frames blurred on purpose (Gaussian, ``--blur`` px): how many
   are flagged ``focus_low``, and whether the run says it drifted;
3. ``discover`` on the unknown objects, and on all objects: each cluster
   of 3 or more objects against the annotations (an object is its matched
   annotation's species at IoU ≥ 0.5, else "no annotated object"): the
   share of its majority label (purity).

Prints one JSON document (and writes it to OUT/check.json). How well the
clusters hold species the model has never seen is measured by
``experiments.leave_species_out`` (issue 44), on objects gathered by
``experiments.unknown_objects``.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections import Counter, defaultdict
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np

from training.args import coco_arg, model_arg

NONE = "no annotated object"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _predict(inputs: Path, out: Path, model: str) -> str:
    from plankton.cli import main

    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(["predict", str(inputs), "--out", str(out), "--model", model, "--quiet"])
    if rc != 0:
        raise SystemExit(f"check_unknowns: predict failed on {inputs}: {err.getvalue()[-500:]}")
    return err.getvalue()


def _flags(out: Path) -> dict:
    q = _rows(out / "quality.csv")
    flags = Counter(f for r in q for f in r["flags"].split(";") if f)
    return {"frames": len(q), "flagged": sum(bool(r["flags"]) for r in q), "by_flag": dict(flags.most_common())}


def _purity(clusters: Path, truth: dict[tuple, str]) -> dict:
    rows = _rows(clusters)
    by = defaultdict(list)
    for r in rows:
        by[r["cluster"]].append(truth.get((r["image"], r["x1"], r["y1"], r["x2"], r["y2"]), NONE))
    big = {c: v for c, v in by.items() if c != "noise" and len(v) >= 3}
    per = {c: {"objects": len(v), "majority": Counter(v).most_common(1)[0][0], "purity": round(Counter(v).most_common(1)[0][1] / len(v), 3)}
           for c, v in sorted(big.items(), key=lambda kv: -len(kv[1]))}
    n = sum(len(v) for v in big.values())
    return {"objects": len(rows), "noise": len(by.get("noise", [])), "clusters_3_or_more": len(big),
            "weighted_purity": round(sum(p["purity"] * p["objects"] for p in per.values()) / n, 3) if n else None,
            "clusters_at_least_half_pure": sum(p["purity"] >= 0.5 for p in per.values()), "clusters": per}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.check_unknowns", description=__doc__.split("\n\n")[0])
    model_arg(p)
    coco_arg(p)
    p.add_argument("--images", default=None)
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--blur", type=float, default=4.0, help="Gaussian blur radius in pixels for the blurred copies (default %(default)s)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from PIL import Image, ImageFilter

    from plankton.cli import main as cli
    from plankton.review.compare import match
    from plankton.coco import load_coco
    from plankton.artifact.manifest import read_config

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = read_config(args.model, check_files=False)["training"]["split"][f"{args.split}_ids"]
    ds = load_coco(args.coco, args.images, strict=False)
    paths = [ds.path_of(i) for i in sorted(ids)]
    (out / "frames.txt").write_text("".join(f"{p.resolve()}\n" for p in paths))
    report: dict = {"model": args.model, "split": args.split, "frames": len(paths)}

    _predict(out / "frames.txt", out / "run", args.model)
    report["flags_on_unseen_frames"] = _flags(out / "run")

    blurred = out / "blurred"
    blurred.mkdir(exist_ok=True)
    for path in paths:
        Image.open(path).convert("RGB").filter(ImageFilter.GaussianBlur(args.blur)).save(blurred / path.name, quality=95)
    err = _predict(blurred, out / "run_blurred", args.model)
    report["blurred"] = {"radius_px": args.blur, **_flags(out / "run_blurred"), "drift_line": next((x for x in err.splitlines() if "does not look" in x), None)}

    # the annotation each detected object stands for
    truth, det = {}, _rows(out / "run" / "detections.csv")
    by_name = {Path(ds.images[i].file_name).name: i for i in ids}
    by_image = defaultdict(list)
    for r in det:
        by_image[r["image"]].append(r)
    for image, objs in by_image.items():
        gt = ds.boxes_of(by_name[image])
        pairs = match(np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in objs]), ds.xyxy_of(by_name[image]))
        named = {i: ds.categories[gt[j].category_id].name for i, j in pairs}
        for i, r in enumerate(objs):
            truth[(image, r["x1"], r["y1"], r["x2"], r["y2"])] = named.get(i, NONE)
    report["detections"] = len(det)
    report["unknown_objects"] = sum(r["species"] == "unknown" for r in det)
    report["unknown_truth"] = dict(Counter(truth[(r["image"], r["x1"], r["y1"], r["x2"], r["y2"])] for r in det if r["species"] == "unknown").most_common())
    for name, extra in (("discover_unknown", []), ("discover_all", ["--all"])):
        with redirect_stderr(io.StringIO()):
            cli(["discover", str(out / "run"), "--out", str(out / name), "--quiet", *extra])
        report[name] = _purity(out / name / "clusters.csv", truth)
    text = json.dumps(report, indent=2)
    (out / "check.json").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
