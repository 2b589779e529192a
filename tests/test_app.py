"""app.py through gradio_client, against the app started on 127.0.0.1 (in
a background thread) with a random-weight model given by PLANKTON_MODEL_DIR."""
from __future__ import annotations

import zipfile

import pytest

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app_utils import FRAMES, app_artifact, app_server, ui_refilter  # noqa: E402

pytestmark = pytest.mark.app


@pytest.fixture(scope="module")
def server(tiny_artifact):
    return app_server(app_artifact(tiny_artifact))


@pytest.fixture
def client(server):
    """A fresh client: its own session (and session state) on the server."""
    return Client(server.url, verbose=False, download_files=False)


def test_endpoints_have_stable_names(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert {"/identify", "/refilter", "/enrol", "/model_info", "/per_class"} <= set(api["named_endpoints"])
    params = [p["parameter_name"] for p in api["named_endpoints"]["/identify"]["parameters"]]
    assert params == ["files", "det_conf", "cls_conf"]


def test_identify_a_committed_frame(client, server):
    service = server.service
    result = client.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/identify")
    frame = result["frames"][0]
    assert frame["image"] == FRAMES[0].name and (frame["width"], frame["height"]) == (1920, 1080)
    expected = service.analyse([FRAMES[0]]).frames[0].analysis  # cached at warm-up: no second model run
    assert result["n_objects"] == len(frame["objects"]) == len(expected.detections) > 0
    obj = frame["objects"][0]
    assert set(obj) == {"id", "box", "det_score", "species", "similarity", "top", "corrected"} and obj["corrected"] is False
    assert obj["box"] == pytest.approx(expected.detections.xyxy[0].tolist(), abs=0.06)
    assert obj["species"] in service.class_names and len(obj["top"]) == 3
    assert sum(result["counts"].values()) == result["n_objects"] and result["messages"] == []


def test_refilter_uses_the_cached_upload(client, server):
    service = server.service
    first = client.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/identify")
    scores = sorted(o["det_score"] for o in first["frames"][0]["objects"])
    det = scores[len(scores) // 2] + 1e-4
    calls = []
    original = service.cascade.analyse
    service.cascade.analyse = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        fewer = client.predict(det, 0.0, api_name="/refilter")
        strict = client.predict(service.det_floor, 0.99, api_name="/refilter")
    finally:
        service.cascade.analyse = original
    assert calls == []  # no model ran
    assert 0 < fewer["n_objects"] < first["n_objects"]
    assert all(o["det_score"] >= det - 1e-4 for o in fewer["frames"][0]["objects"])
    kept = {o["id"] for o in fewer["frames"][0]["objects"]}
    assert kept <= {o["id"] for o in first["frames"][0]["objects"]}
    assert strict["counts"] == {"unknown": first["n_objects"]}
    none = client.predict(1.0, 0.0, api_name="/refilter")
    assert none["n_objects"] == 0 and none["frames"][0]["objects"] == []


def _value(update):
    return update["value"] if isinstance(update, dict) and "value" in update and "headers" not in update else update


def test_ui_refilter_changes_table_and_status(client, server):
    """The UI's own slider handler: boxes, table, counts, downloads and status follow."""
    import csv
    import io
    import urllib.request

    service = server.service
    client.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/ui_identify")
    loose = ui_refilter(client, service.det_floor, 0.0)
    strict = ui_refilter(client, service.det_floor, 0.99)
    # one handler redraws every tab on a slider move (issue 42); Identify's seven outputs come first
    gallery, table, _, counts, csv_file, coco_file, status = map(_value, strict[:7])
    assert len(gallery) == 1 and "unknown" in gallery[0]["caption"]
    assert loose[1]["data"] != table["data"] and all("unknown" in row[3] for row in table["data"])
    assert "unknown" in counts and "similarity ≥ 0.99" in status
    with urllib.request.urlopen(csv_file["url"]) as r:
        rows = list(csv.DictReader(io.StringIO(r.read().decode())))
    assert len(rows) == len(table["data"]) and {row["species"] for row in rows} == {"unknown"}
    with urllib.request.urlopen(coco_file["url"]) as r:
        assert len(__import__("json").loads(r.read())["annotations"]) == len(rows)
    nothing = list(map(_value, ui_refilter(client, 1.0, 0.0)[:7]))
    assert "move the detector slider" in nothing[-1] and nothing[1]["data"] == [] and "No objects" in nothing[3]


def test_bad_input_gives_clear_messages(client, server, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(AppError, match="notes.txt: not an image"):
        client.predict([handle_file(str(text))], 0.5, 0.5, api_name="/identify")
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(FRAMES[0].read_bytes()[:1500])
    with pytest.raises(AppError, match="broken.jpg: cannot"):
        client.predict([handle_file(str(corrupt))], 0.5, 0.5, api_name="/identify")
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(AppError, match="empty.zip: no image files inside"):
        client.predict([handle_file(str(empty))], 0.5, 0.5, api_name="/identify")
    # in the UI: a status message, not a crash
    out = client.predict([handle_file(str(corrupt))], 0.5, 0.5, api_name="/ui_identify")
    assert "broken.jpg: cannot" in _value(out[6])
    # a zip with one good frame and junk: results plus what was skipped
    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(mixed, "w") as zf:
        zf.writestr("good/frame.jpg", FRAMES[0].read_bytes())
        zf.writestr("../escape.jpg", FRAMES[0].read_bytes())
        zf.writestr("inner.zip", b"PK\x03\x04")
    result = client.predict([handle_file(str(mixed))], server.service.det_floor, 0.0, api_name="/identify")
    assert [f["image"] for f in result["frames"]] == ["mixed.zip/good/frame.jpg"]
    assert any("unsafe path" in m for m in result["messages"]) and any("nested archive" in m for m in result["messages"])
    # the app keeps serving
    ok = client.predict([handle_file(str(FRAMES[0]))], server.service.det_floor, 0.0, api_name="/identify")
    assert ok["n_objects"] > 0


def test_refilter_and_enrol_need_an_upload(client):
    with pytest.raises(AppError, match="call /identify first"):
        client.predict(0.5, 0.5, api_name="/refilter")
    with pytest.raises(AppError, match="identify first"):
        client.predict("X sp", "1", api_name="/enrol")


def test_enrol_a_species(client, server):
    service = server.service
    client.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/identify")
    out = client.predict("Noctiluca sp", "0, 1-2", api_name="/enrol")
    assert out["enrolled"] == ["Noctiluca sp"] and out["classes"][-1] == "Noctiluca sp"
    after = client.predict(service.det_floor, 0.0, api_name="/refilter")
    species = {o["id"]: o["species"] for o in after["frames"][0]["objects"]}
    assert [species[i] for i in (0, 1, 2)] == ["Noctiluca sp"] * 3
    again = client.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/identify")
    assert again["counts"].get("Noctiluca sp", 0) >= 3  # a new upload in the same session keeps it
    with pytest.raises(AppError, match="No object 99999"):
        client.predict("Other sp", "99999", api_name="/enrol")
    # another client (another user) does not see it
    other = Client(server.url, verbose=False, download_files=False)
    res = other.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/identify")
    assert "Noctiluca sp" not in res["counts"]


def test_model_info_and_per_class(client):
    info = client.predict(api_name="/model_info")
    assert info["name"] == "random-test-model" and "PLANKTON_MODEL_DIR" in info["source"]
    assert info["created"] and info["versions"]["plankton"] and info["training"]["epochs"] == 1
    loose = client.predict(0.0, api_name="/per_class")
    strict = client.predict(0.95, api_name="/per_class")
    assert loose[-1]["species"] == "weighted avg" and set(loose[0]) == {"species", "precision", "recall", "f1", "support", "threshold"}
    assert loose[0]["threshold"] == 0.0 and strict[0]["threshold"] == 0.95  # no species of this model has its own threshold
    assert loose != strict and info["runtime"] in ("torch", "onnx")


def test_species_tab_shows_subcentres_and_closest_pairs(client, server):
    """The Species tab: a species' sub-centres with their exemplars and
    crop counts (from exemplars.safetensors), and the closest pairs."""
    from plankton.artifact.gallery import closest_pairs

    service = server.service
    name = service.class_names[0]
    html = client.predict(name, api_name="/ui_species_choice")
    counts = [n for n, _ in service.exemplars.of(name)]
    assert f"{sum(counts)} training crops" in html and html.count("<img") == sum(min(2, n) for n in counts if n)
    for k, n in enumerate(counts):
        assert (f"sub-centre {k + 1}: {n} crop{'s' if n != 1 else ''}<" in html) == (n > 0)
    top = closest_pairs(service.cascade.identifier.prototypes, 1)[0]
    from plankton_app.tabs.species import pairs

    first = pairs(service, 1)[0]
    assert (first["a"], first["b"], first["cosine"]) == (top["a"], top["b"], top["cosine"]) and isinstance(first["confused"], int)
