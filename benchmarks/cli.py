"""Frames per second through the command line, against the benchmark and
against fp32, measured in one run (this machine's absolute speed moves from
day to day; ratios measured together hold).

    python -m benchmarks.cli [--frames 24] [--repeats 2] [--model DIR] [--isa avx2] [--out docs/cli_bench.json]

``python -m plankton predict`` runs on N copies of the committed frames and on
one; start-up (imports, model load, the first frame) is the one-frame run,
so frames/s is N / (t(N + 1) − t(1)). Each setting alternates with the
others ``--repeats`` times and keeps its best. ``python -m benchmarks.speed``
runs the same frames at the same settings for the CLI's share of it (one
frame at a time: ``--in-flight`` is the CLI's).

``--isa avx2`` runs every child with OpenVINO limited to AVX2 kernels
(``ONEDNN_MAX_CPU_ISA``), as on a CPU without VNNI; the runtime then applies
the INT8 files' AVX2 parity, and the result records the 8-bit kernels that
ran. ONNX Runtime's fp32 kernels take no such limit: on a CPU with AVX-512
the fp32 reference stays faster than an AVX2-only CPU's, so the ratio
understates what such a CPU would see.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.loop import DEFAULT_FRAMES, REPO, hardware

SETTINGS = {"defaults": [], "defaults, one frame at a time": ["--in-flight", "1"],
            "fp32 ONNX, whole frames": ["--runtime", "onnx", "--no-gate"]}


ENV: dict[str, str] = dict(os.environ)  # the children's: main() adds the kernel limit
MODEL: list[str] = []  # ["--model", DIR] when given


def _predict_s(folder: Path, extra: list[str], out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "plankton", "predict", str(folder), "--out", str(out), "--quiet", *MODEL, *extra],
                   cwd=REPO, check=True, capture_output=True, env=ENV)
    return time.perf_counter() - t


def _runtime_here() -> dict:
    """What a child with the same environment runs: ``plankton info``'s
    runtime line, and the 8-bit kernels OpenVINO compiles for the INT8 detector."""
    code = ("import json, sys\n"
            "from plankton.artifact.manifest import DEFAULT_MODEL_DIR, read_config\n"
            "from plankton.runtime.registry import runtime_summary\n"
            "folder = sys.argv[1] or DEFAULT_MODEL_DIR\n"
            "config = read_config(folder)\n"
            "out = {'summary': runtime_summary(folder, config), 'kernels': None}\n"
            "det = ((config.get('int8') or {}).get('files') or {}).get('detector', '')\n"
            "if det.endswith('.xml'):\n"
            "    import openvino as ov\n"
            "    from plankton.runtime.quantized import int8_kernels\n"
            "    out['kernels'] = int8_kernels(ov.Core().compile_model(f'{folder}/{det}', 'CPU'))\n"
            "print(json.dumps(out))\n")
    run = subprocess.run([sys.executable, "-c", code, MODEL[1] if MODEL else ""], cwd=REPO, capture_output=True, text=True, env=ENV)
    return json.loads(run.stdout) if run.returncode == 0 else {"error": run.stderr.strip().splitlines()[-1:]}


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
                    "--refilter-repeats", "1", *MODEL, *gate, "--out", str(out)], cwd=REPO, check=True, capture_output=True, env=ENV)
    return json.loads(out.read_text())["end_to_end"]["fps"]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", default=None, help="model folder (default: the bundled one)")
    p.add_argument("--isa", choices=("avx2", "vnni"), default=None,
                   help="limit OpenVINO to this CPU class's 8-bit kernels (ONEDNN_MAX_CPU_ISA), as on a CPU of that class")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from plankton.runtime.quantized import ISA_ENV, ISA_LIMITS, cpu_flags, cpu_isa

    ENV.clear()
    ENV.update(os.environ)
    if args.isa:
        ENV[ISA_ENV] = ISA_LIMITS[args.isa]
    MODEL[:] = ["--model", str(Path(args.model).resolve())] if args.model else []
    runtime = _runtime_here()
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
    isa = cpu_isa(cpu_flags()) if not args.isa else min(cpu_isa(cpu_flags()) or "avx2", args.isa, key=("avx2", "vnni", "amx").index)
    result = {"command": "python -m benchmarks.cli " + " ".join(sys.argv[1:] if argv is None else argv),
              "hardware": hardware(2) | {"int8_isa": isa, "isa_limit": f"{ISA_ENV}={ENV[ISA_ENV]}" if args.isa else None,
                                         "fp32_kernels_limited": False if args.isa else None},
              "runtime": runtime, "model": args.model,
              "frames": args.frames, "cli_fps": cli, "bench_fps": bench,
              "cli_vs_fp32": round(cli["defaults"] / cli[ref], 3), "cli_share_of_bench": {k: round(cli[k] / bench[k], 3) for k in SETTINGS}}
    for name in SETTINGS:
        print(f"{name:30s} CLI {cli[name]:6.2f} frames/s   benchmark {bench[name]:6.2f}   CLI/benchmark {result['cli_share_of_bench'][name]:.2f}")
    print(f"CLI at its defaults / fp32 ONNX whole frames: {result['cli_vs_fp32']:.2f}x on {result['hardware'].get('cpu')} (8-bit kernels: {result['hardware']['int8_isa']}"
          + (f", limited by {result['hardware']['isa_limit']}; fp32 unlimited" if args.isa else "") + ")")
    print(f"runtime at the defaults: {runtime.get('summary') or runtime}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
