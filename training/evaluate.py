"""Evaluate a model artifact on the validation frames (never trained on)
and store the results in it: metrics.json, per_class.csv, confusion.png,
reliability.png, learning_curve.png and validation.safetensors (embeddings,
similarities and their UMAP layout, for the app).

    python -m training.evaluate --model models/default --data work/data

A model whose embedder trained on every labelled frame has no validation
frames for identification: ``--oof RUN`` scores it on the out-of-fold
objects of the cross-validation that chose its recipe (``training.crossfit``:
each object matched by the fold model that never saw its frame), every
frame but the app's examples. The detector is still scored on its own
validation frames, which it never trained on; the app's map keeps those
frames' objects, placed by the shipped embedder, beside their out-of-fold
similarities.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm

from .args import coco_arg, model_arg, seed_arg
from plankton.pipeline.load import load_artifact
from plankton.files import atomic_write_text
from plankton.artifact.manifest import write_manifest
from plankton.coco import load_coco
from plankton.images import read_image
from plankton.metrics import coverage_curve, open_set, per_class_table, predict_labels, topk_accuracy
from plankton.model.prototypes import Prototypes, shifted_thresholds
from plankton.results import UNKNOWN, Detections
from plankton.artifact.validation import ValidationSet
from plankton.run.writers import csv_text

from . import plots
from .common import hardware, log, setup, write_json

try:  # hub/ lives in a checkout, beside training/
    from hub.push import add_push_arguments, push_from_args
except ImportError:
    add_push_arguments = push_from_args = None
from .detection_metrics import coco_ap, precision_recall


def umap_layout(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """N×D unit embeddings → N×2 UMAP layout (cosine metric), for the app's map."""
    import umap

    n = len(embeddings)
    reducer = umap.UMAP(n_neighbors=min(15, max(n - 1, 2)), min_dist=0.1, metric="cosine", random_state=seed)
    return reducer.fit_transform(np.asarray(embeddings, np.float32)).astype(np.float32)


def identification_metrics(true: np.ndarray, sim: np.ndarray, names: list[str], threshold: float, offsets: np.ndarray | None = None,
                           train_counts: dict[str, int] | None = None, min_train: int = 10) -> dict:
    """Scores on ground-truth boxes. top-1/top-5/F1 use the best match
    (no threshold) over the species that have a prototype;
    ``f1_macro_common`` is F1-macro over the species present with at least
    ``min_train`` training boxes (``train_counts``). ``per_class`` applies
    the thresholds (``threshold`` plus each class's ``offsets``);
    ``open_set`` removes each species' prototype in turn and counts how
    often its crops then come out unknown."""
    offsets = np.zeros(len(names), np.float32) if offsets is None else np.asarray(offsets, np.float32)
    thr = shifted_thresholds(threshold, offsets)
    known = np.isin(true, names)
    t, s = true[known], sim[known]
    pred = np.asarray(names, dtype=object)[s.argmax(1)] if len(t) else np.array([], dtype=object)
    present = sorted(set(t))
    common = [c for c in present if (train_counts or {}).get(c, 0) >= min_train]
    at = predict_labels(s, names, thr)  # as the cascade answers: unknown below the best class's threshold
    named = at != UNKNOWN
    return {
        "objects": int(len(t)), "objects_without_prototype": int((~known).sum()), "species": len(present),
        "top1": float(accuracy_score(t, pred)), "top5": topk_accuracy(t, s, names, 5),
        "f1_macro": float(f1_score(t, pred, labels=present, average="macro", zero_division=0)),
        "f1_macro_common": float(f1_score(t, pred, labels=common, average="macro", zero_division=0)) if common else None,
        "common_species": {"min_training_boxes": min_train, "species": len(common)},
        "f1_weighted": float(f1_score(t, pred, labels=present, average="weighted", zero_division=0)),
        "threshold": threshold,
        "class_thresholds": {n: float(v) for n, v in zip(names, thr) if v != threshold},
        "unknown_rate_at_threshold": float(np.mean(~named)) if len(t) else 0.0,
        "top1_at_threshold": float(np.mean(at == t)) if len(t) else 0.0,
        "accuracy_of_named_at_threshold": float(np.mean(at[named] == t[named])) if named.any() else None,
        "per_class": per_class_table(true, sim, names, thr),
        "per_class_argmax": per_class_table(t, s, names, -1.0),
        "coverage": coverage_curve(t, s, names, offsets=offsets),
        "open_set": open_set(t, s, names, thr),
    }


