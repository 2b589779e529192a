"""Issue 26: would a linear classifier on the bundled embeddings (and the
box's size) name species better than the nearest prototype? The issue's
own probe (a logistic regression on the shipped embeddings plus log box
size) raised kept-apart top-1; this measures it against F1-macro too, on
the same frames and folds as ``experiments.tta_evidence`` (no GPU needed).

    python -m training.prepare --coco PATH/annotations.coco.json --out work/data --no-audit
    python -m experiments.linear_head --model models/default --crops work/data/crops.json --out docs/linear_head.json

The classifier is fitted on the training frames' crops (species with fewer
than 10 get their 8 rotations and mirrors, as the prototypes do). Its
regularisation C and class weighting are chosen by 5-fold cross-validation
over training frames, by F1-macro: nothing is chosen on a validation frame.
Arms, scored closed-set on the validation frames' known objects (5 folds ×
2 fold seeds → mean ± sd; pooled F1 by training boxes):

- ``prototype``: the nearest mean prototype (what ships);
- ``linear``: multinomial logistic regression on the 512-d embedding;
- ``linear_size``: the same plus log side and log aspect of the box;
- ``hybrid``: the prototype's answer where it names a species with fewer
  than K training crops, the linear head's elsewhere (K in {4, 10}, chosen
  by the same training-frame folds).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold
from tqdm import tqdm

from experiments.tta_evidence import RARE_VIEWS, embed_split, parser, prototypes
from experiments.validation_folds import fold_rows, print_summary, summarise

GRID = [(c, w) for c in (0.3, 1.0, 3.0, 10.0) for w in (None, "balanced")]
HYBRID_K = (4, 10)


def box_features(records: list[dict]) -> np.ndarray:
    """N×2: log √(w·h) and log(w/h), pixels."""
    b = np.array([r["xyxy"] for r in records], np.float64)
    w, h = np.maximum(b[:, 2] - b[:, 0], 1), np.maximum(b[:, 3] - b[:, 1], 1)
    return np.stack([0.5 * np.log(w * h), np.log(w / h)], 1)


def with_views(views: np.ndarray, labels: np.ndarray, extra: np.ndarray, groups: np.ndarray):
    """One view per crop, all 8 for rare species: (X, y, groups)."""
    rare = np.bincount(labels)[labels] < RARE_VIEWS
    x = np.concatenate([views[0], views[1:, rare].reshape(-1, views.shape[-1])])
    idx = np.concatenate([np.arange(len(labels)), np.tile(np.flatnonzero(rare), 7)])
    return np.hstack([x, extra[idx]]), labels[idx], groups[idx]


def fit(x, y, c, weight):
    return LogisticRegression(C=c, class_weight=weight, max_iter=2000).fit(x, y)


def choose(x, y, groups) -> tuple[float, str | None, dict]:
    """(C, class weight) by F1-macro over 5 folds of training frames."""
    table = {}
    for c, w in tqdm(GRID, desc="C × weighting", unit="setting"):
        pred = np.empty_like(y)
        for tr, te in GroupKFold(5).split(x, y, groups):
            pred[te] = fit(x[tr], y[tr], c, w).predict(x[te])
        table[f"C={c} weight={w}"] = round(float(f1_score(y, pred, average="macro", zero_division=0)), 4)
    best = max(GRID, key=lambda g: table[f"C={g[0]} weight={g[1]}"])
    return best[0], best[1], table


def hybrid(proto_pred: np.ndarray, linear_pred: np.ndarray, support: np.ndarray, k: int) -> np.ndarray:
    """Label indices: the prototype's where its species has < k training crops."""
    return np.where(support[proto_pred] < k, proto_pred, linear_pred)


def choose_k(tv, tl, names, groups, c, w) -> tuple[int, dict]:
    """K for ``hybrid`` by F1-macro over 5 folds of training frames (one view a crop scored)."""
    proto, linear = np.empty_like(tl), np.empty_like(tl)
    for tr, te in GroupKFold(5).split(tl, tl, groups):
        x, y, _ = with_views(tv[:, tr], tl[tr], np.zeros((len(tr), 0)), groups[tr])
        linear[te] = fit(x, y, c, w).predict(tv[0, te])
        present = np.unique(tl[tr])  # a species whose crops all sit in the held-out frames has no prototype here
        pr = prototypes(tv[:, tr], np.searchsorted(present, tl[tr]), [names[i] for i in present], False)
        proto[te] = present[np.argmax(pr.similarity(tv[0, te]), 1)]
    support = np.bincount(tl, minlength=len(names))
    table = {k: round(float(f1_score(tl, hybrid(proto, linear, support, k), average="macro", zero_division=0)), 4) for k in HYBRID_K}
    return max(HYBRID_K, key=table.get), {str(k): v for k, v in table.items()}


def main(argv=None) -> dict:
    args = parser(__doc__).parse_args(argv)
    v = embed_split(args.model, args.crops)
    names, train, val, tv, vv, tl, true, frames = v.names, v.train, v.val, v.tv, v.vv, v.tl, v.true, v.frames
    size_t, size_v = box_features(train), box_features(val)
    mu, sd = size_t.mean(0), size_t.std(0)
    size_t, size_v = (size_t - mu) / sd, (size_v - mu) / sd
    groups = np.array([r["image_id"] for r in train])
    pred = {"prototype": np.asarray(names, object)[np.argmax(prototypes(tv, tl, names, False).similarity(vv[0]), 1)]}
    chosen = {}
    for arm, (et, ev) in {"linear": (np.zeros((len(tl), 0)), np.zeros((len(val), 0))), "linear_size": (size_t, size_v)}.items():
        x, y, g = with_views(tv, tl, et, groups)
        c, w, table = choose(x, y, g)
        chosen[arm] = {"C": c, "class_weight": w, "training_cv_f1_macro": table}
        pred[arm] = np.asarray(names, object)[fit(x, y, c, w).predict(np.hstack([vv[0], ev]))]
    c, w = chosen["linear"]["C"], chosen["linear"]["class_weight"]
    k, table = choose_k(tv, tl, names, groups, c, w)
    chosen["hybrid"] = {"K": k, "training_cv_f1_macro": table}
    index = {n: i for i, n in enumerate(names)}
    as_idx = lambda a: np.array([index[n] for n in a])  # noqa: E731
    pred["hybrid"] = np.asarray(names, object)[hybrid(as_idx(pred["prototype"]), as_idx(pred["linear"]), np.bincount(tl, minlength=len(names)), k)]
    rows = fold_rows(true, pred, frames)
    summary = summarise(true, pred, rows, Counter(names[l] for l in tl), baseline="prototype")
    result = {"objects": int(len(true)), "frames": int(len(np.unique(frames))), "training_crops": len(train), "chosen_on_training_frames": chosen,
              "mean_sd_over_folds": summary, "folds_detail": rows}
    print_summary(summary)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
