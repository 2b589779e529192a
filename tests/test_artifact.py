"""plankton.artifact.folder and plankton.pipeline.load: a model folder saves and loads to the same outputs, and
every way of being broken is an ArtifactError naming the problem — without
ever unpickling anything."""
import copy
import json
import pickle
import shutil
import stat

import numpy as np
import pytest
import torch

from plankton.results import UNKNOWN, Detections
from plankton.artifact.folder import save_artifact
from plankton.pipeline.load import load_artifact
from plankton.files import sha256
from plankton.artifact.manifest import (CONFIG, DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, FORMAT_VERSION, PROTOTYPES, REQUIRED, ArtifactError, read_config,
                               write_manifest)


@pytest.fixture
def model_copy(tiny_artifact, tmp_path):
    """A private copy of the tiny artifact, free to break."""
    return shutil.copytree(tiny_artifact, tmp_path / "model")


def edit_config(folder, change):
    config = json.loads((folder / CONFIG).read_text())
    change(config)
    (folder / CONFIG).write_text(json.dumps(config))


@pytest.fixture(scope="module")
def saved(tmp_path_factory, frame):
    """In-memory models, the artifact saved from them, and a 640×360 frame with boxes."""
    from plankton.model.crops import CropConfig
    from plankton.model.detector import DetectorConfig, build_detection_model
    from plankton.model.embedder import EmbeddingNet
    from plankton.model.identifier import IdentifierConfig
    from plankton.model.prototypes import Prototypes

    torch.manual_seed(3)
    det_model = build_detection_model("yolov8n.yaml")
    embedder = EmbeddingNet("resnet18", 64).eval()
    # Non-trivial batch-norm statistics, so a buffer lost on the way would show.
    embedder.neck[1].running_mean.normal_()
    embedder.neck[1].running_var.uniform_(0.5, 2)
    rng = np.random.default_rng(0)
    protos = Prototypes.build(rng.normal(size=(30, 64)), np.repeat(np.arange(3), 10), ["a", "b", "c"], k=2)
    parts = dict(detector=det_model, detector_cfg=DetectorConfig(architecture="yolov8n.yaml", imgsz=320, conf=0.001),
                 embedder=embedder, identifier_cfg=IdentifierConfig.for_backbone("resnet18", CropConfig(size=32), cls_conf=0.1),
                 prototypes=protos)
    root = tmp_path_factory.mktemp("saved")
    folder = save_artifact(root / "m", **parts, name="round-trip")
    image, gt = frame
    return dict(parts, root=root, folder=folder, image=np.ascontiguousarray(image[::3, ::3]), gt=gt / 3)


def test_save_load_gives_the_same_outputs(saved):
    from plankton.model.detector import Detector
    from plankton.model.identifier import Identifier

    folder, root, image, gt = saved["folder"], saved["root"], saved["image"], saved["gt"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([CONFIG, *REQUIRED, "taxonomy.csv"])
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "no temporary folder left behind"
    loaded = load_artifact(folder)
    assert loaded.config["name"] == "round-trip" and loaded.path == folder
    # The in-memory models (a Detector fuses its model in place: give it a copy).
    detector = Detector(copy.deepcopy(saved["detector"]), saved["detector_cfg"])
    identifier = Identifier(saved["embedder"], saved["identifier_cfg"], saved["prototypes"])

    np.testing.assert_array_equal(loaded.identifier.embed_boxes(image, gt), identifier.embed_boxes(image, gt))
    a, b = loaded.detector.predict(image), detector.predict(image)
    assert len(a) > 0
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.score, b.score)
    assert loaded.identifier.prototypes.names == ["a", "b", "c"]
    np.testing.assert_array_equal(loaded.identifier.prototypes.means, saved["prototypes"].means)
    assert loaded.identifier.cfg == saved["identifier_cfg"] and loaded.detector.cfg == saved["detector_cfg"]
    # The manifest lists every file with its checksum, and the default categories follow the classes.
    config = read_config(folder)
    for name in REQUIRED:
        assert config["files"][name]["sha256"] == sha256(folder / name)
    assert [c["name"] for c in config["categories"]] == ["a", "b", "c"]


def test_float16_weights(saved):
    parts = {k: saved[k] for k in ("detector", "detector_cfg", "embedder", "identifier_cfg", "prototypes")}
    half = save_artifact(saved["root"] / "half", **parts, weights_dtype="float16")
    for name in (DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS):
        assert (half / name).stat().st_size < 0.6 * (saved["folder"] / name).stat().st_size
    loaded, full = load_artifact(half), load_artifact(saved["folder"])
    assert all(p.dtype == torch.float32 for p in loaded.identifier.model.parameters())
    image, gt = saved["image"], saved["gt"]
    np.testing.assert_allclose(loaded.identifier.embed_boxes(image, gt), full.identifier.embed_boxes(image, gt), atol=2e-2)


def test_tiny_artifact_config(tiny_artifact, frames_coco):
    config = read_config(tiny_artifact)
    assert config["format_version"] == FORMAT_VERSION == 2 and config["name"] == "random-test-model"
    assert set(REQUIRED) <= config["files"].keys()
    present = {frames_coco.categories[b.category_id].name for b in frames_coco.boxes}
    assert sorted(config["prototypes"]["names"]) == sorted(present)
    assert {"plankton", "torch", "ultralytics"} <= config["versions"].keys()


def test_artifact_files_are_readable_by_others(tiny_artifact):
    for p in tiny_artifact.iterdir():
        assert p.stat().st_mode & stat.S_IROTH, f"{p.name} is not world-readable"


