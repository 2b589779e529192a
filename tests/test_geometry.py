"""plankton.geometry: pure box arithmetic, checked against hand-computed values."""
import numpy as np
import pytest

from plankton.geometry import box_iou, merge_tiled, square_context_box, tile_origins


def test_box_iou_known_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2]], np.float32)
    b = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6], [0, 0, 2, 1]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 1 / 7, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(box_iou(b, a), iou.T, atol=1e-6)  # symmetric
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


@pytest.mark.parametrize("box,context,min_side", [
    ([100, 200, 140, 210], 0.25, 0.0),  # wide
    ([100, 200, 110, 260], 0.5, 0.0),  # tall
    ([50, 50, 51, 51], 0.25, 16.0),  # tiny: min_side wins
    ([0, 0, 30, 30], 0.0, 16.0),  # no context
    ([-10, 1070, 20, 1090], 0.3, 8.0),  # reaching outside the frame is allowed
])
def test_square_context_box(box, context, min_side):
    out = square_context_box(np.array([box], np.float32), context, min_side)
    assert out.shape == (1, 4) and out.dtype == np.float32
    x1, y1, x2, y2 = out[0]
    bx1, by1, bx2, by2 = box
    expected_side = max(bx2 - bx1, by2 - by1, min_side) * (1 + 2 * context)
    assert x2 - x1 == pytest.approx(expected_side, abs=1e-3)
    assert y2 - y1 == pytest.approx(expected_side, abs=1e-3)
    assert (x1 + x2) / 2 == pytest.approx((bx1 + bx2) / 2, abs=1e-3)
    assert (y1 + y2) / 2 == pytest.approx((by1 + by2) / 2, abs=1e-3)
    # The square always contains the whole box.
    assert x1 <= bx1 and y1 <= by1 and x2 >= bx2 and y2 >= by2


def test_square_context_box_many_and_empty():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 45, 15]], np.float32)
    out = square_context_box(boxes, 0.25)
    np.testing.assert_allclose(out, [[-10, -5, 20, 25], [-5, -20, 55, 40]], atol=1e-4)
    assert square_context_box(np.zeros((0, 4)), 0.25).shape == (0, 4)


def _check_axis(starts, length, tile, overlap):
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    if length <= tile:
        assert starts == [0]
        return
    assert starts[-1] == length - tile  # flush with the far edge
    assert all(0 <= s <= length - tile for s in starts)  # every window inside the frame
    for a, b in zip(starts, starts[1:]):
        assert tile - (b - a) >= min(overlap, tile - 1)  # neighbours share >= overlap pixels


@pytest.mark.parametrize("W,H,tile,overlap", [
    (1920, 1080, 640, 160), (1920, 1080, 640, 0), (1000, 700, 640, 100), (641, 640, 640, 160),
    (640, 640, 640, 160), (500, 300, 640, 160), (2000, 500, 640, 639), (3000, 1000, 512, 128),
])
def test_tile_origins(W, H, tile, overlap):
    origins = tile_origins(W, H, tile, overlap)
    assert len(origins) == len(set(origins))
    xs, ys = sorted({x for x, _ in origins}), sorted({y for _, y in origins})
    assert set(origins) == {(x, y) for x in xs for y in ys}  # a full grid
    _check_axis(xs, W, tile, overlap)
    _check_axis(ys, H, tile, overlap)
    covered = np.zeros((H, W), bool)
    for x, y in origins:
        covered[y : y + tile, x : x + tile] = True
    assert covered.all()


def test_tile_origins_frame_smaller_than_tile():
    assert tile_origins(300, 200, 640, 160) == [(0, 0)]
    assert tile_origins(640, 640, 640, 160) == [(0, 0)]


# Two 600×600 windows side by side on a 1000×600 frame, sharing x in [400, 600).
FRAME = (1000, 600)
WINDOWS = [(0, 0, 600, 600), (400, 0, 600, 600)]


