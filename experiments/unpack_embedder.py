"""A model folder's embedder as a training run folder (``embedder.safetensors``,
``embedder.json`` and, when recorded, ``comparison.json``), so that
prototypes can be rebuilt around it (training.build_prototypes,
training/ship.sh, experiments/lever_eval.sh) without retraining.

    python -m experiments.unpack_embedder models/default work/shipped_emb
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from plankton.artifact.manifest import EMBEDDER_WEIGHTS, read_config

from training.common import log, write_json


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model folder (config.json + embedder.safetensors)")
    p.add_argument("out", help="run folder to write")
    args = p.parse_args(argv)
    config = read_config(args.model)
    record = dict((config.get("training") or {}).get("embedder") or {})
    comparison = record.pop("comparison", None)
    # which epoch the run kept, so that a run continued from it numbers its epochs on from there (training.lineage)
    record.setdefault("selected", (record.get("args") or {}).get("select"))
    emb = config["embedder"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(args.model) / emb.get("weights", EMBEDDER_WEIGHTS), out / "embedder.safetensors")
    # The class order is the prototypes' (the species with training crops), as train_embedder records it.
    write_json(out / "embedder.json", record | {"names": config["prototypes"]["names"], "backbone": emb["backbone"], "dim": emb["dim"],
                                                "size_features": emb.get("size_features", 0), "crop": config["identifier"]["crop"]})
    if comparison:
        write_json(out / "comparison.json", comparison)
    log.info("embedder of %s unpacked to %s", args.model, out)
    return out


if __name__ == "__main__":
    main()
