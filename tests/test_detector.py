"""plankton.model.detector with a random-weight YOLOv8n (tiny_cascade): preprocessing,
box scaling back to the frame, batching and tiled inference."""
import numpy as np
import pytest

from plankton.model.detector import Detector, DetectorConfig, build_detection_model
from plankton.results import Detections


def assert_valid(det, width, height, conf=0.0):
    assert isinstance(det, Detections)
    assert det.xyxy.dtype == np.float32 and det.score.dtype == np.float32
    assert det.xyxy.shape == (len(det), 4) and det.score.shape == (len(det),)
    # Every caller passes a low conf (the random detector scores most boxes ~0.003):
    # an empty result would make the bounds below vacuous, so it is a failure.
    assert len(det) > 0, "expected boxes from the random detector at this conf"
    assert (det.xyxy[:, 0] >= 0).all() and (det.xyxy[:, 1] >= 0).all()
    assert (det.xyxy[:, 2] <= width).all() and (det.xyxy[:, 3] <= height).all()
    assert (det.xyxy[:, 2] >= det.xyxy[:, 0]).all() and (det.xyxy[:, 3] >= det.xyxy[:, 1]).all()
    assert (det.score >= conf).all() and (det.score <= 1).all()


@pytest.fixture(scope="module")
def frames(frames_coco):
    from plankton.images import read_image

    return [read_image(frames_coco.path_of(i)) for i in sorted(frames_coco.images)[:2]]


def test_predict_on_a_real_frame(tiny_cascade, frame):
    image, _ = frame
    det = tiny_cascade.detector.predict(image, conf=0.001)
    assert len(det) > 0, "at conf 0.001 the random detector reports boxes"
    assert_valid(det, 1920, 1080, conf=0.001)
    assert len(det) <= tiny_cascade.detector.cfg.max_det


def test_higher_conf_gives_a_subset(tiny_cascade, frame):
    image, _ = frame
    low = tiny_cascade.detector.predict(image, conf=0.001)
    levels = np.unique(low.score)
    assert len(levels) >= 2
    high_conf = float(levels[-2] + levels[-1]) / 2  # keeps only the top-scoring boxes
    high = tiny_cascade.detector.predict(image, conf=high_conf)
    assert 0 < len(high) < len(low) and (high.score >= high_conf).all()
    assert len(high) == int((low.score >= high_conf).sum())
    low_set = {tuple(np.round(b, 2)) for b in low.xyxy}
    assert all(tuple(np.round(b, 2)) in low_set for b in high.xyxy)


def test_plain_grey_frame(tiny_cascade):
    grey = np.full((1080, 1920, 3), 128, np.uint8)
    det = tiny_cascade.detector.predict(grey, conf=0.001)
    assert_valid(det, 1920, 1080, conf=0.001)


@pytest.mark.parametrize("shape", [(360, 640), (300, 500), (700, 333)])
def test_non_standard_sizes_map_back_to_the_frame(tiny_cascade, frame, shape):
    image = np.ascontiguousarray(frame[0][: shape[0], : shape[1]])
    det = tiny_cascade.detector.predict(image, conf=0.001)
    assert_valid(det, shape[1], shape[0], conf=0.001)


@pytest.mark.parametrize("tile", [0, 640, 512])
def test_tiled_and_untiled_stay_inside_the_frame(tiny_cascade, frame, tile):
    image = np.ascontiguousarray(frame[0][::2, ::2])  # 960×540: 2×1 tiles of 640, 2×2 of 512
    det = tiny_cascade.detector.predict(image, conf=0.001, tile=tile)
    assert_valid(det, 960, 540, conf=0.001)
    assert len(det) <= tiny_cascade.detector.cfg.max_det
    if tile:
        assert (np.diff(det.score) <= 0).all(), "tiled output is sorted by score"


def test_tile_larger_than_frame_stride_multiple(tiny_cascade, frame):
    image = np.ascontiguousarray(frame[0][:480, :640])  # shorter side below the tile
    det = tiny_cascade.detector.predict(image, conf=0.001, tile=640)
    assert_valid(det, 640, 480, conf=0.001)


@pytest.mark.parametrize("height, width, tile", [(300, 400, 640), (540, 960, 600), (375, 500, 640)])
def test_tiles_whose_size_is_not_a_stride_multiple(tiny_cascade, frame, height, width, tile):
    image = np.ascontiguousarray(frame[0][:height, :width])
    det = tiny_cascade.detector.predict(image, conf=0.001, tile=tile)
    assert_valid(det, width, height, conf=0.001)


def test_predict_batch_equals_per_frame(tiny_cascade, frames):
    small = np.ascontiguousarray(frames[0][:360, :640])
    batch = tiny_cascade.detector.predict_batch([frames[0], small, frames[1]], conf=0.001)
    assert len(batch) == 3
    for image, det in zip([frames[0], small, frames[1]], batch):
        one = tiny_cascade.detector.predict(image, conf=0.001)
        assert len(det) == len(one)
        order_a, order_b = np.lexsort(det.xyxy.T[::-1]), np.lexsort(one.xyxy.T[::-1])
        np.testing.assert_allclose(det.xyxy[order_a], one.xyxy[order_b], atol=0.5)
        np.testing.assert_allclose(det.score[order_a], one.score[order_b], atol=1e-4)
    assert tiny_cascade.detector.predict_batch([], conf=0.001) == []


def test_config_round_trip_and_default_conf(frame):
    cfg = DetectorConfig(architecture="yolov8n.yaml", imgsz=320, conf=0.002, max_det=5)
    d = cfg.to_dict()
    assert d["names"] == ["plankton"] and d["imgsz"] == 320
    import torch

    torch.manual_seed(0)
    det = Detector(build_detection_model("yolov8n.yaml"), cfg).predict(frame[0])  # the config's conf and max_det
    assert_valid(det, 1920, 1080, conf=0.002)
    assert len(det) == 5  # more than 5 boxes score above 0.002: max_det keeps exactly 5
