"""The bad-input corpus (tests/badinput.py) through the app's API, which
goes on serving; also the app's file access (/file= refuses files outside
its folders), its upload limits, and a frame that runs out of memory."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import badinput

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app_utils import FRAMES, app_artifact, app_server  # noqa: E402

pytestmark = [pytest.mark.app, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(badinput_corpus):
    return badinput_corpus


@pytest.fixture(scope="module")
def server(tiny_artifact):
    return app_server(app_artifact(tiny_artifact))


@pytest.fixture(scope="module")
def client(server):
    return Client(server.url, verbose=False, download_files=False)


def _zip_ok(case, result) -> bool:
    names = [f["image"] for f in result["frames"]]
    if case.name == "traversal_plus_good.zip":
        return names == ["traversal_plus_good.zip/ok/frame.jpg"] and any("unsafe path" in m for m in result["messages"])
    if case.name == "latin1_name.zip":
        return len(names) == 1 and names[0].startswith("latin1_name.zip/fr") and names[0].endswith("me.jpg")
    if case.name == "duplicates.zip":
        return names == ["duplicates.zip/a.jpg"] * 2
    return False


def test_app_identify_corpus(corpus, server, client, repo_before):
    for case in corpus["images"] + corpus["zips"]:
        try:
            result = client.predict([handle_file(str(case.path))], 0.5, 0.0, api_name="/identify")
        except AppError as e:
            msg = str(e)
            ok = case.expect == "error" and case.name in msg and "Traceback" not in msg
            badinput.record("app", ok)
            assert ok, f"{case.name}: {msg!r}"
            continue
        if case in corpus["images"]:
            frames = result["frames"]
            ok = (case.expect == "ok" and len(frames) == 1 and frames[0]["image"] == case.name
                  and (frames[0]["height"], frames[0]["width"]) == case.shape and result["messages"] == [])
        else:
            ok = case.expect == "ok" and _zip_ok(case, result)
        badinput.record("app", ok)
        assert ok, f"{case.name}: {json.dumps(result)[:400]}"
    # all of them at once: the good ones are analysed, each bad one is named
    result = client.predict([handle_file(str(c.path)) for c in corpus["images"]], 0.5, 0.0, api_name="/identify")
    assert len(result["frames"]) == sum(c.expect == "ok" for c in corpus["images"])
    for c in corpus["images"]:
        if c.expect == "error":
            assert any(m.startswith(f"{c.name}: ") for m in result["messages"]), c.name
    # the app goes on serving: a committed frame is still identified correctly
    service = server.service
    ok = client.predict([handle_file(str(FRAMES[0]))], service.det_floor, 0.0, api_name="/identify")
    expected = service.analyse([FRAMES[0]]).frames[0].analysis
    assert ok["frames"][0]["image"] == FRAMES[0].name and ok["n_objects"] == len(expected.detections) > 0
    assert badinput.tree(REPO) == repo_before
    badinput.no_escapes(corpus["root"])


# ------------------------------------------------------------------ file access and upload limits


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_file_route_refuses_files_outside_the_app(server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    readme = (REPO / "README.md").read_bytes()[:200]
    targets = {"/etc/passwd": b"root:", str(secret): b"TOP-SECRET", str(REPO / "README.md"): readme,
               str(REPO / "app.py"): b"Plankton identifier", "README.md": readme, "../../../../etc/passwd": b"root:"}
    for prefix in ("gradio_api/file=", "file="):
        for path, marker in targets.items():
            status, body = _get(server.url + prefix + path)
            assert marker not in body, f"{prefix}{path} served the file"
            assert status in (400, 403, 404, 405), f"{prefix}{path}: {status}"
    assert not server.demo.allowed_paths  # nothing beyond Gradio's own cache and the app's components


def test_pixel_limit(server, client, tmp_path):
    from PIL import Image

    from plankton_app import uploads as svc

    side = int(svc.MAX_PIXELS ** 0.5) + 1
    big = tmp_path / "over_the_pixel_limit.png"
    Image.new("L", (side, side), 200).save(big)
    assert big.stat().st_size < 2**20
    with pytest.raises(AppError, match=rf"over_the_pixel_limit\.png: {side * side} pixels exceeds the limit of {svc.MAX_PIXELS}"):
        client.predict([handle_file(str(big))], 0.5, 0.0, api_name="/identify")


def test_file_size_limit(server, client, tmp_path, monkeypatch):
    """Gradio refuses uploads over max_file_size (set from PLANKTON_APP_MAX_FILE_BYTES);
    the service checks sizes again for files it is given directly."""
    from plankton_app import uploads as svc

    assert server.demo.max_file_size == svc.MAX_FILE_BYTES
    big = tmp_path / "too_big.jpg"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(svc.MAX_FILE_BYTES + 1)
    # gradio_client checks the size against the limit the server advertises, before uploading
    assert client.config["max_file_size"] == svc.MAX_FILE_BYTES
    with pytest.raises(ValueError, match=rf"too_big\.jpg exceeds the maximum file size of {svc.MAX_FILE_BYTES} bytes"):
        client.predict([handle_file(str(big))], 0.5, 0.0, api_name="/identify")
    # and the server itself refuses the same upload sent past the client
    import httpx

    with open(big, "rb") as f:
        r = httpx.post(client.upload_url, files=[("files", ("too_big.jpg", f))], timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    small = tmp_path / "small.png"
    small.write_bytes(FRAMES[0].read_bytes()[:5000])
    monkeypatch.setattr(svc, "MAX_FILE_BYTES", 1000)
    with pytest.raises(svc.InputError, match=r"small\.png: 5000 bytes exceeds the limit of 1000"):
        server.service.analyse([small])


# ------------------------------------------------------------------ out of memory on one frame


def _fail_on_wide(original):
    """Running out of memory on one frame, whatever the cause, simulated on
    any frame wider than 3000 px so the test does not depend on the machine.
    (Huge crop regions themselves no longer need memory: see test_crops.)"""
    def run(self, image, *args, **kwargs):
        if image.shape[1] > 3000:
            raise MemoryError("simulated")
        return original(self, image, *args, **kwargs)
    return run


def test_out_of_memory_on_one_frame_skips_it(tiny_artifact, tmp_path, capsys, monkeypatch, server):
    from PIL import Image

    from plankton.pipeline.cascade import Cascade
    from plankton.cli import main

    wide, good = tmp_path / "very_wide.png", tmp_path / "good.png"
    Image.new("L", (4000, 10), 91).save(wide)  # unlike the corpus's 4000×10 frame: the app caches analyses by content
    Image.open(FRAMES[0]).convert("RGB").resize((96, 64)).save(good)
    monkeypatch.setattr(Cascade, "predict", _fail_on_wide(Cascade.predict))
    monkeypatch.setattr(Cascade, "analyse", _fail_on_wide(Cascade.analyse))
    code = main(["predict", str(wide), str(good), "--out", str(tmp_path / "out"), "--model", str(tiny_artifact),
                 "--det-conf", "0.5", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"plankton: {wide}: out of memory analysing a 4000x10 frame"
    assert [im["file_name"] for im in json.loads((tmp_path / "out" / "predictions.coco.json").read_text())["images"]] == ["good.png"]
    compute = server.service.compute
    monkeypatch.setattr(server.service, "compute", lambda image, key=None: _fail_on_wide(lambda _, im, *a, **k: compute(im, *a, **k))(None, image, key))
    session = server.service.analyse([wide, good])
    assert [f.name for f in session.frames] == ["good.png"]
    assert session.messages == ["very_wide.png: out of memory analysing a 4000x10 frame"]
