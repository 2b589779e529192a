"""Issue 40: test-time augmentation where it pays, chosen by the folds.

Eight views of every crop (rotations and mirrors) cost the embedder eight
times its work. Most crops do not need them: their nearest species is far
ahead of the next. Here the identifier's rule (``Identifier.refine``: a
crop whose two nearest species lie within a margin is embedded in its 8
views, and their mean replaces its embedding) is scored on the folds of
``experiments.cv_grid``, from each fold's stored plain and 8-view
embeddings (``emb.npz``; no network runs):

    python -m experiments.tta_margin work/cv40 --run lite0-96-sqrt-e12-s0 --out docs/tta_margin.json

Arms, closed set (nearest mean prototype, prototypes from the training
folds' plain embeddings, as the shipped prototypes are): ``plain``;
``tta`` (every crop in 8 views); ``selective`` with the margin chosen
*inside* each outer fold (by mean F1-macro over the other four folds, so
the held-out fold never picks its own margin; nested), and the share of
crops it re-embeds. The margin that ships is the one all five folds choose
together (printed last). Also the largest single confusion, Chlorella sp
against Chlamydomonas sp, pooled over folds, per arm.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
from tqdm import tqdm

from experiments.cv_folds import BINS, figures, unit
from training.crossfit import prototypes

GRID = (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.125, 0.15, 0.2)
PAIR = ("Chlorella sp", "Chlamydomonas sp")


def fold_arrays(d: Path) -> dict:
    """One fold: held-out labels, its plain and 8-view similarity to the plain prototypes, training support."""
    res = json.loads((d / "result.json").read_text())
    z = np.load(d / "emb.npz")
    y, tr = z["label"], z["train"] & (z["label"] >= 0)
    te = ~z["train"] & (y >= 0)
    n = len(res["names"])
    protos = prototypes(unit(z["plain"][tr].astype(np.float32)), y[tr], [str(c) for c in range(n)], "mean", 5, 0)
    cls = np.array([int(c) for c in protos.names])
    plain, tta = protos.similarity(unit(z["plain"][te].astype(np.float32))), protos.similarity(unit(z["tta"][te].astype(np.float32)))
    top2 = np.sort(plain, axis=1)[:, -2:]
    return {"fold": res["fold"], "names": res["names"], "true": y[te], "cls": cls, "plain": plain, "tta": tta,
            "margin": top2[:, 1] - top2[:, 0], "support": np.bincount(y[tr], minlength=n)}


def predict(f: dict, margin: float) -> tuple[np.ndarray, float]:
    """(predicted classes, share re-embedded) at a margin (inf: every crop)."""
    doubtful = f["margin"] < margin
    return f["cls"][np.where(doubtful[:, None], f["tta"], f["plain"]).argmax(1)], float(doubtful.mean())


def confusion(folds: list[dict], preds: list[np.ndarray]) -> dict:
    """Pooled: Chlorella named Chlamydomonas and back."""
    out = {f"{a} → {b}": 0 for a, b in (PAIR, PAIR[::-1])}
    for f, p in zip(folds, preds):
        idx = {n: i for i, n in enumerate(f["names"])}
        if all(n in idx for n in PAIR):
            a, b = idx[PAIR[0]], idx[PAIR[1]]
            out[f"{PAIR[0]} → {PAIR[1]}"] += int(((f["true"] == a) & (p == b)).sum())
            out[f"{PAIR[1]} → {PAIR[0]}"] += int(((f["true"] == b) & (p == a)).sum())
    return out | {"objects": {n: int(sum((f["true"] == f["names"].index(n)).sum() for f in folds if n in f["names"])) for n in PAIR}}


def msd(v: list[float]) -> list[float]:
    return [round(statistics.fmean(v), 4), round(statistics.stdev(v), 4) if len(v) > 1 else 0.0]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", type=Path, help="an experiments.cv_grid --out folder (run with its 8-view embeddings)")
    p.add_argument("--run", required=True)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    dirs = sorted((args.grid / "runs" / args.run).glob("fold*"))
    if len(dirs) < 2 or any(not (d / "result.json").exists() for d in dirs):
        raise SystemExit(f"{args.grid / 'runs' / args.run}: needs two or more finished folds")
    folds = [fold_arrays(d) for d in tqdm(dirs, desc="folds", unit="fold")]
    f1 = {m: [figures(f["true"], predict(f, m)[0], f["support"])["f1_macro"] for f in folds] for m in GRID}
    arms: dict[str, list] = {"plain": [], "tta": [], "selective": []}
    chosen, shares = [], []
    for k, f in enumerate(folds):
        inner = max(GRID, key=lambda m: (statistics.fmean(v for j, v in enumerate(f1[m]) if j != k), -m))  # ties: the cheaper margin
        chosen.append(inner)
        sel, share = predict(f, inner)
        shares.append(share)
        for arm, pred in (("plain", predict(f, 0.0)[0]), ("tta", predict(f, np.inf)[0]), ("selective", sel)):
            arms[arm].append((pred, figures(f["true"], pred, f["support"])))
    ships = max(GRID, key=lambda m: (statistics.fmean(f1[m]), -m))
    summary = {arm: {"top1": msd([r[1]["top1"] for r in rows]), "f1_macro": msd([r[1]["f1_macro"] for r in rows]),
                     "f1_by_training_boxes": {b: msd(v) if len(v := [r[1]["f1_by_training_boxes"][b]["f1_macro"] for r in rows
                                                                     if r[1]["f1_by_training_boxes"][b]["f1_macro"] is not None]) else None
                                              for b in BINS},
                     "confusion": confusion(folds, [r[0] for r in rows])} for arm, rows in arms.items()}
    for arm in ("tta", "selective"):
        for m in ("top1", "f1_macro"):
            diff = [a[1][m] - b[1][m] for a, b in zip(arms[arm], arms["plain"])]
            summary[arm][f"{m}_vs_plain"] = msd(diff) + [sum(d > 1e-9 for d in diff), sum(d < -1e-9 for d in diff)]
    summary["selective"] |= {"margins_chosen_inside": chosen, "share_reembedded": msd(shares)}
    f = lambda v: "–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = ["| arm | top-1 | F1-macro | F1 " + " | F1 ".join(BINS) + " | Chlorella → Chlamydomonas / back |", "|" + "---|" * (4 + len(BINS))]
    for arm, s in summary.items():
        c = s["confusion"]
        lines.append(f"| {arm} | {f(s['top1'])} | {f(s['f1_macro'])} | " + " | ".join(f(s["f1_by_training_boxes"][b]) for b in BINS)
                     + f" | {c[f'{PAIR[0]} → {PAIR[1]}']} / {c[f'{PAIR[1]} → {PAIR[0]}']} |")
    table = "\n".join(lines) + "\n"
    print(table + f"\nselective: margins chosen inside the outer folds {chosen}, {summary['selective']['share_reembedded'][0]:.1%} of crops "
          f"re-embedded; the margin all folds choose together (ships): {ships}")
    result = {"grid": args.grid.name, "run": args.run, "grid_margins": list(GRID), "f1_macro_by_margin": {str(m): msd(v) for m, v in f1.items()},
              "ships": ships, "summary": summary, "table": table}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