def counting_report(cascade) -> dict | None:
    """The counts' figures, by cross-validation over the frames of the
    model's count calibration (5 folds, two fold seeds), at its defaults."""
    if cascade.counts is None:
        return None
    from .calibrate_counts import cross_validate

    counting = cascade.counting
    cv = cross_validate(cascade.counts, cascade.count_model().thresholds, cascade.det_conf)
    return {k: counting.get(k) for k in ("det_conf", "containment", "method", "validation_frames", "validation_objects")} | {"cross_validation": cv}


def out_of_fold(run: str, cascade, coco, cat_names: dict):
    """(every out-of-fold object, the kept-out frame names, boxes per species on the frames the embedder trained on)."""
    from .crossfit import load

    protos = (cascade.config.get("training") or {}).get("prototypes") or {}
    kept = set(protos.get("kept_out_frames") or [])
    oof = load(run, cascade.class_names, mode=cascade.identifier.prototypes.mode, tta_margin=cascade.identifier.cfg.tta_margin)
    counts = Counter(cat_names[b.category_id] for b in coco.boxes if Path(coco.images[b.image_id].file_name).name not in kept)
    return oof, kept, counts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arg(p)
    p.add_argument("--data", default="work/data", help="folder from training.prepare (split.json, crops.json)")
    coco_arg(p, required=False, help="annotation file (default: the one recorded in split.json)")
    p.add_argument("--det-floor", type=float, default=0.001, help="detections kept for AP")
    p.add_argument("--e2e-floor", type=float, default=0.01, help="detections identified for end-to-end AP")
    p.add_argument("--limit", type=int, default=0, help="evaluate only this many validation frames (quick tests)")
    p.add_argument("--no-umap", action="store_true", help="skip the UMAP layout (quick tests)")
    p.add_argument("--identification-only", action="store_true", help="skip the detector (comparing identifiers: faster)")
    p.add_argument("--min-train", type=int, default=10, help="f1_macro_common: species with at least this many training boxes")
    p.add_argument("--oof", metavar="RUN", help="score identification on these cross-validation fold models' out-of-fold objects "
                   "(experiments.cv_grid OUT/runs/RUN): for an embedder that trained on every frame")
    seed_arg(p)
    if add_push_arguments:
        add_push_arguments(p)
    return p


def run_frames(cascade, coco, val_ids, cat_names, detect: bool, args) -> dict:
    """The models on every validation frame: ground truth, detections at the
    AP floor, embeddings of the ground-truth boxes, end-to-end results."""
    r = {"gt": {}, "dets": {}, "e2e": {}, "true": [], "embs": [], "frames": [], "ann": [], "t_det": 0.0, "t_id": 0.0}
    for i in tqdm(val_ids, desc="validation frames", unit="frame"):
        image = read_image(coco.path_of(i))
        gt = r["gt"][i] = [(b.xyxy, cat_names[b.category_id]) for b in coco.boxes_of(i)]
        t0 = time.perf_counter()
        if detect:
            r["dets"][i] = cascade.detector.predict(image, conf=args.det_floor)
        t1 = time.perf_counter()
        r["embs"].append(cascade.analyse_boxes(image, Detections(coco.xyxy_of(i), np.ones(len(gt)))).embeddings)
        r["true"] += [n for _, n in gt]
        r["ann"] += [b.id for b in coco.boxes_of(i)]
        r["frames"] += [i] * len(gt)
        if detect:
            d = r["dets"][i]
            r["e2e"][i] = cascade.analyse_boxes(image, d[d.score >= args.e2e_floor]).resolve(args.e2e_floor, cascade.cls_conf)
        r["t_det"], r["t_id"] = r["t_det"] + t1 - t0, r["t_id"] + time.perf_counter() - t1
    return r


