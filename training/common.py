"""Helpers shared by the training scripts."""
from __future__ import annotations

import json
import logging
import os
import platform
import random
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("training")


def setup(seed: int = 0) -> None:
    """Fixed seeds and readable logs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(requested: str | None = None) -> str:
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def hardware() -> dict:
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def portable(obj, root: str | Path | None = None):
    """``obj`` (JSON-like) with every absolute path made relative to
    ``root`` (default: the working directory) when inside it, else cut to
    its last component: a model's record travels to other machines and to
    the Hub, where this machine's folders mean nothing."""
    root = Path(root or os.getcwd()).resolve()
    if isinstance(obj, dict):
        return {k: portable(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, root) for v in obj]
    if isinstance(obj, str) and (obj.startswith("/") or (len(obj) > 2 and obj[1] == ":" and obj[2] in "\\/")):
        p = Path(obj)
        try:
            return p.resolve().relative_to(root).as_posix()
        except ValueError:
            return p.name
    return obj


def write_json(path: str | Path, data) -> None:
    from plankton.files import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
