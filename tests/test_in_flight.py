"""Frames analysed at once (``predict --in-flight``): outcomes come back in
input order, a bad frame stays one error among good ones, and the bundled
OpenVINO INT8 networks compiled with two streams give the objects that one
stream gives."""
from pathlib import Path

import numpy as np
import pytest

from plankton.pipeline.load import load_artifact
from plankton.run.batch import Options, outcomes
from plankton.run.inputs import iter_items

FRAMES = Path(__file__).resolve().parent.parent / "plankton_app" / "examples" / "frames"


def _inputs(tmp_path):
    bad = tmp_path / "b_not_a_frame.jpg"
    bad.write_bytes(b"not a jpeg")
    frames = sorted(FRAMES.glob("*.jpg"))
    return [str(frames[0]), str(bad), *map(str, frames[1:])]


def _run(cascade, paths, in_flight):
    opts = Options(cascade.det_conf, cascade.cls_conf, None, None, annotate=False)
    return list(outcomes(cascade, iter_items(paths), opts, in_flight))


def _same(a, b):
    assert [o.key for o in a] == [o.key for o in b]
    for x, y in zip(a, b):
        assert (x.error is None) == (y.error is None), (x.error, y.error)
        if x.frame is not None:
            assert [o.species for o in x.frame.objects] == [o.species for o in y.frame.objects]
            np.testing.assert_allclose([o.xyxy for o in x.frame.objects], [o.xyxy for o in y.frame.objects], atol=1e-3)


def test_frames_in_flight_keep_input_order_and_errors(tiny_cascade, tmp_path):
    paths = _inputs(tmp_path)
    one, three = _run(tiny_cascade, paths, 1), _run(tiny_cascade, paths, 3)
    assert len(one) == len(paths) and [o.error is not None for o in one] == [False, True] + [False] * (len(paths) - 2)
    assert "b_not_a_frame.jpg" in one[1].error
    _same(one, three)


def test_bundled_openvino_two_streams_match_one(tmp_path, monkeypatch):
    from plankton.artifact.manifest import DEFAULT_MODEL_DIR, read_config
    from plankton.runtime.quantized import OPENVINO, cpu_problem

    config = read_config(DEFAULT_MODEL_DIR, check_files=False)
    if config["int8"]["route"] != OPENVINO:
        pytest.skip("the bundled INT8 files are not OpenVINO's")
    cpu = cpu_problem(config["int8"])
    if cpu is not None:
        pytest.skip(f"this CPU may not run the bundled INT8 files: {cpu}")
    monkeypatch.setenv("PLANKTON_THREADS", "1")  # a stream needs a thread: with one, two streams become one
    assert load_artifact(runtime="int8", streams=2).frames_in_flight == 1
    monkeypatch.setenv("PLANKTON_THREADS", "2")
    single, double = load_artifact(runtime="int8"), load_artifact(runtime="int8", streams=2)
    assert (single.frames_in_flight, double.frames_in_flight) == (1, 2)
    assert double.detector.model.compiled.get_property("NUM_STREAMS") == 2
    paths = _inputs(tmp_path)
    one = _run(single, paths, 1)
    assert sum(len(o.frame.objects) for o in one if o.frame) >= 10
    _same(one, _run(double, paths, 2))
    assert load_artifact(runtime="onnx", streams=2).frames_in_flight == 1
