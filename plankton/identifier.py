"""Identifier predictor: crops in, embeddings and species out. Owns crop
extraction, normalisation, batching, the device and ``inference_mode``."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .crops import CropConfig, extract_crops
from .embedder import EmbeddingNet
from .prototypes import Prototypes
from .results import Identification


@dataclass(frozen=True)
class IdentifierConfig:
    """threshold: cosine similarity below which the answer is ``unknown``.
    mean/std: input normalisation, carried with the weights."""

    crop: CropConfig = field(default_factory=CropConfig)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    threshold: float = 0.5
    topk: int = 3
    batch_size: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "IdentifierConfig":
        d = dict(d)
        d["crop"] = CropConfig(**d.get("crop", {}))
        d["mean"], d["std"] = tuple(d.get("mean", cls.mean)), tuple(d.get("std", cls.std))
        return cls(**d)


def to_tensor(crops: np.ndarray, mean, std) -> torch.Tensor:
    """N×S×S×3 uint8 RGB → N×3×S×S float32, normalised."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


class Identifier:
    def __init__(self, model: EmbeddingNet, prototypes: Prototypes, cfg: IdentifierConfig, device: str | torch.device = "cpu"):
        if prototypes.dim != model.dim:
            raise ValueError(f"prototypes are {prototypes.dim}-d but the embedder gives {model.dim}-d")
        self.model = model.to(device).eval()
        self.prototypes, self.cfg, self.device = prototypes, cfg, torch.device(device)

    @torch.inference_mode()
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """N×S×S×3 uint8 RGB crops → N×D float32 unit embeddings."""
        crops = np.asarray(crops, np.uint8).reshape(-1, self.cfg.crop.size, self.cfg.crop.size, 3)
        out = np.zeros((len(crops), self.model.dim), np.float32)
        for i in range(0, len(crops), self.cfg.batch_size):
            x = to_tensor(crops[i : i + self.cfg.batch_size], self.cfg.mean, self.cfg.std).to(self.device)
            out[i : i + len(x)] = self.model(x).float().cpu().numpy()
        return out

    def crops(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        return extract_crops(image, xyxy, self.cfg.crop)

    def embed_boxes(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 frame and N×4 xyxy pixel boxes → N×D embeddings,
        all crops of the frame in one batch."""
        return self.embed_crops(self.crops(image, xyxy))

    def identify(self, embeddings: np.ndarray, threshold: float | None = None, topk: int | None = None) -> list[Identification]:
        t = self.cfg.threshold if threshold is None else threshold
        return self.prototypes.match(embeddings, t, self.cfg.topk if topk is None else topk)

    def enrol(self, name: str, image: np.ndarray, xyxy: np.ndarray) -> None:
        """Add a species from example boxes in a frame, without retraining."""
        self.prototypes = self.prototypes.enrol(name, self.embed_boxes(image, xyxy))
