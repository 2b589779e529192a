"""Benchmark the cascade on full-resolution frames, stage by stage.

    python -m benchmarks.speed [FRAMES_OR_FOLDERS...] [--model DIR] [--runtime torch|onnx|int8|auto]
                             [--frames 500] [--threads N] [--compare onnx] [--out bench.json]

Frames default to the committed test frames (plankton_app/examples/frames/*.jpg),
repeated to ``--frames``. Each frame goes through what ``Cascade.predict`` does, timed
per stage: decode (in a prefetch thread that overlaps the next frame's decoding with
inference, unless ``--no-prefetch``), detect (letterbox + network + NMS, with the
network alone as ``detect_network``), crop, embed, match (similarity + thresholds),
write (CSV rows and COCO annotations; the files once at the end) and gate (``--gate``,
inside detect). Reported: median and p90 per stage, end-to-end frames per second, peak
and per-frame RSS (growth after the first 50 frames), cold start (a fresh interpreter:
imports, model load, first answer on one frame), the slider re-filter
(``FrameAnalysis.resolve``), threads and hardware. Writes JSON.

``--compare RUNTIME`` (default: "onnx" when ``--runtime`` is an INT8 one)
runs the same frames with that runtime first, in a fresh interpreter so
that its peak memory and cold start are its own, and reports both side by
side with the INT8 targets (frames/s, cold start and peak memory no worse)
and the accuracy parity recorded in the model's config.

The module imports nothing heavy at the top, so the cold-start child
measures the real import cost.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.loop import GROWTH_AFTER, REPO, STAGES, _peak_rss_mb, _rss_mb, _stats, frame_paths, hardware, run_frames, time_refilter, versions
from benchmarks.stages import stage_report
from plankton.files import portable
from plankton.runtime import INT8_RUNTIMES, RUNTIMES

GROWTH_TOLERANCE_MB = 25.0  # allocator noise; a leak of one frame (6 MB) per frame would show as gigabytes
TARGETS = {"fps": 1.5, "cold_start_s": 20.0, "peak_rss_mb": 1536.0, "refilter_ms": 50.0}
INT8_FPS = 6.0  # issue 15: twice fp32 ONNX Runtime's 3 frames/s on 2 cores



def cold_start(model: str | None, runtime: str, frame: Path, threads: int, imgsz: int | None = None, tile: int | None = None,
               timeout: float = 300) -> dict:
    """A fresh interpreter: import, load the model, answer one frame."""
    cmd = [sys.executable, "-m", "benchmarks.speed", "--cold-start-child", "--runtime", runtime, "--threads", str(threads), str(frame)]
    if model:
        cmd += ["--model", str(model)]
    if imgsz:
        cmd += ["--imgsz", str(imgsz)]
    if tile is not None:
        cmd += ["--tile", str(tile)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
    wall = time.time() - t0
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1], "wall_s": round(wall, 2)}
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "first_answer_s": round(child["answered_at"] - t0, 2), "interpreter_start_s": round(child["started_at"] - t0, 2),
            "import_s": child["import_s"], "load_s": child["load_s"], "decode_s": child["decode_s"], "predict_s": child["predict_s"],
            "runtime": child["runtime"], "objects": child["objects"], "peak_rss_mb": child["peak_rss_mb"],
            "note": "page cache warm (files read before); imports from an already-compiled environment"}


def _override(cascade, args) -> None:
    """--imgsz / --tile / --gate: change the detector's input size, tiling or gate."""
    import dataclasses

    changes = {k: v for k, v in (("imgsz", args.imgsz), ("tile", args.tile)) if v is not None}
    cascade.detector.cfg = dataclasses.replace(cascade.detector.cfg, **changes)
    cascade.detector.set_gate(args.gate)


