"""Fixtures of the training tests: the committed frames prepared once,
then a detector and an embedder trained on them for an epoch or two, for
every module here (session scope: training is the slow part)."""
from __future__ import annotations

import pytest

from repo_paths import FRAMES_COCO


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    from training import prepare

    out = tmp_path_factory.mktemp("data")
    summary = prepare.main(["--coco", str(FRAMES_COCO), "--out", str(out), "--val-fraction", "0.34"])
    return out, summary



@pytest.fixture(scope="session")
def trained(prepared, tmp_path_factory):
    from training import train_detector, train_embedder

    out, _ = prepared
    work = tmp_path_factory.mktemp("runs")
    det = train_detector.main(["--data", str(out / "detector" / "data.yaml"), "--model", "yolov8n.yaml", "--imgsz", "320",
                               "--epochs", "1", "--batch", "2", "--workers", "0", "--device", "cpu", "--project", str(work), "--out", str(work / "det")])
    emb = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                               "--size", "48", "--epochs", "2", "--batch", "8", "--workers", "0", "--device", "cpu"])
    return out, work, det, emb



@pytest.fixture(scope="session")
def size_aware(prepared, tmp_path_factory):
    from training import train_embedder

    out, _ = prepared
    work = tmp_path_factory.mktemp("size")
    info = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                                "--size", "48", "--min-side", "40", "--size-input", "--epochs", "1", "--batch", "8", "--workers", "0", "--device", "cpu"])
    return out, work, info


@pytest.fixture(scope="session")
def cv_run(tmp_path_factory):
    """experiments.cv_grid on the committed frames: 3 folds, one tiny run; (grid folder, run folder)."""
    from experiments import cv_grid

    out = tmp_path_factory.mktemp("cvfit")
    cv_grid.main(["--coco", str(FRAMES_COCO), "--out", str(out), "--folds", "3", "--backbone", "resnet18", "--pretrained", "", "--size", "32",
                  "--epochs", "1", "--batch", "8", "--workers", "0", "--device", "cpu", "--no-tta"])
    return out, out / "runs" / "resnet18-32-sqrt-e1-b8-s0"
