"""The bundled default model on committed validation frames (frames it
never trained on), against their known boxes. Bounds are loose: a broken
or untrained model fails them, a healthy one passes with room."""
from __future__ import annotations

import numpy as np
import pytest

from plankton.pipeline.load import load_artifact
from plankton.artifact.manifest import DEFAULT_MODEL_DIR, read_config
from plankton.geometry import box_iou
from plankton.images import read_image
from plankton.results import Detections


@pytest.fixture(scope="module")
def cascade():
    return load_artifact(DEFAULT_MODEL_DIR)


def test_bundled_model_is_complete_and_verified():
    cfg = read_config(DEFAULT_MODEL_DIR, check_files=True)
    for name in ("metrics.json", "validation.safetensors", "confusion.png"):
        assert name in cfg["files"]
    split = cfg["training"]["split"]
    assert not set(split["train_ids"]) & set(split["val_ids"])
    sizes = sum(f["bytes"] for f in cfg["files"].values())
    # fp32 ONNX files, both INT8 networks, exemplars and the training-frames-only prototypes included (62 MB)
    assert sizes < 65e6, f"bundled model is {sizes / 1e6:.1f} MB"


def test_committed_frames_were_not_trained_on(frames_coco):
    """Neither the networks nor the prototypes saw the committed frames:
    prototypes built from every labelled frame keep them out."""
    training = read_config(DEFAULT_MODEL_DIR, check_files=False)["training"]
    train_files = {f.split("/")[-1] for f in training["split"]["train_files"]}
    committed = {im.file_name.split("/")[-1] for im in frames_coco.images.values()}
    assert committed and not committed & train_files
    if training["prototypes"].get("frames") == "all":
        assert committed <= set(training["prototypes"]["kept_out_frames"])


def test_finds_the_known_objects(cascade, frames_coco):
    found = total = 0
    for i in frames_coco.images:
        gt = frames_coco.xyxy_of(i)
        det = cascade.detector.predict(read_image(frames_coco.path_of(i)))
        total += len(gt)
        if len(det):
            found += int((box_iou(gt, det.xyxy).max(1) >= 0.5).sum())
    assert found / total >= 0.7, f"found {found} of {total} known objects"


def test_names_the_known_objects(cascade, frames_coco):
    names = {c.id: c.name for c in frames_coco.categories.values()}
    right = total = 0
    for i in frames_coco.images:
        boxes = frames_coco.boxes_of(i)
        image = read_image(frames_coco.path_of(i))
        frame = cascade.analyse_boxes(image, Detections(frames_coco.xyxy_of(i), np.ones(len(boxes)))).resolve(0.0, -1.0)
        assert len(frame.objects) == len(boxes) > 0  # one answer per known box, or zip() below would drop some
        right += sum(o.species == names[b.category_id] for o, b in zip(frame.objects, boxes))
        total += len(boxes)
    assert right / total >= 0.7, f"named {right} of {total} known objects correctly"


def test_onnx_runtime_matches_pytorch_on_the_bundled_model(cascade, frame):
    """The bundled model carries fp32 ONNX files, and their answers are the
    PyTorch path's ("auto" prefers its INT8 files: tests/test_int8.py)."""
    image, _ = frame
    fast = load_artifact(DEFAULT_MODEL_DIR, runtime="onnx")
    assert fast.runtime == "onnx"
    a, b = cascade.predict(image), fast.predict(image)
    assert len(a.objects) > 0, "the bundled model finds objects in a committed frame: the comparison is not of two empty lists"
    assert [o.species for o in a.objects] == [o.species for o in b.objects]
    np.testing.assert_allclose([o.xyxy for o in a.objects], [o.xyxy for o in b.objects], atol=1.0)


def test_config_holds_what_inference_reads_and_the_record_sits_beside_it():
    import json

    raw = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert "training" not in raw and "training.json" in raw["files"]
    assert (DEFAULT_MODEL_DIR / "config.json").stat().st_size <= 20_000
    assert read_config(DEFAULT_MODEL_DIR, check_files=False)["training"]["split"]["val_ids"]


def test_an_artifact_with_its_record_inline_still_loads_and_splits_on_write(tmp_path, tiny_artifact):
    import json
    import shutil

    from plankton.pipeline.load import load_artifact
    from plankton.artifact.manifest import write_manifest

    folder = tmp_path / "old"
    shutil.copytree(tiny_artifact, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "training.json").unlink(missing_ok=True)
    config["files"].pop("training.json", None)
    config["training"] = {"epochs": 3}
    (folder / "config.json").write_text(json.dumps(config))  # as published before the record moved out
    assert load_artifact(folder).config["training"] == {"epochs": 3}
    write_manifest(folder)
    assert "training" not in json.loads((folder / "config.json").read_text())
    assert json.loads((folder / "training.json").read_text()) == {"epochs": 3}
    assert load_artifact(folder).config["training"] == {"epochs": 3}
