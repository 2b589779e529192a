"""Issue 42 (the app in a biologist's hands, round two) and the app's part
of issue 43: one handler per slider, the compare box that takes no server
path, Compare's model A as Identify shows it, a save that cannot undo
corrections, provenance after a switch, no server path on screen, and an
installed app that has what it imports. CPU only, no network."""
from __future__ import annotations

import ast
import dataclasses
import io
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from app_utils import FRAMES, REPO, app_artifact
from plankton.results import NOT_PLANKTON
from plankton_app.uploads import InputError

pytestmark = pytest.mark.app


@pytest.fixture(scope="module")
def demo(service):
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import app

    return app.create_app(service)


# ---- the slider storm (issue 42, item 1)

def test_no_slider_event_has_two_handlers(demo):
    """Gradio 6's front end re-sends a trigger to every handler bound to it
    when one of them was deferred (``always_last``): two or more handlers
    on one trigger keep each other going after a drag. Every trigger with
    an ``always_last`` handler has that one handler alone."""
    config = demo.get_config_file()
    by_trigger: dict[tuple, list[dict]] = {}
    for dep in config["dependencies"]:
        for target in dep["targets"]:
            if target[0] is not None:  # (None, "then"): a chain's step, dispatched to its one function alone
                by_trigger.setdefault(tuple(target), []).append(dep)
    crowded = {t: [d.get("api_name") for d in deps] for t, deps in by_trigger.items()
               if len(deps) > 1 and any(d.get("trigger_mode") == "always_last" for d in deps)}
    assert not crowded, f"triggers with several handlers, one always_last: {crowded}"
    sliders = {c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") in ("det-slider", "cls-slider")}
    assert len(sliders) == 2
    on_sliders = [d for d in config["dependencies"] if any(t[0] in sliders for t in d["targets"])]
    assert [d["api_name"] for d in on_sliders] == ["ui_refilter"]  # every tab redraws through it


def test_slider_defaults_sit_on_the_step(demo, service):
    from plankton_app.tabs import slider_step

    assert slider_step(0.0, 0.624) == 0.001 and slider_step(0.0, 0.62) == 0.01 and slider_step(0.05, 0.3) == 0.01
    assert slider_step(0.0123, 0.3) == 0.0001
    for c in demo.get_config_file()["components"]:
        props = c.get("props", {})
        if props.get("elem_id") in ("det-slider", "cls-slider"):
            steps = (props["value"] - props["minimum"]) / props["step"]
            assert abs(steps - round(steps)) < 1e-6, props


# ---- the compare box (issue 43 a) and Compare's model A (issue 42, item 3)

def test_compare_refuses_server_paths_with_one_message(tmp_path, monkeypatch):
    from plankton_app.tabs import compare_panel

    monkeypatch.delenv("PLANKTON_MODEL_REPO", raising=False)
    root = tmp_path / "versions"
    root.mkdir()
    (root / "not-a-model").mkdir()
    shutil.copytree(FRAMES[0].parents[3] / "plankton_app" / "examples", tmp_path / "elsewhere")  # a real folder outside the root
    messages = set()
    for text in ["/etc", "/no/such/folder", "~", "../versions/not-a-model", str(tmp_path / "elsewhere"), "not-a-model", "v2"]:
        for hub in (None, "org/model"):
            if hub and text in ("v2", "not-a-model"):
                continue  # a revision's name: the Hub would be asked (refused above, with no Hub repo)
            with pytest.raises(InputError) as e:
                compare_panel.load_second(text, root, hub)
            messages.add((hub, str(e.value)))
    assert len({m for h, m in messages if h is None}) == 1 and len({m for h, m in messages if h}) == 1, messages
    for _, m in messages:
        assert "/" not in m.replace("org/model", "") and "etc" not in m and str(tmp_path) not in m


def test_compare_loads_a_version_offered_under_the_root_by_name(tiny_artifact, tmp_path):
    from plankton_app.tabs import compare_panel

    root = tmp_path / "versions"
    shutil.copytree(app_artifact(tiny_artifact), root / "v1")
    assert compare_panel.local_versions(root) == ["v1"]
    assert "v1" in compare_panel.offered(root, None)
    assert compare_panel.load_second("v1", root, None).config["name"] == "random-test-model"
    assert "no second model version" in compare_panel.offered(None, None)


def test_compare_model_a_is_what_identify_shows(service, session, tiny_artifact, tmp_path):
    """Model A, object for object, is Identify's view at the same thresholds
    (the frame is 1920 px wide: the old code ran A again on a 1280 px copy)."""
    from plankton_app.tabs import compare_panel

    assert session.frames[0].computed.scale != 1.0
    root = tmp_path / "versions"
    shutil.copytree(app_artifact(tiny_artifact), root / "same")
    other = compare_panel.load_second("same", root, None)
    det = service.det_floor
    view = service.refilter(session, det, 0.0)
    out = compare_panel.compare(service, session, other, det, 0.0)
    counts = {r["species"]: r["count_a"] for r in out["counts"]}
    assert counts.pop("total") == view.n_objects > 0
    assert {k: v for k, v in counts.items() if v} == view.counts
    # the same model on the same pixels: nothing changes, nothing is lone
    assert out["changed"] == [] and out["lone_a"] == out["lone_b"] == 0
    assert all(r["count_a"] == r["count_b"] for r in out["counts"])


def test_compare_headers_are_words(demo):
    from plankton.review.compare import COLUMNS
    from plankton_app.tabs.compare_panel import HEADERS

    table = next(c for c in demo.get_config_file()["components"] if c.get("props", {}).get("elem_id") == "compare-counts")
    headers = table["props"]["value"]["headers"]
    assert headers == [HEADERS[c] for c in COLUMNS] and not any("_" in h for h in headers)


def test_two_frames_with_one_name_stay_two_in_compare(service):
    from plankton_app.tabs.compare_panel import frame_names

    twice = service.analyse([FRAMES[0], FRAMES[0]])
    assert len(set(frame_names(twice))) == 2


# ---- saving a version (issue 43 b), its messages (42, item 4), provenance (42, item 5)

def test_save_writes_no_session(demo):
    """The slow save returns no session: one written back at its end would
    undo a correction made meanwhile. The quick step after it switches
    the session as it is then."""
    config = demo.get_config_file()
    deps = {d.get("api_name"): d for d in config["dependencies"]}
    state_ids = {c["id"] for c in config["components"] if c["type"] == "state"}
    save, use = deps["ui_save_version"], deps["ui_use_version"]
    session_ids = set(use["outputs"]) & set(deps["ui_correct"]["outputs"]) & state_ids
    assert len(session_ids) == 1
    assert not set(save["outputs"]) & session_ids
    assert use["trigger_after"] == save["id"]


def test_a_correction_made_during_a_save_is_kept(service, session, tmp_path):
    first = service.correct(session, 0, "Newfound sp")
    report = service.write_version(first, tmp_path / "v2", force=True)
    meanwhile = service.correct(first, 1, NOT_PLANKTON)  # made while the version was being written
    switched = service.use_version(meanwhile, tmp_path / "v2")
    assert switched.corrections == {0: "Newfound sp", 1: NOT_PLANKTON}
    assert "Newfound sp" in switched.prototypes.names and report.version == 2


def test_exports_name_the_version_that_named_the_objects(service, session, tmp_path):
    from plankton.sample.measure import Sample

    corrected = service.correct(session, 0, "Newfound sp")
    service.write_version(corrected, tmp_path / "v2", force=True)
    switched = dataclasses.replace(service.use_version(corrected, tmp_path / "v2"), sample=Sample(None, 0.1))
    files = service.sample_files(switched, service.refilter(switched, service.det_floor, 0.0), sample_id="s1")
    with zipfile.ZipFile(io.BytesIO(files["dwca.zip"])) as z:
        text = "".join(z.read(n).decode() for n in z.namelist())
    assert "random-test-model version 2" in text and "version 1" not in text
    with zipfile.ZipFile(io.BytesIO(files["ecotaxa.zip"])) as z:
        tsv = next(z.read(n).decode() for n in z.namelist() if n.endswith(".tsv"))
    assert "random-test-model version 2" in tsv
    before = service.sample_files(dataclasses.replace(corrected, sample=Sample(None, 0.1)), service.refilter(corrected), sample_id="s1")
    with zipfile.ZipFile(io.BytesIO(before["dwca.zip"])) as z:
        assert "random-test-model version 1" in "".join(z.read(n).decode() for n in z.namelist())


def test_messages_name_no_server_path(service, tmp_path):
    from plankton_app.privacy import public

    assert public(f"Cannot read {tmp_path}/v2/config.json: no such file") == "Cannot read config.json: no such file"
    assert public("C:\\Users\\me\\models\\v2 is missing") == "v2 is missing"
    assert public("see https://huggingface.co/org/model") == "see https://huggingface.co/org/model"
    assert str(service.folder) not in service.public(f"{service.folder}/metrics.json is broken")


# ---- the noise group (issue 42, item 2)

def test_the_noise_group_cannot_be_named(service, session):
    from plankton.review.discover import NOISE
    from plankton_app.tabs import clusters

    with pytest.raises(InputError, match="noise group"):
        clusters.name_cluster(service, session, [0, 1], "Unknown flagellate A", NOISE)
    rejected = clusters.name_cluster(service, session, [0, 1], NOT_PLANKTON, NOISE)
    assert rejected.corrections == {0: NOT_PLANKTON, 1: NOT_PLANKTON}
    assert clusters.name_cluster(service, session, [0, 1], "Newfound sp", "1").corrections == {0: "Newfound sp", 1: "Newfound sp"}


# ---- packaging (issue 43 c)

def _local_imports(folder: Path) -> set[str]:
    """Top-level names of this repository's packages imported anywhere under
    ``folder``, at module level or inside functions (a push runs late)."""
    local = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()} | {"app"}
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return found & local


