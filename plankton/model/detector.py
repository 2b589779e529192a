"""Detector predictor: frames in, ``Detections`` out. The network is any
Ultralytics detection architecture with one class, "plankton"."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from plankton.model import _ultralytics  # noqa: F401  (must precede any ultralytics import)
from plankton.model import gate as _gate
from plankton.geometry import merge_tiled, tile_origins
from plankton.results import Detections


@dataclass(frozen=True)
class DetectorConfig:
    """architecture: an Ultralytics model YAML name (yolov8n.yaml,
    yolo11n.yaml, yolo26n.yaml, yolov8n-p2.yaml, …) or a YAML dict.
    imgsz: the long side the frame is scaled to (1920 keeps 1920×1080
    frames at native resolution). conf: default confidence threshold (low:
    the detector favours recall). tile: 0 for whole frames, else the side of
    square tiles for sliced inference, with ``tile_overlap`` pixels shared
    and, if ``tile_full``, a whole-frame pass merged in for large objects.
    gate: None for whole frames, else ``plankton.model.gate.GateConfig`` fields
    (a dict; {} or True: the defaults): a cheap pass finds the occupied
    parts of each frame and the network runs on those windows only."""

    architecture: str | dict = "yolov8n.yaml"
    imgsz: int = 1920
    conf: float = 0.1
    iou: float = 0.6
    max_det: int = 300
    end2end: bool = False
    tile: int = 0
    tile_overlap: int = 160
    tile_full: bool = True
    names: tuple[str, ...] = field(default=("plankton",))
    gate: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"names": list(self.names)}


def build_detection_model(architecture: str | dict, nc: int = 1) -> torch.nn.Module:
    """A randomly initialised Ultralytics DetectionModel with ``nc`` classes."""
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    cfg = yaml_model_load(architecture) if isinstance(architecture, str) else dict(architecture)
    cfg["nc"] = nc
    return DetectionModel(cfg, nc=nc, verbose=False)


class Detector:
    """Owns preprocessing (letterbox to a stride multiple, RGB 0..1), the
    device, ``inference_mode`` and NMS. ``model`` is a DetectionModel."""

    def __init__(self, model: torch.nn.Module, cfg: DetectorConfig, device: str | torch.device = "cpu", fuse: bool = True):
        self.cfg, self.device = cfg, torch.device(device)
        model = model.to(self.device).eval()
        if cfg.end2end:
            model.end2end = True
        if fuse and hasattr(model, "fuse"):
            model = model.fuse(verbose=False)
        self.model = model
        self.stride = int(max(model.stride)) if hasattr(model, "stride") else 32
        self.gate_stats = _gate.GateStats()  # for benchmarks: what the gate skipped

    def _letterbox(self, image: np.ndarray, imgsz: int):
        from ultralytics.data.augment import LetterBox

        return LetterBox((imgsz, imgsz), auto=True, stride=self.stride)(image=image)

    @torch.inference_mode()
    def _infer(self, images: list[np.ndarray], imgsz: int, conf: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Same-size H×W×3 uint8 RGB images → per image (N×4 xyxy, N scores)
        in the input images' pixels."""
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import scale_boxes

        if not images:
            return []
        imgsz = -(-imgsz // self.stride) * self.stride  # LetterBox pads to a stride multiple only from one
        boxed = np.stack([self._letterbox(im, imgsz) for im in images])
        x = torch.from_numpy(boxed).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        pred = self.model(x)
        out = non_max_suppression(pred, conf, self.cfg.iou, max_det=self.cfg.max_det, end2end=self.cfg.end2end)
        results = []
        for det, im in zip(out, images):
            det = det[det[:, 4] >= conf]
            xyxy = scale_boxes(x.shape[2:], det[:, :4].clone(), im.shape[:2]).cpu().numpy()
            results.append((xyxy.astype(np.float32), det[:, 4].float().cpu().numpy()))
        return results

    def set_gate(self, gate) -> None:
        """None: keep the config's gate; False: whole frames; True: the
        config's gate or, if it has none, the defaults; a dict: those."""
        if gate is not None:
            value = (self.cfg.gate or {}) if gate is True else (gate or None)
            self.cfg = replace(self.cfg, gate=None if value is None else dict(value))

    def predict(self, image: np.ndarray, conf: float | None = None, tile: int | None = None, gate=None) -> Detections:
        """One H×W×3 uint8 RGB frame → Detections above ``conf`` (default:
        the config's). ``tile`` overrides the config's tiling (0 = off),
        ``gate`` its gate (False = off; see ``predict_batch``)."""
        return self.predict_batch([image], conf, tile, gate)[0]

    def predict_batch(self, images: list[np.ndarray], conf: float | None = None, tile: int | None = None, gate=None) -> list[Detections]:
        """Several frames; frames of one size go through the network as one
        batch. ``gate``: None takes the config's; False turns it off; a
        dict or GateConfig sets it. Tiled inference is not gated."""
        conf = self.cfg.conf if conf is None else conf
        tile = self.cfg.tile if tile is None else tile
        if tile:
            return [self._predict_tiled(im, conf, tile) for im in images]
        gate_cfg = _gate.GateConfig.from_any(self.cfg.gate if gate is None else gate)
        t0 = time.perf_counter()
        plans = [_gate.windows(im, gate_cfg) if gate_cfg else None for im in images]
        self.gate_stats.add(images, plans, time.perf_counter() - t0)
        results: list[Detections | None] = [None] * len(images)
        by_shape: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            if plans[i] is None:
                by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            for i, (b, s) in zip(idx, self._infer([images[i] for i in idx], self.cfg.imgsz, conf)):
                results[i] = Detections(b, s)
        gated = [i for i, p in enumerate(plans) if p is not None]
        if gated:
            for i, d in zip(gated, self._predict_windows([images[i] for i in gated], [plans[i] for i in gated], conf)):
                results[i] = d
        return results

    def _predict_windows(self, images: list[np.ndarray], plans: list[list[tuple]], conf: float) -> list[Detections]:
        """The gate's windows of several frames, same-size windows batched
        together whatever frame they come from; each window runs at its own
        size (native resolution, as the full frame does at imgsz 1920).
        ``gate.merge_windows`` joins them."""
        jobs = [(f, win) for f, plan in enumerate(plans) for win in plan]
        by_shape: dict[tuple, list[int]] = {}
        for j, (_, (x, y, w, h)) in enumerate(jobs):
            by_shape.setdefault((h, w), []).append(j)
        parts: list = [None] * len(jobs)
        for (h, w), idx in by_shape.items():
            n = _gate.batch_size(h, w)
            for k in range(0, len(idx), n):
                chunk = idx[k: k + n]
                crops = [images[jobs[j][0]][y: y + h, x: x + w] for j in chunk for x, y, _, _ in [jobs[j][1]]]
                for j, p in zip(chunk, self._infer(crops, max(h, w), conf)):
                    parts[j] = p
        out = []
        for f, im in enumerate(images):
            mine = [j for j, job in enumerate(jobs) if job[0] == f]
            boxes, scores = _gate.merge_windows([parts[j][0] for j in mine], [parts[j][1] for j in mine], [jobs[j][1] for j in mine],
                                                im.shape[1::-1], self.cfg.iou)
            order = np.argsort(-scores)[: self.cfg.max_det]
            out.append(Detections(boxes[order], scores[order]))
        return out

    def _predict_tiled(self, image: np.ndarray, conf: float, tile: int) -> Detections:
        H, W = image.shape[:2]
        tw, th = min(tile, W), min(tile, H)
        windows = [(x, y, tw, th) for x, y in tile_origins(W, H, tile, self.cfg.tile_overlap)]
        crops = [image[y : y + th, x : x + tw] for x, y, _, _ in windows]
        parts = self._infer(crops, max(tw, th), conf)
        if self.cfg.tile_full:
            windows.append((0, 0, W, H))
            parts += self._infer([image], self.cfg.imgsz, conf)
        boxes, scores = merge_tiled([p[0] for p in parts], [p[1] for p in parts], windows, (W, H), self.cfg.iou)
        order = np.argsort(-scores)[: self.cfg.max_det]
        return Detections(boxes[order], scores[order])
