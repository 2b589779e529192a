"""Class prototypes and cosine matching. Embeddings are N×D float32 with
unit-length rows."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .results import UNKNOWN, Candidate, Identification


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


@dataclass
class Prototypes:
    """names: C class names. means: C×D unit class means. subcenters:
    C×K×D unit sub-centre prototypes. ``mode`` picks what a match uses:
    "subcenter" (max over the class's sub-centres and mean) or "mean"."""

    names: list[str]
    means: np.ndarray
    subcenters: np.ndarray
    mode: str = "subcenter"

    def __post_init__(self):
        self.means = np.asarray(self.means, np.float32)
        self.subcenters = np.asarray(self.subcenters, np.float32)
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
    def build(cls, embeddings: np.ndarray, labels: np.ndarray, names: list[str], k: int = 5, seed: int = 0) -> "Prototypes":
        """From N×D embeddings and N integer labels indexing ``names``.
        Classes without samples get no prototype (they cannot be predicted)."""
        embeddings, labels = _normalise(embeddings), np.asarray(labels)
        kept, means, subs = [], [], []
        for c, name in enumerate(names):
            e = embeddings[labels == c]
            if len(e):
                kept.append(name)
                means.append(_normalise(e.mean(0)))
                subs.append(_subcenters(e, k, seed))
        D = embeddings.shape[1]
        return cls(kept, np.reshape(means, (-1, D)), np.reshape(subs, (-1, k, D)))

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

    def match(self, embeddings: np.ndarray, threshold: float, topk: int = 3) -> list[Identification]:
        """Best class per embedding, ``unknown`` when its similarity is below
        ``threshold``; ``topk`` candidates by similarity either way."""
        return identify(self.similarity(embeddings), self.names, threshold, topk)

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        meta = {"names": json.dumps(self.names), "mode": self.mode}
        save_file({"means": self.means, "subcenters": self.subcenters}, str(path), metadata=meta)
        os.chmod(path, 0o644)  # safetensors creates files 0600

    @classmethod
    def load(cls, path: str | Path) -> "Prototypes":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if "names" not in meta or not {"means", "subcenters"} <= tensors.keys():
            raise ValueError(f"{path}: not a prototypes file (needs means, subcenters and names)")
        return cls(json.loads(meta["names"]), tensors["means"], tensors["subcenters"], meta.get("mode", "subcenter"))


def identify(similarity: np.ndarray, names: list[str], threshold: float, topk: int = 3) -> list[Identification]:
    """N×C similarities → N identifications (``unknown`` below threshold)."""
    similarity = np.atleast_2d(np.asarray(similarity, np.float32))
    k = min(topk, len(names))
    order = np.argsort(-similarity, axis=1, kind="stable")[:, : max(k, 1)] if len(names) else np.zeros((len(similarity), 0), int)
    out = []
    for row, idx in zip(similarity, order):
        cands = tuple(Candidate(names[j], float(row[j])) for j in idx[:k])
        best = float(row[idx[0]]) if len(idx) else -1.0
        species = names[idx[0]] if len(idx) and best >= threshold else UNKNOWN
        out.append(Identification(species, best, cands))
    return out
