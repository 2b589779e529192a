"""Issue 26: does box size, fused with the similarity, name species better?
And when should the answer be the genus? Chosen by cross-validation over
the model's validation frames.

    python -m experiments.size_evidence --model models/default --coco PATH/annotations.coco.json [--out work/size_evidence.json]

The validation set stores each ground-truth object's similarity to every
species' prototypes built from training frames only (``training.evaluate``).
Each species' distribution of log box size (the geometric mean of width and
height, in pixels) is fitted on the training frames' boxes: sizes do not
depend on the embedder, so this uses nothing of the validation frames.

For each of 5 folds over validation frames (two fold seeds), λ and the
genus margin are chosen on the other four folds and scored on the fifth:

    fused_c = s · cos_c + λ · log p(size | c)       (s: the ArcFace scale, 30)

λ by F1-macro of the closed-set answer; the margin by the utility of the
answers (a right species 1, a right genus ½, a wrong answer 0), with a genus
answer given when the best two species by fused score share a genus and
differ by less than the margin.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from plankton.artifact.validation import ValidationSet
from plankton.coco import load_coco
from plankton.results import NOT_PLANKTON, UNKNOWN

SHRINK = 3.0  # pseudo-boxes pulling a species' spread towards the pooled one (rare species)
MIN_SD = 0.08  # log units: no species is known to a few percent of its size


def box_side(xyxy) -> float:
    """A box's side in pixels: sqrt(width × height)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return math.sqrt(max(x2 - x1, 1e-3) * max(y2 - y1, 1e-3))


def genus_of(name: str) -> str | None:
    """The genus a class name starts with ("Chlamydomonas sp",
    "Chlamydomonas reinhardtii" → "Chlamydomonas"); None for unknown and
    not-plankton."""
    first = name.split(" ", 1)[0]
    return first if name not in (UNKNOWN, NOT_PLANKTON) and first[:1].isupper() and first.isalpha() else None


@dataclass(frozen=True)
class SizePrior:
    """names: C classes. mu, sd: C mean and spread of log side; n: C
    training boxes behind each (a class without any gets the pooled
    distribution, which favours no class)."""

    names: list[str]
    mu: np.ndarray
    sd: np.ndarray
    n: np.ndarray

    @classmethod
    def fit(cls, labels: list[str], sides: np.ndarray, names: list[str]) -> "SizePrior":
        logs = np.log(np.asarray(sides, np.float64))
        labels = np.asarray(labels, object)
        resid = np.concatenate([logs[labels == c] - logs[labels == c].mean() for c in names if (labels == c).any()] or [np.zeros(1)])
        pooled_var, mu0, sd0 = float(np.mean(resid ** 2)), float(logs.mean()) if len(logs) else 0.0, float(logs.std()) if len(logs) else 1.0
        mu, sd, n = [], [], []
        for c in names:
            x = logs[labels == c]
            n.append(len(x))
            if not len(x):
                mu.append(mu0), sd.append(max(sd0, MIN_SD))
                continue
            var = (np.sum((x - x.mean()) ** 2) + SHRINK * pooled_var) / (len(x) + SHRINK)
            mu.append(float(x.mean())), sd.append(max(math.sqrt(var), MIN_SD))
        return cls(list(names), np.array(mu, np.float32), np.array(sd, np.float32), np.array(n, np.int64))

    def log_density(self, sides) -> np.ndarray:
        """N sides (px) → N×C log p(log side | class)."""
        z = (np.log(np.clip(np.asarray(sides, np.float64), 1e-3, None))[:, None] - self.mu[None]) / self.sd[None]
        return (-0.5 * z ** 2 - np.log(self.sd[None]) - 0.5 * math.log(2 * math.pi)).astype(np.float32)


LAMBDAS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
MARGINS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
SCALE = 30.0


def fused(sim, logp, lam):
    return SCALE * sim + lam * logp


def answers(score, names, genus, margin):
    """N names: the best species, or 'GENUS (genus)' when the best two share a genus within ``margin``."""
    order = np.argsort(-score, 1)
    best, second = order[:, 0], order[:, 1]
    gap = score[np.arange(len(score)), best] - score[np.arange(len(score)), second]
    out = np.asarray(names, object)[best].copy()
    same = np.array([genus[b] is not None and genus[b] == genus[s] for b, s in zip(best, second)])
    pick = same & (gap < margin)
    out[pick] = [f"{genus[b]} (genus)" for b in best[pick]]
    return out


