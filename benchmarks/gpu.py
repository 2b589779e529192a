"""Frames per second of the cascade kept on a GPU, end to end, decoding
included (issue 31). JPEG files are read into memory up front; from their
bytes on, every stage runs on the device in batches
(``benchmarks.gpu_pipeline``): nvjpeg decoding, the letterbox, the detector
(fp16, channels-last) with its box decoding and NMS, the crops (gathers
that reproduce ``extract_crops``), the embedder, the prototype similarity;
then ``prototypes.decide`` on the host.

    python -m benchmarks.gpu [--model DIR] [--frames 512] [--batch 1 8 32 64] [--device cuda] [--out gpu_bench.json]

Per batch size: frames/s end to end (the stages run back to back, nothing
waits for the device but what must), and each stage's ms per frame from a
second pass that waits for the device after each stage. Parity: the first
frames' objects against the CPU cascade's (``cascade.analyse`` then
``resolve`` at the model's thresholds), reported, not asserted. Runs on the
CPU too (fp32), which is how the tests check the parity without a GPU.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpu_pipeline import GpuPipeline, StageClock, read_jpegs
from plankton.pipeline.load import load_artifact

from training.common import hardware

EXAMPLES = Path(__file__).resolve().parent.parent / "plankton_app" / "examples" / "frames"
STAGES = ("decode", "detect", "crop", "embed", "match")
PARITY_IOU = 0.9
WARMUP_BATCHES = 3  # cuDNN autotunes each new shape; the committed frames' crop counts repeat within 3 batches


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_batch(pipe: GpuPipeline, blobs: list[torch.Tensor], b: int) -> dict:
    """One batch size: whole batches only (a short last batch would be a
    new shape for cuDNN to tune inside the timed loop)."""
    n = len(blobs) if len(blobs) < b else len(blobs) // b * b
    chunks = [blobs[i:i + b] for i in range(0, n, b)]
    if pipe.device.type == "cuda":
        for chunk in chunks[:WARMUP_BATCHES]:
            pipe.run(chunk)
    clock = StageClock(pipe.device)
    for chunk in chunks:
        pipe.run(chunk, clock)
    _sync(pipe.device)
    objects, t0 = 0, time.perf_counter()
    for chunk in chunks:
        objects += len(pipe.run(chunk).species)
    _sync(pipe.device)
    wall = time.perf_counter() - t0
    stages = {s: round(clock.ms.get(s, 0.0) / n, 3) for s in STAGES}
    return {"fps": round(n / wall, 2), "frames_timed": n, "end_to_end_ms_per_frame": round(1000 * wall / n, 3),
            "stage_ms_per_frame": stages, "stages_sum_ms_per_frame": round(sum(stages.values()), 3),
            "objects_per_frame": round(objects / n, 1)}


def _match(a: np.ndarray, b: np.ndarray, iou_min: float) -> list[tuple[int, int]]:
    """One-to-one pairs (i in a, j in b) with IoU ≥ iou_min, best IoU first."""
    from plankton.geometry import box_iou

    if len(a) == 0 or len(b) == 0:
        return []
    iou = box_iou(a, b)
    pairs, used_a, used_b = [], set(), set()
    for i, j in zip(*np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape)):
        if iou[i, j] < iou_min:
            break
        if i not in used_a and j not in used_b:
            pairs.append((int(i), int(j)))
            used_a.add(i)
            used_b.add(j)
    return pairs


def parity(pipe: GpuPipeline, cascade, cpu_cascade, paths: list[Path]) -> dict:
    """The pipeline's objects on ``paths`` against the CPU cascade's, both
    resolved at the model's default thresholds by ``FrameAnalysis.resolve``
    (so the fragment rule, where the model has one, applies to both)."""
    from plankton.images import read_image
    from plankton.pipeline.cascade import FrameAnalysis
    from plankton.results import Detections

    objs = pipe.run(read_jpegs(paths, len(paths)))
    boxes, scores = objs.boxes.cpu().numpy(), objs.scores.cpu().numpy()
    frame, emb = objs.frame.cpu().numpy(), objs.embeddings.cpu().numpy()
    det_conf, cls_conf, names = cascade.det_conf, cascade.cls_conf, pipe.names
    offsets = cascade.identifier.cfg.offsets(names)
    n_cpu = n_gpu = matched = same = 0
    box_diff, cosines = [0.0], []
    for i, path in enumerate(paths):
        cpu = cpu_cascade.analyse(read_image(path), path.name).resolve(det_conf, cls_conf)
        sel = frame == i
        (h, w) = objs.sizes[i]
        mine = FrameAnalysis(path.name, w, h, Detections(boxes[sel], scores[sel]), emb[sel], objs.similarity[sel], names,
                             pipe.floor, offsets, cascade.containment).resolve(det_conf, cls_conf)
        pairs = _match(np.array([o.xyxy for o in cpu.objects], np.float32).reshape(-1, 4),
                       np.array([o.xyxy for o in mine.objects], np.float32).reshape(-1, 4), PARITY_IOU)
        n_cpu, n_gpu, matched = n_cpu + len(cpu.objects), n_gpu + len(mine.objects), matched + len(pairs)
        for a, b in pairs:
            same += cpu.objects[a].species == mine.objects[b].species
            box_diff.append(float(np.abs(np.subtract(cpu.objects[a].xyxy, mine.objects[b].xyxy)).max()))
            cosines.append(float(np.dot(cpu.objects[a].embedding, mine.objects[b].embedding)))
    return {"frames": len(paths), "det_conf": det_conf, "cls_conf": cls_conf, "cpu_objects": n_cpu, "pipeline_objects": n_gpu,
            "iou_min": PARITY_IOU, "cpu_boxes_matched_fraction": round(matched / n_cpu, 4) if n_cpu else None,
            "matched_same_species_fraction": round(same / matched, 4) if matched else None,
            "matched_box_max_abs_diff_px": round(max(box_diff), 3), "matched_embedding_cosine_min": round(min(cosines), 5) if cosines else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the bundled model)")
    p.add_argument("--frames", type=int, default=512, help="frames per batch size, cycling through --images")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=("auto", "fp16", "fp32"), default="auto", help="auto: fp16 on CUDA, fp32 elsewhere")
    p.add_argument("--images", default=None, help="folder of JPEG frames (default: the app's example frames)")
    p.add_argument("--parity-frames", type=int, default=3, help="distinct frames compared with the CPU cascade (0: none)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the model files' presence and checksums: for a folder whose ONNX files were set aside to fit the device's upload "
                        "(experiments/gpu_prepare.sh); the safetensors weights are all this benchmark reads")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: this machine has no CUDA device")
    if args.frames < 1 or min(args.batch) < 1:
        p.error("--frames and --batch must be at least 1")
    folder = Path(args.images) if args.images else EXAMPLES
    paths = sorted(q for q in folder.glob("*") if q.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        p.error(f"--images {folder}: no JPEG files there")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: the tuned kernels pay off
    cascade = load_artifact(args.model, device=str(device), verify=not args.no_verify)
    blobs = read_jpegs(paths, args.frames, pin=device.type == "cuda")
    pipe = GpuPipeline(cascade, device, half=None if args.precision == "auto" else args.precision == "fp16")
    result = {
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "hardware": hardware(), "model": cascade.config.get("name"),
        "precision": "fp16, channels-last (box decoding fp32)" if pipe.half else "fp32", "frames": args.frames, "distinct_frames": min(len(paths), args.frames),
        "detector_input": "whole frames, letterboxed to %d px" % pipe.imgsz,
        "model_tiles_or_gates": bool(cascade.detector.cfg.tile or cascade.detector.cfg.gate),
        "batches": {},
    }
    for b in args.batch:
        result["batches"][str(b)] = bench_batch(pipe, blobs, b)
        print(b, result["batches"][str(b)], flush=True)
    if args.parity_frames > 0:
        # the CPU path as the app runs it; an fp32 pipeline on the CPU left the cascade's networks as they were
        cpu_cascade = cascade if device.type == "cpu" and not pipe.half else load_artifact(args.model, verify=not args.no_verify)
        result["parity"] = parity(pipe, cascade, cpu_cascade, paths[: min(args.parity_frames, args.frames)])
        print("parity", result["parity"], flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
