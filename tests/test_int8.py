"""INT8 files: the quantization code path on the tiny random-weight
artifact, when ``runtime="auto"`` may use them (and the fallbacks when it
may not), and INT8 against fp32 on the committed frames for the bundled
model when it carries INT8 files. No timings are asserted here."""
from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from plankton.artifact.folder import ArtifactError, load_artifact, read_config, write_manifest
from plankton.runtime.quantized import (ONNXRUNTIME, OPENVINO, ROUTE_FILES, cpu_flags, cpu_problem, int8_isa, route_files, with_weights)

AVX2 = "fpu sse4_2 avx avx2 fma"
VNNI = AVX2 + " avx512f avx512bw avx512_vnni"


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / f"cpuinfo-{len(flags)}"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
    return path


@pytest.fixture
def avx2_cpu(tmp_path, monkeypatch):
    """The CPU check reads these flags instead of this machine's."""
    monkeypatch.setattr("plankton.runtime.quantized.CPUINFO", _cpuinfo(tmp_path, AVX2))


@pytest.fixture(scope="module")
def int8_artifact(tiny_artifact, frames_coco, tmp_path_factory):
    """The tiny artifact with fp32 ONNX files and INT8 files made by
    training.quantize on the committed frames (one to calibrate, two to
    check); ONNX Runtime's route, which needs no extra package."""
    from training.export_onnx import export_artifact
    from training.quantize import quantize_artifact

    folder = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(tiny_artifact, folder)
    export_artifact(folder)
    ids = sorted(frames_coco.images)
    quantize_artifact(folder, frames_coco, ids[:1], ids[:2], routes=(ONNXRUNTIME,), calib_frames=1, keep_fp32=("decode",),
                      ship=ONNXRUNTIME, command="test")
    return folder


def _copy(src, dst, edit=None):
    """A copy of an artifact, its config changed by ``edit`` and re-checksummed."""
    shutil.copytree(src, dst)
    config = read_config(dst)
    if edit:
        edit(config)
    write_manifest(dst, config)
    return dst


def _passed(config):
    config["int8"]["parity"]["passed"] = True  # what a real model's recorded parity says; the random model's cannot pass
    # ...measured on the CPU class the tests simulate (avx2_cpu), whatever this machine's class is
    config["int8"]["cpu"]["int8_isa"] = "avx2"


def test_cpu_classes_from_flags(tmp_path):
    assert int8_isa(set(AVX2.split())) == "avx2"
    assert int8_isa(set(VNNI.split())) == "vnni"
    assert int8_isa({"avx2", "avx_vnni"}) == "vnni"
    assert int8_isa({"sse4_2", "avx"}) is None and int8_isa(None) is None
    assert cpu_flags(_cpuinfo(tmp_path, AVX2)) == set(AVX2.split())
    assert cpu_flags(tmp_path / "missing") is None
    assert cpu_problem({"cpu": {"int8_isa": "avx2"}}, set(AVX2.split())) is None
    assert cpu_problem({"cpu": {"int8_isa": "avx2"}}, set(VNNI.split())) is None  # no saturation there: at least as exact
    assert "VNNI" in cpu_problem({"cpu": {"int8_isa": "vnni"}}, set(AVX2.split()))
    assert "AVX2" in cpu_problem({"cpu": {"int8_isa": "avx2"}}, {"sse4_2"})


def test_quantization_records_its_sources_calibration_and_parity(int8_artifact, frames_coco):
    config = read_config(int8_artifact)  # every file, the INT8 ones included, matches its checksum
    section = config["int8"]
    assert section["route"] == ONNXRUNTIME and set(with_weights(section["files"].values())) <= set(config["files"])
    assert section["files"]["detector"] == "detector.int8.onnx" and section["precision"]["detector"] == "int8"
    assert section["files"]["embedder"] == {"int8": "embedder.int8.onnx", "fp32": "embedder.onnx"}[section["precision"]["embedder"]]
    for name in ("detector.safetensors", "embedder.safetensors", "detector.onnx", "embedder.onnx"):
        assert section["source_sha256"][name] == config["files"][name]["sha256"]
    assert section["calibration"]["frame_ids"] == sorted(frames_coco.images)[:1] and section["calibration"]["split"] == "train"
    assert section["calibration"]["embedder_crops"] > 0
    parity = section["parity"]
    assert {"ap50", "recall", "top1", "f1_macro", "drop_vs_fp32", "passed", "same_boxes_iou0.9", "same_species"} <= set(parity)
    assert parity["passed"] == all(parity["drop_vs_fp32"][k] <= v for k, v in section["tolerances"].items())
    variant = section["variants"]["onnxruntime/decode"]
    assert variant["detector"]["kept_fp32_nodes"] > 0 and variant["embedder"]["kept_fp32_nodes"] > 0  # head decoding, L2 normalisation
    assert variant["parity"] == parity and section["precision"]["detector_head_kept_fp32"] == "decode"


