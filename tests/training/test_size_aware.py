"""Issue 11: the size-aware embedder, per-class thresholds cross-validated
over frames, and prototypes from every frame; the held-out similarity that
calibration reads."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest



pytestmark = pytest.mark.slow


def test_scale_aware_crops_are_the_same_in_training_and_inference(size_aware, tiny_artifact):
    """The training set's crops and size features (without augmentation)
    are exactly what the Identifier computes at inference, from the same
    CropConfig that the embedder's record and the artifact carry."""
    import numpy as np
    import torch

    from plankton.model.crops import CropConfig, size_features
    from plankton.model.embedder import EmbeddingNet
    from plankton.model.identifier import Identifier, IdentifierConfig, to_tensor
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
    from plankton.pipeline.load import load_artifact
    from plankton.artifact.manifest import read_config
    from training import build_prototypes, evaluate

    out, work, _ = size_aware
    _, det_work, _, _ = trained
    args = ["--crops", str(out / "crops.json"), "--detector", str(det_work / "det"), "--embedder", str(work / "emb"), "--det-imgsz", "640",
            "--min-class-samples", "2", "--cv-folds", "2"]
    train_only = build_prototypes.main(args + ["--out", str(tmp_path / "train")])
    every = build_prototypes.main(args + ["--out", str(tmp_path / "all"), "--frames", "all", "--rare-views", "100"])
    a, b = read_config(train_only), read_config(every)
    # Thresholds come from training frames only, whichever frames build the prototypes.
    assert (a["identifier"]["cls_conf"], a["identifier"]["class_thresholds"]) == (b["identifier"]["cls_conf"], b["identifier"]["class_thresholds"])
    assert a["embedder"]["size_features"] == 2 and a["identifier"]["crop"]["size_input"] is True
    assert b["prototypes"]["evaluation_file"] == "prototypes_train.safetensors" and "evaluation_file" not in a["prototypes"]
    assert b["training"]["prototypes"]["frames"] == "all" and b["training"]["prototypes"]["embeddings"] > b["training"]["prototypes"]["crops"]
    # Evaluation scores the training-frames-only prototypes either way: the same identification figures.
    ma = evaluate.main(["--model", str(train_only), "--data", str(out), "--no-umap", "--det-floor", "0.01", "--e2e-floor", "0.05"])
    mb = evaluate.main(["--model", str(every), "--data", str(out), "--no-umap", "--det-floor", "0.01", "--e2e-floor", "0.05"])
    assert ma["identification"]["top1"] == mb["identification"]["top1"] and mb["split"]["prototypes"].startswith("prototypes_train")
    assert load_artifact(every).identifier.cfg.crop.size_input
    # The gallery: the exemplars of each sub-centre are stored with the artifact, one count per training crop.
    from plankton.artifact.gallery import Exemplars
    from plankton.model.prototypes import Prototypes

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

    from plankton.artifact.validation import ValidationSet
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
    from plankton.artifact.manifest import read_config
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
    from plankton.pipeline.load import load_artifact
    from plankton.artifact.manifest import read_config
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

    from plankton.pipeline.load import load_artifact
    from plankton.model.crops import CropConfig
    from plankton.model.embedder import EmbeddingNet
    from plankton.artifact.manifest import DEFAULT_MODEL_DIR as model
    from experiments import unpack_embedder

    run = unpack_embedder.main([str(model), str(tmp_path / "emb")])
    info = json.loads((run / "embedder.json").read_text())
    cascade = load_artifact(model, runtime="torch")
    assert info["names"] == cascade.class_names and CropConfig(**info["crop"]) == cascade.identifier.cfg.crop
    net = EmbeddingNet(info["backbone"], info["dim"], size_features=info["size_features"]).eval()
    net.load_state_dict(load_file(str(run / "embedder.safetensors")))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(net(x), cascade.identifier.model(x), atol=1e-5, rtol=1e-4)
