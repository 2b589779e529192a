"""Calibrate a model's counts on frames it never trained on, choose its
counting operating point, and measure every step by cross-validation over
those frames (folds of frames, two fold seeds).

    python -m training.calibrate_counts --model models/default --coco PATH/annotations.coco.json --apply

(``--coco`` runs the model on its validation frames first, as
``training.count_evidence`` does, and keeps that evidence in ``--evidence``;
with ``--evidence`` alone, an earlier run's is read again.)

Each fold's estimate uses evidence from the other folds only. ``--apply``
stores the calibration in the model (``calibration.safetensors``, and a
``counting`` section in config.json and metrics.json) with the counting
point and fragment rule chosen here.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .args import coco_arg, model_arg
from plankton.geometry import fragments, match_boxes
from plankton.artifact.manifest import read_config, write_manifest
from plankton.metrics import bray_curtis, predict_labels
from plankton.counting.quantify import METHODS, CountEvidence, bootstrap_weights, estimate_counts

from .common import log, setup, write_json

CALIBRATION = "calibration.safetensors"


def load_raw(path: str | Path) -> tuple[dict, list[str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()["names"].split("\n")


def thresholds_of(config: dict, names: list[str]) -> np.ndarray:
    """C per-class thresholds at the model's default, by the rule the cascade applies (``Cascade.count_model``)."""
    from plankton.model.identifier import IdentifierConfig
    from plankton.model.prototypes import shifted_thresholds

    ident = IdentifierConfig.from_dict(config["identifier"], config["embedder"]["backbone"])
    return shifted_thresholds(ident.cls_conf, ident.offsets(names))


def kept_candidates(raw: dict, names: list[str], thresholds: np.ndarray, containment: float) -> tuple[np.ndarray, np.ndarray]:
    """The candidates the fragment rule keeps (indices into ``raw``) and the
    annotated box each of them is (-1: none), matched within its frame."""
    labels = predict_labels(raw["det_similarity"], names, thresholds)
    keep, owner = np.zeros(len(labels), bool), np.full(len(labels), -1)
    for f in range(len(raw["frame_id"])):
        c, g = np.flatnonzero(raw["det_frame"] == f), np.flatnonzero(raw["gt_frame"] == f)
        c = c[~fragments(raw["det_xyxy"][c], labels[c], containment)]
        keep[c] = True
        m = match_boxes(raw["det_xyxy"][c], raw["det_score"][c], raw["gt_xyxy"][g])
        owner[c[m >= 0]] = g[m[m >= 0]]
    return np.flatnonzero(keep), owner[keep]


def evidence_at(raw: dict, names: list[str], thresholds: np.ndarray, containment: float, method: str = "adapt", replicates: int = 200) -> CountEvidence:
    """The evidence with the fragment rule applied: candidates that are a
    fragment at the default thresholds are dropped, the rest matched to
    the annotated boxes of their frame."""
    keep, owner = kept_candidates(raw, names, thresholds, containment)
    return CountEvidence(names, raw["det_score"][keep], raw["det_similarity"][keep], owner, raw["det_frame"][keep], raw["gt_label"],
                         raw["gt_similarity"], raw["gt_frame"], bootstrap_weights(len(raw["frame_id"]), replicates), method)


def annotated_counts(ev: CountEvidence, frames: np.ndarray, drop: np.ndarray | None = None) -> np.ndarray:
    """C+1 annotated objects in ``frames`` (last: species without a prototype)."""
    t = ev.true[np.isin(ev.gt_frame, frames) & (True if drop is None else ~drop)]
    return np.bincount(np.where(t < 0, len(ev.names), t), minlength=len(ev.names) + 1).astype(float)


def score_fold(ev: CountEvidence, thresholds, det_conf, train, test, drop: np.ndarray | None = None, drop_boxes: np.ndarray | None = None,
               support: bool = True) -> dict:
    """The estimate on ``test`` frames from the evidence of ``train`` frames.
    ``drop``: annotated objects left out of the test frames, with the boxes
    that found them (a sample of another composition); ``drop_boxes``: more
    candidates left out (the other boxes on a dropped object)."""
    fit = ev.subset_frames(train, replicates=100)
    shown = np.isin(ev.frame, test) & (ev.score >= det_conf)
    if drop is not None:
        shown &= ~np.isin(ev.owner, np.flatnonzero(drop))
    if drop_boxes is not None:
        shown &= ~drop_boxes
    labels = predict_labels(ev.cand_similarity[shown], ev.names, thresholds)
    est = estimate_counts(fit, labels, ev.score[shown], np.zeros(shown.sum(), bool), thresholds, det_conf, support=support)
    k = slice(0, len(ev.names) + 1)
    return {"annotated": annotated_counts(ev, test, drop), "raw": est.count[k], "est": est.estimate[k], "low": est.low[k], "high": est.high[k]}


