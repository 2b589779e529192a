"""Train/validation splits over frames (never boxes): training's decision,
kept out of the library."""
from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from collections.abc import Iterable

from plankton.coco import CocoDataset
from plankton.files import atomic_write_text


_EMPTY = None  # pseudo-category of frames without boxes


def frame_counts(dataset) -> tuple[dict[int, Counter], Counter]:
    """Boxes per category in each frame (an empty frame counts as one box of
    its own category, so empty frames are spread like a rare species), and
    their totals."""
    counts: dict[int, Counter] = {i: Counter() for i in sorted(dataset.images)}
    for b in dataset.boxes:
        if b.image_id not in counts:
            raise ValueError(f"box {b.id} refers to image {b.image_id}, not in the dataset")
        counts[b.image_id][b.category_id] += 1
    for c in counts.values():
        if not c:
            c[_EMPTY] = 1
    total: Counter = Counter()
    for c in counts.values():
        total.update(c)
    return counts, total


def split_frames(dataset: CocoDataset, val_fraction: float = 0.2,
                 seed: int = 0) -> tuple[list[int], list[int]]:
    """Split frames (never boxes) into sorted (train_ids, val_ids).

    Every category found in >= 2 frames gets a frame on each side where the
    val budget of round(val_fraction * n_frames) allows, rarest first; the
    rest of val is filled so each category's val share of boxes (and the
    share of empty frames) stays near val_fraction. Deterministic per seed.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(dataset.images)
    n_val = round(val_fraction * len(ids))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    rng = random.Random(seed)

    counts, total = frame_counts(dataset)
    val_counts: Counter = Counter()
    val: set[int] = set()
    train: set[int] = set()

    def cost_change(i: int) -> float:
        """Change in sum of squared (val share - val_fraction) if frame i joins val."""
        d = 0.0
        for c, k in counts[i].items():
            before = val_counts[c] / total[c] - val_fraction
            d += (before + k / total[c]) ** 2 - before ** 2
        return d

    def add_val(i: int) -> None:
        val.add(i)
        val_counts.update(counts[i])

    frames_of = defaultdict(list)
    for i in ids:
        for c in counts[i]:
            if c is not _EMPTY:
                frames_of[c].append(i)
    # Rarest first, so a rare category's few frames are placed before
    # commoner categories that share those frames claim them.
    for c in sorted(frames_of, key=lambda c: (len(frames_of[c]), c)):
        frames = frames_of[c]
        if len(frames) < 2:
            continue
        free = [i for i in frames if i not in train]
        if len(val) < n_val and free and val.isdisjoint(frames):
            rng.shuffle(free)
            add_val(min(free, key=cost_change))
        free = [i for i in frames if i not in val]
        if free and train.isdisjoint(frames):
            train.add(rng.choice(free))

    rest = [i for i in ids if i not in val and i not in train]
    rng.shuffle(rest)
    for i in rest:  # first take frames that bring the val shares closer to target
        if len(val) >= n_val:
            break
        if cost_change(i) < 0:
            add_val(i)
    left = sorted((i for i in rest if i not in val), key=cost_change)  # stable: ties stay shuffled
    for i in left[: max(0, n_val - len(val))]:
        add_val(i)
    return [i for i in ids if i not in val], sorted(val)


def write_split(path: str | os.PathLike, train_ids: Iterable[int], val_ids: Iterable[int],
                dataset: CocoDataset, **meta) -> None:
    """Write the split as JSON: {"train_ids", "val_ids", "train_files", "val_files", "meta"}.

    meta gets the annotation file and its sha256 (when the dataset was loaded
    from a file), the image root and counts, then the caller's ``meta``
    (e.g. seed=0, val_fraction=0.2).
    """
    train_ids, val_ids = sorted(train_ids), sorted(val_ids)
    both = set(train_ids) & set(val_ids)
    if both:
        raise ValueError(f"image ids in both train and val: {sorted(both)[:10]}")
    unknown = set(train_ids + val_ids) - dataset.images.keys()
    if unknown:
        raise ValueError(f"image ids not in the dataset: {sorted(unknown)[:10]}")
    info = {"annotations": str(dataset.source) if dataset.source else None,
            "annotations_sha256": dataset.sha256, "image_root": str(dataset.image_root),
            "n_train": len(train_ids), "n_val": len(val_ids), **meta}
    doc = {"train_ids": train_ids, "val_ids": val_ids,
           "train_files": [dataset.images[i].file_name for i in train_ids],
           "val_files": [dataset.images[i].file_name for i in val_ids],
           "meta": info}
    atomic_write_text(path, json.dumps(doc, indent=1, default=str))  # a crash never leaves a half-written split behind


