"""plankton.coco on synthetic COCO files and datasets built in tmp_path."""
import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from plankton.coco import Category, CocoBox, CocoDataset, CocoError, CocoImage, load_coco
from plankton.files import sha256
from plankton.images import read_image
from training.splits import split_frames, write_split


def coco(images=None, annotations=None, categories=None):
    """A small valid COCO dict: two 100x50 frames, three categories (one unused)."""
    return {
        "images": images if images is not None else [
            {"id": 1, "file_name": "images/a.jpg", "width": 100, "height": 50},
            {"id": 2, "file_name": "images/b.jpg", "width": 100, "height": 50}],
        "annotations": annotations if annotations is not None else [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10]},
            {"id": 11, "image_id": 1, "category_id": 2, "bbox": [0, 0, 100, 50]},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [50.5, 20, 5, 5]}],
        "categories": categories if categories is not None else [
            {"id": 1, "name": "Chlorella sp"}, {"id": 2, "name": "Oscillatoria sp"},
            {"id": 3, "name": "Never seen sp"}],
    }


def write(tmp_path, doc, files=True, name="ann.json"):
    """Write doc as JSON plus (optionally) an empty file per image entry."""
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    if files:
        for im in doc["images"]:
            if isinstance(im, dict) and isinstance(im.get("file_name"), str):
                (tmp_path / im["file_name"]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / im["file_name"]).write_bytes(b"")
    return path


def problems_of(tmp_path, doc, **kw):
    """(strict error message, non-strict dataset) for the same input."""
    path = write(tmp_path, doc)
    with pytest.raises(CocoError) as err:
        load_coco(path, **kw)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg, load_coco(path, strict=False, **kw)


# --- loading -----------------------------------------------------------------

def test_load_valid(tmp_path):
    ds = load_coco(write(tmp_path, coco()))
    assert ds.problems == [] and ds.image_root == tmp_path
    assert ds.images[1] == CocoImage(1, "images/a.jpg", 100, 50)
    assert ds.categories[3] == Category(3, "Never seen sp")
    assert ds.path_of(2) == tmp_path / "images" / "b.jpg"
    assert [b.id for b in ds.boxes_of(1)] == [10, 11] and ds.boxes_of(99) == []
    xyxy = ds.xyxy_of(1)
    assert xyxy.dtype == np.float32 and xyxy.tolist() == [[10, 5, 30, 15], [0, 0, 100, 50]]
    assert ds.xyxy_of(99).shape == (0, 4)
    assert ds.boxes[2].xyxy == (50.5, 20, 55.5, 25)
    assert Counter(b.category_id for b in ds.boxes) == {1: 2, 2: 1}
    assert ds.sha256 == sha256(tmp_path / "ann.json")


def test_to_dict_round_trips_and_subset(tmp_path):
    ds = load_coco(write(tmp_path, coco()))
    again = load_coco(write(tmp_path, ds.to_dict(), name="again.json"))
    assert (again.images, again.boxes, again.categories) == (ds.images, ds.boxes, ds.categories)
    assert all(a["area"] > 0 and a["iscrowd"] == 0 for a in ds.to_dict()["annotations"])
    sub = ds.subset([2])
    assert list(sub.images) == [2] and [b.id for b in sub.boxes] == [12]
    assert sub.categories == ds.categories
    with pytest.raises(KeyError, match=r"image ids not in the dataset: \[7\]"):
        ds.subset([7])


def test_image_root_and_check_files(tmp_path):
    path = write(tmp_path, coco(), files=False)
    msg = str(pytest.raises(CocoError, load_coco, path).value)
    assert f"image 1: file images/a.jpg not found under {tmp_path}" in msg
    assert len(load_coco(path, check_files=False).images) == 2
    elsewhere = tmp_path / "elsewhere"
    for f in ("a.jpg", "b.jpg"):
        (elsewhere / "images").mkdir(parents=True, exist_ok=True)
        (elsewhere / "images" / f).write_bytes(b"")
    ds = load_coco(path, image_root=elsewhere)
    assert ds.path_of(1) == elsewhere / "images" / "a.jpg"


@pytest.mark.parametrize("text,fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"images": [], "categories": []}', "missing key 'annotations'"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
])
def test_unreadable_json(tmp_path, text, fragment):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(CocoError, match=fragment) as err:
        load_coco(path, strict=False)  # structural errors raise even when not strict
    assert str(err.value).startswith(f"{path}: ")


def test_missing_json(tmp_path):
    with pytest.raises(CocoError, match="ghost.json: cannot read"):
        load_coco(tmp_path / "ghost.json")


