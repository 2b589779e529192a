"""plankton_app: the app's logic without Gradio (service, sessions, uploads, rendering)."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app_utils import FRAMES, NOVEL, app_artifact
from plankton.results import UNKNOWN, Detections
from plankton_app import plots, render
from benchmarks.slider import synthetic_session
from plankton_app.render import counts_html
from plankton_app.service import Service
from plankton_app.session import Session, parse_ids
from plankton_app.uploads import InputError, iter_sources


@pytest.fixture(scope="module")
def synthetic(service):
    from plankton.images import read_image

    return synthetic_session(service, read_image(FRAMES[1]), n_objects=20)


def _jpeg() -> bytes:
    return FRAMES[0].read_bytes()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            if name.endswith("/"):
                zf.writestr(zipfile.ZipInfo(name), b"")
            else:
                zf.writestr(name, data)
    return path


def test_load_prefers_the_environment(monkeypatch, tiny_artifact):
    """Without a folder, Service.load resolves the model as the CLI does:
    $PLANKTON_MODEL_DIR before the bundled model, and says so."""
    folder = app_artifact(tiny_artifact)
    monkeypatch.delenv("PLANKTON_MODEL_REPO", raising=False)
    monkeypatch.setenv("PLANKTON_MODEL_DIR", str(folder))
    service = Service.load()
    assert service.folder == folder and service.description == f"from PLANKTON_MODEL_DIR ({folder})"
    assert Service.load(folder).description == f"--model {folder}"


def test_analyse_caches_by_content(service, session):
    assert len(session.frames) == 1 and session.frames[0].name == FRAMES[0].name
    a = session.frames[0].analysis
    assert len(a.detections) > 0 and a.embeddings.shape == (len(a.detections), 512)
    assert len(session.frames[0].computed.crops) == len(a.detections)
    assert session.frames[0].computed.thumbs == {} or all(isinstance(k, tuple) for k in session.frames[0].computed.thumbs)  # made on first look
    assert max(session.frames[0].computed.display.shape[:2]) <= 1280
    again = service.analyse([FRAMES[0]])
    assert again.frames[0].computed is session.frames[0].computed  # no second model run


def test_refilter_matches_resolve_and_keeps_ids(service, session):
    a = session.frames[0].analysis
    low = service.refilter(session, service.det_floor, 0.0)
    assert low.n_objects == len(a.detections)
    assert list(low.ids[0]) == list(range(len(a.detections)))
    det = float(np.median(a.detections.score)) + 1e-6
    high = service.refilter(session, det, 0.0)
    assert 0 < high.n_objects < low.n_objects
    expected = a.resolve(det, 0.0, service.topk)
    assert [o.xyxy for o in high.frames[0].objects] == [o.xyxy for o in expected.objects]
    for oid, _, o in high.objects():  # ids point at the same detections
        assert a.detections.xyxy[oid].tolist() == pytest.approx(list(o.xyxy))
    assert all(o.species == UNKNOWN for o in service.refilter(session, det, 0.99).frames[0].objects)
    # below the floor is clamped, not an error
    assert service.refilter(session, -1.0, 0.0).det_conf == service.det_floor


def test_view_outputs(service, synthetic):
    view = service.refilter(synthetic, service.det_floor, 0.0)
    assert view.n_objects == 20
    images = render.annotated(synthetic, view)
    assert len(images) == 1 and images[0][0].size[0] <= 1280 and "20 objects" in images[0][1]
    rows, total = render.table(synthetic, view)
    assert total == 20 and len(rows) == 20 and rows[0][2].startswith("<img") and len(rows[0]) == 7
    rows, total = render.table(synthetic, view, limit=5)
    assert len(rows) == 5 and total == 20
    assert sum(view.counts.values()) == 20
    html = counts_html(view)
    assert "Total" in html and ">20<" in html
    data = view.to_json()
    json.dumps(data)
    assert data["n_objects"] == 20 and len(data["frames"][0]["objects"][0]["top"]) == 3
    assert view.csv().count("\n") == 21
    coco = service.coco(view, synthetic)
    assert len(coco["annotations"]) == 20 and coco["categories"][-1]["name"] == UNKNOWN


def test_unknown_counts_last_and_grey(service, synthetic):
    view = service.refilter(synthetic, service.det_floor, 0.99)
    assert view.counts == {UNKNOWN: 20}
    assert "<i>unknown</i>" in counts_html(view)
    view = service.refilter(synthetic, 1.0, 0.0)
    assert view.n_objects == 0 and "No objects" in counts_html(view)


def test_enrol_applies_to_the_session_only(service, synthetic):
    before = list(service.class_names)
    new = service.enrol(synthetic, "  Noctiluca   sp ", [0, 1, 2])
    assert new.enrolled == ["Noctiluca sp"] and "Noctiluca sp" in new.prototypes.names
    assert service.class_names == before and synthetic.prototypes is None  # shared model and old session unchanged
    view = service.refilter(new, service.det_floor, 0.0)
    species = {int(i): o.species for i, _, o in view.objects()}
    assert all(species[i] == "Noctiluca sp" for i in (0, 1, 2))  # an example is most similar to its own prototype
    assert "Noctiluca sp" in {c["name"] for c in service.coco(view, new)["categories"]}
    rows = service.per_class(0.0, new)
    assert rows and new.val_similarity.shape[1] == len(before) + 1
    fig = plots.embedding_figure(service.validation, new, view)
    assert "Noctiluca sp" in fig.data[-2].text  # the prototypes trace includes it
    # a later upload in the same session keeps the enrolled species
    later = service.analyse([FRAMES[0]], previous=new)
    assert later.enrolled == ["Noctiluca sp"] and later.similarity[0].shape[1] == len(before) + 1
    kept = later.emptied()
    assert kept.frames == [] and kept.enrolled == ["Noctiluca sp"] and synthetic.emptied() is None


@pytest.mark.parametrize("name, ids, message", [
    ("", [0], "name"), (UNKNOWN, [0], "reserved"), ("X sp", [], "at least one"), ("X sp", [0, 999], "No object 999"),
])
def test_enrol_rejects_bad_requests(service, synthetic, name, ids, message):
    with pytest.raises(InputError, match=message):
        service.enrol(synthetic, name, ids)


def test_parse_ids():
    assert parse_ids("3, 5 7-9;1") == [3, 5, 7, 8, 9, 1]
    assert parse_ids("") == []
    with pytest.raises(InputError, match="'x'"):
        parse_ids("1, x")


def test_model_info_and_metrics(service):
    info = service.model_info()
    json.dumps(info)
    assert info["name"] == "random-test-model" and info["source"].startswith("--model ") and info["runtime"] in ("torch", "onnx")
    assert info["training"]["epochs"] == 1 and info["versions"]["plankton"]
    assert info["has_validation"] and info["metrics"]["detection"]["mAP50"] == 0.61
    loose, strict = service.per_class(0.0), service.per_class(0.95)
    assert [r["species"] for r in loose][-2:] == ["macro avg", "weighted avg"]
    assert NOVEL in [r["species"] for r in loose]
    recall = {r["species"]: r["recall"] for r in loose}
    assert recall[NOVEL] == 0.0 and max(recall.values()) > 0.5
    assert sum(r["recall"] for r in strict) < sum(r["recall"] for r in loose)  # a stricter threshold costs recall
    assert service.coverage(0.0)["coverage"] == 1.0 and service.coverage(1.01)["coverage"] == 0.0


def test_confusion_heatmap_and_top_confusions(service):
    """The Model tab's confusion matrix counts the stored validation answers
    exactly (hover text included), and its table lists the mistakes most
    frequent first."""
    from collections import Counter

    true, pred = service.validation_answers(0.0)
    fig = plots.confusion_figure(true, pred)
    heat = fig.data[0]
    cell = Counter(zip(true.tolist(), pred.tolist()))
    for i, t in enumerate(heat.y):
        for j, p in enumerate(heat.x):
            assert f"count: {cell.get((t, p), 0)}" in heat.text[i][j]
    top = plots.top_confusions(true, pred)
    wrong = sorted((c for (t, p), c in cell.items() if t != p), reverse=True)
    assert [r["count"] for r in top] == wrong[: len(top)] and all(r["true"] != r["predicted"] for r in top)
    assert any(r["true"] == NOVEL for r in top)  # a species without a prototype is always answered wrongly


def test_embedding_figure_places_the_upload(service, session):
    view = service.refilter(session, service.det_floor, 0.0)
    fig = plots.embedding_figure(service.validation, session, view)
    names = [t.name for t in fig.data]
    assert names[-2:] == ["prototypes", "this upload"] and NOVEL in names
    upload = fig.data[-1]
    assert len(upload.x) == view.n_objects and "similarity" in upload.text[0]
    assert plots.embedding_figure(service.validation) is not None  # without an upload: the validation map alone


def test_model_without_optional_files(tiny_cascade):
    plain = Service(tiny_cascade, "plain")
    assert plain.validation is None and plain.metrics is None and plain.reliability is None
    assert plain.per_class(0.5) == [] and plain.coverage(0.5) is None and plots.embedding_figure(plain.validation) is None
    assert plain.model_info()["has_validation"] is False


def test_no_detections_is_not_an_error(service):
    from plankton.pipeline.cascade import FrameAnalysis
    from plankton_app.session import Computed, Frame

    empty = FrameAnalysis("", 64, 48, Detections.empty(), np.zeros((0, 512), np.float32), np.zeros((0, len(service.class_names)), np.float32),
                          list(service.class_names), service.det_floor)
    s = Session([Frame("blank.png", Computed(empty, np.zeros((48, 64, 3), np.uint8), 1.0))])
    view = service.refilter(s)
    assert view.n_objects == 0 and render.table(s, view) == ([], 0)
    assert "0 objects" in render.annotated(s, view)[0][1]


# ---- untrusted input


def test_bad_files_are_reported_not_raised(service, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(_jpeg()[:2000])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError) as e:
        service.analyse([text, corrupt, empty])
    msg = str(e.value)
    assert "notes.txt: not an image" in msg and "broken.jpg" in msg and "empty.png: empty file" in msg
    with pytest.raises(InputError, match="No file uploaded"):
        service.analyse([])
    good = service.analyse([text, FRAMES[0]])
    assert len(good.frames) == 1 and any("notes.txt" in m for m in good.messages)


def test_zip_members_are_read_safely(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.jpg", _jpeg())
    z = _zip(tmp_path / "frames.zip", {
        "batch/": b"", "batch/a.jpg": _jpeg(), "../evil.jpg": _jpeg(), "/abs.jpg": _jpeg(), "nested.zip": inner.getvalue(),
        "notes.txt": b"hi", ".hidden.jpg": _jpeg(), "__MACOSX/._a.jpg": b"junk", "b.PNG": b"not really a png",
    })
    problems: list[str] = []
    sources = list(iter_sources([z], problems))
    assert [s.name for s in sources] == ["frames.zip/batch/a.jpg", "frames.zip/b.PNG"]
    text = " | ".join(problems)
    assert "../evil.jpg: unsafe path" in text and "/abs.jpg: unsafe path" in text
    assert "nested.zip: nested archive" in text and "notes.txt: not an image" in text
    assert "hidden" not in text and "MACOSX" not in text
    assert not any(p.name != "frames.zip" for p in tmp_path.iterdir()) and not (tmp_path.parent / "evil.jpg").exists()


def test_zip_limits_and_failures(service, tmp_path, monkeypatch):
    import plankton_app.uploads as svc

    empty = _zip(tmp_path / "empty.zip", {})
    with pytest.raises(InputError, match="empty.zip: no image files inside"):
        service.analyse([empty])
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"PK not a zip")
    with pytest.raises(InputError, match="bogus.zip: not a valid zip"):
        service.analyse([bogus])
    many = _zip(tmp_path / "many.zip", {f"{i}.jpg": b"x" for i in range(5)})
    monkeypatch.setattr(svc, "MAX_ZIP_MEMBERS", 4)
    with pytest.raises(InputError, match="5 members exceeds the limit of 4"):
        service.analyse([many])
    monkeypatch.setattr(svc, "MAX_ZIP_MEMBERS", 1000)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.jpg", b"\0" * 3_000_000)  # compresses to a few KB
    monkeypatch.setattr(svc, "MAX_ZIP_BYTES", 1_000_000)
    with pytest.raises(InputError, match="uncompressed bytes exceeds"):
        service.analyse([big])
    monkeypatch.setattr(svc, "MAX_ZIP_BYTES", 400 * 2**20)
    problems: list[str] = []
    assert list(svc.iter_zip(big, "big.zip", problems, max_member_bytes=100_000)) == []
    assert "exceeds the limit of 100000" in problems[0]


def test_pixel_and_frame_caps(service, tmp_path, monkeypatch):
    import plankton_app.service as svc

    monkeypatch.setattr(svc, "MAX_PIXELS", 1000)
    with pytest.raises(InputError, match="exceeds the limit of 1000"):
        service.analyse([FRAMES[0]])
    monkeypatch.setattr(svc, "MAX_PIXELS", 25_000_000)
    monkeypatch.setattr(svc, "MAX_FRAMES", 1)
    z = _zip(tmp_path / "two.zip", {"a.jpg": _jpeg(), "b.jpg": _jpeg()})
    s = service.analyse([z])
    assert len(s.frames) == 1 and "only the first 1 were analysed" in s.messages[-1]


def test_benchmark_function_runs(service):
    """The slider benchmark works (timing is reported, not asserted: see
    ``python -m benchmarks.slider``)."""
    from benchmarks.slider import benchmark_refilter

    out = benchmark_refilter(service, np.full((540, 960, 3), 200, np.uint8), n_objects=20, repeats=3)
    assert out["objects"] == 20 and out["total"]["median_ms"] > 0
