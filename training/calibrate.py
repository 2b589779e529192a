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

Fewer unknowns cost open-set safety: a lower threshold also names more
objects of species the model has never seen. ``--min-open-set`` is a floor
on the macro open-set rate (``plankton.metrics.open_set``) on the same
frames; where no quantile meets both, the floor wins.

    python -m training.calibrate --model work/eval/scale_s1 --for-model work/eval/scale_s0 --target-unknown 0.05 --min-open-set 0.8

For an embedder that trained on every frame there is no model A: ``--oof
RUN`` sweeps the out-of-fold objects of the cross-validation fold models
instead (``training.crossfit``; model B's thresholds must come from the same
folds, ``build_prototypes --heldout-from RUN``), the app's example frames
left out as everywhere else.

    python -m training.calibrate --oof work/cv40/runs/lite0-96-sqrt-e12-s0 --for-model work/ship/default --target-unknown 0.05 --min-open-set 0.8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from plankton.artifact.manifest import read_config
from plankton.metrics import open_set, predict_labels
from plankton.results import UNKNOWN
from plankton.artifact.validation import FILE, ValidationSet

from .common import setup
from .thresholds import thresholds_at


def sweep(table: dict, validation: ValidationSet, keep: np.ndarray) -> list[dict]:
    """For each quantile of ``table``: the share of known-species objects
    (``keep``) left unknown, the accuracy of those that are named, and the
    macro open-set rate on them."""
    names = list(validation.class_names)
    true = np.asarray(validation.true_names, dtype=object)
    known = keep & np.isin(true, names)
    true, sim = true[known], validation.similarity[known]
    rows = []
    for q in table["grid"]:
        floor, per_class = thresholds_at(table, q)
        thr = np.array([per_class.get(n, floor) for n in names], np.float32)
        pred = predict_labels(sim, names, thr)
        named = pred != UNKNOWN
        rows.append({"quantile": q, "objects": len(true), "unknown_rate": float(np.mean(~named)) if len(true) else None,
                     "accuracy_of_named": float(np.mean(pred[named] == true[named])) if named.any() else None,
                     "open_set_macro": open_set(true, sim, names, thr)["unknown_rate_macro"]})
    return rows


def choose(rows: list[dict], target_unknown: float, min_open_set: float = 0.0) -> dict:
    """The sweep row to use. Among the quantiles whose open-set rate meets
    ``min_open_set``, the largest whose unknown rate meets
    ``target_unknown``; if none meets it, the smallest that keeps the
    open-set floor (the fewest unknowns that floor allows); if no quantile
    keeps the floor, the largest quantile."""
    safe = [r for r in rows if (r.get("open_set_macro") or 0.0) >= min_open_set]
    if not safe:
        return max(rows, key=lambda r: r["quantile"])
    ok = [r for r in safe if r["unknown_rate"] is not None and r["unknown_rate"] <= target_unknown]
    return max(ok, key=lambda r: r["quantile"]) if ok else min(safe, key=lambda r: r["quantile"])


RULES = {
    "model": "on the other split's model, on its validation frames that are this model's training frames: the largest quantile whose "
             "unknown rate is at most the target among those whose macro open-set rate keeps the floor; the floor wins where none meets both",
    "oof": "on the cross-validation's out-of-fold objects (each matched by the fold model that never saw its frame): the largest quantile "
           "whose unknown rate is at most the target among those whose macro open-set rate keeps the floor; the floor wins where none meets both",
}


def apply(folder: str, result: dict) -> None:
    """Model B's thresholds from its own held-out quantile table at the
    quantile chosen on model A, recorded with how it was chosen."""
    from plankton.artifact.manifest import write_manifest

    config = read_config(folder, check_files=False)
    table = config["training"]["prototypes"]["heldout_quantiles"]
    floor, per_class = thresholds_at(table, result["quantile"])
    config["identifier"].pop("threshold", None)
    config["identifier"] |= {"cls_conf": floor, "class_thresholds": dict(sorted(per_class.items()))}
    config["training"]["prototypes"]["threshold_calibration"] = {k: v for k, v in result.items() if k != "sweep"} | {
        "rule": RULES["oof" if result.get("oof") else "model"]}
    write_manifest(folder, config)


def oof_sweep_input(run: str, b: dict):
    """(model B's quantile table, the out-of-fold objects as a validation set, which to keep, the origin record)."""
    from types import SimpleNamespace

    from .crossfit import load

    protos = (b.get("training") or {}).get("prototypes") or {}
    table = protos.get("heldout_quantiles")
    if not table or "cross-validation fold model" not in protos.get("threshold_rule", ""):
        raise SystemExit("--oof needs a model whose thresholds came from the same folds (training.build_prototypes --heldout-from RUN)")
    names = list(b["prototypes"]["names"])
    oof = load(run, names, mode=protos.get("match", "mean"), tta_margin=float(b["identifier"].get("tta_margin", 0.0))).without(
        set(protos.get("kept_out_frames") or []))
    v = SimpleNamespace(class_names=names, true_names=list(oof.true), similarity=oof.similarity, frames=oof.frames)
    return table, v, np.ones(len(oof.true), bool), {"oof": "/".join(Path(run).parts[-3:]), "folds": int(len(set(oof.fold.tolist())))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model A: built and evaluated on another split (training.evaluate writes its validation set)")
    src.add_argument("--oof", metavar="RUN", help="the cross-validation fold models (experiments.cv_grid OUT/runs/RUN) whose "
                     "out-of-fold objects are swept, for a model B whose embedder trained on every frame")
    p.add_argument("--for-model", required=True, help="model B, whose validation frames are left out of model A's")
    p.add_argument("--target-unknown", type=float, default=0.04, help="the largest share of known objects left unknown")
    p.add_argument("--min-open-set", type=float, default=0.0,
                   help="the smallest macro open-set rate (objects of a species without prototypes called unknown); it wins over --target-unknown")
    p.add_argument("--out", default=None, help="also write the sweep here (JSON)")
    p.add_argument("--apply", action="store_true", help="set model B's thresholds to its own held-out quantiles at the chosen quantile")
    args = p.parse_args(argv)
    setup()
    b = read_config(args.for_model)
    if args.oof:
        table, validation, keep, origin = oof_sweep_input(args.oof, b)
    else:
        a = read_config(args.model)
        table = ((a.get("training") or {}).get("prototypes") or {}).get("heldout_quantiles")
        if not table:
            raise SystemExit(f"{args.model}: no held-out quantile table (rebuild it with training.build_prototypes)")
        validation = ValidationSet.load(f"{args.model}/{FILE}")
        if validation.frames is None:
            raise SystemExit(f"{args.model}/{FILE} records no frames (re-run training.evaluate)")
        b_val = set((b.get("training") or {}).get("split", {}).get("val_ids") or [])
        keep, origin = ~np.isin(validation.frames, list(b_val)), {"model": a.get("name")}
    rows = sweep(table, validation, keep)
    chosen = choose(rows, args.target_unknown, args.min_open_set)
    result = origin | {"for_model": b.get("name"), "frames_used": int(len(set(validation.frames[keep].tolist()))),
                       "target_unknown": args.target_unknown, "min_open_set": args.min_open_set, "quantile": chosen["quantile"], "sweep": rows}
    if args.out:
        from .common import write_json

        write_json(args.out, result)
    if args.apply:
        apply(args.for_model, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
