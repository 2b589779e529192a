"""Cross-validation over frames for ``experiments.cv_grid``: the folds,
the per-fold crop indexes that ``training.train_embedder`` reads, the
scoring of a held-out fold and its summary over folds, a compact copy of
the frames small enough to carry to a GPU machine, and what comes back
from it (``bring``).

    python -m experiments.cv_folds pack --coco PATH/annotations.coco.json --out .gpu/studycase

``pack`` keeps, in each frame, only the squares that any training or
embedding crop can reach (around every box: its longer side, at least
``--min-side``, times ``--keep``, plus 8 px for the JPEG blocks and the
resize filter) and paints the rest in the frame's background colour
(``plankton.model.crops.background_colour``, the colour crops are padded
with). The crops of every box are then those of the original frame, up to
one more JPEG encoding. With ``--context 0.25`` a training crop reaches at
most 0.25·1.2 + 0.6 + 0.08 ≈ 0.98 box sides from the box's centre
(``training.crops_data``: scale jitter up to 1.2, centre jitter 8%), so the
default ``--keep 1.0`` covers it. The 361 StudyCase frames (47 MB) become
about 20 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from plankton.coco import CocoDataset, load_coco
from plankton.results import NOT_PLANKTON
from training.splits import _EMPTY, frame_counts  # _EMPTY: frames without boxes spread like a category of their own
BINS = {"1-3": (1, 3), "4-9": (4, 9), "10-49": (10, 49), ">=50": (50, 10**9)}  # training boxes of a species
VIEWS, MODES = ("plain", "tta"), ("mean", "subcenter")


def load_frames(coco: str | Path, images: str | Path | None = None) -> CocoDataset:
    """The COCO file as ``training.prepare`` reads it: unreadable entries
    skipped, and boxes marked not-plankton dropped (they are no species)."""
    ds = load_coco(coco, images, strict=False)
    neg = {c.id for c in ds.categories.values() if c.name == NOT_PLANKTON}
    if neg:
        ds = CocoDataset(images=ds.images, boxes=[b for b in ds.boxes if b.category_id not in neg],
                         categories={i: c for i, c in ds.categories.items() if i not in neg},
                         image_root=ds.image_root, problems=ds.problems, source=ds.source, sha256=ds.sha256)
    if not ds.images:
        raise SystemExit(f"{coco}: no usable frames")
    return ds


def assign_folds(ds: CocoDataset, k: int = 5, seed: int = 0) -> list[list[int]]:
    """k folds of whole frames (sorted ids each), sizes within one frame.

    Categories are placed rarest first (fewest frames): a category in m >= 2
    frames gets frames in min(k, m) different folds where the fold sizes
    allow, before commoner categories fill those folds. The remaining
    frames go, frames with rarer categories first, to the fold where each
    of their categories' share of boxes stays nearest 1/k. Deterministic
    per seed."""
    ids = sorted(ds.images)
    if not 2 <= k <= len(ids):
        raise ValueError(f"{k} folds need between 2 and {len(ids)} (the number of frames)")
    rng = random.Random(seed)
    counts, total = frame_counts(ds)
    frames_of = defaultdict(list)
    for i in ids:
        for c in counts[i]:
            frames_of[c].append(i)
    fold_of: dict[int, int] = {}
    size, boxes = [0] * k, [Counter() for _ in range(k)]
    base, extra = divmod(len(ids), k)  # `extra` folds hold base + 1 frames, the others base

    def room(f: int) -> bool:
        return size[f] < base or (size[f] == base and sum(s > base for s in size) < extra)

    def cost(i: int, f: int) -> float:
        """Change in the squared distance of the frame's categories' box
        shares in fold f from 1/k, if frame i joins it."""
        d = 0.0
        for c, n in counts[i].items():
            before = boxes[f][c] / total[c] - 1 / k
            d += (before + n / total[c]) ** 2 - before ** 2
        return d

    order = list(range(k))
    rng.shuffle(order)  # ties between folds go a seed's way, not always to fold 0

    def place(i: int, folds: list[int]) -> None:
        f = min(folds, key=lambda f: (cost(i, f), size[f], order.index(f)))
        fold_of[i], size[f] = f, size[f] + 1
        boxes[f].update(counts[i])

    rarity = {c: (len(fr), -1 if c is _EMPTY else c) for c, fr in frames_of.items()}
    for c in sorted((c for c in frames_of if c is not _EMPTY), key=rarity.get):
        frames = frames_of[c]
        free = [i for i in frames if i not in fold_of]
        rng.shuffle(free)
        for i in free:
            have = {fold_of[j] for j in frames if j in fold_of}
            if len(have) >= min(k, len(frames)):
                break
            new = [f for f in range(k) if f not in have and room(f)]
            if new:
                place(i, new)
    rest = [i for i in ids if i not in fold_of]
    rng.shuffle(rest)
    rest.sort(key=lambda i: min(rarity[c] for c in counts[i]))  # stable: ties stay shuffled
    for i in rest:
        place(i, [f for f in range(k) if room(f)])
    return [sorted(i for i in ids if fold_of[i] == f) for f in range(k)]


def coverage(ds: CocoDataset, folds: list[list[int]]) -> dict:
    """Per category: frames, boxes, the folds it is in, and the most it
    could be in (min(k, frames)); ``short`` lists the categories below that."""
    fold_of = {i: f for f, ids in enumerate(folds) for i in ids}
    frames, n, where = defaultdict(set), Counter(), defaultdict(set)
    for b in ds.boxes:
        frames[b.category_id].add(b.image_id)
        n[b.category_id] += 1
        where[b.category_id].add(fold_of[b.image_id])
    cats = {ds.categories[c].name if c in ds.categories else str(c): {"frames": len(frames[c]), "boxes": n[c], "folds": len(where[c]),
                                                                      "possible": min(len(folds), len(frames[c]))} for c in sorted(frames)}
    return {"categories": cats, "short": sorted(c for c, v in cats.items() if v["folds"] < v["possible"]),
            "frames_per_fold": [len(f) for f in folds]}


def write_fold_index(ds: CocoDataset, folds: list[list[int]], fold: int, path: Path) -> dict:
    """crops.json (``training.prepare``'s format) where fold ``fold``'s
    frames are "val" and all others "train". Frame paths are relative to
    the index, as ``training.crops_data.load_index`` reads them, so the
    work folder and the frames move together."""
    test = set(folds[fold])
    crops = []
    for i in sorted(ds.images):
        rel = Path(os.path.relpath(ds.path_of(i).resolve(), path.parent.resolve())).as_posix()
        for b in ds.boxes_of(i):
            crops.append({"split": "val" if i in test else "train", "image_id": i, "ann_id": b.id, "file": rel,
                          "xyxy": [float(v) for v in b.xyxy], "category_id": b.category_id})
    index = {"categories": [{"id": c.id, "name": c.name} for c in sorted(ds.categories.values(), key=lambda c: c.id)], "crops": crops}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(index))
    return index


def pack(ds: CocoDataset, out: Path, keep: float = 1.0, min_side: float = 16.0, quality: int = 95) -> int:
    """Masked copies of the frames (see the module's docstring) and the
    COCO file, under ``out``; returns the bytes written."""
    from PIL import Image
    from tqdm import tqdm

    from plankton.images import read_image
    from plankton.model.crops import background_colour

    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for i in tqdm(sorted(ds.images), desc="pack frames", unit="frame"):
        frame = read_image(ds.path_of(i))
        H, W = frame.shape[:2]
        mask = np.zeros((H, W), bool)
        for x1, y1, x2, y2 in ds.xyxy_of(i):
            half = keep * max(x2 - x1, y2 - y1, min_side) + 8
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            mask[max(int(cy - half), 0): max(int(cy + half) + 1, 0), max(int(cx - half), 0): max(int(cx + half) + 1, 0)] = True
        masked = np.empty_like(frame)
        masked[:] = background_colour(frame)
        masked[mask] = frame[mask]
        dst = out / Path(ds.images[i].file_name).with_suffix(".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(masked).save(dst, quality=quality)
        written += dst.stat().st_size
    coco = ds.to_dict()
    for im in coco["images"]:
        im["file_name"] = Path(im["file_name"]).with_suffix(".jpg").as_posix()
    (out / "annotations.coco.json").write_text(json.dumps(coco))
    return written + (out / "annotations.coco.json").stat().st_size


def figures(true: np.ndarray, pred: np.ndarray, support: np.ndarray) -> dict:
    """top-1, F1-macro over the species in ``true``, and F1-macro of the
    species in each bin of training boxes (``support[c]``: class c's)."""
    present = np.unique(true)
    out = {"objects": int(len(true)), "species": int(len(present)), "top1": float(np.mean(true == pred)) if len(true) else None,
           "f1_macro": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)) if len(true) else None}
    by = {}
    for b, (lo, hi) in BINS.items():
        labels = [c for c in present if lo <= support[c] <= hi]
        by[b] = {"species": len(labels), "f1_macro": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)) if labels else None}
    return out | {"f1_by_training_boxes": by}


