"""Constants and helpers of the Hub tests (tests/hub/): the repo, the
token that must never be printed, artifacts decorated as versions, and a
resolve with a bound for tests that are not about time."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np

TOKEN = "hf_TESTtokenNeverPrinted0123456789abcdef"
REPO_ID = "plankton-lab/test-model"
REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 1.0



def decorate(folder: Path, *, version: str, metrics: bool = True, extras: bool = True) -> Path:
    """Add what an evaluated artifact carries: metrics.json, the embedding-plot
    data, a plot and a table, and training details; then rewrite the manifest."""
    from PIL import Image

    from plankton.artifact.manifest import read_config, write_manifest
    from plankton.artifact.validation import FILE, ValidationSet

    config = read_config(folder, check_files=False)
    names = config["prototypes"]["names"]
    config["name"] = f"test-model-{version}"
    config["license"] = "apache-2.0"
    config["training"] = {"dataset": "tests/data frames (committed sample)", "split": {"train_frames": 30, "val_frames": 10, "by": "frame"}, "seed": 0}
    if metrics:
        (folder / "metrics.json").write_text(json.dumps({  # the shape training/evaluate.py writes
            "split": {"validation_frames": 10, "validation_objects": 40, "annotations_sha256": "0" * 64},
            "detection": {"ap50": 0.61, "ap50_95": 0.33, "recall": 0.7, "threshold": 0.05},
            "identification": {"objects": 40, "species": 5, "top1": 0.83, "top5": 0.95, "f1_macro": 0.71, "threshold": 0.5,
                               "per_class": [{"species": names[0], "precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 10}],
                               "coverage": [{"threshold": 0.5, "coverage": 0.9, "accuracy": 0.8}]},
            "end_to_end": {"species_ap50": 0.44, "detector_floor": 0.01},
            "learning_curve": None,
            "evaluation": {"command": "python -m training.evaluate", "hardware": {"cpus": 2}, "wall_s": 12.5, "version": version},
        }))
    if extras:
        rng = np.random.default_rng(0)
        n, c = 11_000, len(names)  # > 10 MB of float16 embeddings: an LFS file whatever the weights' dtype
        emb = rng.normal(size=(n, 512)).astype(np.float32)
        ValidationSet(emb / np.linalg.norm(emb, axis=1, keepdims=True), [names[i % c] for i in range(n)], rng.random((n, c), dtype=np.float32),
                      names, rng.random((n, 2), dtype=np.float32), rng.random((c, 2), dtype=np.float32)).save(folder / FILE)
        Image.new("RGB", (8, 8), (0, 128, 255)).save(folder / "confusion.png")
        (folder / "per_class.csv").write_text("species,precision\n" + "".join(f"{n},0.5\n" for n in names))
    write_manifest(folder, config)
    return folder




def hashes(folder: Path) -> dict:
    from plankton.files import sha256

    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve(hub_url, revision, cache, **kw):
    from plankton.hub import resolve_model

    kw.setdefault("bundled", Path("/nonexistent/bundled-model"))
    start = time.monotonic()
    # a generous bound where the test is not about time: on a loaded 2-core machine one refused connection costs
    # huggingface_hub's retry back-off (2 s, then 4 s), which a 5 s bound turned into a fallback to the bundled model
    resolved = resolve_model(REPO_ID, revision, timeout=kw.pop("timeout", TIMEOUT * 20), cache_dir=cache, endpoint=hub_url, **kw)
    return resolved, time.monotonic() - start
