"""Frames per second through the command line, against the benchmark and
against fp32, measured in one run (this machine's absolute speed moves from
day to day; ratios measured together hold).

    python -m benchmarks.cli [--frames 24] [--repeats 2] [--out docs/cli_bench.json]

``python -m plankton predict`` runs on N copies of the committed frames and on
one; start-up (imports, model load, the first frame) is the one-frame run,
so frames/s is N / (t(N + 1) − t(1)). Each setting alternates with the
others ``--repeats`` times and keeps its best. ``python -m benchmarks.speed``
runs the same frames at the same settings for the CLI's share of it (one
frame at a time: ``--in-flight`` is the CLI's).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.loop import DEFAULT_FRAMES, REPO, hardware

SETTINGS = {"defaults": [], "defaults, one frame at a time": ["--in-flight", "1"],
            "fp32 ONNX, whole frames": ["--runtime", "onnx", "--no-gate"]}


def _predict_s(folder: Path, extra: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "plankton", "predict", str(folder), "--out", str(out), "--quiet", *extra],
                   cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t


def _bench_key(extra: list[str]) -> tuple:
    """The CLI flags less ``--in-flight N``: the benchmark runs one frame at a time."""
    if "--in-flight" not in extra:
        return tuple(extra)
    i = extra.index("--in-flight")
    return tuple(extra[:i] + extra[i + 2:])


def _bench_fps(frames: int, extra: list[str], tmp: Path) -> float:
    runtime = extra[extra.index("--runtime") + 1] if "--runtime" in extra else "auto"
    out = tmp / f"bench_{runtime}.json"
    gate = [flag for flag in extra if flag in ("--gate", "--no-gate")]
    subprocess.run([sys.executable, "-m", "benchmarks.speed", "--runtime", runtime, "--frames", str(frames), "--compare", "none",
                    "--refilter-repeats", "1", *gate, "--out", str(out)], cwd=REPO, check=True, capture_output=True)
    return json.loads(out.read_text())["end_to_end"]["fps"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sources = sorted(DEFAULT_FRAMES.glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one, many = tmp / "one", tmp / "many"
        one.mkdir(), many.mkdir()
        shutil.copy(sources[0], one / sources[0].name)
        for i in range(args.frames + 1):
            shutil.copy(sources[i % len(sources)], many / f"{i:04d}_{sources[i % len(sources)].name}")
        best = {name: float("inf") for name in SETTINGS}
        for _ in range(args.repeats):
            for name, extra in SETTINGS.items():
                best[name] = min(best[name], _predict_s(many, extra, tmp / "out") - _predict_s(one, extra, tmp / "out"))
        cli = {name: round(args.frames / s, 3) for name, s in best.items()}
        measured: dict[tuple, float] = {}
        for extra in SETTINGS.values():
            if _bench_key(extra) not in measured:
                measured[_bench_key(extra)] = round(_bench_fps(args.frames, extra, tmp), 3)
        bench = {name: measured[_bench_key(extra)] for name, extra in SETTINGS.items()}
    ref = "fp32 ONNX, whole frames"
    from plankton.runtime.quantized import cpu_flags, int8_isa

    result = {"command": "python -m benchmarks.cli " + " ".join(sys.argv[1:] if argv is None else argv),
              "hardware": hardware(2) | {"int8_isa": int8_isa(cpu_flags())},
              "frames": args.frames, "cli_fps": cli, "bench_fps": bench,
              "cli_vs_fp32": round(cli["defaults"] / cli[ref], 3), "cli_share_of_bench": {k: round(cli[k] / bench[k], 3) for k in SETTINGS}}
    for name in SETTINGS:
        print(f"{name:30s} CLI {cli[name]:6.2f} frames/s   benchmark {bench[name]:6.2f}   CLI/benchmark {result['cli_share_of_bench'][name]:.2f}")
    print(f"CLI at its defaults / fp32 ONNX whole frames: {result['cli_vs_fp32']:.2f}x on {result['hardware'].get('cpu')} (8-bit kernels: {result['hardware']['int8_isa']})")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
