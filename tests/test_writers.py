"""plankton.run.writers on hand-made FrameResults: CSV, COCO results and annotated
images, written atomically."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from plankton.files import atomic_write_text
from plankton.results import UNKNOWN, Candidate, FrameResult, ObjectResult
from plankton.run.writers import (CSV_COLUMNS, annotate, coco_results, detection_rows, save_annotated,
                              species_colour, write_coco, write_detections_csv)

CATEGORIES = [{"id": 3, "name": "Ceratium sp"}, {"id": 7, "name": "Noctiluca sp"}, {"id": 9, "name": "Never seen"}]


def obj(xyxy, score, species, sim, *runners):
    topk = (Candidate(species if species != UNKNOWN else runners[0][0], sim),) + tuple(Candidate(n, s) for n, s in runners)
    return ObjectResult(tuple(map(float, xyxy)), score, species, sim, topk)


@pytest.fixture
def frames():
    a = FrameResult("a.jpg", 320, 200, [
        obj((10, 20, 60, 80), 0.91, "Ceratium sp", 0.83, ("Noctiluca sp", 0.41), ("Never seen", 0.12)),
        obj((100.25, 50.5, 140.75, 90.125), 0.42, UNKNOWN, 0.31, ("Noctiluca sp", 0.31), ("Ceratium sp", 0.2)),
        obj((200, 100, 300, 190), 0.77, "Noctiluca sp", 0.66),
    ])
    empty = FrameResult("b.png", 640, 480, [])
    c = FrameResult("c.tif", 100, 100, [obj((0, 0, 100, 100), 0.5, "Ceratium sp", 0.5, ("Noctiluca sp", 0.1))])
    return [a, empty, c]


def test_csv(tmp_path, frames):
    write_detections_csv(tmp_path / "d.csv", frames)
    with open(tmp_path / "d.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:8] == ["image", "x1", "y1", "x2", "y2", "det_score", "species", "similarity"]
    assert reader.fieldnames == CSV_COLUMNS
    assert len(rows) == 4 and [r["image"] for r in rows] == ["a.jpg"] * 3 + ["c.tif"]
    first, unknown = rows[0], rows[1]
    assert [float(first[k]) for k in ("x1", "y1", "x2", "y2")] == [10, 20, 60, 80]
    assert float(first["det_score"]) == pytest.approx(0.91) and first["species"] == "Ceratium sp"
    assert float(first["similarity"]) == pytest.approx(0.83)
    assert (first["top2"], first["top3"]) == ("Noctiluca sp", "Never seen")
    assert float(first["top2_similarity"]) == pytest.approx(0.41)
    assert unknown["species"] == UNKNOWN and unknown["top2"] == "Noctiluca sp"
    assert [float(unknown[k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx([100.2, 50.5, 140.8, 90.1], abs=0.06)
    assert rows[2]["top2"] == "" and rows[2]["top3"] == ""  # no runners-up, empty cells
    assert rows[3]["top3"] == ""


def test_csv_of_no_frames_is_just_the_header(tmp_path):
    write_detections_csv(tmp_path / "d.csv", [])
    assert (tmp_path / "d.csv").read_text() == ",".join(CSV_COLUMNS) + "\n"


def test_csv_quotes_awkward_names(tmp_path):
    fr = FrameResult('we,ird "name".jpg', 10, 10, [obj((1, 1, 2, 2), 0.5, "Genus, sp", 0.9)])
    write_detections_csv(tmp_path / "d.csv", [fr])
    with open(tmp_path / "d.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert row["image"] == 'we,ird "name".jpg' and row["species"] == "Genus, sp"


def test_coco_results(frames):
    coco = coco_results(frames, CATEGORIES)
    cats = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(cats) == len(CATEGORIES) + 1
    unknown_ids = [i for i, n in cats.items() if n == UNKNOWN]
    assert len(unknown_ids) == 1 and unknown_ids[0] not in {c["id"] for c in CATEGORIES}
    assert [im["file_name"] for im in coco["images"]] == ["a.jpg", "b.png", "c.tif"]
    assert (coco["images"][1]["width"], coco["images"][1]["height"]) == (640, 480)
    objects = [(fr, o) for fr in frames for o in fr.objects]
    assert len(coco["annotations"]) == len(objects)
    ids_by_name = {im["file_name"]: im["id"] for im in coco["images"]}
    assert len(set(ids_by_name.values())) == 3
    for ann, (fr, o) in zip(coco["annotations"], objects):
        x, y, w, h = ann["bbox"]
        np.testing.assert_allclose([x, y, x + w, y + h], o.xyxy, atol=0.02)
        assert ann["image_id"] == ids_by_name[fr.image]
        assert cats[ann["category_id"]] == o.species == ann["species"]
        assert ann["score"] == pytest.approx(o.det_score) and ann["similarity"] == pytest.approx(o.similarity, abs=1e-5)
        assert ann["area"] == pytest.approx(w * h, rel=1e-3)
    assert len({a["id"] for a in coco["annotations"]}) == len(objects)


def test_coco_results_given_image_ids(frames):
    coco = coco_results(frames, CATEGORIES, image_ids={"a.jpg": 167, "b.png": 184, "c.tif": 372})
    assert [im["id"] for im in coco["images"]] == [167, 184, 372]
    assert {a["image_id"] for a in coco["annotations"]} == {167, 372}


def test_coco_results_load_in_pycocotools(tmp_path, frames):
    from pycocotools.coco import COCO

    write_coco(tmp_path / "p.json", frames, CATEGORIES)
    res = json.loads((tmp_path / "p.json").read_text())
    gt = COCO()
    gt.dataset = {"images": res["images"], "categories": res["categories"], "annotations": []}
    gt.createIndex()
    dt = gt.loadRes(res["annotations"])
    assert len(dt.getAnnIds()) == 4
    ann = dt.loadAnns(dt.getAnnIds(imgIds=[res["images"][0]["id"]]))[0]
    assert ann["bbox"] == pytest.approx([10, 20, 50, 60]) and ann["area"] == pytest.approx(3000)


def test_annotate(frames):
    image = np.full((200, 320, 3), 255, np.uint8)
    out = annotate(image, frames[0])
    assert isinstance(out, Image.Image) and out.size == (320, 200) and out.mode == "RGB"
    px = np.asarray(out)
    # The left edge of each box, below its label, has the species' colour; unknown is grey.
    assert tuple(px[70, 10]) == species_colour("Ceratium sp")
    assert tuple(px[85, 100]) == species_colour(UNKNOWN) == (150, 150, 150)
    assert tuple(px[180, 200]) == species_colour("Noctiluca sp")
    assert tuple(px[150, 250]) == (255, 255, 255)  # inside a box: untouched
    assert (image == 255).all(), "the input frame is not drawn on"
    empty = annotate(np.zeros((480, 640, 3), np.uint8), frames[1])
    assert empty.size == (640, 480) and not np.asarray(empty).any()


def test_species_colours():
    from plankton.palette import KELLY

    assert species_colour("Ceratium sp") == species_colour("Ceratium sp")
    assert species_colour(UNKNOWN) == (150, 150, 150)
    for name in ("x", "Ceratium sp", "Noctiluca sp", "Never seen"):  # without a model's mapping: a stable pick from the palette
        colour = species_colour(name)
        assert len(colour) == 3 and all(type(v) is int for v in colour) and colour in KELLY, (name, colour)


def test_writers_leave_no_temporary_files(tmp_path, frames):
    image = np.zeros((200, 320, 3), np.uint8)
    for _ in range(2):  # writing over existing files too
        write_detections_csv(tmp_path / "d.csv", frames)
        write_coco(tmp_path / "p.json", frames, CATEGORIES)
        save_annotated(tmp_path / "a.jpg", image, frames[0])
        save_annotated(tmp_path / "a.png", image, frames[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jpg", "a.png", "d.csv", "p.json"]
    assert Image.open(tmp_path / "a.jpg").format == "JPEG" and Image.open(tmp_path / "a.png").format == "PNG"
    assert Image.open(tmp_path / "a.jpg").size == (320, 200)
    assert json.loads((tmp_path / "p.json").read_text())["images"][0]["file_name"] == "a.jpg"
    assert oct((tmp_path / "d.csv").stat().st_mode & 0o777) == oct(0o644)


def test_failed_atomic_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "d.csv"
    atomic_write_text(path, "old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "new but \ud800 unencodable\n")  # fails half-way through writing
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["d.csv"]


def test_detection_rows_round_numbers(frames):
    rows = detection_rows(frames)
    # one decimal, round-half-even on the exact binary values: 100.25 → 100.2, 140.75 → 140.8, 90.125 → 90.1
    assert [rows[1][k] for k in ("x1", "y1", "x2", "y2")] == ["100.2", "50.5", "140.8", "90.1"]
    assert rows[0]["det_score"] == "0.9100" and rows[0]["similarity"] == "0.8300"
