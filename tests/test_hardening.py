"""A generated corpus of bad or odd input (tests/badinput.py) through the
library and the command line: each case gets a clear error or a correct
result, nothing crashes, and nothing is written outside the output or
temporary folders. The app's side is in test_hardening_app.py."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import badinput
from plankton.coco import CocoError, load_coco
from plankton.images import ImageError, read_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(badinput_corpus):
    return badinput_corpus


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
            badinput.record("library", ok)
            assert ok, f"{case.name}: unexpected or unclear error {msg!r}"
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            badinput.record("library", False)
            pytest.fail(f"{case.name}: {type(e).__name__} instead of ImageError: {e}")
        ok = (expect == "ok" and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape == (*case.shape, 3)
              and arr.flags.c_contiguous)
        badinput.record("library", ok)
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
            badinput.record("library", False)
            pytest.fail(f"{case.name}: {type(e).__name__} instead of CocoError: {e}")
        else:
            ok = False
            pytest.fail(f"{case.name}: loaded {ds}")
        badinput.record("library", ok)
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
    bad = [c for c in cases if c.expect != "ok"]
    # Archives are inputs too: their good members are frames, each bad member gets its own line ("ARCHIVE/MEMBER: why").
    member_lines = {"traversal_plus_good.zip": 1}
    counted = 0
    for c in cases:
        mentions = [line for line in lines if line.startswith((f"plankton: {c.path}:", f"plankton: {c.path}/"))]
        counted += len(mentions)
        ok = len(mentions) >= 1 if c in bad else len(mentions) == member_lines.get(c.name, 0)
        badinput.record("cli", ok)
        assert ok, f"{c.name}: {mentions}"
    assert counted == len(lines), r.stderr
    coco = json.loads((out / "predictions.coco.json").read_text())
    sizes = {im["file_name"]: (im["height"], im["width"]) for im in coco["images"]}
    from_zips = {"frame.jpg", "a.jpg"}  # ok/frame.jpg beside the unsafe member; a.jpg once, though the zip holds it twice
    assert {c.path.name: c.shape for c in good}.items() <= sizes.items() and from_zips <= set(sizes)
    assert len(sizes) == len(good) + len(from_zips) + 1  # + the latin1-named member
    with open(out / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["image"] for row in rows} <= set(sizes)
    assert sorted(p.name for p in out.iterdir()) == ["detections.csv", "embeddings.safetensors", "predictions.coco.json", "quality.csv"]
    assert badinput.tree(REPO) == repo_before
    badinput.no_escapes(tmp_path, corpus["root"])


@pytest.fixture(scope="module")
def publish_cases(tmp_path_factory):
    return badinput.publish_cases(tmp_path_factory.mktemp("publish"))


def test_library_publish_inputs_one_line_each(publish_cases, tiny_artifact):
    """Odd sample metadata and taxonomy tables, as ``predict`` checks them
    before any frame: exactly one problem each, naming it."""
    from plankton.sample.exports import PublishInputError, publish_inputs

    names = ["Chlorella sp", "Bodo saltans"]
    for case in publish_cases:
        meta, table = (str(case.path), None) if case.note == "--sample-meta" else (None, str(case.path))
        try:
            publish_inputs(meta, table, tiny_artifact, names)
        except PublishInputError as e:
            ok = len(e.problems) == 1 and case.message in e.problems[0] and len(e.problems[0]) < 400
        except BaseException as e:  # noqa: BLE001 - the point of the test
            badinput.record("library", False)
            pytest.fail(f"{case.name}: {type(e).__name__} instead of PublishInputError: {str(e)[:200]}")
        else:
            ok = False
        badinput.record("library", ok)
        assert ok, case.name


@pytest.mark.parametrize("name", ["null.json", "deep.json", "station_true.json", "aphia_superscript.csv"])
def test_cli_publish_inputs_one_line(name, publish_cases, tiny_artifact, tmp_path, capsys, repo_before):
    """The same through ``predict``: one line, exit 2, nothing written
    (a few cases: each loads the model before its check)."""
    from plankton.cli import main

    (case,) = [c for c in publish_cases if c.name == name]
    out = tmp_path / "out"
    try:
        code = main(["predict", str(badinput.FRAMES[0]), "--model", str(tiny_artifact), "--out", str(out), case.note, str(case.path), "--quiet"])
    except BaseException as e:  # noqa: BLE001
        badinput.record("cli", False)
        pytest.fail(f"{case.name}: {type(e).__name__}: {str(e)[:200]}")
    lines = capsys.readouterr().err.strip().splitlines()
    ok = code == 2 and len(lines) == 1 and lines[0].startswith("plankton: ") and case.message in lines[0] and not out.exists()
    badinput.record("cli", ok)
    assert ok, f"{case.name}: exit {code}, stderr {[line[:300] for line in lines]}"
    scratch = lambda files: {f for f in files if not f.startswith("work/")}  # noqa: E731 - where other jobs write while this runs
    assert scratch(badinput.tree(REPO)) == scratch(repo_before)


def test_cli_classify_broken_coco(corpus, tiny_artifact, tmp_path, capsys, repo_before):
    from plankton.cli import main

    for case in corpus["coco"]:
        out = tmp_path / case.path.stem
        try:
            code = main(["classify", str(case.path), "--out", str(out), "--model", str(tiny_artifact), "--quiet"])
        except BaseException as e:  # noqa: BLE001
            badinput.record("cli", False)
            pytest.fail(f"{case.name}: {type(e).__name__}: {e}")
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        ok = code == 2 and lines and all(line.startswith("plankton: ") for line in lines) and "Traceback" not in err
        badinput.record("cli", bool(ok))
        assert ok, f"{case.name}: exit {code}, stderr {err!r}"
        if out.exists():  # only classify runs that got past the COCO file write their (empty or partial) table
            assert sorted(p.name for p in out.iterdir()) == ["classifications.csv"]
    assert badinput.tree(REPO) == repo_before
