"""The objects issue 44's leave-species-out evaluation clusters, gathered
once and cached (embedding them is the slow part; clustering is not).

    # the shipped model on its validation frames (a finished predict run on them)
    python -m experiments.unknown_objects run --run RUN --coco DATA/annotations.coco.json --model models/default --out work/unk44/val.npz
    # out-of-fold: fold K's frames embedded by fold K's embedder (experiments.cv_grid), boxes from a predict run on every frame
    python -m experiments.unknown_objects cv --run RUN_ALL --coco DATA/annotations.coco.json --cv work/cv40 \
        --cv-run lite0-96-sqrt-e12-s0 --model models/default --out work/unk44/oof.npz

Each object is a detected box (the detector at the model's counting point,
as ``predict`` shows it) with its embedding, its truth (the species of the
annotation it matches at IoU ≥ 0.5, else ``NONE``: debris, fragments,
second boxes), its frame, box and a few crop statistics (colour, contrast,
sharpness), and a ``group``: the prototypes that name it. ``run`` has one
group, the model's ``prototypes_train.safetensors`` (built from training
frames only, so the validation frames are out-of-sample for them too);
``cv`` has one group per fold, its prototypes the means of that fold's
training-fold crops (``emb.npz``), never the fold's own. Thresholds are the
model's per-species ones (``identifier.class_thresholds``, else the global).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

NONE = "no annotated object"
STATS = ["red", "green", "blue", "contrast", "sharpness"]


def crop_stats(image: np.ndarray, box) -> np.ndarray:
    """Mean R, G, B (0–1), grey standard deviation and log10 variance of the
    Laplacian of the box's pixels: what an out-of-focus blob or a bright
    fragment differs in, whatever its shape."""
    H, W = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    a = image[max(0, y1):min(H, max(y2, y1 + 1)), max(0, x1):min(W, max(x2, x1 + 1))].astype(np.float32) / 255
    if a.size == 0:
        return np.zeros(len(STATS), np.float32)
    grey = a.mean(axis=2)
    lap = (grey[1:-1, 1:-1] * 4 - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]) if min(grey.shape) > 2 else np.zeros(1)
    return np.array([*a.reshape(-1, 3).mean(axis=0), grey.std(), np.log10(lap.var() + 1e-8)], np.float32)


def truths(ds, ids: list[int], frames: list[str], boxes: np.ndarray, frame_of: np.ndarray) -> list[str]:
    """Each detected box's annotated species (IoU ≥ 0.5, one to one), else NONE."""
    from plankton.review.compare import match

    by_name = {Path(ds.images[i].file_name).name: i for i in ids}
    out = [NONE] * len(boxes)
    for f, name in enumerate(frames):
        idx = np.flatnonzero(frame_of == f)
        image_id = by_name[Path(name).name]
        gt = ds.boxes_of(image_id)
        for i, j in match(boxes[idx], ds.xyxy_of(image_id)):
            out[int(idx[i])] = ds.categories[gt[j].category_id].name
    return out


def thresholds_for(model: str | Path, names: list[str]) -> np.ndarray:
    """The model's per-species thresholds for ``names``, by the rule the cascade applies."""
    from plankton.artifact.manifest import read_config
    from training.calibrate_counts import thresholds_of

    return thresholds_of(read_config(model, check_files=False), names)


def read_detections(run_folder: Path):
    """(frames' sources, each detection's frame, boxes, det scores) of a predict run."""
    from plankton.run.runfiles import read_run

    run = read_run(run_folder)
    boxes = np.array([run.box(i) for i in range(len(run.detections))], np.float32).reshape(-1, 4)
    return run, [fr["source"] for fr in run.frames], run.frame, boxes


