"""Counts that match a careful count: quantification, not classify-and-count.

A raw count adds up every box shown. It is off in three ways: some boxes
are not a distinct annotated object (debris, a filament's second piece),
some objects are missed, and some are named as another species or left
``unknown``. The estimate corrects each from evidence the model keeps
(``CountEvidence``: its run on validation frames it never trained on):

1. each box's probability of being a distinct object, from its detector
   score (isotonic regression);
2. each species' recall at the detector threshold in use;
3. the confusions between species and ``unknown``, from M[s, j] = P(label
   j | species s), with a row for species the model lacks (each species'
   prototype removed in turn). ``pcc`` (what the bundled model ships)
   shares each label's expected objects by P(species | label); ``acc``
   (adjusted classify-and-count, Forman 2008) solves q ≈ Mᵀn for n ≥ 0 by
   non-negative least squares; ``em`` is its maximum-likelihood form
   (Saerens et al. 2002). docs/counting.md says why pcc ships.

Intervals: the same estimate under bootstrap resamples of the evidence's
frames (the calibration's own uncertainty), each mixed with the Poisson
noise of counting (a Jeffreys Gamma posterior), 2.5 and 97.5 percentiles.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from plankton.results import NOT_PLANKTON, UNKNOWN, FrameResult

EM_STEPS = 200
SPLIT_UNKNOWN = True  # separate object maps for named and unnamed boxes
FIT_BINS = 1001  # detector scores have about three decimals' worth of resolution
MIN_GROUP = 30  # fewer boxes than this in a group: it shares the pooled map
SHRINK = 2.0  # pseudo-objects pulling a thinly evidenced species towards "named right" / the overall recall
METHODS = ("cc", "acc", "pcc", "em")  # cc: expected count by label, corrected for misses only


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


@dataclass
class CountEvidence:
    """A model's run on validation frames, kept in the artifact
    (``calibration.safetensors``). names: C species. Candidates (N, at the
    detector floor, fragments removed): ``score``, ``cand_similarity``
    (N×C), ``owner`` (the annotated object it is, -1 for none: a false box
    or a second box on one object), ``frame``. Annotated objects (K):
    ``true`` (species index, -1 without a prototype), ``similarity`` (K×C,
    on their annotated boxes), ``gt_frame``. ``weights``: B×F bootstrap
    multiplicities of the F frames. ``method``: how ``estimate_counts``
    solves (see ``METHODS``)."""

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

        with safe_open(str(path), framework="numpy") as f:
            meta, t = f.metadata() or {}, {k: f.get_tensor(k) for k in f.keys()}
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
        """The evidence for a model whose species are ``names``: a species
        enrolled since calibration has no evidence (its column is never the
        most similar, and it is taken as named right and found as often as
        any); one removed since loses its objects' rows."""
        if names == self.names:
            return self
        col = {n: j for j, n in enumerate(self.names)}

        def cols(sim):
            out = np.full((len(sim), len(names)), -1.0, np.float32)
            for j, n in enumerate(names):
                if n in col:
                    out[:, j] = sim[:, col[n]]
            return out

        index = {n: j for j, n in enumerate(names)}
        true = np.array([index.get(self.names[t], -1) if t >= 0 else -1 for t in self.true], np.int64)
        return CountEvidence(list(names), self.score, cols(self.cand_similarity), self.owner, self.frame, true, cols(self.similarity),
                             self.gt_frame, self.weights, self.method)

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
        """(B+1)×(C+1)×(C+1) M: rows the C species and one for species the model lacks, columns the C
        labels and ``unknown``, each row summing to 1; and (B+1)×(C+1) the
        classes' share of the evidence (what ``pcc`` weighs by)."""
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
                m[np.arange(C), np.arange(C)] += SHRINK  # a species seen a few times is assumed named right
                np.add.at(m[C], novel, 1.0 if w is None else w[self.gt_frame[self.true >= 0]])
                m[C, C] += SHRINK
                out.append(m / m.sum(1, keepdims=True))
                prior = m.sum(1)
                prior[C] = SHRINK  # new species are rare: the simulation's size says nothing of how rare
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
        species), shrunk towards the overall recall where evidence is thin."""
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
                out.append(np.append((k + SHRINK * overall) / (n + SHRINK), overall))
            self._cache[key] = np.clip(np.stack(out), 1e-3, 1)
        return self._cache[key]


def _novel_labels(similarity: np.ndarray, true: np.ndarray, names: list[str], thresholds: np.ndarray) -> np.ndarray:
    """What each annotated object would be called if its species had no
    prototype (its column removed): the open-set simulation of a new species."""
    from plankton.model.prototypes import decide

    sim = np.array(similarity, np.float32, copy=True)
    sim[np.arange(len(true)), true] = -np.inf
    return decide(sim, names, thresholds)


def bootstrap_weights(frames: int, replicates: int = 200, seed: int = 0) -> np.ndarray:
    """B×F multiplicities: each replicate draws F frames with replacement."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, frames, frames), minlength=frames) for _ in range(replicates)]).astype(np.float32) \
        if frames else np.zeros((replicates, 0), np.float32)


