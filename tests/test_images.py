"""plankton.images on files generated in tmp_path: every mode, every way to be broken."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from plankton.images import (DEFAULT_MAX_PIXELS, ImageError, find_images,
                             read_image)


def save(path, im, fmt=None, **kw):
    im.save(path, fmt, **kw)
    return path


def noise(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_header_only(w, h):
    """A PNG whose header claims w×h but carries almost no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def assert_rgb(a, h, w):
    assert a.shape == (h, w, 3) and a.dtype == np.uint8 and a.flags.c_contiguous


def assert_bad(source, fragment, **kw):
    with pytest.raises(ImageError) as err:
        read_image(source, **kw)
    msg = str(err.value)
    assert "\n" not in msg and fragment in msg
    if not isinstance(source, bytes):
        assert msg.startswith(str(source) + ": ")
    return msg


# --- good images -------------------------------------------------------------

def test_rgb_png_is_exact_and_path_equals_bytes(tmp_path):
    pixels = noise()
    p = save(tmp_path / "a.png", Image.fromarray(pixels))
    a = read_image(p)
    assert_rgb(a, 24, 32)
    assert np.array_equal(a, pixels)
    assert np.array_equal(read_image(str(p)), a)
    assert np.array_equal(read_image(p.read_bytes()), a)


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("TIFF", "tif"), ("BMP", "bmp"),
                                     ("WEBP", "webp")])
def test_common_formats(tmp_path, fmt, ext):
    a = read_image(save(tmp_path / f"a.{ext}", Image.fromarray(noise()), fmt))
    assert_rgb(a, 24, 32)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = noise()[..., 0]
    a = read_image(save(tmp_path / "g.png", Image.fromarray(gray, "L")))
    assert_rgb(a, 24, 32)
    assert all(np.array_equal(a[..., c], gray) for c in range(3))


def test_one_bit(tmp_path):
    im = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    a = read_image(save(tmp_path / "b.png", im))
    assert a[0, 0].tolist() == [0, 0, 0] and a[0, 1].tolist() == [255, 255, 255]


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0] = 200                       # red channel everywhere
    rgba[0, 0, 3] = 0                        # transparent -> white
    rgba[0, 1, 3] = 255                      # opaque -> itself
    rgba[0, 2, 3] = 128                      # half -> halfway to white
    a = read_image(save(tmp_path / "t.png", Image.fromarray(rgba, "RGBA")))
    assert_rgb(a, 2, 3)
    assert a[0, 0].tolist() == [255, 255, 255]
    assert a[0, 1].tolist() == [200, 0, 0]
    assert a[0, 2].tolist() == [227, 127, 127]


def test_gray_alpha(tmp_path):
    la = np.stack([np.full((2, 2), 10, np.uint8), np.array([[0, 255], [255, 255]], np.uint8)], -1)
    a = read_image(save(tmp_path / "la.png", Image.fromarray(la, "LA")))
    assert a[0, 0].tolist() == [255] * 3 and a[0, 1].tolist() == [10] * 3


def test_palette_with_and_without_transparency(tmp_path):
    im = Image.fromarray(noise()).convert("P")
    a = read_image(save(tmp_path / "p.png", im))
    assert np.array_equal(a, np.asarray(im.convert("RGB")))
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    b = read_image(save(tmp_path / "pt.png", pal, transparency=0))
    assert b[0, 0].tolist() == [255, 255, 255] and b[0, 1].tolist() == [255, 0, 0]


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in ink
    a = read_image(save(tmp_path / "c.jpg", im, quality=95))
    assert_rgb(a, 8, 16)
    assert np.abs(a[4, 8].astype(int) - [255, 0, 0]).max() < 30


def test_16bit_png_scales_by_dtype_range(tmp_path):
    im = Image.fromarray(np.array([[0, 256, 65535]], np.uint16))
    a = read_image(save(tmp_path / "16.png", im))
    assert a[0, :, 0].tolist() == [0, 1, 255]
    assert np.array_equal(a[..., 0], a[..., 2])


def test_float_tiff_min_max_and_nan(tmp_path):
    f = np.array([[np.nan, -2.0, 0.0, 2.0]], np.float32)
    a = read_image(save(tmp_path / "f.tif", Image.fromarray(f, "F")))
    assert_rgb(a, 1, 4)
    assert a[0, :, 0].tolist() == [0, 0, 128, 255]


