"""``python -m plankton discover OUT --out DIR``: group the objects the
model could not name.

The embeddings ``predict`` kept (``embeddings.safetensors``) are clustered
with HDBSCAN (scikit-learn), euclidean on unit vectors: the same order as
cosine distance (|a−b|² = 2 − 2·cos). The unknown objects are clustered
with leaf selection (small, pure clusters), all objects (``--all``) with
excess-of-mass selection (broader clusters); ``--selection`` overrides.
Objects HDBSCAN puts in no cluster form the ``noise`` group: they are
reported as such, not forced into a group. Clusters are numbered 1, 2, … largest first. Nothing is embedded
again: the model is not needed.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from plankton.results import UNKNOWN

NOISE = "noise"
COLUMNS = ["image", "x1", "y1", "x2", "y2", "cluster", "similarity_to_cluster_centre", "nearest_species", "nearest_similarity"]


def cluster(embeddings: np.ndarray, min_cluster_size: int = 3, min_samples: int | None = None, selection: str = "eom") -> np.ndarray:
    """N×D embeddings → N labels: 1, 2, … (largest cluster first) and 0
    for noise. Fewer objects than ``min_cluster_size``: all noise.
    ``selection``: HDBSCAN's cluster_selection_method ("eom": the most
    persistent clusters; "leaf": the leaves of the cluster tree, smaller
    and purer, with more noise)."""
    from sklearn.cluster import HDBSCAN

    x = np.asarray(embeddings, np.float64)
    if len(x) < max(2, min_cluster_size):
        return np.zeros(len(x), int)
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    raw = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, metric="euclidean", cluster_selection_method=selection,
                  copy=True).fit_predict(x)
    sizes = Counter(int(v) for v in raw if v >= 0)
    # Largest first; ties by where the cluster first appears, so the numbering is stable.
    order = sorted(sizes, key=lambda c: (-sizes[c], int(np.argmax(raw == c))))
    new = {c: k + 1 for k, c in enumerate(order)}
    return np.array([new.get(int(v), 0) for v in raw], int)


def centre_similarity(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine of each object to its cluster's centre (the normalised mean);
    NaN for noise."""
    sim = np.full(len(labels), np.nan, np.float32)
    for c in set(labels.tolist()) - {0}:
        idx = np.flatnonzero(labels == c)
        centre = embeddings[idx].mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-12)
        sim[idx] = embeddings[idx] @ centre
    return sim


@dataclass
class Discovery:
    rows: list[dict]
    sizes: dict[str, int]  # cluster name → objects, largest first, noise last


def select(run, all_objects: bool, species: list[str] | None) -> np.ndarray:
    """Detection rows to cluster: unknown ones, plus those of ``species``;
    every one with ``all_objects``."""
    if all_objects:
        return np.arange(len(run.detections))
    wanted = {UNKNOWN, *(species or [])}
    return np.array([i for i, r in enumerate(run.detections) if r["species"] in wanted], int)


def discover(run, rows: np.ndarray, min_cluster_size: int = 3, min_samples: int | None = None, selection: str = "eom") -> Discovery:
    emb = run.embeddings[rows]
    labels = cluster(emb, min_cluster_size, min_samples, selection)
    sim = centre_similarity(emb, labels)
    sizes = Counter(int(v) for v in labels)
    names = {c: (str(c) if c else NOISE) for c in sizes}
    out = []
    order = sorted(range(len(rows)), key=lambda k: (labels[k] == 0, labels[k], -np.nan_to_num(sim[k], nan=-2)))
    for k in order:
        i, r = int(rows[k]), run.detections[int(rows[k])]
        ns = run.nearest_similarity[i]
        out.append({"image": r["image"], **{c: r[c] for c in ("x1", "y1", "x2", "y2")}, "cluster": names[int(labels[k])],
                    "similarity_to_cluster_centre": "" if np.isnan(sim[k]) else f"{sim[k]:.4f}",
                    "nearest_species": run.nearest[i], "nearest_similarity": "" if np.isnan(ns) else f"{ns:.4f}", "_row": i})
    ordered = sorted((c for c in sizes if c), key=lambda c: c) + ([0] if 0 in sizes else [])
    return Discovery(out, {names[c]: sizes[c] for c in ordered})


