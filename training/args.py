"""Argument groups that several training scripts share, defined once so
that a flag means the same thing (and defaults the same way) everywhere."""
from __future__ import annotations

import argparse


def model_arg(p: argparse.ArgumentParser, help: str = "model folder") -> None:
    p.add_argument("--model", default="models/default", help=f"{help} (default models/default)")


def coco_arg(p: argparse.ArgumentParser, required: bool = True, help: str = "COCO annotation file") -> None:
    p.add_argument("--coco", required=required, default=None, help=help)


def seed_arg(p: argparse.ArgumentParser, help: str = "random seed (splits, sampling, initialisation)") -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


def device_args(p: argparse.ArgumentParser, workers: int = 2) -> None:
    """--device (default: CUDA if available, else CPU; ``common.pick_device``) and --workers."""
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    p.add_argument("--workers", type=int, default=workers, help=f"data-loading worker processes (default {workers})")
