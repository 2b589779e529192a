"""Issue 40: the shipped embedder trains on every frame, so its thresholds,
calibration and figures are cross-fitted: each object is matched by the
cross-validation fold model that never saw its frame (``training.crossfit``)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repo_paths import FRAMES_COCO


def _fold(root, k, names, emb, label, train, ann):
    d = root / "runs" / "r" / f"fold{k}"
    d.mkdir(parents=True)
    np.savez(d / "emb.npz", ann_id=np.array(ann), label=np.array(label), train=np.array(train), plain=np.asarray(emb, np.float16))
    (d / "result.json").write_text(json.dumps({"fold": k, "names": names}))


def _layout(tmp_path):
    """Two folds over four frames, each fold model with its own embedding space:
    fold 1's axes are swapped, so matching a box against the other fold's
    prototypes names the wrong species."""
    crops = [{"ann_id": a, "image_id": a, "file": f"images/f{a}.jpg", "category_id": c, "split": "train", "xyxy": [0, 0, 4, 4]}
             for a, c in [(1, 1), (2, 2), (3, 1), (4, 2), (5, 3)]]
    (tmp_path / "folds" / "fold0").mkdir(parents=True)
    (tmp_path / "folds" / "fold0" / "crops.json").write_text(json.dumps(
        {"categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}], "crops": crops}))
    (tmp_path / "folds.json").write_text(json.dumps({"frames": [[1, 2], [3, 4, 5]]}))
    x, y = [1, 0, 0], [0, 1, 0]
    near_x, near_y = [0.8, 0.6, 0], [0.6, 0.8, 0]
    # fold 0 holds out boxes 1, 2 (a, b); its model trained on 3, 4, 5 (a on x, b on y, c on z)
    _fold(tmp_path, 0, ["a", "b", "c"], [near_x, near_y, x, y, [0, 0, 1]], [0, 1, 0, 1, 2], [False, False, True, True, True], [1, 2, 3, 4, 5])
    # fold 1 holds out 3, 4, 5 (c has no training box there); its model put a on y and b on x
    _fold(tmp_path, 1, ["a", "b"], [y, x, near_x, near_y, [0, 0, 1]], [0, 1, 0, 1, -1], [True, True, False, False, False], [1, 2, 3, 4, 5])
    return tmp_path / "runs" / "r"


def test_each_object_is_matched_in_its_own_fold_models_space(tmp_path):
    from training.crossfit import MISSING, load

    oof = load(_layout(tmp_path), ["a", "b", "c"])
    order = np.argsort(oof.ann_id)
    assert oof.ann_id[order].tolist() == [1, 2, 3, 4, 5] and oof.fold[order].tolist() == [0, 0, 1, 1, 1]
    assert list(oof.true[order]) == ["a", "b", "a", "b", "c"]
    sim = oof.similarity[order]
    # box 3 is near x, which fold 1's model calls b: out of fold it is (rightly) a doubtful a at 0.6
    np.testing.assert_allclose(sim[:4, :2], [[0.8, 0.6], [0.6, 0.8], [0.6, 0.8], [0.8, 0.6]], atol=1e-3)
    assert sim[0, 2] == pytest.approx(0.0, abs=1e-3) and (sim[2:, 2] == MISSING).all()  # fold 1 had no training box of c
    own = oof.own()[order]
    np.testing.assert_allclose(own[:4], [0.8, 0.8, 0.6, 0.6], atol=1e-3)
    assert np.isnan(own[4])
    kept = oof.without({"f3.jpg"})
    assert sorted(kept.ann_id.tolist()) == [1, 2, 4, 5]


def test_an_unfinished_fold_is_refused(tmp_path):
    from training.crossfit import load

    run = _layout(tmp_path)
    (run / "fold1" / "result.json").unlink()
    with pytest.raises(SystemExit, match="fold1 unfinished"):
        load(run, ["a", "b"])


@pytest.mark.slow
def test_all_frames_model_is_cross_fitted_end_to_end(cv_run, trained, tmp_path):
    """cv_grid's fold models → every frame trains → thresholds, their quantile
    and the identification figures all read off the folds, never the shipped
    embedder's own training crops."""
    from training import all_frames, build_prototypes, calibrate, evaluate, train_embedder
    from training.crossfit import load
    from training.thresholds import quantile_table

    prepared, work, _, _ = trained
    grid, run = cv_run
    crops = all_frames.main(["--crops", str(grid / "folds" / "fold0" / "crops.json"), "--out", str(tmp_path / "all" / "crops.json")])
    index = json.loads(crops.read_text())["crops"]
    assert {c["split"] for c in index} == {"train"} and len(index) == len(json.loads(FRAMES_COCO.read_text())["annotations"])
    train_embedder.main(["--crops", str(crops), "--out", str(tmp_path / "emb"), "--backbone", "resnet18", "--pretrained", "",
                         "--size", "32", "--epochs", "1", "--batch", "8", "--workers", "0", "--device", "cpu"])
    model = tmp_path / "model"
    build_prototypes.main(["--crops", str(crops), "--detector", str(work / "det"), "--embedder", str(tmp_path / "emb"), "--frames", "all",
                           "--heldout-from", str(run), "--match", "mean", "--min-class-samples", "1", "--out", str(model)])
    config = json.loads((model / "config.json").read_text())
    record = json.loads((model / "training.json").read_text())["prototypes"]
    assert "cross-validation fold model" in record["threshold_rule"]
    names = config["prototypes"]["names"]
    oof = load(run, names, mode="mean")
    index_of = {n: i for i, n in enumerate(names)}
    expected = quantile_table(oof.own(), np.array([index_of.get(t, -1) for t in oof.true]), names, 1)
    assert record["heldout_quantiles"] == json.loads(json.dumps(expected))  # the folds' table, not this embedder's
    result = calibrate.main(["--oof", str(run), "--for-model", str(model), "--target-unknown", "0.05", "--apply"])
    assert result["oof"].endswith(run.name) and result["frames_used"] == len(set(oof.frames.tolist()))
    floor = expected["floor"][expected["grid"].index(result["quantile"])]
    assert json.loads((model / "config.json").read_text())["identifier"]["cls_conf"] == floor
    metrics = evaluate.main(["--model", str(model), "--data", str(prepared), "--oof", str(run), "--no-umap"])
    ident = metrics["identification"]
    known = np.isin(oof.true, names) & ~np.isnan(oof.own())  # unseen by its own fold: not a closed-set error
    assert ident["scored"]["folds"] == 3 and ident["objects"] == int(known.sum())
    assert ident["scored"]["unseen_in_their_fold"] == int((np.isin(oof.true, names) & np.isnan(oof.own())).sum())
    best = np.asarray(names, dtype=object)[oof.similarity[known].argmax(1)]
    assert ident["top1"] == pytest.approx(float(np.mean(best == oof.true[known])))
