"""The gate (plankton.model.gate): the cheap pass finds the committed example
frames' objects, finds nothing in empty water, and gated detection finds
what full-frame detection finds. CPU only; no data outside the repo."""
from __future__ import annotations

import numpy as np
import pytest

from plankton.model.gate import GateConfig, blob_boxes, merge_windows, occupancy, small_grey, tile_occupancy, windows
from plankton.geometry import box_iou, tile_origins

FORCED = GateConfig(max_share=2.0)  # never fall back to the full frame: exercise the windows


def _centres(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:, :2] + xyxy[:, 2:]) / 2


@pytest.fixture(scope="module")
def examples(frames_coco):
    from plankton.images import read_image

    return [(read_image(frames_coco.path_of(i)), frames_coco.xyxy_of(i).reshape(-1, 4)) for i in sorted(frames_coco.images)]


def test_every_object_of_the_examples_is_in_an_occupied_128px_tile(examples):
    cfg = GateConfig()
    for image, gt in examples:
        H, W = image.shape[:2]
        raw = occupancy(small_grey(image, cfg.scale), cfg)
        assert raw.mean() < 0.1  # sparse: the pass does not just mark everything
        blobs = np.zeros_like(raw)  # what the windows are made of: the blobs' boxes
        for x0, y0, x1, y1 in blob_boxes(raw, cfg.dilate, cfg.min_pixels):
            blobs[y0:y1, x0:x1] = True
        origins = tile_origins(W, H, 128, 0)
        occ = tile_occupancy(blobs, (W, H), origins, 128)
        for cx, cy in _centres(gt):
            k = next(k for k, (x, y) in enumerate(origins) if x <= cx < x + 128 and y <= cy < y + 128)
            assert occ[k], f"object centred at ({cx:.0f}, {cy:.0f}) is in a tile the gate calls empty"


def test_every_object_of_the_examples_lies_inside_a_window(examples):
    for image, gt in examples:
        wins = windows(image, FORCED)
        assert wins, "the example frames all hold objects"
        H, W = image.shape[:2]
        for x, y, w, h in wins:
            assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
            assert w % 32 == 0 or x + w == W, (x, w)  # stride multiples unless cut by the frame
        for x0, y0, x1, y1 in gt:
            assert any(x <= x0 and y <= y0 and x1 <= x + w and y1 <= y + h for x, y, w, h in wins), f"box {x0, y0, x1, y1} is not wholly in a window"