def test_duplicate_image_ids(tmp_path):
    doc = coco()
    doc["images"].append({"id": 1, "file_name": "images/c.jpg", "width": 100, "height": 50})
    msg, ds = problems_of(tmp_path, doc)
    assert "image id 1 appears 2 times (files images/a.jpg, images/c.jpg)" in msg
    assert list(ds.images) == [2] and [b.id for b in ds.boxes] == [12]
    assert ds.problems == ["image id 1 appears 2 times (files images/a.jpg, images/c.jpg)"]


def test_one_file_under_two_ids(tmp_path):
    doc = coco()
    doc["images"][1]["file_name"] = "images/a.jpg"
    msg, ds = problems_of(tmp_path, doc)
    assert "file images/a.jpg is listed under image ids 1, 2" in msg
    assert ds.images == {} and ds.boxes == []


def test_duplicate_annotation_ids(tmp_path):
    doc = coco()
    doc["annotations"][2]["id"] = 10
    msg, ds = problems_of(tmp_path, doc)
    assert "annotation id 10 appears 2 times (images 1, 2)" in msg
    assert [b.id for b in ds.boxes] == [11]


def test_unknown_image_and_category(tmp_path):
    doc = coco()
    doc["annotations"] += [{"id": 8, "image_id": 42, "category_id": 1, "bbox": [0, 0, 1, 1]},
                           {"id": 9, "image_id": 1, "category_id": 77, "bbox": [0, 0, 1, 1]}]
    msg, ds = problems_of(tmp_path, doc)
    assert ds.problems == ["annotation 8: unknown image id 42",
                           "annotation 9: unknown category id 77"]
    assert len(ds.boxes) == 3


@pytest.mark.parametrize("bbox,fragment", [
    ([10, 10, 0, 5], "box [10, 10, 0, 5] has non-positive width or height"),
    ([10, 10, 5, -1], "box [10, 10, 5, -1] has non-positive width or height"),
    ([90, 10, 12, 5], "box [90, 10, 12, 5] extends outside the 100x50 frame"),
    ([-2, 10, 5, 5], "box [-2, 10, 5, 5] extends outside the 100x50 frame"),
    ([10, 10, 5], "bbox must be 4 finite numbers"),
    ("10,10,5,5", "bbox must be 4 finite numbers"),
])
def test_bad_boxes(tmp_path, bbox, fragment):
    doc = coco()
    doc["annotations"].append({"id": 57, "image_id": 1, "category_id": 1, "bbox": bbox})
    msg, ds = problems_of(tmp_path, doc)
    assert f"annotation 57 (image 1, images/a.jpg): {fragment}" in msg
    assert len(ds.problems) == 1 and 57 not in [b.id for b in ds.boxes]


def test_boxes_within_tolerance_are_clipped(tmp_path):
    doc = coco()
    doc["annotations"] = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [-0.5, 40, 10, 10.8]},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [95, 0, 6, 5]}]
    ds = load_coco(write(tmp_path, doc))
    assert ds.boxes[0].xywh == (0, 40, 9.5, 10) and ds.boxes[1].xywh == (95, 0, 5, 5)
    with pytest.raises(CocoError, match="extends outside"):
        load_coco(tmp_path / "ann.json", tolerance=0)


@pytest.mark.parametrize("entry,fragment", [
    ({"id": 3, "file_name": "images/c.jpg"}, "image 3 (images/c.jpg): missing or invalid width/height"),
    ({"id": 3, "file_name": "images/c.jpg", "width": 0, "height": 50}, "invalid width/height"),
    ({"id": 3, "width": 10, "height": 50}, "image 3: missing file_name"),
    ({"file_name": "images/c.jpg", "width": 10, "height": 5}, "images[2]: missing or non-integer id"),
    ("c.jpg", "images[2]: expected an object"),
])
def test_bad_image_entries(tmp_path, entry, fragment):
    doc = coco()
    doc["images"].append(entry)
    msg, ds = problems_of(tmp_path, doc)
    assert fragment in msg and sorted(ds.images) == [1, 2]


def test_bad_category_entries(tmp_path):
    doc = coco(categories=[{"id": 1, "name": "A"}, {"id": 1, "name": "B"}, {"id": 2}])
    msg, ds = problems_of(tmp_path, doc)
    assert ds.problems == ["category id 1 appears 2 times (names A, B)", "category 2: missing name"]
    assert ds.categories == {} and ds.boxes == []  # their boxes go quietly


