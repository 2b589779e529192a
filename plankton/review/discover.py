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
COLUMNS = ["image", "x1", "y1", "x2", "y2", "cluster", "similarity_to_cluster_centre", "nearest_species", "nearest_similarity", "cohesion", "membership"]
# Chosen by experiments.leave_species_out (docs/unknowns.md): the unknown objects, and every object (--all).
UNKNOWNS = {"min_cluster_size": 3, "min_samples": 1, "selection": "leaf"}
ALL = {"min_cluster_size": 3, "min_samples": None, "selection": "eom"}


SPACES = ("embedding", "pca", "umap")


@dataclass
class Grouping:
    """What HDBSCAN made of N objects."""

    labels: np.ndarray  # 1, 2, … largest cluster first; 0: noise
    strength: np.ndarray  # HDBSCAN's membership probability, 0–1 (0 for noise): how firmly each object is in its cluster
    centre_similarity: np.ndarray  # cosine to its cluster's centre (the normalised mean embedding); NaN for noise
    cohesion: dict[int, float]  # cluster → the mean of its objects' centre similarities

    def order(self) -> np.ndarray:
        """Indices: clusters in number order, noise last; within a cluster
        the firmest members first, so the doubtful ones come last."""
        key = np.nan_to_num(self.centre_similarity, nan=-2.0)
        return np.array(sorted(range(len(self.labels)), key=lambda k: (self.labels[k] == 0, self.labels[k], -self.strength[k], -key[k])), int)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def box_sides(boxes: np.ndarray) -> np.ndarray:
    """N×4 boxes (x1 y1 x2 y2) → N×2 log sides: a size beside the embedding
    (the crop the embedder sees is resized, so it does not know size)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.log(np.clip(np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1), 1, None))


def layout(embeddings: np.ndarray, beside: np.ndarray | None = None, space: str = "embedding", dims: int = 10, weight: float = 0.0,
           seed: int = 0) -> np.ndarray:
    """What HDBSCAN clusters: the unit embeddings as they are, or projected
    to ``dims`` dimensions (``pca``; ``umap``, cosine, as MBARI's sdcat
    does: needs umap-learn), then, with ``weight`` > 0, the N×F ``beside``
    features (e.g. ``box_sides``) standardised over these objects and
    scaled by ``weight`` relative to the spread of the embedding part."""
    x = _unit(embeddings)
    n = len(x)
    if space == "pca" and n > 2:
        from sklearn.decomposition import PCA

        x = PCA(n_components=min(dims, n - 1, x.shape[1]), random_state=seed).fit_transform(x)
    elif space == "umap" and n > dims + 1:
        import umap

        x = umap.UMAP(n_components=dims, n_neighbors=min(15, n - 1), min_dist=0.0, metric="cosine", random_state=seed, n_jobs=1).fit_transform(x)
    elif space not in SPACES:
        raise ValueError(f"space {space!r}: one of {', '.join(SPACES)}")
    if weight > 0 and beside is not None and n:
        f = np.asarray(beside, np.float64).reshape(n, -1)
        f = (f - f.mean(axis=0)) / np.clip(f.std(axis=0), 1e-6, None)
        spread = float(np.sqrt(((x - x.mean(axis=0)) ** 2).sum(axis=1).mean())) or 1.0
        x = np.hstack([x, f * weight * spread / np.sqrt(f.shape[1])])
    return x


def group(embeddings: np.ndarray, beside: np.ndarray | None = None, min_cluster_size: int = 3, min_samples: int | None = None,
          selection: str = "leaf", space: str = "embedding", dims: int = 10, weight: float = 0.0, seed: int = 0) -> Grouping:
    """N×D embeddings (and N×F features ``beside`` them, see ``layout``) → a Grouping. Fewer objects than
    ``min_cluster_size``: all noise. ``selection``: HDBSCAN's
    cluster_selection_method ("eom": the most persistent clusters; "leaf":
    the leaves of the cluster tree, smaller and purer, with more noise).
    ``min_samples`` above the number of objects is ValueError (a caller's
    input, said in one line)."""
    from sklearn.cluster import HDBSCAN

    emb = _unit(embeddings)
    n = len(emb)
    if min_samples is not None and min_samples > n and n >= max(2, min_cluster_size):
        raise ValueError(f"min_samples {min_samples} needs more objects than that; there are {n}")
    if n < max(2, min_cluster_size):
        raw, prob = np.full(n, -1), np.zeros(n)
    else:
        h = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, metric="euclidean", cluster_selection_method=selection, copy=True)
        raw = h.fit_predict(layout(emb, beside, space, dims, weight, seed))
        prob = np.where(raw >= 0, h.probabilities_, 0.0)
    sizes = Counter(int(v) for v in raw if v >= 0)
    # Largest first; ties by where the cluster first appears, so the numbering is stable.
    order = sorted(sizes, key=lambda c: (-sizes[c], int(np.argmax(raw == c))))
    new = {c: k + 1 for k, c in enumerate(order)}
    labels = np.array([new.get(int(v), 0) for v in raw], int)
    sim = centre_similarity(emb, labels)
    cohesion = {c: float(np.mean(sim[labels == c])) for c in sorted(set(labels.tolist()) - {0})}
    return Grouping(labels, np.asarray(prob, np.float64), sim, cohesion)


def cluster(embeddings: np.ndarray, min_cluster_size: int = 3, min_samples: int | None = None, selection: str = "eom", **options) -> np.ndarray:
    """N×D embeddings → N labels: 1, 2, … (largest cluster first) and 0
    for noise; ``group``'s labels alone."""
    return group(embeddings, None, min_cluster_size, min_samples, selection, **options).labels


