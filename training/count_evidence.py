"""What the count calibration learns from: the model run on frames it never
trained on, every candidate box at the detector floor with its score and
its similarity to each species, beside the annotated boxes.

    python -m training.count_evidence --model models/default --coco PATH/annotations.coco.json --out work/counts/evidence.safetensors

The frames are the model's validation frames (``training.split.val_ids``):
the detector trained on the others, so its scores there are not those of a
new frame. Similarities are scored against the training-frames-only
prototypes when the artifact has them, as ``training.evaluate`` does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .args import coco_arg, model_arg
from plankton.artifact.folder import load_artifact
from plankton.coco import load_coco
from plankton.images import read_image
from plankton.model.prototypes import Prototypes

from .common import log, setup


def collect(cascade, coco, image_ids: list[int], floor: float) -> dict[str, np.ndarray]:
    """Flat arrays over frames: candidates (``det_*``) and annotated boxes
    (``gt_*``), each row tagged with its frame's index in ``image_ids``."""
    cat = {c.id: c.name for c in coco.categories.values()}
    det_frame, det_xyxy, det_score, det_sim, gt_frame, gt_xyxy, gt_label, gt_sim = ([] for _ in range(8))
    for f, i in enumerate(tqdm(image_ids, desc="frames", unit="frame")):
        image = read_image(coco.path_of(i))
        a = cascade.analyse(image, floor=floor)
        det_frame.append(np.full(len(a.detections), f)), det_xyxy.append(a.detections.xyxy)
        det_score.append(a.detections.score), det_sim.append(a.similarity)
        boxes = coco.boxes_of(i)
        gt_frame.append(np.full(len(boxes), f)), gt_xyxy.append(coco.xyxy_of(i))
        gt_label += [cat[b.category_id] for b in boxes]
        gt_sim.append(cascade.identifier.similarity(cascade.identifier.embed_boxes(image, coco.xyxy_of(i))))
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
    args = p.parse_args(argv)
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
    arrays = collect(cascade, coco, ids, cascade.det_floor)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(out), metadata={"names": "\n".join(cascade.class_names), "runtime": cascade.runtime, "floor": str(cascade.det_floor)})
    log.info("%d frames, %d candidates, %d annotated boxes (%s) → %s", len(ids), len(arrays["det_score"]), len(arrays["gt_label"]), cascade.runtime, out)
    return out


if __name__ == "__main__":
    main()