def detection_figures(cascade, r: dict, e2e_floor: float) -> tuple[dict, dict]:
    """(detection AP, recall and precision at the candidate floor and the
    counting point; species-aware end-to-end AP)."""
    gt, dets, floor = r["gt"], r["dets"], cascade.det_floor
    det_gt = {i: np.array([b for b, _ in g], np.float32).reshape(-1, 4) for i, g in gt.items()}
    detection = coco_ap({i: (det_gt[i], ["plankton"] * len(det_gt[i])) for i in gt}, {i: (d.xyxy, d.score, ["plankton"] * len(d)) for i, d in dets.items()})
    detection |= precision_recall(det_gt, {i: d.xyxy[d.score >= floor] for i, d in dets.items()}) | {"threshold": floor}
    if cascade.det_conf != floor:
        detection["counting_point"] = precision_recall(det_gt, {i: d.xyxy[d.score >= cascade.det_conf] for i, d in dets.items()}) | {"threshold": cascade.det_conf}
    e2e_ap = coco_ap({i: (det_gt[i], [n for _, n in gt[i]]) for i in gt},
                     {i: (np.array([o.xyxy for o in f.objects], np.float32).reshape(-1, 4), np.array([o.det_score for o in f.objects]), [o.species for o in f.objects])
                      for i, f in r["e2e"].items()})
    return detection, {"species_ap50": e2e_ap["ap50"], "species_ap50_95": e2e_ap["ap50_95"], "detector_floor": e2e_floor, "identifier_threshold": cascade.cls_conf}


def write_outputs(model_dir: Path, cascade, metrics: dict, true, sim, offsets) -> None:
    """metrics.json, per_class.csv, the plots, and the manifest."""
    names, cls_conf, ident = cascade.class_names, cascade.cls_conf, metrics["identification"]
    training = cascade.config.get("training", {})
    write_json(model_dir / "metrics.json", metrics)
    rows = [r | {"threshold": ident["class_thresholds"].get(r["species"], cls_conf) if r["species"] in names else ""} for r in ident["per_class"]]
    atomic_write_text(model_dir / "per_class.csv", csv_text(rows, ["species", "precision", "recall", "f1", "support", "threshold"]))
    plots.confusion(true, predict_labels(sim, names, shifted_thresholds(cls_conf, offsets)), model_dir / "confusion.png")
    plots.reliability(true, sim, names, model_dir / "reliability.png")
    plots.learning_curves(metrics["learning_curve"], (training.get("embedder") or {}).get("history"), model_dir / "learning_curve.png")
    write_manifest(model_dir)


