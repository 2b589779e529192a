"""The dataset audit (training.audit): its counts against pycocotools on the
committed frames, and each warning raised by a crafted COCO file with that
problem and by no other. The page in a browser is in test_browser.py."""
from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from training.audit import audit, main
from training.audit_data import WARNING_KINDS
from training.audit_report import FIGURES


@pytest.fixture(scope="module")
def committed(frames_coco):
    """(COCO file, image root) of the committed frames; their location lives in conftest only."""
    return frames_coco.source, frames_coco.image_root


def _pycocotools(path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "loading annotations..."
        return COCO(str(path))


def test_counts_equal_the_coco_files(committed):
    coco_path, root = committed
    result, crops = audit(coco_path, root, examples=2)
    gt = _pycocotools(coco_path)
    cats = gt.loadCats(gt.getCatIds())
    by_name = {r["name"]: r for r in result["species"]}
    assert sorted(by_name) == sorted(c["name"] for c in cats)
    for c in cats:
        row = by_name[c["name"]]
        assert (row["id"], row["boxes"], row["frames"]) == (
            c["id"], len(gt.getAnnIds(catIds=[c["id"]])), len(gt.getImgIds(catIds=[c["id"]]))), c["name"]
    present = {a["category_id"] for a in gt.dataset["annotations"]}
    assert 1 < len(present) < len(cats), "the committed data should have common, rare and empty species"
    assert result["totals"] == {"frames": len(gt.getImgIds()), "boxes": len(gt.getAnnIds()),
                                "categories": len(cats), "species_with_boxes": len(present)}
    assert sum(r["share"] for r in result["species"]) == pytest.approx(1.0)
    boxes = [r["boxes"] for r in result["species"]]
    assert boxes == sorted(boxes, reverse=True)

    per_frame = {i: len(gt.getAnnIds(imgIds=[i])) for i in gt.getImgIds()}
    assert result["objects_per_frame"]["per_frame"] == {str(i): n for i, n in per_frame.items()}
    assert result["objects_per_frame"]["histogram"] == {str(n): k for n, k in Counter(per_frame.values()).items()}

    # co-occurrence: frames holding both species, by pycocotools
    names, matrix = result["cooccurrence"]["species"], result["cooccurrence"]["frames"]
    ids = {c["name"]: c["id"] for c in cats}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            both = set(gt.getImgIds(catIds=[ids[a]])) & set(gt.getImgIds(catIds=[ids[b]]))
            assert matrix[i][j] == len(both), (a, b)

    # sizes: the longer side of each box
    top = result["species"][0]
    longer = sorted(max(a["bbox"][2:]) for a in gt.loadAnns(gt.getAnnIds(catIds=[top["id"]])))
    assert top["sizes"] == pytest.approx(longer) and top["size"]["median"] == pytest.approx(np.median(longer))
    assert result["size_unit"] == "px"

    # example crops: two per species (fewer where it has fewer boxes), each from a box of that species
    for r in result["species"]:
        assert len(crops.get(r["id"], [])) == min(2, r["boxes"]), r["name"]
        for c in crops.get(r["id"], []):
            assert gt.anns[c["ann_id"]]["category_id"] == r["id"]
            assert Image.open(io.BytesIO(base64.b64decode(c["jpeg"]))).size == (96, 96)


# ---- each warning from a crafted file ----------------------------------------------------------

W, H = 64, 48


def _write_frame(path, seed: int) -> None:
    # Noise, saved losslessly: each seed gives a different file.
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _clean(tmp_path) -> dict:
    """Three different 64×48 frames, two species, every box inside its frame
    and at least the stride: no warning at all. Its edge cases stay clean."""
    (tmp_path / "img").mkdir()
    for i in (1, 2, 3):
        _write_frame(tmp_path / "img" / f"f{i}.png", i)
    return {
        "images": [{"id": i, "file_name": f"img/f{i}.png", "width": W, "height": H} for i in (1, 2, 3)],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [2, 3, 20, 16]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [30, 10, 12, 12]},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [40, 30, 24, 18]},  # touches the right and bottom edges
            {"id": 13, "image_id": 3, "category_id": 2, "bbox": [0, 0, 8, 3]},  # longer side exactly the stride
        ],
        "categories": [{"id": 1, "name": "Alpha sp"}, {"id": 2, "name": "Beta sp"}],
    }


def _duplicate_image_id(doc, d):
    _write_frame(d / "img" / "f4.png", 4)
    doc["images"].append({"id": 2, "file_name": "img/f4.png", "width": W, "height": H})
    return ["image id 2", "img/f2.png", "img/f4.png"]


def _duplicate_file(doc, d):
    doc["images"].append({"id": 4, "file_name": "img/f1.png", "width": W, "height": H})
    return ["img/f1.png", "image ids 1, 4"]


def _missing(doc, d):
    (d / "img" / "f3.png").unlink()
    return ["image 3", "img/f3.png", "not found"]


def _unreadable(doc, d):
    (d / "img" / "f3.png").write_bytes(b"these bytes are not an image")
    return ["image 3", "img/f3.png", "not an image"]


def _size_mismatch(doc, d):
    doc["images"][1]["width"] = 100
    return ["image 2", "img/f2.png", "64x48", "100x48"]


def _identical(doc, d):
    shutil.copyfile(d / "img" / "f1.png", d / "img" / "f3.png")
    return ["img/f1.png (image 1)", "img/f3.png (image 3)"]


def _empty_category(doc, d):
    doc["categories"].append({"id": 3, "name": "Gamma sp"})
    return ["category 3", "Gamma sp"]


