"""Pure box geometry. Boxes are N×4 float arrays, xyxy pixels."""
from __future__ import annotations

import numpy as np
import torch
import torchvision


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of N×4 and M×4 xyxy boxes → N×M float32."""
    a = torch.as_tensor(np.asarray(a, np.float32).reshape(-1, 4))
    b = torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4))
    return torchvision.ops.box_iou(a, b).numpy()


def square_context_box(xyxy: np.ndarray, context: float, min_side: float = 0.0) -> np.ndarray:
    """The square crop region around each box.

    xyxy: N×4 pixels. The square is centred on the box, its side is
    ``max(w, h, min_side) * (1 + 2 * context)``, so the object keeps its
    aspect ratio and some surroundings. Returns N×4 float32 xyxy pixels,
    possibly reaching outside the frame (the crop pads there).
    """
    b = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    centre = (b[:, :2] + b[:, 2:]) / 2
    side = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]), min_side)
    half = (side * (1 + 2 * context) / 2)[:, None]
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def tile_origins(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners of tile×tile windows covering a width×height frame
    with at least ``overlap`` pixels shared between neighbours. The last
    row and column are flush with the frame's edge."""

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        step = max(tile - overlap, 1)
        n = int(np.ceil((length - tile) / step)) + 1
        return sorted({min(i * step, length - tile) for i in range(n)})

    return [(x, y) for y in starts(height) for x in starts(width)]


def merge_tiled(
    boxes: list[np.ndarray],
    scores: list[np.ndarray],
    windows: list[tuple[int, int, int, int]],
    frame_size: tuple[int, int],
    iou: float,
    seam_margin: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-window detections into frame coordinates.

    boxes[i]: Ni×4 xyxy pixels inside window i, scores[i]: Ni; windows[i] is
    (x, y, w, h) of the window in the frame; frame_size is (W, H). A box
    touching a window edge that is not a frame edge was cut by the seam; the
    overlap means a neighbouring window (or a full-frame pass, given as the
    window (0, 0, W, H)) saw it whole, so cut boxes are dropped before
    class-agnostic NMS at ``iou``. Returns (M×4 xyxy pixels, M scores).
    """
    W, H = frame_size
    keep_boxes, keep_scores = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)]
    for b, s, (ox, oy, tw, th) in zip(boxes, scores, windows):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        s = np.asarray(s, np.float32).reshape(-1)
        cut = np.zeros(len(b), bool)
        if ox > 0:
            cut |= b[:, 0] <= seam_margin
        if oy > 0:
            cut |= b[:, 1] <= seam_margin
        if ox + tw < W:
            cut |= b[:, 2] >= tw - seam_margin
        if oy + th < H:
            cut |= b[:, 3] >= th - seam_margin
        keep_boxes.append(b[~cut] + np.array([ox, oy, ox, oy], np.float32))
        keep_scores.append(s[~cut])
    b = np.concatenate(keep_boxes)
    s = np.concatenate(keep_scores)
    if len(b) == 0:
        return b, s
    keep = torchvision.ops.nms(torch.from_numpy(b), torch.from_numpy(s), iou).numpy()
    return b[keep], s[keep]


def contained_share(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """N×4 and M×4 xyxy boxes → N×M float32: the share of each box of
    ``a``'s area that lies inside each box of ``b`` (1 when fully inside)."""
    a = np.asarray(a, np.float32).reshape(-1, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = np.clip((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-6, None)
    return (w * h / area[:, None]).astype(np.float32)


def fragments(xyxy: np.ndarray, labels, min_share: float) -> np.ndarray:
    """N×4 xyxy boxes and N labels → N bool, True for a fragment: a box
    with at least ``min_share`` of its area inside a larger box of the same
    label. A filament cut into pieces is one object, and NMS (which looks
    at IoU) keeps a piece whose IoU with the whole is small. ``min_share``
    above 1 finds none."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    if len(b) < 2 or min_share > 1:
        return np.zeros(len(b), bool)
    labels = np.asarray(labels, dtype=object)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = contained_share(b, b) >= min_share
    return (inside & (labels[:, None] == labels[None, :]) & (area[None, :] > area[:, None])).any(axis=1)


def match_boxes(det_xyxy: np.ndarray, det_score: np.ndarray, gt_xyxy: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """One frame: N candidate boxes and K annotated boxes (xyxy pixels) → N
    int, the annotated box each candidate takes (greedy by score, one each,
    IoU ≥ ``iou``), else -1."""
    out = np.full(len(det_xyxy), -1, np.int64)
    if not len(det_xyxy) or not len(gt_xyxy):
        return out
    ious, used = box_iou(det_xyxy, gt_xyxy), np.zeros(len(gt_xyxy), bool)
    for i in np.argsort(-np.asarray(det_score), kind="stable"):
        row = np.where(used, -1.0, ious[i])
        j = int(row.argmax())
        if row[j] >= iou:
            out[i], used[j] = j, True
    return out