def score(emb: dict, label: np.ndarray, train: np.ndarray, n_classes: int, seed: int = 0) -> tuple[dict, dict]:
    """({view: {mode: figures}}, {view/mode: predicted class per held-out box})
    of nearest-prototype naming, prototypes from the training boxes."""
    from plankton.model.prototypes import Prototypes

    tr, te = train & (label >= 0), ~train & (label >= 0)
    support = np.bincount(label[tr], minlength=n_classes)
    figs, preds = {}, {}
    for view, e in emb.items():
        protos = Prototypes.build(e[tr], label[tr], [str(c) for c in range(n_classes)], seed=seed, keep_support=False)
        cls = np.array([int(n) for n in protos.names])  # classes without training boxes have no prototype
        for mode in MODES:
            sim = (e[te] @ protos.means.T) if mode == "mean" else protos.similarity(e[te])
            pred = cls[sim.argmax(1)] if len(cls) else np.full(te.sum(), -1)
            figs.setdefault(view, {})[mode] = figures(label[te], pred, support)
            preds[f"{view}/{mode}"] = pred.tolist()
    return figs, preds


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _msd(values) -> list | None:
    v = [x for x in values if x is not None]
    return [round(statistics.fmean(v), 4), round(statistics.stdev(v), 4) if len(v) > 1 else 0.0, len(v)] if v else None


