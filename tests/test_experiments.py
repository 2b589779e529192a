"""The scoring the issue-26 experiments share (``experiments.validation_folds``)
and the linear head's hybrid rule, on small made-up answers."""
from collections import Counter

import numpy as np

from experiments.linear_head import box_features, hybrid
from experiments.validation_folds import fold_rows, summarise


def _answers():
    rng = np.random.default_rng(0)
    frames = np.repeat(np.arange(20), 5)
    true = np.asarray(rng.choice(["a", "b", "c"], size=100), object)
    wrong = true.copy()
    swap = np.flatnonzero(true != "c")[::3]  # a and b named as each other; c always right
    wrong[swap] = np.where(true[swap] == "a", "b", "a")
    return true, {"right": true.copy(), "wrong": wrong}, frames


def test_every_frame_is_scored_once_per_seed():
    true, pred, frames = _answers()
    rows = fold_rows(true, pred, frames)
    assert len(rows) == 10 and {(r["seed"], r["fold"]) for r in rows} == {(s, k) for s in (0, 1) for k in range(5)}
    assert all(r["right"] == {"top1": 1.0, "f1_macro": 1.0} for r in rows)
    assert all(r["wrong"]["top1"] < 1 for r in rows)


def test_summary_counts_folds_won_and_bins_by_training_boxes():
    true, pred, frames = _answers()
    s = summarise(true, pred, fold_rows(true, pred, frames), Counter({"a": 2, "b": 20, "c": 200}), baseline="wrong")
    assert s["right"]["top1"] == [1.0, 0.0] and s["right"]["folds_won_lost_against_wrong"] == [10, 0]
    assert s["wrong"]["folds_won_lost_against_wrong"] == [0, 0]
    assert set(s["wrong"]["pooled_f1_by_training_boxes"]) == {"1-3", "10-49", ">=50"}
    assert s["wrong"]["pooled_f1_by_training_boxes"][">=50"] == 1.0  # c is never confused
    assert s["wrong"]["pooled"]["top1"] == 1 - len(np.flatnonzero(true != "c")[::3]) / 100


def test_hybrid_keeps_the_prototype_for_rare_species_only():
    support = np.array([2, 50, 8])
    proto, linear = np.array([0, 1, 2, 2]), np.array([1, 0, 1, 0])
    assert hybrid(proto, linear, support, 4).tolist() == [0, 0, 1, 0]
    assert hybrid(proto, linear, support, 10).tolist() == [0, 0, 2, 2]


def test_box_features_are_log_side_and_aspect():
    f = box_features([{"xyxy": [0, 0, 40, 10]}, {"xyxy": [5, 5, 25, 25]}])
    np.testing.assert_allclose(f, [[np.log(20), np.log(4)], [np.log(20), 0]], atol=1e-9)
