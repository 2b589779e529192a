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

from plankton.artifact.manifest import ArtifactError, read_config, write_manifest
from plankton.pipeline.load import load_artifact
from plankton.runtime.quantized import (ONNXRUNTIME, OPENVINO, ROUTE_FILES, cpu_flags, cpu_isa, cpu_problem, int8_isa, isa_classes_below,
                                        kernels_class, route_files, with_weights)

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


def _passed(config, isa="avx2"):
    config["int8"]["parity"]["passed"] = True  # what a real model's recorded parity says; the random model's cannot pass
    # ...measured on the CPU class the tests simulate (avx2_cpu), whatever this machine's class is
    config["int8"]["cpu"]["int8_isa"] = isa
    config["int8"]["parity_by_isa"] = {isa: config["int8"]["parity"] | {"cpu": "test CPU", "kernels": [], "isa_limit": None}}


def test_cpu_classes_from_flags(tmp_path):
    assert int8_isa(set(AVX2.split())) == "avx2"
    assert int8_isa(set(VNNI.split())) == "vnni"
    assert int8_isa({"avx2", "avx_vnni"}) == "vnni"
    assert int8_isa({"sse4_2", "avx"}) is None and int8_isa(None) is None
    assert cpu_flags(_cpuinfo(tmp_path, AVX2)) == set(AVX2.split())
    assert cpu_flags(tmp_path / "missing") is None
    # files recorded before parity was measured per class: one class, and the better ones
    assert cpu_problem({"cpu": {"int8_isa": "avx2"}}, set(AVX2.split())) is None
    assert cpu_problem({"cpu": {"int8_isa": "avx2"}}, set(VNNI.split())) is None
    assert "VNNI" in cpu_problem({"cpu": {"int8_isa": "vnni"}}, set(AVX2.split()))
    assert "AVX2" in cpu_problem({"cpu": {"int8_isa": "avx2"}}, {"sse4_2"})


def _section(measured: dict, seven_bit: bool) -> dict:
    return {"precision": {"weights_7bit": seven_bit},
            "parity_by_isa": {isa: {"passed": ok, "drop_vs_fp32": {"ap50": 0.0 if ok else 0.02}, "cpu": "test CPU"} for isa, ok in measured.items()}}


def test_the_runtime_refuses_only_what_no_measurement_covers():
    avx2, vnni, amx = set(AVX2.split()), set(VNNI.split()), set(VNNI.split()) | {"amx_int8"}
    full_range = _section({"vnni": True}, seven_bit=False)  # 8-bit weights, measured with VNNI: AVX2 sums would saturate
    assert "no INT8 parity was measured for this CPU's class (AVX2 without VNNI" in cpu_problem(full_range, avx2)
    assert cpu_problem(full_range, vnni) is None and cpu_problem(full_range, amx) is None  # AMX sums in 32 bits as VNNI does
    seven_bit = _section({"vnni": True}, seven_bit=True)  # no class saturates: the same integers everywhere
    assert cpu_problem(seven_bit, avx2) is None
    failed_here = _section({"vnni": True, "avx2": False}, seven_bit=False)
    assert "measured with AVX2 without VNNI kernels on test CPU did not hold (AP@0.5 -0.0200" in cpu_problem(failed_here, avx2)
    assert cpu_problem(failed_here, vnni) is None
    assert "no INT8 parity" in cpu_problem(_section({}, seven_bit=True), vnni)


