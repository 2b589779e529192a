"""Each training script's main() on the committed frames, chained the way
a real run goes: prepare → train_detector → train_embedder →
build_prototypes → evaluate. Tiny settings; checks the outputs' shapes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import FRAMES_COCO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from training import prepare

    out = tmp_path_factory.mktemp("data")
    summary = prepare.main(["--coco", str(FRAMES_COCO), "--out", str(out), "--val-fraction", "0.34"])
    return out, summary


def test_prepare_splits_by_frame(prepared):
    out, summary = prepared
    source = json.loads(FRAMES_COCO.read_text())  # the raw annotations, read without plankton.data
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
    assert emb["best_val_f1_macro"] == max(h["val_f1_macro"] for h in emb["history"])


def test_train_embedder_resumes(trained):
    from training import train_embedder

    out, work, _, _ = trained
    again = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                                 "--size", "48", "--epochs", "3", "--batch", "8", "--workers", "0", "--device", "cpu"])
    assert [h["epoch"] for h in again["history"]] == [1, 2, 3], "resume should continue after epoch 2, not restart"


def test_build_and_evaluate_artifact(trained, tmp_path):
    from plankton.artifact import load_artifact
    from plankton.manifest import read_config
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
    from plankton.validation import ValidationSet

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
    from training import gpu_bench

    out = gpu_bench.main(["--model", str(tiny_artifact), "--frames", "2", "--batch", "1", "2", "--device", "cpu", "--out", str(tmp_path / "b.json")])
    assert set(out["batches"]) == {"1", "2"} and all(b["fps"] > 0 for b in out["batches"].values())
    assert json.loads((tmp_path / "b.json").read_text()) == out
    # the objects it counted are the detector's own, frame by frame (the first two committed frames), whatever the batch
    from conftest import EXAMPLES

    from plankton.images import read_image

    frames = sorted((EXAMPLES / "frames").glob("*.jpg"))[:2]
    per_frame = [len(tiny_cascade.detector.predict(read_image(p), conf=tiny_cascade.det_floor)) for p in frames]
    assert min(per_frame) > 0
    assert [b["objects_per_frame"] for b in out["batches"].values()] == [round(sum(per_frame) / 2, 1)] * 2


def test_build_prototypes_joins_the_detector_stages(trained, tmp_path):
    """A detector continued with --init: the stages' learning curves are
    joined with running epoch numbers, and each stage keeps its hardware."""
    from plankton.manifest import read_config
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
    from plankton.manifest import read_config
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


def test_coco_ap_by_hand():
    """training.detection_metrics.coco_ap (pycocotools) on cases whose AP is known."""
    from training.detection_metrics import coco_ap

    gt = {1: (np.array([[0, 0, 10, 10]], np.float32), ["a"])}
    same = {1: (np.array([[0, 0, 10, 10]], np.float32), np.array([0.9]), ["a"])}
    assert coco_ap(gt, same) == pytest.approx({"ap50": 1.0, "ap50_95": 1.0})
    # IoU 0.62 (a 10×6.2 box inside the 10×10 one): a hit at IoU thresholds 0.50, 0.55, 0.60 of ten
    shifted = {1: (np.array([[0, 0, 10, 6.2]], np.float32), np.array([0.9]), ["a"])}
    assert coco_ap(gt, shifted) == pytest.approx({"ap50": 1.0, "ap50_95": 0.3})
    # two objects; a false positive scored above both hits: precision 1/2 at recall 1/2,
    # 2/3 at recall 1, so the interpolated precision is 2/3 at every recall
    gt2 = {1: (np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), ["a", "a"])}
    fp_first = {1: (np.array([[50, 50, 60, 60], [0, 0, 10, 10], [20, 0, 30, 10]], np.float32), np.array([0.9, 0.8, 0.7]), ["a"] * 3)}
    assert coco_ap(gt2, fp_first)["ap50"] == pytest.approx(2 / 3)
    # averaged over the classes with ground truth: a perfect (1) and b never found (0);
    # a detection of class c, which has no ground truth, is ignored
    gt_ab = {1: (np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), ["a", "b"])}
    dets = {1: (np.array([[0, 0, 10, 10], [40, 40, 50, 50]], np.float32), np.array([0.9, 0.8]), ["a", "c"])}
    assert coco_ap(gt_ab, dets) == pytest.approx({"ap50": 0.5, "ap50_95": 0.5})
    assert coco_ap(gt, {1: (np.zeros((0, 4), np.float32), np.zeros(0), [])}) == {"ap50": 0.0, "ap50_95": 0.0}


def test_precision_recall_by_hand():
    from training.detection_metrics import precision_recall

    gt = {1: np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), 2: np.array([[0, 0, 10, 10]], np.float32), 3: np.zeros((0, 4), np.float32)}
    dets = {1: np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], np.float32),  # a hit, a duplicate of it (not a second hit), a miss
            3: np.array([[0, 0, 5, 5]], np.float32)}  # a detection on a frame without objects; frame 2: nothing found
    assert precision_recall(gt, dets) == pytest.approx({"precision": 1 / 4, "recall": 1 / 3, "true_positives": 1, "detections": 4, "objects": 3})
    # a 10×6 box inside a 10×10 one has IoU 0.6: a hit at IoU 0.5, not at 0.7
    one = {1: np.array([[0, 0, 10, 10]], np.float32)}
    inner = {1: np.array([[0, 0, 10, 6]], np.float32)}
    assert precision_recall(one, inner)["true_positives"] == 1 and precision_recall(one, inner, iou=0.7)["true_positives"] == 0


def test_portable_split_keeps_no_local_paths():
    from training.build_prototypes import portable_split

    split = {"train_ids": [1], "val_ids": [2], "meta": {
        "annotations": "../data/studycase/annotations.coco.json", "source": "../data/studycase/annotations.coco.json",
        "image_root": "/home/me/studycase", "win": "C:\\data\\x.json", "annotations_sha256": "ab" * 32, "seed": 0}}
    meta = portable_split(split)["meta"]
    assert meta == {"annotations_sha256": "ab" * 32, "seed": 0, "annotations_file": "annotations.coco.json"}


# ---- issue 11: size-aware embedder, per-class thresholds, prototypes from every frame


@pytest.fixture(scope="module")
def size_aware(prepared, tmp_path_factory):
    from training import train_embedder

    out, _ = prepared
    work = tmp_path_factory.mktemp("size")
    info = train_embedder.main(["--crops", str(out / "crops.json"), "--out", str(work / "emb"), "--backbone", "resnet18", "--pretrained", "",
                                "--size", "48", "--min-side", "40", "--size-input", "--epochs", "1", "--batch", "8", "--workers", "0", "--device", "cpu"])
    return out, work, info


def test_scale_aware_crops_are_the_same_in_training_and_inference(size_aware, tiny_artifact):
    """The training set's crops and size features (without augmentation)
    are exactly what the Identifier computes at inference, from the same
    CropConfig that the embedder's record and the artifact carry."""
    import numpy as np
    import torch

    from plankton.crops import CropConfig, size_features
    from plankton.embedder import EmbeddingNet
    from plankton.identifier import Identifier, IdentifierConfig, to_tensor
    from plankton.images import read_image
    from training.crops_data import CropDataset, FrameCache, load_index

    out, work, info = size_aware
    crop = CropConfig(**info["crop"])
    assert crop.size_input and crop.min_side == 40 and info["size_features"] == 2
    records, _, _ = load_index(out / "crops.json", "val", info["names"])
    cfg = IdentifierConfig.for_backbone("resnet18", crop)
    ds = CropDataset(records, FrameCache([r["file"] for r in records]), crop, cfg.mean, cfg.std, train=False)
    ident = Identifier(EmbeddingNet("resnet18", 512, size_features=2).eval(), cfg)
    image = read_image(records[0]["file"])
    same = [r for r in records if r["file"] == records[0]["file"]]
    boxes = np.array([r["xyxy"] for r in same], np.float32)
    crops = ident.crops(image, boxes)
    for i, r in enumerate(same):
        x, sizes, label = ds[records.index(r)]
        torch.testing.assert_close(x, to_tensor(crops[i : i + 1], cfg.mean, cfg.std)[0])
        np.testing.assert_array_equal(sizes.numpy(), size_features(boxes[i : i + 1])[0])
    # A 10-px and a 30-px object are cut from the same 60-px window (min_side 40, context 0.25), so the
    # smaller one looks smaller; an 80-px object gets its own, larger window, and its size as an input.
    from plankton.geometry import square_context_box

    boxes = np.array([[500, 500, 510, 510], [500, 500, 530, 530], [500, 500, 580, 540]], np.float32)
    sides = np.diff(square_context_box(boxes, crop.context, crop.min_side)[:, ::2], axis=1).ravel()
    np.testing.assert_allclose(sides, [60, 60, 120])
    np.testing.assert_allclose(size_features(boxes), np.log(np.array([[10, 10], [30, 30], [80, 40]]) / 32), rtol=1e-6)


