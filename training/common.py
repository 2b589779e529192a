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


def write_json(path: str | Path, data) -> None:
    from plankton.files import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