def _cold_start_child(args) -> int:
    started = time.time()
    t = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    from plankton.pipeline.load import load_artifact
    from plankton.images import read_image

    t_import = time.perf_counter()
    cascade = load_artifact(args.model, runtime=args.runtime)
    _override(cascade, args)
    t_load = time.perf_counter()
    image = read_image(args.paths[0])
    t_decode = time.perf_counter()
    fr = cascade.predict(image, Path(args.paths[0]).name)
    t_pred = time.perf_counter()
    print(json.dumps({"started_at": started, "answered_at": time.time(), "import_s": round(t_import - t, 2), "load_s": round(t_load - t_import, 2),
                      "decode_s": round(t_decode - t_load, 2), "predict_s": round(t_pred - t_decode, 2), "runtime": getattr(cascade, "runtime", "torch"),
                      "objects": len(fr.objects), "peak_rss_mb": round(_peak_rss_mb(), 1)}))
    return 0


def _portable(path) -> str:
    """A path as it may be recorded in a committed JSON file."""
    return portable(str(Path(path).resolve()), REPO)


def _command(args) -> str:
    """The command line, with frame and model paths made portable."""
    paths = {str(p) for p in args.paths} | ({str(args.model)} if args.model else set())
    return "python -m benchmarks.speed " + " ".join(_portable(a) if a in paths and os.path.isabs(a) else a for a in args.argv)


def _int8_parity(config: dict) -> dict | None:
    """The accuracy figures training.quantize recorded for the shipped INT8 files."""
    section = config.get("int8") or {}
    if not section.get("route"):
        return None
    keys = ("ap50", "recall", "top1", "f1_macro", "drop_vs_fp32", "passed", "same_boxes_iou0.9", "same_species")
    return {"route": section["route"], "fp32": section.get("fp32"), "int8": {k: (section.get("parity") or {}).get(k) for k in keys},
            "tolerances": section.get("tolerances"), "frames": (section.get("calibration") or {}).get("frames")}


