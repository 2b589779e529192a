"""Identifier predictor: crops in, embeddings and similarities out. Owns
crop extraction, normalisation, batching, the device and
``inference_mode``. Prototypes are optional: without them it only embeds
(as prototype building does)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from plankton.model.crops import SIZE_FEATURES, CropConfig, dihedral_views, extract_crops, size_features
from plankton.model.embedder import backbone_entry
from plankton.model.prototypes import Prototypes


@dataclass(frozen=True)
class IdentifierConfig:
    """cls_conf: the similarity threshold, the global cosine similarity
    below which the answer is ``unknown`` (config.json's ``identifier.cls_conf``;
    artifacts before it call it ``threshold``). class_thresholds: species → its own threshold (from
    cross-validation over training frames); a threshold moved by the app's
    slider moves them with it (``offsets``; ``plankton.model.prototypes.
    shifted_thresholds`` keeps them below 1). tta_margin: a crop whose two
    nearest species are closer than this in similarity is embedded again in
    its 8 rotations and mirrors, and their mean is its embedding (0: never;
    chosen by cross-validation, ``training.crossfit``). mean/std:
    input normalisation, which only the backbone registry supplies (see
    ``for_backbone``)."""

    crop: CropConfig
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    cls_conf: float = 0.5
    class_thresholds: dict[str, float] = field(default_factory=dict)
    topk: int = 3
    batch_size: int = 64
    tta_margin: float = 0.0

    @classmethod
    def for_backbone(cls, backbone: str, crop: CropConfig | None = None, **kwargs) -> "IdentifierConfig":
        """The config for a registered backbone: its normalisation, and its
        default crop size unless ``crop`` is given."""
        entry = backbone_entry(backbone)
        return cls(crop=crop or CropConfig(size=entry.input_size), mean=entry.mean, std=entry.std, **kwargs)

    def to_dict(self) -> dict:
        return asdict(self) | {"class_thresholds": dict(sorted(self.class_thresholds.items()))}

    @classmethod
    def from_dict(cls, d: dict, backbone: str) -> "IdentifierConfig":
        """From config.json's "identifier" section. The normalisation comes
        from the registry entry of ``backbone``; a config that records
        another one is refused rather than silently mis-normalised."""
        entry = backbone_entry(backbone)
        d = dict(d)
        for key in ("mean", "std"):
            got = tuple(float(v) for v in d.pop(key, getattr(entry, key)))
            if not np.allclose(got, getattr(entry, key)):
                raise ValueError(f"identifier {key} {list(got)} differs from what backbone {backbone!r} expects ({list(getattr(entry, key))})")
        crop = CropConfig(**d.pop("crop", {}))
        thresholds = {str(k): float(v) for k, v in (d.pop("class_thresholds", None) or {}).items()}
        if "threshold" in d:  # its name in artifacts published before the one name
            d["cls_conf"] = d.pop("threshold")
        return cls(crop=crop, mean=entry.mean, std=entry.std, class_thresholds=thresholds, **d)

    def offsets(self, names: list[str]) -> np.ndarray:
        """C offsets of each class's threshold from the global one (0 for a
        class without its own), in the order of ``names``."""
        return np.array([self.class_thresholds.get(n, self.cls_conf) - self.cls_conf for n in names], np.float32)


def to_tensor(crops: np.ndarray, mean, std) -> torch.Tensor:
    """N×S×S×3 uint8 RGB → N×3×S×S float32, normalised."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


class Identifier:
    """``model`` maps normalised crops (and, when ``cfg.crop.size_input``,
    N×2 box size features) to N×D unit embeddings: an ``EmbeddingNet`` or
    an ONNX Runtime stand-in."""

    def __init__(self, model, cfg: IdentifierConfig, prototypes: Prototypes | None = None, device: str | torch.device = "cpu"):
        if prototypes is not None and prototypes.dim != model.dim:
            raise ValueError(f"prototypes are {prototypes.dim}-d but the embedder gives {model.dim}-d")
        self.model = model.to(device).eval()
        self.prototypes, self.cfg, self.device = prototypes, cfg, torch.device(device)

    @torch.inference_mode()
    def embed_crops(self, crops: np.ndarray, sizes: np.ndarray | None = None) -> np.ndarray:
        """N×S×S×3 uint8 RGB crops (and, for a size-aware embedder, their
        boxes' N×2 ``size_features``) → N×D float32 unit embeddings."""
        crops = np.asarray(crops, np.uint8).reshape(-1, self.cfg.crop.size, self.cfg.crop.size, 3)
        if self.cfg.crop.size_input:
            if sizes is None:
                raise ValueError("this identifier is size-aware: pass the boxes' size_features, or use embed_boxes")
            sizes = torch.from_numpy(np.asarray(sizes, np.float32).reshape(len(crops), SIZE_FEATURES))
        out = np.zeros((len(crops), self.model.dim), np.float32)
        for i in range(0, len(crops), self.cfg.batch_size):
            x = to_tensor(crops[i : i + self.cfg.batch_size], self.cfg.mean, self.cfg.std).to(self.device)
            args = (x, sizes[i : i + len(x)].to(self.device)) if self.cfg.crop.size_input else (x,)
            out[i : i + len(x)] = self.model(*args).float().cpu().numpy()
        return out

    def crops(self, image: np.ndarray, xyxy: np.ndarray, fill=None) -> np.ndarray:
        return extract_crops(image, xyxy, self.cfg.crop, fill)

    def embed_boxes(self, image: np.ndarray, xyxy: np.ndarray, fill=None) -> np.ndarray:
        """H×W×3 uint8 frame and N×4 xyxy pixel boxes → N×D embeddings,
        all crops of the frame in one batch; the doubtful ones (``tta_margin``)
        again in 8 views."""
        crops, sizes = self.crops(image, xyxy, fill), size_features(xyxy)
        return self.refine(crops, sizes, self.embed_crops(crops, sizes))

    def refine(self, crops: np.ndarray, sizes: np.ndarray, emb: np.ndarray) -> np.ndarray:
        """Selective test-time augmentation: the N×D embeddings of ``crops``
        whose two most similar species lie within ``cfg.tta_margin`` become
        the unit mean of their 8 dihedral views' embeddings. A crop's species
        does not depend on its orientation, and on the cross-validation folds
        the views settle most look-alike calls at a few percent of the crops'
        cost (docs/results.md)."""
        if self.prototypes is None or self.cfg.tta_margin <= 0 or len(emb) == 0 or len(self.prototypes.names) < 2:
            return emb
        top2 = np.sort(self.prototypes.similarity(emb), axis=1)[:, -2:]
        doubtful = np.flatnonzero(top2[:, 1] - top2[:, 0] < self.cfg.tta_margin)
        if not len(doubtful):
            return emb
        views = self.embed_crops(dihedral_views(crops[doubtful])[len(doubtful):], np.tile(sizes[doubtful], (7, 1)))
        mean = emb[doubtful] + views.reshape(7, len(doubtful), -1).sum(0)
        out = emb.copy()
        out[doubtful] = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return out

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """N×D embeddings → N×C cosine similarity to each prototype class."""
        if self.prototypes is None:
            raise ValueError("this identifier has no prototypes: it can embed, not identify")
        return self.prototypes.similarity(embeddings)
