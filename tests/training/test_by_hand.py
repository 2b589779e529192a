"""Training's metrics and bookkeeping, checked against figures worked out
by hand: identification metrics, COCO AP, precision and recall, splits."""
from __future__ import annotations


import numpy as np
import pytest



pytestmark = pytest.mark.slow


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
