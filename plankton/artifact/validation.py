"""Validation data kept in a model artifact for the app: embeddings with
their true species, their similarities to the prototypes, and a 2-D layout
(UMAP, computed at training time). Stored as safetensors + JSON metadata."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE = "validation.safetensors"


@dataclass
class ValidationSet:
    """embeddings: N×D. true_names: N species names (some may have no
    prototype). similarity: N×C to ``class_names``. layout: N×2 plot
    coordinates; prototype_layout: C×2 (class means placed on the map).
    frames: N image ids of the objects' frames (optional)."""

    embeddings: np.ndarray
    true_names: list[str]
    similarity: np.ndarray
    class_names: list[str]
    layout: np.ndarray
    prototype_layout: np.ndarray
    frames: np.ndarray | None = None

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        tensors = {
            "embeddings": np.ascontiguousarray(self.embeddings, np.float16),
            "similarity": np.ascontiguousarray(self.similarity, np.float32),
            "layout": np.ascontiguousarray(self.layout, np.float32),
            "prototype_layout": np.ascontiguousarray(self.prototype_layout, np.float32),
        } | ({"frames": np.asarray(self.frames, np.int64)} if self.frames is not None else {})
        meta = {"true_names": json.dumps(list(self.true_names)), "class_names": json.dumps(list(self.class_names))}
        save_file(tensors, str(path), metadata=meta)
        os.chmod(path, 0o644)  # safetensors creates files 0600

    @classmethod
    def load(cls, path: str | Path) -> "ValidationSet":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        return cls(t["embeddings"].astype(np.float32), json.loads(meta["true_names"]), t["similarity"], json.loads(meta["class_names"]), t["layout"],
                   t["prototype_layout"], t.get("frames"))

    def place(self, embeddings: np.ndarray, k: int = 5) -> np.ndarray:
        """Put new M×D embeddings on the stored map without the UMAP model:
        the similarity-weighted mean layout of their k nearest stored
        neighbours (cosine). Returns M×2."""
        e = np.asarray(embeddings, np.float32).reshape(-1, self.embeddings.shape[1])
        if len(e) == 0 or len(self.embeddings) == 0:
            return np.zeros((len(e), 2), np.float32)
        sim = e @ self.embeddings.T
        k = min(k, sim.shape[1])
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        w = np.maximum(np.take_along_axis(sim, idx, 1), 1e-3)
        return (self.layout[idx] * w[..., None]).sum(1) / w.sum(1, keepdims=True)

