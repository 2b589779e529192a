"""What the model has not seen: predict keeps embeddings and watches the
frames, discover groups the unknowns, compare tells two runs apart."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from repo_paths import EXAMPLES, REPO

MODEL = REPO / "models" / "default"
FRAMES = sorted((EXAMPLES / "frames").glob("*.jpg"))


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def predict(capsys, *args) -> tuple[int, str]:
    from plankton.cli import main

    capsys.readouterr()
    rc = main(["predict", *map(str, args)])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The bundled model on the example frames: its own threshold (a) and a
    stricter one (b)."""
    from plankton.cli import main

    tmp = tmp_path_factory.mktemp("unknowns")
    common = [str(EXAMPLES / "frames"), "--model", str(MODEL), "--quiet", "--volume-ul", "1"]  # the volume: concentration.csv, with estimates
    assert main(["predict", *common, "--out", str(tmp / "a")]) == 0
    assert main(["predict", *common, "--out", str(tmp / "b"), "--cls-conf", "0.8"]) == 0
    return tmp


# ------------------------------------------------------------------ predict keeps embeddings and image statistics


def test_embeddings_follow_detections(runs):
    from plankton.run.runfiles import read_run

    det = rows(runs / "a" / "detections.csv")
    run = read_run(runs / "a")
    assert len(det) > 20 and run.embeddings.shape == (len(det), 512)
    assert np.allclose(np.linalg.norm(run.embeddings, axis=1), 1, atol=1e-3)
    assert [run.frames[f]["image"] for f in run.frame] == [r["image"] for r in det]
    named = [(r, n, s) for r, n, s in zip(det, run.nearest, run.nearest_similarity) if r["species"] != "unknown"]
    assert named and all(r["species"] == n and abs(float(r["similarity"]) - s) < 1e-4 for r, n, s in named)
    # an unknown object still has its nearest species, which detections.csv does not name
    unknown = [n for r, n in zip(det, run.nearest) if r["species"] == "unknown"]
    assert unknown and all(n for n in unknown)
    quality = rows(runs / "a" / "quality.csv")
    assert [q["image"] for q in quality] == sorted(p.name for p in FRAMES)
    assert [Path(q["source"]).resolve() for q in quality] == [p.resolve() for p in FRAMES]
    for q in quality:
        objs = [r for r in det if r["image"] == q["image"]]
        assert int(q["objects"]) == len(objs)
        assert float(q["unknown_share"]) == pytest.approx(sum(r["species"] == "unknown" for r in objs) / len(objs), abs=1e-3)
        assert 0 < float(q["covered"]) < 0.5 and float(q["focus"]) > 0


def test_embeddings_equal_a_fresh_embedding(runs):
    """The kept embedding is the one the embedder makes for that box."""
    from plankton.pipeline.load import load_artifact
    from plankton.images import read_image
    from plankton.run.runfiles import read_run

    run = read_run(runs / "a")
    cascade = load_artifact(MODEL)
    first = [i for i, f in enumerate(run.frame) if f == 0][:4]
    image = read_image(run.frames[0]["source"])
    fresh = cascade.identifier.embed_boxes(image, np.array([run.box(i) for i in first], np.float32))
    # the same box to 0.1 px (detections.csv's rounding) and float16: the same embedding, to within that
    assert (np.sum(run.embeddings[first] * fresh, axis=1) > 0.99).all()


def test_journal_keeps_embeddings_and_stats():
    from plankton.run.journal import frame_from_dict, frame_to_dict
    from plankton.results import Candidate, FrameResult, ObjectResult

    e = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    fr = FrameResult("x.jpg", 10, 10, [ObjectResult((0, 0, 1, 1), 0.9, "a", 0.8, (Candidate("a", 0.8),), embedding=e[i]) for i in range(2)],
                     stats={"focus": 1.5, "brightness": 100.0, "contrast": 3.0})
    back = frame_from_dict(json.loads(json.dumps(frame_to_dict(fr))))
    assert back == fr and back.stats == fr.stats
    assert np.allclose(np.stack([o.embedding for o in back.objects]), e, atol=1e-2)
    old = frame_to_dict(fr)
    del old["embeddings"], old["stats"]  # a journal written before this
    assert all(o.embedding is None for o in frame_from_dict(old).objects) and frame_from_dict(old).stats == {}


