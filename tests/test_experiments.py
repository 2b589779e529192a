"""The scoring the issue-26 experiments share (``experiments.validation_folds``),
the linear head's hybrid rule, and ``experiments.cv_heads`` on a made-up
cv_grid folder."""
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


def _grid(tmp_path, folds=2, frames=40):
    """A cv_grid folder whose embeddings a linear head separates and the
    nearest mean prototype cannot: species 0 has two modes at ±60° whose
    mean points at species 1; species 2 is rare (3 boxes per training fold)."""
    import json

    rng = np.random.default_rng(0)
    modes = {0: [(0.5, 0.866, 0), (0.5, -0.866, 0)], 1: [(1, 0, 0)], 2: [(0, 0, 1)]}
    ann, frame, label = [], [], []
    for f in range(frames):
        for c in (0, 0, 1, 1) + ((2,) if f % 10 < 2 else ()):
            ann.append(len(ann)), frame.append(f), label.append(c)
    label = np.array(label)
    e = np.array([modes[c][rng.integers(len(modes[c]))] for c in label], float) + rng.normal(0, 0.03, (len(label), 3))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    (tmp_path / "folds" / "fold0").mkdir(parents=True)
    (tmp_path / "folds" / "fold0" / "crops.json").write_text(json.dumps({"crops": [{"ann_id": a, "image_id": f} for a, f in zip(ann, frame)]}))
    for k in range(folds):
        d = tmp_path / "runs" / "r" / f"fold{k}"
        d.mkdir(parents=True)
        train = np.array(frame) % folds != k
        np.savez(d / "emb.npz", ann_id=np.array(ann), label=label, train=train, plain=e.astype(np.float16))
        (d / "result.json").write_text(json.dumps({"fold": k, "names": ["a", "b", "rare"]}))
    return label


def test_cv_heads_scores_the_head_where_prototypes_fail(tmp_path):
    from experiments.cv_heads import GRID_C, HYBRID_K, main

    _grid(tmp_path)
    out = main([str(tmp_path), "--run", "r", "--out", str(tmp_path / "h.json")])
    s = out["summary"]
    assert s["linear"]["top1"][0] > 0.95 > s["prototype"]["top1"][0] + 0.1
    for f in out["folds"]:
        assert f["chosen"]["C"] in GRID_C and f["chosen"]["K"] in HYBRID_K
        proto, hyb = np.array(f["pred"]["prototype"]), np.array(f["pred"]["hybrid"])
        rare = proto == 2  # 3 training boxes: the prototype's answer stands
        assert rare.any() and (hyb[rare] == 2).all()
        assert (hyb[~rare] == np.array(f["pred"]["linear"])[~rare]).all()


def test_cv_heads_refuses_a_run_with_unfinished_folds(tmp_path):
    import pytest

    from experiments.cv_heads import main

    _grid(tmp_path)
    (tmp_path / "runs" / "r" / "fold1" / "result.json").unlink()
    with pytest.raises(SystemExit, match="fold1 unfinished"):
        main([str(tmp_path), "--run", "r"])