def summarise(rows: list[dict]) -> dict:
    """Per run (or ensemble): mean ± sd over folds of every figure, and the
    figures pooled over folds (a species' bin: its median training boxes)."""
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        if "figures" in r:
            by_run.setdefault(r["run"], []).append(r)
    summary = {}
    for run, rs in by_run.items():
        s = {"setting": rs[0]["setting"], "folds": sorted(r["fold"] for r in rs), "truncated": sum(bool(r.get("truncated")) for r in rs),
             "train_s_per_fold": round(statistics.fmean(r["train_s"] for r in rs), 1), "figures": {}, "pooled": {}}
        per_fold: dict[str, list[int]] = {}  # class indices differ between folds: pooled by name
        for r in rs:
            for n, c in zip(r["names"], r["support"]):
                per_fold.setdefault(n, []).append(c)
        support = {n: int(np.median(c)) for n, c in per_fold.items()}
        for key in rs[0]["test_pred"]:
            view, mode = key.split("/")
            fs = [r["figures"][view][mode] for r in rs]
            s["figures"].setdefault(view, {})[mode] = {m: _msd(f[m] for f in fs) for m in ("top1", "f1_macro")} | {
                "f1_by_training_boxes": {b: _msd(f["f1_by_training_boxes"][b]["f1_macro"] for f in fs) for b in BINS}}
            true = [r["names"][t] for r in rs for t in r["test_true"]]
            pred = [r["names"][p] if p >= 0 else "?" for r in rs for p in r["test_pred"][key]]
            allnames = sorted(set(true) | set(pred))
            ix = {n: i for i, n in enumerate(allnames)}
            s["pooled"].setdefault(view, {})[mode] = figures(np.array([ix[t] for t in true]), np.array([ix[p] for p in pred]),
                                                              np.array([support.get(n, 0) for n in allnames]))
        curves = [[h["val_f1_macro"] for h in r["history"]] for r in rs if r["history"]]
        if curves:
            s["head_f1_by_epoch"] = [round(statistics.fmean(c[i] for c in curves if i < len(c)), 4) for i in range(max(map(len, curves)))]
        summary[run] = s
    return summary


