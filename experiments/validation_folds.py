"""Scoring closed-set answers on the bundled model's validation frames by
folds of frames, as ``experiments.tta_evidence`` and
``experiments.linear_head`` report them: 5 folds × 2 fold seeds → mean ± sd,
pooled figures, and pooled F1-macro by the species' training boxes."""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.metrics import f1_score

BINS = {"1-3": (1, 3), "4-9": (4, 9), "10-49": (10, 49), ">=50": (50, 10**9)}
FOLDS, SEEDS = 5, (0, 1)


def scores(true: np.ndarray, pred: np.ndarray) -> dict:
    """N names each → top-1 and F1-macro over the species in ``true``."""
    return {"top1": float((true == pred).mean()), "f1_macro": float(f1_score(true, pred, labels=sorted(set(true)), average="macro", zero_division=0))}


def fold_rows(true: np.ndarray, pred: dict[str, np.ndarray], frames: np.ndarray) -> list[dict]:
    """Per (fold seed, fold of frames): each arm's ``scores``."""
    rows, uf = [], np.unique(frames)
    for seed in SEEDS:
        fold_of = dict(zip(np.random.default_rng(seed).permutation(uf), np.arange(len(uf)) % FOLDS))
        fold = np.array([fold_of[f] for f in frames])
        rows += [{"seed": seed, "fold": k} | {a: scores(true[fold == k], p[fold == k]) for a, p in pred.items()} for k in range(FOLDS)]
    return rows


def summarise(true: np.ndarray, pred: dict[str, np.ndarray], rows: list[dict], support: Counter, baseline: str) -> dict:
    """Each arm: top-1 and F1-macro [mean, sd] over folds, pooled figures,
    pooled F1-macro by training boxes, and F1 folds won/lost against ``baseline``."""
    def by_bins(p):
        return {b: round(float(f1_score(true, p, labels=ls, average="macro", zero_division=0)), 4)
                for b, (lo, hi) in BINS.items() if (ls := sorted(c for c in set(true) if lo <= support[c] <= hi))}

    return {a: {m: [round(float(np.mean([r[a][m] for r in rows])), 4), round(float(np.std([r[a][m] for r in rows])), 4)] for m in ("top1", "f1_macro")}
            | {"pooled": {k: round(v, 4) for k, v in scores(true, p).items()}, "pooled_f1_by_training_boxes": by_bins(p),
               f"folds_won_lost_against_{baseline}": [sum(r[a]["f1_macro"] > r[baseline]["f1_macro"] for r in rows),
                                                      sum(r[a]["f1_macro"] < r[baseline]["f1_macro"] for r in rows)]}
            for a, p in pred.items()}


def print_summary(summary: dict) -> None:
    for a, s in summary.items():
        print(f"{a:12s} top-1 {s['top1'][0]:.4f} ± {s['top1'][1]:.4f}  F1-macro {s['f1_macro'][0]:.4f} ± {s['f1_macro'][1]:.4f}  "
              f"pooled {s['pooled']['top1']:.4f} / {s['pooled']['f1_macro']:.4f}  by training boxes {s['pooled_f1_by_training_boxes']}")
