"""A corpus of bad or odd inputs, generated (never downloaded) into a folder.

``image_cases(folder)``, ``zip_cases(folder)`` and ``coco_cases(folder)``
each write their files and return a list of ``Case``: a name, the file,
the expected outcome ("ok": a correct result, "error": a clear message)
and, for "ok" images, the expected (height, width) of the decoded array.
All files are small (the bombs only declare, or compress, their size).
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FRAMES = sorted((Path(__file__).resolve().parent.parent / "plankton_app" / "examples" / "frames").glob("*.jpg"))


@dataclass
class Case:
    name: str
    path: Path
    expect: str  # "ok" or "error"
    shape: tuple[int, int] | None = None  # (H, W) for "ok" images
    note: str = ""
    message: str = ""  # what the one line of an "error" must say, where the case pins it


def _small_rgb(w: int = 96, h: int = 64) -> Image.Image:
    """A small natural frame (a resized committed frame), else a gradient."""
    if FRAMES:
        with Image.open(FRAMES[0]) as im:
            return im.convert("RGB").resize((w, h))
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A valid PNG signature and IHDR declaring w×h (8-bit gray) with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (w + 1) * 4)  # a few rows only
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def image_cases(folder: Path) -> list[Case]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _small_rgb()
    cases: list[Case] = []

    def add(name, data: bytes, expect, shape=None, note=""):
        p = folder / name
        p.write_bytes(data)
        cases.append(Case(name, p, expect, shape, note))

    jpeg, png = _encoded(rgb, "JPEG", quality=90), _encoded(rgb, "PNG")
    add("truncated.jpg", jpeg[: len(jpeg) // 3], "error", note="truncated JPEG")
    add("truncated.png", png[: len(png) // 2], "error", note="truncated PNG")
    add("zero_bytes.png", b"", "error", note="zero-byte file")
    add("text_renamed.png", b"This is a text file, not a PNG.\n" * 20, "error", note="text renamed to .png")
    add("garbage.jpg", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "error", note="random bytes")
    add("header_only.jpg", jpeg[:2] + b"\xff\xd9", "error", note="JPEG SOI then EOI")
    add("drawing.svg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
        b'<circle cx="32" cy="32" r="20" fill="teal"/></svg>', "error", note="SVG")
    add("drawing.png.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>', "error", note="SVG with .svg")
    add("document.pdf", b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n", "error", note="PDF")
    add("bomb_30000x30000.png", png_bomb(), "error", note="decompression bomb (declared 30000x30000)")
    # BMP header declaring a huge frame, with no pixel data
    bmp = b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 50000, 50000, 1, 24, 0, 0, 0, 0, 0, 0)
    add("huge_header.bmp", bmp, "error", note="BMP header declaring 50000x50000")

    gray16 = (np.asarray(rgb.convert("L"), np.uint16) * 257).astype(np.uint16)
    add("gray16.tif", _encoded(Image.fromarray(gray16, mode="I;16"), "TIFF"), "ok", (64, 96), "16-bit TIFF")
    f32 = np.asarray(rgb.convert("L"), np.float32) / 255.0
    f32[0, 0] = np.nan
    add("float32.tif", _encoded(Image.fromarray(f32, mode="F"), "TIFF"), "ok", (64, 96), "float TIFF with a NaN")
    add("gray.png", _encoded(rgb.convert("L"), "PNG"), "ok", (64, 96), "grayscale")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    add("rgba.png", _encoded(rgba, "PNG"), "ok", (64, 96), "RGBA")
    add("palette.png", _encoded(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"), "ok", (64, 96), "palette")
    add("cmyk.jpg", _encoded(rgb.convert("CMYK"), "JPEG"), "ok", (64, 96), "CMYK JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    add("exif_rotated.jpg", _encoded(rgb, "JPEG", exif=exif), "ok", (96, 64), "EXIF orientation 6")
    add("one_pixel.png", _encoded(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), "ok", (1, 1), "1x1")
    add("wide_4000x10.png", _encoded(Image.new("L", (4000, 10), 128), "PNG"), "ok", (10, 4000), "very wide (400:1)")
    add("tall_10x4000.png", _encoded(Image.new("L", (10, 4000), 128), "PNG"), "ok", (4000, 10), "very tall (1:400)")
    add("png_named.jpg", png, "ok", (64, 96), "PNG with a .jpg name")
    add("animated.gif", _encoded(rgb.convert("P"), "GIF", save_all=True, append_images=[rgb.rotate(90).convert("P")]),
        "ok", (64, 96), "multi-frame GIF")
    add("lossless.webp", _encoded(rgb, "WEBP", lossless=True), "ok", (64, 96), "WebP")
    return cases


def _zip_bytes(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_cases(folder: Path, bomb_mb: int = 300) -> list[Case]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good = _encoded(_small_rgb(), "JPEG", quality=90)
    cases: list[Case] = []

    def add(name, data, expect, note=""):
        p = folder / name
        p.write_bytes(data)
        cases.append(Case(name, p, expect, note=note))

    add("traversal.zip", _zip_bytes([("../../escaped_by_zip.jpg", good), ("/tmp/absolute_by_zip.jpg", good),
                                      ("..\\windows_escape.jpg", good)]), "error", "../ and absolute member paths")
    add("traversal_plus_good.zip", _zip_bytes([("../escaped_by_zip.jpg", good), ("ok/frame.jpg", good)]), "ok",
        "traversal member beside a good one")
    # zip bomb: bomb_mb MB of zeros under an image name, compressing to ~1/1000
    p = folder / "zipbomb.zip"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        info = zipfile.ZipInfo("zeros.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as f:
            chunk = b"\x00" * 2**20
            for _ in range(bomb_mb):
                f.write(chunk)
    cases.append(Case("zipbomb.zip", p, "error", note=f"{bomb_mb} MB of zeros"))
    inner = _zip_bytes([("frame.jpg", good)])
    add("nested.zip", _zip_bytes([("inner.zip", inner), ("deeper/inner2.zip", _zip_bytes([("inner.zip", inner)]))]), "error",
        "zips inside a zip")
    # a member name with raw Latin-1 bytes (not UTF-8, no UTF-8 flag): patch a placeholder of equal length
    raw = _zip_bytes([("frXme.jpg", good)]).replace(b"frXme.jpg", b"fr\xe9me.jpg")
    add("latin1_name.zip", raw, "ok", "non-UTF-8 member name")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        add("duplicates.zip", _zip_bytes([("a.jpg", good), ("a.jpg", good)]), "ok", "duplicate member names")
    add("truncated.zip", _zip_bytes([("a.jpg", good)])[:100], "error", "truncated zip")
    add("not_a_zip.zip", b"PK\x03\x04 not really a zip", "error", "zip signature then junk")
    add("only_text.zip", _zip_bytes([("readme.txt", b"hello"), ("bad.png", b"not a png")]), "error", "no usable image")
    return cases


def coco_cases(folder: Path) -> list[Case]:
    """Broken COCO files for ``classify`` (each an "error": exit 2, one-line messages)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name, data: bytes, note=""):
        p = folder / name
        p.write_bytes(data)
        cases.append(Case(name, p, "error", note=note))

    add("empty.json", b"", "empty file")
    add("not_json.json", b"{images: [1, 2,", "invalid JSON")
    add("latin1.json", b'{"images": [{"file_name": "\xe9.jpg"}]}', "not UTF-8")
    add("a_list.json", b"[1, 2, 3]", "top level is a list")
    add("missing_key.json", json.dumps({"images": [], "categories": []}).encode(), "no annotations key")
    add("wrong_types.json", json.dumps({"images": {}, "annotations": "x", "categories": 3}).encode(), "keys of wrong types")
    bad_entries = {
        "images": [{"id": 1, "file_name": "../../etc/passwd", "width": -5, "height": "tall"}, {"file_name": 7}, "junk"],
        "annotations": [{"id": 1, "image_id": 99, "category_id": 1, "bbox": [0, 0, -1, "x"]}, {"bbox": None}, 5],
        "categories": [{"id": 1}, {"name": None}, []],
    }
    add("bad_entries.json", json.dumps(bad_entries).encode(), "entries of wrong types and unknown ids")
    add("huge_numbers.json", b'{"images": [{"id": 1e999, "file_name": "a.jpg", "width": 1e400, "height": 10}], '
        b'"annotations": [], "categories": []}', "infinite numbers")
    frames = {"images": [{"id": 1, "file_name": "missing.jpg", "width": 96, "height": 64},
                         {"id": 2, "file_name": "broken.jpg", "width": 96, "height": 64}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]},
                              {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 20, 20]}],
              "categories": [{"id": 1, "name": "Noctiluca sp"}]}
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    add("bad_images.json", json.dumps(frames).encode(), "valid COCO whose images are missing or broken")
    return cases