def centre_similarity(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine of each object to its cluster's centre (the normalised mean);
    NaN for noise."""
    embeddings = np.asarray(embeddings, np.float64)
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
    cohesion: dict[str, float]  # cluster name → cohesion (no noise)


def select(run, all_objects: bool, species: list[str] | None) -> np.ndarray:
    """Detection rows to cluster: unknown ones, plus those of ``species``;
    every one with ``all_objects``."""
    if all_objects:
        return np.arange(len(run.detections))
    wanted = {UNKNOWN, *(species or [])}
    return np.array([i for i, r in enumerate(run.detections) if r["species"] in wanted], int)


def discover(run, rows: np.ndarray, min_cluster_size: int = 3, min_samples: int | None = None, selection: str = "leaf", **options) -> Discovery:
    """``rows`` of the run grouped (``group``; ``options``: its space, dims,
    weight): clusters.csv's rows, in ``Grouping.order``."""
    from plankton.run.runfiles import detection_keys

    emb = run.embeddings[rows]
    boxes = np.array([run.box(int(i)) for i in rows], np.float64).reshape(-1, 4)
    g = group(emb, box_sides(boxes), min_cluster_size, min_samples, selection, **options)
    sizes = Counter(int(v) for v in g.labels)
    names = {c: (str(c) if c else NOISE) for c in sizes}
    keys = detection_keys(run)  # a/frame.jpg and b/frame.jpg stay two frames for --name
    out = []
    for k in g.order():
        i, r = int(rows[k]), run.detections[int(rows[k])]
        ns, c = run.nearest_similarity[i], int(g.labels[k])
        out.append({"image": keys[i], **{f: r[f] for f in ("x1", "y1", "x2", "y2")}, "cluster": names[c],
                    "similarity_to_cluster_centre": "" if np.isnan(g.centre_similarity[k]) else f"{g.centre_similarity[k]:.4f}",
                    "nearest_species": run.nearest[i], "nearest_similarity": "" if np.isnan(ns) else f"{ns:.4f}",
                    "cohesion": f"{g.cohesion[c]:.4f}" if c else "", "membership": f"{g.strength[k]:.4f}" if c else "", "_row": i})
    ordered = sorted(c for c in sizes if c) + ([0] if 0 in sizes else [])
    return Discovery(out, {names[c]: sizes[c] for c in ordered}, {names[c]: v for c, v in g.cohesion.items()})


def refuse_noise(pairs: list[str]) -> str | None:
    """The message for a --name that would name the noise group as one
    species (rejecting it is fine), else None."""
    from plankton.results import NOT_PLANKTON

    for p in pairs:
        cluster, _, label = p.partition("=")
        if cluster.strip() == NOISE and " ".join(label.split()) != NOT_PLANKTON:
            return (f"--name {p!r}: noise is not a cluster (objects with no group in common), so it cannot be named as one species; "
                    f"reject them all with --name {NOISE}=\"{NOT_PLANKTON}\", or name them one by one in the app's Review tab")
    return None


def run_discover(args, err: Callable[[str], None]) -> int:
    """The subcommand's body; returns the exit status."""
    from plankton.files import atomic_write_text
    from plankton.run.runfiles import RunError, read_run
    from plankton.review.sheets import MAX_TILES, crops, save_sheet
    from plankton.run.writers import csv_text

    if args.name and (why := refuse_noise(args.name)):
        err(why)
        return 2
    try:
        run = read_run(args.run)
    except RunError as e:
        err(str(e))
        return 2
    if args.name:
        from plankton.review.naming import write_corrections

        return write_corrections(run, Path(args.out), args.name, err)
    if (args.min_cluster_size is not None and args.min_cluster_size < 2) or (args.min_samples is not None and args.min_samples < 1):
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
    if args.min_samples is not None and 0 < len(rows) < args.min_samples:
        err(f"--min-samples {args.min_samples} is more than the {len(rows)} objects to cluster; give at most {len(rows)}")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("cluster_*.png"):  # sheets of an earlier discovery in the same folder would mislead
        old.unlink()
    settings = dict(ALL if args.all else UNKNOWNS)
    settings |= {k: v for k, v in (("min_cluster_size", args.min_cluster_size), ("min_samples", args.min_samples),
                                  ("selection", None if args.selection == "auto" else args.selection)) if v is not None}
    d = discover(run, rows, **settings)
    atomic_write_text(out / "clusters.csv", csv_text(d.rows, COLUMNS))
    what = "all objects" if args.all else "unknown objects" + (f" and {', '.join(args.species)}" if args.species else "")
    found = [c for c in d.sizes if c != NOISE]
    if not args.quiet:
        summary = f"{len(rows)} {what}: {len(found)} clusters" + (f" ({', '.join(f'{c}: {d.sizes[c]}, cohesion {d.cohesion[c]:.2f}' for c in found)})"
                                                               if found else "") + f", {d.sizes.get(NOISE, 0)} noise → {out / 'clusters.csv'}"
        print(summary, file=sys.stderr)
    if not d.rows:
        return 0
    lines: list[str] = []
    shown = [r["_row"] for c in d.sizes for r in [r for r in d.rows if r["cluster"] == c][:MAX_TILES]]  # the firmest members
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
            title = (f"cluster {c}: {d.sizes[c]} objects, cohesion {d.cohesion[c]:.2f}, nearest species mostly {nearest}; doubtful last"
                     if c != NOISE else f"noise: {d.sizes[c]} objects in no cluster") \
                + (f" (the {len(members)} firmest)" if len(members) < d.sizes[c] and c != NOISE else "")
            save_sheet(out / f"cluster_{c}.png", [(tiles[r["_row"]], f"{r['nearest_species'][:12]} {r['nearest_similarity']}",
                                                   float(r["membership"]) if r["membership"] else None) for r in members], title)
    return 0


def add_parser(sub, err: Callable[[str], None]) -> None:
    """The ``discover`` subcommand on the CLI's subparsers."""
    di = sub.add_parser("discover", help="group a run's unknown objects by their kept embeddings (HDBSCAN), with contact sheets")
    di.add_argument("run", help="a finished predict output folder")
    di.add_argument("--out", required=True, help="folder for clusters.csv and cluster_<id>.png")
    di.add_argument("--all", action="store_true", help="cluster every object, not only the unknown ones")
    di.add_argument("--species", action="append", metavar="NAME", help="also cluster the objects named NAME (repeatable)")
    di.add_argument("--min-cluster-size", type=int, default=None,
                    help=f"smallest group HDBSCAN calls a cluster (default {UNKNOWNS['min_cluster_size']}; {ALL['min_cluster_size']} with --all)")
    di.add_argument("--min-samples", type=int, default=None,
                    help=f"HDBSCAN's min_samples (default {UNKNOWNS['min_samples'] or 'the cluster size'}; {ALL['min_samples'] or 'the cluster size'} "
                         "with --all); lower: less noise")
    di.add_argument("--selection", choices=["auto", "eom", "leaf"], default="auto",
                    help="HDBSCAN's cluster selection: leaf (small, pure clusters, more noise), eom (broader); auto: eom with --all, else leaf")
    di.add_argument("--name", action="append", metavar="CLUSTER=NAME",
                    help="name a cluster of OUT's clusters.csv (repeatable; 'not plankton' rejects it): writes OUT/corrections.coco.json for enrol")
    di.add_argument("--quiet", action="store_true")
    di.set_defaults(func=lambda args: run_discover(args, err))


__all__ = ["add_parser", "ALL", "COLUMNS", "NOISE", "SPACES", "UNKNOWNS", "Grouping", "box_sides", "layout", "group", "cluster", "centre_similarity",
           "select", "discover", "refuse_noise", "run_discover"]
