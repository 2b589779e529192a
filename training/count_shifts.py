"""Counts on samples unlike the evidence: test samples of about 27 frames
drawn from the model's validation frames by their composition, each
estimated from the evidence of the other frames only.

    python -m training.count_shifts --evidence work/counts/evidence.safetensors --model models/default [--draws 12] [--out FILE]

Shifts (``SHIFTS``): frames drawn with a lean (fewer or more of one species)
and objects of some species kept only at a share, every box on a dropped
object dropped with it (the box that found it, and any other box lying at
least half inside it: a filament's second piece is gone with the filament);
``half unknown``: the model lacks Chlorella sp (its prototype removed
from the evidence and the samples: about half of every sample is a species
the model cannot name). ``pooled``: 5 random folds of frames, every frame
estimated from the other folds, added up (two fold seeds).

Per shift and step: rows shown / annotated, Bray-Curtis of the raw count
and of the estimate against the annotated one (mean over the draws), the
share of (sample, species) with at least 5 annotated objects whose
interval holds the count, and the estimate of species with no annotated
object in the sample (mass they inherit). ``--quantify FILE`` scores
another implementation of ``plankton.counting.quantify`` (e.g. an earlier
commit's, ``git show COMMIT:plankton/counting/quantify.py > FILE``, or ``plankton/sample/quantify.py`` before issue 46) as the
step ``before``.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

from plankton.geometry import contained_share
from plankton.metrics import bray_curtis, predict_labels

from .args import model_arg
from plankton.counting.calibration import bootstrap_weights

from .calibrate_counts import kept_candidates, load_raw, thresholds_of
from .common import log, setup, write_json

FRAMES = 27
SHIFTS = {  # lean: (species, -1 fewer / +1 more) for drawing frames; keep: {species: share of its objects kept}; lacks: a species without prototype
    "scarce Chlorella": {"lean": ("Chlorella sp", -1), "keep": {"Chlorella sp": 0.15}},
    "no Oscillatoria": {"lean": ("Oscillatoria sp", -1), "keep": {"Oscillatoria sp": 0.0}},
    "bloom of Prymnesium": {"lean": ("Prymnesium sp", 1), "keep": {"Chlorella sp": 0.2, "Oscillatoria sp": 0.2}},
    "half unknown": {"lacks": "Chlorella sp"},
}
STEPS = {  # step: (method, support); "before" needs --quantify
    "expected count (P(object), recall)": ("cc", False),
    "+ confusion correction, pcc": ("pcc", False),
    "+ only classes with a box (support)": ("pcc", True),
    "+ mix adapted to the sample (adapt)": ("adapt", True),
    "em (unheld), with support": ("em", True),
}


def load_quantify(path: str | None):
    """``plankton.counting.quantify``, or the implementation in file ``path``."""
    if not path:
        from plankton.counting import quantify

        return quantify
    spec = importlib.util.spec_from_file_location("quantify_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


class Bench:
    """The validation run at one setting: the candidates kept, their boxes,
    and the thresholds, for any implementation of the estimate."""

    def __init__(self, raw: dict, names: list[str], thresholds: np.ndarray, det_conf: float, containment: float = 1.01):
        self.raw, self.names, self.thr, self.det_conf = raw, list(names), np.asarray(thresholds, np.float32), det_conf
        self.keep, self.owner = kept_candidates(raw, names, thresholds, containment)
        self.frame, self.true, self.gt_frame = raw["det_frame"][self.keep], raw["gt_label"].astype(np.int64), raw["gt_frame"]
        self.F = len(raw["frame_id"])

    def lacking(self, species: str) -> "Bench":
        """The same run for a model without ``species``' prototype."""
        j = self.names.index(species)
        cols = [k for k in range(len(self.names)) if k != j]
        raw = dict(self.raw)
        raw["det_similarity"], raw["gt_similarity"] = self.raw["det_similarity"][:, cols], self.raw["gt_similarity"][:, cols]
        g = self.raw["gt_label"].astype(np.int64)
        raw["gt_label"] = np.where(g == j, -1, np.where(g > j, g - 1, g))
        return Bench(raw, [self.names[k] for k in cols], self.thr[cols], self.det_conf)

    def evidence(self, q, frames: np.ndarray, method: str, replicates: int = 100):
        """``q.CountEvidence`` of ``frames`` (renumbered)."""
        c, g = np.isin(self.frame, frames), np.isin(self.gt_frame, frames)
        remap = np.full(self.F, -1)
        remap[frames] = np.arange(len(frames))
        gt_index = np.full(len(self.true) + 1, -1)
        gt_index[np.flatnonzero(g)] = np.arange(g.sum())
        k = self.keep[c]
        return q.CountEvidence(self.names, self.raw["det_score"][k], self.raw["det_similarity"][k], gt_index[self.owner[c]], remap[self.frame[c]],
                               self.true[g], self.raw["gt_similarity"][g], remap[self.gt_frame[g]], bootstrap_weights(len(frames), replicates), method)

    def dropped_boxes(self, drop: np.ndarray) -> np.ndarray:
        """Candidates (kept) on a dropped object: the one that found it, and any lying at least half inside its box."""
        out = np.isin(self.owner, np.flatnonzero(drop))
        for f in np.unique(self.gt_frame[drop]):
            c = np.flatnonzero((self.frame == f) & ~out)
            objs = np.flatnonzero(drop & (self.gt_frame == f))
            if len(c):
                out[c] |= (contained_share(self.raw["det_xyxy"][self.keep[c]], self.raw["gt_xyxy"][objs]) >= 0.5).any(1)
        return out

    def score(self, q, method: str, support: bool, test: np.ndarray, drop: np.ndarray | None = None) -> dict:
        """The estimate on ``test`` frames (less ``drop``ped objects and their boxes) from the other frames' evidence."""
        drop = np.zeros(len(self.true), bool) if drop is None else drop
        fit = self.evidence(q, np.setdiff1d(np.arange(self.F), test), method)
        shown = np.isin(self.frame, test) & (self.raw["det_score"][self.keep] >= self.det_conf) & ~self.dropped_boxes(drop)
        sim = self.raw["det_similarity"][self.keep[shown]]
        labels = predict_labels(sim, self.names, self.thr)
        kw = {} if support is None else {"support": support}
        est = q.estimate_counts(fit, labels, self.raw["det_score"][self.keep[shown]], np.zeros(shown.sum(), bool), self.thr, self.det_conf, **kw)
        k = slice(0, len(self.names) + 1)
        t = self.true[np.isin(self.gt_frame, test) & ~drop]
        annotated = np.bincount(np.where(t < 0, len(self.names), t), minlength=len(self.names) + 1).astype(float)
        return {"annotated": annotated, "raw": est.count[k], "est": est.estimate[k], "low": est.low[k], "high": est.high[k]}