def publish_cases(folder: Path) -> list[Case]:
    """Sample metadata (``--sample-meta``) and taxonomy tables (``--taxonomy``)
    that ``predict`` must refuse before any frame, in one line: ``note`` is
    the flag, ``message`` what the line must say."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name, data: str, message):
        p = folder / name
        p.write_text(data, encoding="utf-8")
        cases.append(Case(name, p, "error", note="--taxonomy" if name.endswith(".csv") else "--sample-meta", message=message))

    add("null.json", "null", "is JSON but not an object (it holds null)")
    add("number.json", "42", "is JSON but not an object (it holds a number)")
    add("text.json", '"abc"', "is JSON but not an object (it holds text)")
    add("deep.json", "[" * 100_000 + "]" * 100_000, "is JSON nested too deeply to read")
    add("deep_station.json", '{"station": ' + "[" * 100_000 + "]" * 100_000 + "}", "is JSON nested too deeply to read")
    add("date_zero.json", '{"date": 0}', "date 0 is not a date as YYYY-MM-DD")
    add("date_false.json", '{"date": false}', "date false is not a date as YYYY-MM-DD")
    add("station_true.json", '{"station": true}', "station true is not text")
    add("country_uk.json", '{"country_code": "UK"}', "country_code 'UK' is not an ISO 3166-1 alpha-2 country code")
    add("long_number.json", '{"latitude": 1' + "0" * 400 + ', "longitude": 0}', "latitude (a very long number) is not a number")
    add("aphia_superscript.csv", "class,scientific_name,rank,aphia_id\nChlorella sp,Chlorella,genus,\u00b2\n",
        "aphia_id '\u00b2' is not a positive whole number")
    add("unknown_row.csv", "class,scientific_name,rank,aphia_id\nunknown,Unknownia,genus,\n", "class 'unknown' is the model's answer")
    add("bad_kingdom.csv", "class,scientific_name,rank,kingdom\nChlorella sp,Chlorella,genus,Plants\n", "kingdom 'Plants' is not one of")
    add("huge_field.csv", "class,scientific_name,rank\nChlorella sp," + "x" * 200_000 + ",genus\n", "not a readable CSV")
    return cases


# ---- shared by the hardening tests (library/CLI and app)

ESCAPED = ("escaped_by_zip.jpg", "absolute_by_zip.jpg", "windows_escape.jpg")
HANDLED: dict[str, list[bool]] = {}  # surface -> handled flag per case


def record(surface: str, ok: bool) -> None:
    HANDLED.setdefault(surface, []).append(bool(ok))


def report() -> str:
    n = sum(len(v) for v in HANDLED.values())
    h = sum(sum(v) for v in HANDLED.values())
    detail = ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in HANDLED.items())
    return f"bad-input corpus: {n} cases, {h} handled ({detail})"


def tree(root: Path) -> set[str]:
    """Every file under ``root`` (caches and .git left out), relative paths."""
    import os

    skip = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
    out = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        out.update(os.path.relpath(os.path.join(folder, f), root) for f in files)
    return out


def no_escapes(*roots: Path) -> None:
    import tempfile

    for root in {Path(tempfile.gettempdir()), *roots}:
        for name in ESCAPED:
            assert not (root / name).exists(), f"a zip member was written outside: {root / name}"
