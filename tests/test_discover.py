"""Issue 44 (and discover's items of 42 and 43): how sure each cluster is,
the doubtful members last, noise never named as one species, odd
--min-samples in one line, frames keyed by their path in the input, and
the leave-species-out evaluation's scoring. Runs are written by predict's
own writers from planted embeddings, so no model runs."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repo_paths import EXAMPLES

FRAMES = sorted((EXAMPLES / "frames").glob("*.jpg"))


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def planted(rng, centre, n, spread):
    """n unit vectors around ``centre``'s direction, at about ``spread`` from it."""
    centre = np.asarray(centre, np.float64) / max(float(np.linalg.norm(centre)), 1e-12)
    e = centre + spread * rng.normal(size=(n, len(centre))) / np.sqrt(len(centre))
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def write_run(folder: Path, frames: dict[str, Path], embeddings: np.ndarray) -> list[tuple]:
    """A finished run of ``unknown`` objects with these embeddings, spread
    over ``frames`` ({key: path}) in turn; returns each object's (frame key, box)."""
    from plankton.results import Candidate, FrameResult, ObjectResult
    from plankton.run.batch import write_outputs
    from plankton.run.runfiles import write_run_files

    out = {str(p): FrameResult(p.name, 1920, 1080) for p in frames.values()}
    keys = list(frames)
    placed = []
    for k, e in enumerate(embeddings):
        key = keys[k % len(keys)]
        x, y = 60.0 + 70 * (k // len(keys) % 25), 60.0 + 70 * (k // len(keys) // 25)
        out[str(frames[key])].objects.append(ObjectResult((x, y, x + 40, y + 40), 0.9, "unknown", 0.3, (Candidate("Chlorella sp", 0.3),),
                                                          embedding=np.asarray(e, np.float32)))
        placed.append((key, (x, y)))
    folder.mkdir(parents=True)
    write_outputs(folder, out, [], False)
    write_run_files(folder, out, None, None)
    return placed


@pytest.fixture
def tight_and_loose(tmp_path):
    """12 objects close together, 12 spread wider around another centre, 4 scattered."""
    rng = np.random.default_rng(3)
    c = rng.normal(size=(2, 64))
    emb = np.vstack([planted(rng, c[0], 12, 0.15), planted(rng, c[1], 12, 0.6), rng.normal(size=(4, 64))])
    write_run(tmp_path / "run", {p.name: p for p in FRAMES}, emb)
    return tmp_path


def test_each_cluster_says_how_sure_it_is(tight_and_loose, capsys):
    from plankton.cli import main

    tmp = tight_and_loose
    assert main(["discover", str(tmp / "run"), "--out", str(tmp / "d")]) == 0
    err = capsys.readouterr().err
    got = rows(tmp / "d" / "clusters.csv")
    clusters = sorted({r["cluster"] for r in got} - {"noise"})
    assert len(clusters) >= 2, got
    cohesion = {}
    for c in clusters:
        members = [r for r in got if r["cluster"] == c]
        assert len({r["cohesion"] for r in members}) == 1  # one figure per cluster, on each of its rows
        cohesion[c] = float(members[0]["cohesion"])
        # the figure is the mean closeness of its members to the centre, not a constant
        assert cohesion[c] == pytest.approx(np.mean([float(r["similarity_to_cluster_centre"]) for r in members]), abs=2e-4)
        assert f"{c}: {len(members)}, cohesion {cohesion[c]:.2f}" in err
        firm = [float(r["membership"]) for r in members]
        assert firm == sorted(firm, reverse=True) and 0 < firm[-1] <= 1, "the doubtful members last"
        title = Image.open(tmp / "d" / f"cluster_{c}.png")
        assert title.size[0] >= 320
    assert max(cohesion.values()) > min(cohesion.values()) + 0.05, cohesion  # the tight group is surer than the loose one
    assert all(r["cohesion"] == "" and r["membership"] == "" for r in got if r["cluster"] == "noise")


def test_discover_orders_doubtful_members_last():
    from plankton.review.discover import group

    rng = np.random.default_rng(1)
    c = rng.normal(size=(2, 64))
    edge = planted(rng, c[0], 1, 0.45)  # one member of the first group farther out
    g = group(np.vstack([edge, planted(rng, c[0], 10, 0.2), planted(rng, c[1], 10, 0.2)]), min_cluster_size=3, min_samples=1, selection="eom")
    order = [k for k in g.order() if g.labels[k] == g.labels[1]]
    assert g.labels[0] == g.labels[1] != 0 and len(order) == 11 and order[-1] == 0, (g.labels, order)
    assert g.strength[0] < g.strength[1:11].min() and g.centre_similarity[0] < g.centre_similarity[1:11].min()


def test_noise_is_never_named_as_one_species(tight_and_loose, capsys):
    from plankton.cli import main

    tmp = tight_and_loose
    assert main(["discover", str(tmp / "run"), "--out", str(tmp / "d"), "--quiet"]) == 0
    assert "noise" in {r["cluster"] for r in rows(tmp / "d" / "clusters.csv")}
    capsys.readouterr()
    assert main(["discover", str(tmp / "run"), "--out", str(tmp / "d"), "--name", "noise=Newfound sp"]) == 2
    err = capsys.readouterr().err.strip()
    assert "noise is not a cluster" in err and "\n" not in err
    assert not (tmp / "d" / "corrections.coco.json").exists()
    # rejecting the noise at once is allowed: none of it is a species
    assert main(["discover", str(tmp / "run"), "--out", str(tmp / "d"), "--name", "noise=not plankton"]) == 0
    assert (tmp / "d" / "corrections.coco.json").exists()


def test_min_samples_above_the_objects_is_one_line(tight_and_loose, capsys):
    from plankton.cli import main

    tmp = tight_and_loose
    capsys.readouterr()
    assert main(["discover", str(tmp / "run"), "--out", str(tmp / "d"), "--min-samples", "29"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "plankton: --min-samples 29 is more than the 28 objects to cluster; give at most 28"
    assert main(["discover", str(tmp / "run"), "--out", str(tmp / "d"), "--min-samples", "28", "--quiet"]) == 0


def test_clusters_name_frames_by_their_path_in_the_input(tmp_path):
    """a/frame.jpg and b/frame.jpg: clusters.csv says which one each object is in."""
    from plankton.cli import main

    paths = {}
    for sub, src in (("a", FRAMES[0]), ("b", FRAMES[1])):
        (tmp_path / "in" / sub).mkdir(parents=True)
        paths[f"{sub}/frame.jpg"] = tmp_path / "in" / sub / "frame.jpg"
        paths[f"{sub}/frame.jpg"].write_bytes(src.read_bytes())
    rng = np.random.default_rng(1)
    placed = write_run(tmp_path / "run", paths, planted(rng, rng.normal(size=64), 12, 0.2))
    assert main(["discover", str(tmp_path / "run"), "--out", str(tmp_path / "d"), "--all", "--quiet"]) == 0
    got = sorted((r["image"], (float(r["x1"]), float(r["y1"]))) for r in rows(tmp_path / "d" / "clusters.csv"))
    assert got == sorted(placed)


def test_leave_species_out_scores_what_it_sees():
    """The evaluation's figures on a hand-made grouping."""
    from experiments.leave_species_out import score
    from experiments.unknown_objects import NONE
    from plankton.review.discover import Grouping

    truth = np.array(["A", "A", "A", "B", "B", NONE, NONE, NONE, "A", NONE], dtype=object)
    labels = np.array([1, 1, 1, 1, 2, 2, 2, 0, 0, 3])
    sim = np.where(labels > 0, 0.9, np.nan)
    g = Grouping(labels, np.where(labels > 0, 1.0, 0.0), sim, {1: 0.9, 2: 0.8, 3: 0.7})
    s = score(truth, g, {"A"}, left_total=5)
    # cluster 1: 3 A of 4; cluster 2: 2 debris of 3; cluster 3 (1 object) is not scored
    assert (s["clusters"], s["clustered"], s["majority"]) == (2, 7, 5)
    assert s["found"] == 3 and s["left_total"] == 5  # the A in cluster 1, not the A in noise
    assert s["noise"] == 2 and s["debris"] == 0 and s["debris_total"] == 4


def test_leave_species_out_finds_a_planted_species():
    """Species left out of the prototypes become unknown and are found as
    their own clusters; debris stays out of their clusters. (Two at a time:
    HDBSCAN calls a lone group among scattered points no cluster.)"""
    from experiments.leave_species_out import evaluate, summarise
    from experiments.unknown_objects import NONE

    rng = np.random.default_rng(5)
    dim, species = 32, ["S0", "S1", "S2", "S3"]
    centres = rng.normal(size=(4, dim))
    debris = rng.normal(size=(10, dim))  # each one a direction of its own
    emb = np.vstack([planted(rng, centres[k], 12, 0.3) for k in range(4)] + [debris / np.linalg.norm(debris, axis=1, keepdims=True)])
    truth = np.array([s for s in species for _ in range(12)] + [NONE] * 10, dtype=object)
    means = np.stack([emb[truth == s].mean(axis=0) for s in species])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    d = {"emb": emb.astype(np.float32), "box": np.tile([0, 0, 40, 40], (len(emb), 1)).astype(np.float32), "frame": np.zeros(len(emb), int),
         "group": np.zeros(len(emb), int), "stats": np.zeros((len(emb), 5), np.float32), "frames": ["f.jpg"], "truth": truth,
         "groups": [{"names": species, "means": means.astype(np.float32), "thresholds": np.full(4, 0.8, np.float32)}]}
    ev = evaluate(d, ["shipped"], draws=4, leave_out=2, min_objects=5, max_objects=100)
    assert all(len(s) == 2 for s in ev["draws"])
    s = summarise(ev["results"]["shipped"])
    assert s["found"] > 0.7 and s["purity"] > 0.9 and s["debris"] < 0.2, s


def test_the_unknowns_bench_thresholds_are_the_cascades(tiny_artifact):
    """experiments.unknown_objects names objects at the thresholds the
    cascade applies (it once read a config key today's models lack)."""
    from experiments.unknown_objects import thresholds_for
    from plankton.pipeline.cascade import shifted_thresholds
    from plankton.pipeline.load import load_artifact

    cascade = load_artifact(tiny_artifact)
    names = cascade.class_names
    want = shifted_thresholds(cascade.cls_conf, cascade.identifier.cfg.offsets(names), len(names))
    assert np.allclose(thresholds_for(tiny_artifact, names), want)