def test_size_aware_model_builds_evaluates_and_reloads(size_aware, trained, tmp_path):
    from plankton.artifact import load_artifact
    from plankton.manifest import read_config
    from training import build_prototypes, evaluate

    out, work, _ = size_aware
    _, det_work, _, _ = trained
    args = ["--crops", str(out / "crops.json"), "--detector", str(det_work / "det"), "--embedder", str(work / "emb"), "--det-imgsz", "640",
            "--min-class-samples", "2", "--cv-folds", "2"]
    train_only = build_prototypes.main(args + ["--out", str(tmp_path / "train")])
    every = build_prototypes.main(args + ["--out", str(tmp_path / "all"), "--frames", "all", "--rare-views", "100"])
    a, b = read_config(train_only), read_config(every)
    # Thresholds come from training frames only, whichever frames build the prototypes.
    assert (a["identifier"]["threshold"], a["identifier"]["class_thresholds"]) == (b["identifier"]["threshold"], b["identifier"]["class_thresholds"])
    assert a["embedder"]["size_features"] == 2 and a["identifier"]["crop"]["size_input"] is True
    assert b["prototypes"]["evaluation_file"] == "prototypes_train.safetensors" and "evaluation_file" not in a["prototypes"]
    assert b["training"]["prototypes"]["frames"] == "all" and b["training"]["prototypes"]["embeddings"] > b["training"]["prototypes"]["crops"]
    # Evaluation scores the training-frames-only prototypes either way: the same identification figures.
    ma = evaluate.main(["--model", str(train_only), "--data", str(out), "--no-umap", "--det-floor", "0.01", "--e2e-floor", "0.05"])
    mb = evaluate.main(["--model", str(every), "--data", str(out), "--no-umap", "--det-floor", "0.01", "--e2e-floor", "0.05"])
    assert ma["identification"]["top1"] == mb["identification"]["top1"] and mb["split"]["prototypes"].startswith("prototypes_train")
    assert load_artifact(every).identifier.cfg.crop.size_input
    # The gallery: the exemplars of each sub-centre are stored with the artifact, one count per training crop.
    from plankton.gallery import Exemplars
    from plankton.prototypes import Prototypes

    ex, protos = Exemplars.load(train_only / "exemplars.safetensors"), Prototypes.load(train_only / "prototypes.safetensors")
    assert ex.names == protos.names and a["gallery"]["file"] == "exemplars.safetensors"
    per_class = a["training"]["prototypes"]["crops_per_species"]
    assert {n: int(c) for n, c in zip(ex.names, ex.counts.sum(1))} == per_class
    assert ex.crops.shape[1:] == (protos.subcenters.shape[1], 3, 48, 48, 3) and ex.crops[ex.n > 0].any()