def table(summary: dict, mode: str, k: int) -> str:
    """Markdown: one row per run and view, mean ± sd over folds."""
    def f(v):
        return "–" if v is None or v[0] is None else f"{v[0]:.3f} ± {v[1]:.3f}"

    lines = [f"| run | folds | view | top-1 | F1-macro | F1 {' | F1 '.join(BINS)} | pooled F1-macro | train s/fold |", "|" + "---|" * (8 + len(BINS) - 1)]
    for run, s in summary.items():
        for view, modes in s["figures"].items():
            g = modes[mode]
            folds = f"{len(s['folds'])}/{k}" + (f" ({s['truncated']} cut)" if s["truncated"] else "")
            pooled = s["pooled"][view][mode]["f1_macro"]
            lines.append(f"| {run} | {folds} | {view} | {f(g['top1'])} | {f(g['f1_macro'])} | "
                         + " | ".join(f(g["f1_by_training_boxes"][b]) for b in BINS)
                         + f" | {'–' if pooled is None else f'{pooled:.3f}'} | {s['train_s_per_fold']:.0f} |")
    return "\n".join(lines) + f"\n\nClosed-set nearest prototype ({mode} matching), {k} folds over frames; F1 by the species' training boxes.\n"


def bring(out: Path, dest: Path, best: str | None, k: int) -> list[str]:
    """The results and the best run's fold checkpoints (float16) into
    ``dest``, within the device tool's limits (one file kept for a log)."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    files = []
    for name in ("cv_grid.json", "cv_grid.md"):
        shutil.copy(out / name, dest / name)
        files.append(name)
    total = sum((dest / f).stat().st_size for f in files)
    for fold in range(k) if best else ():
        src = out / "runs" / best / f"fold{fold}" / "embedder.safetensors"
        if not src.exists() or len(files) >= 7:
            continue
        dst = dest / f"{best}_fold{fold}.safetensors"
        save_file({n: (t.half() if t.is_floating_point() else t).contiguous() for n, t in load_file(str(src)).items()}, str(dst))
        if dst.stat().st_size > 16 * 2**20 or total + dst.stat().st_size > 60 * 2**20:
            dst.unlink()
            break
        total += dst.stat().st_size
        files.append(dst.name)
    return files


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="masked frames and their COCO file, to carry to a GPU machine")
    folds = sub.add_parser("folds", help="print the folds' sizes and the categories short of folds")
    for s in (pk, folds):
        s.add_argument("--coco", required=True)
        s.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    pk.add_argument("--out", required=True)
    pk.add_argument("--keep", type=float, default=1.0, help="kept square's half side, in longer box sides (see above)")
    pk.add_argument("--min-side", type=float, default=16.0)
    pk.add_argument("--quality", type=int, default=95)
    folds.add_argument("--folds", type=int, default=5)
    folds.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    ds = load_frames(args.coco, args.images)
    if args.cmd == "pack":
        n = pack(ds, Path(args.out), args.keep, args.min_side, args.quality)
        print(f"{args.out}: {len(ds.images)} frames, {n / 2**20:.1f} MiB")
    else:
        cov = coverage(ds, assign_folds(ds, args.folds, args.seed))
        print(json.dumps({"frames_per_fold": cov["frames_per_fold"], "short": {c: cov["categories"][c] for c in cov["short"]}}, indent=1))


if __name__ == "__main__":
    main()
