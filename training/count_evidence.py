"""What the count calibration learns from: the model run on frames it never
trained on, every candidate box at the detector floor with its score and
its similarity to each species, beside the annotated boxes.

    python -m training.count_evidence --model models/default --coco PATH/annotations.coco.json --out work/counts/evidence.safetensors

The frames are the model's validation frames (``training.split.val_ids``):
the detector trained on the others, so its scores there are not those of a
new frame. Similarities are scored against the training-frames-only
prototypes when the artifact has them, as ``training.evaluate`` does.

When the shipped embedder trained on every labelled frame, its naming of
these frames would be too good; cross-fit it instead:

    python -m training.count_evidence --model models/default --coco PATH/annotations.coco.json --out work/counts/evidence.safetensors \
        --fold-models work/cv40/runs/lite0-96-sqrt-e12-s0 --folds-json work/cv40/folds.json

Each frame's candidates and annotated boxes are then embedded by the fold
embedder that held the frame out, and named against prototypes built from
that embedder's training folds (``training.count_crossfit``); the detector
part is unchanged (the model's detector on its validation frames).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .args import coco_arg, model_arg
from plankton.pipeline.load import load_artifact
from plankton.coco import load_coco
from plankton.images import read_image
from plankton.model.prototypes import Prototypes

from .common import log, setup


def collect(cascade, coco, image_ids: list[int], floor: float, namers: dict | None = None) -> dict[str, np.ndarray]:
    """Flat arrays over frames: candidates (``det_*``) and annotated boxes
    (``gt_*``), each row tagged with its frame's index in ``image_ids``.
    ``namers``: {image id: what embeds and names that frame's boxes}
    (cross-fitting); by default the model's own identifier."""
    cat = {c.id: c.name for c in coco.categories.values()}
    det_frame, det_xyxy, det_score, det_sim, gt_frame, gt_xyxy, gt_label, gt_sim = ([] for _ in range(8))
    for f, i in enumerate(tqdm(image_ids, desc="frames", unit="frame")):
        image = read_image(coco.path_of(i))
        namer = cascade.identifier if namers is None else namers[i]
        if namers is None:
            a = cascade.analyse(image, floor=floor)
            dets, sim = a.detections, a.similarity
        else:
            dets = cascade.detector.predict_batch([image], conf=floor)[0]
            sim = namer.similarity(namer.embed_boxes(image, dets.xyxy))
        det_frame.append(np.full(len(dets), f)), det_xyxy.append(dets.xyxy)
        det_score.append(dets.score), det_sim.append(sim)
        boxes = coco.boxes_of(i)
        gt_frame.append(np.full(len(boxes), f)), gt_xyxy.append(coco.xyxy_of(i).reshape(-1, 4))
        gt_label += [cat[b.category_id] for b in boxes]
        gt_sim.append(namer.similarity(namer.embed_boxes(image, coco.xyxy_of(i).reshape(-1, 4))))
    names = cascade.class_names
    label_index = {n: k for k, n in enumerate(names)}
    return {"det_frame": np.concatenate(det_frame).astype(np.int32), "det_xyxy": np.concatenate(det_xyxy).astype(np.float32),
            "det_score": np.concatenate(det_score).astype(np.float32), "det_similarity": np.concatenate(det_sim).astype(np.float32),
            "gt_frame": np.concatenate(gt_frame).astype(np.int32), "gt_xyxy": np.concatenate(gt_xyxy).astype(np.float32),
            "gt_label": np.array([label_index.get(n, -1) for n in gt_label], np.int32),
            "gt_similarity": np.concatenate(gt_sim).astype(np.float32), "frame_id": np.array(image_ids, np.int64)}


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arg(p)
    coco_arg(p, help="annotation file whose frames include the model's validation frames")
    p.add_argument("--out", required=True, help="safetensors file to write")
    p.add_argument("--runtime", default="auto", help="the runtime users get by default (its scores are the ones calibrated)")
    p.add_argument("--frames", choices=["val", "all"], default="val",
                   help="val: the model's validation frames (default); all: every frame of the file (frames the model never saw, e.g. a kept-out set)")
    p.add_argument("--limit", type=int, default=0, help="only this many frames (quick tests)")
    p.add_argument("--fold-models", default=None, help="cross-fit the naming: DIR/foldK/ holds fold K's embedder (experiments.cv_grid's runs/RUN)")
    p.add_argument("--folds-json", default=None, help="with --fold-models: {\"frames\": [[image ids held out by fold 0], ...]} (cv_grid's folds.json)")
    args = p.parse_args(argv)
    if bool(args.fold_models) != bool(args.folds_json):
        p.error("--fold-models and --folds-json go together")
    setup()
    from safetensors.numpy import save_file

    cascade = load_artifact(args.model, runtime=args.runtime)
    eval_file = cascade.config["prototypes"].get("evaluation_file")
    if eval_file:  # the shipped prototypes saw the validation frames
        cascade.identifier.prototypes = Prototypes.load(Path(args.model) / eval_file)
    split = (cascade.config.get("training") or {}).get("split") or {}
    coco = load_coco(args.coco, strict=False)
    ids = sorted(coco.images) if args.frames == "all" else [i for i in split.get("val_ids", []) if i in coco.images]
    if not ids:
        raise SystemExit(f"{args.coco}: none of the model's validation frames are in it")
    ids = ids[: args.limit] if args.limit else ids
    namers = None
    if args.fold_models:
        from .count_crossfit import fold_namers

        namers = fold_namers(args.fold_models, args.folds_json, coco, ids, cascade.class_names, cascade.identifier.prototypes.mode,
                             cascade.identifier.cfg.tta_margin)
    arrays = collect(cascade, coco, ids, cascade.det_floor, namers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    naming = f"cross-fitted: {Path(args.fold_models).name}, {len(set(map(id, namers.values())))} fold embedders" if namers else "the model's embedder"
    save_file(arrays, str(out), metadata={"names": "\n".join(cascade.class_names), "runtime": cascade.runtime, "floor": str(cascade.det_floor), "naming": naming})
    log.info("%d frames, %d candidates, %d annotated boxes (%s; naming: %s) → %s", len(ids), len(arrays["det_score"]), len(arrays["gt_label"]),
             cascade.runtime, naming, out)
    return out


if __name__ == "__main__":
    main()
