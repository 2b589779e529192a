"""Input enumeration for ``predict`` (both engines): folders, files, globs,
zip and tar archives and manifests, lazily, each frame once."""
from __future__ import annotations

import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from plankton.images import ImageError
from plankton.run.inputs import expand, iter_items, plan, read


def _jpeg(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_manifest_ranges_give_every_line_once(tmp_path):
    """However a manifest is split, each line belongs to exactly one range."""
    names = [f"{'d/' * (i % 4)}frame_{i:04d}{'x' * (i % 7)}.jpg" for i in range(500)]
    (tmp_path / "list.txt").write_text("# a comment\n" + "\n".join(names) + "\n\n")
    for split in (1, 7, 64, 1000, 1 << 20):
        specs = plan([tmp_path / "list.txt"], split_bytes=split)
        assert len(specs) == -(-(tmp_path / "list.txt").stat().st_size // split)
        keys = [item.key for spec in specs for item in expand(spec)]
        assert keys == [str(tmp_path / n) for n in names], split


def test_manifest_without_final_newline_and_relative_lines(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "list.lst").write_text("a.jpg\n../b.png")
    items = list(iter_items([tmp_path / "sub" / "list.lst"]))
    assert [(i.key, i.name, i.shown) for i in items] == [(str(tmp_path / "sub" / "a.jpg"), "a.jpg", "a.jpg"),
                                                         (str(tmp_path / "b.png"), "b.png", "../b.png")]


def test_folders_globs_duplicates_and_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("f/b.jpg", "f/a.PNG", "f/.hidden.jpg", "f/notes.txt", "f/.cache/c.jpg", "f/z/c.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = list(iter_items(["f", "f/b.jpg", "f/*.jpg", "missing.jpg", "nothing/*.png"]))
    frames = [i for i in items if not i.error]
    assert [i.shown for i in frames] == ["f/a.PNG", "f/b.jpg", "f/z/c.jpg"]  # sorted per folder, hidden skipped, b.jpg once
    assert all(os.path.isabs(i.key) for i in frames)
    assert [i.error for i in items if i.error] == ["missing.jpg: no such file or folder", "nothing/*.png: no file matches this pattern"]
    assert [i.name for i in iter_items(["f"], skip={str(tmp_path / "f" / "b.jpg")})] == ["a.PNG", "c.jpg"]


def test_zip_members_are_read_in_memory_with_the_apps_rules(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("ok/frame.jpg", _jpeg(1))
        zf.writestr("../escape.jpg", _jpeg(2))
        zf.writestr("inner.zip", b"PK")
        zf.writestr("readme.txt", b"hello")
        zf.writestr("__MACOSX/ok/._frame.jpg", b"junk")
        zf.writestr("bad.png", b"not a png")
    items = list(iter_items([tmp_path / "a.zip"]))
    by_shown = {i.shown: i for i in items}
    shown = str(tmp_path / "a.zip")
    assert sorted(by_shown) == sorted(f"{shown}/{m}" for m in ("ok/frame.jpg", "../escape.jpg", "inner.zip", "bad.png"))
    assert by_shown[f"{shown}/../escape.jpg"].error.endswith("unsafe path, skipped")
    assert by_shown[f"{shown}/inner.zip"].error.endswith("nested archive, not opened")
    good = by_shown[f"{shown}/ok/frame.jpg"]
    assert good.name == "frame.jpg" and good.error is None and read(good, None).shape == (24, 32, 3)
    with pytest.raises(ImageError, match=r"a\.zip/bad\.png: "):
        read(by_shown[f"{shown}/bad.png"], None)
    assert not (tmp_path / "escape.jpg").exists() and not (tmp_path.parent / "escape.jpg").exists()


def test_tar_gz_streams_its_members_and_bad_archives_are_one_line(tmp_path):
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
        for name, data in (("x/1.jpg", _jpeg(1)), ("x/2.jpg", _jpeg(2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    items = list(iter_items([tmp_path / "a.tar.gz"]))
    assert [i.name for i in items] == ["1.jpg", "2.jpg"] and all(read(i, None).shape == (24, 32, 3) for i in items)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "broken.tar").write_bytes(b"\x00" * 10)
    (tmp_path / "empty.zip").write_bytes(_empty_zip())
    errors = [i.error for i in iter_items([tmp_path / "broken.zip", tmp_path / "broken.tar", tmp_path / "empty.zip"])]
    assert len(errors) == 3 and all(e and "\n" not in e for e in errors)
    assert errors[0].startswith(f"{tmp_path / 'broken.zip'}: not a valid zip file")
    assert errors[2] == f"{tmp_path / 'empty.zip'}: no image files inside"


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", b"no frames here")
    return buf.getvalue()
