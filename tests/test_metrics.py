"""plankton.metrics against values computed by hand on a six-object example."""
import math

import numpy as np
import pytest

from plankton.metrics import coverage_curve, per_class_table, predict_labels, topk_accuracy
from plankton.results import UNKNOWN

NAMES = ["a", "b", "c"]
# true species, similarity to (a, b, c)        → prediction at threshold 0.5
TRUE = np.array(["a", "a", "b", "b", "c", "x"], dtype=object)  # "x" has no prototype
SIM = np.array([
    [0.9, 0.2, 0.1],  # a  right
    [0.6, 0.8, 0.1],  # b  wrong (a)
    [0.1, 0.7, 0.3],  # b  right
    [0.1, 0.3, 0.2],  # unknown (b is top-1 but below threshold)
    [0.6, 0.1, 0.5],  # a  wrong (c)
    [0.2, 0.1, 0.9],  # c  wrong (x)
], np.float32)


def test_predict_labels():
    assert list(predict_labels(SIM, NAMES, 0.5)) == ["a", "b", "b", UNKNOWN, "a", "c"]
    assert list(predict_labels(SIM, NAMES, 0.0)) == ["a", "b", "b", "b", "a", "c"]
    assert list(predict_labels(SIM, NAMES, 0.8)) == ["a", "b", UNKNOWN, UNKNOWN, UNKNOWN, "c"]  # >= threshold is named
    assert list(predict_labels(SIM, NAMES, 1.01)) == [UNKNOWN] * 6
    assert predict_labels(np.zeros((0, 3)), NAMES, 0.5).shape == (0,)


def test_predict_labels_without_classes():
    assert list(predict_labels(np.zeros((2, 0)), [], 0.5)) == [UNKNOWN, UNKNOWN]


def test_per_class_table_hand_computed():
    rows = {r["species"]: r for r in per_class_table(TRUE, SIM, NAMES, 0.5)}
    assert list(rows) == ["a", "b", "c", "x", "macro avg", "weighted avg"]
    expected = {  # precision, recall, f1, support
        "a": (1 / 2, 1 / 2, 1 / 2, 2),  # predicted a: rows 0, 4; true a: rows 0, 1
        "b": (1 / 2, 1 / 2, 1 / 2, 2),  # predicted b: rows 1, 2; true b: rows 2, 3 (3 is unknown → a miss)
        "c": (0.0, 0.0, 0.0, 1),  # predicted c: row 5 (an x)
        "x": (0.0, 0.0, 0.0, 1),  # no prototype: never right
        "macro avg": (0.25, 0.25, 0.25, 6),
        "weighted avg": (1 / 3, 1 / 3, 1 / 3, 6),
    }
    for species, (p, r, f, s) in expected.items():
        row = rows[species]
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f)), species
        assert row["support"] == s


def test_per_class_table_all_right_and_empty():
    sim = np.eye(3, dtype=np.float32)
    rows = per_class_table(np.array(NAMES, dtype=object), sim, NAMES, 0.5)
    assert all(r["precision"] == r["recall"] == r["f1"] == 1.0 for r in rows)
    assert per_class_table(np.array([], dtype=object), np.zeros((0, 3)), NAMES, 0.5) == []
    # Species without objects get no row.
    rows = per_class_table(np.array(["b"], dtype=object), np.array([[0.1, 0.9, 0.0]]), NAMES, 0.5)
    assert [r["species"] for r in rows] == ["b", "macro avg", "weighted avg"]


def test_topk_accuracy():
    assert topk_accuracy(TRUE, SIM, NAMES, 1) == pytest.approx(3 / 6)  # rows 0, 2, 3 (threshold ignored)
    assert topk_accuracy(TRUE, SIM, NAMES, 2) == pytest.approx(5 / 6)  # + rows 1, 4; x never
    assert topk_accuracy(TRUE, SIM, NAMES, 3) == pytest.approx(5 / 6)
    assert math.isnan(topk_accuracy(np.array([], dtype=object), np.zeros((0, 3)), NAMES, 1))


def test_coverage_curve_hand_computed():
    rows = coverage_curve(TRUE, SIM, NAMES, thresholds=[0.0, 0.5, 0.65, 0.85, 0.95])
    assert [r["threshold"] for r in rows] == [0.0, 0.5, 0.65, 0.85, 0.95]
    assert [r["coverage"] for r in rows] == pytest.approx([1, 5 / 6, 4 / 6, 2 / 6, 0])
    assert [r["accuracy"] for r in rows[:4]] == pytest.approx([3 / 6, 2 / 5, 2 / 4, 1 / 2])
    assert math.isnan(rows[4]["accuracy"])  # nothing named


def test_coverage_falls_as_threshold_rises():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.2, 1, (200, 5)).astype(np.float32)
    true = np.array(["s0", "s1", "s2", "s3", "s4", "other"], dtype=object)[rng.integers(0, 6, 200)]
    rows = coverage_curve(true, sim, [f"s{i}" for i in range(5)])
    assert len(rows) == 41 and rows[0]["threshold"] == 0.0 and rows[-1]["threshold"] == 1.0
    coverage = [r["coverage"] for r in rows]
    assert all(b <= a for a, b in zip(coverage, coverage[1:]))
    assert coverage[0] == 1.0 and coverage[-1] < 0.05
    # Each row against a direct computation: named = best similarity >= threshold,
    # accuracy = share of the named whose best class is the true one.
    best_name = np.array([f"s{i}" for i in range(5)], dtype=object)[sim.argmax(1)]
    for r in rows:
        named = sim.max(1) >= np.float32(r["threshold"])
        assert r["coverage"] == pytest.approx(named.mean()), r["threshold"]
        if named.any():
            assert r["accuracy"] == pytest.approx(np.mean(best_name[named] == true[named])), r["threshold"]
        else:
            assert math.isnan(r["accuracy"])
    assert sum(not math.isnan(r["accuracy"]) for r in rows) >= 30  # most rows have named objects to score


def test_open_set_counts_a_removed_species_objects_left_unknown():
    from plankton.metrics import open_set

    names = ["a", "b", "c"]
    sim = np.array([[0.9, 0.7, 0.1],   # a: without "a", b at 0.7 names it (threshold 0.5)
                    [0.9, 0.2, 0.3],   # a: without "a", nothing reaches 0.5 → unknown
                    [0.1, 0.8, 0.6],   # b: without "b", c at 0.6 but c's own threshold is 0.7 → unknown
                    [0.0, 0.0, 0.0]], np.float32)  # "x" has no prototype: not a species the test can remove
    r = open_set(["a", "a", "b", "x"], sim, names, [0.5, 0.5, 0.7])
    assert [(p["species"], p["unknown_rate"], p["objects"]) for p in r["per_species"]] == [("a", 0.5, 2), ("b", 1.0, 1)]
    assert r["unknown_rate_macro"] == pytest.approx(0.75) and r["unknown_rate_weighted"] == pytest.approx(2 / 3)
    assert open_set([], np.zeros((0, 3)), names, 0.5)["unknown_rate_macro"] is None
