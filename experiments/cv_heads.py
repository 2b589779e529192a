"""Issue 26: the linear head and the hybrid, cross-validated over all
frames. ``experiments.linear_head`` scored them on folds of the 72
validation frames with the one bundled embedder; this scores them on the
5 folds of ``experiments.cv_grid``, each with the embedder trained on the
other four (its ``emb.npz``: every box's plain embedding), so the head and
the embedder never see the held-out frames.

    python -m experiments.cv_heads work/cv --run lite0-96-sqrt-e12-s0 --out docs/cv_heads.json

Per fold, on the training folds' boxes only: C of a multinomial logistic
regression (unweighted, one view a crop) is chosen over ``GRID_C`` by
F1-macro over 5 inner folds of training frames, then K of the hybrid (the
prototype's answer where it names a species with fewer than K training
boxes, the head's elsewhere) over ``HYBRID_K`` on the same inner folds.
Arms, scored closed-set on the held-out fold: ``prototype`` (the nearest
mean prototype, what ships), ``linear``, ``hybrid``.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score
from sklearn.model_selection import GroupKFold
from tqdm import tqdm

from experiments.cv_folds import BINS, figures, unit
from experiments.linear_head import fit, hybrid
from plankton.model.prototypes import Prototypes

GRID_C = (1.0, 3.0, 10.0)
HYBRID_K = (4, 10)
ARMS = ("prototype", "linear", "hybrid")


def nearest(train_e: np.ndarray, train_y: np.ndarray, test_e: np.ndarray, n_classes: int) -> np.ndarray:
    """Nearest mean prototype (class indices); classes without a training box get none."""
    protos = Prototypes.build(train_e, train_y, [str(c) for c in range(n_classes)], keep_support=False)
    cls = np.array([int(n) for n in protos.names])
    return cls[(test_e @ protos.means.T).argmax(1)]


def choose(e: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int) -> dict:
    """C, then K, by F1-macro over 5 inner folds of training frames."""
    split = list(GroupKFold(5).split(e, y, groups))
    linear = {c: np.empty_like(y) for c in GRID_C}
    proto = np.empty_like(y)
    for tr, te in split:
        proto[te] = nearest(e[tr], y[tr], e[te], n_classes)
        for c in GRID_C:
            linear[c][te] = fit(e[tr], y[tr], c, None).predict(e[te])
    f1 = lambda p: round(float(f1_score(y, p, average="macro", zero_division=0)), 4)  # noqa: E731
    c_table = {str(c): f1(linear[c]) for c in GRID_C}
    c = max(GRID_C, key=lambda v: c_table[str(v)])
    support = np.bincount(y, minlength=n_classes)
    k_table = {str(k): f1(hybrid(proto, linear[c], support, k)) for k in HYBRID_K}
    return {"C": c, "K": int(max(HYBRID_K, key=lambda v: k_table[str(v)])), "inner_f1_by_C": c_table, "inner_f1_by_K": k_table}


def fold(run_dir: Path, frame_of: dict[int, int]) -> dict:
    """One fold's arms: chosen settings, figures and predictions."""
    res = json.loads((run_dir / "result.json").read_text())
    z = np.load(run_dir / "emb.npz")
    e, y, train = unit(z["plain"].astype(np.float32)), z["label"], z["train"]
    tr, te = train & (y >= 0), ~train & (y >= 0)
    n = len(res["names"])
    groups = np.array([frame_of[int(a)] for a in z["ann_id"][tr]])
    chosen = choose(e[tr], y[tr], groups, n)
    support = np.bincount(y[tr], minlength=n)
    pred = {"prototype": nearest(e[tr], y[tr], e[te], n), "linear": fit(e[tr], y[tr], chosen["C"], None).predict(e[te])}
    pred["hybrid"] = hybrid(pred["prototype"], pred["linear"], support, chosen["K"])
    return {"fold": res["fold"], "chosen": chosen, "figures": {a: figures(y[te], p, support) for a, p in pred.items()},
            "names": res["names"], "support": support.tolist(), "true": y[te].tolist(), "pred": {a: p.tolist() for a, p in pred.items()}}


def msd(values: list[float]) -> list[float]:
    return [round(statistics.fmean(values), 4), round(statistics.stdev(values), 4) if len(values) > 1 else 0.0]


def summary(folds: list[dict]) -> dict:
    """Per arm: mean ± sd over folds, and folds won / lost against the prototype (F1-macro and top-1)."""
    out = {}
    for arm in ARMS:
        fs = [f["figures"][arm] for f in folds]
        d = {"top1": msd([f["top1"] for f in fs]), "f1_macro": msd([f["f1_macro"] for f in fs]),
             "f1_by_training_boxes": {b: msd(v) if (v := [f["f1_by_training_boxes"][b]["f1_macro"] for f in fs
                                                          if f["f1_by_training_boxes"][b]["f1_macro"] is not None]) else None for b in BINS}}
        if arm != "prototype":
            for m in ("top1", "f1_macro"):
                diff = [f["figures"][arm][m] - f["figures"]["prototype"][m] for f in folds]
                d[f"{m}_vs_prototype"] = msd(diff) + [sum(x > 1e-9 for x in diff), sum(x < -1e-9 for x in diff)]
        out[arm] = d
    return out


def table(s: dict) -> str:
    f = lambda v: "–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = [f"| arm | top-1 | F1-macro | F1 {' | F1 '.join(BINS)} | F1-macro folds won / lost |", "|" + "---|" * (4 + len(BINS))]
    for arm, d in s.items():
        wl = d.get("f1_macro_vs_prototype")
        lines.append(f"| {arm} | {f(d['top1'])} | {f(d['f1_macro'])} | " + " | ".join(f(d["f1_by_training_boxes"][b]) for b in BINS)
                     + f" | {f'{wl[2]} / {wl[3]}' if wl else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="an experiments.cv_grid --out folder")
    p.add_argument("--run", required=True, help="a run under GRID/runs whose folds all finished")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    dirs = sorted((args.grid / "runs" / args.run).glob("fold*"))
    missing = [d.name for d in dirs if not (d / "result.json").exists()]
    if not dirs or missing:
        raise SystemExit(f"{args.grid / 'runs' / args.run}: no finished folds" + (f" ({', '.join(missing)} unfinished)" if missing else ""))
    index = json.loads((args.grid / "folds" / "fold0" / "crops.json").read_text())["crops"]
    frame_of = {int(r["ann_id"]): int(r["image_id"]) for r in index}
    folds = [fold(d, frame_of) for d in tqdm(dirs, desc="folds", unit="fold")]
    s = summary(folds)
    print(table(s), end="")
    result = {"grid": args.grid.name, "run": args.run, "summary": s, "table": table(s), "folds": folds}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
