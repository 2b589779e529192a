"""Open-set thresholds from training frames only.

A crop's similarity to prototypes built from its own embedding is higher
than any new object's will be, so a threshold read off the training crops
themselves leaves too many known objects ``unknown``. Here every training
frame is held out in turn (group k-fold over frames): prototypes are built
from the other folds and the held-out crops' similarity to their own
species is recorded. Validation frames are never read.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold

from plankton.model.prototypes import Prototypes


def held_out_similarity(embeddings: np.ndarray, labels: np.ndarray, frames: np.ndarray, names: list[str], k: int = 5,
                        folds: int = 5, seed: int = 0, mode: str = "subcenter") -> np.ndarray:
    """N×D embeddings, N labels (indices into ``names``) and N frame ids →
    N own-class similarities, each computed with prototypes built from the
    other folds' frames only; NaN where the other folds have no example of
    that species (a species seen on one frame only). ``mode``: how the
    prototypes match (``Prototypes.mode``), as in the model."""
    labels, frames = np.asarray(labels), np.asarray(frames)
    own = np.full(len(labels), np.nan, np.float32)
    n_splits = min(folds, len(np.unique(frames)))
    if n_splits < 2:
        return own
    for fit, held in GroupKFold(n_splits=n_splits).split(embeddings, labels, frames):
        protos = Prototypes.build(embeddings[fit], labels[fit], names, k=k, seed=seed, keep_support=False, mode=mode)
        index = {n: i for i, n in enumerate(protos.names)}
        cols = np.array([index.get(names[y], -1) for y in labels[held]])
        ok = cols >= 0
        if ok.any():
            sim = protos.similarity(embeddings[held[ok]])
            own[held[ok]] = sim[np.arange(len(sim)), cols[ok]]
    return own


def class_thresholds(own: np.ndarray, labels: np.ndarray, names: list[str], quantile: float = 0.05,
                     min_samples: int = 10) -> tuple[float, dict[str, float]]:
    """Held-out own-class similarities (NaN: none) → (global threshold,
    {species: threshold}). A species with at least ``min_samples``
    held-out values gets the ``quantile`` of its own; the global threshold,
    used for rarer species (and for species enrolled later), is the same
    quantile over all species' values pooled, and is also a floor: no
    species threshold falls below it, so a diverse species cannot claim
    the look-alikes of others."""
    own, labels = np.asarray(own, np.float32), np.asarray(labels)
    valid = ~np.isnan(own)
    if not valid.any():
        raise ValueError("no held-out similarities: need a species on at least two training frames")
    floor = round(float(np.quantile(own[valid], quantile)), 3)
    per_class = {}
    for c, name in enumerate(names):
        v = own[valid & (labels == c)]
        if len(v) >= min_samples:
            per_class[name] = round(max(floor, float(np.quantile(v, quantile))), 3)
    return floor, per_class


QUANTILE_GRID = (0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)


def quantile_table(own: np.ndarray, labels: np.ndarray, names: list[str], min_samples: int = 10, grid=QUANTILE_GRID) -> dict:
    """``class_thresholds`` at every quantile of ``grid``, so that a
    quantile can be chosen later (training.calibrate) without the crops:
    {"grid": [q...], "floor": [t...], "classes": {species: [t...]}}."""
    rows = [class_thresholds(own, labels, names, q, min_samples) for q in grid]
    classes = sorted({n for _, per in rows for n in per})
    return {"grid": list(grid), "floor": [f for f, _ in rows], "classes": {n: [per.get(n, f) for f, per in rows] for n in classes},
            "min_samples": min_samples}


def thresholds_at(table: dict, quantile: float) -> tuple[float, dict[str, float]]:
    """(global threshold, {species: threshold}) of a ``quantile_table`` at one of its quantiles."""
    i = [round(q, 6) for q in table["grid"]].index(round(quantile, 6))
    floor = table["floor"][i]
    return floor, {n: v[i] for n, v in table["classes"].items() if v[i] != floor}
