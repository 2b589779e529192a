"""From boxes to a sample: sizes in micrometres, counts per frame, and
concentrations per millilitre with exact Poisson intervals. Pure functions.

Sizes are box-based estimates: ``width_um`` and ``height_um`` are the box's
sides, and ``esd_um`` is the equivalent spherical diameter of the ellipse
inscribed in the box (the diameter of the circle of the same area, √(w·h)).
They are only as good as the boxes, and only as right as the scale given:
without a scale every size stays empty; nothing is guessed.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from plankton.results import UNKNOWN, FrameResult


@dataclass(frozen=True)
class Sample:
    """How frames relate to the water they show. um_per_px: micrometres per
    pixel of the frames (the optical scale); volume_ul: microlitres of
    sample imaged in each frame. Either may be None (unknown)."""

    um_per_px: float | None = None
    volume_ul: float | None = None

    def __post_init__(self):
        for name in ("um_per_px", "volume_ul"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number, not {v!r}")


def box_sizes_um(xyxy: np.ndarray, um_per_px: float | None) -> np.ndarray:
    """N×4 xyxy pixel boxes → N×3 float (width_um, height_um, esd_um); all
    NaN without a scale."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    if um_per_px is None:
        return np.full((len(b), 3), np.nan)
    w, h = (b[:, 2] - b[:, 0]) * um_per_px, (b[:, 3] - b[:, 1]) * um_per_px
    return np.stack([w, h, np.sqrt(np.clip(w, 0, None) * np.clip(h, 0, None))], axis=1)


def poisson_interval(count: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) two-sided interval for the mean of a Poisson count:
    (χ²(α/2; 2k)/2, χ²(1−α/2; 2k+2)/2), with 0 as the lower end for k = 0."""
    from scipy.stats import chi2

    if count < 0:
        raise ValueError(f"a count cannot be negative ({count})")
    alpha = 1 - confidence
    low = 0.0 if count == 0 else float(chi2.ppf(alpha / 2, 2 * count) / 2)
    return low, float(chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2)


def species_columns(frames: list[FrameResult], names: list[str] | None = None) -> list[str]:
    """Column order for per-species tables: ``names`` first (the model's
    species), then any other species that occur, then ``unknown``."""
    seen = Counter(o.species for f in frames for o in f.objects)
    order = [n for n in (names or []) if n != UNKNOWN]
    order += sorted(s for s in seen if s not in order and s != UNKNOWN)
    return order + [UNKNOWN]


def counts_rows(frames: list[FrameResult], columns: list[str], expected: list[dict] | None = None) -> list[dict]:
    """One row per frame: ``image``, a count per species in ``columns``
    (unknown included) and ``total``, which equals the frame's objects.
    ``expected``: per frame, the estimated objects per species
    (``CountModel.expected``), added as ``<species>_est`` and ``total_est``."""
    rows = []
    for k, f in enumerate(frames):
        c = Counter(o.species for o in f.objects)
        row = {"image": f.image, **{s: c.get(s, 0) for s in columns}, "total": len(f.objects)}
        if expected is not None:
            row |= {f"{s}_est": f"{expected[k].get(s, 0.0):.3f}" for s in [*columns, "total"]}
        rows.append(row)
    return rows


def concentration_rows(frames: list[FrameResult], sample: Sample, confidence: float = 0.95, estimate=None) -> list[dict]:
    """One row per species present (unknown last) and a ``total`` row: the
    count over all frames, the volume they show (frames × volume_ul, in
    ml), cells per ml, and the exact Poisson interval of that rate.
    ``estimate`` (a ``quantify.CountEstimate`` over the same frames) adds
    ``count_est`` and its interval and the same per ml; a species it finds
    (estimate ≥ 0.5) gets a row even where none was counted."""
    if sample.volume_ul is None:
        raise ValueError("concentrations need the volume imaged per frame (volume_ul)")
    volume_ml = len(frames) * sample.volume_ul / 1000.0
    counts = Counter(o.species for f in frames for o in f.objects)
    est = {} if estimate is None else {n: estimate.row(n) for n in estimate.species}
    present = {s for s in counts if s != UNKNOWN} | {s for s, r in est.items() if s not in (UNKNOWN, "total") and r["count_est"] >= 0.5}
    order = sorted(present, key=lambda s: (-counts.get(s, 0), -est.get(s, {}).get("count_est", 0), s))
    order += [UNKNOWN] if UNKNOWN in counts or est.get(UNKNOWN, {}).get("count_est", 0) >= 0.5 else []
    rows = []
    for species, n in [(s, counts.get(s, 0)) for s in order] + [("total", sum(counts.values()))]:
        low, high = poisson_interval(n, confidence)
        row = {"species": species, "count": n, "volume_ml": volume_ml, "cells_per_ml": _per_ml(n, volume_ml),
               "cells_per_ml_low": _per_ml(low, volume_ml), "cells_per_ml_high": _per_ml(high, volume_ml)}
        if species in est:
            e = est[species]
            row |= {k: e[k] for k in ESTIMATE_COLUMNS} | {k.replace("count", "cells_per_ml"): _per_ml(e[k], volume_ml) for k in ESTIMATE_COLUMNS}
        rows.append(row)
    return rows


ESTIMATE_COLUMNS = ("count_est", "count_est_low", "count_est_high")


def _per_ml(n: float, volume_ml: float) -> float:
    return n / volume_ml if volume_ml else float("nan")
