"""Detection metrics: COCO AP through pycocotools, and precision/recall at
one threshold by greedy IoU matching."""
from __future__ import annotations

import contextlib
import io

import numpy as np

from plankton.geometry import match_boxes


def coco_ap(gt: dict, dets: dict) -> dict:
    """gt: image id → (N×4 xyxy pixels, N class names); dets: image id →
    (M×4 xyxy pixels, M scores, M class names). Returns AP@0.5 and
    AP@0.5:0.95 averaged over classes that have ground truth, with COCO's
    100 detections per image (frames here hold at most 39 objects)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    classes = sorted({n for _, names in gt.values() for n in names})
    cid = {n: i + 1 for i, n in enumerate(classes)}
    images, anns, results = [], [], []
    for i, (boxes, names) in gt.items():
        images.append({"id": int(i)})
        for b, n in zip(boxes, names):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": int(i), "category_id": cid[n], "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": 0})
    for i, (boxes, scores, names) in dets.items():
        for b, s, n in zip(boxes, scores, names):
            if n in cid:
                results.append({"image_id": int(i), "category_id": cid[n], "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)})
    if not anns or not results:
        return {"ap50": 0.0, "ap50_95": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": v, "name": k} for k, v in cid.items()]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return {"ap50": float(ev.stats[1]), "ap50_95": float(ev.stats[0])}


def precision_recall(gt: dict, dets: dict, iou: float = 0.5) -> dict:
    """gt: image id → N×4 xyxy; dets: image id → M×4 xyxy, sorted by
    score (highest first). Each detection takes the unmatched ground-truth
    box it overlaps most, if IoU ≥ ``iou``."""
    tp = n_det = n_gt = 0
    for i, g in gt.items():
        d = dets.get(i, np.zeros((0, 4)))
        n_det, n_gt = n_det + len(d), n_gt + len(g)
        if not len(d) or not len(g):
            continue
        tp += int((match_boxes(d, -np.arange(len(d), dtype=np.float32), g, iou) >= 0).sum())  # in the given order
    return {"precision": tp / n_det if n_det else 0.0, "recall": tp / n_gt if n_gt else 0.0, "true_positives": tp, "detections": n_det, "objects": n_gt}
