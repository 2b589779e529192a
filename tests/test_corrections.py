"""Corrections become a new model version: the app's /correct endpoint →
corrections.coco.json → `python -m plankton enrol` → a new artifact that
names the corrected objects; its config records parent and corrections;
a harmful correction set is refused; a saved version is published to the
project's own Hub test server and pulled back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gradio_client import Client, handle_file  # noqa: E402

from app_utils import FRAMES, app_artifact, app_server  # noqa: E402
from repo_paths import EXAMPLES  # noqa: E402
from hub_server import HubServer  # noqa: E402

pytestmark = [pytest.mark.app, pytest.mark.slow]
NEW = "Noctiluca sp"


@pytest.fixture(scope="module")
def server(tiny_artifact):
    return app_server(app_artifact(tiny_artifact))


@pytest.fixture(scope="module")
def corrected(server, tmp_path_factory):
    """One client's session: three objects corrected (a new species, not
    plankton, and a known species), and its corrections as a COCO file."""
    client = Client(server.url, verbose=False, download_files=False)
    floor = server.service.det_floor  # random detector weights score everything low
    result = client.predict([handle_file(str(FRAMES[0]))], floor, 0.0, api_name="/identify")
    objects = result["frames"][0]["objects"]
    assert len(objects) >= 3
    known = server.service.class_names[0]
    labels = {objects[0]["id"]: NEW, objects[1]["id"]: "not plankton", objects[2]["id"]: known}
    for oid, label in labels.items():
        out = client.predict(oid, label, api_name="/correct")
    assert out["corrections"] == {str(k): v for k, v in sorted(labels.items())}
    after = client.predict(floor, 0.0, api_name="/refilter")["frames"][0]["objects"]
    by_id = {o["id"]: o for o in after}
    assert by_id[objects[0]["id"]]["species"] == NEW and by_id[objects[0]["id"]]["corrected"] is True
    assert objects[1]["id"] not in by_id  # not plankton: out of counts and exports
    coco = client.predict(api_name="/corrections")
    path = tmp_path_factory.mktemp("corrections") / "corrections.coco.json"
    path.write_text(json.dumps(coco))
    return {"client": client, "path": path, "coco": coco, "objects": objects, "labels": labels, "known": known}


def test_corrections_are_valid_coco_for_classify(corrected, tmp_path, server):
    from plankton.cli import main
    from plankton.coco import load_coco

    ds = load_coco(corrected["path"], EXAMPLES / "frames")  # the frames under their uploaded names
    assert len(ds.boxes) == 3 and {c.name for c in ds.categories.values()} >= {NEW, "not plankton", corrected["known"]}
    boxes = {tuple(round(v, 1) for v in b.xyxy) for b in ds.boxes}
    assert {tuple(round(v, 1) for v in o["box"]) for o in corrected["objects"][:3]} == boxes
    code = main(["classify", str(corrected["path"]), "--images", str(EXAMPLES / "frames"), "--out", str(tmp_path / "c"),
                 "--model", str(server.service.folder), "--quiet"])
    assert code == 0 and len((tmp_path / "c" / "classifications.csv").read_text().splitlines()) == 1 + 3


def test_enrol_cli_makes_a_child_that_names_the_corrections(corrected, server, tmp_path, capsys):
    from plankton.pipeline.load import load_artifact
    from plankton.cli import main
    from plankton.files import sha256
    from plankton.images import read_image
    from plankton.artifact.manifest import read_config
    from plankton.results import UNKNOWN, Detections

    parent = server.service.folder
    child = tmp_path / "child"
    code = main(["enrol", "--model", str(parent), "--coco", str(corrected["path"]), "--images", str(EXAMPLES / "frames"),
                 "--out", str(child), "--quiet", "--force"])
    assert code == 0, capsys.readouterr().err
    config, before = read_config(child), read_config(parent)
    assert config["version"] == before.get("version", 1) + 1
    assert config["parent"]["config_sha256"] == sha256(parent / "config.json")
    assert config["enrolled"]["source"]["sha256"] == sha256(corrected["path"])
    assert config["enrolled"]["examples_per_label"] == {NEW: 1, "not plankton": 1, corrected["known"]: 1}
    assert config["enrolled"]["new_species"] == [NEW] and NEW in {c["name"] for c in config["categories"]}
    cascade = load_artifact(child)
    frame = read_image(FRAMES[0])
    boxes = np.array([o["box"] for o in corrected["objects"][:2]], np.float32)
    species = [o.species for o in cascade.analyse_boxes(frame, Detections(boxes, np.ones(2))).resolve(0.0, 0.0).objects]
    assert species == [NEW, UNKNOWN]  # the new species by name; not plankton is answered unknown
    assert NEW not in load_artifact(parent).class_names  # the parent is unchanged


def test_a_harmful_correction_set_is_refused(server, tmp_path):
    """Relabel most validation objects of one species as another: top-1 on
    the known species falls, and enrol refuses unless forced."""
    from plankton.artifact.enrol import EnrolRefused, enrol
    from plankton.artifact.validation import ValidationSet

    folder = server.service.folder
    v = ValidationSet.load(folder / "validation.safetensors")
    true = np.asarray(v.true_names, dtype=object)
    a, b = v.class_names[0], v.class_names[1]
    wrong = {b: v.embeddings[true == a]}
    with pytest.raises(EnrolRefused, match=r"lower top-1 .* pass --force"):
        enrol(folder, wrong, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    report = enrol(folder, wrong, tmp_path / "forced", force=True)
    assert report.top1_change < -0.01 and (tmp_path / "forced" / "config.json").is_file()


def test_saved_version_is_published_and_pulled_back(corrected, server, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from plankton.hub import resolve_model
    from plankton.artifact.manifest import read_config

    service = server.service  # the client's corrections again, on the server side, as the Review tab's button has them
    session = service.analyse([FRAMES[0]])
    for oid, label in corrected["labels"].items():
        session = service.correct(session, oid, label)
    with HubServer(token="hf_test_publish_token_0123456789") as hub:
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_TOKEN", "hf_test_publish_token_0123456789")
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("PLANKTON_PUSH_REPO", "plankton-lab/app-versions")
        report, switched = service.save_version(session, tmp_path / "v2", force=True)
        assert NEW in switched.prototypes.names and switched.version == str(tmp_path / "v2")
        assert NEW in {o.species for f in service.refilter(switched, service.det_floor, 0.0).frames for o in f.objects}
        pushed = service.publish_version(tmp_path / "v2")
        resolved = resolve_model("plankton-lab/app-versions", pushed["commit_sha"], cache_dir=tmp_path / "cache", endpoint=hub.url, strict=True)
        assert resolved.commit == pushed["commit_sha"]
        assert read_config(resolved.path)["prototypes"]["names"] == read_config(tmp_path / "v2")["prototypes"]["names"]
        assert NEW in read_config(resolved.path)["prototypes"]["names"] and report.version == read_config(resolved.path)["version"]
    monkeypatch.delenv("PLANKTON_PUSH_REPO")
    assert service.publish_version(tmp_path / "v2") is None  # nothing configured: nothing published
    assert Path(resolved.path).is_dir()


def test_training_leaves_not_plankton_boxes_out(corrected, tmp_path):
    """Corrections are valid training input: prepare keeps the species'
    boxes and drops the not-plankton ones (neither detector targets nor a class)."""
    from training import prepare

    prepare.main(["--coco", str(corrected["path"]), "--images", str(EXAMPLES / "frames"), "--out", str(tmp_path),
                  "--val-fraction", "0.0", "--no-audit"])
    index = json.loads((tmp_path / "crops.json").read_text())
    names = {c["id"]: c["name"] for c in index["categories"]}
    assert "not plankton" not in names.values() and len(index["crops"]) == 2
    assert {names[c["category_id"]] for c in index["crops"]} == {NEW, corrected["known"]}
    (label,) = (tmp_path / "detector" / "labels" / "train").glob("*.txt")
    assert len(label.read_text().split()) == 2 * 5  # two YOLO boxes, not three