def log_summary(cascade, metrics: dict) -> None:
    ident, detection = metrics["identification"], metrics["detection"]
    log.info("identification top-1 %.3f F1-macro %.3f (common %.3f) unknown %.3f named-right %.3f open-set %.2f/%.2f",
             ident["top1"], ident["f1_macro"], ident["f1_macro_common"] or float("nan"), ident["unknown_rate_at_threshold"],
             ident["accuracy_of_named_at_threshold"] or float("nan"), ident["open_set"]["unknown_rate_macro"] or float("nan"),
             ident["open_set"]["unknown_rate_weighted"] or float("nan"))
    if metrics["counting"]:
        cv = metrics["counting"]["cross_validation"]
        log.info("counts at det_conf %.2f: rows shown %.3f× annotated; total %+.3f → %+.3f, Bray-Curtis %.3f → %.3f (raw → estimated, pooled); "
                 "interval coverage %.2f", cascade.det_conf, cv["rows_ratio"], cv["pooled_total_error_raw"], cv["pooled_total_error_est"],
                 cv["pooled_bray_curtis_raw"], cv["pooled_bray_curtis_est"], cv["coverage"])
    if metrics["end_to_end"]:
        log.info("detection AP50 %.3f recall %.3f | end-to-end AP50 %.3f", detection["ap50"], detection["recall"], metrics["end_to_end"]["species_ap50"])


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    setup(args.seed)
    start = time.perf_counter()
    model_dir, data = Path(args.model), Path(args.data)
    split = json.loads((data / "split.json").read_text())
    coco = load_coco(args.coco or split["meta"]["annotations"], strict=False)
    cascade = load_artifact(model_dir)
    # The model's own split: a model built with --split-seed is scored on its own validation frames.
    model_split = (cascade.config.get("training") or {}).get("split") or split
    resplit = (model_split.get("meta") or {}).get("resplit_seed")
    val_ids = model_split["val_ids"][: args.limit] if args.limit else model_split["val_ids"]
    eval_file = cascade.config["prototypes"].get("evaluation_file")
    if eval_file:  # shipped prototypes include validation frames: score the training-frames-only ones
        cascade.identifier.prototypes = Prototypes.load(model_dir / eval_file)
        log.info("identification scored with %s (prototypes from training frames only)", eval_file)
    names, cat_names = cascade.class_names, {c.id: c.name for c in coco.categories.values()}
    train_counts = Counter(cat_names[b.category_id] for i in model_split["train_ids"] if i in coco.images for b in coco.boxes_of(i))
    offsets = cascade.identifier.cfg.offsets(names)
    detect = resplit is None and not args.identification_only  # the detector trained on the shipped split: other splits' validation frames are not new to it

    r = run_frames(cascade, coco, val_ids, cat_names, detect, args)
    emb = np.concatenate(r["embs"]) if r["embs"] else np.zeros((0, cascade.identifier.model.dim), np.float32)
    true, sim = np.asarray(r["true"], dtype=object), cascade.identifier.similarity(emb)
    detection, end_to_end = detection_figures(cascade, r, args.e2e_floor) if detect else (None, None)
    if args.oof:
        every, kept, train_counts = out_of_fold(args.oof, cascade, coco, cat_names)
        oof = every.without(kept)
        # an object whose fold had no training box of its species was unseen there: an open-set case, not a closed-set error
        seen = ~np.isnan(oof.own()) | ~np.isin(oof.true, names)
        ident = identification_metrics(oof.true[seen], oof.similarity[seen], names, cascade.cls_conf, offsets, train_counts, args.min_train)
        ident["scored"] = {"out_of_fold": "/".join(Path(args.oof).parts[-3:]), "folds": int(len(set(oof.fold.tolist()))),
                           "frames": int(len(set(oof.frames.tolist()))), "unseen_in_their_fold": int((~seen).sum())}
        row = {int(a): k for k, a in enumerate(every.ann_id)}
        sim = np.stack([every.similarity[row[a]] for a in r["ann"]]) if r["ann"] else sim  # the map's objects, scored out of fold
    else:
        ident = identification_metrics(true, sim, names, cascade.cls_conf, offsets, train_counts, args.min_train)

    vs = ValidationSet(emb, list(true), sim, names, np.zeros((len(emb), 2), np.float32), np.zeros((len(names), 2), np.float32), np.array(r["frames"], np.int64))
    if not args.no_umap and len(emb) > 5:
        layout = umap_layout(np.vstack([emb, cascade.identifier.prototypes.means]), args.seed)
        vs.layout, vs.prototype_layout = layout[: len(emb)], layout[len(emb):]
    vs.save(model_dir / "validation.safetensors")

    n = max(len(val_ids), 1)
    metrics = {
        "split": {"validation_frames": len(val_ids), "validation_objects": int(len(true)), "resplit_seed": resplit,
                  "annotations_sha256": split["meta"].get("annotations_sha256"),
                  "prototypes": f"{eval_file} (training frames only)" if eval_file else "the model's own"},
        "detection": detection if detect else {"skipped": "--identification-only" if resplit is None else
                                               f"the detector trained on frames of this split's validation set (split seed {resplit})"},
        "identification": ident,
        "end_to_end": end_to_end,
        "counting": counting_report(cascade),
        "learning_curve": ((cascade.config.get("training") or {}).get("detector") or {}).get("learning_curve"),
        "evaluation": {"command": "python -m training.evaluate " + " ".join(sys.argv[1:] if argv is None else argv), "hardware": hardware(),
                       "wall_s": round(time.perf_counter() - start, 1), "detector_s_per_frame": round(r["t_det"] / n, 3), "identifier_s_per_frame": round(r["t_id"] / n, 3)},
    }
    write_outputs(model_dir, cascade, metrics, true, sim, offsets)
    log_summary(cascade, metrics)
    if push_from_args and getattr(args, "push_to_hub", None):
        push_from_args(model_dir, args)
    return metrics


if __name__ == "__main__":
    main()
