"""The INT8 detector network alone, with nothing else running: the ceiling
of what the command line can reach with the shipped detector on this CPU.
One stream of all threads (what the app uses) against one stream a thread
with as many requests in flight (what ``predict --in-flight`` uses), each
timed ``--repeats`` times alternately, best kept.

    python -m benchmarks.ov_streams [--model DIR] [--frames 16] [--repeats 2] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.loop import hardware
from plankton.artifact.manifest import model_dir, read_config
from plankton.runtime.onnx import default_threads
from plankton.runtime.quantized import OPENVINO, ROUTE_FILES, ov_config


def _fps(compiled, x: np.ndarray, frames: int, streams: int) -> float:
    requests = [compiled.create_infer_request() for _ in range(streams)]
    for r in requests:
        r.infer({0: x})

    def work(r, n):
        for _ in range(n):
            r.infer({0: x})

    threads = [threading.Thread(target=work, args=(r, frames // streams)) for r in requests]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return streams * (frames // streams) / (time.perf_counter() - t)


def main(argv=None) -> dict:
    import openvino as ov

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    folder = model_dir(args.model)
    config = read_config(folder, check_files=False)
    if (config.get("int8") or {}).get("route") != OPENVINO:
        raise SystemExit(f"{folder}: no OpenVINO INT8 detector to time")
    det = config["detector"]
    side = int(det.get("imgsz", 1920))
    h = int(np.ceil(side * 1080 / 1920 / 32) * 32)  # a 1920×1080 frame letterboxed to the stride, as the detector sees it
    x = np.random.default_rng(0).random((1, 3, h, side), np.float32)
    core, threads = ov.Core(), default_threads()
    files = config["int8"].get("files") or dict(zip(("detector", "embedder"), ROUTE_FILES[OPENVINO]))
    model = core.read_model(str(folder / files["detector"]))
    settings = {f"1 stream x {threads} threads": 1, f"{threads} streams x 1 thread": threads}
    best = dict.fromkeys(settings, 0.0)
    for _ in range(args.repeats):
        for name, streams in settings.items():
            compiled = core.compile_model(model, "CPU", ov_config(threads, streams))
            best[name] = max(best[name], _fps(compiled, x, args.frames, streams))
            del compiled
    result = {"command": "python -m benchmarks.ov_streams " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
              "hardware": hardware(threads), "input": [1, 3, h, side], "network_fps": {k: round(v, 2) for k, v in best.items()}}
    for name, fps in result["network_fps"].items():
        print(f"INT8 detector network, {name}: {fps:.2f} frames/s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
