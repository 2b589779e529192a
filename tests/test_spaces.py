"""The Space configuration that Spaces.md describes is valid for this repo."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "Spaces.md"
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
HARDWARE = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "l4x4", "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.M | re.S)


@pytest.fixture(scope="module")
def front_matter() -> dict:
    blocks = [b for b in _blocks("yaml") if b.startswith("---\n")]
    assert blocks, "Spaces.md has no ```yaml block holding a --- front matter --- block"
    text = blocks[0]
    assert text.rstrip("\n").endswith("\n---"), "the front matter block is not closed by ---"
    meta = yaml.safe_load(text.rstrip("\n")[len("---\n"):-len("\n---")])
    assert isinstance(meta, dict)
    return meta


def test_front_matter_has_the_required_keys(front_matter):
    for key in ("title", "sdk", "sdk_version", "python_version", "app_file"):
        assert key in front_matter, key
    assert front_matter["sdk"] == "gradio"
    assert isinstance(front_matter["python_version"], str) and re.fullmatch(r"3\.\d+(\.\d+)?", front_matter["python_version"])
    assert front_matter.get("colorFrom", "blue") in COLORS and front_matter.get("colorTo", "blue") in COLORS
    assert front_matter.get("suggested_hardware", "cpu-basic") in HARDWARE
    assert len(front_matter.get("short_description", "")) <= 60


def test_sdk_version_matches_installed_and_pinned_gradio(front_matter):
    assert str(front_matter["sdk_version"]) == importlib.metadata.version("gradio")
    req = REPO / "requirements.txt"
    if req.is_file():
        pins = re.findall(r"^gradio==(\S+)", req.read_text(), flags=re.M)
        assert not pins or pins[0] == str(front_matter["sdk_version"]), "requirements.txt pins another gradio than the Space's sdk_version"


def test_app_file_exists(front_matter):
    app = REPO / front_matter["app_file"]
    if not app.is_file():
        pytest.skip(f"{front_matter['app_file']} is not in the repository yet")
    assert app.suffix == ".py"


def test_doc_names_the_settings_the_code_reads():
    from plankton.hub import ENV_REPO, ENV_REVISION, ENV_TIMEOUT

    text = DOC.read_text(encoding="utf-8")
    for name in (ENV_REPO, ENV_REVISION, ENV_TIMEOUT, "HF_TOKEN"):
        assert f"`{name}`" in text, name
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in "".join(_blocks("text"))
    assert re.search(r"^MEASURED: ", text, flags=re.M), "the cold-start figures line is missing"
    # the optional preload entry is valid YAML of the documented shape
    preload = [yaml.safe_load(b) for b in _blocks("yaml") if b.startswith("preload_from_hub:")]
    assert preload and all(len(entry.split()) == 3 for entry in preload[0]["preload_from_hub"])
