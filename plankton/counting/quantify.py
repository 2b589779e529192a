"""Counts that match a careful count: quantification, not classify-and-count.

A raw count adds up every box shown. It is off in three ways: some boxes
are not a distinct annotated object (debris, a filament's second piece),
some objects are missed, and some are named as another species or left
``unknown``. The estimate corrects each from evidence the model keeps
(``calibration.CountEvidence``: its run on validation frames it never
trained on):

1. each box's probability of being a distinct object, from its detector
   score (isotonic regression);
2. each species' recall at the detector threshold in use;
3. the confusions between species and ``unknown``, from M[s, j] = P(label
   j | species s), with a row for species the model lacks (each species'
   prototype removed in turn). ``pcc`` shares each label's expected
   objects by P(species | label) under the evidence's mix; ``adapt``
   (what ships) does the same under a mix re-estimated from the sample
   itself (the EM of Saerens et al. 2002, held by a few pseudo-objects of
   the evidence's mix); ``em`` is that EM unheld; ``acc`` (adjusted
   classify-and-count, Forman 2008) solves q ≈ Mᵀn for n ≥ 0 by
   non-negative least squares. docs/counting.md says why ``adapt`` ships.

Only classes the sample shows a box of can receive objects (``support``):
a species no box is named as inherits nothing from its look-alikes, and
species the model lacks only receive objects when boxes are left unknown.

Intervals: the same estimate under bootstrap resamples of the evidence's
frames (the calibration's own uncertainty), each mixed with the Poisson
noise of the objects found (a Jeffreys Gamma posterior) scaled up by the
replicate's recall, 2.5 and 97.5 percentiles. Counting noise is drawn on
what was found, not on the recall-corrected estimate: where recall is low
it is wider, as it should be.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plankton.results import NOT_PLANKTON, UNKNOWN, FrameResult
from plankton.counting.calibration import METHODS, CountEvidence, bootstrap_weights, isotonic  # noqa: F401  (the names callers import from here)

EM_STEPS = 200
ADAPT_PSEUDO = 2.0  # pseudo-objects of the evidence's mix that hold the sample's re-estimated mix (adapt)


@dataclass(frozen=True)
class CountEstimate:
    """Per species (the model's order, then names the model lacks that the
    objects carry, then ``unknown`` and ``total``): raw counts, the estimate
    and its 95% interval, in objects over the frames given. The ``unknown``
    estimate is of objects of species the model lacks, not of the boxes it
    left unnamed."""

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


def widened(evidence: CountEvidence, thresholds: np.ndarray, labels, known=()) -> tuple[CountEvidence, np.ndarray]:
    """The evidence and thresholds for every name the objects carry or the
    caller knows (``known``: a session's enrolled species): a name outside
    the evidence's (a correction to a new name, an enrolled species) gets a
    column with no evidence, so it is taken as named right and found at the
    pooled recall, instead of falling into ``unknown``."""
    extra = [n for n in dict.fromkeys([*known, *labels]) if n not in evidence.names and n not in (UNKNOWN, NOT_PLANKTON)]
    if not extra:
        return evidence, np.asarray(thresholds, np.float32)
    # the new columns' similarities are -1 everywhere in the evidence: no threshold makes them the decision there
    return evidence.for_names(evidence.names + extra), np.append(np.asarray(thresholds, np.float32), np.ones(len(extra), np.float32))


def estimate_counts(evidence: CountEvidence, species: list[str], score, corrected, thresholds: np.ndarray, det_conf: float,
                    confidence: float = 0.95, draws: int = 20, seed: int = 0, interval: bool = True, known=(), support: bool = True) -> CountEstimate:
    """N shown objects (their labels, detector scores, and whether a person
    set the label) → estimated objects per species over the frames they
    came from. ``thresholds``: the C per-class similarity thresholds in use;
    ``det_conf``: the detector threshold the objects were kept at;
    ``known``: names that get a row even with no object (a session's
    enrolled species); ``support``: only classes with a box in the sample
    receive objects (off only to measure what it does)."""
    species, corrected = np.asarray(species, dtype=object), np.asarray(corrected, bool)
    evidence, thresholds = widened(evidence, thresholds, species.tolist(), known)
    names, C = evidence.names, len(evidence.names)
    col = {n: j for j, n in enumerate(names)} | {UNKNOWN: C}
    cols = np.array([col.get(s, C) for s in species], np.int64)
    raw = np.bincount(cols, minlength=C + 1).astype(float)
    sure = np.bincount(cols[corrected], minlength=C + 1).astype(float)  # a person's label: a distinct object of that species
    sure[C] = 0  # (a corrected "unknown" cannot be; ``not plankton`` objects are not shown at all)
    (Ms, priors), rs = evidence.confusions(thresholds), evidence.recalls(det_conf)
    s, unsure = np.asarray(score, np.float64)[~corrected], cols[~corrected]
    allowed = np.bincount(unsure, minlength=C + 1) > 0 if support else np.ones(C + 1, bool)
    organism = np.array([n != NOT_PLANKTON for n in names] + [True])  # objects a person marked as not plankton are no organism
    found, ests = [], []
    for b in range(len(Ms) if interval else 1):
        q = np.bincount(unsure, weights=object_probability(evidence, s, unsure == C, thresholds, b), minlength=C + 1)
        n = (_solve(Ms[b], priors[b], q, evidence.method, allowed) + sure) * organism
        found.append(n)
        ests.append(n / rs[b])
    point = ests[0]
    got, inv = (np.stack(found[1:]), 1 / rs[1:]) if len(ests) > 1 else (np.stack(found), 1 / rs[:1])
    rng = np.random.default_rng(seed)
    lam = rng.gamma(np.repeat(got, draws, axis=0) + 0.5) * np.repeat(inv, draws, axis=0)  # counting noise on the objects found, scaled up for misses
    alpha = (1 - confidence) / 2
    low, high = np.quantile(lam, alpha, axis=0), np.quantile(lam, 1 - alpha, axis=0)
    low[found[0] < 0.01] = 0.0  # the Jeffreys interval's convention: nothing found, the lower limit is 0 (Brown, Cai & DasGupta 2001)
    g, est = got.sum(1), (got * inv).sum(1)
    total = rng.gamma(np.repeat(g, draws) + 0.5) * np.repeat(np.where(g > 0, est / np.maximum(g, 1e-12), inv[:, -1]), draws)
    total_low = 0.0 if found[0].sum() < 0.01 else np.quantile(total, alpha)  # the same convention for the total
    point, low, high = np.append(point, point.sum()), np.append(low, total_low), np.append(high, np.quantile(total, 1 - alpha))
    return CountEstimate(list(names) + [UNKNOWN, "total"], np.append(raw, raw.sum()), point, low, high)


def _solve(M: np.ndarray, prior: np.ndarray, q: np.ndarray, method: str, allowed: np.ndarray | None = None) -> np.ndarray:
    """Objects per true class (C species, then species the model lacks) behind q, the expected
    objects per label, given M[s, j] = P(label j | class s), the
    evidence's class shares ``prior``, and the classes ``allowed`` to receive objects."""
    allowed = np.ones(len(q), bool) if allowed is None else allowed
    if method == "cc":
        return q
    if not allowed.any():  # nothing unsure was shown
        return np.zeros(len(q))
    if method == "acc":
        from scipy.optimize import nnls

        n = np.zeros(len(q))
        n[allowed] = nnls(M[allowed].T, q)[0]
        return n
    prior = np.where(allowed, prior, 0.0)
    if method == "pcc":  # each label's objects shared out by P(class | label) under the evidence's own mix
        return _share(M, prior, q)
    if method in ("em", "adapt"):  # the mix re-estimated from the sample itself (Saerens et al. 2002)
        held = ADAPT_PSEUDO * prior / max(prior.sum(), 1e-12) if method == "adapt" else 0.0
        mix, n = prior, q
        for _ in range(EM_STEPS):
            n = _share(M, mix, q)
            mix = np.where(allowed, n + held + 1e-9, 0.0)
        return n
    raise ValueError(f"unknown quantification method {method!r} (one of {', '.join(METHODS)})")


def _share(M: np.ndarray, mix: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Each label's expected objects shared out by P(class | label) ∝ M[class, label] · mix[class]."""
    joint = M * mix[:, None]
    return (joint / np.clip(joint.sum(0, keepdims=True), 1e-12, None)) @ q


@dataclass(frozen=True)
class CountModel:
    """A model's count calibration at the thresholds of a run: the one
    place the CLI, the app and the evaluation turn shown objects into
    probabilities and estimated counts. ``known``: names beyond the
    model's that get an estimate (a session's enrolled species)."""

    evidence: CountEvidence
    thresholds: np.ndarray  # C per-class similarity thresholds in use
    det_conf: float  # the detector threshold the objects were kept at
    known: tuple[str, ...] = ()

    def _objects(self, frames: list[FrameResult]):
        objs = [o for f in frames for o in f.objects]
        return [o.species for o in objs], [o.det_score for o in objs], [o.corrected for o in objs]

    def estimate(self, frames: list[FrameResult], confidence: float = 0.95) -> CountEstimate:
        """Estimated objects per species over ``frames``, with intervals."""
        return estimate_counts(self.evidence, *self._objects(frames), self.thresholds, self.det_conf, confidence, known=self.known)

    def expected(self, frame: FrameResult) -> dict[str, float]:
        """One frame's estimated objects per species (no interval), unknown and total included."""
        est = estimate_counts(self.evidence, *self._objects([frame]), self.thresholds, self.det_conf, interval=False, known=self.known)
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
