"""Choose the threshold quantile of one split's model on another split's
frames, so that no model's thresholds are set on its own validation frames.

Per-class thresholds are a quantile of held-out similarities from the
training frames (``training.thresholds``). Those come from an embedder
that trained on the very crops, so they run higher than any new frame's,
and a quantile taken at face value leaves too many known objects
``unknown``. How much higher is measured here on model A (trained on
split A): its validation frames that are *training* frames of model B
(split B) tell how its quantiles translate into unknown rates on frames it
never saw; the quantile that meets ``--target-unknown`` is then used for
model B. Model B's own validation frames are never read.

    python -m training.calibrate --model work/eval/scale_s1 --for-model work/eval/scale_s0 --target-unknown 0.04
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from plankton.manifest import read_config
from plankton.metrics import predict_labels
from plankton.results import UNKNOWN
from plankton.validation import FILE, ValidationSet

from .common import setup
from .thresholds import thresholds_at


def sweep(table: dict, validation: ValidationSet, keep: np.ndarray) -> list[dict]:
    """For each quantile of ``table``: the share of known-species objects
    (``keep``) left unknown, and the accuracy of those that are named."""
    names = list(validation.class_names)
    true = np.asarray(validation.true_names, dtype=object)
    known = keep & np.isin(true, names)
    rows = []
    for q in table["grid"]:
        floor, per_class = thresholds_at(table, q)
        pred = predict_labels(validation.similarity[known], names, np.array([per_class.get(n, floor) for n in names], np.float32))
        named = pred != UNKNOWN
        rows.append({"quantile": q, "objects": int(known.sum()), "unknown_rate": float(np.mean(~named)) if known.any() else None,
                     "accuracy_of_named": float(np.mean(pred[named] == true[known][named])) if named.any() else None})
    return rows


def apply(folder: str, result: dict) -> None:
    """Model B's thresholds from its own held-out quantile table at the
    quantile chosen on model A, recorded with how it was chosen."""
    from plankton.manifest import write_manifest

    config = read_config(folder, check_files=False)
    table = config["training"]["prototypes"]["heldout_quantiles"]
    floor, per_class = thresholds_at(table, result["quantile"])
    config["identifier"] |= {"threshold": floor, "class_thresholds": dict(sorted(per_class.items()))}
    config["training"]["prototypes"]["threshold_calibration"] = {k: v for k, v in result.items() if k != "sweep"} | {
        "rule": "the largest quantile whose unknown rate on the other split's model, on its validation frames that are this model's "
                "training frames, is at most the target"}
    write_manifest(folder, config)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model A: built and evaluated on another split (training.evaluate writes its validation set)")
    p.add_argument("--for-model", required=True, help="model B, whose validation frames are left out of model A's")
    p.add_argument("--target-unknown", type=float, default=0.04, help="the largest share of known objects left unknown")
    p.add_argument("--out", default=None, help="also write the sweep here (JSON)")
    p.add_argument("--apply", action="store_true", help="set model B's thresholds to its own held-out quantiles at the chosen quantile")
    args = p.parse_args(argv)
    setup()
    a, b = read_config(args.model), read_config(args.for_model)
    table = ((a.get("training") or {}).get("prototypes") or {}).get("heldout_quantiles")
    if not table:
        raise SystemExit(f"{args.model}: no held-out quantile table (rebuild it with training.build_prototypes)")
    validation = ValidationSet.load(f"{args.model}/{FILE}")
    if validation.frames is None:
        raise SystemExit(f"{args.model}/{FILE} records no frames (re-run training.evaluate)")
    b_val = set((b.get("training") or {}).get("split", {}).get("val_ids") or [])
    keep = ~np.isin(validation.frames, list(b_val))
    rows = sweep(table, validation, keep)
    ok = [r for r in rows if r["unknown_rate"] is not None and r["unknown_rate"] <= args.target_unknown]
    chosen = max(ok, key=lambda r: r["quantile"]) if ok else min(rows, key=lambda r: r["quantile"])
    result = {"model": a.get("name"), "for_model": b.get("name"), "frames_used": int(len(set(validation.frames[keep].tolist()))),
              "target_unknown": args.target_unknown, "quantile": chosen["quantile"], "sweep": rows}
    if args.out:
        from .common import write_json

        write_json(args.out, result)
    if args.apply:
        apply(args.for_model, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
