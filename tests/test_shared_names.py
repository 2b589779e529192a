"""Two frames with one file name in two subfolders (``a/frame.jpg`` and
``b/frame.jpg``), as the CLI finds them when it walks a folder: they stay
two frames in discover's corrections, in compare and in the crops cut
again. The runs are written by predict's own writers from planted objects,
so no model runs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from repo_paths import EXAMPLES

FRAMES = sorted((EXAMPLES / "frames").glob("*.jpg"))


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def frames_in_subfolders(root: Path) -> dict[str, Path]:
    """Two different committed frames, both called frame.jpg."""
    out = {}
    for sub, src in (("a", FRAMES[0]), ("b", FRAMES[1])):
        (root / sub).mkdir(parents=True)
        out[sub] = root / sub / "frame.jpg"
        out[sub].write_bytes(src.read_bytes())
    return out


def write_run(folder: Path, paths: dict[str, Path], renamed: str | None = None) -> dict[str, list[tuple]]:
    """A finished run over ``paths``: in each frame six objects at boxes of
    its own, three near one embedding and three near another, named
    ``P sp`` (``renamed`` in frame b's first object). Returns each
    subfolder's boxes."""
    from plankton.results import Candidate, FrameResult, ObjectResult
    from plankton.run.batch import write_outputs
    from plankton.run.runfiles import write_run_files

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 64))
    frames, boxes = {}, {}
    for sub, path in paths.items():
        y = 100.0 if sub == "a" else 500.0
        objects = []
        for k in range(6):
            e = centres[k % 2] + 0.02 * rng.normal(size=64)
            name = renamed if renamed and sub == "b" and k == 0 else "P sp"
            objects.append(ObjectResult((100.0 + 80 * k, y, 150.0 + 80 * k, y + 40), 0.9, name, 0.8, (Candidate(name, 0.8),),
                                        embedding=(e / np.linalg.norm(e)).astype(np.float32)))
        frames[str(path)] = FrameResult(path.name, 1920, 1080, objects)
        boxes[sub] = [o.xyxy for o in objects]
    folder.mkdir(parents=True)
    write_outputs(folder, frames, [{"id": 1, "name": "P sp"}], False)
    write_run_files(folder, frames, None, None)
    return boxes


@pytest.fixture
def shared(tmp_path):
    paths = frames_in_subfolders(tmp_path / "in")
    boxes = write_run(tmp_path / "run", paths)
    return tmp_path, paths, boxes


def test_the_run_names_both_frames_alike(shared):
    tmp, _, _ = shared
    assert [r["image"] for r in rows(tmp / "run" / "quality.csv")] == ["frame.jpg", "frame.jpg"]  # what the writers do today


def test_frames_are_keyed_by_their_path_in_the_input(shared):
    from plankton.run.runfiles import detection_keys, frame_index, frame_keys, read_run

    tmp, _, _ = shared
    for embeddings in (True, False):  # compare reads a run without its embeddings
        run = read_run(tmp / "run", embeddings=embeddings)
        assert frame_keys(run) == ["a/frame.jpg", "b/frame.jpg"]
        assert frame_index(run).tolist() == [0] * 6 + [1] * 6
        assert detection_keys(run) == ["a/frame.jpg"] * 6 + ["b/frame.jpg"] * 6


def test_a_run_of_one_folder_keeps_its_image_names(tmp_path):
    from plankton.run.runfiles import frame_keys, read_run

    paths = {sub: tmp_path / "in" / f"{sub}.jpg" for sub in ("a", "b")}
    (tmp_path / "in").mkdir()
    for p, src in zip(paths.values(), FRAMES):
        p.write_bytes(src.read_bytes())
    write_run(tmp_path / "run", paths)
    assert frame_keys(read_run(tmp_path / "run")) == ["a.jpg", "b.jpg"]  # relative to the one input folder: the image names, as before


def test_named_clusters_keep_two_frames_apart(shared, capsys):
    from plankton.cli import main

    tmp, paths, boxes = shared
    d = tmp / "d"
    assert main(["discover", str(tmp / "run"), "--out", str(d), "--all", "--quiet"]) == 0
    clusters = sorted({r["cluster"] for r in rows(d / "clusters.csv")})
    assert main(["discover", str(tmp / "run"), "--out", str(d), *[f"--name={c}=Newfound sp" for c in clusters]]) == 0
    coco = json.loads((d / "corrections.coco.json").read_text())
    files = {im["id"]: (d / im["file_name"]).resolve() for im in coco["images"]}
    assert sorted(files.values()) == sorted(p.resolve() for p in paths.values())  # two images, not one
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        sub = "a" if files[ann["image_id"]] == paths["a"].resolve() else "b"
        assert (x, y, x + w, y + h) in boxes[sub], (sub, ann["bbox"])  # each box on the frame it was found in
    assert len(coco["annotations"]) == 12


def test_compare_keeps_two_frames_apart(shared, capsys):
    from plankton.cli import main

    tmp, paths, boxes = shared
    write_run(tmp / "renamed", paths, renamed="Q sp")
    assert main(["compare", str(tmp / "run"), str(tmp / "renamed"), "--out", str(tmp / "c"), "--quiet"]) == 0
    changed = rows(tmp / "c" / "changed.csv")
    assert [(r["image"], r["species_a"], r["species_b"]) for r in changed] == [("b/frame.jpg", "P sp", "Q sp")]
    assert tuple(float(changed[0][k]) for k in ("x1", "y1", "x2", "y2")) == boxes["b"][0]
    assert "different frames" not in capsys.readouterr().err


def test_crops_are_cut_from_their_own_frame(shared):
    from plankton.images import read_image
    from plankton.review.sheets import crops, cut
    from plankton.run.runfiles import read_run

    tmp, paths, boxes = shared
    run = read_run(tmp / "run", embeddings=False)  # as compare reads it
    row = 6  # frame b's first object
    tiles = crops(run, [row], lambda m: pytest.fail(m))
    own, other = cut(read_image(paths["b"]), boxes["b"][0]), cut(read_image(paths["a"]), boxes["b"][0])
    assert np.array_equal(tiles[row], own) and not np.array_equal(tiles[row], other)


def test_a_frame_name_shared_without_a_frame_index_is_not_guessed(shared):
    """A run whose quality.csv cannot place the objects (no object counts)
    leaves a shared name unresolved rather than take the first frame."""
    from plankton.run.runfiles import frame_index, read_run

    tmp, _, _ = shared
    run = read_run(tmp / "run", embeddings=False)
    for fr in run.frames:
        fr["objects"] = ""
    assert frame_index(run).tolist() == [-1] * 12