def test_int32_tiff_min_max(tmp_path):
    im = Image.fromarray(np.array([[100_000, 200_000, 300_000]], np.int32), "I")
    a = read_image(save(tmp_path / "i.tif", im))
    assert a[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_6_swaps_shape(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    p = save(tmp_path / "r.jpg", Image.fromarray(noise(20, 40)), exif=exif.tobytes())
    assert Image.open(p).size == (40, 20)
    assert_rgb(read_image(p), 40, 20)


def test_one_pixel(tmp_path):
    a = read_image(save(tmp_path / "1.png", Image.new("RGB", (1, 1), (1, 2, 3))))
    assert a.tolist() == [[[1, 2, 3]]]


def test_multi_frame_gives_first(tmp_path):
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    for ext in ("tif", "gif"):
        p = save(tmp_path / f"m.{ext}", red, save_all=True, append_images=[blue])
        assert Image.open(p).n_frames == 2
        assert read_image(p)[0, 0].tolist() == [255, 0, 0]


# --- bad images --------------------------------------------------------------

def test_over_limit_is_refused_before_decoding(tmp_path):
    p = save(tmp_path / "big.png", Image.fromarray(noise(100, 100)))
    msg = assert_bad(p, "10000 pixels exceeds the limit of 5000", max_pixels=5000)
    assert msg == f"{p}: 10000 pixels exceeds the limit of 5000"
    assert read_image(p, max_pixels=10_000).shape == (100, 100, 3)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(10_000, 5_000))
    assert_bad(huge, f"50000000 pixels exceeds the limit of {DEFAULT_MAX_PIXELS}")


def test_decompression_bomb_header(tmp_path):
    huge = tmp_path / "bomb.png"
    huge.write_bytes(png_header_only(30_000, 30_000))
    assert_bad(huge, "900000000 pixels exceeds the limit")


def test_zero_width_header(tmp_path):
    p = tmp_path / "zero.png"
    p.write_bytes(png_header_only(0, 10))
    with pytest.raises(ImageError, match=r"^.*zero\.png: "):
        read_image(p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    assert_bad(p, "empty file")
    assert_bad(b"", "empty file")


@pytest.mark.parametrize("name,content", [
    ("notes.png", b"just some text, renamed\n"),
    ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'),
])
def test_not_an_image(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    assert_bad(p, "not an image")


def test_pdf_is_not_an_image(tmp_path):
    p = save(tmp_path / "doc.pdf", Image.new("RGB", (8, 8)))  # a real PDF
    assert_bad(p, "not an image")


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated(tmp_path, fmt, ext):
    full = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(full, fmt)
    p = tmp_path / f"cut.{ext}"
    p.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    assert_bad(p, "truncated")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file_and_folder(tmp_path):
    assert_bad(tmp_path / "nope.jpg", "not found")
    assert_bad(tmp_path, "cannot open image ([Errno 21] Is a directory")


def test_image_error_is_value_error():
    assert issubclass(ImageError, ValueError)
    with pytest.raises(ValueError, match="^<bytes>: "):
        read_image(b"garbage")


# --- find_images -------------------------------------------------------------

def test_find_images_walks_folders_sorted_and_skips_hidden(tmp_path):
    for rel in ["b.png", "A.JPG", "sub/c.tif", "sub/deeper/d.WebP", "notes.txt",
                ".hidden.png", ".cache/e.png", "sub/x.jpeg.bak"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = find_images([tmp_path])
    rel = [p.relative_to(tmp_path).as_posix() for p in found]
    assert rel == ["A.JPG", "b.png", "sub/c.tif", "sub/deeper/d.WebP"]


def test_find_images_keeps_files_as_given(tmp_path):
    odd = tmp_path / "frame.dat"
    odd.write_bytes(b"x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.png").write_bytes(b"x")
    assert find_images([odd]) == [odd]
    assert find_images(str(odd)) == [odd]
    assert find_images([odd, tmp_path / "d", odd]) == [odd, tmp_path / "d" / "a.png"]
    assert find_images([]) == []


def test_find_images_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="ghost.jpg"):
        find_images([tmp_path / "ghost.jpg"])
