"""What the model learned, to look at: a few exemplar crops per sub-centre
of each species (the training crops nearest to it), how many training
crops fall to each sub-centre, and the species pairs whose prototypes are
closest, which are the ones the model finds hard to tell apart.

Exemplars live in the artifact as ``exemplars.safetensors``: small uint8
thumbnails, C×K×E×S×S×3, with the class names in its metadata.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plankton.model.prototypes import Prototypes
from plankton.results import NOT_PLANKTON

FILE = "exemplars.safetensors"
PER_SUBCENTER = 3
SIDE = 48


@dataclass
class Exemplars:
    """names: C species. crops: C×K×E×S×S×3 uint8 thumbnails, the E training
    crops nearest to each of the K sub-centres (fewer real ones are
    padded by repeating, see ``n``). counts: C×K training crops whose
    nearest sub-centre of their species is that one. n: C×K distinct
    exemplars stored."""

    names: list[str]
    crops: np.ndarray
    counts: np.ndarray
    n: np.ndarray

    def of(self, name: str) -> list[tuple[int, list[np.ndarray]]]:
        """(training crops, [exemplar thumbnails]) per sub-centre of ``name``."""
        c = self.names.index(name)
        return [(int(self.counts[c, k]), [self.crops[c, k, e] for e in range(int(self.n[c, k]))]) for k in range(self.crops.shape[1])]

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        save_file({"crops": np.ascontiguousarray(self.crops, np.uint8), "counts": self.counts.astype(np.int64), "n": self.n.astype(np.int64)},
                  str(path), metadata={"names": json.dumps(self.names)})
        os.chmod(path, 0o644)

    @classmethod
    def load(cls, path: str | Path) -> "Exemplars":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta, t = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
        if "names" not in meta or not {"crops", "counts", "n"} <= t.keys():
            raise ValueError(f"{path}: not an exemplars file (needs crops, counts, n and names)")
        return cls(json.loads(meta["names"]), t["crops"], t["counts"], t["n"])


def nearest_subcenter(prototypes: Prototypes, embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """N embeddings with N class indices → the index of each one's nearest
    sub-centre among its own class's K."""
    e = np.asarray(embeddings, np.float32)
    sims = np.einsum("nd,nkd->nk", e, prototypes.subcenters[np.asarray(labels)])
    return sims.argmax(1)


def choose_exemplars(prototypes: Prototypes, embeddings: np.ndarray, labels: np.ndarray, per_subcenter: int = PER_SUBCENTER) -> tuple[np.ndarray, np.ndarray]:
    """For N crops' embeddings and class indices: (C×K×E indices of the
    crops nearest to each sub-centre among those assigned to it, -1 where
    a sub-centre has fewer; C×K counts of crops assigned)."""
    C, K = prototypes.subcenters.shape[:2]
    nearest = nearest_subcenter(prototypes, embeddings, labels)
    chosen = np.full((C, K, per_subcenter), -1, np.int64)
    counts = np.zeros((C, K), np.int64)
    for c in range(C):
        for k in range(K):
            idx = np.flatnonzero((labels == c) & (nearest == k))
            counts[c, k] = len(idx)
            if len(idx):
                order = np.argsort(-(embeddings[idx] @ prototypes.subcenters[c, k]), kind="stable")
                chosen[c, k, : min(per_subcenter, len(idx))] = idx[order[:per_subcenter]]
    return chosen, counts


def closest_pairs(prototypes: Prototypes, top: int = 15) -> list[dict]:
    """Species pairs ranked by how close their prototypes are: the highest
    cosine between any sub-centre (or mean) of one and of the other, with
    the cosine of their means beside it."""
    keep = [i for i, n in enumerate(prototypes.names) if n != NOT_PLANKTON]
    P = np.concatenate([prototypes.means[:, None], prototypes.subcenters], axis=1)[keep]  # C×(K+1)×D
    sub = np.einsum("akd,bld->abkl", P, P).reshape(len(keep), len(keep), -1).max(-1)
    mean = prototypes.means[keep] @ prototypes.means[keep].T
    pairs = [(sub[i, j], mean[i, j], i, j) for i in range(len(keep)) for j in range(i + 1, len(keep))]
    pairs.sort(key=lambda p: (-p[0], -p[1]))
    names = [prototypes.names[i] for i in keep]
    return [{"a": names[i], "b": names[j], "cosine": round(float(s), 4), "mean_cosine": round(float(m), 4)} for s, m, i, j in pairs[:top]]


def subcenter_spread(prototypes: Prototypes) -> dict[str, float]:
    """Per species, the lowest cosine between two of its sub-centres: near
    1 when its sub-centres look alike, lower when they are distinct forms."""
    out = {}
    for name, s in zip(prototypes.names, prototypes.subcenters):
        g = s @ s.T
        out[name] = round(float(g.min()), 4)
    return out


def summary(folder: str | Path, top: int = 10) -> dict | None:
    """The gallery's tables for a model folder: its closest species pairs,
    and per species the training crops per sub-centre (from the exemplars
    file, when there is one) and how alike its sub-centres are."""
    from plankton.artifact.manifest import PROTOTYPES

    folder = Path(folder)
    if not (folder / PROTOTYPES).is_file():
        return None
    protos = Prototypes.load(folder / PROTOTYPES)
    ex = Exemplars.load(folder / FILE) if (folder / FILE).is_file() else None
    spread = subcenter_spread(protos)
    species = [{"species": n, "subcenter_crops": [int(c) for c in ex.counts[ex.names.index(n)]] if ex and n in ex.names else None,
                "lowest_subcenter_cosine": spread[n]} for n in protos.names if n != NOT_PLANKTON]
    return {"closest_pairs": closest_pairs(protos, top), "species": species}


def summary_lines(s: dict) -> list[str]:
    """``summary`` as aligned text tables."""
    lines = ["closest species pairs (cosine of their closest sub-centres, and of their means):"]
    width = max((len(n) for p in s["closest_pairs"] for n in (p["a"], p["b"])), default=10)
    lines += [f"  {p['a']:<{width}}  {p['b']:<{width}}  {p['cosine']:.3f}  {p['mean_cosine']:.3f}" for p in s["closest_pairs"]]
    lines.append("training crops per sub-centre, and the lowest cosine between a species' sub-centres (low: distinct forms):")
    width = max((len(r["species"]) for r in s["species"]), default=10)
    for r in s["species"]:
        crops = " ".join(f"{c:4d}" for c in r["subcenter_crops"]) if r["subcenter_crops"] else "(no exemplars stored)"
        lines.append(f"  {r['species']:<{width}}  {crops}   {r['lowest_subcenter_cosine']:.2f}")
    return lines


__all__ = ["Exemplars", "FILE", "choose_exemplars", "closest_pairs", "nearest_subcenter", "subcenter_spread", "summary", "summary_lines"]