def test_cpu_classes_below_and_the_kernel_limit(monkeypatch):
    avx2, vnni = set(AVX2.split()), set(VNNI.split())
    assert isa_classes_below("vnni", vnni) == ["avx2"] and isa_classes_below("amx", vnni | {"amx_int8"}) == ["avx2", "vnni"]
    assert isa_classes_below("vnni", avx2 | {"avx_vnni"}) == ["avx2"] and isa_classes_below("avx2", avx2) == [] and isa_classes_below(None, set()) == []
    assert kernels_class(["jit_avx2_I8", "jit_avx2_1x1_I8"]) == "avx2" and kernels_class(["jit_avx2_I8", "brgconv_avx512_I8"]) == "avx512"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # OpenVINO then runs AVX2 kernels, so the AVX2 parity is the one that applies
    assert cpu_isa(vnni) == "avx2" and cpu_isa(avx2) == "avx2" and cpu_isa({"sse4_2"}) is None
    assert "no INT8 parity" in cpu_problem(_section({"vnni": True}, seven_bit=False), vnni)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert cpu_isa(vnni | {"amx_int8"}) == "vnni" and cpu_isa(avx2) == "avx2"


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
    assert {"ap50", "recall", "top1", "f1_macro", "open_set_unknown_rate", "drop_vs_fp32", "passed", "same_boxes_iou0.9", "same_species"} <= set(parity)
    assert parity["passed"] == all(parity["drop_vs_fp32"][k] <= v for k, v in section["tolerances"].items())
    assert set(section["tolerances"]) == {"ap50", "recall", "top1", "f1_macro", "open_set_unknown_rate"}
    here = cpu_isa()  # measured on this CPU's class; ONNX Runtime's kernels cannot be limited to a lesser one
    assert section["parity_by_isa"][here]["passed"] == parity["passed"] and section["parity_by_isa"][here]["cpu"] == section["cpu"]["name"]
    assert set(section["parity_not_measured"]) == set(isa_classes_below(here, cpu_flags()))
    assert section["precision"]["weights_7bit"] is True  # reduce_range
    assert "variants" not in section  # every variant's record is training history, in training.json
    variant = config["training"]["int8_variants"]["onnxruntime/decode"]
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
    folder = _copy(int8_artifact, tmp_path / "failed", lambda c: (_passed(c), c["int8"]["parity_by_isa"]["avx2"].update(passed=False)))
    _falls_back(folder, "measured with AVX2 without VNNI kernels on test CPU did not hold")
    legacy = _copy(int8_artifact, tmp_path / "legacy", lambda c: (c["int8"].pop("parity_by_isa"), c["int8"]["parity"].update(passed=False)))
    _falls_back(legacy, "no passed INT8 parity")  # files recorded before parity was measured per class


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
    vnni = _copy(int8_artifact, tmp_path / "vnni", lambda c: (_passed(c, "vnni"), c["int8"]["precision"].update(weights_7bit=False)))
    monkeypatch.setattr("plankton.runtime.quantized.CPUINFO", _cpuinfo(tmp_path, AVX2))
    _falls_back(vnni, r"no INT8 parity was measured for this CPU's class \(AVX2 without VNNI; measured: VNNI\)")


