"""ONNX export and the ONNX Runtime path, against PyTorch, on the tiny
random-weight artifact (exported once into a copy)."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch


from plankton.pipeline.load import load_artifact  # noqa: E402
from plankton.artifact.manifest import ArtifactError, read_config, write_manifest  # noqa: E402
from plankton.runtime.onnx import DETECTOR_ONNX, EMBEDDER_ONNX, OrtDetectionModel, OrtEmbeddingModel, session_options  # noqa: E402


@pytest.fixture(scope="module")
def onnx_artifact(tiny_artifact, tmp_path_factory):
    """A copy of the tiny artifact with ONNX files, made by the export script."""
    from training.export_onnx import main

    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_artifact, folder)
    main([str(folder)])
    return folder


@pytest.fixture(scope="module")
def cascades(onnx_artifact):
    return load_artifact(onnx_artifact, runtime="torch"), load_artifact(onnx_artifact, runtime="onnx")


def test_export_adds_checksummed_files_and_records_them(onnx_artifact):
    config = read_config(onnx_artifact)  # checks every listed file's sha256
    assert {DETECTOR_ONNX, EMBEDDER_ONNX} <= set(config["files"])
    section = config["onnx"]
    assert section["files"] == {"detector": DETECTOR_ONNX, "embedder": EMBEDDER_ONNX}
    for name in ("detector.safetensors", "embedder.safetensors"):
        assert section["source_sha256"][name] == config["files"][name]["sha256"]
    assert section["parity"]["embedder_min_cosine"] >= 0.9999
    assert max(section["parity"]["detector_max_abs_diff"].values()) < 1e-2


def test_load_onnx_runtime_gives_drop_in_models(cascades):
    torch_c, onnx_c = cascades
    assert torch_c.runtime == "torch" and onnx_c.runtime == "onnx"
    assert isinstance(onnx_c.detector.model, OrtDetectionModel)
    assert isinstance(onnx_c.identifier.model, OrtEmbeddingModel)
    assert onnx_c.detector.stride == torch_c.detector.stride == 32
    assert onnx_c.identifier.model.dim == torch_c.identifier.model.dim == 512
    assert onnx_c.config["name"] == torch_c.config["name"]


@pytest.mark.parametrize("shape", [(1, 3, 320, 320), (2, 3, 192, 256)])  # dynamic batch, height and width
def test_detector_raw_outputs_match_pytorch(cascades, shape):
    torch_c, onnx_c = cascades
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = torch_c.detector.model(x)[0]
    got = onnx_c.detector.model(x)
    assert got.shape == ref.shape == (shape[0], 4 + 1, sum((shape[2] // s) * (shape[3] // s) for s in (8, 16, 32)))
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 7, 70])  # 70 > batch_size 64: two batches
def test_embeddings_match_pytorch(cascades, n):
    torch_c, onnx_c = cascades
    size = torch_c.identifier.cfg.crop.size
    crops = np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    ref, got = torch_c.identifier.embed_crops(crops), onnx_c.identifier.embed_crops(crops)
    assert got.shape == ref.shape == (n, 512) and got.dtype == np.float32
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() >= 0.999


def test_end_to_end_boxes_and_species_match_pytorch(cascades, frame):
    import cv2

    image = cv2.resize(frame[0], (960, 540), interpolation=cv2.INTER_AREA)  # half size: quicker, same code path
    torch_c, onnx_c = cascades
    a, b = torch_c.analyse(image, "f"), onnx_c.analyse(image, "f")
    assert len(a.detections) == len(b.detections) > 0
    np.testing.assert_allclose(b.detections.xyxy, a.detections.xyxy, atol=0.5)
    np.testing.assert_allclose(b.detections.score, a.detections.score, atol=1e-4)
    assert np.sum(a.embeddings * b.embeddings, axis=1).min() >= 0.999
    ra, rb = a.resolve(a.det_floor, 0.0), b.resolve(b.det_floor, 0.0)
    assert [o.species for o in ra.objects] == [o.species for o in rb.objects]


def test_auto_uses_onnx_when_present_and_torch_otherwise(onnx_artifact, tiny_artifact, tiny_cascade):
    assert load_artifact(onnx_artifact, runtime="auto").runtime == "onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ONNX files is the normal case: silent
        assert load_artifact(tiny_artifact, runtime="auto").runtime == "torch"
    assert tiny_cascade.runtime == "torch"  # the default


def test_onnx_runtime_without_files_is_an_artifact_error(tiny_artifact):
    with pytest.raises(ArtifactError, match="export_onnx"):
        load_artifact(tiny_artifact, runtime="onnx")
    with pytest.raises(ValueError, match="runtime"):
        load_artifact(tiny_artifact, runtime="tensorrt")


def test_stale_onnx_files_are_not_used(onnx_artifact, tmp_path):
    """ONNX files made from other weights than the safetensors now in the
    folder: "auto" warns and runs PyTorch, "onnx" refuses."""
    folder = tmp_path / "stale"
    shutil.copytree(onnx_artifact, folder)
    config = read_config(folder)
    config["onnx"]["source_sha256"]["embedder.safetensors"] = "0" * 64
    write_manifest(folder, config)
    with pytest.warns(RuntimeWarning, match="other weights"):
        assert load_artifact(folder, runtime="auto").runtime == "torch"
    with pytest.raises(ArtifactError, match="other weights"):
        load_artifact(folder, runtime="onnx")


def test_tampered_onnx_file_fails_the_checksum(onnx_artifact, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(onnx_artifact, folder)
    with open(folder / DETECTOR_ONNX, "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ArtifactError, match="detector.onnx"):
        load_artifact(folder, runtime="onnx")


def test_onnx_runtime_is_cpu_only(onnx_artifact):
    with pytest.raises(ArtifactError, match="CPU"):
        load_artifact(onnx_artifact, runtime="onnx", device="meta")
    # "auto" off the CPU runs PyTorch, and the CPU-only files it passes over are no warning
    import warnings

    from plankton.artifact.manifest import read_config
    from plankton.runtime.registry import load_onnx_models

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_onnx_models(onnx_artifact, read_config(onnx_artifact), "auto", device="meta") is None


def test_session_options(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setenv("PLANKTON_THREADS", "3")
    so = session_options()
    assert so.intra_op_num_threads == 3
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.set_denormal_as_zero") == "1"
    assert session_options(1).intra_op_num_threads == 1
    monkeypatch.setenv("PLANKTON_ORT_SPIN", "1")
    assert session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_export_script_records_graph_metadata(onnx_artifact):
    import onnx

    det = onnx.load(str(onnx_artifact / DETECTOR_ONNX), load_external_data=False)
    meta = {p.key: p.value for p in det.metadata_props}
    assert json.loads(meta["stride"]) == [8.0, 16.0, 32.0]
    assert json.loads(meta["names"]) == ["plankton"]
    dims = [d.dim_param or d.dim_value for d in det.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    emb = onnx.load(str(onnx_artifact / EMBEDDER_ONNX), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in emb.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 64, 64]