def cross_validate(ev: CountEvidence, thresholds, det_conf, folds=5, seeds=(0, 1), shift: tuple[str, float] | None = None) -> dict:
    """Folds of frames, for each fold seed: rows shown / annotated, total
    error and Bray-Curtis (raw and estimated) per fold, then averaged;
    ``pooled_*``: every frame's estimate (from the other folds' evidence)
    added up, the scale of a whole sample; ``coverage``: the share of
    (fold, species) with ≥ 5 annotated objects whose interval holds the count."""
    F = int(max(ev.frame.max(initial=-1), ev.gt_frame.max(initial=-1))) + 1
    res = {k: [] for k in ("rows_ratio", "total_error_raw", "total_error_est", "bray_curtis_raw", "bray_curtis_est", "covered",
                           "pooled_bray_curtis_raw", "pooled_bray_curtis_est", "pooled_total_error_raw", "pooled_total_error_est")}
    for seed in seeds:
        order, pooled = np.random.default_rng(seed).permutation(F), {}
        for k in range(folds):
            test = np.sort(order[k::folds])
            drop = None
            if shift:  # keep only a share of one species in the test frames
                drop = (ev.true == ev.names.index(shift[0])) & (np.random.default_rng(100 + k).random(len(ev.true)) >= shift[1])
            r = score_fold(ev, thresholds, det_conf, np.setdiff1d(np.arange(F), test), test, drop)
            a = r["annotated"]
            if not a.sum():  # a fold of frames without annotated objects says nothing of errors
                continue
            res["rows_ratio"].append(r["raw"].sum() / a.sum())
            res["total_error_raw"].append(r["raw"].sum() / a.sum() - 1)
            res["total_error_est"].append(r["est"].sum() / a.sum() - 1)
            res["bray_curtis_raw"].append(bray_curtis(r["raw"], a))
            res["bray_curtis_est"].append(bray_curtis(r["est"], a))
            res["covered"] += list(((r["low"][:-1] <= a[:-1]) & (a[:-1] <= r["high"][:-1]))[a[:-1] >= 5])
            pooled = {key: pooled.get(key, 0) + r[key] for key in ("annotated", "raw", "est")}
        for kind in ("raw", "est"):
            res[f"pooled_bray_curtis_{kind}"].append(bray_curtis(pooled[kind], pooled["annotated"]))
            res[f"pooled_total_error_{kind}"].append(pooled[kind].sum() / pooled["annotated"].sum() - 1)
    out = {k: float(np.mean(v)) for k, v in res.items() if k != "covered"}
    out |= {f"{k}_sd": float(np.std(res[k])) for k in ("total_error_est", "bray_curtis_est")}
    out |= {"coverage": float(np.mean(res["covered"])) if res["covered"] else None, "coverable": len(res["covered"]),
            "abs_total_error_est": float(np.mean(np.abs(res["total_error_est"]))), "folds": folds, "fold_seeds": list(seeds)}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arg(p)
    coco_arg(p, required=False, help="annotation file holding the model's validation frames: run the model on them first")
    p.add_argument("--evidence", default="work/counts/evidence.safetensors", help="the model's run on its validation frames (training.count_evidence)")
    p.add_argument("--det-conf", type=float, nargs="+", default=[round(x, 2) for x in np.arange(0.05, 0.55, 0.05)])
    p.add_argument("--containment", type=float, nargs="+", default=[1.01, 0.9, 0.8, 0.7, 0.6], help="fragment rule (above 1: off)")
    p.add_argument("--method", nargs="+", default=["adapt"], choices=list(METHODS),
                   help="methods to score (default: adapt alone, the one that holds on shifted samples: training.count_shifts)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default=None, help="JSON of every setting's figures (default: beside the evidence)")
    p.add_argument("--shift", nargs=2, metavar=("SPECIES", "KEEP"), default=None,
                   help="test frames keep only this share of one species: how each method bears a sample unlike the evidence")
    p.add_argument("--nested", action="store_true",
                   help="also choose the setting inside each outer fold (inner folds of its training frames) and score it there: the unbiased figures")
    p.add_argument("--fold-models", default=None, help="with --coco: cross-fitted naming (see training.count_evidence)")
    p.add_argument("--folds-json", default=None, help="with --coco and --fold-models: the folds file")
    p.add_argument("--apply", action="store_true", help="store the chosen calibration in the model")
    args = p.parse_args(argv)
    setup()
    if args.coco:
        from . import count_evidence

        folds = ["--fold-models", args.fold_models, "--folds-json", args.folds_json] if args.fold_models else []
        count_evidence.main(["--model", str(args.model), "--coco", args.coco, "--out", args.evidence] + folds)
    raw, names = load_raw(args.evidence)
    config = read_config(args.model, check_files=False)
    thr = thresholds_of(config, names)
    table = []
    for cont in args.containment:
        ev = evidence_at(raw, names, thr, cont)
        for det_conf in args.det_conf:
            for method in args.method:
                ev.method = method
                cv = cross_validate(ev, thr, det_conf, args.folds, shift=(args.shift[0], float(args.shift[1])) if args.shift else None)
                table.append({"containment": cont, "det_conf": det_conf, "method": method} | cv)
                log.info("containment %.2f det_conf %.2f %s: rows %.3f, total %+.3f → %+.3f, BC %.3f → %.3f (pooled %.3f → %.3f), coverage %.2f (%d)", cont, det_conf,
                         method, cv["rows_ratio"], cv["total_error_raw"], cv["total_error_est"], cv["bray_curtis_raw"], cv["bray_curtis_est"],
                         cv["pooled_bray_curtis_raw"], cv["pooled_bray_curtis_est"], cv["coverage"], cv["coverable"])
    best = choose(table)
    log.info("chosen: %s", json.dumps(best))
    if args.nested:
        best["nested"] = nested(raw, names, thr, args.containment, args.det_conf, args.method, args.folds)
        n = best["nested"]
        log.info("nested (chosen inside each outer fold): rows %.3f, total %+.3f, Bray-Curtis %.3f, coverage %s; chosen per fold: %s", n["rows_ratio"],
                 n["pooled_total_error_est"], n["pooled_bray_curtis_est"], n["coverage"], n["chosen"])
    print(steps_markdown(table, best))
    print(species_markdown(evidence_at(raw, names, thr, best["containment"], best["method"]), thr, best["det_conf"], min(args.det_conf)))
    out = Path(args.out or Path(args.evidence).with_suffix(".cv.json"))
    write_json(out, {"settings": table, "chosen": best, "frames": int(len(raw["frame_id"])), "objects": int(len(raw["gt_label"]))})
    if args.apply:
        apply(args.model, evidence_at(raw, names, thr, best["containment"], best["method"]), best)
    return best


def nested(raw: dict, names: list[str], thr, containments, det_confs, methods, folds: int = 5, inner: int = 4, seed: int = 0) -> dict:
    """Nested cross-validation: in each outer fold, every setting is scored
    by ``inner`` folds of the outer training frames only, ``choose`` picks
    one, and that one is scored on the outer test frames. The figures then
    owe nothing to having been chosen on the frames they score (the plain
    figures are the best of the grid on the same frames: optimistic)."""
    evs = {c: evidence_at(raw, names, thr, c, replicates=100) for c in containments}
    F = len(raw["frame_id"])
    order, pooled, chosen, covered = np.random.default_rng(seed).permutation(F), {}, [], []
    for k in range(folds):
        test = np.sort(order[k::folds])
        train = np.setdiff1d(np.arange(F), test)
        table = []
        for c, ev in evs.items():
            sub = ev.subset_frames(train, replicates=50)
            for det_conf in det_confs:
                for method in methods:
                    sub.method = method
                    table.append({"containment": c, "det_conf": det_conf, "method": method} | cross_validate(sub, thr, det_conf, inner, seeds=(seed,)))
        pick = choose(table)
        chosen.append({x: pick[x] for x in ("containment", "det_conf", "method")})
        ev = evs[pick["containment"]]
        ev.method = pick["method"]
        r = score_fold(ev, thr, pick["det_conf"], train, test)
        a = r["annotated"]
        covered += list(((r["low"] <= a) & (a <= r["high"]))[a >= 5])
        pooled = {x: pooled.get(x, 0) + r[x] for x in ("annotated", "raw", "est")}
    a = pooled["annotated"]
    return {"rows_ratio": float(pooled["raw"].sum() / a.sum()), "pooled_total_error_est": float(pooled["est"].sum() / a.sum() - 1),
            "pooled_bray_curtis_raw": float(bray_curtis(pooled["raw"], a)), "pooled_bray_curtis_est": float(bray_curtis(pooled["est"], a)),
            "coverage": float(np.mean(covered)) if covered else None, "coverable": len(covered), "chosen": chosen, "folds": folds, "inner_folds": inner}


def steps_markdown(table: list[dict], best: dict) -> str:
    """What each step does to the counts (pooled over folds, mean of the two fold seeds), as a Markdown table."""
    def find(containment, det_conf, method):
        return next((r for r in table if np.isclose(r["containment"], containment) and np.isclose(r["det_conf"], det_conf) and r["method"] == method), None)

    lo, (c, d) = min(r["det_conf"] for r in table), (best["containment"], best["det_conf"])
    frag = min((r["containment"] for r in table if r["containment"] <= 1), default=None, key=lambda x: abs(x - 0.7))
    steps = [("raw count at the candidate floor", find(c, lo, "cc"), "raw"), (f"raw count at the counting point {d:g}", find(c, d, "cc"), "raw")]
    if frag is not None:
        steps.append((f"  with fragments (≥ {frag:g} inside a same-species box) dropped", find(frag, d, "cc"), "raw"))
    steps += [(f"expected count (P(object) and recall), at {d:g}", find(c, d, "cc"), "est")]
    steps += [(f"  + confusion correction, {m}" + (" (ships)" if m == best["method"] else ""), find(c, d, m), "est") for m in ("acc", "em", "pcc", "adapt")]
    lines = ["| step | rows / annotated | total error | Bray-Curtis | interval coverage |", "|---|---|---|---|---|"]
    for name, r, kind in steps:
        if r is not None:
            cov = f"{r['coverage']:.2f}" if kind == "est" and r["coverage"] is not None else "—"
            lines.append(f"| {name} | {r['rows_ratio']:.3f} | {r[f'pooled_total_error_{kind}']:+.3f} | {r[f'pooled_bray_curtis_{kind}']:.3f} | {cov} |")
    return "\n".join(lines)


def species_markdown(ev: CountEvidence, thresholds, det_conf: float, floor: float, folds: int = 5, top: int = 8) -> str:
    """Per species (the most annotated): annotated, raw at the floor, raw
    at the counting point, and the estimate there with its interval, each
    frame estimated from the other folds' evidence (fold seed 0)."""
    F = len(ev.weights[0])
    order = np.random.default_rng(0).permutation(F)
    acc = {}
    for k in range(folds):
        test = np.sort(order[k::folds])
        train = np.setdiff1d(np.arange(F), test)
        for key, conf in (("floor", floor), ("point", det_conf)):
            r = score_fold(ev, thresholds, conf, train, test)
            acc[key] = {x: acc.get(key, {}).get(x, 0) + r[x] for x in ("annotated", "raw", "est", "low", "high")}
    a = acc["point"]["annotated"]
    names = ev.names + ["unknown"]
    lines = [f"| species | annotated | raw at {floor:g} | raw at {det_conf:g} | estimate (sum of the folds' 95% intervals) |", "|---|---|---|---|---|"]
    for j in list(np.argsort(-a)[:top]) + [len(ev.names)]:
        p = acc["point"]
        lines.append(f"| {names[j]} | {a[j]:.0f} | {acc['floor']['raw'][j]:.0f} | {p['raw'][j]:.0f} | {p['est'][j]:.1f} ({p['low'][j]:.0f}–{p['high'][j]:.0f}) |")
    return "\n".join(lines)


def choose(table: list[dict]) -> dict:
    """The counting point: the rows shown closest to the annotated count
    (false boxes balance misses) among settings with the fragment rule and
    method that estimate best (mean of |total error| and Bray-Curtis)."""
    def loss(r):
        return r["abs_total_error_est"] + r["bray_curtis_est"]

    best = min((r for r in table if r["method"] != "cc"), key=loss)
    same = [r for r in table if r["containment"] == best["containment"] and r["method"] == best["method"]]
    return min(same, key=lambda r: (abs(np.log(r["rows_ratio"])), loss(r)))


def apply(model: str | Path, ev: CountEvidence, best: dict) -> None:
    folder = Path(model)
    ev.save(folder / CALIBRATION)
    config = read_config(folder, check_files=False)
    config["counting"] = {"det_conf": best["det_conf"], "containment": best["containment"], "method": best["method"], "file": CALIBRATION,
                          "validation_frames": int(len(ev.weights[0])), "validation_objects": int(len(ev.true)),
                          "cross_validation": {k: round(v, 4) if isinstance(v, float) else v for k, v in best.items()}}
    metrics_path = folder / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        metrics["counting"] = config["counting"]
        write_json(metrics_path, metrics)
    write_manifest(folder, config)
    log.info("calibration → %s", folder / CALIBRATION)


if __name__ == "__main__":
    main()
