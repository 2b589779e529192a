"""Issue 28 in the app's logic: corrections and undo, the Review queue and
its filters, object numbers from 1, display crops, and what /model_info
tells (the defaults, no server paths)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app_utils import FRAMES
from plankton.results import NOT_PLANKTON
from plankton_app import render
from benchmarks.slider import synthetic_session
from plankton_app.tabs import review
from plankton_app.uploads import InputError


@pytest.fixture(scope="module")
def synthetic(service):
    from plankton.images import read_image

    return synthetic_session(service, read_image(FRAMES[1]), n_objects=12)


def test_corrections_leave_the_queue_stay_listed_and_undo(service, synthetic):
    det, cls = service.det_floor, 0.0
    view = service.refilter(synthetic, det, cls, keep_rejected=True)
    first = [oid for oid, _, _ in review.queue(synthetic, view)]
    assert len(first) == 12
    a, b = first[0], first[1]  # the two most doubtful
    s = service.correct(synthetic, a, "Noctiluca sp")
    s = service.correct(s, b, NOT_PLANKTON)
    view = service.refilter(s, det, cls, keep_rejected=True)
    todo = [oid for oid, _, _ in review.queue(s, view, "to review")]
    assert a not in todo and b not in todo and len(todo) == 10 and todo[0] == first[2]  # review moved on
    assert [oid for oid, _, _ in review.queue(s, view, "corrected")] == [a]
    assert [oid for oid, _, _ in review.queue(s, view, "rejected")] == [b]  # still visible, to be undone
    assert len(review.queue(s, view, "all")) == 12
    shown = service.refilter(s, det, cls)
    assert shown.n_objects == 11 and b not in np.concatenate(shown.ids)  # out of counts and exports
    # undo, last change first: the rejected object returns
    s, undone = service.undo(s)
    assert undone == b and b not in s.corrections and service.refilter(s, det, cls).n_objects == 12
    s, undone = service.undo(s)
    assert undone == a and s.corrections == {} and s.history == []
    with pytest.raises(InputError, match="Nothing to undo"):
        service.undo(s)
    # undo restores an earlier label, not just "none"; a no-op change is no history entry
    s = service.correct(synthetic, a, "Noctiluca sp")
    s = service.correct(s, a, "Noctiluca sp")
    s = service.correct(s, a, NOT_PLANKTON)
    assert len(s.history) == 2
    s, _ = service.undo(s)
    assert s.corrections == {a: "Noctiluca sp"}


def test_numbers_shown_start_at_1(service, synthetic):
    view = service.refilter(synthetic, service.det_floor, 0.0)
    rows, _ = render.table(synthetic, view)
    assert sorted(r[0] for r in rows) == list(range(1, 13))
    listed = review.rows(synthetic, service.refilter(synthetic, service.det_floor, 0.0, keep_rejected=True), "all")
    assert sorted(r[0] for r in listed) == list(range(1, 13)) and 'alt="object 1"' in "".join(r[2] for r in listed)


def test_display_crops_keep_the_shape_and_are_made_once(service, synthetic):
    from plankton_app.thumbs import thumb

    computed = synthetic.frames[0].computed
    computed.thumbs.clear()
    crop = computed.crops[0]
    uri, w, h = thumb(computed, 0)
    assert uri.startswith("data:image/jpeg;base64,") and max(w, h) == 120
    assert w / h == pytest.approx(crop.shape[1] / crop.shape[0], rel=0.05)  # the object's aspect, not a square
    assert thumb(computed, 0) is computed.thumbs[(0, None)]  # cached
    assert thumb(computed, 0, 0.5) != computed.thumbs[(0, None)]  # with a scale: a scale bar, drawn separately
    assert len(computed.thumbs) == 2  # only what was looked at


def test_model_info_says_the_defaults_and_no_paths(service):
    info = service.model_info()
    text = json.dumps(info)
    assert info["defaults"] == {"det_conf": service.det_conf, "cls_conf": service.cls_conf}
    assert "folder" not in info and str(service.folder) not in text and str(service.folder.parent) not in text
    assert info["source"].startswith("--model ") and info["source"].endswith(service.folder.name)


def test_unnameable_species_are_reported(service):
    assert service.unnameable(0.0) == []
    lost = service.unnameable(0.9999)
    assert lost and all(r["threshold"] > r["best"] for r in lost)
    from plankton_app.tabs.model import caption

    assert "Can no longer be named" in caption(service, 0.9999) and "Can no longer be named" not in caption(service, 0.0)


def test_palette_in_use_is_the_models(service):
    from plankton import palette
    from plankton.run.writers import species_colour

    mapping = palette.for_prototypes(service.cascade.identifier.prototypes)
    assert all(species_colour(n) == c for n, c in mapping.items())  # boxes (annotate) and legend (render) share it
    name = next(iter(mapping))
    assert render.rgb(name) == "rgb({},{},{})".format(*mapping[name])


def test_concentration_total_first(service, synthetic):
    import dataclasses

    from plankton.sample.measure import Sample
    from plankton_app.tabs.sample import concentration_table

    s = dataclasses.replace(synthetic, sample=Sample(0.5, 2.0))
    table = concentration_table(service.refilter(s, service.det_floor, 0.0), s.sample)
    assert table[0][0] == "total" and table[0][5] == 12 and all(r[0] != "total" for r in table[1:])  # [5]: counted objects
