"""The bundled default model on committed validation frames (frames it
never trained on), against their known boxes. Bounds are loose: a broken
or untrained model fails them, a healthy one passes with room."""
from __future__ import annotations

import numpy as np
import pytest

from plankton.artifact import load_artifact
from plankton.manifest import DEFAULT_MODEL_DIR, read_config
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
    assert sizes < 45e6, f"bundled model is {sizes / 1e6:.1f} MB"


def test_committed_frames_were_not_trained_on(frames_coco):
    train_files = {f.split("/")[-1] for f in read_config(DEFAULT_MODEL_DIR, check_files=False)["training"]["split"]["train_files"]}
    for im in frames_coco.images.values():
        assert im.file_name.split("/")[-1] not in train_files


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
    """The bundled model carries ONNX files; "auto" picks them, and the
    answers are the PyTorch path's."""
    image, _ = frame
    fast = load_artifact(DEFAULT_MODEL_DIR, runtime="auto")
    assert fast.runtime == "onnx"
    a, b = cascade.predict(image), fast.predict(image)
    assert len(a.objects) > 0, "the bundled model finds objects in a committed frame: the comparison is not of two empty lists"
    assert [o.species for o in a.objects] == [o.species for o in b.objects]
    np.testing.assert_allclose([o.xyxy for o in a.objects], [o.xyxy for o in b.objects], atol=1.0)
