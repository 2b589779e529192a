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
    cfg = read_config(model, check_files=False)["training"]["detector"]
    assert [r["epoch"] for r in cfg["learning_curve"]] == [1] and cfg["epochs_done"] == 1 and len(cfg["stages"]) == 1
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


def test_build_prototypes_joins_the_detector_stages(trained, tmp_path):
    """A detector continued with --init: the stages' learning curves are
    joined with running epoch numbers, and each stage keeps its hardware."""
    from plankton.artifact import read_config
    from training import build_prototypes

    out, work, _, _ = trained
    first = work / "det" / "train_detector.json"
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(work / "det"), "--embedder", str(work / "emb"),
                                   "--detector-before", str(first), "--out", str(tmp_path / "model"), "--det-imgsz", "640"])
    det = read_config(model, check_files=False)["training"]["detector"]
    assert [(r["epoch"], r["stage"]) for r in det["learning_curve"]] == [(1, 1), (2, 2)]
    assert det["epochs_done"] == 2 and [s["epochs_done"] for s in det["stages"]] == [1, 1]
    assert all(s["hardware"]["cpus"] >= 1 for s in det["stages"])


def test_resplit_keeps_frames_whole(prepared):
    from training.crops_data import load_index

    out, _ = prepared
    original = load_index(out / "crops.json", "train")[0] + load_index(out / "crops.json", "val")[0]
    for seed in (1, 2):
        tr, names, _ = load_index(out / "crops.json", "train", split_seed=seed)
        va, _, _ = load_index(out / "crops.json", "val", names, split_seed=seed)
        assert len(tr) + len(va) == len(original)
        assert tr and va and not {r["image_id"] for r in tr} & {r["image_id"] for r in va}


def test_choose_embedder_picks_the_best_mean_over_splits(prepared, tmp_path):
    """Real tiny runs on two splits each; the choice is the setting whose
    F1-macro averaged over both splits is highest, and its run on the
    shipped split is what gets copied."""
    from training import choose_embedder, train_embedder

    out, _ = prepared
    common = ["--crops", str(out / "crops.json"), "--backbone", "resnet18", "--pretrained", "", "--size", "32", "--epochs", "2",
              "--batch", "8", "--workers", "0", "--device", "cpu"]
    infos = {}
    for name, sampling in (("u", "uniform"), ("b", "balanced")):
        for split, extra in (("orig", []), ("s1", ["--split-seed", "1"])):
            infos[name, split] = train_embedder.main(common + ["--out", str(tmp_path / "runs" / f"{name}_{split}"), "--sampling", sampling, *extra])
    # --max-minutes stops a run early and still writes its summary
    short = train_embedder.main(common + ["--out", str(tmp_path / "short"), "--max-minutes", "1e-6"])
    assert len(short["history"]) == 1
    summary = choose_embedder.main([str(tmp_path / "runs"), str(tmp_path / "chosen")])
    mean = {n: (infos[n, "orig"]["best_val_f1_macro"] + infos[n, "s1"]["best_val_f1_macro"]) / 2 for n in ("u", "b")}
    assert summary["chosen"] == max(mean, key=mean.get)
    assert summary["mean_f1_macro"] == pytest.approx(mean)
    chosen = json.loads((tmp_path / "chosen" / "embedder.json").read_text())
    assert chosen["args"]["out"].endswith(f"{summary['chosen']}_orig")
    assert (tmp_path / "chosen" / "embedder.safetensors").exists() and (tmp_path / "chosen" / "comparison.json").exists()


def test_save_backbone_round_trips_the_package_weights(tmp_path):
    import torch

    from plankton.embedder import BACKBONES, EmbeddingNet
    from training import save_backbone

    path = save_backbone.main(["efficientnet_lite0", str(tmp_path / "lite0.safetensors")])
    reference = BACKBONES["efficientnet_lite0"].build()
    BACKBONES["efficientnet_lite0"].load_pretrained(reference, "package")
    loaded = EmbeddingNet("efficientnet_lite0", 64, pretrained=str(path)).backbone.state_dict()
    for k, v in reference.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(loaded[k], v, atol=2e-3, rtol=1e-3)


def test_identification_metrics_by_hand():
    import numpy as np

    from training.evaluate import identification_metrics

    true = np.array(["a", "a", "b", "b"], dtype=object)
    sim = np.array([[0.9, 0.1], [0.4, 0.3], [0.2, 0.8], [0.7, 0.6]])
    m = identification_metrics(true, sim, ["a", "b"], threshold=0.5)
    assert m["top1"] == 0.75  # best match: a a b a
    assert m["unknown_rate_at_threshold"] == 0.25  # the second row is below 0.5
    assert m["top1_at_threshold"] == 0.5 and m["accuracy_of_named_at_threshold"] == pytest.approx(2 / 3)
    # without a's prototype both a rows fall below 0.5; without b's, one of two
    assert [(r["species"], r["unknown_rate"]) for r in m["open_set"]["per_species"]] == [("a", 1.0), ("b", 0.5)]


def test_portable_split_keeps_no_local_paths():
    from training.build_prototypes import portable_split

    split = {"train_ids": [1], "val_ids": [2], "meta": {
        "annotations": "../data/studycase/annotations.coco.json", "source": "../data/studycase/annotations.coco.json",
        "image_root": "/home/me/studycase", "win": "C:\\data\\x.json", "annotations_sha256": "ab" * 32, "seed": 0}}
    meta = portable_split(split)["meta"]
    assert meta == {"annotations_sha256": "ab" * 32, "seed": 0, "annotations_file": "annotations.coco.json"}
