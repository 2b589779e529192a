"""Issue 41 in the app: every name a session knows has an estimate. The
bundled model and its count calibration, a committed frame, the app's own
service: objects corrected to a new name count as that name, and the
estimated total does not drop."""
from __future__ import annotations

import csv
import io

import pytest

from app_utils import FRAMES
from plankton.results import UNKNOWN

NEW = "Newname sp"


@pytest.fixture(scope="module")
def bundled():
    from plankton_app.service import Service
    from repo_paths import REPO

    return Service.load(REPO / "models" / "default")


@pytest.fixture(scope="module")
def session(bundled):
    return bundled.analyse([FRAMES[0]])


def _estimate(service, session):
    view = service.refilter(session)
    return view, service.counter(view).estimate(view.frames)


def test_three_objects_corrected_to_a_new_name_count_as_three(bundled, session):
    view, before = _estimate(bundled, session)
    objs = list(view.objects())
    assert len(objs) >= 3
    # the three least sure objects: the ones a person is most likely to rename
    picked = sorted(objs, key=lambda t: t[2].det_score)[:3]
    corrected = session
    for oid, _, _ in picked:
        corrected = bundled.correct(corrected, oid, NEW)
    view2, after = _estimate(bundled, corrected)
    assert sum(o.species == NEW and o.corrected for f in view2.frames for o in f.objects) == 3
    row = after.row(NEW)
    assert row["count"] == 3 and row["count_est"] >= 3 - 1e-9  # three sure objects, more only for ones missed
    assert row["count_est_low"] <= row["count_est"] <= row["count_est_high"]
    assert after.row("total")["count_est"] >= before.row("total")["count_est"] - 1e-9
    # and the downloads carry the new name with its estimate
    files = bundled.sample_files(corrected, view2)
    if "concentration.csv" in files:
        rows = {r["species"]: r for r in csv.DictReader(io.StringIO(files["concentration.csv"]))}
        assert float(rows[NEW]["count_est"]) == pytest.approx(row["count_est"], rel=1e-3)


def test_renaming_to_a_known_species_moves_the_objects_there(bundled, session):
    view, before = _estimate(bundled, session)
    names = [n for n in bundled.class_names if n != UNKNOWN]
    oid, _, obj = min(view.objects(), key=lambda t: t[2].det_score)
    target = next(n for n in names if n != obj.species)
    _, after = _estimate(bundled, bundled.correct(session, oid, target))
    assert after.row(target)["count_est"] >= before.row(target)["count_est"] + 0.8  # one sure object more (and its share of misses), less what it already gave there
