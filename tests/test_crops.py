"""plankton.model.crops: the crop every model input goes through, on synthetic frames
whose content is known pixel by pixel."""
import numpy as np
import pytest

from plankton.model.crops import CropConfig, background_colour, extract_crops

GREY = (200, 200, 200)
RED = (255, 0, 0)
FILL = (0, 0, 255)
H, W = 360, 640


def plain(colour=GREY, h=H, w=W):
    im = np.empty((h, w, 3), np.uint8)
    im[:] = colour
    return im


def noise(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_shape_and_dtype():
    cfg = CropConfig(size=48)
    boxes = np.array([[10, 10, 50, 30], [100, 100, 300, 300], [600, 300, 640, 360]], np.float32)
    crops = extract_crops(noise(), boxes, cfg)
    assert crops.shape == (3, 48, 48, 3) and crops.dtype == np.uint8


def test_empty_box_list():
    for boxes in (np.zeros((0, 4), np.float32), []):
        crops = extract_crops(noise(), boxes, CropConfig(size=32))
        assert crops.shape == (0, 32, 32, 3) and crops.dtype == np.uint8


def test_background_colour_is_the_median():
    im = plain((10, 20, 30))
    im[:50, :50] = (255, 255, 255)  # a minority of bright pixels does not move the median
    assert background_colour(im) == (10, 20, 30)


def test_crop_equals_the_frame_region_when_no_resize_is_needed():
    im = noise()
    # box 40×40 at (100, 100), context 0.25 → square region (90, 90)-(150, 150), side 60.
    cfg = CropConfig(size=60, context=0.25, min_side=0)
    crop = extract_crops(im, [[100, 100, 140, 140]], cfg, fill=FILL)[0]
    np.testing.assert_array_equal(crop, im[90:150, 90:150])


def test_partly_outside_is_padded_exactly():
    im = noise()
    # box (-10, -10)-(30, 30) → region (-20, -20)-(40, 40): 20 px of padding on the top and left.
    cfg = CropConfig(size=60, context=0.25, min_side=0)
    crop = extract_crops(im, [[-10, -10, 30, 30]], cfg, fill=FILL)[0]
    np.testing.assert_array_equal(crop[20:, 20:], im[0:40, 0:40])
    assert (crop[:20] == FILL).all() and (crop[:, :20] == FILL).all()


# Boxes partly outside each edge and corner of a 640×360 frame, and which corner
# of the crop must therefore be padding (rows, cols as slices of a 64-px crop).
TOP, BOTTOM, LEFT, RIGHT, ALL = slice(0, 3), slice(61, 64), slice(0, 3), slice(61, 64), slice(None)
EDGE_CASES = {
    "left": ([-5, 150, 25, 180], ALL, LEFT),
    "right": ([615, 150, 645, 180], ALL, RIGHT),
    "top": ([300, -5, 330, 25], TOP, ALL),
    "bottom": ([300, 335, 330, 365], BOTTOM, ALL),
    "top-left": ([-5, -5, 20, 20], TOP, LEFT),
    "top-right": ([620, -5, 645, 20], TOP, RIGHT),
    "bottom-left": ([-5, 340, 20, 365], BOTTOM, LEFT),
    "bottom-right": ([620, 340, 645, 365], BOTTOM, RIGHT),
}


@pytest.mark.parametrize("where", list(EDGE_CASES))
def test_box_at_frame_edge_is_padded_with_fill(where):
    box, rows, cols = EDGE_CASES[where]
    crop = extract_crops(plain(), [box], CropConfig(size=64), fill=FILL)[0]
    assert crop.shape == (64, 64, 3)
    assert (crop[rows, cols] == FILL).all(), "the part outside the frame is the fill colour"
    assert (crop[32, 32] == GREY).all(), "the part inside the frame is the frame"


def test_default_fill_is_the_background_so_edges_look_like_the_field():
    crop = extract_crops(plain(), [[-20, -20, 10, 10]], CropConfig(size=64))[0]
    assert (crop == GREY).all()


@pytest.mark.parametrize("box", [[5000, 5000, 5010, 5010], [-500, -500, -400, -400], [700, 100, 760, 160]])
def test_box_fully_outside_is_all_fill(box):
    crop = extract_crops(noise(), [box], CropConfig(size=32), fill=FILL)[0]
    assert (crop == FILL).all()


def test_one_pixel_box():
    im = plain((0, 0, 0))
    im[100, 200] = (255, 255, 255)
    crop = extract_crops(im, [[200, 100, 201, 101]], CropConfig(size=96, context=0.25, min_side=16))[0]
    assert crop.shape == (96, 96, 3)
    y, x = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    assert crop[y, x, 0] > 0, "the object pixel is visible"
    assert abs(y - 48) <= 4 and abs(x - 48) <= 4, "and centred"


def test_zero_size_box_does_not_crash():
    crops = extract_crops(noise(), [[100, 100, 100, 100]], CropConfig(size=32, min_side=0))
    assert crops.shape == (1, 32, 32, 3)


def test_content_centre_has_the_object_colour():
    im = plain()
    im[300:330, 500:530] = RED
    crop = extract_crops(im, [[500, 300, 530, 330]], CropConfig(size=96, context=0.25))[0]
    assert tuple(crop[48, 48]) == RED
    assert tuple(crop[2, 2]) == GREY and tuple(crop[-3, -3]) == GREY  # the context around it


def test_several_boxes_keep_their_order():
    im = plain()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    boxes = []
    for i, c in enumerate(colours):
        x = 50 + 150 * i
        im[100:140, x : x + 40] = c
        boxes.append([x, 100, x + 40, 140])
    crops = extract_crops(im, boxes, CropConfig(size=32))
    for crop, c in zip(crops, colours):
        assert tuple(crop[16, 16]) == c


def test_aspect_ratio_is_preserved():
    # A 40×10 object with context 0.25 → 60×60 region, resized to 96: the object is
    # a centred horizontal band, x in [16, 80), y in [40, 56).
    im = plain()
    im[200:210, 300:340] = RED
    crop = extract_crops(im, [[300, 200, 340, 210]], CropConfig(size=96, context=0.25, min_side=0))[0]
    is_red = (crop[..., 0] > 200) & (crop[..., 1] < 60)
    rows, cols = np.nonzero(is_red)
    assert 38 <= rows.min() and rows.max() <= 57
    assert 14 <= cols.min() and cols.max() <= 81
    width, height = cols.max() - cols.min() + 1, rows.max() - rows.min() + 1
    assert 3 <= width / height <= 5  # 4:1, as in the frame
    assert is_red[48, 20:76].all() and not is_red[:36].any() and not is_red[60:].any()


def test_huge_region_of_a_very_wide_frame_is_cropped_without_padding_it_at_full_size():
    """A box spanning a 200000×10 frame needs a 300000-px square region; it
    must not be allocated (about 270 GB), yet the frame's content must land
    in the middle band of the crop."""
    from plankton.model.crops import CropConfig, extract_crops

    image = np.full((10, 200_000, 3), 200, np.uint8)
    image[:, :100_000] = 0  # left half dark
    crop = extract_crops(image, np.array([[0, 0, 200_000, 10]], np.float32), CropConfig(size=64), fill=(255, 255, 255))[0]
    assert crop.shape == (64, 64, 3)
    rows = np.flatnonzero(crop.min(axis=(1, 2)) < 255)  # the frame is 10 px of a 300000-px region: one row
    assert 1 <= len(rows) <= 2 and abs(rows.mean() - 31.5) <= 1.5
    band = crop[rows[0]]
    assert band[15:25].max() < 50 and band[40:48].min() > 150  # dark left half, light right half
    assert crop[0].min() == 255 and crop[-1].min() == 255  # above and below the frame: fill
