"""The Space configuration that Spaces.md describes is valid for this repo, and
is what ``python -m hub space`` uploads (the deploy itself: test_space_deploy.py)."""
from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "Spaces.md"
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
HARDWARE = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "l4x4", "a10g-small", "a10g-large", "a10g-largex2", "a10g-largex4", "a100-large"}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.M | re.S)


def _front_matter_block() -> str:
    blocks = [b for b in _blocks("yaml") if b.startswith("---\n")]
    assert blocks, "Spaces.md has no ```yaml block holding a --- front matter --- block"
    return blocks[0]


@pytest.fixture(scope="module")
def front_matter() -> dict:
    text = _front_matter_block()
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
    assert app.is_file(), f"the Space's app_file {front_matter['app_file']} is not in the repository"
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


# -- what `python -m hub space` uploads ------------------------------------------
def test_doc_shows_the_front_matter_the_deploy_writes(front_matter):
    from hub.space import FRONT_MATTER, README, space_files
    from hub.space import front_matter as generated

    assert _front_matter_block() == generated(), "Spaces.md's front matter block differs from hub/space.py FRONT_MATTER: paste front_matter()'s text"
    assert front_matter == FRONT_MATTER
    readme = space_files()[README].decode()
    assert readme.startswith(generated() + "\n# ") and "PLANKTON_MODEL_REVISION" in readme


def test_packages_txt_is_committed_as_the_doc_shows():
    listed = [b for b in _blocks("text") if b.startswith("libgl1")]
    assert listed and (REPO / "packages.txt").read_text() == listed[0]


def test_space_files_are_the_app_library_and_bundled_model_only():
    from hub.space import CPU_INDEX, space_files

    files = space_files()
    tops = {p.split("/")[0] for p in files}
    assert tops == {"README.md", "app.py", "packages.txt", "requirements.txt", "plankton", "plankton_app", "models"}
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc") or p.startswith(("tests/", "training/", "hub/", "docs/", "work/"))]
    # every committed file of the app and the library goes, with the example frames
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "app.py", "plankton", "plankton_app"], capture_output=True, text=True, check=True).stdout.split()
    assert [p for p in tracked if (REPO / p).is_file() and p not in files] == []
    assert {p for p in files if p.startswith("plankton_app/examples/frames/")} == {f"plankton_app/examples/frames/{f.name}" for f in (REPO / "plankton_app/examples/frames").glob("*.jpg")} != set()
    # by default the real bundled model, whole
    model = {p.removeprefix("models/default/"): src for p, src in files.items() if p.startswith("models/default/")}
    assert set(model) == {f.name for f in (REPO / "models/default").iterdir() if f.is_file()}
    assert all(src == REPO / "models/default" / name for name, src in model.items())
    # requirements: the repository's, under the CPU torch index
    req = files["requirements.txt"].decode()
    assert CPU_INDEX in req.splitlines() and req.endswith((REPO / "requirements.txt").read_text())
    assert files["packages.txt"] == REPO / "packages.txt"


def _checkout(root: Path, git: bool) -> Path:
    """A small tree shaped like this repository, with caches, ignored and out-of-scope files."""
    for rel, text in {"app.py": "", "plankton/__init__.py": "", "plankton/core.py": "", "plankton_app/__init__.py": "",
                      "plankton/__pycache__/core.cpython-311.pyc": "", "plankton/run.log": "", "plankton_app/.secret": "",
                      "tests/test_x.py": "", "training/train.py": "", "work/big.bin": "", "hub/space.py": "",
                      ".gitignore": "*.log\n/work/\n", "packages.txt": "libgl1\n",
                      "requirements.txt": (REPO / "requirements.txt").read_text()}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if git:
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        subprocess.run(["git", "-C", str(root), "add", "app.py", "plankton/core.py"], check=True)  # tracked and untracked files both go
    return root


@pytest.mark.parametrize("git", [True, False], ids=["git checkout", "no git"])
def test_space_files_leave_out_caches_and_what_git_ignores(tmp_path, git):
    from hub.space import space_files

    if git and shutil.which("git") is None:
        pytest.skip("git is not installed")
    files = space_files(_checkout(tmp_path, git), model_dir=REPO / "models/default")
    code = sorted(p for p in files if not p.startswith("models/"))
    expected = ["README.md", "app.py", "packages.txt", "plankton/__init__.py", "plankton/core.py", "plankton_app/__init__.py", "requirements.txt"]
    assert code == (expected if git else sorted(expected + ["plankton/run.log"]))  # without git, ignores are unknown


def test_deploy_refuses_a_gradio_pin_other_than_sdk_version(tmp_path):
    from hub.publish import PushError
    from hub.space import space_requirements

    with pytest.raises(PushError, match=r"pins gradio \['5.0.0'\] but the Space's sdk_version is"):
        space_requirements("torch==2.0\ngradio==5.0.0\n")