def _outside(doc, d):
    doc["annotations"][2]["bbox"] = [41, 30, 24, 18]  # one pixel past the right edge
    return ["annotation 12", "image 2", "img/f2.png", "[41, 30, 24, 18]", "64x48"]


def _zero_area(doc, d):
    doc["annotations"][1]["bbox"] = [30, 10, 0, 12]
    return ["annotation 11", "img/f1.png", "Beta sp", "width 0"]


def _below_stride(doc, d):
    doc["annotations"][3]["bbox"] = [0, 0, 7.5, 3]
    return ["annotation 13", "img/f3.png", "7.5x3 px", "8 px"]


def _malformed(doc, d):
    doc["annotations"].append({"id": 14, "image_id": 1, "category_id": 99, "bbox": [1, 1, 10, 10]})
    return ["annotation 14", "unknown category id 99"]


CRAFTED = {"duplicate_image_ids": _duplicate_image_id, "duplicate_files": _duplicate_file,
           "missing_files": _missing, "unreadable_files": _unreadable, "size_mismatch": _size_mismatch,
           "identical_frames": _identical, "empty_categories": _empty_category, "outside_frame": _outside,
           "zero_area": _zero_area, "below_stride": _below_stride, "malformed": _malformed}


def _audit(tmp_path, doc, **kwargs) -> dict:
    path = tmp_path / "crafted.coco.json"
    path.write_text(json.dumps(doc))
    return audit(path, examples=1, **kwargs)[0]


def _found(result) -> dict[str, list[str]]:
    return {k: [w["message"] for w in ws] for k, ws in result["warnings"].items() if ws}


def test_clean_file_has_no_warnings(tmp_path):
    result = _audit(tmp_path, _clean(tmp_path))
    assert _found(result) == {}
    assert result["totals"] == {"frames": 3, "boxes": 4, "categories": 2, "species_with_boxes": 2}
    assert result["source"]["files_read"] == result["source"]["files_listed"] == 3


@pytest.mark.parametrize("kind", list(WARNING_KINDS))  # a new kind without a crafted file fails here
def test_each_warning_is_raised_by_its_problem_only(tmp_path, kind):
    doc = _clean(tmp_path)
    expected = CRAFTED[kind](doc, tmp_path)
    result = _audit(tmp_path, doc)
    found = _found(result)
    assert list(found) == [kind], f"expected only {kind}, got {found}"
    [message] = found[kind]
    assert "\n" not in message
    for part in expected:
        assert part in message, f"{part!r} not named in: {message}"
    lost = kind in ("missing_files", "unreadable_files")
    assert result["source"]["files_read"] == result["source"]["files_listed"] - lost


def test_min_stride_is_a_parameter(tmp_path):
    found = _found(_audit(tmp_path, _clean(tmp_path), min_stride=10))
    assert list(found) == ["below_stride"] and "annotation 13" in found["below_stride"][0]


# ---- the command line and prepare ---------------------------------------------------------------

def test_cli_writes_a_self_contained_page_and_the_same_numbers(committed, tmp_path):
    coco_path, root = committed
    common = ["--coco", str(coco_path), "--images", str(root), "--examples", "2"]
    px = main(common + ["--out", str(tmp_path / "px")])
    um = main(common + ["--out", str(tmp_path / "um"), "--um-per-px", "0.5"])
    assert json.loads((tmp_path / "px" / "audit.json").read_text()) == json.loads(json.dumps(px))

    page = (tmp_path / "px" / "audit.html").read_text()
    assert "<script src" not in page.lower() and "<link" not in page.lower(), "the page must not load anything"
    assert page.count('src="data:image/jpeg;base64,') == sum(min(2, r["boxes"]) for r in px["species"])
    assert page.count("Plotly.newPlot(") == len(FIGURES)
    for name in FIGURES:
        assert f'id="fig-{name}"' in page
    for ws in px["warnings"].values():
        for w in ws:
            assert html.escape(w["message"]) in page
    assert "Size separates look-alike species" in page
    assert str(root) not in json.dumps(px), "no local path in audit.json"

    # --um-per-px: the same boxes, sizes scaled
    assert um["size_unit"] == "µm" and "0.5 µm per pixel" in (tmp_path / "um" / "audit.html").read_text()
    for a, b in zip(px["species"], um["species"]):
        assert b["sizes"] == pytest.approx([0.5 * s for s in a["sizes"]], abs=0.01)
        assert (a["boxes"], a["frames"]) == (b["boxes"], b["frames"])


def test_cli_refuses_bad_arguments_in_one_line(committed, tmp_path, capsys):
    coco_path, _ = committed
    with pytest.raises(SystemExit):
        main(["--coco", str(coco_path), "--out", str(tmp_path), "--um-per-px", "0"])
    assert "--um-per-px must be > 0" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json: not valid JSON"):
        main(["--coco", str(tmp_path / "bad.json"), "--out", str(tmp_path)])


def test_prepare_writes_the_audit_beside_the_split(committed, tmp_path):
    from training import prepare

    coco_path, _ = committed
    prepare.main(["--coco", str(coco_path), "--out", str(tmp_path / "a"), "--val-fraction", "0.34"])
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    result = json.loads((tmp_path / "a" / "audit" / "audit.json").read_text())
    assert result["totals"]["frames"] == len(split["train_ids"]) + len(split["val_ids"])
    assert (tmp_path / "a" / "audit" / "audit.html").is_file()
    prepare.main(["--coco", str(coco_path), "--out", str(tmp_path / "b"), "--val-fraction", "0.34", "--no-audit"])
    assert (tmp_path / "b" / "split.json").is_file() and not (tmp_path / "b" / "audit").exists()
