"""Does the gate (``plankton.model.gate``) hold detection accuracy, and what does
it save? Issue 31's rule: it ships as the default only if validation
recall and AP@0.5 stay within 0.005 of full-frame detection.

    python -m experiments.gate_check --model models/default \\
        --coco PATH/TO/studycase/annotations.coco.json [--set margin=64 ...]

Prints one table: on the training frames, the share of the detector's
tile grid that is empty water and the share of GT boxes inside a window;
on the model's validation frames, recall and AP@0.5 at the candidate
floor with and without the gate, and the detector's time per frame for
both, interleaved frame by frame in this one run (so the ratio holds on a
shared machine whose absolute speed drifts).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from training.args import coco_arg, model_arg
from plankton.pipeline.load import load_artifact
from plankton.coco import load_coco
from plankton.model.gate import GateConfig, occupancy, small_grey, tile_occupancy, windows
from plankton.geometry import tile_origins
from plankton.images import read_image

from training.detection_metrics import coco_ap, precision_recall

TOLERANCE = 0.005


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), platform.processor())
        flags = Path("/proc/cpuinfo").read_text()
        return name + "".join(f" +{f}" for f in ("avx512_vnni", "amx_int8") if f in flags)
    except Exception:  # no lscpu, no /proc: the name is informational only
        return platform.processor() or "unknown CPU"


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        k, v = item.split("=", 1)
        out[k] = float(v) if "." in v else int(v)
    return out


def occupancy_figures(coco, ids: list[int], gate: GateConfig, tiles: list[int], overlap: int) -> dict:
    """On frames ``ids``: share of tile×tile grid cells (the detector's
    tiled mode) with no occupied pixel, share of pixels outside the gate's
    windows (full-frame fallbacks count as 0 skipped), and share of ground
    truth boxes whose centre lies in a window."""
    cells, empty = dict.fromkeys(tiles, 0), dict.fromkeys(tiles, 0)
    px = px_skipped = boxes = inside = full = 0
    for i in ids:
        image = read_image(coco.path_of(i))
        H, W = image.shape[:2]
        raw = occupancy(small_grey(image, gate.scale), gate)  # occupied pixels, before dilation
        for tile in tiles:
            occ = tile_occupancy(raw, (W, H), tile_origins(W, H, tile, overlap if tile == tiles[0] else 0), tile)
            cells[tile], empty[tile] = cells[tile] + len(occ), empty[tile] + int((~occ).sum())
        wins = windows(image, gate)
        px += W * H
        full += wins is None
        wins = [(0, 0, W, H)] if wins is None else wins
        px_skipped += W * H - sum(w * h for *_, w, h in wins)
        xyxy = coco.xyxy_of(i).reshape(-1, 4)
        c = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        for cx, cy in c:
            inside += any(x <= cx < x + w and y <= cy < y + h for x, y, w, h in wins)
        boxes += len(c)
    return {"frames": len(ids), "empty_tile_share": {t: empty[t] / max(cells[t], 1) for t in tiles}, "tiles": cells, "skipped_pixel_share": px_skipped / max(px, 1),
            "full_frame_share": full / max(len(ids), 1), "gt_centres_in_windows": inside / max(boxes, 1), "gt_boxes": boxes}


def validation_figures(det, coco, ids: list[int], gate: GateConfig, floor: float) -> dict:
    """Detector on the validation frames with and without the gate, each
    frame run both ways back to back (order alternating) so that both
    timings see the same machine load."""
    gt, runs, secs = {}, {"full": {}, "gate": {}}, {"full": 0.0, "gate": 0.0}
    det.predict(read_image(coco.path_of(ids[0])), conf=floor, gate=False)  # warm-up: first-call allocations
    for n, i in enumerate(ids):
        image = read_image(coco.path_of(i))
        gt[i] = coco.xyxy_of(i).reshape(-1, 4).astype(np.float32)
        for name in (("full", "gate") if n % 2 == 0 else ("gate", "full")):
            t0 = time.perf_counter()
            runs[name][i] = det.predict(image, conf=floor, gate=gate if name == "gate" else False)
            secs[name] += time.perf_counter() - t0
    out = {}
    for name, dets in runs.items():
        ap = coco_ap({i: (g, ["plankton"] * len(g)) for i, g in gt.items()}, {i: (d.xyxy, d.score, ["plankton"] * len(d)) for i, d in dets.items()})
        pr = precision_recall(gt, {i: d.xyxy[d.score >= floor] for i, d in dets.items()})
        out[name] = {"ap50": ap["ap50"], "recall": pr["recall"], "precision": pr["precision"], "s_per_frame": secs[name] / len(ids)}
    out["speedup"] = out["full"]["s_per_frame"] / max(out["gate"]["s_per_frame"], 1e-9)
    out["passed"] = bool(out["full"]["ap50"] - out["gate"]["ap50"] <= TOLERANCE and out["full"]["recall"] - out["gate"]["recall"] <= TOLERANCE)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    model_arg(p)
    coco_arg(p, help="the annotation file the model was trained on")
    p.add_argument("--runtime", default="auto")
    p.add_argument("--floor", type=float, default=0.05, help="detector score floor (the cascade's candidate floor)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="GateConfig fields, e.g. margin=64 threshold=6")
    p.add_argument("--limit", type=int, default=None, help="only the first N frames of each split (a quick look)")
    p.add_argument("--train-frames", type=int, default=None, help="training frames for the occupancy figures (default: all)")
    p.add_argument("--tiles", type=int, nargs="+", default=[640, 256, 128], help="tile grids to count empty cells on (the first: the detector's tiled mode)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    cascade = load_artifact(args.model, runtime=args.runtime)
    det = cascade.detector
    gate = GateConfig(**parse_sets(args.set))
    split = cascade.config["training"]["split"]
    coco = load_coco(args.coco, strict=False)
    train_ids = [i for i in split["train_ids"] if i in coco.images][: args.train_frames or args.limit]
    val_ids = [i for i in split["val_ids"] if i in coco.images][: args.limit]
    occ = occupancy_figures(coco, train_ids, gate, args.tiles, det.cfg.tile_overlap)
    val = validation_figures(det, coco, val_ids, gate, args.floor)
    result = {"cpu": cpu_name(), "runtime": cascade.runtime, "gate": gate.to_dict(), "train": occ, "validation": val,
              "command": "python -m experiments.gate_check " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}

    print(f"CPU: {result['cpu']}; runtime: {cascade.runtime}; gate: {gate.to_dict()}")
    grid = "; ".join(f"{t} px: {occ['empty_tile_share'][t]:.1%} of {occ['tiles'][t]}" for t in args.tiles)
    print(f"training frames: {occ['frames']}; tiles with no occupied pixel ({args.tiles[0]} px: the tiled mode's grid, overlap {det.cfg.tile_overlap}; "
          f"the others without overlap): {grid}")
    print(f"pixels outside the gate's windows: {occ['skipped_pixel_share']:.1%}; frames run whole: {occ['full_frame_share']:.1%}; "
          f"GT box centres inside a window: {occ['gt_centres_in_windows']:.2%} of {occ['gt_boxes']}")
    print(f"\nvalidation frames: {len(val_ids)}, score floor {args.floor}")
    print(f"| {'':10} | {'recall':>7} | {'AP@0.5':>7} | {'precision':>9} | {'s/frame':>8} |")
    print(f"|{'-' * 12}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 10}|")
    for name in ("full", "gate"):
        v = val[name]
        print(f"| {name + ' frame' if name == 'full' else 'gated':10} | {v['recall']:7.4f} | {v['ap50']:7.4f} | {v['precision']:9.4f} | {v['s_per_frame']:8.3f} |")
    print(f"\ndetector speed-up with the gate (same run): {val['speedup']:.2f}×; "
          f"within {TOLERANCE} of full-frame recall and AP@0.5: {'yes' if val['passed'] else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