def _merge(per_window, iou=0.5, windows=WINDOWS, frame=FRAME):
    boxes = [np.array([b for b, _ in w], np.float32).reshape(-1, 4) for w in per_window]
    scores = [np.array([s for _, s in w], np.float32) for w in per_window]
    return merge_tiled(boxes, scores, windows, frame, iou)


def _has(boxes, box, atol=1.0):
    return bool(len(boxes)) and bool(np.isclose(boxes, np.asarray(box, np.float32), atol=atol).all(1).any())


def test_merge_tiled_drops_box_cut_at_interior_seam():
    # Object at frame x 550..650: cut by window 0's right edge, whole in window 1.
    # The cut copy scores higher and overlaps the whole one by IoU 0.5 < nms iou 0.6,
    # so only dropping it (not NMS) leaves a single box.
    cut = ([550, 100, 600, 200], 0.9)
    whole = ([150, 100, 250, 200], 0.6)
    boxes, scores = _merge([[cut], [whole]], iou=0.6)
    assert len(boxes) == 1
    assert _has(boxes, [550, 100, 650, 200]) and scores[0] == pytest.approx(0.6)


def test_merge_tiled_drops_cut_at_left_and_vertical_seams():
    # A box touching window 1's left edge (interior seam at x=400) is cut.
    boxes, _ = _merge([[], [([0, 50, 30, 80], 0.9)]])
    assert len(boxes) == 0
    # Vertical stacking: window 1 starts at y=400, its top edge is a seam.
    windows = [(0, 0, 600, 600), (0, 400, 600, 600)]
    boxes, _ = _merge([[([10, 580, 50, 600], 0.9)], [([10, 0, 50, 40], 0.8), ([10, 100, 50, 150], 0.7)]],
                      windows=windows, frame=(600, 1000))
    assert len(boxes) == 1 and _has(boxes, [10, 500, 50, 550])


def test_merge_tiled_merges_duplicates_across_windows():
    # Object at frame x 420..480 lies whole in both windows.
    a = ([420, 300, 480, 360], 0.8)
    b = ([21, 301, 81, 361], 0.7)  # window 1 coordinates, 1 px off
    boxes, scores = _merge([[a], [b]])
    assert len(boxes) == 1
    assert _has(boxes, [420, 300, 480, 360], atol=1e-3) and scores[0] == pytest.approx(0.8)


def test_merge_tiled_keeps_boxes_at_frame_edges():
    left = ([0, 100, 40, 140], 0.5)  # window 0 left edge is the frame's edge
    top = ([100, 0, 140, 40], 0.5)  # window 0 top edge
    bottom = ([100, 560, 140, 600], 0.5)  # window 0 bottom edge (window spans the frame's height)
    right = ([560, 100, 600, 140], 0.5)  # window 1 right edge is the frame's right edge
    boxes, scores = _merge([[left, top, bottom], [right]])
    assert len(boxes) == 4
    for b in ([0, 100, 40, 140], [100, 0, 140, 40], [100, 560, 140, 600], [960, 100, 1000, 140]):
        assert _has(boxes, b, atol=1e-3)
    assert boxes[:, [0, 2]].max() <= FRAME[0] and boxes[:, [1, 3]].max() <= FRAME[1]


def test_merge_tiled_full_frame_pass_keeps_large_object():
    # A large object cut in both tiles survives through the full-frame window.
    windows = WINDOWS + [(0, 0, *FRAME)]
    per_window = [[([300, 100, 600, 400], 0.9)], [([0, 100, 300, 400], 0.9)], [([300, 100, 700, 400], 0.5)]]
    boxes, scores = _merge(per_window, windows=windows)
    assert len(boxes) == 1 and _has(boxes, [300, 100, 700, 400], atol=1e-3)


def test_merge_tiled_empty():
    boxes, scores = merge_tiled([], [], [], FRAME, 0.5)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    boxes, scores = _merge([[], []])
    assert boxes.shape == (0, 4) and scores.shape == (0,)
