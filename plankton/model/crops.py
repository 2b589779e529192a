"""Object crops: one function serves training and inference, so the two
cannot drift apart."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from plankton.geometry import square_context_box


@dataclass(frozen=True)
class CropConfig:
    """How a box becomes the embedder's input.

    size: output side in pixels (crops are size×size×3 uint8 RGB).
    context: padding on each side, as a fraction of the box's longer side.
    min_side: boxes smaller than this (pixels) are treated as this big, so
      every object up to this size is cut from the same window of
      ``min_side * (1 + 2 * context)`` frame pixels: a fixed scale, at which
      a small species stays visibly smaller than a larger look-alike.
    size_input: the embedder also takes each box's size (``size_features``),
      because a resized crop alone does not say how big the object was.
    """

    size: int = 96
    context: float = 0.25
    min_side: float = 16.0
    size_input: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


SIZE_REFERENCE = 32.0  # pixels; centres the log sizes near 0 for this microscope's objects
SIZE_FEATURES = 2  # columns of size_features


def size_features(xyxy: np.ndarray) -> np.ndarray:
    """N×4 xyxy pixel boxes → N×2 float32: log of the longer and the shorter
    side over ``SIZE_REFERENCE``. Sorted sides, not width and height,
    because plankton has no up: a rotated object keeps its features."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    wh = np.maximum(b[:, 2:] - b[:, :2], 1.0)
    return np.log(np.sort(wh, axis=1)[:, ::-1] / SIZE_REFERENCE).astype(np.float32)


def background_colour(image: np.ndarray) -> tuple[int, int, int]:
    """Median RGB of a frame (strided, so it stays cheap on 1920×1080):
    used to pad crops that reach past the frame's edge, because black or
    mirrored borders look like objects on a bright field."""
    sample = image[::16, ::16].reshape(-1, image.shape[-1])
    return tuple(int(v) for v in np.median(sample, axis=0))


MAX_CANVAS = 4096  # larger regions (only in odd, very wide or tall frames) are never padded at full size


def _crop_large(image: np.ndarray, region: tuple[int, int, int], size: int, fill) -> np.ndarray:
    """The crop of a square region too large to pad at full resolution:
    resize only the part inside the frame and place it on a size×size fill."""
    x1, y1, side = region
    H, W = image.shape[:2]
    out = np.empty((size, size, 3), np.uint8)
    out[:] = fill
    sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x1 + side, W), min(y1 + side, H)
    if sx2 <= sx1 or sy2 <= sy1:
        return out
    s = size / side
    dx, dy = min(int((sx1 - x1) * s), size - 1), min(int((sy1 - y1) * s), size - 1)
    dw, dh = max(1, min(round((sx2 - sx1) * s), size - dx)), max(1, min(round((sy2 - sy1) * s), size - dy))
    out[dy : dy + dh, dx : dx + dw] = cv2.resize(image[sy1:sy2, sx1:sx2], (dw, dh), interpolation=cv2.INTER_AREA)
    return out


def extract_crops(image: np.ndarray, xyxy: np.ndarray, cfg: CropConfig, fill=None) -> np.ndarray:
    """Crops of the boxes of one frame.

    image: H×W×3 uint8 RGB. xyxy: N×4 pixels. Returns N×S×S×3 uint8 with
    S = cfg.size: the square context region of each box (see
    ``geometry.square_context_box``), padded with ``fill`` (default: the
    frame's background colour) where it leaves the frame, then resized
    (area filter when shrinking, bilinear when enlarging).
    """
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    out = np.empty((len(xyxy), cfg.size, cfg.size, 3), np.uint8)
    if len(xyxy) == 0:
        return out
    if fill is None:
        fill = background_colour(image)
    H, W = image.shape[:2]
    regions = np.round(square_context_box(xyxy, cfg.context, cfg.min_side)).astype(int)
    for i, (x1, y1, x2, y2) in enumerate(regions):
        side = max(x2 - x1, 1)
        if side > MAX_CANVAS:
            out[i] = _crop_large(image, (x1, y1, side), cfg.size, fill)
            continue
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = fill
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x1 + side, W), min(y1 + side, H)
        if sx2 > sx1 and sy2 > sy1:
            canvas[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
        interp = cv2.INTER_AREA if side > cfg.size else cv2.INTER_LINEAR
        out[i] = cv2.resize(canvas, (cfg.size, cfg.size), interpolation=interp)
    return out


def dihedral_views(crops: np.ndarray) -> np.ndarray:
    """N×S×S×3 crops → 8N: the 4 rotations by 90° of each crop and of its
    mirror image (plankton has no up), view-major: the first N are the
    crops themselves."""
    views = [np.rot90(c, k, axes=(1, 2)) for c in (crops, crops[:, :, ::-1]) for k in range(4)]
    return np.ascontiguousarray(np.concatenate(views))
