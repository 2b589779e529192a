"""The benchmark script runs end to end and writes the keys the README
quotes. No timing assertions: speed is measured by the benchmark, not
asserted in unit tests."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import loop
from benchmarks import speed as bench

FRAMES = Path(__file__).resolve().parent.parent / "plankton_app" / "examples" / "frames"


@pytest.fixture(scope="module")
def small_frames(tmp_path_factory) -> list[Path]:
    """Two committed frames at quarter size (the code path is the same; the
    random detector's hundreds of junk boxes make full frames slow)."""
    folder = tmp_path_factory.mktemp("frames")
    out = []
    for p in sorted(FRAMES.glob("*.jpg"))[:2]:
        with Image.open(p) as im:
            small = folder / p.name
            im.convert("RGB").resize((im.width // 4, im.height // 4)).save(small, quality=90)
        out.append(small)
    return out


def test_bench_writes_json_with_the_expected_keys(tiny_artifact, small_frames, tmp_path):
    out = tmp_path / "bench.json"
    with redirect_stdout(io.StringIO()) as printed:
        assert bench.main([*map(str, small_frames), "--model", str(tiny_artifact), "--runtime", "auto", "--frames", "2",
                           "--warmup", "1", "--threads", "1", "--no-cold-start", "--refilter-repeats", "10", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert json.loads(printed.getvalue()) == result
    assert set(bench.STAGES) <= set(result["stages_ms"]) and {"detect_network", "detect_pre_post"} <= set(result["stages_ms"])
    for stage in bench.STAGES:
        assert set(result["stages_ms"][stage]) >= {"median", "p90"} and result["stages_ms"][stage]["n"] == 2
    assert result["model"]["runtime"] == "torch"  # auto, and the tiny artifact has no ONNX files
    assert result["threads"] == 1 and result["hardware"]["threads"] == 1 and result["hardware"]["available_cpus"] >= 1
    assert result["frames"]["measured"] == 2 and result["frames"]["sizes_wh"] == [[480, 270]]
    e2e = result["end_to_end"]
    assert e2e["s_per_frame"] > 0 and e2e["fps"] == pytest.approx(1 / e2e["s_per_frame"], rel=0.02)
    mem = result["memory"]
    assert mem["peak_rss_mb"] > 0 and mem["rss_end_mb"] > 0 and "growth_after_point_mb" in mem
    assert result["refilter"]["frame_ms"]["n"] == 10 and result["refilter"]["session_frames"] == 2
    assert set(result["targets"]) == {"fps>=1.5", "cold_start<=20s", "peak_rss<=1.5GB", "no_growth_after_50", "refilter_p90<50ms"}
    assert "cold_start" not in result and result["command"].startswith("python -m benchmarks.speed")
    assert result["model"]["detector"]["network_inputs_bchw"] == [[1, 3, 384, 640]]


def test_cold_start_child_reports_its_timings(tiny_artifact, small_frames):
    """The fresh-interpreter measurement's protocol (run in-process here)."""
    with redirect_stdout(io.StringIO()) as printed:
        assert bench.main(["--cold-start-child", "--model", str(tiny_artifact), "--runtime", "torch", "--threads", "1", str(small_frames[0])]) == 0
    child = json.loads(printed.getvalue().strip().splitlines()[-1])
    assert {"started_at", "answered_at", "import_s", "load_s", "decode_s", "predict_s", "runtime", "objects", "peak_rss_mb"} <= set(child)
    assert child["answered_at"] >= child["started_at"] and child["runtime"] == "torch"


def test_frames_repeat_to_the_requested_count(small_frames):
    paths = loop.frame_paths([str(p) for p in small_frames], 5)
    assert [p.name for p in paths] == [small_frames[i % 2].name for i in range(5)]
    assert len(loop.frame_paths(None, 4)) == 4  # default: the committed frames


@pytest.mark.parametrize("prefetch", [0, 2])
def test_decode_ahead_keeps_order_and_reports_bad_files(small_frames, tmp_path, prefetch):
    from plankton.images import ImageError, read_image

    got = list(loop.decode_ahead(small_frames * 2, prefetch=prefetch))
    assert [p for p, _, _ in got] == small_frames * 2
    assert all(im.shape == (270, 480, 3) and im.dtype == np.uint8 and t >= 0 for _, im, t in got)
    # each image is its own path's pixels (the two frames differ, so a mix-up shows)
    assert not np.array_equal(read_image(small_frames[0]), read_image(small_frames[1]))
    for p, im, _ in got:
        np.testing.assert_array_equal(im, read_image(p))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    it = loop.decode_ahead([small_frames[0], bad, small_frames[1]], prefetch=prefetch)
    assert next(it)[0] == small_frames[0]
    with pytest.raises(ImageError, match="bad.jpg"):
        next(it)


def test_cli_benchmark_pairs_the_cli_with_the_benchmark(tmp_path):
    """One frame, one repeat, on the bundled model: every setting is timed
    through the CLI and the benchmark, and the ratios are the ones printed."""
    from benchmarks import cli

    out = tmp_path / "cli.json"
    with redirect_stdout(io.StringIO()):
        r = cli.main(["--frames", "1", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == r
    assert set(r["cli_fps"]) == set(r["bench_fps"]) == set(cli.SETTINGS)
    assert r["bench_fps"]["defaults"] == r["bench_fps"]["defaults, one frame at a time"]  # one benchmark run serves both
    assert r["cli_vs_fp32"] == round(r["cli_fps"]["defaults"] / r["cli_fps"]["fp32 ONNX, whole frames"], 3)
    assert cli._bench_key(["--runtime", "onnx", "--in-flight", "2", "--no-gate"]) == ("--runtime", "onnx", "--no-gate")


def test_openvino_stream_ceiling_runs_on_the_bundled_detector(tmp_path):
    from plankton.artifact.manifest import DEFAULT_MODEL_DIR, read_config
    from plankton.runtime.quantized import cpu_problem

    from benchmarks import ov_streams

    problem = cpu_problem(read_config(DEFAULT_MODEL_DIR, check_files=False)["int8"])
    if problem is not None:
        pytest.skip(f"this CPU may not run the bundled INT8 files: {problem}")
    with redirect_stdout(io.StringIO()):
        r = ov_streams.main(["--frames", "2", "--repeats", "1", "--out", str(tmp_path / "ov.json")])
    assert r["input"] == [1, 3, 1088, 1920] and len(r["network_fps"]) == 2
