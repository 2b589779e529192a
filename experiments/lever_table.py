"""The identifier levers side by side: for each setting evaluated on both
frame-level splits (``NAME_s0``: the shipped split, ``NAME_s1``: the
frames split again with seed 1), the mean F1-macro and top-1 over the two
splits and the shipped split alone, as training.evaluate measured them.

    python -m experiments.lever_table work/eval [--markdown]
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

RUN = re.compile(r"^(?P<name>.+)_s(?P<split>[01])(?P<suffix>_.+)?$")
KEYS = ("f1_macro", "top1", "f1_macro_common", "unknown_rate_at_threshold", "accuracy_of_named_at_threshold")


def rows(folder: str | Path) -> list[dict]:
    """One row per setting with metrics on both splits."""
    found: dict[str, dict[str, dict]] = {}
    for m in sorted(Path(folder).glob("*/metrics.json")):
        match = RUN.match(m.parent.name)  # NAME_s0 or NAME_s1, with an optional suffix (scale_s0_rv)
        if match:
            found.setdefault(match["name"] + (match["suffix"] or ""), {})[match["split"]] = json.loads(m.read_text())["identification"]
    out = []
    for name, splits in found.items():
        if {"0", "1"} <= splits.keys():
            row = {"setting": name}
            for k in KEYS:
                a, b = splits["0"].get(k), splits["1"].get(k)
                row[k] = {"s0": a, "s1": b, "mean": None if a is None or b is None else (a + b) / 2}
            row["open_set_weighted"] = {s: splits[s]["open_set"]["unknown_rate_weighted"] for s in ("0", "1")}
            out.append(row)
    return out


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    table = rows(args.folder)
    if args.markdown:
        print("| setting | F1-macro s0 / s1 / mean | top-1 s0 / s1 / mean | F1-macro, species with ≥10 training boxes (mean) |")
        print("|---|---|---|---|")
        f = lambda d: " / ".join(f"{d[k]:.3f}" if d[k] is not None else "–" for k in ("s0", "s1", "mean"))  # noqa: E731
        for r in table:
            common = r["f1_macro_common"]["mean"]
            print(f"| {r['setting']} | {f(r['f1_macro'])} | {f(r['top1'])} | {common:.3f} |" if common is not None else f"| {r['setting']} | {f(r['f1_macro'])} | {f(r['top1'])} | – |")
    else:
        print(json.dumps(table, indent=2))
    return table


if __name__ == "__main__":
    main()
