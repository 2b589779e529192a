"""Reading images from untrusted files into H×W×3 uint8 RGB arrays.

Every failure is an ``ImageError`` with a one-line message naming the file,
so a batch run can report bad files and carry on.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import struct
import warnings
import zlib
from pathlib import Path
from typing import Iterable, Union

import numpy as np
from PIL import Image, ImageOps

DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]

# Pillow's plugins raise a zoo of exception types on corrupt input.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError,
                  TypeError, KeyError, struct.error, zlib.error)
_ORIENTATION = 0x0112


class ImageError(ValueError):
    """A file that cannot be used as an image; the message names the file."""


def _name(source: Source, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(source)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def _quiet():
    # We enforce our own pixel limit, and warnings such as "Corrupt EXIF
    # data" end in either an array or an ImageError anyway.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        yield


def _bomb_message(name: str, err: Exception, limit: int | None) -> str:
    # Pillow refuses outright above twice Image.MAX_IMAGE_PIXELS.
    pixels = re.search(r"\((\d+) pixels\)", str(err))
    limit = min(limit or 2 * Image.MAX_IMAGE_PIXELS, 2 * Image.MAX_IMAGE_PIXELS)
    return f"{name}: {pixels[1] if pixels else 'too many'} pixels exceeds the limit of {limit}"


def _pil_open():
    """Pillow's own ``Image.open``: Ultralytics replaces it with one that
    pip-installs a HEIF plugin whenever a file is not an image."""
    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)


def _open(source: Source, name: str, limit: int | None = None) -> Image.Image:
    """Open lazily (header only); the caller must close the image."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(bytes(source))
        empty = not fp.getbuffer().nbytes
    else:
        fp = Path(source)
        empty = fp.is_file() and fp.stat().st_size == 0
    if empty:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with _quiet():
            return _pil_open()(fp)
    except Image.DecompressionBombError as e:
        raise ImageError(_bomb_message(name, e, limit)) from None
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (cannot identify image file)") from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name}: cannot open image ({_one_line(e)})") from None


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_ORIENTATION, 1))
    except _DECODE_ERRORS:
        return 1  # unreadable EXIF is not worth rejecting the pixels for


def _minmax_to_uint8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = a[finite].min(), a[finite].max()
    scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode → H×W×3 uint8 RGB; alpha is composited on white."""
    mode = im.mode
    if mode.startswith("I;16"):  # by dtype range, not min-max, so exposure survives
        gray = (np.asarray(im).astype(np.uint16) >> 8).astype(np.uint8)
    elif mode in ("I", "F"):
        gray = _minmax_to_uint8(np.asarray(im))
    else:
        has_alpha = im.has_transparency_data
        want = "RGBA" if has_alpha else "RGB"
        rgba = np.asarray(im if im.mode == want else im.convert(want))  # convert() to its own mode is a full copy
        if not has_alpha:
            return rgba
        rgb = rgba[..., :3].astype(np.uint32)
        alpha = rgba[..., 3:].astype(np.uint32)
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def read_image(source: Source, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> np.ndarray:
    """Decode a path or encoded bytes into an H×W×3 uint8 RGB C-contiguous array.

    EXIF orientation is applied; multi-frame files give their first frame.
    ``name`` is used in error messages (defaults to the path, or "<bytes>").
    """
    name = _name(source, name)
    with _open(source, name, max_pixels) as im:
        w, h = im.size
        if w <= 0 or h <= 0:
            raise ImageError(f"{name}: empty image ({w}x{h})")
        if max_pixels is not None and w * h > max_pixels:
            raise ImageError(f"{name}: {w * h} pixels exceeds the limit of {max_pixels}")
        try:
            with _quiet():
                im.seek(0)
                im.load()  # decode everything now so truncation raises here
                # exif_transpose copies the whole frame even when there is
                # nothing to turn (most frames): ask first (bit-identical).
                arr = _to_rgb(ImageOps.exif_transpose(im) if _orientation(im) != 1 else im)
        except _DECODE_ERRORS as e:
            raise ImageError(f"{name}: cannot decode image ({_one_line(e)})") from None
    return np.ascontiguousarray(arr, dtype=np.uint8)


def find_images(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of image paths.

    Files are kept as given whatever their extension, so a bad file is
    reported when read instead of silently skipped. Folders are searched
    recursively for IMAGE_EXTENSIONS (any case), skipping hidden entries,
    in sorted order. Duplicates are dropped, first occurrence wins.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: dict[Path, None] = {}
    for p in map(Path, paths):
        if p.is_dir():
            hits = []
            for folder, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                hits += [Path(folder) / f for f in files
                         if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
            found.update(dict.fromkeys(sorted(hits)))
        elif p.exists():
            found[p] = None
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return list(found)
