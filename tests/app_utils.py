"""Helpers for the app tests: a random-weight model folder complete with the
files the app's Model and Embeddings tabs read, and one app server per
test session, started in a background thread on 127.0.0.1."""
from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FRAMES = sorted((REPO / "plankton_app" / "examples" / "frames").glob("*.jpg"))
NOVEL = "Novel sp"  # a validation species without a prototype
_lock = threading.RLock()


def add_app_files(folder: Path, n: int = 240, seed: int = 0) -> Path:
    """Add validation.safetensors, metrics.json, confusion.png,
    exemplars.safetensors and a "training" config section to an artifact
    folder, then rewrite its manifest. Validation embeddings sit near their class prototypes, so
    the metrics move with the threshold; the layout is clusters on a circle."""
    from PIL import Image, ImageDraw

    from plankton.artifact.manifest import read_config, write_manifest
    from plankton.metrics import coverage_curve, per_class_table
    from plankton.model.prototypes import Prototypes
    from plankton.artifact.validation import ValidationSet

    rng = np.random.default_rng(seed)
    protos = Prototypes.load(folder / "prototypes.safetensors")
    C, D = len(protos.names), protos.dim
    labels = rng.integers(0, C + 1, size=n)  # C = the novel species
    centres = np.vstack([protos.means, rng.normal(size=(1, D)) / np.sqrt(D)])
    emb = centres[labels] + rng.normal(scale=rng.uniform(0.02, 0.06, size=(n, 1)), size=(n, D))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    true = [protos.names[i] if i < C else NOVEL for i in labels]
    angle = 2 * np.pi * np.arange(C + 1) / (C + 1)
    circle = np.stack([np.cos(angle), np.sin(angle)], 1) * 10
    layout = circle[labels] + rng.normal(scale=1.0, size=(n, 2))
    sim = protos.similarity(emb)
    ValidationSet(emb.astype(np.float32), true, sim, list(protos.names), layout.astype(np.float32), circle[:C].astype(np.float32)).save(folder / "validation.safetensors")
    metrics = {
        "detection": {"mAP50": 0.61, "mAP50_95": 0.33, "recall": 0.8},
        "identification": {"threshold": 0.5, "per_class": per_class_table(np.array(true, dtype=object), sim, list(protos.names), 0.5)},
        "coverage": coverage_curve(np.array(true, dtype=object), sim, list(protos.names)),
        "end_to_end": {"f1": 0.55},
        "training": {"dataset": "random test data", "epochs": 1},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics))
    im = Image.new("RGB", (320, 320), "white")
    d = ImageDraw.Draw(im)
    for i in range(8):
        for j in range(8):
            v = 230 if i == j else int(rng.integers(0, 60))
            d.rectangle((20 + 35 * j, 20 + 35 * i, 52 + 35 * j, 52 + 35 * i), fill=(255 - v, 255 - v // 2, 255))
    im.save(folder / "confusion.png")
    # exemplars for the Species tab: the prototypes' support embeddings chosen per sub-centre, drawn as flat colours
    from plankton.artifact.gallery import Exemplars, choose_exemplars

    chosen, counts = choose_exemplars(protos, protos.support, protos.support_labels, 2)
    crops = np.zeros((*chosen.shape, 48, 48, 3), np.uint8)
    crops[...] = (np.maximum(chosen, 0) * 37 % 200 + 30).astype(np.uint8)[..., None, None, None]
    Exemplars(list(protos.names), crops, counts, (chosen >= 0).sum(-1)).save(folder / "exemplars.safetensors")
    config = read_config(folder, check_files=False)
    config["training"] = {"data": "tests/data (random embeddings)", "epochs": 1, "notes": "random weights, for tests only"}
    write_manifest(folder, config)
    return folder


def make_app_artifact(base: Path, dest: Path) -> Path:
    """A copy of the random artifact ``base`` with the app's extra files."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(base, dest)
    return add_app_files(dest)


_artifacts: dict[str, Path] = {}


def app_artifact(base: Path) -> Path:
    """One app-ready copy of the random artifact ``base`` per test session
    (in a temporary folder removed at exit), shared by all app tests."""
    with _lock:
        key = str(base)
        if key not in _artifacts:
            tmp = Path(tempfile.mkdtemp(prefix="plankton-app-model-"))
            atexit.register(shutil.rmtree, tmp, True)
            _artifacts[key] = make_app_artifact(base, tmp / "model")
        return _artifacts[key]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """``app.py`` built on the model in ``folder`` (given to it through
    $PLANKTON_MODEL_DIR, as in production) and launched in a background thread."""

    def __init__(self, folder: Path):
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        import app

        old = os.environ.get("PLANKTON_MODEL_DIR")
        os.environ["PLANKTON_MODEL_DIR"] = str(folder)
        try:
            self.service = app.Service.load()  # as `python app.py` resolves its model
        finally:
            if old is None:
                os.environ.pop("PLANKTON_MODEL_DIR", None)
            else:
                os.environ["PLANKTON_MODEL_DIR"] = old
        self.service.warm_up(FRAMES[0] if FRAMES else None)
        self.demo = app.create_app(self.service)
        self.port = free_port()
        app.launch(self.demo, "127.0.0.1", self.port, prevent_thread_lock=True, quiet=True)
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self):
        self.demo.close()


_servers: dict[str, AppServer] = {}


def app_server(folder: Path) -> AppServer:
    """One running app per model folder for the whole test session."""
    with _lock:
        key = str(folder)
        if key not in _servers:
            _servers[key] = AppServer(folder)
            atexit.register(_servers[key].close)
        return _servers[key]


def ui_refilter(client, det: float, cls: float):
    """/ui_refilter at these thresholds. It is the one handler every tab's
    slider redraw runs through (issue 42), so it takes each tab's inputs:
    the two sliders first, every other one at its default."""
    endpoint = next(e for e in client.endpoints.values() if e.api_name == "/ui_refilter")
    components = {c["id"]: c for c in client.config["components"]}
    # the client fills state itself; every other input is sent, at the value the page starts with
    args = [components[i].get("props", {}).get("value") for i, t in zip(endpoint.dependency["inputs"], endpoint.input_component_types)
            if not (t.skip or t.is_state)]
    args[:2] = [det, cls]
    return client.predict(*args, api_name="/ui_refilter")
