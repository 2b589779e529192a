"""Train the single-class ("plankton") YOLO detector with Ultralytics,
from scratch (no COCO weights are reachable), aimed at recall on small
objects. Resumable; ends by writing the weights as safetensors.

    python -m training.train_detector --data work/data/detector/data.yaml --model yolo11n.yaml --imgsz 1920 --epochs 60
    python -m training.train_detector --resume work/runs/detector/weights/last.pt
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from .args import device_args, seed_arg
from .common import hardware, log, pick_device, setup, write_json


def _offline_patches() -> None:
    """Ultralytics' AMP check downloads yolo26n.pt and its results reader
    needs polars; neither is available on an offline GPU machine."""
    import ultralytics.engine.trainer as trainer

    trainer.check_amp = lambda model: True
    try:
        import polars  # noqa: F401
    except ImportError:
        def read_results_csv(self):
            with open(self.csv, newline="") as f:
                rows = list(csv.DictReader(f))
            return {k.strip(): [float(r[k]) for r in rows] for k in (rows[0] if rows else {})}

        trainer.BaseTrainer.read_results_csv = read_results_csv


def _localised(data_yaml: str) -> str:
    """A copy of data.yaml whose ``path`` is its own folder, so the prepared
    data set works wherever it was copied to."""
    import yaml

    src = Path(data_yaml).resolve()
    cfg = yaml.safe_load(src.read_text())
    cfg["path"] = str(src.parent)
    dst = src.parent / ".data.local.yaml"
    dst.write_text(yaml.safe_dump(cfg))
    return str(dst)


def _init_from_safetensors(path: str):
    """A trainer callback: load our own safetensors weights into the model
    Ultralytics has just built (and into its EMA copy), before epoch 1."""

    def callback(trainer) -> None:
        from safetensors.torch import load_file

        state = load_file(path)
        trainer.model.load_state_dict(state)
        if trainer.ema:
            trainer.ema.ema.load_state_dict(state)
        log.info("initialised the detector from %s", path)

    return callback


def export_weights(checkpoint: str | Path, out: str | Path, architecture: str) -> dict:
    """Ultralytics checkpoint (our own training output) → safetensors weights
    plus a JSON description that ``save_artifact`` can consume."""
    from safetensors.torch import save_file
    from ultralytics.nn.tasks import load_checkpoint

    model, _ = load_checkpoint(str(checkpoint), device="cpu", fuse=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "detector.safetensors"))
    info = {"architecture": architecture, "yaml": model.yaml, "checkpoint": str(checkpoint)}
    write_json(out / "detector.json", info)
    return info


def learning_curve(results_csv: str | Path) -> list[dict]:
    """Ultralytics' results.csv → per-epoch validation AP and recall."""
    with open(results_csv, newline="") as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    keys = {"epoch": "epoch", "ap50": "metrics/mAP50(B)", "ap50_95": "metrics/mAP50-95(B)", "precision": "metrics/precision(B)", "recall": "metrics/recall(B)", "time": "time"}
    return [{k: float(r[v]) for k, v in keys.items() if v in r} for r in rows]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="YOLO data.yaml from training.prepare")
    p.add_argument("--model", default="yolo11n.yaml", help="any Ultralytics detection YAML")
    p.add_argument("--imgsz", type=int, default=1920)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--hours", type=float, default=0.0, help="stop after this long (the LR schedule fits it)")
    p.add_argument("--batch", type=int, default=8)
    device_args(p, workers=min(8, os.cpu_count() or 1))
    p.add_argument("--project", default="work/runs")
    p.add_argument("--name", default="detector")
    p.add_argument("--resume", default=None, help="last.pt of an interrupted run (same machine)")
    p.add_argument("--init", default=None, help="start from these safetensors weights, e.g. models/default/detector.safetensors: "
                   "continues training on a new machine without unpickling anything")
    p.add_argument("--lr0", type=float, default=0.002, help="AdamW learning rate (lower it when continuing from --init)")
    p.add_argument("--cache", default="none", choices=["none", "ram", "disk"], help="Ultralytics image cache (ram: decode each frame once)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of training images (quick tests)")
    p.add_argument("--out", default=None, help="where to write detector.safetensors (default: the run folder)")
    seed_arg(p)
    args = p.parse_args(argv)
    setup(args.seed)
    _offline_patches()
    from ultralytics import YOLO

    device = pick_device(args.device)
    if args.resume:
        model = YOLO(args.resume)
        model.train(resume=True)
    else:
        model = YOLO(args.model, task="detect")
        if args.init:
            model.add_callback("on_pretrain_routine_end", _init_from_safetensors(args.init))
        model.train(
            data=_localised(args.data), imgsz=args.imgsz, epochs=args.epochs, time=args.hours or None, batch=args.batch,
            workers=args.workers, device=device, project=str(Path(args.project).resolve()), name=args.name, exist_ok=True,
            single_cls=True, pretrained=False, seed=args.seed, deterministic=False, fraction=args.fraction,
            optimizer="AdamW", lr0=args.lr0, cos_lr=True, warmup_epochs=1, close_mosaic=max(1, args.epochs // 10),
            # Microscope frames have no up or down. Arbitrary rotations would loosen
            # axis-aligned boxes, so flips only.
            degrees=0, flipud=0.5, fliplr=0.5, scale=0.3, translate=0.1, mosaic=1.0,
            hsv_h=0.01, hsv_s=0.5, hsv_v=0.3, max_det=300, plots=False, amp=device != "cpu", cache=False if args.cache == "none" else args.cache, verbose=False,
        )
    run = Path(model.trainer.save_dir)
    best = run / "weights" / "best.pt"
    best = best if best.exists() else run / "weights" / "last.pt"
    info = export_weights(best, args.out or run, args.model)
    curve = learning_curve(run / "results.csv")
    summary = {"run": str(run), "weights": str(best), "epochs_done": len(curve), "learning_curve": curve, "hardware": hardware(), "device": device, "args": vars(args)}
    write_json(Path(args.out or run) / "train_detector.json", summary)
    log.info("best AP50 %.3f after %d epochs", max((c.get("ap50", 0) for c in curve), default=0), len(curve))
    return summary | {"architecture": info["architecture"]}


if __name__ == "__main__":
    main()
