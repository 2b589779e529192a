"""Issue 30 in the app: the unknowns grouped in Review (named or rejected
through the same corrections as one object), the frames watched in Sample,
and a second model version compared in Model. CPU only, no network."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from app_utils import FRAMES
from plankton.results import NOT_PLANKTON
from plankton_app.service import Service
from plankton_app.session import Frame, Session
from plankton_app.tabs import clusters
from plankton_app.uploads import InputError

BUNDLED = FRAMES[0].parents[3] / "models" / "default"


@pytest.fixture(scope="module")
def planted(service):
    """A real analysis of an example frame whose embeddings are replaced by
    two tight groups of 6 (the planted new species) and 2 scattered ones:
    the unknowns; every other object is named (similarity 1 to a species)."""
    session = service.analyse([FRAMES[0]])
    f = session.frames[0]
    n = len(f.analysis.detections)
    assert n >= 20, "the random detector finds many boxes at its floor"
    rng = np.random.default_rng(3)
    D = f.analysis.embeddings.shape[1]
    emb = rng.normal(size=(n, D))
    centres = rng.normal(size=(2, D))
    for g in range(2):
        emb[6 * g:6 * g + 6] = centres[g] / np.linalg.norm(centres[g]) * 30 + rng.normal(scale=0.3, size=(6, D))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    sim = f.analysis.similarity.copy()
    sim[14:, 0] = 1.0
    analysis = dataclasses.replace(f.analysis, embeddings=emb, similarity=sim)
    return Session([Frame(f.name, dataclasses.replace(f.computed, analysis=analysis, thumbs={}))])


def _groups(service, session):
    return clusters.groups(service, session, service.det_floor, 0.999)  # everything below 0.999 similarity is unknown


def test_planted_unknowns_form_two_clusters_largest_first(service, planted):
    found = _groups(service, planted)
    named = [g for g in found if g.name != "noise"]
    assert [g.name for g in named] == ["1", "2"] and all(g.name == "noise" for g in found[2:])
    # each planted group is one cluster; the 2 scattered ones join the nearest or stay noise, as HDBSCAN decides
    assert {frozenset(set(g.ids) - {12, 13}) for g in named} == {frozenset(range(6)), frozenset(range(6, 12))}
    assert len(named[0].ids) >= len(named[1].ids) and sum(len(g.ids) for g in found) == 14
    assert set(named[0].ids[:6]) in ({*range(6)}, {*range(6, 12)})  # the closest to the centre first: the planted ones
    html = clusters.gallery_html(planted, found)
    assert f"Cluster 1: {len(named[0].ids)} objects" in html and html.count("<img") == sum(min(len(g.ids), clusters.STRIP) for g in found)


def test_naming_a_cluster_makes_corrections_enrol_accepts(service, planted, tmp_path):
    from plankton.cli import main
    from plankton.artifact.manifest import read_config

    first = _groups(service, planted)[0]
    with pytest.raises(InputError, match="Type a name"):
        clusters.name_cluster(service, planted, first.ids, "  ")
    s = clusters.name_cluster(service, planted, first.ids, "Newfound sp")
    assert s.corrections == {oid: "Newfound sp" for oid in first.ids} and len(s.history) == len(first.ids)  # one undoable step per object
    view = service.refilter(s, service.det_floor, 0.999)
    assert view.counts["Newfound sp"] == len(first.ids) >= 6
    assert all(g.ids != first.ids for g in _groups(service, s))  # named objects are no longer unknown
    coco = service.corrections_coco(s)
    cat = next(c["id"] for c in coco["categories"] if c["name"] == "Newfound sp")
    assert sum(a["category_id"] == cat for a in coco["annotations"]) == len(first.ids) and coco["images"][0]["file_name"] == FRAMES[0].name
    path = tmp_path / "corrections.coco.json"
    path.write_text(json.dumps(coco))
    rc = main(["enrol", "--model", str(service.folder), "--coco", str(path), "--images", str(FRAMES[0].parent), "--out", str(tmp_path / "v2"),
               "--quiet"])
    assert rc == 0
    assert "Newfound sp" in read_config(tmp_path / "v2")["prototypes"]["names"]


def test_not_plankton_on_a_cluster_leaves_the_counts(service, planted):
    second = _groups(service, planted)[1]
    before = service.refilter(planted, service.det_floor, 0.999)
    s = clusters.name_cluster(service, planted, second.ids, NOT_PLANKTON)
    after = service.refilter(s, service.det_floor, 0.999)
    assert after.n_objects == before.n_objects - len(second.ids) and len(second.ids) >= 6
    assert not set(second.ids) & set(np.concatenate(after.ids).tolist())
    assert set(s.corrections.values()) == {NOT_PLANKTON}


@pytest.fixture(scope="module")
def bundled():
    assert (BUNDLED / "frame_quality.json").is_file(), "the bundled model has no frame_quality.json (python -m training.frame_ranges)"
    return Service.load(BUNDLED)


def test_quality_panel_flags_a_blurred_frame(bundled, tmp_path):
    import cv2

    from plankton_app.tabs import quality_panel

    image = cv2.imread(str(FRAMES[1]))
    cv2.imwrite(str(tmp_path / "blurred.jpg"), cv2.GaussianBlur(image, (0, 0), 4))
    session = bundled.analyse([FRAMES[1], tmp_path / "blurred.jpg"])
    view = bundled.refilter(session)
    rows, ranges, note = quality_panel.frame_table(bundled, session, view)
    from plankton.images import read_image
    from plankton.quality import image_stats

    assert session.frames[0].computed.stats == image_stats(read_image(FRAMES[1]))  # the full frame, as predict measures it
    assert ranges is not None and "Shaded" in note
    assert rows[0]["flags"] == [] and "focus_low" in rows[1]["flags"]
    assert rows[1]["focus"] < ranges["stats"]["focus"]["low"] < rows[0]["focus"]
    assert quality_panel.flagged_rows(rows) == [[2, "blurred.jpg", "; ".join(rows[1]["flags"])]]
    fig = quality_panel.figure(rows, ranges)
    assert len(fig.data) == len(quality_panel.PLOTTED) and len(fig.layout.shapes) == len(quality_panel.PLOTTED)  # every range shaded


def test_comparing_the_bundled_model_with_itself_shows_no_change(bundled, monkeypatch):
    from plankton_app.tabs import compare_panel

    session = bundled.analyse([FRAMES[2]])
    monkeypatch.delenv("PLANKTON_MODEL_REPO", raising=False)
    root = BUNDLED.parent  # as `app.py --models-root models` offers it: by name
    with pytest.raises(InputError, match="nothing else on the server"):
        compare_panel.load_second("no-such-revision-or-folder", root)
    with pytest.raises(InputError, match="nothing else on the server"):
        compare_panel.load_second(str(BUNDLED), root)  # a path, even to an offered folder: refused
    other = compare_panel.load_second(BUNDLED.name, root)
    assert compare_panel.load_second(BUNDLED.name, root) is other  # cached: loading takes seconds
    out = compare_panel.compare(bundled, session, other)
    counts = {r["species"]: r for r in out["counts"]}
    assert counts["total"]["count_a"] == counts["total"]["count_b"] > 0
    assert all(r["difference"] == 0 for r in out["counts"])
    assert out["changed"] == [] and out["lone_a"] == out["lone_b"] == 0 and out["frames"] == 1
    if bundled.cascade.count_model() is not None:
        assert all(r.get("count_est_a") == r.get("count_est_b") for r in out["counts"])
        assert any(r.get("intervals_overlap") == "yes" for r in out["counts"])