@pytest.mark.parametrize("missing", [*REQUIRED, CONFIG])
def test_missing_file_is_named(model_copy, missing):
    (model_copy / missing).unlink()
    with pytest.raises(ArtifactError, match=missing.replace(".", r"\.")) as err:
        load_artifact(model_copy)
    assert "\n" not in str(err.value)


def test_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope")


def test_tampered_file_fails_its_checksum(model_copy):
    path = model_copy / EMBEDDER_WEIGHTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum") as err:
        load_artifact(model_copy)
    assert EMBEDDER_WEIGHTS in str(err.value)


def test_tensor_of_the_wrong_shape_is_named(model_copy):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_copy / EMBEDDER_WEIGHTS))
    assert state["neck.1.running_mean"].shape == (512,)
    state["neck.1.running_mean"] = torch.zeros(300)
    save_file(state, str(model_copy / EMBEDDER_WEIGHTS))
    write_manifest(model_copy)  # checksums agree: only the shape is wrong
    with pytest.raises(ArtifactError, match=r"neck\.1\.running_mean") as err:
        load_artifact(model_copy)
    assert "(300,)" in str(err.value) and "(512,)" in str(err.value)


def test_missing_tensor_is_reported(model_copy):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_copy / EMBEDDER_WEIGHTS))
    del state["neck.0.weight"]
    save_file(state, str(model_copy / EMBEDDER_WEIGHTS))
    write_manifest(model_copy)
    with pytest.raises(ArtifactError, match=r"neck\.0\.weight"):
        load_artifact(model_copy)


def test_unknown_format_version(model_copy):
    edit_config(model_copy, lambda c: c.update(format_version=99))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_artifact(model_copy)


def test_version_1_artifact_still_loads(model_copy, frame):
    """An artifact from the first wave (format 1: no size input, no
    per-class thresholds, normalisation written out) loads and answers as
    the same artifact in format 2."""
    image, gt = frame
    now = load_artifact(model_copy).identifier.embed_boxes(image, gt[:4])

    def as_v1(c):
        c["format_version"] = 1
        c["embedder"].pop("size_features")
        c["identifier"]["crop"].pop("size_input")
        c["identifier"].pop("class_thresholds")
    edit_config(model_copy, as_v1)
    old = load_artifact(model_copy)
    assert old.identifier.cfg.class_thresholds == {} and not old.identifier.cfg.crop.size_input
    np.testing.assert_array_equal(old.identifier.embed_boxes(image, gt[:4]), now)


def test_class_thresholds_round_trip_and_apply(model_copy, frame):
    """Per-class thresholds written to config.json come back exactly at the
    default, move with the global threshold (never past 1), and decide
    unknown by the best class's own value."""
    image, gt = frame
    cascade = load_artifact(model_copy)
    names = cascade.class_names
    a = cascade.analyse_boxes(image, Detections(gt[:6], np.ones(6)))
    best = a.similarity.argmax(1)
    value = round(float(a.similarity[:, best[0]].max()) + 0.01, 4)  # no object of these boxes reaches it
    assert value < 0.95, "the random test model should not be this sure"
    strict = {names[best[0]]: value}
    edit_config(model_copy, lambda c: c["identifier"].update(cls_conf=-1.0, class_thresholds=strict))
    loaded = load_artifact(model_copy)
    assert loaded.identifier.cfg.class_thresholds == strict
    b = loaded.analyse_boxes(image, Detections(gt[:6], np.ones(6)))
    np.testing.assert_allclose(b.thresholds(-1.0), [value if n in strict else -1.0 for n in names], rtol=1e-6)
    species = [o.species for o in b.resolve(0.0, -1.0).objects]
    assert species == [UNKNOWN if names[k] in strict else names[k] for k in best]
    k = names.index(names[best[0]])
    assert value < b.thresholds(-0.5)[k] < b.thresholds(0.5)[k] < 1.0 == pytest.approx(b.thresholds(1.0)[k])  # moves up, reaches 1 only at the top
    edit_config(model_copy, lambda c: c["identifier"].update(class_thresholds={"Not a species": 0.5}))
    with pytest.raises(ArtifactError, match="class thresholds for species without a prototype: Not a species"):
        load_artifact(model_copy)


def test_invalid_json_config(model_copy):
    (model_copy / CONFIG).write_text('{"format_version": 1, "detector": ')
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(model_copy)
    (model_copy / CONFIG).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="format version"):
        load_artifact(model_copy)


def test_missing_section_and_bad_values(model_copy):
    original = (model_copy / CONFIG).read_text()
    edit_config(model_copy, lambda c: c.pop("embedder"))
    with pytest.raises(ArtifactError, match="'embedder'"):
        load_artifact(model_copy)
    (model_copy / CONFIG).write_text(original)
    edit_config(model_copy, lambda c: c["embedder"].update(backbone="nonexistent_net"))
    with pytest.raises(ArtifactError, match="nonexistent_net"):
        load_artifact(model_copy)


def test_prototype_names_must_agree_with_config(model_copy):
    edit_config(model_copy, lambda c: c["prototypes"].update(names=c["prototypes"]["names"][::-1]))
    with pytest.raises(ArtifactError, match="names differ"):
        load_artifact(model_copy)


class _Evil:
    """Unpickling this creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("target", [EMBEDDER_WEIGHTS, PROTOTYPES])
def test_loading_never_unpickles(model_copy, tmp_path, target):
    probe, marker = tmp_path / "probe", tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Evil(probe))).close()
    assert probe.exists(), "the payload is live when unpickled"
    (model_copy / target).write_bytes(pickle.dumps({"weight": _Evil(marker)}))
    write_manifest(model_copy)  # a correct manifest for the malicious file
    with pytest.raises(ArtifactError, match=target.replace(".", r"\.")):
        load_artifact(model_copy)
    assert not marker.exists()