def test_head_decoding_is_kept_in_fp32():
    from training.quantize import head_decode_nodes

    names = ["/model/model.0/conv/Conv", "/model/model.22/cv1/conv/Conv", "/model/model.23/cv2.0/cv2.0.2/Conv", "/model/model.23/cv3.1/Conv",
             "/model/model.23/Concat", "/model/model.23/dfl/conv/Conv", "/model/model.23/Sigmoid", "/model/model.23/Concat_26"]
    assert head_decode_nodes(names) == names[4:]
    assert head_decode_nodes(names, "head") == names[2:]
    assert head_decode_nodes(names, "none") == []


def test_auto_prefers_int8_with_passed_parity(int8_artifact, tmp_path, avx2_cpu):
    folder = _copy(int8_artifact, tmp_path / "ok", _passed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cascade = load_artifact(folder, runtime="auto")
    assert cascade.runtime == "onnx-int8"
    assert load_artifact(folder, runtime="int8").runtime == "onnx-int8"
    assert load_artifact(folder, runtime="onnx").runtime == "onnx"
    with pytest.raises(ArtifactError, match="not openvino"):
        load_artifact(folder, runtime="openvino-int8")


def _falls_back(folder, match):
    with pytest.warns(RuntimeWarning, match=match):
        assert load_artifact(folder, runtime="auto").runtime == "onnx"
    with pytest.raises(ArtifactError, match=match):
        load_artifact(folder, runtime="int8")


def test_auto_falls_back_when_parity_did_not_pass(int8_artifact, tmp_path, avx2_cpu):
    folder = _copy(int8_artifact, tmp_path / "failed", lambda c: c["int8"]["parity"].update(passed=False))
    _falls_back(folder, "no passed INT8 parity")


def test_auto_falls_back_when_int8_files_are_missing(int8_artifact, tmp_path, avx2_cpu):
    folder = tmp_path / "missing"
    shutil.copytree(int8_artifact, folder)
    (folder / ROUTE_FILES[ONNXRUNTIME][0]).unlink()
    config = read_config(folder, check_files=False)
    config["files"].pop(ROUTE_FILES[ONNXRUNTIME][0])
    _passed(config)
    write_manifest(folder, config)
    _falls_back(folder, "no detector.int8.onnx")


def test_auto_falls_back_when_int8_files_are_stale(int8_artifact, tmp_path, avx2_cpu):
    def stale(config):
        _passed(config)
        config["int8"]["source_sha256"]["detector.safetensors"] = "0" * 64  # made from other detector weights

    _falls_back(_copy(int8_artifact, tmp_path / "stale", stale), "other weights than detector.safetensors")


def test_auto_falls_back_on_a_cpu_without_the_kernels(int8_artifact, tmp_path, monkeypatch):
    folder = _copy(int8_artifact, tmp_path / "cpu", _passed)
    monkeypatch.setattr("plankton.runtime.quantized.CPUINFO", _cpuinfo(tmp_path, "fpu sse4_2 avx"))
    _falls_back(folder, "no AVX2")
    vnni = _copy(int8_artifact, tmp_path / "vnni", lambda c: (_passed(c), c["int8"]["cpu"].update(int8_isa="vnni")))
    monkeypatch.setattr("plankton.runtime.quantized.CPUINFO", _cpuinfo(tmp_path, AVX2))
    _falls_back(vnni, "VNNI")


def test_info_says_which_runtime(int8_artifact, tmp_path, avx2_cpu, capsys):
    from plankton.cli import main

    folder = _copy(int8_artifact, tmp_path / "info", _passed)
    assert main(["info", "--model", str(folder), "--json"]) == 0
    runtime = json.loads(capsys.readouterr().out)["runtime"]
    assert runtime["runtime"] == "onnx-int8" and runtime["int8_parity"]["passed"] is True


def test_openvino_route_gives_drop_in_models(int8_artifact, tmp_path, avx2_cpu, frame, frames_coco):
    """The OpenVINO IR, shipped instead, loads without unpickling and runs in the cascade."""
    from training.quantize import quantize_artifact

    folder = tmp_path / "ov"
    shutil.copytree(int8_artifact, folder)
    ids = sorted(frames_coco.images)
    quantize_artifact(folder, frames_coco, ids[:1], ids[:1], routes=(OPENVINO,), calib_frames=1, keep_fp32=("decode",), ship=OPENVINO)
    config = read_config(folder)
    _passed(config)
    write_manifest(folder, config)
    cascade = load_artifact(folder, runtime="auto")
    assert cascade.runtime == "openvino-int8" and not any((folder / f).exists() for f in route_files(ONNXRUNTIME))
    image, boxes = frame
    emb = cascade.identifier.embed_boxes(image, boxes)
    assert emb.shape == (len(boxes), 512) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)
    assert cascade.detector.predict(image).xyxy.shape[1] == 4