def draw(bench: Bench, shift: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One shifted sample: its frames and the annotated objects left out."""
    rng = np.random.default_rng(seed)
    w = np.ones(bench.F)
    if "lean" in shift:
        j, sign = bench.names.index(shift["lean"][0]), shift["lean"][1]
        per_frame = np.bincount(bench.gt_frame, minlength=bench.F).astype(float)
        mine = np.bincount(bench.gt_frame[bench.true == j], minlength=bench.F)
        w = np.exp(3.0 * sign * mine / np.maximum(per_frame, 1))
    test = np.sort(rng.choice(bench.F, FRAMES, replace=False, p=w / w.sum()))
    drop = np.zeros(len(bench.true), bool)
    u = rng.random(len(bench.true))
    for name, share in shift.get("keep", {}).items():
        drop |= (bench.true == bench.names.index(name)) & np.isin(bench.gt_frame, test) & (u >= share)
    return test, drop


def summarise(rows: list[dict]) -> dict:
    """Mean figures over samples, coverage over (sample, species ≥ 5)."""
    covered, inherited = [], []
    for r in rows:
        a = r["annotated"]
        covered += list(((r["low"] <= a) & (a <= r["high"]))[a >= 5])
        inherited.append(float(r["est"][a == 0].sum() / max(a.sum(), 1)))
    return {"samples": len(rows), "objects": float(np.mean([r["annotated"].sum() for r in rows])),
            "rows_ratio": float(np.mean([r["raw"].sum() / r["annotated"].sum() for r in rows])),
            "total_error_est": float(np.mean([r["est"].sum() / r["annotated"].sum() - 1 for r in rows])),
            "bray_curtis_raw": float(np.mean([bray_curtis(r["raw"], r["annotated"]) for r in rows])),
            "bray_curtis_est": float(np.mean([bray_curtis(r["est"], r["annotated"]) for r in rows])),
            "coverage": float(np.mean(covered)) if covered else None, "coverable": len(covered), "inherited_share": float(np.mean(inherited))}


def pooled(bench: Bench, q, method: str, support, folds: int = 5, seeds=(0, 1)) -> dict:
    """Every frame estimated from the other folds' evidence, added up per fold seed; coverage per (fold, species ≥ 5)."""
    sums, per_fold = [], []
    for seed in seeds:
        order, acc = np.random.default_rng(seed).permutation(bench.F), None
        for k in range(folds):
            r = bench.score(q, method, support, np.sort(order[k::folds]))
            per_fold.append(r)
            acc = r if acc is None else {x: acc[x] + r[x] for x in r}
        sums.append(acc)
    out = summarise(sums)
    out["coverage"], out["coverable"] = summarise(per_fold)["coverage"], summarise(per_fold)["coverable"]
    return out


def run(bench: Bench, steps: dict, draws: int, shifts: dict = SHIFTS, quantify_before=None) -> dict:
    """{shift: {step: figures}}, the pooled folds under ``pooled``."""
    from plankton.counting import quantify

    plan = [(s, quantify, m, sup) for s, (m, sup) in steps.items()]
    if quantify_before is not None:
        plan = [("before", quantify_before, "pcc", None)] + plan
    out = {}
    for shift, spec in shifts.items():
        b = bench.lacking(spec["lacks"]) if "lacks" in spec else bench
        samples = [draw(b, spec, 1000 + d) for d in range(draws)]
        out[shift] = {s: summarise([b.score(q, m, sup, t, drop) for t, drop in samples]) for s, q, m, sup in plan}
        log.info("%s: %s", shift, {s: round(v["bray_curtis_est"], 3) for s, v in out[shift].items()})
    out["pooled"] = {s: pooled(bench, q, m, sup) for s, q, m, sup in plan}
    return out


def markdown(res: dict) -> str:
    lines = ["| sample | step | objects | rows / annotated | Bray-Curtis raw → estimate | coverage (n) | inherited by absent species |", "|---|---|---|---|---|---|---|"]
    for shift, steps in res.items():
        for step, r in steps.items():
            cov = "—" if r["coverage"] is None else f"{r['coverage']:.2f} ({r['coverable']})"
            lines.append(f"| {shift} | {step} | {r['objects']:.0f} | {r['rows_ratio']:.2f} | {r['bray_curtis_raw']:.3f} → {r['bray_curtis_est']:.3f} | {cov} | "
                         f"{r['inherited_share']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arg(p)
    p.add_argument("--evidence", required=True, help="the model's run on its validation frames (training.count_evidence)")
    p.add_argument("--det-conf", type=float, default=None, help="detector threshold (default: the model's counting point)")
    p.add_argument("--draws", type=int, default=12, help="samples drawn per shift")
    p.add_argument("--step", nargs="+", default=list(STEPS), choices=list(STEPS))
    p.add_argument("--quantify", default=None, help="another quantify.py to score as the step 'before'")
    p.add_argument("--out", default=None, help="JSON of the figures")
    args = p.parse_args(argv)
    setup()
    from plankton.artifact.manifest import read_config

    raw, names = load_raw(args.evidence)
    config = read_config(args.model, check_files=False)
    det_conf = args.det_conf if args.det_conf is not None else float((config.get("counting") or {}).get("det_conf", 0.3))
    for s in SHIFTS.values():
        missing = {s.get("lacks"), *(s.get("keep") or {}), (s.get("lean") or (None,))[0]} - {None} - set(names)
        if missing:
            raise SystemExit(f"{args.evidence}: no species {', '.join(sorted(missing))} in this model: the shifts name them")
    bench = Bench(raw, names, thresholds_of(config, names), det_conf)
    res = run(bench, {k: STEPS[k] for k in args.step}, args.draws, quantify_before=load_quantify(args.quantify) if args.quantify else None)
    print(markdown(res))
    if args.out:
        write_json(Path(args.out), {"det_conf": det_conf, "frames": FRAMES, "draws": args.draws, "results": res})
    return res


if __name__ == "__main__":
    main()
