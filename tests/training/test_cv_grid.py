"""Issue 26: ``experiments.cv_grid`` runs its whole grid (per fold: train,
embed every box, prototypes from the training folds, score the held-out
fold; then the seed ensemble) on the committed frames with tiny settings,
and resumes; the folds never share a frame, and rare species spread over
the folds."""
from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest
import torch

from repo_paths import FRAMES_COCO

TINY = ["--folds", "3", "--backbone", "resnet18", "--pretrained", "", "--size", "32", "--epochs", "1", "--batch", "8",
        "--workers", "0", "--device", "cpu"]
RUNS = ["resnet18-32-sqrt-e1-b8-s0", "resnet18-32-sqrt-e1-b8-s1"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    from experiments import cv_grid

    out = tmp_path_factory.mktemp("cv")
    argv = ["--coco", str(FRAMES_COCO), "--out", str(out / "work"), "--bring", str(out / "bring"), *TINY, "--setting", "seeds=0+1"]
    return out, argv, cv_grid.main(argv)


@pytest.mark.slow
def test_folds_never_share_a_frame(grid):
    out, _, doc = grid
    source = json.loads(FRAMES_COCO.read_text())  # read without plankton.coco
    folds = doc["folds"]["frames"]
    assert len(folds) == 3 and all(folds)
    flat = [i for f in folds for i in f]
    assert len(flat) == len(set(flat)), "a frame in two folds"
    assert set(flat) == {im["id"] for im in source["images"]}
    boxes = {a["id"]: a["image_id"] for a in source["annotations"]}
    for k, frames in enumerate(folds):
        crops = json.loads((out / "work" / "folds" / f"fold{k}" / "crops.json").read_text())["crops"]
        assert sorted(c["ann_id"] for c in crops) == sorted(boxes)  # every box once, never a frame's boxes split
        for c in crops:
            assert c["split"] == ("val" if boxes[c["ann_id"]] in frames else "train"), c


@pytest.mark.slow
def test_grid_writes_every_figure_and_checkpoint(grid):
    out, _, doc = grid
    assert doc["complete"] and not doc["errors"] and not doc["skipped"]
    assert sorted((r["run"], r["fold"]) for r in doc["results"]) == [(run, k) for run in RUNS for k in range(3)]
    source = json.loads(FRAMES_COCO.read_text())
    held_out = [sum(a["image_id"] in f for a in source["annotations"]) for f in doc["folds"]["frames"]]  # boxes per fold
    for r in doc["results"]:
        assert r["epochs_done"] == 1 and not r["truncated"] and len(r["history"]) == 1
        assert r["crops"]["test"] + r["crops"]["test_unseen"] == held_out[r["fold"]] and r["crops"]["train"] == sum(held_out) - held_out[r["fold"]]
        assert len(r["test_true"]) == r["crops"]["test"] > 0
        for view in ("plain", "tta"):
            for mode in ("mean", "subcenter"):
                f = r["figures"][view][mode]
                assert 0 <= f["top1"] <= 1 and 0 <= f["f1_macro"] <= 1 and f["objects"] == r["crops"]["test"]
                assert set(f["f1_by_training_boxes"]) == {"1-3", "4-9", "10-49", ">=50"}
                assert sum(b["species"] for b in f["f1_by_training_boxes"].values()) == f["species"]
                assert len(r["test_pred"][f"{view}/{mode}"]) == r["crops"]["test"]
        folder = out / "work" / "runs" / r["run"] / f"fold{r['fold']}"
        assert (folder / "embedder.safetensors").stat().st_size > 1e6 and (folder / "result.json").exists()
        assert not (folder / "checkpoint.pt").exists()  # optimiser state goes once the run is done
    assert sorted((e["run"], e["fold"]) for e in doc["ensembles"]) == [("resnet18-32-sqrt-e1-b8-ens2", k) for k in range(3)]
    assert set(doc["summary"]) == set(RUNS) | {"resnet18-32-sqrt-e1-b8-ens2"}
    for name, s in doc["summary"].items():
        assert s["folds"] == [0, 1, 2] and name in doc["table"]
        mean, sd, n = s["figures"]["tta"]["mean"]["f1_macro"]
        assert 0 <= mean <= 1 and sd >= 0 and n == 3
        assert s["pooled"]["plain"]["mean"]["objects"] == sum(len(r["test_true"]) for r in doc["results"] if r["run"] == RUNS[0])
    assert doc["best_run"] in RUNS
    brought = json.loads((out / "bring" / "cv_grid.json").read_text())
    assert brought["summary"] == json.loads(json.dumps(doc["summary"])) and (out / "bring" / "cv_grid.md").read_text() == doc["table"]


@pytest.mark.slow
def test_grid_resumes_without_training_again(grid):
    from experiments import cv_grid

    out, argv, doc = grid
    stamp = {p: p.stat().st_mtime_ns for p in (out / "work" / "runs").rglob("result.json")}
    again = cv_grid.main(argv)
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    assert again["summary"] == json.loads(json.dumps(doc["summary"]))


def _dataset(frames: dict[int, list[int]]):
    """A CocoDataset of frames holding boxes of the given categories."""
    from plankton.coco import Category, CocoBox, CocoDataset, CocoImage

    images = {i: CocoImage(i, f"{i}.jpg", 100, 100) for i in frames}
    boxes = [CocoBox(10 * i + j, i, c, (1.0, 1.0, 5.0, 5.0)) for i, cats in frames.items() for j, c in enumerate(cats)]
    cats = {c: Category(c, f"species {c}") for c in {c for cs in frames.values() for c in cs}}
    return CocoDataset(images, boxes, cats, image_root=FRAMES_COCO.parent)


def test_rare_species_spread_over_folds():
    from experiments.cv_folds import assign_folds, coverage

    # 23 frames: a common species everywhere, one in 5 frames, one in 2, one in 1, and empty frames.
    frames = {i: [1] for i in range(15)} | {15 + i: [1, 2] for i in range(4)} | {19: [2, 3], 20: [3], 21: [4], 22: []}
    ds = _dataset(frames)
    for seed in (0, 1):
        folds = assign_folds(ds, 5, seed)
        assert sorted(i for f in folds for i in f) == sorted(frames)
        assert sorted(len(f) for f in folds) == [4, 4, 5, 5, 5]
        cov = coverage(ds, folds)
        assert cov["short"] == []
        assert cov["categories"]["species 2"]["folds"] == 5 and cov["categories"]["species 3"]["folds"] == 2
        assert folds == assign_folds(ds, 5, seed), "not deterministic"
    with pytest.raises(ValueError):
        assign_folds(ds, 30)


def test_settings_from_the_command_line():
    from experiments.cv_grid import parse_settings, setting_name

    base = Namespace(backbone="efficientnet_lite0", size=96, epochs=12, sampling="sqrt", lr=1e-3, batch=128, seeds=[0], setting=[], vary=[])
    names = [setting_name(s) for s in parse_settings(base)]
    assert names == ["lite0-96-sqrt-e12", "lite0-96-balanced-e12"]  # the default grid
    grid = parse_settings(Namespace(**vars(base) | {"vary": ["size=96,128", "backbone=efficientnet_lite0,efficientnet_lite1"],
                                                    "setting": ["sampling=uniform,seeds=0+1+2"]}))
    assert [setting_name(s) for s in grid] == ["lite0-96-uniform-e12", "lite0-96-sqrt-e12", "lite1-96-sqrt-e12", "lite0-128-sqrt-e12", "lite1-128-sqrt-e12"]
    assert grid[0]["seeds"] == [0, 1, 2] and grid[1]["seeds"] == [0]
    for bad in (["colour=3"], ["size=big"], ["backbone=vgg"], ["size"]):
        with pytest.raises(SystemExit):
            parse_settings(Namespace(**vars(base) | {"setting": bad}))


def test_bring_keeps_within_the_device_limits(tmp_path):
    from safetensors.torch import load_file, save_file

    from experiments.cv_folds import bring

    out = tmp_path / "work"
    out.mkdir()
    (out / "cv_grid.json").write_text("{}")
    (out / "cv_grid.md").write_text("| table |")
    for k in range(3):
        (out / "runs" / "r" / f"fold{k}").mkdir(parents=True)
        save_file({"w": torch.ones(4, 4), "n": torch.tensor(3)}, str(out / "runs" / "r" / f"fold{k}" / "embedder.safetensors"))
    files = bring(out, tmp_path / "back", "r", 3)
    assert files == ["cv_grid.json", "cv_grid.md", "r_fold0.safetensors", "r_fold1.safetensors", "r_fold2.safetensors"]
    w = load_file(str(tmp_path / "back" / "r_fold1.safetensors"))
    assert w["w"].dtype == torch.float16 and w["n"].dtype == torch.int64 and np.allclose(w["w"].numpy(), 1)
