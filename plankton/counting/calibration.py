"""What a count estimate learns from: ``CountEvidence``, a model's run on
frames it never trained on, and what it yields at a run's thresholds (the
object maps, the confusion matrix, the recalls), per bootstrap replicate.

Thinly evidenced species are shrunk towards what all species share, by a
strength the evidence itself sets (empirical Bayes, a Beta prior fitted by
the method of moments): a species seen once cannot swing its own recall or
its row of the confusion matrix, and one seen hundreds of times keeps its own.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plankton.results import UNKNOWN

METHODS = ("cc", "acc", "pcc", "em", "adapt")  # cc: expected count by label, corrected for misses only; see quantify
SPLIT_UNKNOWN = True  # separate object maps for named and unnamed boxes
FIT_BINS = 1001  # detector scores have about three decimals' worth of resolution
MIN_GROUP = 30  # fewer boxes than this in a group: it shares the pooled map
RECALL_SHRINK = (10.0, 60.0)  # pseudo-objects of the pooled recall a species' own is shrunk by (empirical Bayes, clipped): one object moves it ≤ 1/11
NAMING_SHRINK = (10.0, 60.0)  # the same for a species' row of the confusion matrix, towards named right or left unknown at the pooled rates
NOVEL_SHRINK = 2.0  # pseudo-objects: a species the model lacks is left unknown (its row of the confusion matrix)
PRIOR_PSEUDO = 2.0  # pseudo-objects every class has in the evidence's mix (what pcc weighs by); also the novel class's whole weight


def isotonic(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, grid: np.ndarray | None = None) -> np.ndarray:
    """Increasing fit of y (0/1) on x in [0, 1], read off at ``grid``
    (default: 101 points). x is pooled to FIT_BINS bins first: the fit is
    then one pass over at most that many points, fast enough to refit per
    bootstrap replicate."""
    from scipy.optimize import isotonic_regression  # scipy's, not scikit-learn's: importing sklearn costs seconds at a CLI's start

    grid = np.linspace(0, 1, 101) if grid is None else np.asarray(grid, np.float64)
    w = np.ones(len(x)) if w is None else np.asarray(w, np.float64)
    fine = np.linspace(0, 1, FIT_BINS)
    bins = np.clip(np.searchsorted(fine, np.asarray(x, np.float64)), 0, FIT_BINS - 1)
    total, hits = np.bincount(bins, w, FIT_BINS), np.bincount(bins, w * np.asarray(y, np.float64), FIT_BINS)
    used = total > 0
    if not used.any():
        return np.full(len(grid), np.nan)
    fit = np.clip(isotonic_regression(hits[used] / total[used], weights=total[used]).x, 0, 1)
    return np.interp(grid, fine[used], fit)


def shrink_strength(hits: np.ndarray, n: np.ndarray, bounds: tuple[float, float], min_n: float = 5.0) -> float:
    """Pseudo-objects of a Beta prior on per-species rates (recall, or
    named right) by the method of moments: the spread between species'
    rates beyond what their sampling noise explains. Little real spread: a
    strong pull to the pooled rate. Clipped to ``bounds``; with fewer
    than three species of ``min_n`` objects, its upper end."""
    lo, hi = bounds
    ok = n >= min_n
    if ok.sum() < 3 or n[ok].sum() <= 0:
        return hi
    p = hits[ok].sum() / n[ok].sum()
    rate = hits[ok] / n[ok]
    noise = np.mean(p * (1 - p) / n[ok])
    between = np.var(rate) - noise
    if between <= 1e-9 or p <= 0 or p >= 1:
        return hi
    return float(np.clip(p * (1 - p) / between - 1, lo, hi))


def bootstrap_weights(frames: int, replicates: int = 200, seed: int = 0) -> np.ndarray:
    """B×F multiplicities: each replicate draws F frames with replacement."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, frames, frames), minlength=frames) for _ in range(replicates)]).astype(np.float32) \
        if frames else np.zeros((replicates, 0), np.float32)