@dataclass(frozen=True)
class CountEstimate:
    """Per species (the model's order, then ``unknown`` and ``total``): raw
    counts, the estimate and its 95% interval, in objects over the frames
    given. The ``unknown`` estimate is of objects of species the model
    lacks, not of the boxes it left unnamed."""

    species: list[str]
    count: np.ndarray
    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray

    def row(self, name: str) -> dict:
        k = self.species.index(name)
        return {"count": int(self.count[k]), "count_est": float(self.estimate[k]), "count_est_low": float(self.low[k]), "count_est_high": float(self.high[k])}


def object_probability(evidence: CountEvidence, score, unknown, thresholds: np.ndarray, replicate: int = 0) -> np.ndarray:
    """Detector scores, and whether each box was left ``unknown`` at
    ``thresholds`` → P(the box is a distinct annotated object)."""
    maps, grid = evidence.object_maps(thresholds, replicate > 0)[replicate], np.linspace(0, 1, 101)
    score = np.asarray(score, np.float64)
    return np.where(np.asarray(unknown, bool), np.interp(score, grid, maps[1]), np.interp(score, grid, maps[0]))


def species_probability(evidence: CountEvidence, similarity, thresholds: np.ndarray) -> np.ndarray:
    """Similarities of named objects → P(the name is right), at the
    per-class ``thresholds`` in use (they decide which objects are named)."""
    return np.interp(np.asarray(similarity, np.float64), np.linspace(0, 1, 101), evidence.species_map(thresholds))


def estimate_counts(evidence: CountEvidence, species: list[str], score, corrected, thresholds: np.ndarray, det_conf: float,
                    confidence: float = 0.95, draws: int = 20, seed: int = 0, interval: bool = True) -> CountEstimate:
    """N shown objects (their labels, detector scores, and whether a person
    set the label) → estimated objects per species over the frames they
    came from. ``thresholds``: the C per-class similarity thresholds in use;
    ``det_conf``: the detector threshold the objects were kept at."""
    names, C = evidence.names, len(evidence.names)
    col = {n: j for j, n in enumerate(names)} | {UNKNOWN: C}
    species, corrected = np.asarray(species, dtype=object), np.asarray(corrected, bool)
    cols = np.array([col.get(s, C) for s in species], np.int64)
    raw = np.bincount(cols, minlength=C + 1).astype(float)
    sure = np.bincount(cols[corrected], minlength=C + 1).astype(float)  # a person's label: a distinct object of that species
    sure[C] = 0  # (a corrected "unknown" cannot be; ``not plankton`` objects are not shown at all)
    (Ms, priors), rs = evidence.confusions(thresholds), evidence.recalls(det_conf)
    s, unsure = np.asarray(score, np.float64)[~corrected], cols[~corrected]
    ests = []
    for b in range(len(Ms) if interval else 1):
        q = np.bincount(unsure, weights=object_probability(evidence, s, unsure == C, thresholds, b), minlength=C + 1)
        n = _solve(Ms[b], priors[b], q, evidence.method)
        recall = np.append(rs[b][:C], rs[b][C])
        est = n / recall + sure
        est[[j for j, n in enumerate(names) if n == NOT_PLANKTON]] = 0  # objects a person marked as not plankton are no organism
        ests.append(est)
    point, reps = ests[0], np.stack(ests[1:]) if len(ests) > 1 else np.stack(ests)
    rng = np.random.default_rng(seed)
    lam = rng.gamma(np.repeat(reps, draws, axis=0) + 0.5)  # Poisson noise around each replicate's estimate
    alpha = (1 - confidence) / 2
    low, high = np.quantile(lam, alpha, axis=0), np.quantile(lam, 1 - alpha, axis=0)
    total = rng.gamma(np.repeat(reps.sum(1), draws) + 0.5)
    point, low, high = np.append(point, point.sum()), np.append(low, np.quantile(total, alpha)), np.append(high, np.quantile(total, 1 - alpha))
    return CountEstimate(list(names) + [UNKNOWN, "total"], np.append(raw, raw.sum()), point, np.minimum(low, point), np.maximum(high, point))