def test_cross_validated_thresholds_never_read_a_validation_frame(size_aware, trained, tmp_path, monkeypatch):
    import json

    import training.crops_data as crops_data
    from training import build_prototypes

    out, work, _ = size_aware
    _, det_work, _, _ = trained
    val_files = {str((out / r["file"]).resolve()) for r in json.loads((out / "crops.json").read_text())["crops"] if r["split"] == "val"}
    read = []
    original = crops_data.read_image
    monkeypatch.setattr(crops_data, "read_image", lambda f, *a, **k: read.append(str(f)) or original(f, *a, **k))
    build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(det_work / "det"), "--embedder", str(work / "emb"),
                           "--det-imgsz", "640", "--out", str(tmp_path / "m")])
    assert read and not set(read) & val_files


def test_held_out_similarity_excludes_the_own_frame():
    """Each crop is compared with prototypes built without its frame: a
    species seen on one frame only has no held-out value, and a crop far
    from its species' other frames gets a low one."""
    import numpy as np

    from training.thresholds import class_thresholds, held_out_similarity

    rng = np.random.default_rng(0)
    centre = rng.normal(size=(2, 16))
    emb = np.vstack([centre[0] + 0.05 * rng.normal(size=(6, 16)), centre[1] + 0.05 * rng.normal(size=(2, 16))])
    emb[5] = -centre[0]  # an outlier of species 0, alone on its frame
    labels = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    frames = np.array([1, 1, 2, 2, 3, 4, 5, 5])  # species 1 only on frame 5
    own = held_out_similarity(emb, labels, frames, ["a", "b"], k=2, folds=5)
    assert np.isnan(own[6:]).all() and not np.isnan(own[:6]).any()
    assert own[5] < 0 < own[:5].min()
    floor, per_class = class_thresholds(own, labels, ["a", "b"], quantile=0.0, min_samples=3)
    assert floor == round(float(own[5]), 3) and per_class == {"a": floor}  # "b" has no held-out value: it uses the global threshold


