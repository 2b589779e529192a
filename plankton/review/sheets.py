"""Contact sheets: crops of objects cut again from a run's frames (where
``quality.csv`` says each frame was read from), laid out in a grid with a
caption under each. Used by ``discover`` and ``compare``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from plankton.images import DEFAULT_MAX_PIXELS, ImageError, read_image

TILE, COLUMNS, MAX_TILES, MARGIN = 112, 8, 64, 0.15
CAPTION = 14
BAR, DOUBTFUL = 4, 0.5  # membership bar height (px); below DOUBTFUL the bar is orange


def _archive_of(source: str) -> str | None:
    """The archive a ``ARCHIVE/MEMBER`` key lives in, or None."""
    from plankton.run.inputs import TAR_SUFFIXES, ZIP_SUFFIXES

    p = Path(source)
    for parent in p.parents:
        if parent.name.lower().endswith(ZIP_SUFFIXES + TAR_SUFFIXES) and parent.is_file():
            return str(parent)
    return None


def read_frames(sources: dict[int, str], report: Callable[[str], None], max_pixels: int | None = DEFAULT_MAX_PIXELS
                ) -> Iterator[tuple[int, np.ndarray]]:
    """{frame row: source} → (frame row, RGB image) for each frame that can
    still be read; one line to ``report`` for each that cannot."""
    from plankton.run.inputs import iter_items, read

    archives: dict[str, dict[str, int]] = {}
    for i, src in sorted(sources.items()):
        if not src:
            report("a frame has no recorded source (a run made before quality.csv kept one)")
        elif os.path.isfile(src):
            try:
                yield i, read_image(src, max_pixels=max_pixels)
            except ImageError as e:
                report(f"{e}; its crops are left out")
        elif (archive := _archive_of(src)) is not None:
            archives.setdefault(archive, {})[src] = i
        else:
            report(f"{src}: frame not found (moved since the run?); its crops are left out")
    for archive, wanted in archives.items():
        for item in iter_items([archive]):
            if item.key in wanted and not item.error:
                try:
                    yield wanted.pop(item.key), read(item, max_pixels)
                except ImageError as e:
                    report(f"{e}; its crops are left out")
        for src in wanted:
            report(f"{src}: no longer in its archive; its crops are left out")


def cut(image: np.ndarray, box, side: int = TILE) -> np.ndarray:
    """The box with a margin of ``MARGIN`` of its longer side, fitted into a
    side×side grey tile (aspect kept)."""
    H, W = image.shape[:2]
    x1, y1, x2, y2 = box
    m = MARGIN * max(x2 - x1, y2 - y1, 1)
    a = image[max(0, int(y1 - m)):min(H, int(np.ceil(y2 + m))), max(0, int(x1 - m)):min(W, int(np.ceil(x2 + m)))]
    tile = Image.new("RGB", (side, side), (128, 128, 128))
    if a.size:
        im = Image.fromarray(np.ascontiguousarray(a)).convert("RGB")
        im.thumbnail((side, side))
        if max(im.size) < side // 2:  # tiny objects: enlarge so they can be seen
            s = (side // 2) / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
        tile.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
    return np.asarray(tile)


def crops(run, wanted: list[int], report: Callable[[str], None]) -> dict[int, np.ndarray]:
    """Detection rows of ``run`` (a ``runfiles.Run``) → their tiles, each
    frame read once."""
    from plankton.run.runfiles import frame_index

    fi = frame_index(run)
    by_frame: dict[int, list[int]] = {}
    for i in wanted:
        if fi[i] >= 0:
            by_frame.setdefault(int(fi[i]), []).append(i)
    sources = {f: run.frames[f].get("source", "") for f in by_frame}
    out = {}
    for f, image in read_frames(sources, report):
        for i in by_frame[f]:
            out[i] = cut(image, run.box(i))
    return out


def contact_sheet(tiles: list[tuple], title: str, columns: int = COLUMNS) -> Image.Image:
    """A grid of (tile, caption) or (tile, caption, membership 0–1) under a
    title line; the first ``MAX_TILES`` (callers cut only those: a sheet is
    for looking, not a full listing). A membership is drawn as a bar along
    the tile's top, full for a firm member, short and orange for a doubtful
    one, so the edge of a cluster shows before its captions are read."""
    font = ImageFont.load_default(size=11)
    tfont = ImageFont.load_default(size=14)
    shown = tiles[:MAX_TILES]
    cols = max(1, min(columns, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    cell_h = TILE + CAPTION
    width = max(cols * TILE, 320, int(np.ceil(tfont.getlength(title))) + 8)  # the title whole: it carries the cluster's cohesion
    sheet = Image.new("RGB", (width, 24 + rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 4), title, fill=(0, 0, 0), font=tfont)
    for k, (tile, caption, *strength) in enumerate(shown):
        x, y = (k % cols) * TILE, 24 + (k // cols) * cell_h
        sheet.paste(Image.fromarray(tile), (x, y))
        if strength and strength[0] is not None:
            m = min(max(float(strength[0]), 0.0), 1.0)
            draw.rectangle((x, y, x + max(1, round(m * (TILE - 1))), y + BAR - 1), fill=(40, 160, 60) if m >= DOUBTFUL else (230, 140, 20))
        draw.text((x + 2, y + TILE), caption[:20], fill=(0, 0, 0), font=font)
    return sheet


def save_sheet(path: Path, tiles: list[tuple], title: str) -> None:
    from plankton.files import atomic_path

    with atomic_path(path) as tmp:
        contact_sheet(tiles, title).save(tmp, format="PNG")


__all__ = ["read_frames", "cut", "crops", "contact_sheet", "save_sheet"]