def test_bench_compares_int8_with_fp32_in_one_run(int8_artifact, tmp_path, avx2_cpu, frame):
    import io
    from contextlib import redirect_stdout

    from PIL import Image

    from benchmarks import speed as bench

    folder = _copy(int8_artifact, tmp_path / "bench", _passed)
    small = tmp_path / "small.jpg"
    Image.fromarray(frame[0]).resize((480, 270)).save(small)
    out = tmp_path / "bench.json"
    with redirect_stdout(io.StringIO()):
        bench.main([str(small), "--model", str(folder), "--runtime", "int8", "--frames", "2", "--warmup", "1", "--threads", "1",
                    "--no-cold-start", "--refilter-repeats", "5", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["model"]["runtime"] == "onnx-int8" and result["compare"]["runtime"] == "onnx"
    assert result["model"]["int8_parity"]["route"] == ONNXRUNTIME
    versus = result["versus_compare"]
    assert versus["fps_ratio"] > 0 and set(versus["targets"]) == {"fps>=6", "peak_rss_no_worse", "cold_start_no_worse"}


def _bundled():
    from plankton.artifact.manifest import DEFAULT_MODEL_DIR

    config = read_config(DEFAULT_MODEL_DIR, check_files=False)
    return DEFAULT_MODEL_DIR, config


def test_bundled_int8_agrees_with_fp32_on_the_committed_frames(frames_coco):
    """Of the ground-truth objects fp32 finds (IoU ≥ 0.5 at the default
    threshold), INT8 finds ≥ 95% with the same box (IoU ≥ 0.9 to fp32's);
    ≥ 97% of the objects get the same species. Low-score boxes that are
    not objects are left out: they come and go with any change."""
    from plankton.geometry import box_iou
    from plankton.images import read_image
    from plankton.runtime.registry import auto_runtime

    folder, config = _bundled()
    assert (config.get("int8") or {}).get("route") in ROUTE_FILES, "the bundled model carries no INT8 files"
    cpu = cpu_problem(config["int8"])  # a CPU that may not run them (checked, as the runtime checks it), not a model that disagrees
    if cpu is not None:
        pytest.skip(f"this CPU may not run the bundled INT8 files: {cpu}")
    plan = auto_runtime(folder, config)
    assert "int8" not in plan["why_not"], plan["why_not"]
    fp32, int8 = load_artifact(folder, runtime="onnx"), load_artifact(folder, runtime="int8")
    found = same_box = same_species = objects = 0
    for i in sorted(frames_coco.images):
        image, gt = read_image(frames_coco.path_of(i)), frames_coco.xyxy_of(i)
        a, b = fp32.detector.predict(image), int8.detector.predict(image)
        ia, ib = box_iou(gt, a.xyxy), box_iou(gt, b.xyxy)
        for g in range(len(gt)):
            if ia.shape[1] and ia[g].max() >= 0.5:
                found += 1
                if ib.shape[1] and ib[g].max() >= 0.5:
                    same_box += int(box_iou(a.xyxy[ia[g].argmax()][None], b.xyxy[ib[g].argmax()][None])[0, 0] >= 0.9)
        sa, sb = fp32.analyse_boxes(image, _gt(gt)).similarity, int8.analyse_boxes(image, _gt(gt)).similarity
        same_species += int((sa.argmax(1) == sb.argmax(1)).sum())
        objects += len(gt)
    assert found and same_box / found >= 0.95, f"{same_box}/{found} objects boxed the same (IoU >= 0.9)"
    assert same_species / objects >= 0.97, f"{same_species}/{objects} objects given the same species"


def _gt(xyxy):
    from plankton.results import Detections

    return Detections(xyxy, np.ones(len(xyxy)))
