"""A generated corpus of bad or odd input (tests/badinput.py) through the
library, the command line and the app's API: each case gets a clear error
or a correct result, nothing crashes, nothing is written outside the output
or temporary folders, and the app goes on serving. Also the app's file
access (/file= refuses files outside its folders) and its upload limits."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import badinput
from plankton.data import CocoError, load_coco
from plankton.images import ImageError, read_image

REPO = Path(__file__).resolve().parent.parent
ESCAPED = ("escaped_by_zip.jpg", "absolute_by_zip.jpg", "windows_escape.jpg")
HANDLED: dict[str, list[bool]] = {}  # surface -> handled flag per case


def _record(surface: str, ok: bool) -> None:
    HANDLED.setdefault(surface, []).append(bool(ok))


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    n = sum(len(v) for v in HANDLED.values())
    h = sum(sum(v) for v in HANDLED.values())
    detail = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in HANDLED.items())
    print(f"\nbad-input corpus: {n} cases, {h} handled ({detail})")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("badinput")
    return {"images": badinput.image_cases(root / "images"), "zips": badinput.zip_cases(root / "zips"),
            "coco": badinput.coco_cases(root / "coco"), "root": root}


def _tree(root: Path) -> set[str]:
    skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
    out = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        out.update(os.path.relpath(os.path.join(folder, f), root) for f in files)
    return out


@pytest.fixture(scope="module")
def repo_before():
    return _tree(REPO)


def _no_escapes(*roots: Path) -> None:
    for root in {Path(tempfile.gettempdir()), *roots}:
        for name in ESCAPED:
            assert not (root / name).exists(), f"a zip member was written outside: {root / name}"


def test_corpus_is_big_enough(corpus):
    kinds = corpus["images"] + corpus["zips"] + corpus["coco"]
    assert len(kinds) >= 25 and len({c.name for c in kinds}) == len(kinds)
    assert (corpus["zips"][2].path.stat().st_size < 2 * 2**20), "the zip bomb compresses well"


# ------------------------------------------------------------------ library


def test_library_read_image(corpus):
    for case in corpus["images"] + corpus["zips"]:
        expect = case.expect if case in corpus["images"] else "error"  # read_image does not open zips
        try:
            arr = read_image(case.path)
        except ImageError as e:
            msg = str(e)
            ok = expect == "error" and "\n" not in msg and str(case.path) in msg
            _record("library", ok)
            assert ok, f"{case.name}: unexpected or unclear error {msg!r}"
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            _record("library", False)
            pytest.fail(f"{case.name}: {type(e).__name__} instead of ImageError: {e}")
        ok = (expect == "ok" and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape == (*case.shape, 3)
              and arr.flags.c_contiguous)
        _record("library", ok)
        assert ok, f"{case.name}: expected {expect} {case.shape}, got {arr.shape} {arr.dtype}"
    # the same bytes, in memory, name the given name
    with pytest.raises(ImageError, match=r"^upload\.png: "):
        read_image(corpus["images"][0].path.read_bytes(), name="upload.png")


def test_library_load_coco(corpus):
    for case in corpus["coco"]:
        try:
            ds = load_coco(case.path, check_files=True)
        except CocoError as e:
            ok = str(case.path) in str(e) and "\n" not in str(e)
        except Exception as e:  # noqa: BLE001
            _record("library", False)
            pytest.fail(f"{case.name}: {type(e).__name__} instead of CocoError: {e}")
        else:
            ok = False
            pytest.fail(f"{case.name}: loaded {ds}")
        _record("library", ok)
        assert ok, case.name


# ------------------------------------------------------------------ command line


def test_cli_predict_corpus(corpus, tiny_artifact, tmp_path, repo_before):
    cases = corpus["images"] + corpus["zips"]
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), YOLO_OFFLINE="true", YOLO_AUTOINSTALL="false", TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-m", "plankton", "predict", *[str(c.path) for c in cases], "--out", str(out),
                        "--model", str(tiny_artifact), "--det-conf", "0.5", "--quiet"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert all(line.startswith("plankton: ") for line in lines), r.stderr
    good = [c for c in corpus["images"] if c.expect == "ok"]
    bad = [c for c in cases if c not in good]
    for c in cases:
        mentions = [line for line in lines if f"{c.path}:" in line]
        ok = len(mentions) == (1 if c in bad else 0)
        _record("cli", ok)
        assert ok, f"{c.name}: {mentions}"
    assert len(lines) == len(bad)
    coco = json.loads((out / "predictions.coco.json").read_text())
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in coco["images"]}
    assert sizes == {c.path.name: c.shape for c in good}
    with open(out / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["image"] for row in rows} <= {c.path.name for c in good}
    assert sorted(p.name for p in out.iterdir()) == ["detections.csv", "predictions.coco.json"]
    assert _tree(REPO) == repo_before
    _no_escapes(tmp_path, corpus["root"])


def test_cli_classify_broken_coco(corpus, tiny_artifact, tmp_path, capsys, repo_before):
    from plankton.cli import main

    for case in corpus["coco"]:
        out = tmp_path / case.path.stem
        try:
            code = main(["classify", str(case.path), "--out", str(out), "--model", str(tiny_artifact), "--quiet"])
        except BaseException as e:  # noqa: BLE001
            _record("cli", False)
            pytest.fail(f"{case.name}: {type(e).__name__}: {e}")
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        ok = code == 2 and lines and all(line.startswith("plankton: ") for line in lines) and "Traceback" not in err
        _record("cli", bool(ok))
        assert ok, f"{case.name}: exit {code}, stderr {err!r}"
        if out.exists():  # only classify runs that got past the COCO file write their (empty or partial) table
            assert sorted(p.name for p in out.iterdir()) == ["classifications.csv"]
    assert _tree(REPO) == repo_before


# ------------------------------------------------------------------ app API

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from app_utils import FRAMES, app_artifact, app_server  # noqa: E402


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
            _record("app", ok)
            assert ok, f"{case.name}: {msg!r}"
            continue
        if case in corpus["images"]:
            frames = result["frames"]
            ok = (case.expect == "ok" and len(frames) == 1 and frames[0]["image"] == case.name
                  and (frames[0]["height"], frames[0]["width"]) == case.shape and result["messages"] == [])
        else:
            ok = case.expect == "ok" and _zip_ok(case, result)
        _record("app", ok)
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
    assert _tree(REPO) == repo_before
    _no_escapes(corpus["root"])


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

    from plankton import service as svc

    side = int(svc.MAX_PIXELS ** 0.5) + 1
    big = tmp_path / "over_the_pixel_limit.png"
    Image.new("L", (side, side), 200).save(big)
    assert big.stat().st_size < 2**20
    with pytest.raises(AppError, match=rf"over_the_pixel_limit\.png: {side * side} pixels exceeds the limit of {svc.MAX_PIXELS}"):
        client.predict([handle_file(str(big))], 0.5, 0.0, api_name="/identify")


def test_file_size_limit(server, client, tmp_path, monkeypatch):
    """Gradio refuses uploads over max_file_size (set from PLANKTON_APP_MAX_FILE_BYTES);
    the service checks sizes again for files it is given directly."""
    from plankton import service as svc

    assert server.demo.max_file_size == svc.MAX_FILE_BYTES
    big = tmp_path / "too_big.jpg"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(svc.MAX_FILE_BYTES + 1)
    with pytest.raises(Exception, match=r"(?i)too large|exceeds|413|max"):
        client.predict([handle_file(str(big))], 0.5, 0.0, api_name="/identify")
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

    from plankton.cascade import Cascade
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
