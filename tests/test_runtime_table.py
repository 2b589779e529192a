"""The runtimes are one table (``plankton.runtime.TABLE``) of modules that
implement one interface (``plankton.runtime.interface``): the names the
command line takes, the files a Hub download fetches and what
``runtime="auto"`` tries all come from it, so a new runtime is one module
plus one line in the table. A toy runtime, added in the test alone, is
listed, chosen and loaded with no other change."""
from __future__ import annotations

import shutil
from fnmatch import fnmatch
import sys
import types
import warnings
from pathlib import Path

import pytest

import plankton.runtime
from plankton.artifact.manifest import ArtifactError, read_config
from plankton.pipeline.load import load_artifact
from plankton.runtime import TABLE, RuntimeSpec, runtime_names, spec_for
from plankton.runtime.interface import DetectorNet, EmbedderNet, Runtime, StandIn
from plankton.runtime.registry import auto_runtime, load_onnx_models, runtime_summary


def test_every_runtime_in_the_table_implements_the_interface():
    names = [n for spec in TABLE for n in spec.names]
    assert len(names) == len(set(names)) and not {"torch", "auto"} & set(names)
    assert len({spec.key for spec in TABLE}) == len(TABLE)
    for spec in TABLE:
        assert isinstance(spec, RuntimeSpec) and spec.files and spec.label
        assert isinstance(spec.runtime(), Runtime), spec.module
        assert all(spec_for(n) is spec for n in spec.names)


def test_runtime_names_come_from_the_table():
    names = plankton.runtime.RUNTIMES
    assert names == runtime_names() and names[0] == "torch" and names[-1] == "auto"
    assert set(names) == {"torch", "auto"} | {n for spec in TABLE for n in spec.names}
    assert plankton.runtime.INT8_RUNTIMES == spec_for("int8").names


def test_hub_fetches_every_runtimes_files():
    from plankton.hub import ALLOW_PATTERNS, allowed
    from plankton.runtime.onnx import ONNX_FILES
    from plankton.runtime.quantized import ROUTE_FILES, route_files

    assert all(p in ALLOW_PATTERNS for spec in TABLE for p in spec.files)
    files = {"onnx": list(ONNX_FILES), "int8": [f for route in ROUTE_FILES for f in route_files(route)]}
    for key, names in files.items():
        spec = next(s for s in TABLE if s.key == key)
        assert all(any(fnmatch(f, p) for p in spec.files) and allowed(f) for f in names), (key, names)
    assert not any(fnmatch("detector.safetensors", p) for s in TABLE for p in s.files)
    bundled = read_config(Path(__file__).parents[1] / "models" / "default", check_files=False)
    assert all(allowed(f) for f in bundled["files"])


def test_stand_ins_offer_what_the_predictors_call():
    from plankton.runtime.onnx import OrtDetectionModel, OrtEmbeddingModel
    from plankton.runtime.quantized import OvDetectionModel, OvEmbeddingModel

    for cls in (OrtDetectionModel, OrtEmbeddingModel, OvDetectionModel, OvEmbeddingModel):
        assert issubclass(cls, StandIn)
    with pytest.raises(ValueError, match="CPU only"):
        OrtDetectionModel.to(object.__new__(OrtDetectionModel), "meta")


# ---------------------------------------------------------------- a toy runtime


TOY_FILE = "toy.graph"


class _ToyRuntime:
    """Runs the PyTorch networks when the folder has a ``toy.graph``: the
    smallest thing that implements ``Runtime``."""

    def status(self, folder, config, asked=None, device="cpu"):
        if not (folder / TOY_FILE).is_file():
            return f"{folder}: no {TOY_FILE}"
        text = (folder / TOY_FILE).read_text()
        return None if text == "ok" else f"{folder}: {TOY_FILE} says {text}"

    def offered(self, folder, config, device):
        return (folder / TOY_FILE).is_file()

    def name(self, config):
        return "toy"

    def load(self, folder, config, threads=None, streams=1):
        cascade = load_artifact(folder, runtime="torch", verify=False)
        return cascade.detector.model, cascade.identifier.model

    def summary(self, folder, config):
        return None


@pytest.fixture
def toy(monkeypatch):
    """One new module, one new line in the table: nothing else changes."""
    module = types.ModuleType("toy_runtime")
    module.RUNTIME = _ToyRuntime()
    monkeypatch.setitem(sys.modules, "toy_runtime", module)
    spec = RuntimeSpec("toy", "TOY", {"toy": "Toy runtime"}, ("*.graph",), "toy_runtime")
    monkeypatch.setattr(plankton.runtime, "TABLE", (spec,) + TABLE)
    return spec


def test_a_runtime_added_to_the_table_is_listed_chosen_and_loaded(toy, tiny_artifact, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_artifact, folder)
    config = read_config(folder)
    assert "toy" in runtime_names()
    plan = auto_runtime(folder, config)
    assert plan["runtime"] == "torch" and list(plan["why_not"]) == ["toy"] + [s.key for s in TABLE]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no toy file is the normal case: silent
        assert load_onnx_models(folder, config, "auto") is None
    with pytest.raises(ArtifactError, match="no toy.graph"):
        load_onnx_models(folder, config, "toy")

    (folder / TOY_FILE).write_text("ok")
    assert auto_runtime(folder, config) == {"runtime": "toy", "why_not": {}}
    assert runtime_summary(folder, config) == "Toy runtime (toy)"
    det, emb, name = load_onnx_models(folder, config, "auto")
    assert name == "toy" and isinstance(det, DetectorNet) and isinstance(emb, EmbedderNet)
    assert load_artifact(folder, runtime="toy", verify=False).runtime == "toy"
    assert load_artifact(folder, runtime="auto", verify=False).runtime == "toy"

    (folder / TOY_FILE).write_text("stale")  # offered but unusable: "auto" says why and moves on
    with pytest.warns(RuntimeWarning, match="not using the TOY files: .*toy.graph says stale"):
        assert load_artifact(folder, runtime="auto", verify=False).runtime == "torch"


def test_an_unknown_runtime_is_refused_with_the_tables_names(tiny_artifact):
    with pytest.raises(ValueError, match="torch, onnx, int8, onnx-int8, openvino-int8, auto"):
        load_onnx_models(tiny_artifact, read_config(tiny_artifact), "tensorrt")
