"""From boxes to a sample: sizes from a known scale, counts per frame,
concentrations with exact Poisson intervals (checked by hand), and the
EcoTaxa import folder checked against EcoTaxa's import rules."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from PIL import Image

from plankton.sample.ecotaxa import EcotaxaExport, ExportInfo, check_folder
from plankton.sample.measure import Sample, box_sizes_um, concentration_rows, counts_rows, poisson_interval, species_columns
from plankton.results import UNKNOWN, Candidate, FrameResult, ObjectResult
from plankton.run.writers import CSV_COLUMNS, csv_text, detection_rows, sample_tables


def obj(xyxy, species, sim=0.9, corrected=False):
    return ObjectResult(tuple(float(v) for v in xyxy), 0.8, species, sim, (Candidate(species, sim), Candidate("b", sim - 0.1)), corrected)


@pytest.fixture
def frames():
    """Two frames: a 20×10 px and a 40×40 px object of 'a', one 'b', one unknown."""
    return [FrameResult("one.jpg", 200, 100, [obj((10, 10, 30, 20), "a"), obj((50, 50, 90, 90), "a"), obj((0, 0, 8, 8), UNKNOWN, 0.3)]),
            FrameResult("two.jpg", 200, 100, [obj((5, 5, 15, 35), "b")])]


def test_sizes_from_a_known_scale(frames):
    sizes = box_sizes_um(np.array([[10, 10, 30, 20], [50, 50, 90, 90]]), 0.5)
    np.testing.assert_allclose(sizes, [[10, 5, math.sqrt(10 * 5)], [20, 20, 20]])  # ESD of the inscribed ellipse: √(w·h)
    assert np.isnan(box_sizes_um(np.array([[0, 0, 4, 4]]), None)).all()  # no scale: nothing is guessed
    rows = list(csv.DictReader(io.StringIO(csv_text(detection_rows(frames, 0.5), CSV_COLUMNS))))
    assert [(r["width_um"], r["height_um"], r["esd_um"]) for r in rows[:2]] == [("10.00", "5.00", "7.07"), ("20.00", "20.00", "20.00")]
    assert all(r["width_um"] == r["esd_um"] == "" for r in csv.DictReader(io.StringIO(csv_text(detection_rows(frames), CSV_COLUMNS))))


def test_sizes_on_a_synthetic_frame_through_the_image(tmp_path):
    """Dark discs of known diameter on a bright frame: a box drawn around
    each, at 0.8 µm per pixel, gives that diameter back in µm."""
    im = np.full((200, 300, 3), 220, np.uint8)
    yy, xx = np.mgrid[:200, :300]
    boxes = []
    for cx, cy, r in ((60, 60, 10), (200, 120, 25)):
        im[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = 40
        ys, xs = np.nonzero((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    esd = box_sizes_um(np.array(boxes, float), 0.8)[:, 2]
    np.testing.assert_allclose(esd, [2 * 10 * 0.8 + 0.8, 2 * 25 * 0.8 + 0.8], rtol=1e-6)  # a disc of radius r spans 2r+1 pixels


def test_poisson_interval_by_hand():
    # Exact (Garwood) 95% limits, as tabulated: k=0 → [0, 3.689], k=1 → [0.0253, 5.572], k=10 → [4.795, 18.390]
    for k, (lo, hi) in {0: (0.0, 3.6889), 1: (0.02532, 5.5716), 10: (4.7954, 18.3904)}.items():
        assert poisson_interval(k) == pytest.approx((lo, hi), abs=2e-4)
    with pytest.raises(ValueError):
        poisson_interval(-1)


def test_concentration_arithmetic(frames):
    rows = {r["species"]: r for r in concentration_rows(frames, Sample(volume_ul=2.5))}
    # 2 frames × 2.5 µl = 0.005 ml; 2 'a' → 400 cells per ml, interval [0.2422, 7.2247] / 0.005
    a = rows["a"]
    assert (a["count"], a["volume_ml"], a["cells_per_ml"]) == (2, 0.005, pytest.approx(400))
    assert (a["cells_per_ml_low"], a["cells_per_ml_high"]) == pytest.approx((0.24218 / 0.005, 7.2247 / 0.005), rel=1e-3)
    assert rows["total"]["count"] == 4 and list(rows)[-2:] == [UNKNOWN, "total"]
    with pytest.raises(ValueError, match="volume"):
        concentration_rows(frames, Sample())
    with pytest.raises(ValueError, match="volume_ul must be a positive number"):
        Sample(volume_ul=0)


def test_counts_totals_equal_the_detections_rows(frames):
    columns = species_columns(frames, ["b", "a", "c"])
    assert columns == ["b", "a", "c", UNKNOWN]
    rows = counts_rows(frames, columns)
    assert [r["total"] for r in rows] == [3, 1] and rows[0]["a"] == 2 and rows[0][UNKNOWN] == 1 and rows[1]["c"] == 0
    tables = sample_tables(frames, Sample(0.5, 2.5), ["a", "b"])
    counts = list(csv.DictReader(io.StringIO(tables["counts.csv"])))
    detections = list(csv.DictReader(io.StringIO(csv_text(detection_rows(frames), CSV_COLUMNS))))
    assert sum(int(r["total"]) for r in counts) == len(detections)
    for r in counts:
        assert int(r["total"]) == sum(d["image"] == r["image"] for d in detections)
    assert sample_tables(frames, Sample(0.5)) == {}  # no volume, no per-volume tables


# ---- EcoTaxa


@pytest.fixture
def export(tmp_path, frames):
    image = np.random.default_rng(0).integers(0, 255, (100, 200, 3), np.uint8)
    e = EcotaxaExport(tmp_path / "ecotaxa", ExportInfo("station 7", 0.5, 2.5, "plankton test", "model-x"))
    e.add_image(image, frames[0])
    e.add_image(image, FrameResult("one.png", 200, 100, [obj((5, 5, 15, 35), "b", corrected=True)]))  # same stem, another frame
    return e.close()


def _read(tsv):
    text = tsv.read_bytes()
    assert text.startswith(b"\xef\xbb\xbf")  # UTF-8 with a byte-order mark: how EcoTaxa knows it is not Latin-1
    return list(csv.reader(io.StringIO(text.decode("utf-8-sig")), delimiter="\t"))


def test_ecotaxa_export_follows_the_import_format(export):
    assert export.name == "ecotaxa_station_7.tsv" and check_folder(export.parent) == []
    rows = _read(export)
    header, types, data = rows[0], rows[1], [dict(zip(rows[0], r)) for r in rows[2:]]
    assert {"img_file_name", "object_id", "object_annotation_category", "object_annotation_status", "object_similarity",
            "object_bbox_x", "object_width_um", "object_esd_um", "sample_id", "acq_id", "process_id"} <= set(header)
    assert set(types) == {"[t]", "[f]"} and types[header.index("object_similarity")] == "[f]"
    assert len(data) == 4 and len({r["object_id"] for r in data}) == 4
    a, unknown, corrected = data[0], data[2], data[3]
    assert (a["object_annotation_category"], a["object_annotation_status"], a["object_width_um"]) == ("a", "predicted", "10")
    assert unknown["object_annotation_category"] == unknown["object_annotation_status"] == ""  # unclassified in EcoTaxa
    assert corrected["object_annotation_status"] == "validated"
    crop = Image.open(export.parent / a["img_file_name"])
    assert crop.size == (30, 20)  # the 20×10 box with a quarter of its longer side (5 px) around it


@pytest.mark.parametrize("breakage,message", [
    (lambda h, t, d: ([("objectsimilarity" if c == "object_similarity" else c) for c in h], t, d), "not prefix_field"),
    (lambda h, t, d: (h, t[:3] + ["[x]"] + t[4:], d), "has type '[x]'"),
    (lambda h, t, d: (h, t, [[("" if i == h.index("object_annotation_category") else v) for i, v in enumerate(r)] for r in d]),
     "a status needs a category"),
    (lambda h, t, d: (h, t, [d[0], d[0]] + d[2:]), "repeats line 3"),
    (lambda h, t, d: (h, t, [[("12 µm" if i == h.index("object_similarity") else v) for i, v in enumerate(r)] for r in d]), "is not a number"),
    (lambda h, t, d: (h, t, [[("gone.png" if i == 0 else v) for i, v in enumerate(r)] for r in d]), "image 'gone.png' is missing"),
    (lambda h, t, d: ([c for c in h if c != "process_id"], [x for c, x in zip(h, t) if c != "process_id"],
                      [[x for c, x in zip(h, r) if c != "process_id"] for r in d]), "process_id is required"),
])
def test_the_format_check_catches_each_breakage(export, breakage, message):
    h, t, *d = _read(export)
    h, t, d = breakage(h, t, d)
    export.write_text("\n".join("\t".join(r) for r in [h, t, *d]) + "\n", encoding="utf-8-sig")
    problems = check_folder(export.parent)
    assert any(message in p for p in problems), problems


@pytest.mark.slow
def test_predict_writes_the_sample_report(tiny_artifact, tmp_path):
    """`predict --um-per-px --volume-ul --export ecotaxa` on the example
    frames: sizes in detections.csv, counts.csv totals equal to its rows,
    concentrations from those counts, and an EcoTaxa folder that passes
    the format check with one crop per object."""
    from repo_paths import EXAMPLES
    from plankton.cli import main

    out = tmp_path / "out"
    code = main(["predict", str(EXAMPLES / "frames"), "--out", str(out), "--model", str(tiny_artifact), "--det-conf", "0.001",
                 "--um-per-px", "0.5", "--volume-ul", "2", "--export", "ecotaxa", "--sample-id", "st7", "--quiet"])
    assert code == 0
    detections = list(csv.DictReader(open(out / "detections.csv")))
    assert detections, "the tiny model finds objects at its floor"
    for r in detections[:20]:
        w = (float(r["x2"]) - float(r["x1"])) * 0.5
        assert abs(float(r["width_um"]) - w) < 0.03
    counts = list(csv.DictReader(open(out / "counts.csv")))
    assert sum(int(r["total"]) for r in counts) == len(detections) and len(counts) == 3
    conc = {r["species"]: r for r in csv.DictReader(open(out / "concentration.csv"))}
    assert int(conc["total"]["count"]) == len(detections) and float(conc["total"]["volume_ml"]) == pytest.approx(0.006)
    assert float(conc["total"]["cells_per_ml"]) == pytest.approx(len(detections) / 0.006, rel=1e-5)
    assert check_folder(out / "ecotaxa") == []
    (tsv,) = (out / "ecotaxa").glob("ecotaxa_*.tsv")
    assert tsv.name == "ecotaxa_st7.tsv" and len(list((out / "ecotaxa").glob("*.png"))) == len(detections)
