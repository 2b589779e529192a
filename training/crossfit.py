"""Out-of-fold evidence for an embedder that trained on every labelled frame.

When the shipped embedder has seen every frame, nothing it says about
those frames is out of sample: its similarities to its own training crops
run high, so thresholds, P(name right | similarity) and the figures read
off them would all be optimistic. They are fitted here instead on the
fold models of ``experiments.cv_grid`` (the same recipe, trained on four
folds of frames): each object is embedded by the fold model that never saw
its frame and matched to prototypes built from that model's training
folds (cross-fitting). The shipped embedder is assumed to behave on new
frames as a fold model does on its held-out fold, which is what the folds
were run to measure.

    OUT/runs/RUN/foldK/emb.npz   every box's embedding by fold K's model, and which boxes trained it
    OUT/runs/RUN/foldK/result.json   the fold's class names
    OUT/folds/foldK/crops.json   which frame each box is on
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plankton.model.prototypes import Prototypes

MISSING = -2.0  # similarity to a species the fold had no training box of: below any cosine, never the best


@dataclass
class OutOfFold:
    """N held-out objects. ``similarity``: N×C to ``names`` (MISSING where
    the object's fold model had no prototype of that species); ``true``:
    N species names; ``frames``: N image ids; ``files``: N frame file
    names; ``fold``: N fold indices; ``ann_id``: N annotation ids."""

    names: list[str]
    true: np.ndarray
    similarity: np.ndarray
    frames: np.ndarray
    files: np.ndarray
    fold: np.ndarray
    ann_id: np.ndarray

    def own(self) -> np.ndarray:
        """N similarities to the object's own species; NaN where the fold
        (or ``names``) has no prototype of it."""
        col = {n: i for i, n in enumerate(self.names)}
        idx = np.array([col.get(t, -1) for t in self.true])
        out = np.full(len(idx), np.nan, np.float32)
        ok = idx >= 0
        out[ok] = self.similarity[np.flatnonzero(ok), idx[ok]]
        out[out <= MISSING] = np.nan
        return out

    def without(self, files: set[str]) -> "OutOfFold":
        """The objects not on frames of these file names."""
        return self.take(~np.isin(self.files, sorted(files)))

    def take(self, keep: np.ndarray) -> "OutOfFold":
        """The objects selected by ``keep`` (N bools or indices)."""
        return OutOfFold(self.names, self.true[keep], self.similarity[keep], self.frames[keep], self.files[keep], self.fold[keep],
                         self.ann_id[keep])


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prototypes(e: np.ndarray, labels: np.ndarray, names: list[str], mode: str, k: int, seed: int) -> Prototypes:
    """A fold's prototypes. Mean matching needs no sub-centres, whose k-means
    is most of the cost: they are left as copies of the means."""
    if mode != "mean":
        return Prototypes.build(e, labels, names, k=k, seed=seed, keep_support=False, mode=mode)
    kept = [c for c in range(len(names)) if (labels == c).any()]
    means = unit(np.stack([e[labels == c].mean(0) for c in kept])) if kept else np.zeros((0, e.shape[1]), np.float32)
    return Prototypes([names[c] for c in kept], means, np.repeat(means[:, None], k, 1), mode="mean")


def fold_dirs(run: str | Path) -> list[Path]:
    run = Path(run)
    dirs = sorted(run.glob("fold*"))
    missing = [d.name for d in dirs if not (d / "result.json").exists()]
    if not dirs or missing:
        raise SystemExit(f"{run}: no finished cross-validation folds" + (f" ({', '.join(missing)} unfinished)" if missing else ""))
    return dirs


def load(run: str | Path, names: list[str], mode: str = "mean", tta_margin: float = 0.0, k: int = 5, seed: int = 0) -> OutOfFold:
    """The held-out objects of every fold of ``run`` (an
    ``experiments.cv_grid`` OUT/runs/RUN folder), matched to ``names``
    as the identifier matches them: the plain crop's embedding, or its 8
    views' mean where the two nearest species lie within ``tta_margin``
    (``Identifier.refine``; prototypes from plain training embeddings)."""
    run = Path(run)
    index = json.loads((run.parent.parent / "folds" / "fold0" / "crops.json").read_text())
    cats = {c["id"]: c["name"] for c in index["categories"]}
    where = {int(r["ann_id"]): (int(r["image_id"]), Path(r["file"]).name, cats[r["category_id"]]) for r in index["crops"]}
    col = {n: i for i, n in enumerate(names)}
    parts = []
    for d in fold_dirs(run):
        res = json.loads((d / "result.json").read_text())
        z = np.load(d / "emb.npz")
        e = unit(z["plain"])
        tr, te = z["train"] & (z["label"] >= 0), ~z["train"]
        protos = prototypes(e[tr], z["label"][tr], res["names"], mode, k, seed)
        sim = np.full((int(te.sum()), len(names)), MISSING, np.float32)
        cols = [(j, col[n]) for j, n in enumerate(protos.names) if n in col]
        s = protos.similarity(e[te])
        if tta_margin > 0 and "tta" not in z.files:
            raise SystemExit(f"{d}/emb.npz has no 8-view embeddings (a cv_grid run with --no-tta): --tta-margin needs them")
        if tta_margin > 0 and len(protos.names) > 1:
            top2 = np.sort(s, axis=1)[:, -2:]
            doubtful = top2[:, 1] - top2[:, 0] < tta_margin
            s[doubtful] = protos.similarity(unit(z["tta"][te][doubtful]))
        sim[:, [c for _, c in cols]] = s[:, [j for j, _ in cols]]
        ann = z["ann_id"][te].astype(int)
        parts.append((sim, ann, np.full(len(ann), res["fold"])))
    ann = np.concatenate([p[1] for p in parts])
    return OutOfFold(list(names), np.array([where[a][2] for a in ann], dtype=object), np.concatenate([p[0] for p in parts]),
                     np.array([where[a][0] for a in ann]), np.array([where[a][1] for a in ann], dtype=object),
                     np.concatenate([p[2] for p in parts]), ann)


def folds_of(run: str | Path) -> list[list[int]]:
    """The frames (image ids) each fold held out."""
    return json.loads((Path(run).parent.parent / "folds.json").read_text())["frames"]
