"""The cascade kept on one device, for ``benchmarks.gpu``: JPEG bytes in,
objects out, with no per-frame work on the CPU. Each stage reproduces what
the CPU path does (``Detector._infer``, ``extract_crops``,
``Identifier.embed_crops``, ``Prototypes.similarity``) in batched tensor
form, and the open-set decision is ``prototypes.decide`` itself. In fp32
on the CPU it gives the CPU path's objects bit for bit (the parity test
holds it to that); on CUDA the networks run in fp16, channels-last."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.ops import nms

from plankton.pipeline.cascade import shifted_thresholds
from plankton.model.crops import SIZE_REFERENCE, CropConfig
from plankton.model.prototypes import decide

PAD_VALUE = 114  # Ultralytics' LetterBox border, which the detector was trained with
MAX_NMS = 30000  # Ultralytics' cap on candidates per image before NMS
BG_STRIDE = 16  # crops.background_colour samples every 16th pixel
EMBED_CHUNK = 4096  # crops per embedder call: bounds activation memory
ROWS_BUCKET = 64  # on CUDA the embedder batch is padded to a multiple, so cuDNN autotunes a few shapes only


@dataclass
class Objects:
    """A batch's objects, frame by frame in order: K boxes (xyxy frame
    pixels, on the device), their scores, ``frame`` (K indices into the
    batch), embeddings (K×D on the device), similarity (K×C, host) and
    species (K names, host: ``decide``'s answer at the model's thresholds).
    sizes: each frame's (height, width)."""

    boxes: torch.Tensor
    scores: torch.Tensor
    frame: torch.Tensor
    embeddings: torch.Tensor
    similarity: np.ndarray
    species: np.ndarray
    sizes: list[tuple[int, int]]


