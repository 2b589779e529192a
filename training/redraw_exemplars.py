"""Redraw a model's gallery exemplars (``exemplars.safetensors``) from its
training crops, with its own embedder and prototypes: nothing that
inference reads changes. For a model built before exemplars kept each
object's shape (a filament squeezed into a square showed nothing).

    python -m training.redraw_exemplars models/default --crops work/data/crops.json --keep-out plankton_app/examples/frames.coco.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from plankton.pipeline.load import load_artifact
from plankton.coco import read_coco_json

from .build_prototypes import embed_records, write_exemplars
from .common import log, setup
from .crops_data import FrameCache, load_index


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder")
    p.add_argument("--crops", required=True, help="crop index from training.prepare")
    p.add_argument("--frames", choices=["train", "all"], default="all", help="the frames the prototypes were built from (default all)")
    p.add_argument("--keep-out", nargs="*", default=[], help="COCO files whose frames the prototypes left out")
    args = p.parse_args(argv)
    setup()
    cascade = load_artifact(args.model)
    protos = cascade.identifier.prototypes
    records, _, _ = load_index(args.crops, "train", protos.names)
    if args.frames == "all":
        kept_out = {Path(im["file_name"]).name for f in args.keep_out for im in read_coco_json(f)[0]["images"]}
        val, _, _ = load_index(args.crops, "val", protos.names)
        records += [r for r in val if r["label"] >= 0 and Path(r["file"]).name.split("_", 1)[-1] not in kept_out]
    records = [r for r in records if r["label"] >= 0]
    cache = FrameCache([r["file"] for r in records])
    emb, owner = embed_records(cascade.identifier, records, cache, f"{args.frames} crops")
    write_exemplars(Path(args.model), protos, emb, np.array([r["label"] for r in records])[owner], [records[i] for i in owner], cache,
                    cascade.identifier.cfg.crop)
    log.info("exemplars of %d species from %d crops → %s", len(protos.names), len(records), Path(args.model) / "exemplars.safetensors")
    return Path(args.model)


if __name__ == "__main__":
    main()