def test_many_problems_are_summarised(tmp_path):
    doc = coco()
    doc["annotations"] += [{"id": 100 + i, "image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1]}
                           for i in range(15)]
    path = write(tmp_path, doc)
    with pytest.raises(CocoError) as err:
        load_coco(path)
    assert str(err.value).endswith("... and 12 more problems")
    assert len(err.value.problems) == 15
    assert isinstance(err.value, ValueError)


# --- split -------------------------------------------------------------------

def synthetic(n=50, seed=0):
    """n frames: category 1 nearly everywhere, 2 in ~1/5, 3 in exactly 2 frames,
    4 in exactly 1 frame, 5 never; a few frames empty."""
    rng = np.random.default_rng(seed)
    images = {i: CocoImage(i, f"f{i:03d}.jpg", 64, 48) for i in range(1, n + 1)}
    boxes = []

    def add(i, c):
        boxes.append(CocoBox(len(boxes) + 1, i, c, (1.0, 1.0, 4.0, 4.0)))

    for i in images:
        if i % 10 != 0:
            for _ in range(rng.integers(1, 8)):
                add(i, 1)
        if i % 5 == 1:
            add(i, 2)
    for i, c in [(7, 3), (23, 3), (31, 4)]:
        add(i, c)
    cats = {c: Category(c, f"cat{c}") for c in range(1, 6)}
    return CocoDataset(images, boxes, cats, image_root=None)


def frames_of(ds):
    out = defaultdict(set)
    for b in ds.boxes:
        out[b.category_id].add(b.image_id)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_split_invariants(seed):
    ds = synthetic(seed=seed)
    train, val = split_frames(ds, 0.2, seed=seed)
    assert train == sorted(train) and val == sorted(val)
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(ds.images)
    assert len(val) == 10
    for c, frames in frames_of(ds).items():
        if len(frames) >= 2:  # the rare category 3 included
            assert frames & set(val) and frames & set(train), c
    n1 = sum(b.category_id == 1 for b in ds.boxes)
    assert 0.1 < sum(b.category_id == 1 for b in ds.subset(val).boxes) / n1 < 0.3
    assert len(ds.subset(train).boxes) + len(ds.subset(val).boxes) == len(ds.boxes)


def test_split_is_deterministic():
    ds = synthetic()
    assert split_frames(ds, 0.2, seed=3) == split_frames(synthetic(), 0.2, seed=3)
    assert len({tuple(split_frames(ds, 0.2, seed=s)[1]) for s in range(5)}) > 1


def test_split_edge_fractions():
    ds = synthetic(n=40)
    assert split_frames(ds, 0.0) == (list(range(1, 41)), [])
    assert len(split_frames(ds, 0.01)[1]) == 1  # a requested val is never empty
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1\.0"):
        split_frames(ds, 1.0)
    with pytest.raises(ValueError, match="box 1 refers to image 1"):
        split_frames(CocoDataset(ds.subset([2]).images, ds.boxes[:1], {}, image_root=None))


def test_write_and_read_split(tmp_path):
    path = write(tmp_path, coco())
    ds = load_coco(path)
    out = tmp_path / "split.json"
    write_split(out, [1], [2], ds, seed=0, val_fraction=0.5)
    doc = json.loads(out.read_text())
    assert doc["train_ids"] == [1] and doc["val_ids"] == [2]
    assert doc["train_files"] == ["images/a.jpg"] and doc["val_files"] == ["images/b.jpg"]
    assert doc["meta"]["annotations_sha256"] == sha256(path)
    assert doc["meta"]["seed"] == 0 and doc["meta"]["val_fraction"] == 0.5
    with pytest.raises(ValueError, match="both"):
        write_split(out, [1, 2], [2], ds)
    with pytest.raises(ValueError, match="not in the dataset"):
        write_split(out, [1], [5], ds)


def test_end_to_end_load_split_read(tmp_path):
    """Real JPEG frames on disk -> load_coco -> split_frames -> write/read split -> read_image."""
    ds = synthetic(n=40)
    (tmp_path / "images").mkdir()
    doc = ds.to_dict()
    for im in doc["images"]:
        im["file_name"] = f"images/{im['file_name']}"
        Image.new("RGB", (64, 48), (6 * im["id"], 0, 0)).save(tmp_path / im["file_name"])  # ids 1..40: red 6..240
    path = tmp_path / "annotations.coco.json"
    path.write_text(json.dumps(doc))
    loaded = load_coco(path)
    assert len(loaded.images) == 40 and len(loaded.boxes) == len(ds.boxes)
    train, val = split_frames(loaded, 0.25, seed=1)
    assert len(val) == 10
    write_split(tmp_path / "split.json", train, val, loaded, seed=1, val_fraction=0.25)
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["val_ids"] == val
    assert split["val_files"] == [f"images/f{i:03d}.jpg" for i in val]  # the files of those ids, named by write_split
    for i in (val[0], train[-1]):
        frame = read_image(loaded.path_of(i))
        assert frame.shape == (48, 64, 3)
        # each frame was painted red = 6 × its id: path_of found that id's file, read_image decoded it
        assert abs(float(np.median(frame[..., 0])) - 6 * i) <= 2 and np.median(frame[..., 1:]) <= 3, i
