"""Every import points down. The layer order is written once, in
docs/architecture.md's two tables; this reads them and walks every import
(those inside functions too) with ``ast``: a part of ``plankton/`` or
``plankton_app/`` imports only parts on lower layers, no group of modules
imports itself around a loop, and the project's folders import downwards
(``plankton`` ← ``plankton_app`` ← ``hub`` ← ``training`` ← ``benchmarks``,
``experiments``). The wave-3 house limits are checked here too."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = REPO / "docs" / "architecture.md"
FOLDERS = ("plankton", "plankton_app", "hub", "training", "benchmarks", "experiments", "app")
# what each project folder may import, besides itself (app: app.py, over the app's package)
FOLDER_DEPS = {"plankton": set(), "plankton_app": {"plankton"}, "hub": {"plankton", "plankton_app"}, "training": {"plankton", "hub"},
               "benchmarks": {"plankton", "plankton_app", "training"}, "experiments": {"plankton", "training"}, "app": {"plankton", "plankton_app"}}


def modules(*folders: str) -> dict[str, Path]:
    """Dotted module name → file, for every module under ``folders`` (``app``: app.py)."""
    return {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
            for folder in folders for p in (sorted((REPO / folder).rglob("*.py")) if (REPO / folder).is_dir() else [REPO / f"{folder}.py"])}


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports anywhere in its body,
    imports inside functions included, and modules named whole in a string
    (``importlib`` tables); ``from pkg import sub`` names the submodule when
    there is one, else ``pkg`` itself."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            mod = ".".join(x for x in (base, node.module or "") if x)
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith(("plankton.", "plankton_app.")):
            targets = [node.value.split(":")[0]] if node.value.split(":")[0] in known else []  # named for ``importlib`` (a lazy table)
        else:
            continue
        for t in targets:  # ``import a.b.c`` of a module that is a package's attribute: its nearest known module
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t:
                out.add(t)
    return out


def graph(*folders: str) -> dict[str, set[str]]:
    known = modules(*FOLDERS)
    return {m: imports(p, m, known) - {m} for m, p in known.items() if m.split(".")[0] in folders}


def part(module: str) -> str:
    """``plankton.run.batch`` → ``run/``; ``plankton.palette`` → ``palette``; ``plankton`` → ``__init__``."""
    pieces = module.split(".")
    if len(pieces) == 1:
        return "__init__"
    return pieces[1] + "/" if (REPO / pieces[0] / pieces[1]).is_dir() else pieces[1]


def layers(package: str) -> dict[str, int]:
    """Part → layer, read from the table after ``<!-- layers: package -->``
    in docs/architecture.md (top row: the highest layer)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    marker = f"<!-- layers: {package} -->"
    assert marker in text, f"docs/architecture.md has no table marked {marker}"
    rows = []
    for line in text.split(marker, 1)[1].strip().splitlines():
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].isdigit():
            rows.append((int(cells[0]), re.findall(r"`([^`]+)`", cells[1])))
    assert rows, f"the table after {marker} has no rows"
    return {p: layer for layer, parts in rows for p in parts}


def loops(deps: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("package", ["plankton", "plankton_app"])
def test_every_import_points_down(package):
    order = layers(package)
    deps = graph(package)
    parts = {part(m) for m in deps}
    assert parts <= order.keys(), f"parts of {package}/ missing from docs/architecture.md's layer table: {sorted(parts - order.keys())}"
    assert not order.keys() - parts, f"docs/architecture.md lists parts {package}/ does not have: {sorted(order.keys() - parts)}"
    up = sorted(f"{m} ({part(m)}, layer {order[part(m)]}) imports {d} ({part(d)}, layer {order[part(d)]})"
                for m, ds in deps.items() for d in ds
                if d.split(".")[0] == package and part(d) != part(m) and order[part(d)] >= order[part(m)])
    assert not up, "imports that do not point down:\n" + "\n".join(up)


def test_the_walk_sees_imports_inside_functions():
    """The checks above would pass vacuously if lazy imports went unseen."""
    deps = graph("plankton")
    assert "plankton.runtime.registry" in deps["plankton.pipeline.load"]
    assert "plankton.pipeline.load" in deps["plankton.hub"]  # imported inside load_resolved
    assert "plankton.pipeline.load" in deps["plankton"]  # named in the package's lazy table


@pytest.mark.parametrize("package", ["plankton", "plankton_app"])
def test_no_loop_among_parts(package):
    deps = graph(package)
    between = {}
    for m, ds in deps.items():
        between.setdefault(part(m), set()).update(part(d) for d in ds if d.split(".")[0] == package and part(d) != part(m))
    assert not loops(between), f"parts of {package}/ that import each other around a loop: {loops(between)}"


def test_no_loop_among_modules():
    found = loops(graph(*FOLDERS))
    assert not found, f"modules that import each other around a loop: {found}"


def test_the_project_folders_import_downwards():
    known = modules(*FOLDERS)
    wrong = sorted(f"{m} imports {d}" for m, ds in graph(*FOLDERS).items() for d in ds
                   if d.split(".")[0] != m.split(".")[0] and d.split(".")[0] not in FOLDER_DEPS[m.split(".")[0]])
    assert not wrong, "\n".join(wrong)
    assert {"app", "plankton_app.service", "plankton.pipeline.load"} <= known.keys()  # the walk found the project, app.py too
    assert "plankton_app.service" in graph("app")["app"]


def test_the_house_keeps_its_limits():
    """Wave 3's limits: at most 16 top-level modules in plankton/, no file
    over 400 lines, a README of at most 20 KB."""
    top = sorted(p.name for p in (REPO / "plankton").glob("*.py"))
    assert len(top) <= 16, f"plankton/ has {len(top)} top-level modules: {top}"
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    long = {f: n for f in tracked if (n := len((REPO / f).read_text(encoding="utf-8").splitlines())) > 400}
    assert not long, f"files over 400 lines: {long}"
    assert (REPO / "README.md").stat().st_size <= 20_000


def test_the_installed_app_imports_only_what_installs():
    """``pip install .`` installs plankton and plankton_app (the wheel test
    checks it); nothing in them may import the repository's other folders."""
    outside = {"hub", "training", "benchmarks", "experiments", "app", "tests"}
    found = sorted(f"{m} imports {d}" for m, p in modules("plankton", "plankton_app").items()
                   for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                   for d in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                             [node.module] if isinstance(node, ast.ImportFrom) and not node.level and node.module else [])
                   if d.split(".")[0] in outside)
    assert not found, found
