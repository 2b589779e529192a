"""Pick the embedder setting with the best validation F1-macro averaged over
the frame-level splits it was trained on, and copy its run on the shipped
split (``NAME_orig``) to OUT, with the whole comparison in comparison.json.

    python -m experiments.choose_embedder /tmp/emb work/gpu_out/emb
"""
from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path

from training.common import log, write_json


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", help="folder of NAME_SPLIT run folders, each holding embedder.json")
    p.add_argument("out")
    args = p.parse_args(argv)
    runs: dict[str, dict[str, dict]] = defaultdict(dict)
    for info in sorted(Path(args.runs).glob("*/embedder.json")):
        name, split = info.parent.name.rsplit("_", 1)
        r = json.loads(info.read_text())
        runs[name][split] = {
            "best_val_f1_macro": r["best_val_f1_macro"],
            "best_val_top1": max((h["val_top1"] for h in r["history"] if h["val_f1_macro"] == r["best_val_f1_macro"]), default=0.0),
            "epochs": len(r["history"]), "sampling": r["args"]["sampling"], "size": r["crop"]["size"], "history": r["history"],
        }
    complete = {n: s for n, s in runs.items() if "orig" in s}
    if not complete:
        raise SystemExit(f"{args.runs}: no finished run on the shipped split (NAME_orig/embedder.json)")
    score = {n: sum(v["best_val_f1_macro"] for v in s.values()) / len(s) for n, s in complete.items()}
    chosen = max(score, key=score.get)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in ("embedder.safetensors", "embedder.json"):
        shutil.copy(Path(args.runs) / f"{chosen}_orig" / f, out / f)
    summary = {"chosen": chosen, "rule": "highest validation F1-macro averaged over the splits", "mean_f1_macro": score, "runs": runs}
    write_json(out / "comparison.json", summary)
    for n in sorted(score, key=score.get, reverse=True):
        log.info("%-12s mean F1-macro %.3f  %s", n, score[n], {s: round(v["best_val_f1_macro"], 3) for s, v in runs[n].items()})
    return summary


if __name__ == "__main__":
    main()