def test_the_installed_app_has_what_it_imports():
    """``pip install .`` installs the packages pyproject.toml names; the
    app's package imports none other of this repository's (hub.publish was one)."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    installed = {p.split(".")[0] for p in include}
    assert _local_imports(REPO / "plankton_app") <= installed, _local_imports(REPO / "plankton_app") - installed
    from hub.publish import push_artifact  # python -m hub push still finds it
    from plankton_app.publish import push_artifact as same

    assert push_artifact is same


# ---- numbers that add up (issue 42, item 6)

class _Estimate:
    """A count estimate as ``quantify`` gives one: rows for some names only
    (the rare ones fall below concentration.csv's floor), and a total."""

    def __init__(self, rows: dict[str, float]):
        self.rows = rows
        self.species = list(rows)

    def row(self, name):
        v = self.rows[name]
        return {"count_est": v, "count_est_low": v * 0.8, "count_est_high": v * 1.2}


class _Counter:
    def __init__(self, rows):
        self.rows = rows

    def estimate(self, frames):
        return _Estimate(self.rows)


def test_on_screen_estimates_add_up_and_stay_blank_where_the_csv_is(service, session):
    from plankton.sample.measure import Sample
    from plankton_app.tabs.sample import OTHERS, concentration_table

    view = service.refilter(session, service.det_floor, 0.0)
    counts = view.counts
    named, *rest = [n for n in counts if n != "unknown"]
    # the calibration knows one species only; the total holds 0.4 of names too rare for a row
    rows = {named: 3.0, "total": 3.4 + 0.0}
    table = concentration_table(view, Sample(None, 1.0), _Counter(rows))
    by = {r[0]: r for r in table}
    assert by["total"][4] == 3.4
    assert sum(r[4] for r in table[1:] if r[4] != "") == pytest.approx(3.4, abs=0.05 * len(table))
    assert by[OTHERS][4] == 0.4
    for name in rest:  # counted, but the calibration gave no estimate: blank, as in concentration.csv, not the raw count
        assert by[name][1:5] == ["", "", "", ""] and by[name][5] == counts[name]
    plain = concentration_table(view, Sample(None, 1.0))  # no calibration: the estimate columns are the raw count
    assert all(r[4] == r[5] for r in plain)


# ---- the small things (issue 42, item 7)

def test_a_half_given_position_waits_quietly(service):
    from plankton_app.tabs.sample import popups, sample_meta

    _, problems = sample_meta("", "50.2", "", "", "", "", "")
    assert problems and popups(problems, "50.2", "") == []  # Enter in latitude: longitude comes next
    _, bad = sample_meta("", "95", "", "", "", "", "")
    assert any("95" in p for p in popups(bad, "95", ""))  # a wrong value still speaks at once
    _, both = sample_meta("", "50.2", "x", "", "", "", "")
    assert popups(both, "50.2", "x") == both


def test_api_example_uses_the_address_the_app_runs_at():
    from plankton_app.tabs.api import address, help_text

    class Request:
        headers = {"host": "127.0.0.1:8123"}
        url = type("U", (), {"scheme": "http"})()

    assert 'Client("http://127.0.0.1:8123/")' in help_text(address(Request()))
    Request.headers = {"host": "x.hf.space", "x-forwarded-proto": "https"}
    assert 'Client("https://x.hf.space/")' in help_text(address(Request()))


def test_identify_marks_corrected_objects_and_ap_is_no_link(service, session):
    from plankton_app import render

    corrected = service.correct(session, 0, "Newfound sp")
    rows, _ = render.table(corrected, service.refilter(corrected, service.det_floor, 0.0))
    first = next(r for r in rows if r[0] == 1)
    assert "Newfound sp" in first[3] and "corrected" in first[3] and first[6].startswith("the model said: ")
    assert all("corrected" not in r[3] for r in rows if r[0] != 1)
    md = render.model_markdown(service.model_info() | {"metrics": {"detection": {"ap50": 0.9, "recall": 0.8}}})
    assert "AP at IoU 0.5" in md and "@" not in md


def test_species_in_the_upload_get_distinct_colours(service, session):
    from plankton import palette

    names = [f"sp{i}" for i in range(34)]
    model_wide = palette.assign(names, [])
    assert len(set(model_wide.values())) < len(names)  # 34 species, 20 colours: repeats
    by_colour: dict = {}
    for n, c in model_wide.items():
        by_colour.setdefault(c, []).append(n)
    clash = next(v for v in by_colour.values() if len(v) > 1)[:2]  # two species drawn alike model-wide
    present = clash + [n for n in names if n not in clash][:3]
    upload = palette.for_upload(present, [tuple(clash)], model_wide)
    assert len({upload[n] for n in present}) == len(present)
    view = service.refilter(session, service.det_floor, 0.0)
    shown = {o.species for f in view.frames for o in f.objects} - {"unknown"}
    assert shown and len({view.colours[n] for n in shown}) == len(shown)


def test_saving_a_version_names_no_server_folder(tiny_artifact, tmp_path, monkeypatch):
    """Issue 42, item 4: the message says which version was saved, not where
    on the server, and does not tell a visitor to run app.py on a folder."""
    from gradio_client import Client, handle_file

    from app_utils import app_server

    server = app_server(app_artifact(tiny_artifact))
    monkeypatch.setenv("PLANKTON_VERSIONS_DIR", str(tmp_path / "versions"))
    monkeypatch.delenv("PLANKTON_PUSH_REPO", raising=False)
    client = Client(server.url, verbose=False, download_files=False)
    floor = server.service.det_floor
    client.predict([handle_file(str(FRAMES[0]))], floor, 0.0, api_name="/ui_identify")
    client.predict("1", "Newfound sp", floor, 0.0, "to review", api_name="/ui_correct")
    out = client.predict(True, api_name="/ui_save_version")
    text = out if isinstance(out, str) else out[0]
    assert "version 2" in text, text
    assert str(tmp_path) not in text and "app.py --model" not in text and "/" not in text
    assert len(list((tmp_path / "versions").iterdir())) == 1  # it was written, where the operator said
