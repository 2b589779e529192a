"""Shared fixtures: real committed frames and tiny random-weight models."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

from repo_paths import EXAMPLES, FRAMES_COCO, REPO  # noqa: E402,F401  (after the environment is set)


def make_random_artifact(folder: Path, seed: int = 0, backbone: str = "efficientnet_lite0", crop: int = 64) -> Path:
    """A complete artifact with random weights: a YOLOv8n-shaped detector at
    640 px with a very low threshold (random weights score ~0.01), and
    prototypes for the species of the committed frames built from random
    embeddings."""
    from plankton.artifact.folder import save_artifact
    from plankton.model.crops import CropConfig
    from plankton.model.detector import DetectorConfig, build_detection_model
    from plankton.model.embedder import EmbeddingNet
    from plankton.model.identifier import IdentifierConfig
    from plankton.model.prototypes import Prototypes

    torch.manual_seed(seed)
    coco = json.loads(FRAMES_COCO.read_text())
    present = sorted({a["category_id"] for a in coco["annotations"]})
    names = [c["name"] for c in coco["categories"] if c["id"] in present]
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(10 * len(names), 512)).astype(np.float32)
    protos = Prototypes.build(emb, np.repeat(np.arange(len(names)), 10), names, k=5, seed=seed)
    return save_artifact(
        folder,
        detector=build_detection_model("yolov8n.yaml"),
        detector_cfg=DetectorConfig(architecture="yolov8n.yaml", imgsz=640, conf=0.001),
        embedder=EmbeddingNet(backbone, 512).eval(),
        identifier_cfg=IdentifierConfig.for_backbone(backbone, CropConfig(size=crop), cls_conf=0.0),
        prototypes=protos,
        categories=coco["categories"],
        name="random-test-model",
    )


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    return make_random_artifact(tmp_path_factory.mktemp("model") / "random")


@pytest.fixture(scope="session")
def tiny_cascade(tiny_artifact):
    from plankton.pipeline.load import load_artifact

    return load_artifact(tiny_artifact)


@pytest.fixture(scope="session")
def frames_coco():
    from plankton.coco import load_coco

    return load_coco(FRAMES_COCO)


@pytest.fixture(scope="session")
def frame(frames_coco):
    from plankton.images import read_image

    image_id = sorted(frames_coco.images)[0]
    return read_image(frames_coco.path_of(image_id)), frames_coco.xyxy_of(image_id)


@pytest.fixture(scope="module")
def service(tiny_artifact):
    """The app's Service on the tiny model (a module may define its own)."""
    from app_utils import app_artifact
    from plankton_app.service import Service

    return Service.load(app_artifact(tiny_artifact))


@pytest.fixture(scope="module")
def session(service):
    """A real analysis of one committed frame (models run once, cached)."""
    from app_utils import FRAMES

    return service.analyse([FRAMES[0]])


# ---- shared by test modules that talk to the project's own Hub server


@pytest.fixture(scope="module")
def hf_constants(tmp_path_factory):
    """huggingface_hub reads its settings once, at import (possibly before
    the test module, e.g. through gradio): patch the parsed values. Xet is
    off (a local server cannot serve it), no stored login, a private cache."""
    from huggingface_hub import constants
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    home = tmp_path_factory.mktemp("hf_home")
    bars_were_off = are_progress_bars_disabled()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        mp.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
        mp.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
        disable_progress_bars()
        yield
        if not bars_were_off:
            enable_progress_bars()


# ---- shared by the hardening tests (library and command line, and the app)


@pytest.fixture(scope="module")
def badinput_corpus(tmp_path_factory):
    import badinput

    root = tmp_path_factory.mktemp("badinput")
    yield {"images": badinput.image_cases(root / "images"), "zips": badinput.zip_cases(root / "zips"),
           "coco": badinput.coco_cases(root / "coco"), "root": root}
    print("\n" + badinput.report())


@pytest.fixture(scope="module")
def repo_before():
    import badinput

    return badinput.tree(REPO)
