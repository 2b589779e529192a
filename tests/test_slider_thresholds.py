"""One rule for moving per-species thresholds with the global one
(``shifted_thresholds``): the same in the cascade, the metrics and the
app, never past 1, and bit for bit the old values at the model's default."""
from __future__ import annotations

import numpy as np
import pytest

from plankton.pipeline.cascade import FrameAnalysis
from plankton.model.identifier import IdentifierConfig
from plankton.artifact.manifest import DEFAULT_MODEL_DIR, read_config
from plankton.metrics import coverage_curve
from plankton.model.prototypes import SHIFT_KNEE, shifted_thresholds
from plankton.results import Detections


@pytest.fixture(scope="module")
def bundled():
    cfg = read_config(DEFAULT_MODEL_DIR, check_files=False)
    ident = IdentifierConfig.from_dict(cfg["identifier"], cfg["embedder"]["backbone"])
    names = list(cfg["prototypes"]["names"]) if "names" in cfg.get("prototypes", {}) else sorted(ident.class_thresholds)
    return ident, names


def test_the_default_is_unchanged(bundled):
    """Published figures hold: at the default each class's threshold is the
    old ``global + offset`` exactly (float32), i.e. its configured value."""
    ident, names = bundled
    off = ident.offsets(names)
    old = ident.cls_conf + off  # the rule before issue 28
    new = shifted_thresholds(ident.cls_conf, off)
    assert new.dtype == np.float32 and np.array_equal(new, old)
    own = {n: t for n, t in zip(names, new) if n in ident.class_thresholds}
    assert own and all(abs(float(t) - ident.class_thresholds[n]) < 1e-6 for n, t in own.items())


def test_no_threshold_passes_1_at_any_slider_position(bundled):
    ident, names = bundled
    off = ident.offsets(names)
    assert off.max() > 0.2  # this model has species far stricter than the global threshold (Microcystis +0.245)
    grid = np.round(np.linspace(0, 1, 101), 2)
    table = np.stack([shifted_thresholds(g, off) for g in grid])
    assert table.max() <= 1.0 and table.min() >= 0.0
    assert (table[:-1] < 1.0).all(), "a species became impossible before the slider reached 1"
    assert (np.diff(table, axis=0) >= 0).all()  # moving the slider up never lowers a threshold
    plain = off == 0
    assert np.array_equal(table[:, plain], np.repeat(grid[:, None], plain.sum(), 1).astype(np.float32))  # the global one is the slider
    # the example: Oscillatoria at a global 0.85 was 1.013 under the plain sum
    osc = names.index("Oscillatoria sp")
    assert ident.cls_conf + off[osc] + (0.85 - ident.cls_conf) > 1.0
    assert SHIFT_KNEE < shifted_thresholds(0.85, off)[osc] < 1.0


def test_lower_side_and_scalars():
    assert shifted_thresholds(0.0, [-0.2, 0.0, 0.2]).tolist() == pytest.approx([0.0, 0.0, 0.2])
    assert shifted_thresholds(0.5, 0.0).tolist() == [0.5]
    low = shifted_thresholds(0.1, [-0.3])[0]
    assert 0.0 < low < 1 - SHIFT_KNEE


def test_cascade_and_metrics_follow_the_same_rule():
    sim = np.array([[0.99, 0.2], [0.2, 0.95]], np.float32)
    offsets = np.array([0.3, 0.0], np.float32)  # class a is much stricter than the global threshold
    a = FrameAnalysis("f", 10, 10, Detections(np.array([[0, 0, 1, 1], [2, 2, 3, 3]], np.float32), np.array([0.9, 0.9], np.float32)),
                      np.zeros((2, 4), np.float32), sim, ["a", "b"], 0.05, offsets)
    assert np.array_equal(a.thresholds(0.9), shifted_thresholds(0.9, offsets))
    species = [o.species for o in a.resolve(0.05, 0.9).objects]
    assert species == ["a", "b"]  # 0.99 is still enough for class a: under the plain sum its threshold was 1.2
    rows = coverage_curve(np.array(["a", "b"], dtype=object), sim, ["a", "b"], thresholds=[0.9], offsets=offsets)
    assert rows[0]["coverage"] == 1.0
