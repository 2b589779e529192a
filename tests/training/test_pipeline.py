"""Each training script's main() on the committed frames, chained the way
a real run goes: prepare → train_detector → train_embedder →
build_prototypes → evaluate. Tiny settings; checks the outputs' shapes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from repo_paths import FRAMES_COCO


pytestmark = pytest.mark.slow


def test_prepare_splits_by_frame(prepared):
    out, summary = prepared
    source = json.loads(FRAMES_COCO.read_text())  # the raw annotations, read without plankton.coco
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train_ids"]) & set(split["val_ids"])
    assert set(split["train_ids"]) | set(split["val_ids"]) == {im["id"] for im in source["images"]}
    assert (summary["train_frames"], summary["val_frames"]) == (len(split["train_ids"]), len(split["val_ids"]))
    assert summary["val_frames"] >= 1 and summary["train_frames"] >= 1
    crops = json.loads((out / "crops.json").read_text())["crops"]
    assert sorted(c["ann_id"] for c in crops) == sorted(a["id"] for a in source["annotations"])  # one crop per box
    for c in crops:  # each crop in its frame's split
        assert c["split"] == ("val" if c["image_id"] in split["val_ids"] else "train"), c
    labels = sorted((out / "detector" / "labels" / "train").glob("*.txt"))
    assert len(labels) == summary["train_frames"]
    # YOLO labels: "0 cx cy w h" normalised to the frame, computed here from the COCO xywh boxes
    size = {im["id"]: (im["width"], im["height"]) for im in source["images"]}
    for path in labels:
        image_id = int(path.name[:6])  # files are named <id:06d>_<original stem>
        assert image_id in split["train_ids"]
        W, H = size[image_id]
        expected = sorted(((x + w / 2) / W, (y + h / 2) / H, w / W, h / H)
                          for a in source["annotations"] if a["image_id"] == image_id for x, y, w, h in [a["bbox"]])
        lines = [line.split() for line in path.read_text().splitlines() if line]
        assert lines and all(cls == "0" for cls, *_ in lines)
        got = sorted(tuple(float(v) for v in xywh) for _, *xywh in lines)
        assert len(got) == len(expected), path.name
        np.testing.assert_allclose(got, expected, atol=2e-3)  # 2e-3 of the frame: boxes clipped to it within tolerance


def test_prepare_tiles(tmp_path):
    from training import prepare

    summary = prepare.main(["--coco", str(FRAMES_COCO), "--out", str(tmp_path), "--tile", "640", "--val-fraction", "0.34"])
    tiles = list((tmp_path / "detector" / "images" / "train").glob("*.jpg"))
    # 640-px windows sharing ≥160 px: 4 across 1920 and 2 down 1080.
    assert len(tiles) == summary["detector_train_images"] == summary["train_frames"] * 8


def test_train_scripts_write_weights_and_history(trained):
    _, work, det, emb = trained
    assert (work / "det" / "detector.safetensors").stat().st_size > 1e6
    assert det["epochs_done"] == 1 and "ap50" in det["learning_curve"][0]
    assert (work / "emb" / "embedder.safetensors").exists()
    assert [h["epoch"] for h in emb["history"]] == [1, 2]
    assert emb["best_val_f1_macro"] == max(h["val_f1_macro"] for h in emb["history"])


def test_train_embedder_resumes(trained):
    from training import train_embedder

    out, work, _, _ = trained
    again = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                                 "--size", "48", "--epochs", "3", "--batch", "8", "--workers", "0", "--device", "cpu"])
    assert [h["epoch"] for h in again["history"]] == [1, 2, 3], "resume should continue after epoch 2, not restart"


def test_build_and_evaluate_artifact(trained, tmp_path):
    from plankton.pipeline.load import load_artifact
    from plankton.artifact.manifest import read_config
    from training import build_prototypes, evaluate

    out, work, _, _ = trained
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(work / "det"), "--embedder", str(work / "emb"),
                                   "--out", str(tmp_path / "model"), "--det-imgsz", "640"])
    cfg = read_config(model, check_files=False)["training"]["detector"]
    assert [r["epoch"] for r in cfg["learning_curve"]] == [1] and cfg["epochs_done"] == 1 and len(cfg["stages"]) == 1
    metrics = evaluate.main(["--model", str(model), "--data", str(out), "--no-umap", "--det-floor", "0.01", "--e2e-floor", "0.05"])
    # Detection: the counts behind precision and recall, the objects counted from the raw annotations
    source = json.loads(FRAMES_COCO.read_text())
    val_ids = json.loads((out / "split.json").read_text())["val_ids"]
    det = metrics["detection"]
    assert det["objects"] == sum(a["image_id"] in val_ids for a in source["annotations"]) > 0
    assert 0 <= det["true_positives"] <= min(det["detections"], det["objects"])
    assert det["recall"] == pytest.approx(det["true_positives"] / det["objects"])
    assert det["precision"] == (pytest.approx(det["true_positives"] / det["detections"]) if det["detections"] else 0.0)
    assert det["ap50_95"] <= det["ap50"]  # AP over IoU 0.5:0.95 cannot beat AP at IoU 0.5 (coco_ap itself: test_coco_ap_by_hand)
    # Identification: top-1 and top-5 recomputed here from the stored validation similarities
    from plankton.artifact.validation import ValidationSet

    ident = metrics["identification"]
    vs = ValidationSet.load(model / "validation.safetensors")
    true = np.asarray(vs.true_names, dtype=object)
    assert len(true) == det["objects"] and vs.similarity.shape == (len(true), len(vs.class_names))
    known = np.isin(true, vs.class_names)
    assert ident["objects"] == int(known.sum()) > 0
    ranked = np.asarray(vs.class_names, dtype=object)[np.argsort(-vs.similarity[known], axis=1)]
    assert ident["top1"] == pytest.approx(np.mean(ranked[:, 0] == true[known]))
    assert ident["top5"] == pytest.approx(np.mean([t in row[:5] for t, row in zip(true[known], ranked)]))
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


def test_gpu_bench_runs_on_the_cpu_too(tiny_artifact, tiny_cascade, tmp_path):
    from benchmarks import gpu as gpu_bench

    out = gpu_bench.main(["--model", str(tiny_artifact), "--frames", "2", "--batch", "1", "2", "--device", "cpu", "--out", str(tmp_path / "b.json")])
    assert set(out["batches"]) == {"1", "2"} and all(b["fps"] > 0 for b in out["batches"].values())
    assert json.loads((tmp_path / "b.json").read_text()) == out
    # the objects it counted are the detector's own, frame by frame (the first two committed frames), whatever the batch
    from repo_paths import EXAMPLES

    from plankton.images import read_image

    frames = sorted((EXAMPLES / "frames").glob("*.jpg"))[:2]
    per_frame = [len(tiny_cascade.detector.predict(read_image(p), conf=tiny_cascade.det_floor)) for p in frames]
    assert min(per_frame) > 0
    assert [b["objects_per_frame"] for b in out["batches"].values()] == [round(sum(per_frame) / 2, 1)] * 2


def test_build_prototypes_joins_the_detector_stages(trained, tmp_path):
    """A detector continued with --init: the stages' learning curves are
    joined with running epoch numbers, and each stage keeps its hardware."""
    from plankton.artifact.manifest import read_config
    from training import build_prototypes

    out, work, _, _ = trained
    first = work / "det" / "train_detector.json"
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(work / "det"), "--embedder", str(work / "emb"),
                                   "--detector-before", str(first), "--out", str(tmp_path / "model"), "--det-imgsz", "640"])
    det = read_config(model, check_files=False)["training"]["detector"]
    assert [(r["epoch"], r["stage"]) for r in det["learning_curve"]] == [(1, 1), (2, 2)]
    assert det["epochs_done"] == 2 and [s["epochs_done"] for s in det["stages"]] == [1, 1]
    assert all(s["hardware"]["cpus"] >= 1 for s in det["stages"])


def test_continued_embedder_keeps_its_whole_history(trained, tmp_path):
    """train_embedder --init records the run it continued (by sha256); the
    artifact's learning curve then runs through both stages, the second
    numbered on from the epoch the first one kept."""
    import shutil

    from plankton.files import sha256
    from plankton.artifact.manifest import read_config
    from plankton_app import render
    from training import build_prototypes, train_embedder

    out, work, _, _ = trained
    parent = tmp_path / "parent"
    shutil.copytree(work / "emb", parent)
    first = json.loads((parent / "embedder.json").read_text())
    assert first["selected"] == "last"
    kept = first["history"][-1]["epoch"]
    child = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(tmp_path / "child"), "--backbone", "resnet18", "--pretrained", "",
                                 "--size", "48", "--epochs", "1", "--batch", "8", "--workers", "0", "--device", "cpu",
                                 "--init", str(parent / "embedder.safetensors")])
    assert child["init_from"]["sha256"] == sha256(parent / "embedder.safetensors")
    assert child["init_from"]["history"] == first["history"]
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(work / "det"), "--embedder", str(tmp_path / "child"),
                                   "--out", str(tmp_path / "model")])
    emb = read_config(model, check_files=False)["training"]["embedder"]
    assert [(r["epoch"], r["stage"]) for r in emb["history"]] == [(e, 1) for e in range(1, kept + 1)] + [(kept + 1, 2)]
    assert [(s["epochs_done"], s["kept_epoch"]) for s in emb["stages"]] == [(len(first["history"]), kept), (1, 1)]
    assert emb["stages"][1]["init_sha256"] == child["init_from"]["sha256"] and emb["stages"][0]["init_sha256"] is None
    rows = render.training_rows(read_config(model, check_files=False)["training"])
    assert [r[0] for r in rows if r[0].startswith("embedder")] == ["embedder, stage 1", "embedder, stage 2"]
    assert f"from stage 1's epoch {kept}" in [r for r in rows if r[0] == "embedder, stage 2"][0][1]


def test_kept_epoch_and_chained_history_by_hand():
    from training.lineage import chained_history, kept_epoch

    history = [{"epoch": e, "val_f1_macro": f} for e, f in ((1, 0.5), (2, 0.7), (3, 0.6))]
    assert kept_epoch({"history": history, "selected": "last"}) == 3
    assert kept_epoch({"history": history, "selected": "best"}) == kept_epoch({"history": history}) == 2  # older runs kept the best
    run = {"history": history[:1], "init_from": {"history": history, "init_from": {"history": history, "selected": "last"}}}
    assert [(r["epoch"], r["stage"]) for r in chained_history(run)] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3)]


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
    from experiments import choose_embedder
    from training import train_embedder

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

    from plankton.model.embedder import BACKBONES, EmbeddingNet
    from training import save_backbone

    path = save_backbone.main(["efficientnet_lite0", str(tmp_path / "lite0.safetensors")])
    reference = BACKBONES["efficientnet_lite0"].build()
    BACKBONES["efficientnet_lite0"].load_pretrained(reference, "package")
    loaded = EmbeddingNet("efficientnet_lite0", 64, pretrained=str(path)).backbone.state_dict()
    for k, v in reference.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(loaded[k], v, atol=2e-3, rtol=1e-3)
