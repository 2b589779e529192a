"""The gate: find the occupied parts of a frame with a cheap pass, so the
detector runs only there (issue 31: most of a frame is empty water).

Brightfield frames have a nearly uniform background, and every organism is
darker or lighter than it. So: downscale the frame (grey), subtract a
background estimate, threshold, dilate, and take the bounding boxes of the
connected blobs, widened by a margin, as the windows the detector sees.

Windows hold whole blobs rather than being cells of a fixed tile grid:
an object larger than a grid's overlap (this data has objects up to
~700 px) is then seen whole by the window of its own blob, so no
full-frame pass is needed. Windows may overlap (merging every overlapping
pair snowballs into the whole frame); a box cut by one window's edge is
dropped when another window's box contains it (``Detector``). When the
windows would cover most of the frame, one full-frame pass is cheaper and
``windows`` says so (None).

Everything here is pure numpy/OpenCV on arrays; no file is read.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class GateConfig:
    """scale: downscale factor of the cheap pass (4: 1920×1080 → 480×270).
    threshold: grey levels |frame − background| must exceed (this data's
    water varies by ~1 level at 1/4 scale; most organisms' edges by tens, but
    the faintest annotated ones by only 5–6). blur: side of the
    median filter, in small-frame pixels, that estimates the background
    (odd; large against organisms, so it follows illumination only).
    dilate: small-frame pixels added around occupied pixels before blobs
    are found, joining the parts of one organism. min_pixels: blobs with
    fewer occupied pixels are ignored (1: a thin filament of the example
    frames shows as a single pixel above threshold at 1/4 scale). margin: full-resolution
    pixels added around each blob's box (faint appendages, context).
    round_to: windows are squares of side round_to·2^k (a stride
    multiple): few distinct shapes batch well and keep the runtimes'
    shape caches warm.
    max_share: above this share of the frame's area in windows, run the
    full frame instead (per-call overhead makes many windows dearer)."""

    scale: int = 4
    threshold: float = 4.0
    blur: int = 31
    dilate: int = 2
    min_pixels: int = 1
    margin: int = 32
    round_to: int = 128
    max_share: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_any(cls, value) -> GateConfig | None:
        """None/False → None (no gate); True or {} → the defaults; a dict →
        those fields ({"enabled": false} → None; an unknown key is an
        error, so a typo cannot silently drop a setting); a GateConfig →
        itself."""
        if value is None or value is False:
            return None
        if value is True or isinstance(value, cls):
            return cls() if value is True else value
        if isinstance(value, dict):
            value = dict(value)
            return cls(**value) if value.pop("enabled", True) else None
        raise TypeError(f"gate must be a dict, bool or GateConfig, not {type(value).__name__}")


def small_grey(image: np.ndarray, scale: int) -> np.ndarray:
    """H×W×3 uint8 RGB (or H×W grey) → (H/scale)×(W/scale) uint8 grey,
    area-averaged (averaging also suppresses sensor noise)."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if scale <= 1:
        return np.ascontiguousarray(grey)
    h, w = grey.shape[:2]
    return cv2.resize(grey, (max(1, w // scale), max(1, h // scale)), interpolation=cv2.INTER_AREA)


def occupancy(grey: np.ndarray, cfg: GateConfig) -> np.ndarray:
    """h×w uint8 grey (already downscaled) → h×w bool, True where the frame
    differs from its background by more than ``cfg.threshold`` (before
    dilation: ``blob_boxes`` counts these pixels)."""
    k = min(cfg.blur, (min(grey.shape[:2]) - 1) // 2 * 2 + 1)  # medianBlur needs an odd size that fits
    background = cv2.medianBlur(grey, k) if k >= 3 else np.full_like(grey, int(np.median(grey)))
    return cv2.absdiff(grey, background) > cfg.threshold


def blob_boxes(raw: np.ndarray, dilate: int, min_pixels: int = 1) -> np.ndarray:
    """h×w bool occupied pixels → N×4 int xyxy (exclusive end) boxes of the
    8-connected blobs of the mask dilated by ``dilate`` pixels (joining the
    pieces of one faint organism) that hold at least ``min_pixels``
    occupied pixels (a lone pixel is sensor noise or dust)."""
    mask = raw.astype(np.uint8)
    if dilate > 0:
        mask = cv2.dilate(mask, np.ones((2 * dilate + 1,) * 2, np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    counts = np.bincount(labels[raw], minlength=n)
    s = stats[1:][counts[1:] >= max(min_pixels, 1)]
    x, y, w, h = (s[:, i] for i in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
    return np.stack([x, y, x + w, y + h], axis=1).astype(np.int64) if len(s) else np.zeros((0, 4), np.int64)


def merge_cheaper(boxes: np.ndarray, round_to: int, frame_size: tuple[int, int]) -> np.ndarray:
    """N×4 int xyxy (exclusive ends) windows → M×4, M ≤ N: two windows that
    overlap are replaced by their (rounded) union whenever that union has
    no more pixels than the two cost apart, until no pair qualifies.
    Unions of distant blobs would snowball into the whole frame, so
    windows may stay overlapping; the detector then drops boxes cut by a
    window's edge that another window saw whole."""
    W, H = frame_size
    b = [_rounded(x, round_to, W, H) for x in boxes]
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    changed = True
    while changed and len(b) > 1:
        changed = False
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                p, q = b[i], b[j]
                if p[0] < q[2] and q[0] < p[2] and p[1] < q[3] and q[1] < p[3]:
                    u = _rounded([min(p[0], q[0]), min(p[1], q[1]), max(p[2], q[2]), max(p[3], q[3])], round_to, W, H)
                    if area(u) <= area(p) + area(q):
                        b[i] = u
                        del b[j]
                        changed = True
                        break
            if changed:
                break
    return np.array(b, np.int64).reshape(-1, 4)


def _rounded(box, r: int, W: int, H: int) -> list[int]:
    """xyxy grown to a square of side ``r``·2^k (the smallest that holds
    it), inside the frame (a side longer than the frame's is cut to it).
    Few distinct shapes let windows of many frames share one batch, and
    a network call on a small input costs about as much as on a 256 px
    one (OpenVINO INT8, measured: 26 ms at 128² and at 256², batch 1)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    side = r
    while side < max(x1 - x0, y1 - y0):
        side *= 2
    fx, fy = _fit(x0, x1, side, W), _fit(y0, y1, side, H)
    return [fx[0], fy[0], fx[1], fy[1]]


def _fit(lo: int, hi: int, side: int, length: int) -> tuple[int, int]:
    """Grow [lo, hi) to ``side`` about its centre, shifted to stay in [0, length)."""
    side = min(side, length)
    start = max(0, min((lo + hi - side) // 2, length - side))
    return start, start + side


def windows(image: np.ndarray, cfg: GateConfig) -> list[tuple[int, int, int, int]] | None:
    """H×W×3 uint8 RGB frame → the windows (x, y, w, h) in frame pixels
    where the detector should look: [] for an empty frame, None when the
    windows would cover more than ``cfg.max_share`` of the frame (run the
    full frame). Windows lie inside the frame and may overlap; they are
    squares of side ``cfg.round_to``·2^k unless clipped by the frame."""
    H, W = image.shape[:2]
    return windows_from_grey(small_grey(image, cfg.scale), (W, H), cfg)


def windows_from_grey(grey: np.ndarray, frame_size: tuple[int, int], cfg: GateConfig) -> list[tuple[int, int, int, int]] | None:
    """As ``windows``, from an already downscaled h×w uint8 grey frame (for
    instance a reduced JPEG decode) of a frame of ``frame_size`` (W, H)."""
    W, H = frame_size
    sx, sy = W / grey.shape[1], H / grey.shape[0]
    boxes = blob_boxes(occupancy(grey, cfg), cfg.dilate, cfg.min_pixels).astype(np.float64)
    if not len(boxes):
        return []
    boxes = boxes * [sx, sy, sx, sy] + [-cfg.margin, -cfg.margin, cfg.margin, cfg.margin]
    boxes = np.clip(np.round(boxes), 0, [W, H, W, H]).astype(np.int64)
    boxes = merge_cheaper(boxes, max(int(cfg.round_to), 1), (W, H))
    area = float(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sum())
    if area > cfg.max_share * W * H:
        return None
    return [(int(x0), int(y0), int(x1 - x0), int(y1 - y0)) for x0, y0, x1, y1 in boxes]


def tile_occupancy(mask: np.ndarray, frame_size: tuple[int, int], origins: list[tuple[int, int]], tile: int) -> np.ndarray:
    """h×w bool occupancy of a W×H frame, and tile×tile windows at
    ``origins`` (frame pixels) → len(origins) bool: which tiles hold an
    occupied pixel. For measuring how much of a tile grid is empty water."""
    W, H = frame_size
    sx, sy = mask.shape[1] / W, mask.shape[0] / H
    out = np.zeros(len(origins), bool)
    for i, (x, y) in enumerate(origins):
        out[i] = mask[int(y * sy): int(np.ceil(min(y + tile, H) * sy)), int(x * sx): int(np.ceil(min(x + tile, W) * sx))].any()
    return out


def batch_size(h: int, w: int, pixels: int = 1 << 21) -> int:
    """Windows of h×w per network call: about a 1920×1088 frame's pixels,
    which bounds the memory a crowded frame's batch needs."""
    return max(1, pixels // max(h * w, 1))


@dataclass
class GateStats:
    """What the gate did over the frames it saw, for benchmarks: frames,
    frames run whole (no gate, or the windows would cover too much),
    frames with no window at all, windows, and pixels the network saw."""

    frames: int = 0
    full_frames: int = 0
    empty_frames: int = 0
    windows: int = 0
    frame_pixels: int = 0
    window_pixels: int = 0
    seconds: float = 0.0  # time spent in the cheap pass itself

    def add(self, images: list[np.ndarray], plans: list, seconds: float = 0.0) -> None:
        for im, plan in zip(images, plans):
            px = im.shape[0] * im.shape[1]
            self.frames, self.frame_pixels = self.frames + 1, self.frame_pixels + px
            if plan is None:
                self.full_frames, self.window_pixels = self.full_frames + 1, self.window_pixels + px
            else:
                self.empty_frames += not plan
                self.windows += len(plan)
                self.window_pixels += sum(w * h for _, _, w, h in plan)
        self.seconds += seconds

    def summary(self) -> dict:
        """Shares of the frames' pixels skipped, of frames run whole and of empty frames."""
        n = max(self.frames, 1)
        return {"frames": self.frames, "skipped_pixel_share": round(1 - self.window_pixels / max(self.frame_pixels, 1), 4),
                "full_frame_share": round(self.full_frames / n, 4), "empty_frame_share": round(self.empty_frames / n, 4),
                "windows_per_frame": round(self.windows / n, 2), "gate_ms_per_frame": round(1000 * self.seconds / n, 2)}


def merge_windows(boxes: list[np.ndarray], scores: list[np.ndarray], wins: list[tuple[int, int, int, int]],
                  frame_size: tuple[int, int], iou: float, contained: float = 0.6, seam: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-window detections → frame detections (M×4 xyxy, M scores).

    boxes[i]: Ni×4 xyxy in window i's pixels, scores[i]: Ni, wins[i]:
    (x, y, w, h). A box touching an edge of its window that is not a frame
    edge may be a piece of an object the neighbouring window saw whole: it
    is dropped when at least ``contained`` of its area lies in an uncut
    box of another window, and kept otherwise (a window's margin can be
    too small for a faint appendage: losing the object would cost recall).
    Then class-agnostic NMS at ``iou`` removes the twice-seen."""
    import torch
    import torchvision

    from plankton.geometry import contained_share

    W, H = frame_size
    all_b, all_s, all_cut, all_w = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)], [np.zeros(0, bool)], [np.zeros(0, int)]
    for k, (b, s, (x, y, w, h)) in enumerate(zip(boxes, scores, wins)):
        b = np.asarray(b, np.float32).reshape(-1, 4)
        cut = ((b[:, 0] <= seam) & (x > 0)) | ((b[:, 1] <= seam) & (y > 0)) | ((b[:, 2] >= w - seam) & (x + w < W)) | ((b[:, 3] >= h - seam) & (y + h < H))
        all_b.append(b + np.array([x, y, x, y], np.float32))
        all_s.append(np.asarray(s, np.float32).reshape(-1))
        all_cut.append(cut)
        all_w.append(np.full(len(b), k))
    b, s, cut, win = (np.concatenate(a) for a in (all_b, all_s, all_cut, all_w))
    if cut.any() and (~cut).any():
        share = contained_share(b[cut], b[~cut])
        share[win[cut][:, None] == win[~cut][None, :]] = 0  # only another window's view replaces a cut box
        drop = np.flatnonzero(cut)[(share >= contained).any(axis=1)]
        keep = np.setdiff1d(np.arange(len(b)), drop)
        b, s = b[keep], s[keep]
    if len(b) == 0:
        return b, s
    keep = torchvision.ops.nms(torch.from_numpy(b), torch.from_numpy(s), iou).numpy()
    return b[keep], s[keep]
