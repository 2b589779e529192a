"""The range of the training frames, for ``predict``'s quality flags.

    python -m training.frame_ranges --model models/default --coco DATA/annotations.coco.json [--images DIR] [--split train]

Runs the model over the frames of its training split (config.json
``training.split.train_ids``) exactly as ``predict`` does with the model's
defaults, measures each frame as ``predict`` measures it
(``plankton.quality``: focus, brightness and contrast on the decoded frame;
coverage, objects, unknown share and mean similarity from the model's
answers), and stores the range of each statistic as ``frame_quality.json``
in the model folder, then updates the manifest so config.json lists it.
The object statistics are measured on frames whose crops built the
prototypes: their unknown share is a little lower than on new frames of
the same kind, which makes the ``unknown_high`` flag conservative.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from .args import coco_arg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.frame_ranges", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder (frame_quality.json is written into it)")
    coco_arg(p, help="the COCO file the model was trained from")
    p.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    p.add_argument("--split", choices=["train", "val"], default="train", help="which of the model's recorded splits (default %(default)s)")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--dry-run", action="store_true", help="print the ranges, write nothing")
    args = p.parse_args(argv)

    from plankton.pipeline.load import load_artifact
    from plankton.coco import load_coco
    from plankton.files import atomic_write_text, sha256
    from plankton.images import read_image
    from plankton.artifact.manifest import read_config, write_manifest
    from plankton.quality import RANGES_FILE, SIDES, compute_ranges, frame_values, image_stats

    folder = Path(args.model)
    config = read_config(folder)
    ids = ((config.get("training") or {}).get("split") or {}).get(f"{args.split}_ids")
    if not ids:
        print(f"frame_ranges: {folder}/config.json records no training.split.{args.split}_ids", file=sys.stderr)
        return 2
    ds = load_coco(args.coco, args.images, strict=False)
    missing = sorted(set(ids) - set(ds.images))
    if missing:
        print(f"frame_ranges: {len(missing)} of the {len(ids)} split frames are not in {args.coco} (first: {missing[0]}): another data set?",
              file=sys.stderr)
        return 2
    cascade = load_artifact(folder, runtime=args.runtime)
    values: dict[str, list] = {k: [] for k in SIDES}
    for image_id in tqdm(sorted(ids), desc="training frames", unit="frame"):
        image = read_image(ds.path_of(image_id), max_pixels=None)
        frame = cascade.predict(image, ds.images[image_id].file_name)
        frame.stats = image_stats(image)
        for k, v in frame_values(frame).items():
            values[k].append(v)
    doc = compute_ranges(values, split=args.split, frames=len(ids), coco=Path(args.coco).name, coco_sha256=sha256(args.coco),
                         thresholds={"det_conf": cascade.det_conf, "cls_conf": cascade.cls_conf}, runtime=cascade.runtime)
    text = json.dumps(doc, indent=2) + "\n"
    print(text)
    if not args.dry_run:
        atomic_write_text(folder / RANGES_FILE, text)
        write_manifest(folder)
        print(f"→ {folder / RANGES_FILE} (and the manifest in config.json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
