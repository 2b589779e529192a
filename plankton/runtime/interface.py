"""What every runtime in ``plankton.runtime.TABLE`` implements (``Runtime``),
and what the networks it loads offer the predictors in place of the PyTorch
modules (``DetectorNet`` for ``Detector``, ``EmbedderNet`` for
``Identifier``). ``StandIn`` is what the graph-file networks share."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class DetectorNet(Protocol):
    """``Detector``'s network: ``net(x)``, x B×3×H×W float in 0..1 → the
    B×(4+nc)×A tensor ``non_max_suppression`` takes."""

    stride: torch.Tensor
    names: list[str]
    end2end: bool

    def to(self, device=None, *args, **kwargs) -> DetectorNet: ...

    def eval(self) -> DetectorNet: ...

    def fuse(self, verbose: bool = False) -> DetectorNet: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class EmbedderNet(Protocol):
    """``Identifier``'s network: ``net(x)`` or, when ``size_features``,
    ``net(x, sizes)``, x B×3×S×S normalised, sizes B×size_features → B×dim
    unit embeddings."""

    dim: int
    size_features: int

    def to(self, device=None, *args, **kwargs) -> EmbedderNet: ...

    def eval(self) -> EmbedderNet: ...

    def __call__(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Runtime(Protocol):
    """One way to run both networks from files in a model folder: a
    module's ``RUNTIME``, named by one line of ``plankton.runtime.TABLE``.
    ``registry`` checks the loaded embedder against config.json."""

    def status(self, folder: Path, config: dict, asked: str | None = None, device: str = "cpu") -> str | None:
        """Why it cannot run this folder on ``device`` (None: it can), from
        files, config, CPU and packages alone: one line. ``asked``: the
        spelling asked for (None under "auto")."""

    def offered(self, folder: Path, config: dict, device: str) -> bool:
        """Whether the folder offers it for ``device``, so that "auto"
        passing it over deserves a warning (absent files are the normal case)."""

    def name(self, config: dict) -> str:
        """What ``cascade.runtime`` says when it runs this folder."""

    def load(self, folder: Path, config: dict, threads: int | None = None, streams: int = 1) -> tuple[DetectorNet, EmbedderNet]:
        """Both networks, once ``status`` found no problem; a file that
        will not load is an ArtifactError saying why in one line."""

    def summary(self, folder: Path, config: dict) -> str | None:
        """Why it may run on this CPU, for ``plankton info`` (None: nothing to add)."""


def cpu_only(device, engine: str) -> str | None:
    """Why ``engine`` (e.g. "the INT8 path") cannot run on ``device``."""
    if device is not None and torch.device(device).type != "cpu":
        return f"{engine} runs on the CPU only, not {device}"
    return None


def one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


class StandIn:
    """Just enough of ``torch.nn.Module`` for the predictors, over a graph
    file: ``to`` (CPU only) and ``eval`` return self, calls take and return
    CPU torch tensors. ``streams``: frames it may run at once
    (``Cascade.frames_in_flight``)."""

    engine = "this runtime"
    training, streams, path = False, 1, None
    metadata: dict = {}
    options: dict = {}

    def to(self, device=None, *args, **kwargs):
        problem = cpu_only(device, self.engine)
        if problem:
            raise ValueError(f"{problem}; use runtime='torch'")
        return self

    def eval(self):
        return self

    def fuse(self, verbose: bool = False):
        return self  # fused before export

    def read_detector_metadata(self, meta: dict) -> None:
        """``DetectorNet``'s fields from the graph's metadata (``onnx.export_detector``)."""
        self.stride = torch.tensor([float(s) for s in json.loads(meta.get("stride", "[8, 16, 32]"))])
        self.names = json.loads(meta.get("names", '["plankton"]'))
        self.end2end = meta.get("end2end", "false") == "true"

    def read_embedder_metadata(self, meta: dict, dim: int, size_features: int) -> None:
        """``EmbedderNet``'s fields, and what ``onnx.export_embedder`` recorded."""
        self.dim = int(dim)
        self.size_features = int(size_features)
        self.backbone_name = meta.get("backbone", "")
        self.input_size = int(meta.get("input_size", 0)) or None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path or 'in memory'})"


__all__ = ["DetectorNet", "EmbedderNet", "Runtime", "StandIn", "cpu_only", "one_line"]
