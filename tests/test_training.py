"""Each training script's main() on the committed frames, chained the way
a real run goes: prepare → train_detector → train_embedder →
build_prototypes → evaluate. Tiny settings; checks the outputs' shapes."""
from __future__ import annotations

import json

import pytest

from conftest import FRAMES_COCO


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from training import prepare

    out = tmp_path_factory.mktemp("data")
    summary = prepare.main(["--coco", str(FRAMES_COCO), "--out", str(out), "--val-fraction", "0.34"])
    return out, summary


def test_prepare_splits_by_frame(prepared):
    out, summary = prepared
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train_ids"]) & set(split["val_ids"])
    assert summary["train_frames"] + summary["val_frames"] == 3
    crops = json.loads((out / "crops.json").read_text())["crops"]
    assert len(crops) == 38
    by_split = {(c["image_id"], c["split"]) for c in crops}
    assert len({i for i, _ in by_split}) == len(by_split), "a frame's crops landed in two splits"
    labels = list((out / "detector" / "labels" / "train").glob("*.txt"))
    assert len(labels) == summary["train_frames"]
    for line in labels[0].read_text().split("\n"):
        if line:
            cls, *xywh = line.split()
            assert cls == "0" and all(0 <= float(v) <= 1 for v in xywh)


def test_prepare_tiles(tmp_path):
    from training import prepare

    summary = prepare.main(["--coco", str(FRAMES_COCO), "--out", str(tmp_path), "--tile", "640", "--val-fraction", "0.34"])
    tiles = list((tmp_path / "detector" / "images" / "train").glob("*.jpg"))
    # 640-px windows sharing ≥160 px: 4 across 1920 and 2 down 1080.
    assert len(tiles) == summary["detector_train_images"] == summary["train_frames"] * 8


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    from training import train_detector, train_embedder

    out, _ = prepared
    work = tmp_path_factory.mktemp("runs")
    det = train_detector.main(["--data", str(out / "detector" / "data.yaml"), "--model", "yolov8n.yaml", "--imgsz", "320",
                               "--epochs", "1", "--batch", "2", "--workers", "0", "--device", "cpu", "--project", str(work), "--out", str(work / "det")])
    emb = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                               "--size", "48", "--epochs", "2", "--batch", "8", "--workers", "0", "--device", "cpu"])
    return out, work, det, emb


def test_train_scripts_write_weights_and_history(trained):
    _, work, det, emb = trained
    assert (work / "det" / "detector.safetensors").stat().st_size > 1e6
    assert det["epochs_done"] == 1 and "ap50" in det["learning_curve"][0]
    assert (work / "emb" / "embedder.safetensors").exists()
    assert [h["epoch"] for h in emb["history"]] == [1, 2]
    assert 0 <= emb["best_val_f1_macro"] <= 1


def test_train_embedder_resumes(trained):
    from training import train_embedder

    out, work, _, _ = trained
    again = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                                 "--size", "48", "--epochs", "3", "--batch", "8", "--workers", "0", "--device", "cpu"])
    assert [h["epoch"] for h in again["history"]] == [1, 2, 3], "resume should continue after epoch 2, not restart"


def test_build_and_evaluate_artifact(trained, tmp_path):
    from plankton.artifact import load_artifact, read_config
    from training import build_prototypes, evaluate

    out, work, _, _ = trained
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(work / "det"), "--embedder", str(work / "emb"),
                                   "--out", str(tmp_path / "model"), "--det-imgsz", "640"])
    metrics = evaluate.main(["--model", str(model), "--data", str(out), "--no-umap", "--det-floor", "0.01", "--e2e-floor", "0.05"])
    for key in ("ap50", "ap50_95", "precision", "recall"):
        assert 0 <= metrics["detection"][key] <= 1
    ident = metrics["identification"]
    assert 0 <= ident["top1"] <= ident["top5"] <= 1
    assert ident["per_class"][-1]["species"] == "weighted avg"
    cfg = read_config(model)  # checksums of everything evaluate added
    for name in ("metrics.json", "validation.safetensors", "confusion.png", "reliability.png", "per_class.csv"):
        assert name in cfg["files"]
    assert cfg["training"]["split"]["val_ids"]
    load_artifact(model)


def test_train_detector_continues_from_safetensors(trained, tmp_path):
    """--init starts from given weights, not from a fresh random init: mark
    the weights (first conv + 1.0), train briefly, and the mark is still there."""
    from safetensors.torch import load_file, save_file

    from training import train_detector

    out, work, _, _ = trained
    state = load_file(str(work / "det" / "detector.safetensors"))
    key = "model.0.conv.weight"
    state[key] = state[key] + 1.0
    save_file(state, str(tmp_path / "init.safetensors"))
    train_detector.main(["--data", str(out / "detector" / "data.yaml"), "--model", "yolov8n.yaml", "--imgsz", "320", "--epochs", "1",
                         "--batch", "2", "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--out", str(tmp_path / "det"),
                         "--init", str(tmp_path / "init.safetensors")])
    after = load_file(str(tmp_path / "det" / "detector.safetensors"))
    assert float(after[key].mean() - state[key].mean()) == pytest.approx(0, abs=0.2), "the marked init was not used"


def test_gpu_bench_runs_on_the_cpu_too(tiny_artifact, tmp_path):
    from training import gpu_bench

    out = gpu_bench.main(["--model", str(tiny_artifact), "--frames", "2", "--batch", "1", "2", "--device", "cpu", "--out", str(tmp_path / "b.json")])
    assert set(out["batches"]) == {"1", "2"} and all(b["fps"] > 0 for b in out["batches"].values())
    assert json.loads((tmp_path / "b.json").read_text())["frames"] == 2