def test_info_says_which_runtime(int8_artifact, tmp_path, avx2_cpu, capsys):
    from plankton.cli import main

    folder = _copy(int8_artifact, tmp_path / "info", _passed)
    assert main(["info", "--model", str(folder), "--json"]) == 0
    runtime = json.loads(capsys.readouterr().out)["runtime"]
    assert runtime["runtime"] == "onnx-int8" and runtime["int8_parity"]["passed"] is True
    assert runtime["summary"].startswith("ONNX Runtime INT8 (onnx-int8): this CPU (AVX2 without VNNI) is covered by the INT8 parity of its own class")
    assert main(["info", "--model", str(folder)]) == 0
    assert "runtime: ONNX Runtime INT8 (onnx-int8): this CPU (AVX2 without VNNI)" in capsys.readouterr().out
    failed = _copy(int8_artifact, tmp_path / "info_failed", lambda c: (_passed(c), c["int8"]["parity_by_isa"]["avx2"].update(passed=False)))
    assert main(["info", "--model", str(failed), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["runtime"]["summary"]
    assert summary.startswith("fp32 ONNX Runtime (onnx); not int8: the INT8 parity measured with AVX2 without VNNI kernels on test CPU did not hold")


def test_openvino_route_gives_drop_in_models(int8_artifact, tmp_path, avx2_cpu, frame, frames_coco):
    """The OpenVINO IR, shipped instead, loads without unpickling and runs in the cascade."""
    from training.quantize import quantize_artifact

    folder = tmp_path / "ov"
    shutil.copytree(int8_artifact, folder)
    ids = sorted(frames_coco.images)
    quantize_artifact(folder, frames_coco, ids[:1], ids[:1], routes=(OPENVINO,), calib_frames=1, keep_fp32=("decode",), ship=OPENVINO)
    config = read_config(folder)
    section = config["int8"]
    assert section["precision"]["overflow_fix"] == "enable" and section["precision"]["weights_7bit"] is True
    assert set(section["parity_by_isa"]) == {"avx2"}  # avx2_cpu: this CPU's class, and no lesser one to measure
    assert _max_int8_weight(folder / "detector.int8.xml") <= 64  # 7-bit weights: VPMADDUBSW's 16-bit pair sums cannot saturate
    _passed(config)
    write_manifest(folder, config)
    cascade = load_artifact(folder, runtime="auto")
    assert cascade.runtime == "openvino-int8" and not any((folder / f).exists() for f in route_files(ONNXRUNTIME))
    image, boxes = frame
    emb = cascade.identifier.embed_boxes(image, boxes)
    assert emb.shape == (len(boxes), 512) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)
    assert cascade.detector.predict(image).xyxy.shape[1] == 4


def test_a_lesser_class_is_measured_with_its_own_kernels(int8_artifact, tmp_path, frames_coco):
    """On a CPU with VNNI or AMX, the child process limited to AVX2 kernels
    runs them (and records which), as an AVX2-only CPU would."""
    from training.int8_parity import measure_class
    from training.quantize import quantize_artifact

    below = isa_classes_below(cpu_isa(), cpu_flags())
    if not below:
        pytest.skip(f"this CPU's 8-bit class ({cpu_isa()}) has no lesser class to limit OpenVINO to")
    folder = tmp_path / "ov"
    shutil.copytree(int8_artifact, folder)
    ids = sorted(frames_coco.images)
    quantize_artifact(folder, frames_coco, ids[:1], ids[:1], routes=(OPENVINO,), calib_frames=1, keep_fp32=("decode",), ship=OPENVINO,
                      lesser_classes=False)
    precision = read_config(folder)["int8"]["precision"]["embedder"]  # the random embedder may not have held parity in INT8
    record = measure_class("avx2", folder, frames_coco, ids[:1], {"int8": {"dir": str(folder), "route": OPENVINO, "embedder": precision}}, threads=1)
    if "did not limit" in record.get("not_measured", ""):
        # OpenVINO kept some AVX-512 8-bit kernels under the limit (seen on an AMD EPYC): nothing may be recorded for AVX2 then
        assert "routes" not in record  # refused, not recorded
        pytest.skip(f"this CPU's OpenVINO cannot be limited to AVX2 kernels: {record['not_measured']}")
    assert "not_measured" not in record, record
    assert record["isa_limit"] == "ONEDNN_MAX_CPU_ISA=AVX2" and kernels_class(record["kernels"]) == "avx2", record["kernels"]
    assert record["isa"] == "avx2" and {"passed", "drop_vs_fp32", "open_set_unknown_rate"} <= set(record["routes"]["int8"])


def _max_int8_weight(xml) -> int:
    """The largest |value| of the 8-bit weight constants in an IR."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    consts = [op for op in model.get_ops() if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert consts, "no 8-bit weights in the IR"
    return max(int(np.abs(c.get_data().astype(np.int16)).max()) for c in consts)


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
    # the share the parity run measured on the validation frames, less a margin for these 3 frames' few objects
    floor = config["int8"]["parity"].get("same_boxes_iou0.9", 0.95) - 0.05
    assert found and same_box / found >= floor, f"{same_box}/{found} objects boxed the same (IoU >= 0.9), below {floor:.2f}"
    assert same_species / objects >= 0.97, f"{same_species}/{objects} objects given the same species"


def _gt(xyxy):
    from plankton.results import Detections

    return Detections(xyxy, np.ones(len(xyxy)))
