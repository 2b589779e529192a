"""Fixtures of the Hub tests (test_pull.py pulls, test_push.py pushes): a
test Hub on 127.0.0.1 with two versions of a tiny artifact pushed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub_common import TOKEN, REPO_ID, decorate
from hub_server import HubServer


# -- environment ---------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def hub_settings(hf_constants):
    """The shared huggingface_hub settings of conftest, for every test here."""
    yield


@pytest.fixture(autouse=True)
def hf_env(monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE", "PLANKTON_MODEL_REPO", "PLANKTON_MODEL_REVISION", "PLANKTON_HUB_TIMEOUT", "PLANKTON_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


# -- artifacts -----------------------------------------------------------------
@pytest.fixture(scope="module")
def artifact_v1(tiny_artifact, tmp_path_factory) -> Path:
    return decorate(Path(shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("v1") / "model")), version="v1")


@pytest.fixture(scope="module")
def artifact_v2(tiny_artifact, tmp_path_factory) -> Path:
    return decorate(Path(shutil.copytree(tiny_artifact, tmp_path_factory.mktemp("v2") / "model")), version="v2", extras=False)


@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(hub, artifact_v1, artifact_v2) -> dict:
    """v1 on main, tagged v1.0; v2 on branch dev, tagged v2.0."""
    from hub.publish import push_artifact

    v1 = push_artifact(artifact_v1, REPO_ID, tag="v1.0", token=TOKEN, endpoint=hub.url)
    v2 = push_artifact(artifact_v2, REPO_ID, revision="dev", tag="v2.0", token=TOKEN, endpoint=hub.url)
    return {"v1": v1, "v2": v2}


@pytest.fixture(autouse=True)
def no_faults(request):
    yield
    if "hub" in request.fixturenames:
        server = request.getfixturevalue("hub")
        server.tamper.clear()
        server.hang = None