def run_discover(args, err: Callable[[str], None]) -> int:
    """The subcommand's body; returns the exit status."""
    from plankton.files import atomic_write_text
    from plankton.run.runfiles import RunError, read_run
    from plankton.review.sheets import MAX_TILES, crops, save_sheet
    from plankton.run.writers import csv_text

    try:
        run = read_run(args.run)
    except RunError as e:
        err(str(e))
        return 2
    if args.name:
        from plankton.review.naming import write_corrections

        return write_corrections(run, Path(args.out), args.name, err)
    if args.min_cluster_size < 2 or (args.min_samples is not None and args.min_samples < 1):
        err(f"--min-cluster-size must be at least 2 and --min-samples at least 1, not {args.min_cluster_size} and {args.min_samples}")
        return 2
    known = {r["species"] for r in run.detections}
    for name in args.species or []:
        if name not in known:
            err(f"--species {name!r}: no object of that name in {run.folder / 'detections.csv'}")
    rows = select(run, args.all, args.species)
    lacking = rows[~np.isfinite(run.embeddings[rows]).all(axis=1)] if len(rows) else rows
    if len(lacking):
        err(f"{len(lacking)} objects have no kept embedding (frames resumed from an older run's journal) and are left out")
        rows = np.setdiff1d(rows, lacking)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("cluster_*.png"):  # sheets of an earlier discovery in the same folder would mislead
        old.unlink()
    # The unknown objects are few and scattered: "eom" tends to merge them into one loose cluster, the leaves stay one thing each.
    selection = args.selection if args.selection != "auto" else ("eom" if args.all else "leaf")
    d = discover(run, rows, args.min_cluster_size, args.min_samples, selection)
    atomic_write_text(out / "clusters.csv", csv_text(d.rows, COLUMNS))
    what = "all objects" if args.all else "unknown objects" + (f" and {', '.join(args.species)}" if args.species else "")
    found = [c for c in d.sizes if c != NOISE]
    if not args.quiet:
        summary = f"{len(rows)} {what}: {len(found)} clusters" + (f" ({', '.join(f'{c}: {d.sizes[c]}' for c in found)})" if found else "") \
            + f", {d.sizes.get(NOISE, 0)} noise → {out / 'clusters.csv'}"
        print(summary, file=sys.stderr)
    if not d.rows:
        return 0
    lines: list[str] = []
    shown = [r["_row"] for c in d.sizes for r in [r for r in d.rows if r["cluster"] == c][:MAX_TILES]]  # the closest to the centre
    tiles = crops(run, shown, lines.append)
    if lines:
        err(lines[0] + (f" (and {len(lines) - 1} more frames)" if len(lines) > 1 else ""))
    if not tiles:
        err("no contact sheets: the run's frames cannot be read from where it recorded them")
        return 0
    for c in d.sizes:
        members = [r for r in d.rows if r["cluster"] == c and r["_row"] in tiles]
        if members:
            nearest = Counter(r["nearest_species"] for r in members).most_common(1)[0][0]
            title = (f"cluster {c}: {d.sizes[c]} objects, nearest species mostly {nearest}" if c != NOISE else f"noise: {d.sizes[c]} objects in no cluster") \
                + (f" (the {len(members)} closest to the centre)" if len(members) < d.sizes[c] and c != NOISE else "")
            save_sheet(out / f"cluster_{c}.png", [(tiles[r["_row"]], f"{r['nearest_species'][:12]} {r['nearest_similarity']}") for r in members], title)
    return 0


def add_parser(sub, err: Callable[[str], None]) -> None:
    """The ``discover`` subcommand on the CLI's subparsers."""
    di = sub.add_parser("discover", help="group a run's unknown objects by their kept embeddings (HDBSCAN), with contact sheets")
    di.add_argument("run", help="a finished predict output folder")
    di.add_argument("--out", required=True, help="folder for clusters.csv and cluster_<id>.png")
    di.add_argument("--all", action="store_true", help="cluster every object, not only the unknown ones")
    di.add_argument("--species", action="append", metavar="NAME", help="also cluster the objects named NAME (repeatable)")
    di.add_argument("--min-cluster-size", type=int, default=3, help="smallest group HDBSCAN calls a cluster (default %(default)s)")
    di.add_argument("--min-samples", type=int, default=None, help="HDBSCAN's min_samples (default: the cluster size); lower: less noise")
    di.add_argument("--selection", choices=["auto", "eom", "leaf"], default="auto",
                    help="HDBSCAN's cluster selection: leaf (small, pure clusters, more noise), eom (broader); auto: eom with --all, else leaf")
    di.add_argument("--name", action="append", metavar="CLUSTER=NAME",
                    help="name a cluster of OUT's clusters.csv (repeatable; 'not plankton' rejects it): writes OUT/corrections.coco.json for enrol")
    di.add_argument("--quiet", action="store_true")
    di.set_defaults(func=lambda args: run_discover(args, err))


__all__ = ["add_parser", "COLUMNS", "NOISE", "cluster", "centre_similarity", "select", "discover", "run_discover"]