@dataclass
class CountEvidence:
    """A model's run on validation frames, kept in the artifact
    (``calibration.safetensors``). names: C species. Candidates (N, at the
    detector floor, fragments removed): ``score``, ``cand_similarity``
    (N×C), ``owner`` (the annotated object it is, -1 for none: a false box
    or a second box on one object), ``frame``. Annotated objects (K):
    ``true`` (species index, -1 without a prototype), ``similarity`` (K×C,
    on their annotated boxes), ``gt_frame``. ``weights``: B×F bootstrap
    multiplicities of the F frames. ``method``: how ``quantify.estimate_counts``
    solves (see ``METHODS``); it is stored in the file's metadata, which is
    what a loaded model reads."""

    names: list[str]
    score: np.ndarray
    cand_similarity: np.ndarray
    owner: np.ndarray
    frame: np.ndarray
    true: np.ndarray
    similarity: np.ndarray
    gt_frame: np.ndarray
    weights: np.ndarray
    method: str = "pcc"
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    ARRAYS = ("score", "cand_similarity", "owner", "frame", "true", "similarity", "gt_frame", "weights")

    @property
    def matched(self) -> np.ndarray:
        return self.owner >= 0

    @property
    def found(self) -> np.ndarray:
        """K: the score of the candidate that found each object, -1 if none."""
        out = np.full(len(self.true), -1.0, np.float32)
        out[self.owner[self.matched]] = self.score[self.matched]
        return out

    @property
    def pairs(self) -> np.ndarray:
        """K×C: the similarities of the candidate that found each object (zeros if none)."""
        out = np.zeros((len(self.true), len(self.names)), np.float32)
        out[self.owner[self.matched]] = self.cand_similarity[self.matched]
        return out

    def save(self, path: str | Path, meta: dict | None = None) -> None:
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(getattr(self, k)) for k in self.ARRAYS}
        tensors["cand_similarity"], tensors["similarity"] = tensors["cand_similarity"].astype(np.float16), tensors["similarity"].astype(np.float16)
        save_file(tensors, str(path), metadata={"names": json.dumps(self.names), "method": self.method} | {k: json.dumps(v) for k, v in (meta or {}).items()})
        os.chmod(path, 0o644)

    @classmethod
    def load(cls, path: str | Path) -> "CountEvidence":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta, t = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types, with several lines
            raise ValueError(f"{path}: not a safetensors file ({str(e).splitlines()[0]})") from None
        missing = set(cls.ARRAYS) - t.keys()
        if "names" not in meta or missing:
            raise ValueError(f"{path}: not a count calibration file (missing {', '.join(sorted(missing)) or 'names'})")
        if meta.get("method", "pcc") not in METHODS:
            raise ValueError(f"{path}: unknown quantification method {meta.get('method')!r}")
        t["cand_similarity"], t["similarity"] = t["cand_similarity"].astype(np.float32), t["similarity"].astype(np.float32)
        return cls(json.loads(meta["names"]), method=meta.get("method", "pcc"), **t)

    def subset_frames(self, keep: np.ndarray, replicates: int | None = None) -> "CountEvidence":
        """The evidence of frames ``keep`` (indices), renumbered, with a fresh bootstrap."""
        keep = np.asarray(keep)
        remap = np.full(len(self.weights[0]) if len(self.weights) else int(max(self.frame.max(initial=-1), self.gt_frame.max(initial=-1))) + 1, -1)
        remap[keep] = np.arange(len(keep))
        c, g = np.isin(self.frame, keep), np.isin(self.gt_frame, keep)
        gt_index = np.full(len(self.true) + 1, -1)
        gt_index[np.flatnonzero(g)] = np.arange(g.sum())
        return CountEvidence(self.names, self.score[c], self.cand_similarity[c], gt_index[self.owner[c]], remap[self.frame[c]], self.true[g],
                             self.similarity[g], remap[self.gt_frame[g]], bootstrap_weights(len(keep), replicates or len(self.weights)), self.method)

    def for_names(self, names: list[str]) -> "CountEvidence":
        """The evidence for a model (or a session) whose species are
        ``names``: a species enrolled since calibration has no evidence (its
        column is never the most similar, so it is taken as named right and
        found as often as the pooled recall); one removed since loses its
        objects' rows. Kept, so that a session's estimates reuse its fits."""
        names = list(names)
        if names == self.names:
            return self
        key = ("names", tuple(names))
        if key not in self._cache:
            col = {n: j for j, n in enumerate(self.names)}

            def cols(sim):
                out = np.full((len(sim), len(names)), -1.0, np.float32)
                for j, n in enumerate(names):
                    if n in col:
                        out[:, j] = sim[:, col[n]]
                return out

            index = {n: j for j, n in enumerate(names)}
            true = np.array([index.get(self.names[t], -1) if t >= 0 else -1 for t in self.true], np.int64)
            self._cache[key] = CountEvidence(names, self.score, cols(self.cand_similarity), self.owner, self.frame, true, cols(self.similarity),
                                             self.gt_frame, self.weights, self.method)
        return self._cache[key]

    # -- what the estimate reads, cached per bootstrap replicate and thresholds

    def _replicates(self) -> list[np.ndarray | None]:
        return [None] + list(self.weights)  # None: the evidence as it is (the point estimate)

    def object_maps(self, thresholds: np.ndarray, replicates: bool = True) -> np.ndarray:
        """(B+1)×2×101: P(distinct object | score) on a 0..1 grid, per
        replicate, for boxes named ([:, 0]) and boxes left ``unknown`` at
        ``thresholds`` ([:, 1]): at the same score, an unnamed box is more
        often debris. With ``SPLIT_UNKNOWN`` off, both rows are one fit.
        ``replicates=False``: the point estimate's map alone (1×2×101), what
        a redraw needs."""
        from plankton.model.prototypes import decide

        key = ("object", replicates, SPLIT_UNKNOWN, np.asarray(thresholds, np.float32).tobytes())
        if key not in self._cache:
            unknown = decide(self.cand_similarity, self.names, thresholds) == UNKNOWN if SPLIT_UNKNOWN else np.zeros(len(self.score), bool)
            y = self.matched.astype(float)
            out = []
            for w in self._replicates() if replicates else [None]:
                wt = np.ones(len(self.score)) if w is None else w[self.frame]
                both = isotonic(self.score, y, wt)
                out.append([isotonic(self.score[g], y[g], wt[g]) if g.sum() >= MIN_GROUP else both for g in (~unknown, unknown)])
            self._cache[key] = np.asarray(out)
        return self._cache[key]

    def confusions(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B+1)×(C+1)×(C+1) M: rows the C species and one for species the
        model lacks, columns the C labels and ``unknown``, each row summing
        to 1; and (B+1)×(C+1) the classes' share of the evidence (what
        ``pcc`` weighs by). Each species' row is shrunk towards the pooled
        pattern (named right, or left unknown, at the pooled rates): a
        species with a handful of validation objects is not defined by them."""
        from plankton.model.prototypes import decide

        key = ("M", np.asarray(thresholds, np.float32).tobytes())
        if key not in self._cache:
            C = len(self.names)
            col = {n: j for j, n in enumerate(self.names)} | {UNKNOWN: C}
            ok = (self.true >= 0) & (self.found >= 0)
            pred = np.array([col[n] for n in decide(self.pairs[ok], self.names, thresholds)], np.int64)
            novel = np.array([col[n] for n in _novel_labels(self.similarity[self.true >= 0], self.true[self.true >= 0], self.names, thresholds)], np.int64)
            out, priors = [], []
            for w in self._replicates():
                m = np.zeros((C + 1, C + 1))
                np.add.at(m, (self.true[ok], pred), 1.0 if w is None else w[self.gt_frame[ok]])
                n, right = m[:C].sum(1), np.diag(m)[:C]
                prior = np.append(n, 0.0) + PRIOR_PSEUDO
                kappa = shrink_strength(right, n, NAMING_SHRINK)
                left = m[:C, C].sum() / max(n.sum(), 1e-9)  # the pooled share left unknown
                m[np.arange(C), np.arange(C)] += kappa * (1 - left)
                m[:C, C] += kappa * left
                np.add.at(m[C], novel, 1.0 if w is None else w[self.gt_frame[self.true >= 0]])
                m[C, C] += NOVEL_SHRINK
                out.append(m / m.sum(1, keepdims=True))
                priors.append(prior / prior.sum())
            self._cache[key] = np.stack(out), np.stack(priors)
        return self._cache[key]

    def species_map(self, thresholds: np.ndarray) -> np.ndarray:
        """101: P(the name is right | similarity) on a 0..1 grid, over the
        objects the model names at ``thresholds``."""
        from plankton.model.prototypes import decide

        key = ("p", np.asarray(thresholds, np.float32).tobytes())
        if key not in self._cache:
            ok = (self.true >= 0) & (self.found >= 0)
            pred = decide(self.pairs[ok], self.names, thresholds)
            named = pred != UNKNOWN
            right = pred[named] == np.asarray(self.names, dtype=object)[self.true[ok][named]]
            self._cache[key] = isotonic(self.pairs[ok][named].max(1), right.astype(float))
        return self._cache[key]

    def recalls(self, det_conf: float) -> np.ndarray:
        """(B+1)×(C+1): each species' recall at ``det_conf`` (last: all
        species), shrunk towards the overall recall by the strength the
        species' spread sets (``shrink_strength``)."""
        key = ("r", float(det_conf))
        if key not in self._cache:
            C, out = len(self.names), []
            known = self.true >= 0
            for w in self._replicates():
                wt = np.ones(len(self.true)) if w is None else w[self.gt_frame]
                hit = (self.found >= det_conf) * wt
                overall = hit.sum() / max(wt.sum(), 1e-9)
                n, k = np.zeros(C), np.zeros(C)
                np.add.at(n, self.true[known], wt[known])
                np.add.at(k, self.true[known], hit[known])
                kappa = shrink_strength(k, n, RECALL_SHRINK)
                out.append(np.append((k + kappa * overall) / (n + kappa), overall))
            self._cache[key] = np.clip(np.stack(out), 1e-3, 1)
        return self._cache[key]


def _novel_labels(similarity: np.ndarray, true: np.ndarray, names: list[str], thresholds: np.ndarray) -> np.ndarray:
    """What each annotated object would be called if its species had no
    prototype (its column removed): the open-set simulation of a new species."""
    from plankton.model.prototypes import decide

    sim = np.array(similarity, np.float32, copy=True)
    sim[np.arange(len(true)), true] = -np.inf
    return decide(sim, names, thresholds)
