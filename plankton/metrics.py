"""Identification metrics as pure functions over stored similarities, so a
threshold can move without re-running any model. Built on scikit-learn."""
from __future__ import annotations

import numpy as np

from plankton.model.prototypes import class_thresholds, decide, shifted_thresholds
from plankton.results import UNKNOWN


def predict_labels(similarity: np.ndarray, class_names: list[str], threshold) -> np.ndarray:
    """N×C similarities → N predicted names: ``prototypes.decide``, the one rule."""
    return decide(similarity, class_names, threshold)


def per_class_table(true_names: np.ndarray, similarity: np.ndarray, class_names: list[str], threshold) -> list[dict]:
    """Precision, recall, F1 and support per true species at ``threshold``,
    then "macro avg" and "weighted avg" rows over the species that have
    support. Objects left ``unknown`` count as misses for their species;
    species without a prototype can only be right by being ``unknown``,
    which this table does not reward (see ``coverage_curve``)."""
    from sklearn.metrics import precision_recall_fscore_support  # here: importing sklearn costs seconds, and predict_labels is on the CLI's path

    true_names = np.asarray(true_names, dtype=object)
    pred = predict_labels(similarity, class_names, threshold)
    species = [n for n in dict.fromkeys(list(class_names) + sorted(set(true_names))) if n in set(true_names)]
    if not species:
        return []
    p, r, f, s = precision_recall_fscore_support(true_names, pred, labels=species, zero_division=0)
    rows = [{"species": n, "precision": float(a), "recall": float(b), "f1": float(c), "support": int(d)} for n, a, b, c, d in zip(species, p, r, f, s)]
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(true_names, pred, labels=species, average=avg, zero_division=0)
        rows.append({"species": f"{avg} avg", "precision": float(p), "recall": float(r), "f1": float(f), "support": int(len(true_names))})
    return rows


def topk_accuracy(true_names: np.ndarray, similarity: np.ndarray, class_names: list[str], k: int) -> float:
    """Share of N objects whose true species is among the k most similar classes."""
    true_names = np.asarray(true_names, dtype=object)
    if len(true_names) == 0:
        return float("nan")
    order = np.argsort(-np.asarray(similarity), axis=1)[:, :k]
    names = np.asarray(class_names, dtype=object)
    return float(np.mean([t in set(names[o]) for t, o in zip(true_names, order)]))


def open_set(true_names: np.ndarray, similarity: np.ndarray, class_names: list[str], threshold) -> dict:
    """What happens to a species the model has never seen: each species
    present in ``true_names`` (N names) has its column of the N×C
    ``similarity`` removed in turn, and the share of its objects that then
    come out ``unknown`` under ``threshold`` (one float, or C per-class
    values) is counted. Returns {"unknown_rate_macro", "unknown_rate_weighted",
    "per_species": [{species, unknown_rate, objects}]}; rates are None
    without objects."""
    true_names, similarity = np.asarray(true_names, dtype=object), np.atleast_2d(np.asarray(similarity, np.float32))
    thr = class_thresholds(threshold, len(class_names))
    rows = []
    for c in sorted(set(true_names) & set(class_names)):
        keep = np.array([j for j, n in enumerate(class_names) if n != c], int)
        s = similarity[true_names == c][:, keep]
        rate = float((s.max(1) < thr[keep][s.argmax(1)]).mean()) if len(keep) else 1.0
        rows.append({"species": c, "unknown_rate": rate, "objects": int(len(s))})
    rates, n = [r["unknown_rate"] for r in rows], [r["objects"] for r in rows]
    return {"unknown_rate_macro": float(np.mean(rates)) if rows else None,
            "unknown_rate_weighted": float(np.average(rates, weights=n)) if rows else None, "per_species": rows}


def coverage_curve(true_names: np.ndarray, similarity: np.ndarray, class_names: list[str], thresholds=None, offsets=None) -> list[dict]:
    """Accuracy on the objects that get a name, against coverage (the share
    that get one rather than ``unknown``), as the threshold moves.
    ``offsets``: C per-class distances from the global threshold, which
    move with it (``shifted_thresholds``: never past 1)."""
    true_names = np.asarray(true_names, dtype=object)
    thresholds = np.round(np.linspace(0, 1, 41), 3) if thresholds is None else thresholds
    offsets = np.zeros(len(class_names), np.float32) if offsets is None else np.asarray(offsets, np.float32)
    rows = []
    for t in thresholds:
        pred = predict_labels(similarity, class_names, shifted_thresholds(float(t), offsets))
        named = pred != UNKNOWN
        acc = float(np.mean(pred[named] == true_names[named])) if named.any() else float("nan")
        rows.append({"threshold": float(t), "coverage": float(named.mean()) if len(pred) else 0.0, "accuracy": acc})
    return rows


def bray_curtis(a, b) -> float:
    """Bray-Curtis dissimilarity of two count vectors (same order): 0 when
    the compositions agree, 1 when they share nothing."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    total = (a + b).sum()
    return float(np.abs(a - b).sum() / total) if total > 0 else 0.0
