"""Issue 44: how well ``discover`` groups what the model cannot name, with
species the model has never seen among the ordinary unknowns.

    python -m experiments.leave_species_out --objects work/unk44/val.npz [--draws 10] [--leave-out 3] [--options "today,shipped,umap5"]

``--objects`` is a cache from ``experiments.unknown_objects`` (the shipped
model on its validation frames, or out-of-fold embeddings from the CV
folds). Each draw removes the prototypes of ``--leave-out`` species (drawn
among those with at least ``--min-objects`` detected objects), names every
object with the remaining prototypes and the model's thresholds (the open-set
rule of ``plankton.model.prototypes.decide``), and clusters the ``unknown``
ones as ``discover`` does with each option. Per option, over the draws:

- purity: each cluster of 3 or more scored against what its objects are
  (an annotated species, or "no annotated object"), weighted by size and
  pooled over the draws (± the sd of the per-draw figure);
- left out, found: the share of the left-out species' detected objects
  that land in a cluster where their species is the majority;
- noise: the share of the unknown objects HDBSCAN puts in no cluster;
- debris in species clusters: the share of the unknown objects that match
  no annotation and land in a cluster whose majority is a species;
- defaults: the same purity with nothing left out (the unknowns a user
  sees at the model's thresholds).

Also, for the option ``--cohesion`` names: how a cluster's cohesion
(``discover.group``'s figure) goes with its purity, and how the doubtful
members (the last third in ``Grouping.order``) compare with the core.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import numpy as np
from tqdm import tqdm

from experiments.unknown_objects import NONE, load
from plankton.review.discover import box_sides, group

BASE = {"min_cluster_size": 3, "min_samples": None, "selection": "leaf", "space": "embedding", "dims": 10, "weight": 0.0, "beside": None}
DEFAULT_OPTIONS = ["today", "shipped", "eom", "eom ms=2", "mcs=4", "mcs=5", "mcs=4 ms=1", "pca5", "pca10", "pca10 ms=1", "pca10 mcs=4",
                   "size=0.5", "size=1", "size=0.5 ms=1", "stats=0.5", "size+stats=1", "profile", "profile ms=1", "profile mcs=4"]


def parse_option(name: str) -> dict:
    """An option's name is its settings: "leaf"/"eom", "mcs=N"
    (min_cluster_size), "ms=N" (min_samples), "pcaN"/"umapN" (a projection
    to N dimensions), "profile" (the similarity to each remaining prototype,
    centred, instead of the embedding), "size=W", "stats=W", "size+stats=W"
    (box sides and/or crop colour, contrast, sharpness beside the
    embedding, at weight W); "today" is discover's setting before issue 44,
    "shipped" its default now (``discover.UNKNOWNS``), either followed by
    changes."""
    from plankton.review.discover import UNKNOWNS

    o = {}
    for tok in name.split():
        key, _, val = tok.partition("=")
        if tok == "today":
            continue
        if tok == "shipped":
            o |= UNKNOWNS
            continue
        if tok in ("leaf", "eom"):
            o["selection"] = tok
        elif key in ("mcs", "ms"):
            o["min_cluster_size" if key == "mcs" else "min_samples"] = int(val)
        elif tok.startswith(("pca", "umap")):
            space = "pca" if tok.startswith("pca") else "umap"
            o |= {"space": space, "dims": int(tok[len(space):] or 10)}
        elif tok == "profile":
            o["space"] = "profile"
        elif key in ("size", "stats", "size+stats"):
            o |= {"beside": key, "weight": float(val)}
        else:
            raise ValueError(f"option {name!r}: cannot read {tok!r}")
    return o


def names_at(d: dict, left_out: set[str]) -> np.ndarray:
    """Each object's name with the prototypes of ``left_out`` removed
    (each object by its own group's prototypes)."""
    from plankton.model.prototypes import decide

    out = np.empty(len(d["truth"]), dtype=object)
    for g, grp in enumerate(d["groups"]):
        idx = np.flatnonzero(d["group"] == g)
        if not len(idx):
            continue
        keep = [k for k, n in enumerate(grp["names"]) if n not in left_out]
        sim = d["emb"][idx] @ grp["means"][keep].T
        out[idx] = decide(sim, [grp["names"][k] for k in keep], grp["thresholds"][keep])
    return out


def profile(d: dict, idx: np.ndarray, left_out: set[str]) -> np.ndarray:
    """Similarity to each remaining prototype, centred: a species-shaped
    projection of the embedding (one group's prototypes only)."""
    g = int(d["group"][idx[0]]) if len(idx) else 0
    grp = d["groups"][g]
    keep = [k for k, n in enumerate(grp["names"]) if n not in left_out]
    s = d["emb"][idx] @ grp["means"][keep].T
    return s - s.mean(axis=1, keepdims=True)


def run_option(d: dict, idx: np.ndarray, opt: dict, left_out: set[str], seed: int):
    o = BASE | opt
    beside = None
    if o["beside"]:
        parts = {"size": box_sides(d["box"][idx]), "stats": d["stats"][idx]}
        beside = np.hstack([parts[p] for p in o["beside"].split("+")])
    if o["space"] == "profile":
        # Out-of-fold objects of several folds have several prototype sets: cluster each fold's objects apart.
        emb, space = profile(d, idx, left_out), "embedding"
        if len(set(d["group"][idx].tolist())) > 1:
            return None
    else:
        emb, space = d["emb"][idx], o["space"]
    if len(idx) and o["min_samples"] is not None and o["min_samples"] > len(idx):
        return None
    return group(emb, beside, o["min_cluster_size"], o["min_samples"], o["selection"], space, o["dims"], o["weight"], seed)


def score(truth: np.ndarray, gr, left_out: set[str], left_total: int) -> dict:
    labels = gr.labels
    clusters = {c: truth[labels == c] for c in set(labels.tolist()) - {0}}
    big = {c: v for c, v in clusters.items() if len(v) >= 3}
    major = {c: Counter(v.tolist()).most_common(1)[0] for c, v in big.items()}
    clustered = sum(len(v) for v in big.values())
    found = sum(n for c, (lab, n) in major.items() if lab in left_out)
    debris = sum(int((v == NONE).sum()) for c, v in big.items() if major[c][0] != NONE)
    per = []
    for c, v in big.items():
        members = np.flatnonzero(labels == c)
        ordered = [k for k in gr.order() if labels[k] == c]
        by_sim = sorted(members, key=lambda k: -gr.centre_similarity[k])  # the order before issue 44
        third = max(1, len(ordered) // 3)
        ok, ok_sim = truth[ordered] == major[c][0], truth[by_sim] == major[c][0]
        per.append({"cohesion": gr.cohesion[c], "strength": float(gr.strength[members].mean()), "purity": major[c][1] / len(v), "n": len(v),
                    "core": float(ok[:third].mean()), "edge": float(ok[-third:].mean()),
                    "core_sim": float(ok_sim[:third].mean()), "edge_sim": float(ok_sim[-third:].mean())})
    return {"unknown": len(truth), "clusters": len(big), "clustered": clustered, "majority": sum(n for _, n in major.values()),
            "found": found, "left_total": left_total, "noise": int((labels == 0).sum()), "debris": debris, "debris_total": int((truth == NONE).sum()),
            "per": per}


def eligible(d: dict, min_objects: int, max_objects: int) -> list[str]:
    counts = Counter(d["truth"].tolist())
    in_all = set.intersection(*(set(d["groups"][g]["names"]) for g in set(d["group"].tolist())))
    return sorted(s for s, n in counts.items() if s != NONE and min_objects <= n <= max_objects and s in in_all)


def evaluate(d: dict, options: list[str], draws: int, leave_out: int, min_objects: int, max_objects: int, seed: int = 0) -> dict:
    pool = eligible(d, min_objects, max_objects)
    rng = np.random.default_rng(seed)
    sets = [set()] + [set(rng.choice(pool, size=min(leave_out, len(pool)), replace=False).tolist()) for _ in range(draws)]
    results = {o: [] for o in options}
    for k, left in enumerate(tqdm(sets, desc="draws", unit="draw")):
        named = names_at(d, left)
        idx = np.flatnonzero(named == "unknown")
        truth = d["truth"][idx]
        left_total = int(np.isin(d["truth"], list(left)).sum())
        for o in options:
            gr = run_option(d, idx, parse_option(o), left, seed + k)
            results[o].append(None if gr is None else score(truth, gr, left, left_total) | {"left_out": sorted(left)})
    return {"pool": pool, "draws": [sorted(s) for s in sets[1:]], "results": results}


def summarise(res: list[dict | None]) -> dict:
    base, draws = res[0], [r for r in res[1:] if r is not None]
    if base is None or not draws:
        return {}

    def pooled(rs, num, den):
        d = sum(r[den] for r in rs)
        return sum(r[num] for r in rs) / d if d else float("nan")

    per_draw = [r["majority"] / r["clustered"] for r in draws if r["clustered"]]
    return {"purity": pooled(draws, "majority", "clustered"), "purity_sd": float(np.std(per_draw)) if per_draw else float("nan"),
            "found": pooled(draws, "found", "left_total"), "noise": pooled(draws, "noise", "unknown"),
            "debris": pooled(draws, "debris", "debris_total"), "unknown": float(np.mean([r["unknown"] for r in draws])),
            "clusters": float(np.mean([r["clusters"] for r in draws])), "clustered": pooled(draws, "clustered", "unknown"),
            "defaults_purity": base["majority"] / base["clustered"] if base["clustered"] else float("nan"),
            "defaults": f"{base['clusters']} / {base['clustered']} of {base['unknown']}"}


def cohesion_report(res: list[dict | None]) -> dict:
    per = [p for r in res[1:] if r for p in r["per"]]
    if len(per) < 4:
        return {}
    coh, strength, pur = (np.array([p[k] for p in per]) for k in ("cohesion", "strength", "purity"))
    from scipy.stats import spearmanr

    hi = coh >= np.median(coh)
    n = np.array([p["n"] for p in per])
    return {"clusters": len(per), "spearman_cohesion_purity": round(float(spearmanr(coh, pur)[0]), 3),
            "spearman_strength_purity": round(float(spearmanr(strength, pur)[0]), 3),
            "purity_upper_half_cohesion": round(float((pur[hi] * n[hi]).sum() / n[hi].sum()), 3),
            "purity_lower_half_cohesion": round(float((pur[~hi] * n[~hi]).sum() / n[~hi].sum()), 3),
            "majority_share_first_third": round(float(np.mean([p["core"] for p in per])), 3),
            "majority_share_last_third": round(float(np.mean([p["edge"] for p in per])), 3),
            "by_centre_similarity_first_third": round(float(np.mean([p["core_sim"] for p in per])), 3),
            "by_centre_similarity_last_third": round(float(np.mean([p["edge_sim"] for p in per])), 3)}


def table(summary: dict[str, dict]) -> str:
    head = "| option | purity (sd) | left out, found | noise | debris in species clusters | clusters ≥ 3 | unknown in them | defaults: purity | defaults: clusters / in them |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for o, s in summary.items():
        if not s:
            lines.append(f"| {o} | n/a |  |  |  |  |  |  |  |")
            continue
        lines.append(f"| {o} | {s['purity']:.2f} ({s['purity_sd']:.2f}) | {s['found']:.2f} | {s['noise']:.2f} | {s['debris']:.2f} | {s['clusters']:.1f} "
                     f"| {s['clustered']:.2f} | {s['defaults_purity']:.2f} | {s['defaults']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.leave_species_out", description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", required=True, help="a cache from experiments.unknown_objects")
    p.add_argument("--draws", type=int, default=10)
    p.add_argument("--leave-out", type=int, default=3, help="species left out per draw (default %(default)s)")
    p.add_argument("--min-objects", type=int, default=5, help="a species can be left out with this many detected objects (default %(default)s)")
    p.add_argument("--max-objects", type=int, default=100,
                   help="... and at most this many (default %(default)s): a species that is most of the sample needs no clustering to be noticed")
    p.add_argument("--options", default=",".join(DEFAULT_OPTIONS), help="comma-separated option names (see parse_option; default: " + ", ".join(DEFAULT_OPTIONS) + ")")
    p.add_argument("--cohesion", default="today", help="options whose cohesion is reported (comma-separated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write every draw's figures here")
    args = p.parse_args(argv)
    opts = [o.strip() for o in args.options.split(",") if o.strip()]
    try:
        [parse_option(o) for o in opts]
    except ValueError as e:
        p.error(str(e))
    d = load(args.objects)
    ev = evaluate(d, opts, args.draws, args.leave_out, args.min_objects, args.max_objects, args.seed)
    summary = {o: summarise(ev["results"][o]) for o in opts}
    print(f"{len(d['truth'])} objects on {len(d['frames'])} frames; {args.draws} draws of {args.leave_out} species left out of "
          f"{len(ev['pool'])} with {args.min_objects}–{args.max_objects} objects; {summary[opts[0]].get('unknown', 0):.0f} unknown objects per draw on average\n")
    print(table(summary))
    coh = {o: cohesion_report(ev["results"][o]) for o in args.cohesion.split(",") if o in ev["results"]}
    print("\n" + json.dumps(coh, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "draws": ev["draws"], "summary": summary, "cohesion": coh, "results": ev["results"]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