def test_resumed_run_writes_the_same_files(runs, tmp_path, monkeypatch, capsys):
    """Killed after one frame, then resumed: the embeddings and quality
    rows of the journaled frame are the ones a clean run writes."""
    import plankton.run.batch

    real, calls = plankton.run.batch.run_item, []

    def dies_on_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(plankton.run.batch, "run_item", dies_on_the_second)
    out = tmp_path / "resumed"
    assert predict(capsys, EXAMPLES / "frames", "--out", out, "--model", MODEL, "--quiet")[0] == 130
    monkeypatch.setattr(plankton.run.batch, "run_item", real)
    rc, err = predict(capsys, EXAMPLES / "frames", "--out", out, "--model", MODEL, "--quiet", "--resume")
    assert rc == 0 and "1 frames already done" in err, err
    for name in ("detections.csv", "quality.csv", "embeddings.safetensors"):
        assert (out / name).read_bytes() == (runs / "a" / name).read_bytes(), name


# ------------------------------------------------------------------ watch the frames


def test_training_ranges_are_in_the_bundled_model():
    from plankton.artifact.manifest import read_config
    from plankton.quality import SIDES, load_ranges

    ranges, why = load_ranges(MODEL)
    assert why is None and set(ranges["stats"]) == set(SIDES)
    assert ranges["frames"] > 100 and ranges["split"] == "train"
    assert "frame_quality.json" in read_config(MODEL)["files"]
    f = ranges["stats"]["focus"]
    assert f["low"] < f["p1"] < f["median"] < f["p99"] < f["high"]


