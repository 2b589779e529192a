"""Cross-fitted naming for the count evidence (issue 41): each frame's boxes are
embedded by the fold embedder that never trained on that frame, and named
against prototypes built from that embedder's own training folds.

An embedder that trained on a frame names that frame's objects better than
it will name a new sample's, so a confusion matrix or P(name right |
similarity) measured with it would promise too much. When the shipped
embedder trains on every labelled frame, only out-of-fold naming is honest.

Layout (``experiments.cv_grid``'s): ``DIR/foldK/embedder.safetensors`` and
``embedder.json`` (as ``training.train_embedder`` writes them), optionally
``emb.npz`` (every box's embedding by that fold's embedder: used for the
prototypes instead of embedding the training crops again); the folds file
is ``{"frames": [[image ids held out by fold 0], ...]}``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .common import log


class FoldNamer:
    """One fold embedder with prototypes from its training folds; its
    similarities come in the model's class order (-1 for a class without
    training crops in this fold, which it can never name)."""

    def __init__(self, identifier, names: list[str]):
        self.identifier = identifier
        self.cols = np.array([names.index(n) for n in identifier.prototypes.names], np.int64)
        self.C = len(names)

    def embed_boxes(self, image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        return self.identifier.embed_boxes(image, np.asarray(xyxy, np.float32).reshape(-1, 4))

    def similarity(self, embeddings: np.ndarray) -> np.ndarray:
        out = np.full((len(embeddings), self.C), -1.0, np.float32)
        if len(embeddings):
            out[:, self.cols] = self.identifier.similarity(embeddings)
        return out


def read_folds(path: str | Path) -> list[list[int]]:
    try:
        folds = json.loads(Path(path).read_text())["frames"]
        folds = [[int(i) for i in f] for f in folds]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SystemExit(f"{path}: not a folds file ({{\"frames\": [[image ids of fold 0], ...]}}): {type(e).__name__}: {e}") from None
    if len(folds) < 2:
        raise SystemExit(f"{path}: {len(folds)} fold(s); cross-fitting needs at least 2")
    return folds


def load_fold_embedder(folder: Path, tta_margin: float = 0.0):
    """The Identifier (no prototypes) and the training record of one fold."""
    from safetensors.torch import load_file

    from plankton.model.crops import CropConfig
    from plankton.model.embedder import EmbeddingNet
    from plankton.model.identifier import Identifier, IdentifierConfig

    missing = [f for f in ("embedder.safetensors", "embedder.json") if not (folder / f).is_file()]
    if missing:
        raise SystemExit(f"{folder}: no {' or '.join(missing)} (a training.train_embedder output folder per fold is needed)")
    info = json.loads((folder / "embedder.json").read_text())
    net = EmbeddingNet(info["backbone"], info["dim"], size_features=info.get("size_features", 0))
    net.load_state_dict(load_file(str(folder / "embedder.safetensors")))
    cfg = IdentifierConfig.for_backbone(info["backbone"], CropConfig(**info["crop"]), tta_margin=tta_margin)
    return Identifier(net, cfg), info


def training_embeddings(identifier, info: dict, folder: Path, coco, train_ids: list[int], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and model-class labels of the annotated boxes of
    ``train_ids``: from the fold's emb.npz when it covers them, else
    embedded here."""
    from plankton.images import read_image

    cat = {c.id: c.name for c in coco.categories.values()}
    index = {n: j for j, n in enumerate(names)}
    boxes = [b for i in train_ids for b in coco.boxes_of(i) if cat.get(b.category_id) in index]
    npz = folder / "emb.npz"
    if npz.is_file():
        z = np.load(npz)
        row = {int(a): k for k, a in enumerate(z["ann_id"])}
        if all(b.id in row for b in boxes):
            rows = np.array([row[b.id] for b in boxes], np.int64)
            return z["plain"][rows].astype(np.float32), np.array([index[cat[b.category_id]] for b in boxes], np.int64)
        log.warning("%s: does not cover every training box; embedding them again", npz)
    emb, labels = [], []
    for i in train_ids:
        mine = [b for b in coco.boxes_of(i) if cat.get(b.category_id) in index]
        if mine:
            emb.append(identifier.embed_boxes(read_image(coco.path_of(i)), np.array([b.xyxy for b in mine], np.float32)))
            labels += [index[cat[b.category_id]] for b in mine]
    return (np.concatenate(emb) if emb else np.zeros((0, identifier.model.dim), np.float32)), np.array(labels, np.int64)


def fold_namers(fold_dir: str | Path, folds_file: str | Path, coco, frame_ids: list[int], names: list[str], mode: str,
                tta_margin: float = 0.0) -> dict[int, FoldNamer]:
    """{image id: the namer of the fold that held it out} for ``frame_ids``;
    each embeds doubtful crops again in 8 views as the model does (``tta_margin``)."""
    from plankton.model.prototypes import Prototypes

    folds, fold_dir = read_folds(folds_file), Path(fold_dir)
    fold_of = {i: k for k, f in enumerate(folds) for i in f}
    outside = [i for i in frame_ids if i not in fold_of]
    if outside:
        raise SystemExit(f"{folds_file}: frame(s) {', '.join(map(str, outside[:5]))} are in no fold, so no fold embedder is blind to them")
    held_out = {i for f in folds for i in f}
    namers = {}
    for k in sorted({fold_of[i] for i in frame_ids}):
        identifier, info = load_fold_embedder(fold_dir / f"fold{k}", tta_margin)
        train_ids = sorted(i for i in coco.images if i in held_out and fold_of[i] != k)
        emb, labels = training_embeddings(identifier, info, fold_dir / f"fold{k}", coco, train_ids, names)
        if not len(emb):
            raise SystemExit(f"{fold_dir / f'fold{k}'}: its training folds have no box of the model's species")
        identifier.prototypes = Prototypes.build(emb, labels, names, mode=mode, keep_support=False)
        namer = FoldNamer(identifier, names)
        log.info("fold %d: %d training boxes, %d of %d species with prototypes", k, len(emb), len(namer.cols), len(names))
        namers |= {i: namer for i in frame_ids if fold_of[i] == k}
    return namers