def _solve(M: np.ndarray, prior: np.ndarray, q: np.ndarray, method: str) -> np.ndarray:
    """Objects per true class (C species, then species the model lacks) behind q, the expected
    objects per label, given M[s, j] = P(label j | class s) and the
    evidence's class shares ``prior``."""
    if method == "cc":
        return q
    if method == "acc":
        from scipy.optimize import nnls

        return nnls(M.T, q)[0]
    if method == "pcc":  # each label's objects shared out by P(class | label) under the evidence's own mix
        joint = M * prior[:, None]
        post = joint / np.clip(joint.sum(0, keepdims=True), 1e-12, None)
        return post @ q
    if method == "em":  # pcc whose class shares are re-estimated from the sample itself (Saerens et al. 2002): ML under M
        n = None
        for _ in range(EM_STEPS):
            joint = M * prior[:, None]
            n = (joint / np.clip(joint.sum(0, keepdims=True), 1e-12, None)) @ q
            prior = (n + 1e-9) / (n.sum() + 1e-9 * len(n))
        return n
    raise ValueError(f"unknown quantification method {method!r} (one of {', '.join(METHODS)})")


@dataclass(frozen=True)
class CountModel:
    """A model's count calibration at the thresholds of a run: the one
    place the CLI, the app and the evaluation turn shown objects into
    probabilities and estimated counts."""

    evidence: CountEvidence
    thresholds: np.ndarray  # C per-class similarity thresholds in use
    det_conf: float  # the detector threshold the objects were kept at

    def _objects(self, frames: list[FrameResult]):
        objs = [o for f in frames for o in f.objects]
        return [o.species for o in objs], [o.det_score for o in objs], [o.corrected for o in objs]

    def estimate(self, frames: list[FrameResult], confidence: float = 0.95) -> CountEstimate:
        """Estimated objects per species over ``frames``, with intervals."""
        return estimate_counts(self.evidence, *self._objects(frames), self.thresholds, self.det_conf, confidence)

    def expected(self, frame: FrameResult) -> dict[str, float]:
        """One frame's estimated objects per species (no interval), unknown and total included."""
        est = estimate_counts(self.evidence, *self._objects([frame]), self.thresholds, self.det_conf, interval=False)
        return dict(zip(est.species, est.estimate.tolist()))

    def probabilities(self, frame: FrameResult) -> tuple[np.ndarray, np.ndarray]:
        """Per object: P(a distinct object) and P(its name is right) (NaN
        for ``unknown``); 1 and 1 for a label a person set."""
        score = np.array([o.det_score for o in frame.objects], np.float64)
        sim = np.array([o.similarity for o in frame.objects], np.float64)
        sure = np.array([o.corrected for o in frame.objects], bool)
        unknown = np.array([o.species == UNKNOWN for o in frame.objects], bool)
        p_obj = np.where(sure, 1.0, object_probability(self.evidence, score, unknown, self.thresholds))
        p_sp = np.where(sure, 1.0, np.where(unknown, np.nan, species_probability(self.evidence, sim, self.thresholds)))
        return p_obj, p_sp
