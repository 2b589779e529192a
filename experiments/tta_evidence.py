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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from plankton.pipeline.load import load_artifact
from plankton.artifact.validation import ValidationSet
from plankton.model.crops import size_features
from plankton.model.prototypes import Prototypes
from plankton.model.crops import dihedral_views
from training.crops_data import FrameCache, load_index

from experiments.validation_folds import fold_rows, print_summary, summarise

RARE_VIEWS = 10


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


def shipped_top1(vs: ValidationSet, names: list[str]) -> float:
    """Closed-set top-1 of the validation set training.evaluate stored: the one_view arm should reproduce it."""
    keep = np.isin(np.asarray(vs.true_names, object), names)
    return float((np.asarray(vs.class_names, object)[np.argmax(vs.similarity[keep], 1)] == np.asarray(vs.true_names, object)[keep]).mean())


@dataclass
class Views:
    """The model's validation split as 8 views each: training and validation
    crops of known species, their 8×N×D embeddings, labels and frames."""

    names: list[str]
    train: list[dict]
    val: list[dict]
    tv: np.ndarray
    vv: np.ndarray
    seconds: tuple[float, float]  # the validation crops: one view, all 8 views

    @property
    def tl(self) -> np.ndarray:
        return np.array([r["label"] for r in self.train])

    @property
    def true(self) -> np.ndarray:
        return np.asarray(self.names, object)[[r["label"] for r in self.val]]

    @property
    def frames(self) -> np.ndarray:
        return np.array([r["image_id"] for r in self.val])


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/default")
    p.add_argument("--crops", required=True, help="crops.json from training.prepare (the model's own frame split)")
    p.add_argument("--out", default=None)
    return p


def embed_split(model: str, crops: str) -> Views:
    """Every known crop of the model's own split, embedded in 8 views; refuses
    a crops.json that splits the frames otherwise."""
    identifier = load_artifact(model).identifier
    names = list(identifier.prototypes.names)
    split = json.loads((Path(model) / "training.json").read_text())["split"]
    train = [r for r in load_index(crops, "train", names)[0] if r["label"] >= 0]
    val = [r for r in load_index(crops, "val", names)[0] if r["label"] >= 0]
    if {Path(r["file"]).name.split("_", 1)[-1] for r in val} != {Path(f).name for f in split["val_files"]}:
        raise SystemExit("crops.json splits the frames differently from the model: run training.prepare with the model's split seed")
    cache = FrameCache([r["file"] for r in train + val])
    tv, _, _ = embed_views(identifier, train, cache, "training crops × 8")
    vv, t_one, t_all = embed_views(identifier, val, cache, "validation crops × 8")
    return Views(names, train, val, tv, vv, (t_one, t_all))


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    v = embed_split(args.model, args.crops)
    vs = ValidationSet.load(Path(args.model) / "validation.safetensors")
    names, train, tv, vv, tl, true, frames = v.names, v.train, v.tv, v.vv, v.tl, v.true, v.frames
    t_one, t_all = v.seconds
    arms = {"one_view": (prototypes(tv, tl, names, False), vv[0]), "tta": (prototypes(tv, tl, names, False), unit(vv.mean(0))),
            "tta_both": (prototypes(tv, tl, names, True), unit(vv.mean(0)))}
    pred = {a: np.asarray(pr.names, object)[np.argmax(pr.similarity(q), 1)] for a, (pr, q) in arms.items()}
    rows = fold_rows(true, pred, frames)
    summary = summarise(true, pred, rows, Counter(names[l] for l in tl), baseline="one_view")
    result = {"objects": int(len(true)), "frames": int(len(np.unique(frames))), "training_crops": len(train), "folds": 5, "fold_seeds": [0, 1],
              "embedder_seconds": {"one_view": round(t_one, 2), "eight_views": round(t_all, 2), "ratio": round(t_all / max(t_one, 1e-9), 2)},
              "shipped_validation_top1": round(shipped_top1(vs, names), 4),
              "mean_sd_over_folds": summary, "folds_detail": rows}
    print_summary(summary)
    print(f"embedder time, 8 views against 1: {result['embedder_seconds']['ratio']:.2f}×; the shipped validation set's top-1 "
          f"(its own crops and similarities): {result['shipped_validation_top1']:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
