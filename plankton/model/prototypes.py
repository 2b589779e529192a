"""Class prototypes and cosine matching. Embeddings are N×D float32 with
unit-length rows."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plankton.results import NOT_PLANKTON, UNKNOWN, Candidate, Identification


def class_thresholds(threshold, n_classes: int) -> np.ndarray:
    """A threshold (one float, or C per-class values) → C float32 values."""
    return np.broadcast_to(np.asarray(threshold, np.float32), (n_classes,))


SHIFT_KNEE = 0.95  # per-class thresholds move one-for-one with the global one up to here (and down to 1 - this)


def shifted_thresholds(cls_conf: float, offsets) -> np.ndarray:
    """C per-class thresholds when the global similarity threshold is
    ``cls_conf``; ``offsets`` (C values, or one) are each class's distance
    from the global threshold at the model's default
    (``IdentifierConfig.offsets``). The one rule for the app's slider, the
    CLI and the metrics.

    A class keeps its distance while its threshold stays within
    [1 - SHIFT_KNEE, SHIFT_KNEE]; beyond, the distance shrinks so that the
    threshold reaches 1 (or 0) only when the global one does. A plain sum
    would pass 1 (a species stricter by 0.25 becomes impossible from a
    global 0.75 on, silently). Inside the band the arithmetic is the old
    float32 sum, bit for bit, so figures published at the default hold."""
    off = np.atleast_1d(np.asarray(offsets, np.float32))
    moved = np.float32(cls_conf) + off
    hi, lo = SHIFT_KNEE, 1.0 - SHIFT_KNEE
    g = float(cls_conf)
    up = (off > 0) & (moved > hi)
    down = (off < 0) & (moved < lo)
    if up.any() or down.any():
        d = off.astype(np.float64)
        squeezed_up = hi + (g + d - hi) * (1 - hi) / (1 - hi + d)
        squeezed_down = lo * g / (lo - d)
        moved = np.where(up, squeezed_up, np.where(down, squeezed_down, moved)).astype(np.float32)
    return moved


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _subcenters(emb: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k sub-centre prototypes (k×D, unit rows) of one class's N×D
    embeddings: spherical k-means via scikit-learn on unit vectors. With
    fewer than k samples, the samples themselves, repeated (a repeat never
    changes a max-similarity match)."""
    if len(emb) <= k:
        return _normalise(emb[np.arange(k) % len(emb)])
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(emb)
    return _normalise(km.cluster_centers_)


MODES = ("subcenter", "mean")