class StageClock:
    """Adds the time since the last ``lap`` to a stage, after waiting for
    the device: without the wait, asynchronous CUDA work would be charged
    to whichever later stage first blocks."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.ms: dict[str, float] = {}
        self.start()

    def start(self) -> None:
        self.sync()
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + 1000 * (now - self.last)
        self.last = now


def _first_per_group(group: torch.Tensor, limit: int, n_groups: int) -> torch.Tensor:
    """Indices of the first ``limit`` entries of each group (in their
    current order), ordered by group: per-image caps without a Python loop."""
    order = torch.sort(group, stable=True).indices
    g = group[order]
    counts = torch.bincount(g, minlength=n_groups)
    rank = torch.arange(len(g), device=g.device) - (torch.cumsum(counts, 0) - counts)[g]
    return order[rank < limit]


def cut_crops(frames: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor, cfg: CropConfig) -> torch.Tensor:
    """``extract_crops`` for a batch of frames on their device: frames
    B×3×H×W uint8, boxes K×4 xyxy pixels, frame K indices into frames →
    K×3×S×S float32 holding the uint8 values extract_crops gives. The
    square context region (``geometry.square_context_box``, rounded to
    whole pixels) on a canvas of the frame's background colour, resized
    with cv2's INTER_LINEAR when enlarging, INTER_AREA when shrinking, both
    reproduced exactly (``_linear_fixed_point``, ``_area``). Not roi_align:
    it samples past the canvas's edge and only approximates an area
    average, and the embedder is sensitive enough to ±1 grey level that
    this changed the species of 2 objects in 32 on the committed frames.
    Regions over MAX_CANVAS px (``_crop_large``) are not special-cased."""
    S = cfg.size
    if len(boxes) == 0:
        return torch.zeros((0, 3, S, S), device=frames.device)
    # background_colour: the median of every 16th pixel; np.median's mean of the two middle values, then int()
    sample = frames[:, :, ::BG_STRIDE, ::BG_STRIDE].reshape(len(frames), 3, -1).sort(-1).values.int()
    m = sample.shape[-1]
    fill = sample[..., m // 2] if m % 2 else (sample[..., m // 2 - 1] + sample[..., m // 2]) // 2
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = torch.clamp((boxes[:, 2:] - boxes[:, :2]).amax(1), min=cfg.min_side)
    half = (side * (1 + 2 * cfg.context) / 2)[:, None]
    x1y1 = (centre - half).round()
    side = ((centre[:, :1] + half).round() - x1y1[:, :1]).clamp(min=1)  # extract_crops' square: x2 - x1, from y1 too
    origin, side = x1y1.long(), side.long()
    linear = _linear_fixed_point(frames, fill, frame, origin, side.expand(-1, 2), (S, S))
    area = _area(frames, fill, frame, origin, side, S)
    return torch.where((side > S)[:, :, None, None], area, linear).float()


def _canvas(frames: torch.Tensor, fill: torch.Tensor, frame: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Pixels of the crops' canvases: frames B×C×H×W uint8, fill B×C,
    ys K×P and xs K×Q frame pixel indices → K×P×Q×C int32, the fill
    colour outside the frame."""
    H, W = frames.shape[2:]
    inside = ((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]
    tap = frames[frame[:, None, None], :, ys.clamp(0, H - 1)[:, :, None], xs.clamp(0, W - 1)[:, None, :]].int()
    return torch.where(inside[..., None], tap, fill[frame][:, None, None, :])


def _resize_coefficients(n: torch.Tensor, out: int, clamp: bool):
    """cv2's INTER_LINEAR taps for n → out pixels (n: K×1): first source
    index and the two weights in 1/2048ths, K×out each, computed as cv2
    does (float32 positions, each weight rounded on its own). Columns
    clamp position and weight at the edges; rows keep the weight and clip
    the index (``clamp`` False), as cv2 treats the two directions."""
    scale = 1.0 / (out / n.double())
    f = ((torch.arange(out, device=n.device, dtype=torch.float64) + 0.5) * scale - 0.5).float()
    i0 = f.floor()
    w = f - i0
    i0 = i0.long()
    if clamp:
        low, high = i0 < 0, i0 >= n - 1
        w = torch.where(low | high, torch.zeros_like(w), w)
        i0 = torch.where(low, torch.zeros_like(i0), torch.where(high, (n - 1).expand_as(i0), i0))
    a0, a1 = ((1 - w) * 2048).round().int(), (w * 2048).round().int()
    return i0, a0, a1


def _linear_fixed_point(frames, fill, frame, origin, size, out_hw: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(canvas, out size, INTER_LINEAR) for uint8, bit for bit:
    11-bit weights, the horizontal pass in integers, the vertical one as
    its SIMD kernel (VResizeLinearVec_32s8u) rounds. Canvas k: the
    size[k] = (width, height) pixels from origin[k] = (x, y) of frame
    frame[k], the fill outside it. → K×3×P×Q int32, (P, Q) = out_hw."""
    w, h = size[:, :1], size[:, 1:]
    x0, a0, a1 = _resize_coefficients(w, out_hw[1], clamp=True)
    y0, b0, b1 = _resize_coefficients(h, out_hw[0], clamp=False)
    xs0, xs1 = origin[:, :1] + x0, origin[:, :1] + torch.minimum(x0 + 1, w - 1)
    ys0, ys1 = origin[:, 1:] + y0.clamp(min=0).minimum(h - 1), origin[:, 1:] + (y0 + 1).clamp(min=0).minimum(h - 1)
    a0, a1 = a0[:, None, :, None], a1[:, None, :, None]
    top = _canvas(frames, fill, frame, ys0, xs0) * a0 + _canvas(frames, fill, frame, ys0, xs1) * a1
    bottom = _canvas(frames, fill, frame, ys1, xs0) * a0 + _canvas(frames, fill, frame, ys1, xs1) * a1
    v = ((b0[:, :, None, None] * (top >> 4)) >> 16) + ((b1[:, :, None, None] * (bottom >> 4)) >> 16)
    return ((v + 2) >> 2).clamp(0, 255).permute(0, 3, 1, 2)


def _area(frames, fill, frame, origin, side, S: int) -> torch.Tensor:
    """cv2.resize(canvas, (S, S), INTER_AREA) when shrinking, rounded to
    uint8 values: each output pixel the mean of the canvas over its
    side/S square, as box sums of the integral image (exact integers;
    bilinear between its corners is the exact sum over a fractional box).
    Out of the frame the canvas is the fill: zero after subtracting it.
    → K×3×S×S float64 (integral values)."""
    H, W = frames.shape[2:]
    exact = torch.int32 if 255 * H * W < 2**31 else torch.int64  # the largest box sum must fit
    shifted = frames.to(exact) - fill[:, :, None, None]
    integral = F.pad(shifted.cumsum(2, dtype=exact).cumsum(3, dtype=exact), (1, 0, 1, 0))
    step = (side.double() / S)[:, :, None]
    edges = origin[:, :, None].double() + torch.arange(S + 1, device=frames.device, dtype=torch.float64) * step
    corner = _bilinear(integral, frame, edges[:, 1].clamp(0, H), edges[:, 0].clamp(0, W))
    sums = corner[:, :, 1:, 1:] - corner[:, :, :-1, 1:] - corner[:, :, 1:, :-1] + corner[:, :, :-1, :-1]
    return (sums / step[:, :, :, None] ** 2 + fill[frame][:, :, None, None]).round().clamp(0, 255)


def _bilinear(image: torch.Tensor, frame: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Separable bilinear samples: image B×C×H×W, frame K indices into it,
    ys K×P and xs K×Q coordinates in pixel indices → K×C×P×Q in the
    coordinates' dtype. Taps outside the image read 0."""
    H, W = image.shape[2:]
    y0, x0 = ys.floor(), xs.floor()
    wy, wx = (ys - y0)[:, :, None, None], (xs - x0)[:, None, :, None]
    y0, x0, f = y0.long(), x0.long(), frame[:, None, None]
    out = 0
    for yi, ay in ((y0, 1 - wy), (y0 + 1, wy)):
        for xi, ax in ((x0, 1 - wx), (x0 + 1, wx)):
            inside = ((yi >= 0) & (yi < H))[:, :, None] & ((xi >= 0) & (xi < W))[:, None, :]
            tap = image[f, :, yi.clamp(0, H - 1)[:, :, None], xi.clamp(0, W - 1)[:, None, :]]  # K×P×Q×C
            out = out + ay * ax * (tap * inside[..., None])
    return out.permute(0, 3, 1, 2)


def _decode_head_in_fp32(net: torch.nn.Module) -> None:
    """In fp16 a box edge beyond 1024 px is rounded to a whole pixel; the
    head's box decoding (DFL softmax, anchors × stride) is cheap, so it
    runs in fp32 while the convolutions stay in fp16."""
    head = net.model[-1]
    if getattr(head, "end2end", False) or not hasattr(head, "_inference") or not hasattr(head, "dfl"):
        return
    head.dfl.float()
    inner = head._inference
    head._inference = lambda x: inner(dict(x, boxes=x["boxes"].float(), scores=x["scores"].float()))


class GpuPipeline:
    """A loaded torch ``Cascade`` (``load_artifact(..., device=device)``)
    run as batched tensor stages: ``decode``, ``detect``, ``crop``,
    ``embed``, ``match``; ``run`` chains them. Whole frames only (the
    model's tiling and gate are not applied). ``half`` (default: on
    CUDA) converts the cascade's networks in place to fp16, channels-last."""

    def __init__(self, cascade, device: str | torch.device, half: bool | None = None):
        if cascade.runtime != "torch":
            raise ValueError(f"the GPU pipeline runs torch networks; this cascade runs {cascade.runtime}")
        self.device = torch.device(device)
        self.half = self.device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        self.memory_format = torch.channels_last if self.half else torch.contiguous_format
        det, ident = cascade.detector, cascade.identifier
        self.det_cfg, self.stride, self.floor = det.cfg, det.stride, cascade.det_floor
        self.imgsz = -(-det.cfg.imgsz // det.stride) * det.stride  # as Detector._infer
        self.det_net = det.model.to(self.device, self.dtype, memory_format=self.memory_format)
        if self.half:
            _decode_head_in_fp32(self.det_net)
        self.emb_net = ident.model.to(self.device, self.dtype, memory_format=self.memory_format)
        self.crop_cfg = ident.cfg.crop
        self.mean = torch.tensor(ident.cfg.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(ident.cfg.std, device=self.device).view(1, 3, 1, 1)
        protos = ident.prototypes
        self.names, self.mode = list(protos.names), protos.mode
        self.tta_margin = float(ident.cfg.tta_margin)
        self.means = torch.from_numpy(protos.means).to(self.device)
        self.subcenters = torch.from_numpy(protos.subcenters).to(self.device)
        self.thresholds = shifted_thresholds(cascade.cls_conf, ident.cfg.offsets(self.names), len(self.names))

    # -- stages -------------------------------------------------------------
    def decode(self, blobs: list[torch.Tensor]) -> list[torch.Tensor]:
        """JPEG files' bytes (1-d uint8 CPU tensors) → 3×H×W uint8 RGB on
        the device (nvjpeg on CUDA, libjpeg-turbo on the CPU). No EXIF
        rotation: nvjpeg has none (microscope frames carry none)."""
        return decode_jpeg(list(blobs), mode=ImageReadMode.RGB, device=self.device)

    def letterbox(self, frames: torch.Tensor) -> torch.Tensor:
        """N×3×H×W uint8 → N×3×H'×W' detector input (0..1), as Ultralytics'
        LetterBox(auto=True) makes it: scaled so the long side fits imgsz,
        padded with 114 to a stride multiple, centred."""
        n, _, h, w = frames.shape
        r = min(self.imgsz / h, self.imgsz / w)
        new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
        dw, dh = (self.imgsz - new_w) % self.stride / 2, (self.imgsz - new_h) % self.stride / 2
        top, left = round(dh - 0.1), round(dw - 0.1)
        H, W = new_h + top + round(dh + 0.1), new_w + left + round(dw + 0.1)
        x = torch.full((n, 3, H, W), PAD_VALUE / 255, dtype=self.dtype, device=self.device).contiguous(memory_format=self.memory_format)
        if (new_h, new_w) != (h, w):  # LetterBox's cv2 INTER_LINEAR, bit for bit
            k = torch.arange(n, device=self.device)
            size = torch.tensor([[w, h]], device=self.device).expand(n, 2)
            frames = _linear_fixed_point(frames, torch.zeros((n, 3), dtype=torch.int32, device=self.device), k, torch.zeros_like(size),
                                         size, (new_h, new_w))
        x[:, :, top:top + new_h, left:left + new_w] = frames.to(self.dtype) / 255
        return x

    def _scale_back(self, boxes: torch.Tensor, input_hw: tuple[int, int], frame_hw: tuple[int, int]) -> torch.Tensor:
        """Detector-input pixels → frame pixels, clipped (Ultralytics' scale_boxes)."""
        (H, W), (h, w) = input_hw, frame_hw
        gain = min(H / h, W / w)
        new_h, new_w = max(round(h * gain), 1), max(round(w * gain), 1)
        pad_x, pad_y = round((W - new_w) / 2 - 0.1), round((H - new_h) / 2 - 0.1)
        # Python scalars, not small tensors: nothing to copy to the device
        xs = ((boxes[:, 0::2] - pad_x) / (new_w / w)).clamp(0, w)
        ys = ((boxes[:, 1::2] - pad_y) / (new_h / h)).clamp(0, h)
        return torch.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)

    def detect(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """N×3×H×W uint8 frames of one size → (K×4 xyxy frame pixels, K
        scores, K frame indices), ordered by frame then score: the
        detector's boxes at the candidate floor, NMS for the whole batch at
        once (Ultralytics' rule: score > floor, the best class's score,
        at most max_det per frame; the one-class detector needs no class
        offsets)."""
        n, cfg = len(frames), self.det_cfg
        x = self.letterbox(frames)
        pred = self.det_net(x)
        pred = (pred[0] if isinstance(pred, (list, tuple)) else pred).float()
        if cfg.end2end or pred.shape[-1] == 6:  # B×max_det×(xyxy, score, class): NMS is inside the model
            b, a = (pred[..., 4] > self.floor).nonzero(as_tuple=True)
            boxes, scores = pred[b, a, :4], pred[b, a, 4]
            keep = _first_per_group(b, cfg.max_det, n)
        else:  # B×(4 + classes)×anchors, xywh
            conf = pred[:, 4:].amax(1)
            b, a = (conf > self.floor).nonzero(as_tuple=True)
            xywh, scores = pred[b, :4, a], conf[b, a]
            boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            if len(scores) > MAX_NMS:
                by_score = scores.argsort(descending=True)
                cand = by_score[_first_per_group(b[by_score], MAX_NMS, n)]
                boxes, scores, b = boxes[cand], scores[cand], b[cand]
            # all frames in one NMS call, each frame's boxes shifted far from the others'; in float64 the
            # shift loses nothing (torchvision's batched_nms shifts in float32, or loops over frames)
            shift = 2.0 * max(x.shape[2:]) + 4096  # predicted boxes reach at most 16 strides past the input
            kept = nms(boxes.double() + (b.double() * shift)[:, None], scores.double(), cfg.iou)  # by score, descending
            keep = kept[_first_per_group(b[kept], cfg.max_det, n)]
        boxes = self._scale_back(boxes[keep], tuple(x.shape[2:]), tuple(frames.shape[2:]))
        return boxes, scores[keep], b[keep]

    def crop(self, frames: torch.Tensor, boxes: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """``cut_crops``, normalised as ``identifier.to_tensor`` does, in the networks' dtype and layout."""
        crops = (cut_crops(frames, boxes, frame, self.crop_cfg) / 255 - self.mean) / self.std
        return crops.to(self.dtype).contiguous(memory_format=self.memory_format)

    def size_features(self, boxes: torch.Tensor) -> torch.Tensor:
        """``crops.size_features`` on the device: log of the sorted sides over SIZE_REFERENCE."""
        wh = torch.clamp(boxes[:, 2:] - boxes[:, :2], min=1.0)
        return torch.log(wh.sort(1, descending=True).values / SIZE_REFERENCE)

    @torch.inference_mode()
    def embed(self, crops: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """All crops of the batch of frames → K×D float32 unit embeddings."""
        k = len(crops)
        if k == 0:
            return torch.zeros((0, self.means.shape[1]), device=self.device)
        sizes = self.size_features(boxes) if self.crop_cfg.size_input else None
        if self.device.type == "cuda" and k % ROWS_BUCKET:
            pad = ROWS_BUCKET - k % ROWS_BUCKET
            crops = torch.cat([crops, crops[:1].expand(pad, -1, -1, -1)]).contiguous(memory_format=self.memory_format)
            sizes = None if sizes is None else torch.cat([sizes, sizes[:1].expand(pad, -1)])
        out = []
        for i in range(0, len(crops), EMBED_CHUNK):
            args = (crops[i:i + EMBED_CHUNK],) + (() if sizes is None else (sizes[i:i + EMBED_CHUNK].to(self.dtype),))
            out.append(self.emb_net(*args).float())
        return torch.cat(out)[:k]

    def refine(self, crops: torch.Tensor, boxes: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``Identifier.refine`` on the device: doubtful crops take their 8 dihedral views' unit mean."""
        if self.tta_margin <= 0 or len(emb) == 0 or self.means.shape[0] < 2:
            return emb
        sim = emb @ self.means.T
        if self.mode == "subcenter":
            sim = torch.maximum(sim, torch.einsum("nd,ckd->nck", emb, self.subcenters).amax(2))
        top2 = sim.topk(2, dim=1).values
        doubtful = torch.nonzero(top2[:, 0] - top2[:, 1] < self.tta_margin).flatten()
        if not len(doubtful):
            return emb
        c, b = crops[doubtful], boxes[doubtful]
        # dihedral_views' order: rotations of the crop, then of its mirror (NCHW: width is dim 3)
        views = [torch.rot90(v, k, dims=(2, 3)) for v in (c, c.flip(3)) for k in range(4)][1:]
        total = emb[doubtful] + sum(self.embed(v.contiguous(memory_format=self.memory_format), b) for v in views)
        out = emb.clone()
        out[doubtful] = torch.nn.functional.normalize(total, dim=1)
        return out

    def match(self, embeddings: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """K×D embeddings → (K×C similarity, K species), on the host:
        ``Prototypes.similarity`` on the device, then ``decide`` itself
        with the model's per-class thresholds."""
        sim = embeddings @ self.means.T
        if self.mode == "subcenter":
            sim = torch.maximum(sim, torch.einsum("nd,ckd->nck", embeddings, self.subcenters).amax(2))
        sim = sim.cpu().numpy()
        return sim, decide(sim, self.names, self.thresholds)

    # -- the chain ------------------------------------------------------------
    @torch.inference_mode()
    def run(self, blobs: list[torch.Tensor], clock: StageClock | None = None) -> Objects:
        """JPEG bytes of a batch of frames → their Objects. ``clock``: time
        each stage (waiting for the device between them)."""
        lap = clock.lap if clock is not None else (lambda stage: None)
        decoded = self.decode(blobs)
        lap("decode")
        by_size: dict[tuple, list[int]] = {}
        for i, f in enumerate(decoded):
            by_size.setdefault(tuple(f.shape), []).append(i)
        parts = []
        for idx in by_size.values():
            frames = torch.stack([decoded[i] for i in idx]) if len(idx) > 1 else decoded[idx[0]][None]
            lap("decode")
            boxes, scores, frame = self.detect(frames)
            lap("detect")
            crops = self.crop(frames, boxes, frame)
            lap("crop")
            if len(by_size) > 1:
                frame = torch.as_tensor(idx, device=self.device)[frame]
            parts.append((boxes, scores, frame, crops))
        boxes, scores, frame, crops = (torch.cat(p) for p in zip(*parts))
        if len(parts) > 1:  # frame by frame, in the batch's order
            order = torch.sort(frame, stable=True).indices
            boxes, scores, frame, crops = boxes[order], scores[order], frame[order], crops[order]
        emb = self.refine(crops, boxes, self.embed(crops, boxes))
        lap("embed")
        sim, species = self.match(emb)
        lap("match")
        return Objects(boxes, scores, frame, emb, sim, species, [tuple(f.shape[1:]) for f in decoded])


def read_jpegs(paths, n: int, pin: bool = False) -> list[torch.Tensor]:
    """n JPEG files' bytes (cycling through ``paths``) as 1-d uint8 tensors,
    each file read once; pinned when copying to a GPU."""
    blobs = {}
    for p in paths[:n]:
        t = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
        blobs[p] = t.pin_memory() if pin else t
    return [blobs[paths[i % len(paths)]] for i in range(n)]