def test_blurred_and_dark_frames_are_flagged(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    im = Image.open(FRAMES[0]).convert("RGB")
    im.save(frames / "a_original.jpg", quality=95)
    im.filter(ImageFilter.GaussianBlur(8)).save(frames / "b_blurred.jpg", quality=95)
    im.filter(ImageFilter.GaussianBlur(4)).save(frames / "c_blurred.jpg", quality=95)
    ImageEnhance.Brightness(im).enhance(0.35).save(frames / "d_dark.jpg", quality=95)
    rc, err = predict(capsys, frames, "--out", tmp_path / "out", "--model", MODEL, "--quiet")
    assert rc == 0, err
    q = {r["image"]: r for r in rows(tmp_path / "out" / "quality.csv")}
    flags = {k: set(filter(None, r["flags"].split(";"))) for k, r in q.items()}
    assert flags["a_original.jpg"] == set(), q["a_original.jpg"]
    assert "focus_low" in flags["b_blurred.jpg"] and "focus_low" in flags["c_blurred.jpg"]
    assert "dark" in flags["d_dark.jpg"] and "dark" not in flags["a_original.jpg"]
    assert float(q["b_blurred.jpg"]["focus"]) < float(q["c_blurred.jpg"]["focus"]) < float(q["a_original.jpg"]["focus"]) / 4
    # three of four frames are out of focus: the run says so, in one line
    drift = [line for line in err.splitlines() if "does not look like the training frames" in line]
    assert len(drift) == 1 and "median focus" in drift[0], err


def test_example_frames_are_not_flagged(runs):
    assert [r["flags"] for r in rows(runs / "a" / "quality.csv")] == ["", "", ""]


def test_model_without_ranges_says_so_once(tiny_artifact, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.open(FRAMES[0]).convert("RGB").resize((640, 360)).save(frames / "f.jpg")
    rc, err = predict(capsys, frames, "--out", tmp_path / "out", "--model", tiny_artifact, "--det-conf", "0.5")
    assert rc == 0, err
    assert [line for line in err.splitlines() if "quality" in line] == ["quality: quality.csv has no flags: the model has no frame_quality.json"]
    q = rows(tmp_path / "out" / "quality.csv")
    assert len(q) == 1 and q[0]["flags"] == "" and float(q[0]["focus"]) > 0
    from plankton.run.runfiles import read_run

    assert read_run(tmp_path / "out").embeddings.shape[0] == len(rows(tmp_path / "out" / "detections.csv"))


# ------------------------------------------------------------------ discover


def planted_run(folder: Path, per_species: int = 15) -> dict[tuple, str]:
    """A run of 'unknown' objects whose embeddings are real validation
    crops of two species (from the model's validation.safetensors), laid
    over the example frames; returns {(image, x1, y1): true species}."""
    from safetensors import safe_open

    from plankton.run.batch import write_outputs
    from plankton.results import Candidate, FrameResult, ObjectResult
    from plankton.run.runfiles import write_run_files

    with safe_open(str(MODEL / "validation.safetensors"), "np") as f:
        names = np.array(json.loads(f.metadata()["true_names"]))
        emb = f.get_tensor("embeddings").astype(np.float32)
    planted = [(s, i) for s in ("Prymnesium sp", "Pyramimonas sp") for i in np.flatnonzero(names == s)[:per_species]]
    frames, truth = {str(p): FrameResult(p.name, 1920, 1080) for p in FRAMES}, {}
    for k, j in enumerate(np.random.default_rng(1).permutation(len(planted))):
        species, i = planted[j]
        path, x, y = FRAMES[k % 3], 100 + 60 * (k // 3), 100 + 200 * (k % 3)
        frames[str(path)].objects.append(ObjectResult((x, y, x + 40.0, y + 40.0), 0.9, "unknown", 0.3, (Candidate("Chlorella sp", 0.3),),
                                                      embedding=emb[i]))
        truth[(path.name, f"{x:.1f}", f"{y:.1f}")] = species
    folder.mkdir()
    write_outputs(folder, frames, [], False)
    write_run_files(folder, frames, None, None)
    return truth


def test_planted_species_come_out_as_two_clusters(tmp_path, capsys):
    from plankton.cli import main

    truth = planted_run(tmp_path / "run")
    capsys.readouterr()
    assert main(["discover", str(tmp_path / "run"), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    got = rows(tmp_path / "d" / "clusters.csv")
    assert len(got) == 30
    members = Counter((r["cluster"], truth[(r["image"], r["x1"], r["y1"])]) for r in got)
    clusters = sorted({c for c, _ in members if c != "noise"})
    assert clusters == ["1", "2"], (members, err)
    for c in clusters:  # each cluster is one species, and holds most of it
        by_species = {s: n for (cc, s), n in members.items() if cc == c}
        assert len(by_species) == 1 and max(by_species.values()) >= 12, members
    assert {s for (c, s) in members if c != "noise"} == {"Prymnesium sp", "Pyramimonas sp"}
    sizes = [sum(n for (cc, _), n in members.items() if cc == c) for c in clusters]
    assert sizes == sorted(sizes, reverse=True), "largest first"
    sims = [float(r["similarity_to_cluster_centre"]) for r in got if r["cluster"] != "noise"]
    assert min(sims) > 0.5 and all(r["nearest_species"] == "Chlorella sp" for r in got)
    for c in clusters:
        assert Image.open(tmp_path / "d" / f"cluster_{c}.png").size[0] >= 320
    assert "2 clusters" in err


def test_discover_on_a_real_run(runs, tmp_path, capsys):
    from plankton.cli import main

    det = rows(runs / "a" / "detections.csv")
    capsys.readouterr()
    assert main(["discover", str(runs / "a"), "--out", str(tmp_path / "all"), "--all"]) == 0
    got = rows(tmp_path / "all" / "clusters.csv")
    assert sorted((r["image"], r["x1"], r["y1"]) for r in got) == sorted((r["image"], r["x1"], r["y1"]) for r in det)
    named = [r for r in got if r["cluster"] != "noise"]
    # each object's similarity is its cosine to its cluster's normalised mean embedding, recomputed here from the run
    from plankton.run.runfiles import locate, read_run

    run = read_run(runs / "a")
    rows_of = dict(zip(range(len(named)), locate(run, named)))
    assert None not in rows_of.values()
    for c in {r["cluster"] for r in named}:
        members = [k for k, r in enumerate(named) if r["cluster"] == c]
        centre = run.embeddings[[rows_of[k] for k in members]].mean(axis=0)
        centre /= np.linalg.norm(centre)
        for k in members:
            assert float(named[k]["similarity_to_cluster_centre"]) == pytest.approx(float(run.embeddings[rows_of[k]] @ centre), abs=2e-3)
    # --species adds that species' objects to the unknown ones
    assert main(["discover", str(runs / "a"), "--out", str(tmp_path / "some"), "--species", "Chlorella sp"]) == 0
    some = rows(tmp_path / "some" / "clusters.csv")
    assert len(some) == sum(r["species"] in ("unknown", "Chlorella sp") for r in det)


def test_discover_bad_inputs_one_line(runs, tmp_path, capsys):
    import shutil

    from plankton.cli import main

    capsys.readouterr()
    assert main(["discover", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")]) == 2
    assert capsys.readouterr().err.strip() == f"plankton: {tmp_path / 'nothing'}: no such run folder"
    old = shutil.copytree(runs / "a", tmp_path / "old")
    (old / "embeddings.safetensors").unlink()
    assert main(["discover", str(old), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("plankton: ") and "embeddings.safetensors: not found" in err and "\n" not in err
    # frames that moved: clusters.csv still, the sheets skipped with one line
    moved = shutil.copytree(runs / "a", tmp_path / "moved")
    q = (moved / "quality.csv").read_text().replace(str(EXAMPLES), str(tmp_path / "gone"))
    (moved / "quality.csv").write_text(q)
    assert main(["discover", str(moved), "--out", str(tmp_path / "d2"), "--all", "--quiet"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "frame not found" in lines[0] and "no contact sheets" in lines[1], lines
    assert (tmp_path / "d2" / "clusters.csv").exists() and not list((tmp_path / "d2").glob("*.png"))


# ------------------------------------------------------------------ compare


def test_a_run_compared_with_itself_shows_no_change(runs, tmp_path, capsys):
    from plankton.cli import main

    assert main(["compare", str(runs / "a"), str(runs / "a"), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    table = rows(tmp_path / "c" / "compare.csv")
    assert [r["species"] for r in table][-2:] == ["unknown", "total"]
    assert all(r["difference"] == "0" and r["count_a"] == r["count_b"] for r in table)
    assert int(table[-1]["count_a"]) == len(rows(runs / "a" / "detections.csv"))
    assert rows(tmp_path / "c" / "changed.csv") == [] and not (tmp_path / "c" / "changed.png").exists()


def test_a_stricter_threshold_only_adds_unknowns(runs, tmp_path, capsys):
    from plankton.cli import main

    capsys.readouterr()
    assert main(["compare", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "c")]) == 0
    table = {r["species"]: r for r in rows(tmp_path / "c" / "compare.csv")}
    assert table["total"]["difference"] == "0"
    assert int(table["unknown"]["difference"]) > 0
    assert all(int(r["difference"]) <= 0 for s, r in table.items() if s not in ("unknown", "total"))
    changed = rows(tmp_path / "c" / "changed.csv")
    assert len(changed) == int(table["unknown"]["difference"])
    assert all(r["species_b"] == "unknown" and r["species_a"] != "unknown" and r["similarity_a"] == r["similarity_b"] for r in changed)
    assert Image.open(tmp_path / "c" / "changed.png").size[1] > 100
    # the bundled model has a count calibration: estimated counts and whether their intervals overlap
    assert float(table["total"]["count_est_a"]) > 0 and float(table["total"]["count_est_b"]) > 0
    assert table["total"]["intervals_overlap"] == "yes"  # same objects, other names: the total barely moves
    for side in ("a", "b"):  # the estimated rows add up to the estimated total (issue 41)
        listed = sum(float(r[f"count_est_{side}"] or 0) for s, r in table.items() if s != "total")
        assert listed == pytest.approx(float(table["total"][f"count_est_{side}"]), rel=1e-4)
    assert f"{len(changed)} renamed" in capsys.readouterr().err


def test_contact_sheets_from_frames_in_an_archive(tmp_path, capsys):
    """A frame read from a zip is read from the zip again for its crops."""
    import zipfile

    from plankton.cli import main

    with zipfile.ZipFile(tmp_path / "frames.zip", "w") as zf:
        zf.write(FRAMES[0], f"sub/{FRAMES[0].name}")
    rc, err = predict(capsys, tmp_path / "frames.zip", "--out", tmp_path / "run", "--model", MODEL, "--quiet")
    assert rc == 0, err
    assert rows(tmp_path / "run" / "quality.csv")[0]["source"] == f"{(tmp_path / 'frames.zip').resolve()}/sub/{FRAMES[0].name}"
    assert main(["discover", str(tmp_path / "run"), "--out", str(tmp_path / "d"), "--all", "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    clusters = {r["cluster"] for r in rows(tmp_path / "d" / "clusters.csv")}
    assert clusters and {p.name for p in (tmp_path / "d").glob("*.png")} == {f"cluster_{c}.png" for c in clusters}


def test_named_clusters_become_corrections_enrol_accepts(tmp_path, capsys):
    from plankton.cli import main
    from plankton.artifact.manifest import read_config

    planted_run(tmp_path / "run")
    d = tmp_path / "d"
    assert main(["discover", str(tmp_path / "run"), "--out", str(d), "--quiet"]) == 0
    clusters = rows(d / "clusters.csv")
    capsys.readouterr()
    assert main(["discover", str(tmp_path / "run"), "--out", str(d), "--name", "9=x"]) == 2
    assert "has no cluster '9'" in capsys.readouterr().err
    assert main(["discover", str(tmp_path / "run"), "--out", str(d), "--name", "1=Newfound sp", "--name", "2=not plankton"]) == 0
    coco = json.loads((d / "corrections.coco.json").read_text())
    assert sorted(c["name"] for c in coco["categories"]) == ["Newfound sp", "not plankton"]
    assert len(coco["annotations"]) == sum(r["cluster"] in ("1", "2") for r in clusters)
    assert rows(d / "clusters.csv") == clusters, "naming does not cluster again"
    assert main(["enrol", "--model", str(MODEL), "--coco", str(d / "corrections.coco.json"), "--out", str(tmp_path / "v2"), "--quiet"]) == 0
    assert "Newfound sp" in read_config(tmp_path / "v2")["prototypes"]["names"]


def test_object_flags_only_at_the_thresholds_the_ranges_were_measured_at(runs):
    from plankton.quality import flags, for_thresholds, load_ranges

    ranges, _ = load_ranges(MODEL)
    measured = ranges["thresholds"]
    many_unknown = {"unknown_share": 1.0, "mean_similarity": 0.1, "focus": 30.0}
    assert flags(many_unknown, for_thresholds(ranges, measured["det_conf"], measured["cls_conf"])[0]) == ["unknown_share_high", "mean_similarity_low"]
    stricter, dropped = for_thresholds(ranges, measured["det_conf"], 0.8)
    assert dropped == ["unknown_share"] and flags(many_unknown, stricter) == ["mean_similarity_low"]
    lower, dropped = for_thresholds(ranges, 0.05, measured["cls_conf"])
    assert set(dropped) == {"covered", "objects", "unknown_share", "mean_similarity"} and flags(many_unknown, lower) == []
    # the --cls-conf 0.8 run has many unknowns, but that is the threshold, not the frames
    assert all("unknown_share" not in r["flags"] for r in rows(runs / "b" / "quality.csv"))


def test_predict_with_a_second_model_compares_in_one_go(tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / FRAMES[1].name).write_bytes(FRAMES[1].read_bytes())
    rc, err = predict(capsys, frames, "--out", tmp_path / "out", "--model", MODEL, "--compare-model", MODEL, "--quiet")
    assert rc == 0, err
    assert (tmp_path / "out" / "model_b" / "detections.csv").read_bytes() == (tmp_path / "out" / "detections.csv").read_bytes()
    table = rows(tmp_path / "out" / "compare" / "compare.csv")
    assert table[-1]["species"] == "total" and int(table[-1]["count_a"]) > 0 and all(r["difference"] == "0" for r in table)
    assert rows(tmp_path / "out" / "compare" / "changed.csv") == []
