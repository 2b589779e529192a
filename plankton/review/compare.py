"""``python -m plankton compare OUT_A OUT_B --out DIR``: what changes between
two runs on the same frames (two model versions, or two thresholds).
``predict --compare-model B`` makes the second run and the comparison
in one go (``OUT/model_b``, ``OUT/compare``).

- ``compare.csv``: per species the counts under each run and their
  difference (B − A); the estimated counts and their intervals where the
  runs' ``concentration.csv`` has them (``count_est``, ``count_est_low``,
  ``count_est_high``), and whether the two intervals overlap (empty where
  a run's table does not list the species); then an ``others`` row with
  the estimate of the names concentration.csv leaves out (each estimated
  below its floor), when there is any, so that the estimated rows add up
  to the estimated total; then an ``unknown`` row and a ``total`` row.
- ``changed.csv``: the objects whose name changed. Objects are matched
  within each frame (by its path relative to the input, so two frames
  that share a file name stay apart) one to one, by box IoU ≥ ``IOU``
  (the pairing of largest total IoU); an object without a partner has
  no name to compare and is only counted.
- ``changed.png``: their crops, cut from run A's frames.
"""
from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

import numpy as np

from plankton.results import UNKNOWN

IOU = 0.5
OTHERS = "others"  # compare.csv's row for the names the runs' tables leave out
COLUMNS = ["species", "count_a", "count_b", "difference", "count_est_a", "count_est_b", "count_est_low_a", "count_est_high_a",
           "count_est_low_b", "count_est_high_b", "intervals_overlap"]
CHANGED_COLUMNS = ["image", "x1", "y1", "x2", "y2", "species_a", "species_b", "similarity_a", "similarity_b"]
ESTIMATES = ("count_est", "count_est_low", "count_est_high")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """N×4 and M×4 xyxy boxes → N×M IoU (numpy: no torch for a comparison)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match(a: np.ndarray, b: np.ndarray, threshold: float = IOU) -> list[tuple[int, int]]:
    """One-to-one pairs (i, j) of boxes with IoU ≥ threshold."""
    if not len(a) or not len(b):
        return []
    from scipy.optimize import linear_sum_assignment

    m = iou(a, b)
    ii, jj = linear_sum_assignment(-m)
    return [(int(i), int(j)) for i, j in zip(ii, jj) if m[i, j] >= threshold]


def _estimates(folder: Path) -> dict[str, dict]:
    """{species: {count_est, count_est_low, count_est_high}} from
    concentration.csv when it has those columns, else {}."""
    import csv

    path = folder / "concentration.csv"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    if not rows or not all(k in rows[0] for k in ESTIMATES) or not any(r["count_est"] for r in rows):
        return {}  # a model without a count calibration leaves the columns empty
    return {r["species"]: {k: r[k] for k in ESTIMATES} for r in rows if r.get("species")}


def _float(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def count_rows(run_a, run_b) -> list[dict]:
    """compare.csv's rows: every species either run counted or estimated,
    ``others`` where needed, ``unknown``, ``total``. Each run's estimated
    rows add up to its estimated total."""
    ca, cb = Counter(r["species"] for r in run_a.detections), Counter(r["species"] for r in run_b.detections)
    ea, eb = _estimates(run_a.folder), _estimates(run_b.folder)
    est = lambda e, s: _float(e.get(s, {}).get("count_est")) or 0.0  # noqa: E731
    species = sorted((set(ca) | set(cb) | set(ea) | set(eb)) - {UNKNOWN, "total", OTHERS},
                     key=lambda s: (-(ca[s] + cb[s]), -(est(ea, s) + est(eb, s)), s))
    rows = []
    for s in species + [UNKNOWN, "total"]:
        a, b = (sum(ca.values()), sum(cb.values())) if s == "total" else (ca[s], cb[s])
        row = {"species": s, "count_a": a, "count_b": b, "difference": b - a}
        # A species a run's table does not list stays empty: its estimate is small, not 0, and its interval unknown here.
        for side, e in (("a", ea.get(s)), ("b", eb.get(s))):
            if e:
                row |= {f"count_est_{side}": e["count_est"], f"count_est_low_{side}": e["count_est_low"], f"count_est_high_{side}": e["count_est_high"]}
        lo_a, hi_a, lo_b, hi_b = (_float(row.get(k)) for k in ("count_est_low_a", "count_est_high_a", "count_est_low_b", "count_est_high_b"))
        if None not in (lo_a, hi_a, lo_b, hi_b):
            row["intervals_overlap"] = "yes" if lo_a <= hi_b and lo_b <= hi_a else "no"
        rows.append(row)
    # concentration.csv leaves out names estimated below its floor; their share of the total goes on one row, or the rows would not add up.
    rest = {side: _float(e.get("total", {}).get("count_est")) for side, e in (("a", ea), ("b", eb))}
    rest = {side: t - sum(_float(r.get(f"count_est_{side}")) or 0.0 for r in rows[:-1]) for side, t in rest.items() if t is not None}
    if any(abs(v) >= 0.005 for v in rest.values()):
        rows.insert(len(rows) - 2, {"species": OTHERS, "count_a": 0, "count_b": 0, "difference": 0}
                    | {f"count_est_{side}": f"{v:.6g}" for side, v in rest.items()})
    return rows


def changed_rows(run_a, run_b) -> tuple[list[dict], int, int]:
    """(objects renamed, with ``_row`` their row in A; objects of A with no
    partner in B; objects of B with no partner in A). Frames are matched by
    their path relative to the input (``runfiles.detection_keys``)."""
    from plankton.run.runfiles import detection_keys

    by_a, by_b = defaultdict(list), defaultdict(list)
    for i, key in enumerate(detection_keys(run_a)):
        by_a[key].append(i)
    for j, key in enumerate(detection_keys(run_b)):
        by_b[key].append(j)
    out, lone_a, lone_b = [], 0, 0
    for image in sorted(set(by_a) | set(by_b)):
        ia, ib = by_a.get(image, []), by_b.get(image, [])
        pairs = match(np.array([run_a.box(i) for i in ia]), np.array([run_b.box(j) for j in ib]))
        lone_a, lone_b = lone_a + len(ia) - len(pairs), lone_b + len(ib) - len(pairs)
        for p, q in sorted(pairs):
            ra, rb = run_a.detections[ia[p]], run_b.detections[ib[q]]
            if ra["species"] != rb["species"]:
                out.append({"image": image, **{k: ra[k] for k in ("x1", "y1", "x2", "y2")}, "species_a": ra["species"], "species_b": rb["species"],
                            "similarity_a": ra["similarity"], "similarity_b": rb["similarity"], "_row": ia[p]})
    return out, lone_a, lone_b


def run_compare(args, err: Callable[[str], None]) -> int:
    """The subcommand's body; returns the exit status."""
    from plankton.files import atomic_write_text
    from plankton.run.runfiles import RunError, frame_keys, read_run
    from plankton.review.sheets import MAX_TILES, crops, save_sheet
    from plankton.run.writers import csv_text

    try:
        run_a, run_b = read_run(args.run_a, embeddings=False), read_run(args.run_b, embeddings=False)
    except RunError as e:
        err(str(e))
        return 2
    frames_a, frames_b = set(frame_keys(run_a)), set(frame_keys(run_b))
    if frames_a and frames_b and frames_a != frames_b:
        err(f"the runs saw different frames ({len(frames_a - frames_b)} only in A, {len(frames_b - frames_a)} only in B): counts are not comparable as they stand")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = count_rows(run_a, run_b)
    atomic_write_text(out / "compare.csv", csv_text(counts, COLUMNS))
    changed, lone_a, lone_b = changed_rows(run_a, run_b)
    atomic_write_text(out / "changed.csv", csv_text(changed, CHANGED_COLUMNS))
    (out / "changed.png").unlink(missing_ok=True)  # an earlier comparison's sheet would mislead
    if not args.quiet:
        moves = Counter((r["species_a"], r["species_b"]) for r in changed).most_common(3)
        print(f"{counts[-1]['count_a']} → {counts[-1]['count_b']} objects; {len(changed)} renamed"
              + (f" (most: {', '.join(f'{a} → {b} ×{n}' for (a, b), n in moves)})" if moves else "")
              + f"; {lone_a} only in A, {lone_b} only in B → {out / 'compare.csv'}", file=sys.stderr)
    if changed:
        lines: list[str] = []
        tiles = crops(run_a, [r["_row"] for r in changed[:MAX_TILES]], lines.append)
        if lines:
            err(lines[0] + (f" (and {len(lines) - 1} more frames)" if len(lines) > 1 else ""))
        if tiles:
            save_sheet(out / "changed.png", [(tiles[r["_row"]], f"{r['species_a'][:9]}→{r['species_b'][:9]}") for r in changed if r["_row"] in tiles],
                       f"{len(changed)} objects renamed: A → B" + (f" (the first {MAX_TILES})" if len(changed) > MAX_TILES else ""))
        else:
            err("no changed.png: run A's frames cannot be read from where it recorded them")
    return 0


