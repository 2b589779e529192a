"""The identifier's training data: crops cut from cached frames on the fly
with ``plankton.model.crops.extract_crops``, the function inference uses."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from plankton.model.crops import CropConfig, background_colour, extract_crops, size_features
from plankton.images import read_image


def load_index(path: str | Path, split: str, names: list[str] | None = None, split_seed: int | None = None):
    """crops.json → (records of one split, class names). Class names default
    to the categories that have training crops, in category-id order. With
    ``split_seed``, the frames are split again (same stratified rule, other
    seed), so that choices need not rest on one validation split."""
    index = json.loads(Path(path).read_text())
    root = Path(path).resolve().parent  # frame paths are relative to the index
    index["crops"] = [r | {"file": str(root / r["file"])} for r in index["crops"]]
    if split_seed is not None:
        index["crops"] = resplit(index["crops"], split_seed)
    cats = {c["id"]: c["name"] for c in index["categories"]}
    if names is None:
        present = {r["category_id"] for r in index["crops"] if r["split"] == "train"}
        names = [cats[i] for i in sorted(present)]
    lookup = {n: i for i, n in enumerate(names)}
    records = [r | {"label": lookup.get(cats[r["category_id"]], -1), "name": cats[r["category_id"]]} for r in index["crops"] if r["split"] == split]
    return records, names, index["categories"]


def resplit(records: list[dict], seed: int) -> list[dict]:
    """Reassign whole frames to train/val with ``training.splits.split_frames``,
    keeping the original validation share."""
    from types import SimpleNamespace

    from training.splits import split_frames

    frames = {r["image_id"] for r in records}
    share = len({r["image_id"] for r in records if r["split"] == "val"}) / max(len(frames), 1)
    boxes = [SimpleNamespace(id=r["ann_id"], image_id=r["image_id"], category_id=r["category_id"]) for r in records]
    _, val = split_frames(SimpleNamespace(images=dict.fromkeys(frames), boxes=boxes), share, seed)
    val = set(val)
    return [r | {"split": "val" if r["image_id"] in val else "train"} for r in records]


class FrameCache:
    """Decoded frames in memory (about 6 MB each), with their background colour."""

    def __init__(self, files):
        self.frames, self.fill = {}, {}
        for f in sorted(set(files)):
            self.frames[f] = read_image(f)
            self.fill[f] = background_colour(self.frames[f])


class CropDataset(torch.utils.data.Dataset):
    """Yields (3×S×S float tensor, 2 size features of the box, label). With
    ``train``, boxes are jittered
    in scale and position before cropping, then rotated, flipped,
    colour-jittered and partly erased."""

    def __init__(self, records, cache: FrameCache, cfg: CropConfig, mean, std, train: bool):
        self.records, self.cache, self.cfg, self.train = records, cache, cfg, train
        self._rng, self._rng_seed = None, None
        norm = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        aug = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.ColorJitter(0.25, 0.25, 0.2, 0.02)]
        self.transform = v2.Compose((aug if train else []) + norm + ([v2.RandomErasing(p=0.25, scale=(0.02, 0.12))] if train else []))

    @property
    def rng(self) -> np.random.Generator:
        # One stream per DataLoader worker: torch seeds each worker differently.
        seed = torch.initial_seed()
        if self._rng_seed != seed:
            self._rng, self._rng_seed = np.random.default_rng(seed % 2**32), seed
        return self._rng

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        box = np.asarray(r["xyxy"], np.float32)
        if self.train:
            w, h = box[2:] - box[:2]
            c = (box[:2] + box[2:]) / 2 + self.rng.uniform(-0.08, 0.08, 2) * (w, h)
            half = np.array([w, h]) * self.rng.uniform(0.85, 1.2) / 2
            box = np.concatenate([c - half, c + half]).astype(np.float32)
        crop = extract_crops(self.cache.frames[r["file"]], box[None], self.cfg, self.cache.fill[r["file"]])[0]
        x = torch.from_numpy(crop).permute(2, 0, 1)
        if self.train:
            # Any rotation: plankton has no up. The corners a rotation uncovers
            # are filled with the frame's background, never black.
            x = v2.functional.affine(
                x, angle=float(self.rng.uniform(0, 360)), translate=[0, 0], scale=float(self.rng.uniform(0.9, 1.1)),
                shear=[float(self.rng.uniform(-5, 5))], fill=list(self.cache.fill[r["file"]]),
                interpolation=v2.InterpolationMode.BILINEAR)
        return self.transform(x), torch.from_numpy(size_features(box[None])[0]), r["label"]


def sampling_weights(labels: list[int], mode: str) -> np.ndarray:
    """Per-sample weights: "uniform" (natural frequencies), "sqrt" (class
    weight ∝ 1/√n) or "balanced" (∝ 1/n)."""
    counts = Counter(labels)
    power = {"uniform": 0.0, "sqrt": 0.5, "balanced": 1.0}[mode]
    return np.array([counts[y] ** -power for y in labels], np.float64)