def compare_run(args, runtime: str) -> dict:
    """The same benchmark with ``runtime``, in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compare.json"
        cmd = [sys.executable, "-m", "benchmarks.speed", *(str(Path(p).resolve()) for p in args.paths), "--runtime", runtime, "--frames", str(args.frames), "--warmup", str(args.warmup),
               "--threads", str(args.threads), "--prefetch", str(args.prefetch), "--refilter-repeats", "10", "--compare", "none", "--out", str(out)]
        model = str(Path(args.model).resolve()) if args.model else None
        for flag, value in (("--model", model), ("--imgsz", args.imgsz), ("--tile", args.tile)):
            if value is not None:
                cmd += [flag, str(value)]
        if args.no_cold_start:
            cmd.append("--no-cold-start")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(REPO))
        if proc.returncode != 0:
            return {"runtime": runtime, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
        full = json.loads(out.read_text())
    return {"runtime": full["model"]["runtime"], "end_to_end": full["end_to_end"], "stages_ms": full["stages_ms"], "cold_start": full.get("cold_start"),
            "memory": {k: full["memory"][k] for k in ("peak_rss_mb", "rss_after_load_mb", "growth_after_point_mb")},
            "load_s": full["load_s"], "load_average_1m": [full["hardware"].get("load_average_1m_at_start"), full["hardware"].get("load_average_1m_at_end")]}


def _versus(result: dict, other: dict) -> dict:
    """This run against the compared one: speed-up and the no-worse targets."""
    if "error" in other:
        return {}
    fps, base = result["end_to_end"]["fps"], other["end_to_end"]["fps"]
    cs, cs_base = (result.get("cold_start") or {}).get("first_answer_s"), (other.get("cold_start") or {}).get("first_answer_s")
    out = {"fps_ratio": round(fps / base, 3) if fps and base else None,
           "detect_network_ms": [result["stages_ms"]["detect_network"]["median"], other["stages_ms"]["detect_network"]["median"]],
           "embed_ms": [result["stages_ms"]["embed"]["median"], other["stages_ms"]["embed"]["median"]],
           "peak_rss_mb": [result["memory"]["peak_rss_mb"], other["memory"]["peak_rss_mb"]],
           "cold_start_s": [cs, cs_base]}
    out["targets"] = {f"fps>={INT8_FPS:g}": None if fps is None else fps >= INT8_FPS,
                      "peak_rss_no_worse": out["peak_rss_mb"][0] <= out["peak_rss_mb"][1],
                      "cold_start_no_worse": None if cs is None or cs_base is None else cs <= cs_base}
    return out


def benchmark(args) -> dict:
    """Everything ``main`` reports, as a dict."""
    import numpy as np

    threads = args.threads
    paths = frame_paths(args.paths, args.frames + args.warmup)
    result: dict = {"command": _command(args)}
    compare = args.compare or ("onnx" if args.runtime in INT8_RUNTIMES else "none")
    if compare != "none":  # first, so that neither run holds the other's memory
        result["compare"] = compare_run(args, compare)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if not args.no_cold_start:  # first, while this process holds no model
        result["cold_start"] = cold_start(args.model, args.runtime, paths[0], threads, args.imgsz, args.tile)
    t = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    from plankton.pipeline.load import load_artifact

    t_import = time.perf_counter()
    cascade = load_artifact(args.model, runtime=args.runtime)
    t_load = time.perf_counter()
    _override(cascade, args)
    rss_loaded = _rss_mb()
    run = run_frames(cascade, paths, warmup=args.warmup, prefetch=args.prefetch)
    n = run["n"]
    stages = {s: _stats(run["times"][s]) for s in STAGES}
    stages["detect_network"] = _stats(run["detect_network"])
    stages["detect_pre_post"] = _stats(run["detect_pre_post"])
    serial = sum(float(np.median(run["times"][s])) for s in STAGES) if n else None
    rss = run["rss"]
    k = min(GROWTH_AFTER, n)
    after_k = rss[k - 1] if n else None
    memory = {
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_after_load_mb": round(rss_loaded, 1),
        "rss_after_warmup_mb": round(run["rss_start"], 1),
        f"rss_after_{k}_frames_mb": round(after_k, 1) if n else None,
        "rss_end_mb": round(rss[-1], 1) if n else None,
        "rss_max_after_growth_point_mb": round(max(rss[k - 1:]), 1) if n else None,
        "growth_after_point_mb": round(rss[-1] - after_k, 1) if n else None,
        "growth_point_frames": k,
        "rss_every_50_frames_mb": [round(r, 1) for r in rss[49::50]],
    }
    fps = n / run["wall_s"] if n and run["wall_s"] > 0 else None
    cfg = cascade.detector.cfg
    config = getattr(cascade, "config", {}) or {}
    result |= {
        "model": {"path": _portable(getattr(cascade, "path", None) or args.model), "name": config.get("name"), "runtime": getattr(cascade, "runtime", "torch"),
                  "detector": {"architecture": cfg.architecture if isinstance(cfg.architecture, str) else "custom", "imgsz": cfg.imgsz,
                               "network_inputs_bchw": [list(s) for s in run["network_inputs"]], "tile": cfg.tile, "floor": run["floor"]},
                  "embedder": {"backbone": config.get("embedder", {}).get("backbone"), "crop": cascade.identifier.cfg.crop.size,
                               "batch_size": cascade.identifier.cfg.batch_size},
                  "onnx_validation": (config.get("onnx") or {}).get("validation"), "int8_parity": _int8_parity(config)},
        "threads": threads,
        "runtime_settings": ({"detector": getattr(cascade.detector.model, "options", {})} if getattr(cascade, "runtime", "torch") != "torch"
                             else {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}),
        "hardware": hardware(threads) | {"load_average_1m_at_start": None if load_start is None else round(load_start, 2)},
        "versions": versions(),
        "frames": {"measured": n, "warmup": args.warmup, "sizes_wh": [list(s) for s in run["shapes"]], "prefetch": args.prefetch,
                   "sources": sorted({p.name for p in paths})},
        "load_s": {"import": round(t_import - t, 2), "load_artifact": round(t_load - t_import, 2)},
        "stages_ms": stages,
        "end_to_end": {"fps": round(fps, 3) if fps else None, "s_per_frame": round(1 / fps, 3) if fps else None, "wall_s": round(run["wall_s"], 2),
                       "serial_s_per_frame_from_medians": round(serial, 3) if serial else None, "write_coco_file_once_ms": round(run["write_final_s"] * 1000, 1)},
        "objects_per_frame_at_floor": {"mean": round(float(np.mean(run["objects"])), 1) if n else None,
                                       "median": float(np.median(run["objects"])) if n else None, "max": int(max(run["objects"], default=0))},
        "memory": memory,
        "stage_report": stage_report(stages, cascade.detector),
        "refilter": time_refilter(run["analyses"], run["cls_conf"], run["topk"], run["floor"], args.refilter_repeats),
    }
    cs = result.get("cold_start", {})
    ref = result["refilter"].get("frame_ms", {}).get("p90")
    result["targets"] = {
        "fps>=1.5": None if fps is None else fps >= TARGETS["fps"],
        "cold_start<=20s": None if "first_answer_s" not in cs else cs["first_answer_s"] <= TARGETS["cold_start_s"],
        "peak_rss<=1.5GB": memory["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
        "no_growth_after_50": None if n < 2 else memory["growth_after_point_mb"] <= GROWTH_TOLERANCE_MB,
        "refilter_p90<50ms": None if ref is None else ref < TARGETS["refilter_ms"],
    }
    if "compare" in result:
        result["versus_compare"] = _versus(result, result["compare"])
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description="Benchmark the cascade on full-resolution frames.")
    p.add_argument("paths", nargs="*", help="frames or folders (default: plankton_app/examples/frames/*.jpg)")
    p.add_argument("--model", default=None, help="model folder (default: $PLANKTON_MODEL_DIR or the bundled model)")
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="default: auto (the model's INT8 files where usable, else its ONNX files, else PyTorch); int8: its INT8 files")
    p.add_argument("--compare", choices=RUNTIMES + ("none",), default=None,
                   help="also run this runtime on the same frames, in a fresh interpreter (default: onnx for an INT8 runtime, else none)")
    p.add_argument("--frames", type=int, default=100, help="frames measured (the given ones repeated; default %(default)s)")
    p.add_argument("--warmup", type=int, default=2, help="untimed frames first (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for torch and ONNX Runtime (default: $PLANKTON_THREADS or the available cores)")
    p.add_argument("--imgsz", type=int, default=None, help="override the detector's input size (long side), to weigh speed against accuracy")
    p.add_argument("--tile", type=int, default=None, help="override the detector's tiling (0: whole frames; N: N×N tiles)")
    p.add_argument("--gate", action=argparse.BooleanOptionalAction, default=None, help="detect only where the cheap pass finds something (default: the model's)")
    p.add_argument("--prefetch", type=int, default=2, help="frames decoded ahead in a thread (0: decode inline)")
    p.add_argument("--no-cold-start", action="store_true", help="skip the fresh-interpreter cold-start measurement")
    p.add_argument("--refilter-repeats", type=int, default=200)
    p.add_argument("--out", default=None, help="write the JSON here (it is printed either way)")
    p.add_argument("--cold-start-child", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.cold_start_child:  # before importing anything heavy: the child times its imports
        os.environ["PLANKTON_THREADS"] = str(args.threads)
        return _cold_start_child(args)
    from plankton.runtime.onnx import default_threads

    args.threads = max(1, args.threads or default_threads())
    previous = os.environ.get("PLANKTON_THREADS")
    os.environ["PLANKTON_THREADS"] = str(args.threads)  # ONNX Runtime sessions, here and in the cold-start child
    try:
        result = benchmark(args)
    finally:  # main() is also called in-process (tests): leave the caller's setting as it was
        if previous is None:
            os.environ.pop("PLANKTON_THREADS", None)
        else:
            os.environ["PLANKTON_THREADS"] = previous
    text = json.dumps(result, indent=2)
    if args.out:
        from plankton.files import atomic_write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