def test_empty_water_has_no_window_and_no_occupied_tile():
    rng = np.random.default_rng(0)
    water = np.clip(133 + rng.normal(0, 1.5, (1080, 1920, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
    cfg = GateConfig()
    assert windows(water, cfg) == []
    occ = tile_occupancy(occupancy(small_grey(water, cfg.scale), cfg), (1920, 1080), tile_origins(1920, 1080, 640, 160), 640)
    assert not occ.any()


def _one_organism() -> np.ndarray:
    rng = np.random.default_rng(1)
    frame = np.clip(133 + rng.normal(0, 1.5, (1080, 1920)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:1080, :1920]
    frame[(xx - 1500) ** 2 / 40**2 + (yy - 300) ** 2 / 25**2 <= 1] = 90  # a dark ellipse, 80×50 px
    return np.repeat(frame[..., None], 3, axis=2)


def test_one_organism_gives_one_window_around_it():
    wins = windows(_one_organism(), GateConfig())
    assert len(wins) == 1
    x, y, w, h = wins[0]
    assert x <= 1460 and x + w >= 1540 and y <= 275 and y + h >= 325
    assert w * h <= 256 * 256  # a small window, not the frame


def test_a_crowded_frame_falls_back_to_the_full_frame():
    rng = np.random.default_rng(2)
    frame = np.full((1080, 1920, 3), 133, np.uint8)
    for x, y in rng.integers(0, [1900, 1060], (400, 2)):
        frame[y: y + 12, x: x + 12] = 60
    assert windows(frame, GateConfig(max_share=0.5)) is None


def test_cut_boxes_give_way_to_the_window_that_saw_the_object_whole():
    # Window A (0..256) cuts an object at its right edge; window B (192..448) sees it whole.
    wins = [(0, 0, 256, 256), (192, 0, 256, 256)]
    a = np.array([[200, 50, 256, 100]], np.float32)  # cut by A's right edge (not the frame's)
    b = np.array([[8, 50, 108, 100]], np.float32)  # 200..300 in the frame
    boxes, scores = merge_windows([a, b], [np.array([0.9], np.float32), np.array([0.8], np.float32)], wins, (1920, 1080), iou=0.6)
    np.testing.assert_allclose(boxes, [[200, 50, 300, 100]])
    np.testing.assert_allclose(scores, [0.8])
    # With no whole view elsewhere, the cut box is kept rather than lost.
    boxes, _ = merge_windows([a], [np.array([0.9], np.float32)], wins[:1], (1920, 1080), iou=0.6)
    assert len(boxes) == 1


def test_gate_config_from_any():
    assert GateConfig.from_any(None) is None and GateConfig.from_any(False) is None
    assert GateConfig.from_any(True) == GateConfig() == GateConfig.from_any({})
    assert GateConfig.from_any({"margin": 64}).margin == 64
    assert GateConfig.from_any({"enabled": False, "margin": 64}) is None
    with pytest.raises(TypeError):
        GateConfig.from_any({"margn": 64})


@pytest.fixture(scope="module")
def bundled_detector():
    from plankton.pipeline.load import load_artifact
    from plankton.artifact.manifest import DEFAULT_MODEL_DIR

    return load_artifact(DEFAULT_MODEL_DIR, runtime="auto").detector


def test_gated_detection_finds_what_full_frame_detection_finds(bundled_detector, examples):
    # Frame 184 holds clear organisms: a gate at threshold 12 leaves about a
    # quarter of it in ~20 windows. (At that threshold the other two example
    # frames lose faint strong boxes; at the default threshold their windows
    # cover the whole frame: docs/speed-gate.md.)
    image, gt = examples[1]
    gate = GateConfig(threshold=12, max_share=2.0)
    wins = windows(image, gate)
    assert len(wins) > 5 and sum(w * h for *_, w, h in wins) < 0.5 * image.shape[0] * image.shape[1]
    full = bundled_detector.predict(image, conf=0.05, gate=False)
    gated = bundled_detector.predict(image, conf=0.05, gate=gate)
    strong = full.xyxy[full.score >= 0.3]
    assert len(strong) >= len(gt) // 2  # the bundled model does see this frame's objects
    iou = box_iou(strong, gated.xyxy)
    assert (iou.max(axis=1) >= 0.7).all(), iou.max(axis=1)
    assert abs(len(gated) - len(full)) <= max(2, len(full) // 5), (len(gated), len(full))


def test_set_gate_and_the_gate_stats(bundled_detector, examples):
    from dataclasses import replace

    det = bundled_detector
    before = det.cfg
    try:
        det.set_gate({"max_share": 2.0})
        assert det.cfg.gate == {"max_share": 2.0}
        det.gate_stats.__init__()
        det.predict(_one_organism(), conf=0.05)
        s = det.gate_stats.summary()
        assert s["frames"] == 1 and s["windows_per_frame"] == 1 and s["skipped_pixel_share"] > 0.9
        rng = np.random.default_rng(0)
        water = np.clip(133 + rng.normal(0, 1.5, (1080, 1920, 1)), 0, 255).astype(np.uint8).repeat(3, axis=2)
        assert len(det.predict(water, conf=0.05)) == 0  # an empty frame: no network call, no boxes
        assert det.gate_stats.summary()["empty_frame_share"] == 0.5
        det.set_gate(False)
        assert det.cfg.gate is None
        det.cfg = replace(before, gate={"margin": 64})
        det.set_gate(None)  # None keeps the model's
        assert det.cfg.gate == {"margin": 64}
    finally:
        det.cfg = before