def test_calibrate_picks_the_quantile_on_frames_outside_the_other_models_validation():
    """The sweep scores only model A's validation objects that are not in
    model B's validation frames, and the chosen quantile is the strictest
    whose unknown rate meets the target."""
    import numpy as np

    from plankton.validation import ValidationSet
    from training.calibrate import sweep
    from training.thresholds import thresholds_at

    names = ["a", "b"]
    sim = np.array([[0.9, 0.1], [0.7, 0.2], [0.5, 0.1], [0.1, 0.8], [0.2, 0.95], [0.99, 0.0]], np.float32)
    v = ValidationSet(np.eye(6, 4, dtype=np.float32), ["a", "a", "a", "b", "b", "a"], sim, names, np.zeros((6, 2)), np.zeros((2, 2)),
                      np.array([1, 1, 2, 2, 3, 9]))
    table = {"grid": [0.01, 0.05, 0.1], "floor": [0.4, 0.6, 0.75], "classes": {"a": [0.4, 0.6, 0.85]}, "min_samples": 1}
    assert thresholds_at(table, 0.1) == (0.75, {"a": 0.85})
    keep = ~np.isin(v.frames, [9])  # frame 9 is model B's validation frame: never scored
    rows = sweep(table, v, keep)
    assert [r["objects"] for r in rows] == [5, 5, 5]
    # at 0.01 nothing is below 0.4 but 0.5>0.4: all named; at 0.05 0.5 < 0.6 → 1 of 5; at 0.1 a needs 0.85 → 0.7, 0.5 unknown
    assert [r["unknown_rate"] for r in rows] == pytest.approx([0.0, 0.2, 0.4])
    assert rows[0]["accuracy_of_named"] == 1.0
    # open set (kept objects only): with "b" removed, b's two objects (0.1/0.2 to "a") fall below every a-threshold;
    # with "a" removed, a's three (0.2/0.1 to "b") fall below b's thresholds 0.4, 0.6, 0.75
    assert [r["open_set_macro"] for r in rows] == pytest.approx([1.0, 1.0, 1.0])


def test_calibrate_keeps_the_open_set_floor_before_the_unknown_target():
    from training.calibrate import choose

    rows = [{"quantile": q, "unknown_rate": u, "open_set_macro": o}
            for q, u, o in [(0.01, 0.03, 0.67), (0.02, 0.057, 0.85), (0.03, 0.077, 0.9), (0.05, 0.12, 0.95)]]
    assert choose(rows, 0.05)["quantile"] == 0.01  # no floor: the largest quantile meeting the target
    assert choose(rows, 0.05, 0.8)["quantile"] == 0.02  # the floor rules out 0.01: the fewest unknowns it allows
    assert choose(rows, 0.1, 0.8)["quantile"] == 0.03  # both met: the largest such quantile
    assert choose(rows, 0.05, 0.99)["quantile"] == 0.05  # no quantile keeps the floor: the safest