def with_second_model(args, predict: Callable, err: Callable[[str], None]) -> int:
    """``predict --compare-model B``: the same frames and settings with
    model B into ``OUT/model_b``, then ``compare`` of the two runs into
    ``OUT/compare``. ``predict``: the CLI's predict command (passed in, so
    this module does not import the CLI)."""
    from argparse import Namespace

    out = Path(args.out)
    second = Namespace(**{**vars(args), "model": args.compare_model, "model_repo": None, "model_revision": None, "out": str(out / "model_b"),
                          "compare_model": None, "annotate": False, "export": None})
    if not args.quiet:
        print(f"second model: {args.compare_model} → {out / 'model_b'}", file=sys.stderr)
    status = predict(second)
    if not (out / "model_b" / "detections.csv").exists():
        err(f"no comparison: the run with {args.compare_model} did not finish")
        return status or 2
    return max(status, run_compare(Namespace(run_a=str(out), run_b=str(out / "model_b"), out=str(out / "compare"), quiet=args.quiet), err))


def add_parser(sub, err: Callable[[str], None]) -> None:
    """The ``compare`` subcommand on the CLI's subparsers."""
    co = sub.add_parser("compare", help="per-species counts and renamed objects between two runs on the same frames")
    co.add_argument("run_a", help="a finished predict output folder (e.g. the current model)")
    co.add_argument("run_b", help="another one on the same frames (e.g. a new model version)")
    co.add_argument("--out", required=True, help="folder for compare.csv, changed.csv and changed.png")
    co.add_argument("--quiet", action="store_true")
    co.set_defaults(func=lambda args: run_compare(args, err))


__all__ = ["add_parser", "COLUMNS", "CHANGED_COLUMNS", "IOU", "OTHERS", "iou", "match", "count_rows", "changed_rows", "run_compare", "with_second_model"]
