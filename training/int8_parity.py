"""INT8 against fp32 ONNX on the validation frames, with the issue's
tolerances: detection AP@0.5 and recall at the default threshold may drop
by at most 0.005, identification top-1 (nearest prototype, ground-truth
boxes) by 0.005 and F1-macro by 0.01. A gain is never a failure.

Also recorded, to see what the figures hide: how many of fp32's boxes
(at the default threshold) INT8 finds again at IoU ≥ 0.9, how often both
name the same species, and the cosine between their embeddings.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

TOLERANCES = {"ap50": 0.005, "recall": 0.005, "top1": 0.005, "f1_macro": 0.01}


def _same_boxes(ref: np.ndarray, got: np.ndarray, iou: float = 0.9) -> tuple[int, int]:
    """(fp32 boxes that an INT8 box overlaps at IoU ≥ ``iou``, fp32 boxes)."""
    from plankton.geometry import box_iou

    if not len(ref):
        return 0, 0
    if not len(got):
        return 0, len(ref)
    return int((box_iou(ref, got).max(1) >= iou).sum()), len(ref)


def _scores(gt, dets, conf, true, sim, names) -> dict:
    """Detection as training.evaluate scores it; identification as its
    ``identification_metrics`` does: nearest prototype on ground-truth boxes,
    over the species that have one, F1-macro over the species present."""
    from sklearn.metrics import accuracy_score, f1_score

    from .detection_metrics import coco_ap, precision_recall

    ap = coco_ap({i: (b, ["plankton"] * len(b)) for i, b in gt.items()}, {i: (d.xyxy, d.score, ["plankton"] * len(d)) for i, d in dets.items()})
    pr = precision_recall(gt, {i: d.xyxy[d.score >= conf] for i, d in dets.items()})
    known = np.isin(true, names)
    t, pred = true[known], np.asarray(names, dtype=object)[sim[known].argmax(1)] if known.any() else np.array([], dtype=object)
    top1 = float(accuracy_score(t, pred)) if len(t) else 0.0
    f1 = float(f1_score(t, pred, labels=sorted(set(t)), average="macro", zero_division=0)) if len(t) else 0.0
    return {"ap50": round(ap["ap50"], 5), "ap50_95": round(ap["ap50_95"], 5), "recall": round(pr["recall"], 5),
            "precision": round(pr["precision"], 5), "top1": round(top1, 5), "f1_macro": round(f1, 5)}


def ap_at_sizes(network, det_cfg, coco, val_ids: list[int], sizes: tuple[int, ...], floor: float = 0.001) -> dict:
    """AP@0.5 of a detector network at other input sizes (long side)."""
    from tqdm import tqdm

    from plankton.model.detector import Detector
    from plankton.images import read_image

    from .detection_metrics import coco_ap

    dets = {s: Detector(network, dataclasses.replace(det_cfg, imgsz=s)) for s in sizes}
    found, gt = {s: {} for s in sizes}, {}
    for i in tqdm(val_ids, desc="AP at other input sizes", unit="frame"):
        image = read_image(coco.path_of(i))
        gt[i] = coco.xyxy_of(i)
        for s, det in dets.items():
            found[s][i] = det.predict(image, conf=floor)
    return {str(s): round(coco_ap({i: (b, ["plankton"] * len(b)) for i, b in gt.items()},
                                  {i: (d.xyxy, d.score, ["plankton"] * len(d)) for i, d in found[s].items()})["ap50"], 5) for s in sizes}


def parity(fp32, candidates: dict, coco, val_ids: list[int], floor: float = 0.001) -> dict:
    """``fp32``: the fp32 ONNX Cascade; ``candidates``: name → (detector
    network, embedder network). Returns fp32's scores, each candidate's
    scores, differences, agreement and pass/fail."""
    from tqdm import tqdm

    from plankton.model.detector import Detector
    from plankton.model.identifier import Identifier
    from plankton.images import read_image
    from plankton.model.prototypes import Prototypes

    protos = fp32.identifier.prototypes
    eval_file = fp32.config["prototypes"].get("evaluation_file")
    if eval_file:  # as training.evaluate scores identification: prototypes from training frames only
        protos = Prototypes.load(fp32.path / eval_file)
    names = list(protos.names)
    cat = {c.id: c.name for c in coco.categories.values()}
    det_cfg, id_cfg = fp32.detector.cfg, fp32.identifier.cfg
    runs = {"fp32": (fp32.detector, Identifier(fp32.identifier.model, id_cfg, protos))}
    for k, (det, emb) in candidates.items():
        runs[k] = (Detector(det, det_cfg), Identifier(emb, id_cfg, protos))
    first = {}  # candidates that share a detector network share its detections
    for k in runs:
        first.setdefault(id(runs[k][0].model), k)
    gt, true = {}, []
    dets = {k: {} for k in runs}
    embs = {k: [] for k in runs}
    secs = {k: 0.0 for k in runs}
    for i in tqdm(val_ids, desc="INT8 parity, validation frames", unit="frame"):
        image = read_image(coco.path_of(i))
        gt[i] = coco.xyxy_of(i)
        true += [cat[b.category_id] for b in coco.boxes_of(i)]
        for k, (det, ident) in runs.items():
            same = first[id(det.model)]
            if same == k:
                t = time.perf_counter()
                dets[k][i] = det.predict(image, conf=floor)
                secs[k] += time.perf_counter() - t
            else:
                dets[k][i], secs[k] = dets[same][i], secs[same]
            embs[k].append(ident.embed_boxes(image, gt[i]))
    true = np.asarray(true, dtype=object)
    emb = {k: np.concatenate(v) for k, v in embs.items()}
    sims = {k: protos.similarity(v) for k, v in emb.items()}
    conf = det_cfg.conf
    base = _scores(gt, dets["fp32"], conf, true, sims["fp32"], names)
    out = {"frames": len(val_ids), "objects": int(len(true)), "detector_floor": floor, "default_threshold": conf,
           "tolerances": TOLERANCES, "fp32": base | {"detector_s_per_frame": round(secs["fp32"] / max(len(val_ids), 1), 3)}, "routes": {}}
    for k in candidates:
        got = _scores(gt, dets[k], conf, true, sims[k], names)
        drop = {m: round(base[m] - got[m], 5) for m in TOLERANCES}
        same = np.array([_same_boxes(dets["fp32"][i].xyxy[dets["fp32"][i].score >= conf], dets[k][i].xyxy[dets[k][i].score >= conf]) for i in gt])
        cos = np.sum(emb["fp32"] * emb[k], axis=1)
        out["routes"][k] = got | {
            "drop_vs_fp32": drop,
            "passed": all(drop[m] <= TOLERANCES[m] for m in TOLERANCES),
            "passed_detection": all(drop[m] <= TOLERANCES[m] for m in ("ap50", "recall")),
            "passed_identification": all(drop[m] <= TOLERANCES[m] for m in ("top1", "f1_macro")),
            "same_boxes_iou0.9": round(float(same[:, 0].sum() / max(same[:, 1].sum(), 1)), 5),
            "same_species": round(float(np.mean(sims["fp32"].argmax(1) == sims[k].argmax(1))), 5) if len(true) else 1.0,
            "embedding_cosine": {"min": round(float(cos.min(initial=1.0)), 5), "mean": round(float(cos.mean()) if len(cos) else 1.0, 5)},
            "detector_s_per_frame": round(secs[k] / max(len(val_ids), 1), 3),
        }
    return out


__all__ = ["TOLERANCES", "ap_at_sizes", "parity"]