def test_kept_out_frames_never_build_prototypes(size_aware, trained, tmp_path, monkeypatch):
    """--frames all --keep-out COCO: the frames that COCO file lists (the
    app's example frames) are never read, so they stay unseen."""
    import training.crops_data as crops_data
    from plankton.manifest import read_config
    from training import build_prototypes

    out, work, _ = size_aware
    _, det_work, _, _ = trained
    val = sorted({r["file"] for r in json.loads((out / "crops.json").read_text())["crops"] if r["split"] == "val"})
    kept = Path(val[0]).name.split("_", 1)[1]  # training.prepare's copy is ID_NAME; the COCO file names NAME
    (tmp_path / "keep.json").write_text(json.dumps({"images": [{"id": 1, "file_name": f"frames/{kept}", "width": 8, "height": 8}],
                                                     "annotations": [], "categories": []}))
    read = []
    original = crops_data.read_image
    monkeypatch.setattr(crops_data, "read_image", lambda f, *a, **k: read.append(Path(f).name.split("_", 1)[1]) or original(f, *a, **k))
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(det_work / "det"), "--embedder", str(work / "emb"),
                                   "--det-imgsz", "640", "--frames", "all", "--keep-out", str(tmp_path / "keep.json"),
                                   "--min-class-samples", "2", "--cv-folds", "2", "--out", str(tmp_path / "m")])
    assert read and kept not in read
    config = read_config(model)
    assert config["training"]["prototypes"]["kept_out_frames"] == [kept]
    # The committed frames have one validation frame, so nothing joins the training frames' prototypes: no second
    # prototype file for evaluation (without --keep-out there is one: test_size_aware_model_builds_evaluates_and_reloads).
    assert len(val) == 1 and "evaluation_file" not in config["prototypes"]



def test_mean_matching_is_recorded_in_the_artifact(size_aware, trained, tmp_path):
    from plankton.artifact import load_artifact
    from plankton.manifest import read_config
    from training import build_prototypes

    out, work, _ = size_aware
    _, det_work, _, _ = trained
    model = build_prototypes.main(["--crops", str(out / "crops.json"), "--detector", str(det_work / "det"), "--embedder", str(work / "emb"),
                                   "--det-imgsz", "640", "--min-class-samples", "2", "--cv-folds", "2", "--out", str(tmp_path / "m"), "--match", "mean"])
    config = read_config(model)
    assert config["prototypes"]["mode"] == "mean" and config["training"]["prototypes"]["match"] == "mean"
    assert load_artifact(model).identifier.prototypes.mode == "mean"


def test_held_out_similarity_matches_as_the_model_will():
    """With mode="mean" a held-out crop is scored against the mean of its
    species' crops on the other folds' frames, as a mean-matching model
    scores it; sub-centres (the crops themselves, for a small species) are
    at least as close, and closer for a spread-out species."""
    from training.thresholds import held_out_similarity

    rng = np.random.default_rng(1)
    emb = rng.normal(size=(12, 8)).astype(np.float32)  # one spread-out species on 6 frames
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    labels, frames = np.zeros(12, int), np.repeat(np.arange(6), 2)
    mean = held_out_similarity(emb, labels, frames, ["a"], k=5, folds=6, mode="mean")
    sub = held_out_similarity(emb, labels, frames, ["a"], k=5, folds=6)
    for i in range(12):
        m = emb[frames != frames[i]].mean(0)
        assert mean[i] == pytest.approx(float(emb[i] @ m / np.linalg.norm(m)), abs=1e-5)
    assert (sub >= mean - 1e-6).all() and (sub > mean + 0.01).any()


def test_unpack_embedder_gives_the_models_own_embedder(tmp_path):
    import torch
    from safetensors.torch import load_file

    from plankton.artifact import load_artifact
    from plankton.crops import CropConfig
    from plankton.embedder import EmbeddingNet
    from plankton.manifest import DEFAULT_MODEL_DIR as model
    from training import unpack_embedder

    run = unpack_embedder.main([str(model), str(tmp_path / "emb")])
    info = json.loads((run / "embedder.json").read_text())
    cascade = load_artifact(model, runtime="torch")
    assert info["names"] == cascade.class_names and CropConfig(**info["crop"]) == cascade.identifier.cfg.crop
    net = EmbeddingNet(info["backbone"], info["dim"], size_features=info["size_features"]).eval()
    net.load_state_dict(load_file(str(run / "embedder.safetensors")))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(net(x), cascade.identifier.model(x), atol=1e-5, rtol=1e-4)
