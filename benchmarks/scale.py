"""Measure ``predict`` on each engine as users run it, for docs/scale.md.

    python -m benchmarks.scale FRAMES_OR_FOLDERS... [--frames 100] [--model DIR]
        [--configs local:2 ray:1x1 ray:2x1] [--out docs/scale_bench.json]

Each configuration runs ``python -m plankton predict`` in a subprocess on
the same ``--frames`` frames (the given ones, repeated under distinct
names through symbolic links, so that none is deduplicated), and is timed
from outside: ``local:T`` is the local engine with T threads, ``ray:NxT``
the Ray engine with N workers of T threads on a local cluster it starts.

Reported per configuration: frames/s in the steady state (frames finished
after the first one, over the time since the first one, read from the
run's journal, which each engine appends to as frames finish), the time
to the first finished frame (imports, model load and, for Ray, cluster
start and actor start), the total wall time, and peak memory (RSS) of the
driver, of each worker and of Ray's own processes. Also: ``ray.init`` of
a bare local cluster, timed on its own. Scaling efficiency is the 2-worker
rate over twice the 1-worker rate.
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

from plankton.files import atomic_write_text
from plankton.run.inputs import iter_items


def _tree(root: int) -> dict[int, tuple[str, float]]:
    """pid → (command line, RSS in MB) for ``root`` and its descendants."""
    parent, info = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            rss_pages = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        info[int(entry)] = (cmd, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
    keep, changed = {root}, True
    while changed:
        changed = False
        for pid, ppid in parent.items():
            if ppid in keep and pid not in keep:
                keep.add(pid)
                changed = True
    return {pid: info[pid] for pid in keep if pid in info}


def _role(pid: int, cmd: str, driver: int) -> str:
    if pid == driver:
        return "driver"
    if cmd.startswith("ray::MapWorker(MapBatches(_Predictor"):
        return "worker"
    if cmd.startswith("ray::"):
        return "ray_task"  # the input-expanding tasks, idle Ray workers
    return "ray_system"  # gcs_server, raylet, the log monitor…


def measure(config: str, frames_dir: Path, model: str | None, workdir: Path, extra: list[str]) -> dict:
    out = workdir / config.replace(":", "_")
    cmd = [sys.executable, "-m", "plankton", "predict", str(frames_dir), "--out", str(out), "--quiet", *extra]
    if model:
        cmd += ["--model", model]
    engine, _, shape = config.partition(":")
    env = dict(os.environ)
    if engine == "local":
        env["PLANKTON_THREADS"] = shape or "2"
        env["OMP_NUM_THREADS"] = shape or "2"
    else:
        workers, _, threads = shape.partition("x")
        cmd += ["--engine", "ray", "--workers", workers, "--threads-per-worker", threads or "1", "--batch-size", "4"]
    journal = out / ".progress.jsonl"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done_at: list[tuple[float, int]] = []
    peaks: dict[int, tuple[str, float]] = {}
    while proc.poll() is None:
        try:
            n = journal.read_text().count("\n") - 1 if journal.exists() else 0
        except OSError:
            n = 0
        if n > 0 and (not done_at or n > done_at[-1][1]):
            done_at.append((time.perf_counter() - start, n))
        for pid, (c, rss) in _tree(proc.pid).items():
            role = _role(pid, c, proc.pid)
            if rss > peaks.get(pid, ("", 0.0))[1]:
                peaks[pid] = (role, rss)
        time.sleep(0.1)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"benchmarks.scale: {config} failed ({proc.returncode}): {err.strip()[-500:]}")
    total = len(json.loads((out / "predictions.coco.json").read_text())["images"])
    first_t, first_n = done_at[0] if done_at else (wall, 0)
    last_t, last_n = done_at[-1] if done_at else (wall, total)
    by_role: dict[str, list[float]] = {}
    for role, rss in peaks.values():
        by_role.setdefault(role, []).append(round(rss))
    shown = " ".join(cmd[1:]).replace(str(workdir), "$WORKDIR")  # no machine paths in the record
    return {"config": config, "frames": total, "command": shown, "load_average_1min_after": round(os.getloadavg()[0], 2),
            "steady_fps": round((last_n - first_n) / (last_t - first_t), 3) if last_t > first_t else None,
            "first_frame_s": round(first_t, 1), "wall_s": round(wall, 1), "end_to_end_fps": round(total / wall, 3),
            "peak_rss_mb": {role: sorted(v, reverse=True) for role, v in sorted(by_role.items())}}


def time_ray_init() -> float | None:
    """Seconds for ``ray.init`` to start a bare local cluster of 2 CPUs (then shut it down)."""
    code = "import time, ray; t = time.perf_counter(); ray.init(num_cpus=2, include_dashboard=False); print(time.perf_counter() - t); ray.shutdown()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return round(float(r.stdout.strip().splitlines()[-1]), 1) if r.returncode == 0 else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description="Frames/s of predict on the local engine and on Ray.")
    p.add_argument("paths", nargs="+", help="frames, folders, archives or manifests (repeated to --frames)")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--configs", nargs="+", default=["local:2", "ray:1x1", "ray:2x1"], help="local:THREADS or ray:WORKERSxTHREADS")
    p.add_argument("--out", default=None, help="also write the JSON here; runs already in it for other configs are kept (so configs can be measured one call at a time)")
    args, extra = p.parse_known_args(argv)  # anything else goes to predict (e.g. --runtime onnx)
    sources = [it.path for it in iter_items(args.paths) if not it.error and it.data is None]
    if not sources:
        raise SystemExit("benchmarks.scale: no frames found (archives are not repeated: give files or folders)")
    workdir = Path(tempfile.mkdtemp(prefix="bench_scale."))
    try:
        frames_dir = workdir / "frames"
        frames_dir.mkdir()
        for i in range(args.frames):
            src = Path(sources[i % len(sources)])
            (frames_dir / f"{i:06d}_{src.name}").symlink_to(src.resolve())
        result = {"frames": args.frames, "cpus": os.cpu_count(), "ray_init_s": None, "runs": []}
        if args.out and Path(args.out).exists():
            result = json.loads(Path(args.out).read_text())
            result["runs"] = [r for r in result["runs"] if r["config"] not in args.configs]
        if any(c.startswith("ray") for c in args.configs):
            result["ray_init_s"] = time_ray_init()
        for config in args.configs:
            run = measure(config, frames_dir, args.model, workdir, extra)
            given = ["PATH/TO/FRAMES" if a == args.paths[0] else a for a in (sys.argv[1:] if argv is None else argv) if a not in args.paths[1:]]
            run["bench_command"] = "python -m benchmarks.scale " + " ".join(given)
            result["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    fps = {r["config"]: r["steady_fps"] for r in result["runs"]}
    if fps.get("ray:1x1") and fps.get("ray:2x1"):
        result["scaling_efficiency_2_workers"] = round(fps["ray:2x1"] / (2 * fps["ray:1x1"]), 3)
    if fps.get("local:2") and fps.get("ray:2x1"):
        result["ray_2x1_over_local_2"] = round(fps["ray:2x1"] / fps["local:2"], 3)
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