@dataclass
class Prototypes:
    """names: C class names. means: C×D unit class means. subcenters:
    C×K×D unit sub-centre prototypes. ``mode`` picks what a match uses:
    "subcenter" (max over the class's sub-centres and mean) or "mean" (the
    class mean alone: a rare species' sub-centres are its few crops
    themselves, which makes matching a noisy nearest-neighbour vote).
    support, support_labels: the M×D embeddings the prototypes were built
    from and their M class indices (optional), so that new examples can
    later join a class and its sub-centres be found again (``add``)."""

    names: list[str]
    means: np.ndarray
    subcenters: np.ndarray
    mode: str = "subcenter"
    support: np.ndarray | None = None
    support_labels: np.ndarray | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"prototype mode {self.mode!r}: expected one of {', '.join(MODES)}")
        self.means = np.asarray(self.means, np.float32)
        self.subcenters = np.asarray(self.subcenters, np.float32)
        if (self.support is None) != (self.support_labels is None):
            raise ValueError("support embeddings and their labels come together")
        if self.support is not None:
            self.support, self.support_labels = np.asarray(self.support, np.float32), np.asarray(self.support_labels, np.int64)
            if len(self.support) != len(self.support_labels) or (len(self.support_labels) and not 0 <= self.support_labels.min() <= self.support_labels.max() < len(self.names)):
                raise ValueError("support labels must index the class names, one per support embedding")
        C = len(self.names)
        if self.means.shape[0] != C or self.subcenters.shape[0] != C:
            raise ValueError(f"{C} names but {self.means.shape[0]} means and {self.subcenters.shape[0]} sub-centre sets")
        if self.subcenters.ndim != 3 or self.subcenters.shape[2] != self.means.shape[1]:
            raise ValueError(f"sub-centres of shape {self.subcenters.shape} do not fit means {self.means.shape}")
        if len(set(self.names)) != C or UNKNOWN in self.names:
            raise ValueError("class names must be unique and must not be 'unknown'")

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def build(cls, embeddings: np.ndarray, labels: np.ndarray, names: list[str], k: int = 5, seed: int = 0, keep_support: bool = True,
              mode: str = "subcenter") -> "Prototypes":
        """From N×D embeddings and N integer labels indexing ``names``.
        Classes without samples get no prototype (they cannot be predicted).
        ``keep_support``: keep the embeddings, for ``add``. ``mode``: what a
        match uses (sub-centres are built either way, for the gallery)."""
        embeddings, labels = _normalise(embeddings), np.asarray(labels)
        kept, means, subs, support, support_labels = [], [], [], [], []
        for c, name in enumerate(names):
            e = embeddings[labels == c]
            if len(e):
                support_labels += [len(kept)] * len(e)
                support.append(e)
                kept.append(name)
                means.append(_normalise(e.mean(0)))
                subs.append(_subcenters(e, k, seed))
        D = embeddings.shape[1]
        sup = (np.concatenate(support) if support else np.zeros((0, D), np.float32), np.array(support_labels, np.int64)) if keep_support else (None, None)
        return cls(kept, np.reshape(means, (-1, D)), np.reshape(subs, (-1, k, D)), mode, support=sup[0], support_labels=sup[1])

    def add(self, examples: dict[str, np.ndarray], seed: int = 0) -> "Prototypes":
        """New examples join their classes ({name: N×D embeddings}): a known
        class is rebuilt from its support embeddings plus the new ones, a
        new name becomes a new class (``NOT_PLANKTON`` collects objects
        that are no plankton at all). Returns new Prototypes; self is
        unchanged. Needs the support embeddings."""
        if self.support is None:
            raise ValueError("these prototypes keep no support embeddings, so examples cannot join their classes (rebuild with training.build_prototypes)")
        names = list(self.names) + [n for n in examples if n not in self.names]
        emb = [self.support] + [np.asarray(e, np.float32).reshape(-1, self.dim) for e in examples.values()]
        labels = [self.support_labels] + [np.full(len(np.asarray(e).reshape(-1, self.dim)), names.index(n)) for n, e in examples.items()]
        rebuilt = Prototypes.build(np.concatenate(emb), np.concatenate(labels), names, k=self.subcenters.shape[1], seed=seed, mode=self.mode)
        untouched = [i for i, n in enumerate(self.names) if n not in examples]  # keep their exact sub-centres
        rebuilt.means[untouched], rebuilt.subcenters[untouched] = self.means[untouched], self.subcenters[untouched]
        return rebuilt

    def enrol(self, name: str, embeddings: np.ndarray, seed: int = 0) -> "Prototypes":
        """A new species (or more examples of one) from a few N×D embeddings,
        no retraining. Returns new Prototypes; self is unchanged."""
        e = _normalise(np.asarray(embeddings, np.float32).reshape(-1, self.dim))
        if len(e) == 0:
            raise ValueError(f"no examples given for {name!r}")
        mean, subs = _normalise(e.mean(0)), _subcenters(e, self.subcenters.shape[1], seed)
        names, means, subcenters = list(self.names), self.means.copy(), self.subcenters.copy()
        if name in names:
            i = names.index(name)
            means[i], subcenters[i] = mean, subs
        else:
            names.append(name)
            means = np.vstack([means, mean[None]])
            subcenters = np.concatenate([subcenters, subs[None]])
        return Prototypes(names, means, subcenters, self.mode)

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """N×D embeddings → N×C cosine similarity to each class."""
        e = np.asarray(embeddings, np.float32).reshape(-1, self.dim)
        sim = e @ self.means.T
        if self.mode == "subcenter":
            sim = np.maximum(sim, np.einsum("nd,ckd->nck", e, self.subcenters).max(axis=2))
        return sim

    def match(self, embeddings: np.ndarray, threshold, topk: int = 3) -> list[Identification]:
        """Best class per embedding, ``unknown`` when its similarity is below
        ``threshold`` (one float, or C per-class values); ``topk``
        candidates by similarity either way."""
        return identify(self.similarity(embeddings), self.names, threshold, topk)

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        meta = {"names": json.dumps(self.names), "mode": self.mode}
        tensors = {"means": self.means, "subcenters": self.subcenters}
        if self.support is not None:  # float16: half the bytes, and cosines change by < 1e-3
            tensors |= {"support": self.support.astype(np.float16), "support_labels": self.support_labels}
        save_file(tensors, str(path), metadata=meta)
        os.chmod(path, 0o644)  # safetensors creates files 0600

    @classmethod
    def load(cls, path: str | Path) -> "Prototypes":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "names" not in meta or not {"means", "subcenters"} <= tensors.keys():
            raise ValueError(f"{path}: not a prototypes file (needs means, subcenters and names)")
        return cls(json.loads(meta["names"]), tensors["means"], tensors["subcenters"], meta.get("mode", "subcenter"),
                   tensors.get("support"), tensors.get("support_labels"))


def decide(similarity: np.ndarray, names: list[str], threshold) -> np.ndarray:
    """The open-set decision, the one rule the cascade, the app, the CLI,
    the metrics and the counts all apply: N×C similarities → N names, the
    most similar class, or ``unknown`` below that class's threshold
    (``threshold``: one float, or C per-class values) and when the best
    class is ``NOT_PLANKTON``."""
    similarity = np.atleast_2d(np.asarray(similarity, np.float32))
    if similarity.shape[1] == 0:
        return np.full(len(similarity), UNKNOWN, dtype=object)
    best = similarity.argmax(1)
    label = np.asarray(names, dtype=object)[best]
    named = (similarity[np.arange(len(best)), best] >= class_thresholds(threshold, len(names))[best]) & (label != NOT_PLANKTON)
    return np.where(named, label, UNKNOWN).astype(object)


def identify(similarity: np.ndarray, names: list[str], threshold, topk: int = 3) -> list[Identification]:
    """N×C similarities → N identifications: the species ``decide`` gives,
    its similarity, and the ``topk`` most similar species as candidates
    (``NOT_PLANKTON`` is never offered)."""
    similarity = np.atleast_2d(np.asarray(similarity, np.float32))
    labels = decide(similarity, names, threshold)
    k = min(topk, sum(n != NOT_PLANKTON for n in names))
    order = np.argsort(-similarity, axis=1, kind="stable") if len(names) else np.zeros((len(similarity), 0), int)
    out = []
    for row, idx, label in zip(similarity, order, labels):
        cands = tuple(Candidate(names[j], float(row[j])) for j in idx if names[j] != NOT_PLANKTON)[:k]
        out.append(Identification(label, float(row[idx[0]]) if len(idx) else -1.0, cands))
    return out
