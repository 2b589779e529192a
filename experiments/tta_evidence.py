"""Issue 26: does test-time augmentation over the 8 rotations and mirrors
name species better? Measured on the bundled model's validation frames,
with the bundled embedder (no GPU needed).

    python -m training.prepare --coco PATH/annotations.coco.json --out work/data --no-audit
    python -m experiments.tta_evidence --model models/default --crops work/data/crops.json --out docs/tta_evidence.json

Every crop is embedded in its 8 dihedral views (plankton has no up). The
prototypes are built from the training frames only and matched by their
mean, as the shipped model does (species with fewer than 10 training crops
get all 8 views, as ``build_prototypes --rare-views 10``). Three arms:

- ``one_view``: each query crop as it is (what ships);
- ``tta``: a query is the normalised mean of its 8 views' embeddings;
- ``tta_both``: the prototypes are also built from view-averaged crops.

Scored closed-set on the known objects (top-1, F1-macro over the species
present), per fold of validation frames (5 folds × 2 fold seeds, as
``experiments.size_evidence``) → mean ± sd, and pooled F1-macro by the
species' training boxes. TTA has nothing to tune, so nothing is chosen on
the scored fold. The cost is 8 embedder crops per object, timed here.
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from tqdm import tqdm

from plankton.artifact.folder import load_artifact
from plankton.artifact.validation import ValidationSet
from plankton.model.crops import size_features
from plankton.model.prototypes import Prototypes
from training.build_prototypes import dihedral_views
from training.crops_data import FrameCache, load_index

RARE_VIEWS = 10
BINS = {"1-3": (1, 3), "4-9": (4, 9), "10-49": (10, 49), ">=50": (50, 10**9)}


def embed_views(identifier, records: list[dict], cache: FrameCache, desc: str) -> tuple[np.ndarray, float, float]:
    """Records → (8×N×D embeddings, view-0 seconds, all-views seconds); view 0 is the crop as cut."""
    out = np.zeros((8, len(records), identifier.model.dim), np.float32)
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_file.setdefault(r["file"], []).append(i)
    t_one = t_all = 0.0
    for f, idx in tqdm(by_file.items(), desc=desc, unit="frame"):
        boxes = np.array([records[i]["xyxy"] for i in idx], np.float32)
        crops, sizes = identifier.crops(cache.frames[f], boxes, cache.fill[f]), size_features(boxes)
        t0 = time.perf_counter()
        identifier.embed_crops(crops, sizes)
        t1 = time.perf_counter()
        emb = identifier.embed_crops(dihedral_views(crops), np.tile(sizes, (8, 1)))
        t_all += time.perf_counter() - t1
        t_one += t1 - t0
        out[:, idx] = emb.reshape(8, len(idx), -1)
    return out, t_one, t_all


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def prototypes(views: np.ndarray, labels: np.ndarray, names: list[str], average: bool) -> Prototypes:
    """8×N×D training views → mean-matched prototypes; rare species keep all their views."""
    if average:
        return Prototypes.build(unit(views.mean(0)), labels, names, mode="mean", keep_support=False)
    rare = np.bincount(labels, minlength=len(names))[labels] < RARE_VIEWS
    emb = np.concatenate([views[0], views[1:, rare].reshape(-1, views.shape[-1])])
    lab = np.concatenate([labels, np.tile(labels[rare], 7)])
    return Prototypes.build(emb, lab, names, mode="mean", keep_support=False)


def scores(true: np.ndarray, pred: np.ndarray) -> dict:
    return {"top1": float((true == pred).mean()), "f1_macro": float(f1_score(true, pred, labels=sorted(set(true)), average="macro", zero_division=0))}


def shipped_top1(vs: ValidationSet, names: list[str]) -> float:
    """Closed-set top-1 of the validation set training.evaluate stored: the one_view arm should reproduce it."""
    keep = np.isin(np.asarray(vs.true_names, object), names)
    return float((np.asarray(vs.class_names, object)[np.argmax(vs.similarity[keep], 1)] == np.asarray(vs.true_names, object)[keep]).mean())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/default")
    p.add_argument("--crops", required=True, help="crops.json from training.prepare (the model's own frame split)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    cascade = load_artifact(args.model)
    identifier = cascade.identifier
    vs = ValidationSet.load(Path(args.model) / "validation.safetensors")
    names = list(vs.class_names)
    split = json.loads((Path(args.model) / "training.json").read_text())["split"]
    train, _, _ = load_index(args.crops, "train", names)
    val, _, _ = load_index(args.crops, "val", names)
    if {Path(r["file"]).name.split("_", 1)[-1] for r in val} != {Path(f).name for f in split["val_files"]}:
        raise SystemExit("crops.json splits the frames differently from the model: run training.prepare with the model's split seed")
    train = [r for r in train if r["label"] >= 0]
    val = [r for r in val if r["label"] >= 0]
    cache = FrameCache([r["file"] for r in train + val])
    tv, _, _ = embed_views(identifier, train, cache, "training crops × 8")
    vv, t_one, t_all = embed_views(identifier, val, cache, "validation crops × 8")
    tl = np.array([r["label"] for r in train])
    true = np.asarray(names, object)[[r["label"] for r in val]]
    frames = np.array([r["image_id"] for r in val])
    arms = {"one_view": (prototypes(tv, tl, names, False), vv[0]), "tta": (prototypes(tv, tl, names, False), unit(vv.mean(0))),
            "tta_both": (prototypes(tv, tl, names, True), unit(vv.mean(0)))}
    pred = {a: np.asarray(pr.names, object)[np.argmax(pr.similarity(q), 1)] for a, (pr, q) in arms.items()}
    rows = []
    for seed in (0, 1):
        uf = np.unique(frames)
        fold_of = dict(zip(np.random.default_rng(seed).permutation(uf), np.arange(len(uf)) % 5))
        fold = np.array([fold_of[f] for f in frames])
        rows += [{"seed": seed, "fold": k} | {a: scores(true[fold == k], pred[a][fold == k]) for a in arms} for k in range(5)]
    support = Counter(names[l] for l in tl)
    summary = {a: {m: [round(float(np.mean([r[a][m] for r in rows])), 4), round(float(np.std([r[a][m] for r in rows])), 4)] for m in ("top1", "f1_macro")}
               | {"pooled": {k: round(v, 4) for k, v in scores(true, pred[a]).items()},
                  "pooled_f1_by_training_boxes": {b: round(float(f1_score(true, pred[a], labels=ls, average="macro", zero_division=0)), 4)
                                                  for b, (lo, hi) in BINS.items() if (ls := sorted(c for c in set(true) if lo <= support[c] <= hi))}}
               for a in arms}
    result = {"objects": int(len(true)), "frames": int(len(np.unique(frames))), "training_crops": len(train), "folds": 5, "fold_seeds": [0, 1],
              "embedder_seconds": {"one_view": round(t_one, 2), "eight_views": round(t_all, 2), "ratio": round(t_all / max(t_one, 1e-9), 2)},
              "shipped_validation_top1": round(shipped_top1(vs, names), 4),
              "mean_sd_over_folds": summary, "folds_detail": rows}
    for a, s in summary.items():
        print(f"{a:9s} top-1 {s['top1'][0]:.4f} ± {s['top1'][1]:.4f}  F1-macro {s['f1_macro'][0]:.4f} ± {s['f1_macro'][1]:.4f}  "
              f"pooled {s['pooled']['top1']:.4f} / {s['pooled']['f1_macro']:.4f}  by training boxes {s['pooled_f1_by_training_boxes']}")
    print(f"embedder time, 8 views against 1: {result['embedder_seconds']['ratio']:.2f}×; the shipped validation set's top-1 "
          f"(its own crops and similarities): {result['shipped_validation_top1']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
