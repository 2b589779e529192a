"""Frames per second of the cascade on a GPU, with batches of frames.
Decoding is done once up front (reported apart); detection runs on a whole
batch of frames, identification on all crops of each frame in one batch.

    python -m benchmarks.gpu --frames 256 --batch 1 8 32 --out gpu_bench.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from plankton.artifact.folder import load_artifact
from plankton.images import read_image

from training.common import hardware


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    paths = sorted((Path(__file__).resolve().parent.parent / "plankton_app" / "examples" / "frames").glob("*.jpg"))
    t0 = time.perf_counter()
    frames = [read_image(paths[i % len(paths)]) for i in range(args.frames)]
    decode_ms = 1000 * (time.perf_counter() - t0) / args.frames
    cascade = load_artifact(args.model, device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    result = {"device": args.device, "hardware": hardware(), "frames": args.frames, "decode_ms_per_frame_cpu": round(decode_ms, 2), "batches": {}}
    for b in args.batch:
        cascade.analyse_batch(frames[:b])  # warm-up: cuDNN autotuning, allocations
        sync()
        times, objects = [], 0
        start = time.perf_counter()
        for i in range(0, args.frames, b):
            t = time.perf_counter()
            out = cascade.analyse_batch(frames[i : i + b])
            sync()
            times.append(time.perf_counter() - t)
            objects += sum(len(a.detections) for a in out)
        wall = time.perf_counter() - start
        result["batches"][str(b)] = {"fps": round(args.frames / wall, 2), "batch_ms_median": round(1000 * statistics.median(times), 1), "objects_per_frame": round(objects / args.frames, 1)}
        print(b, result["batches"][str(b)], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
