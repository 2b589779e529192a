"""Display crops: a filament stays a filament (aspect kept, visible width),
exemplars keep their shape on a square, and the scale bar has the length
it says. The embedder's crops are not these (``test_crops``)."""
from __future__ import annotations

import numpy as np

from plankton.sample.ecotaxa import object_crop
from plankton.thumbs import display_crop, fit, letterbox, scale_bar


def _filament_frame():
    """A bright field with a dark filament 400 px long and 8 px thick."""
    frame = np.full((600, 800, 3), 220, np.uint8)
    frame[296:304, 200:600] = 40
    return frame, (200, 296, 600, 304)


def test_filament_crop_shows_the_filament():
    frame, box = _filament_frame()
    small = display_crop(object_crop(frame, box), 120)
    h, w = small.shape[:2]
    assert w == 120 and 20 <= h <= 60  # the box's shape with padding, not a square
    dark = small.mean(-1) < 120
    rows = np.flatnonzero(dark.any(1))
    cols = np.flatnonzero(dark.any(0))
    assert len(rows) >= 2, "the filament is at least two pixels thick on screen"
    assert cols.max() - cols.min() + 1 >= 0.6 * w, "the filament spans most of the crop"


def test_the_square_embedder_window_loses_it():
    """Why display crops exist: the same filament squeezed through a square
    window at thumbnail size is a faint line of about one pixel."""
    from plankton.model.crops import CropConfig, extract_crops

    frame, box = _filament_frame()
    square = extract_crops(frame, np.array([box], np.float32), CropConfig(size=48))[0]
    assert (square.mean(-1) < 120).any(1).sum() <= 2


def test_letterbox_keeps_shape_on_a_square():
    frame, box = _filament_frame()
    sq = letterbox(object_crop(frame, box), 48, (220, 220, 220))
    assert sq.shape == (48, 48, 3)
    dark = sq.mean(-1) < 120
    assert dark.any(0).sum() >= 30 and dark.any(1).sum() <= 4  # long and thin, as the object


def test_scale_bar_length():
    img = np.full((40, 120, 3), 200, np.uint8)
    out = scale_bar(img, 0.5)  # 0.5 µm per pixel: 120 px = 60 µm → a 20 µm bar of 40 px
    white = (out == 255).all(-1)
    bar_rows = [r for r in range(out.shape[0]) if white[r].sum() >= 30]
    assert bar_rows and white[bar_rows[0]].sum() == 41  # 40 px, both ends drawn
    assert np.array_equal(scale_bar(img, 0), img)  # no scale, no bar
    assert fit(img, 60)[0].shape == (20, 60, 3)


def test_a_pale_filament_is_made_visible():
    """A brightfield filament a few grey levels off its background (as
    Oscillatoria is) stands out in the display crop; a flat crop does not
    turn into noise."""
    frame = np.full((600, 800, 3), 200, np.uint8)
    frame[298:302, 200:600] = 194  # 6 levels darker
    small = display_crop(object_crop(frame, (200, 298, 600, 302)), 120)
    grey = small.mean(-1)
    assert np.percentile(grey, 99.5) - grey.min() >= 15  # 3 × 6 levels at least, after resizing
    flat = display_crop(np.full((50, 80, 3), 128, np.uint8), 120)
    assert flat.min() == flat.max()
    assert np.array_equal(display_crop(frame[:50, :80], 120, stretch=False), fit(frame[:50, :80], 120)[0])
