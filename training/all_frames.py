"""A crop index in which every labelled frame trains: for the embedder that
ships, after cross-validation over frames has chosen its recipe.

    python -m training.all_frames --crops work/cv40/folds/fold0/crops.json --out work/all/crops.json \
        --keep-out plankton_app/examples/frames.coco.json

Frames named in the ``--keep-out`` COCO files (by file name: the app's
example frames, which the tests treat as unseen) become the "val" split,
so ``train_embedder``'s history still has a (tiny) held-out curve and
nothing it trains on is scored there. Paths stay relative to the new
index, as ``load_index`` expects.

``--split-from MODEL`` writes MODEL's split beside the index: it is the
detector's split, which the detector's figures and the count evidence
still need (the detector never trained on its validation frames).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from plankton.coco import read_coco_json
from plankton.files import atomic_write_text


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", required=True, help="a crops.json (training.prepare's or a cv_grid fold's): every frame it lists is used")
    p.add_argument("--out", required=True)
    p.add_argument("--keep-out", nargs="*", default=[], metavar="COCO", help="frames of these COCO files become the val split")
    p.add_argument("--split-from", metavar="MODEL", help="write this model's (the detector's) split as split.json beside the index")
    p.add_argument("--coco", help="with --split-from: the annotation file, recorded in split.json for the tools that read it "
                   "(training.export_onnx, training.quantize --data)")
    args = p.parse_args(argv)
    src = Path(args.crops).resolve().parent
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = {Path(im["file_name"]).name for f in args.keep_out for im in read_coco_json(f)[0]["images"]}
    index = json.loads(Path(args.crops).read_text())
    crops = []
    for r in index["crops"]:
        name = Path(r["file"]).name
        # training.prepare copies frames as ID_NAME; a cv_grid index points at the originals
        held = name in kept or name.split("_", 1)[-1] in kept
        crops.append(r | {"split": "val" if held else "train",
                          "file": os.path.relpath((src / r["file"]).resolve(), out.parent.resolve())})
    frames = {r["image_id"] for r in crops if r["split"] == "train"}
    if args.split_from:
        from plankton.artifact.manifest import read_config

        split = (read_config(args.split_from).get("training") or {}).get("split")
        if not split:
            raise SystemExit(f"{args.split_from}: its training record has no split")
        split["meta"] = split["meta"] | {"embedder_frames": f"every labelled frame but {len(kept)} kept out ({len(frames)} frames)"} | (
            {"annotations": str(Path(args.coco).resolve())} if args.coco else {})
        atomic_write_text(out.parent / "split.json", json.dumps(split, indent=1))
    atomic_write_text(out, json.dumps({"categories": index["categories"], "crops": crops}))
    print(f"{out}: {len(frames)} training frames, {sum(r['split'] == 'train' for r in crops)} crops; "
          f"{len({r['image_id'] for r in crops}) - len(frames)} frames kept out")
    return out


if __name__ == "__main__":
    main()