def stats_of(sources: list[str], frame_of: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    from plankton.images import read_image

    out = np.zeros((len(boxes), len(STATS)), np.float32)
    for f, src in enumerate(tqdm(sources, desc="crop statistics", unit="frame")):
        idx = np.flatnonzero(frame_of == f)
        if len(idx):
            image = read_image(src)
            out[idx] = [crop_stats(image, boxes[i]) for i in idx]
    return out


def gather_run(args) -> dict:
    from plankton.coco import load_coco
    from plankton.model.prototypes import Prototypes

    ds = load_coco(args.coco, args.images, strict=False)
    run, sources, frame_of, boxes = read_detections(Path(args.run))
    ids = [i for i in ds.images if Path(ds.images[i].file_name).name in {Path(s).name for s in sources}]
    protos = Prototypes.load(Path(args.model) / args.prototypes)
    return {"emb": run.embeddings, "box": boxes, "frame": frame_of, "frames": sources, "truth": truths(ds, ids, sources, boxes, frame_of),
            "group": np.zeros(len(boxes), int), "stats": stats_of(sources, frame_of, boxes),
            "groups": [{"names": protos.names, "means": protos.means, "thresholds": thresholds_for(args.model, protos.names)}]}


def gather_cv(args) -> dict:
    """Fold K's frames embedded by fold K's embedder, named by prototypes of
    the other folds' crops."""
    from experiments.cv_grid import embed_records
    from plankton.coco import load_coco
    from plankton.model.prototypes import _normalise

    ds = load_coco(args.coco, args.images, strict=False)
    run, sources, frame_of, boxes = read_detections(Path(args.run))
    folds = json.loads((Path(args.cv) / "folds.json").read_text())["frames"]
    fold_of_name = {Path(ds.images[i].file_name).name: k for k, ids in enumerate(folds) for i in ids if i in ds.images}
    frame_fold = np.array([fold_of_name.get(Path(s).name, -1) for s in sources])
    emb = np.full((len(boxes), 0), np.nan, np.float32)
    groups = []
    done = []
    for k in range(len(folds)):
        d = Path(args.cv) / "runs" / args.cv_run / f"fold{k}"
        if not (d / "result.json").exists():  # still training: its frames are left out, and said so
            print(f"fold {k}: no result.json yet in {d}; its frames are left out", file=sys.stderr)
            groups.append({"names": [], "means": np.zeros((0, 1), np.float32), "thresholds": np.zeros(0, np.float32)})
            continue
        done.append(k)
        info = json.loads((d / "embedder.json").read_text())
        names = json.loads((d / "result.json").read_text())["names"]
        npz = np.load(d / "emb.npz")
        view = "tta" if args.tta else "plain"
        keep = npz["train"] & (npz["label"] >= 0)
        e, lab = _normalise(npz[view][keep].astype(np.float32)), npz["label"][keep]
        present = [c for c in range(len(names)) if (lab == c).any()]
        means = _normalise(np.stack([e[lab == c].mean(axis=0) for c in present]))
        groups.append({"names": [names[c] for c in present], "means": means, "thresholds": thresholds_for(args.model, [names[c] for c in present])})
        idx = np.flatnonzero(frame_fold[frame_of] == k)
        records = [{"file": sources[frame_of[i]], "xyxy": boxes[i].tolist()} for i in idx]
        print(f"fold {k}: {len(idx)} objects on {int((frame_fold == k).sum())} frames", file=sys.stderr)
        out = embed_records(info, d / "embedder.safetensors", records, "cpu", args.tta)[view]
        if emb.shape[1] == 0:
            emb = np.full((len(boxes), out.shape[1]), np.nan, np.float32)
        emb[idx] = _normalise(out)
    if not done:
        raise SystemExit(f"{Path(args.cv) / 'runs' / args.cv_run}: no fold has finished")
    # Only the finished folds' frames, renumbered, so the cache holds out-of-fold objects alone.
    kept_frames = [f for f in range(len(sources)) if frame_fold[f] in done]
    renumber = {f: n for n, f in enumerate(kept_frames)}
    keep = np.isin(frame_fold[frame_of], done)
    sources, frame_of, boxes, emb = [sources[f] for f in kept_frames], np.array([renumber[f] for f in frame_of[keep]], int), boxes[keep], emb[keep]
    ids = [i for k in done for i in folds[k] if i in ds.images]
    return {"emb": emb, "box": boxes, "frame": frame_of, "frames": sources, "truth": truths(ds, ids, sources, boxes, frame_of),
            "group": frame_fold[np.array(kept_frames, int)][frame_of], "stats": stats_of(sources, frame_of, boxes), "groups": groups}


def save(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(d[k]) for k in ("emb", "box", "frame", "group", "stats")}
    arrays |= {f"means{k}": g["means"] for k, g in enumerate(d["groups"])} | {f"thresholds{k}": g["thresholds"] for k, g in enumerate(d["groups"])}
    meta = {"frames": d["frames"], "truth": list(d["truth"]), "names": [g["names"] for g in d["groups"]]}
    np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)


def load(path: str | Path) -> dict:
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    groups = [{"names": n, "means": z[f"means{k}"], "thresholds": z[f"thresholds{k}"]} for k, n in enumerate(meta["names"])]
    return {"emb": z["emb"].astype(np.float32), "box": z["box"], "frame": z["frame"], "group": z["group"], "stats": z["stats"],
            "frames": meta["frames"], "truth": np.array(meta["truth"], dtype=object), "groups": groups}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.unknown_objects", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["run", "cv"])
    p.add_argument("--run", required=True, help="a finished predict run on the frames (its boxes; with 'run', also its embeddings)")
    p.add_argument("--coco", required=True)
    p.add_argument("--images", default=None)
    p.add_argument("--model", default="models/default", help="its thresholds (and, with 'run', its prototypes)")
    p.add_argument("--prototypes", default="prototypes_train.safetensors", help="with 'run': the model's prototypes file (default %(default)s)")
    p.add_argument("--cv", help="with 'cv': the experiments.cv_grid output folder (folds.json, runs/)")
    p.add_argument("--cv-run", default="lite0-96-sqrt-e12-s0", help="with 'cv': the run under CV/runs/ (default %(default)s)")
    p.add_argument("--tta", action="store_true", help="with 'cv': embed with the 8 rotations and mirrors")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    d = gather_run(args) if args.what == "run" else gather_cv(args)
    save(Path(args.out), d)
    counts = defaultdict(int)
    for t in d["truth"]:
        counts[t] += 1
    print(f"{len(d['truth'])} objects on {len(d['frames'])} frames ({counts[NONE]} match no annotation) → {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