def figures(true, pred, genus_by_name) -> dict:
    species = pred == true
    is_genus = np.array([p.endswith(" (genus)") for p in pred])
    genus_right = np.array([g and genus_by_name.get(t) == p[: -len(" (genus)")] for t, p, g in zip(true, pred, is_genus)])
    present = sorted(set(true))
    return {"top1": float(species.mean()), "f1_macro": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)),
            "genus_answers": int(is_genus.sum()), "genus_right": int(genus_right.sum()),
            "utility": float((species.sum() + 0.5 * genus_right.sum()) / len(true))}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="models/default")
    p.add_argument("--coco", required=True)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    model = Path(args.model)
    vs = ValidationSet.load(model / "validation.safetensors")
    split = json.loads((model / "training.json").read_text())["split"]
    coco = load_coco(args.coco, strict=False)
    cat = {c.id: c.name for c in coco.categories.values()}
    sides = {i: [box_side(b.xyxy) for b in coco.boxes_of(i)] for i in split["val_ids"]}
    seen: dict[int, int] = {}
    size = []
    for f in vs.frames:  # evaluate appends each frame's boxes in coco.boxes_of order
        k = seen.get(int(f), 0)
        size.append(sides[int(f)][k])
        seen[int(f)] = k + 1
    size = np.array(size, np.float32)
    names = list(vs.class_names)
    train = [(cat[b.category_id], box_side(b.xyxy)) for i in split["train_ids"] if i in coco.images for b in coco.boxes_of(i)]
    prior = SizePrior.fit([n for n, _ in train], np.array([s for _, s in train]), names)
    logp = prior.log_density(size)
    genus = [genus_of(n) for n in names]
    genus_by_name = dict(zip(names, genus))
    keep = np.isin(np.asarray(vs.true_names, object), names)  # species the model knows
    true, sim, logp, frames = np.asarray(vs.true_names, object)[keep], vs.similarity[keep], logp[keep], vs.frames[keep]

    rows, chosen = [], []
    pooled = {arm: {s: np.empty(len(true), object) for s in (0, 1)} for arm in ("baseline", "size", "size_genus")}
    for seed in (0, 1):
        uf = np.unique(frames)
        fold_of = dict(zip(np.random.default_rng(seed).permutation(uf), np.arange(len(uf)) % 5))
        fold = np.array([fold_of[f] for f in frames])
        for k in range(5):
            tr, te = fold != k, fold == k
            lam = max(LAMBDAS, key=lambda lm: (figures(true[tr], answers(fused(sim[tr], logp[tr], lm), names, genus, 0), genus_by_name)["f1_macro"], -lm))
            margin = max(MARGINS, key=lambda m: (figures(true[tr], answers(fused(sim[tr], logp[tr], lam), names, genus, m), genus_by_name)["utility"], -m))
            preds = {"baseline": answers(SCALE * sim[te], names, genus, 0), "size": answers(fused(sim[te], logp[te], lam), names, genus, 0),
                     "size_genus": answers(fused(sim[te], logp[te], lam), names, genus, margin)}
            for arm, pr in preds.items():
                pooled[arm][seed][te] = pr
            base, size_only, both = (figures(true[te], preds[a], genus_by_name) for a in ("baseline", "size", "size_genus"))
            rows.append({"seed": seed, "fold": k, "lambda": lam, "margin": margin, "baseline": base, "size": size_only, "size_genus": both})
            chosen.append((lam, margin))
    summary = {}
    for arm in ("baseline", "size", "size_genus"):
        summary[arm] = {m: [round(float(np.mean([r[arm][m] for r in rows])), 4), round(float(np.std([r[arm][m] for r in rows])), 4)]
                        for m in ("top1", "f1_macro", "utility")} | {"genus_answers": int(sum(r[arm]["genus_answers"] for r in rows)),
                                                                     "genus_right": int(sum(r[arm]["genus_right"] for r in rows))}
    support = Counter(n for n, _ in train)
    bins = {"1-3": (1, 3), "4-9": (4, 9), "10-49": (10, 49), ">=50": (50, 10**9)}
    for arm in summary:
        per_seed = [figures(true, pooled[arm][s], genus_by_name) for s in (0, 1)]
        summary[arm]["pooled"] = {m: round(float(np.mean([f[m] for f in per_seed])), 4) for m in ("top1", "f1_macro", "utility")}
        by_bin = {}
        for b, (lo, hi) in bins.items():
            labels = sorted(c for c in set(true) if lo <= support[c] <= hi)
            if labels:
                by_bin[b] = {"species": len(labels), "f1_macro": round(float(np.mean([f1_score(true, pooled[arm][s], labels=labels, average="macro", zero_division=0)
                                                                                        for s in (0, 1)])), 4)}
        summary[arm]["pooled_f1_by_training_boxes"] = by_bin
    lam_all = max(LAMBDAS, key=lambda lm: (figures(true, answers(fused(sim, logp, lm), names, genus, 0), genus_by_name)["f1_macro"], -lm))
    margin_all = max(MARGINS, key=lambda m: (figures(true, answers(fused(sim, logp, lam_all), names, genus, m), genus_by_name)["utility"], -m))
    result = {"objects": int(len(true)), "frames": int(len(np.unique(frames))), "folds": 5, "fold_seeds": [0, 1],
              "chosen_per_fold": chosen, "on_all_validation_frames": {"lambda": lam_all, "genus_margin": margin_all},
              "mean_sd_over_folds": summary, "folds_detail": rows}
    for arm, s in summary.items():
        print(f"{arm:11s} top-1 {s['top1'][0]:.4f} ± {s['top1'][1]:.4f}  F1-macro {s['f1_macro'][0]:.4f} ± {s['f1_macro'][1]:.4f}  "
              f"utility {s['utility'][0]:.4f}  pooled top-1 {s['pooled']['top1']:.4f} F1-macro {s['pooled']['f1_macro']:.4f}  genus answers {s['genus_answers']} ({s['genus_right']} right)")
    for arm, s in summary.items():
        print(f"{arm:11s} F1-macro by training boxes: " + ", ".join(f"{b}: {v['f1_macro']:.3f} ({v['species']} species)" for b, v in s["pooled_f1_by_training_boxes"].items()))
    print(f"chosen per fold (λ, margin): {chosen}; on all validation frames: λ {lam_all}, margin {margin_all}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
