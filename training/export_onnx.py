"""Add ONNX Runtime versions of both networks to a model artifact:
``detector.onnx`` and ``embedder.onnx`` next to the safetensors, recorded
in config.json's "onnx" section (opset, versions, the safetensors they were
made from) and covered by its checksums.

    python -m training.export_onnx models/default [--data work/data] [--limit 0] [--imgsz 1280 960]

The export is checked against PyTorch on random inputs (a mismatch is an
error). With ``--data`` (a folder from training.prepare), both runtimes
also run on the validation frames: detection AP@0.5 of each, and the
cosine between their embeddings of the ground-truth boxes, are stored in
config.json ("onnx" → "validation"); ``--imgsz`` adds the ONNX detector's
AP@0.5 at other input sizes, to weigh speed against accuracy. ``--int8``
then makes the INT8 files and checks their parity in the same command
(``training.quantize``, with the same ``--data``, ``--limit`` and
``--imgsz``): re-exported ONNX files make older INT8 files stale.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

import torch

from plankton.pipeline.load import load_artifact
from plankton.files import sha256
from plankton.artifact.manifest import DETECTOR_WEIGHTS, EMBEDDER_WEIGHTS, read_config, write_manifest
from plankton.runtime.onnx import DETECTOR_ONNX, EMBEDDER_ONNX, OPSET, check_parity, export_detector, export_embedder

from .common import log, setup


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def export_artifact(folder: str | Path, opset: int = OPSET, check: bool = True, threads: int | None = None) -> dict:
    """Add ``detector.onnx`` and ``embedder.onnx`` to an artifact folder,
    record them in config.json ("onnx": opset, files, the sha256 of the
    safetensors they were made from, parity on random inputs) and update
    the checksums. With ``check``, outputs are compared with PyTorch on
    random inputs of two sizes and a mismatch raises RuntimeError. Returns
    the "onnx" section."""
    folder = Path(folder)
    cascade = load_artifact(folder, runtime="torch")
    det, ident = cascade.detector, cascade.identifier
    size = ident.cfg.crop.size
    export_detector(det.model, folder / DETECTOR_ONNX, opset=opset, end2end=det.cfg.end2end, names=det.cfg.names)
    export_embedder(ident.model, folder / EMBEDDER_ONNX, size, opset=opset)
    sizes = f", sizes B×{ident.model.size_features} float32 (plankton.model.crops.size_features)" if ident.model.size_features else ""
    section = {
        "opset": opset,
        "files": {"detector": DETECTOR_ONNX, "embedder": EMBEDDER_ONNX},
        "source_sha256": {DETECTOR_WEIGHTS: sha256(folder / DETECTOR_WEIGHTS), EMBEDDER_WEIGHTS: sha256(folder / EMBEDDER_WEIGHTS)},
        "inputs": {"detector": "images B×3×H×W float32 0..1, H and W multiples of %d" % det.stride,
                   "embedder": f"crops B×3×{size}×{size} float32, normalised{sizes}"},
        "versions": {"torch": torch.__version__, "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime")},
    }
    if check:
        section["parity"] = check_parity(cascade, folder, threads=threads)
    config = read_config(folder, check_files=False)
    config["onnx"] = section
    write_manifest(folder, config)
    return section


def validation_parity(folder: Path, data: Path, limit: int = 0, sizes: tuple[int, ...] = (), det_floor: float = 0.001) -> dict:
    """Both runtimes on the validation frames: AP@0.5 (and AP@0.5:0.95) of
    the detector, and the cosine between their embeddings of the same
    ground-truth boxes; plus the ONNX detector's AP at other ``sizes``."""
    from tqdm import tqdm

    from plankton.coco import load_coco
    from plankton.model.detector import Detector
    from plankton.images import read_image

    from .detection_metrics import coco_ap

    split = json.loads((data / "split.json").read_text())
    coco = load_coco(split["meta"]["annotations"], strict=False)
    ids = split["val_ids"][:limit] if limit else split["val_ids"]
    runs = {"torch": load_artifact(folder, runtime="torch"), "onnx": load_artifact(folder, runtime="onnx")}
    base = runs["onnx"].detector
    extra = {s: Detector(base.model, dataclasses.replace(base.cfg, imgsz=s)) for s in sizes if s != base.cfg.imgsz}
    gt, dets, cos, agree, n_boxes = {}, {k: {} for k in list(runs) + [f"onnx@{s}" for s in extra]}, [], 0, 0
    secs = {k: 0.0 for k in dets}
    for i in tqdm(ids, desc="validation frames", unit="frame"):
        image = read_image(coco.path_of(i))
        boxes = coco.xyxy_of(i)
        gt[i] = (boxes, ["plankton"] * len(boxes))
        emb = {}
        for name, cascade in runs.items():
            t = time.perf_counter()
            d = cascade.detector.predict(image, conf=det_floor)
            secs[name] += time.perf_counter() - t
            dets[name][i] = (d.xyxy, d.score, ["plankton"] * len(d))
            emb[name] = cascade.identifier.embed_boxes(image, boxes)
        for s, det in extra.items():
            t = time.perf_counter()
            d = det.predict(image, conf=det_floor)
            secs[f"onnx@{s}"] += time.perf_counter() - t
            dets[f"onnx@{s}"][i] = (d.xyxy, d.score, ["plankton"] * len(d))
        if len(boxes):
            cos.append(np.sum(emb["torch"] * emb["onnx"], axis=1))
            protos = runs["torch"].identifier.prototypes
            agree += int(np.sum(protos.similarity(emb["torch"]).argmax(1) == protos.similarity(emb["onnx"]).argmax(1)))
            n_boxes += len(boxes)
    cos = np.concatenate(cos) if cos else np.ones(0)
    ap = {k: coco_ap(gt, v) for k, v in dets.items()}
    out = {
        "frames": len(ids),
        "boxes": int(n_boxes),
        "detector_floor": det_floor,
        "detection_ap50": {k: round(v["ap50"], 5) for k, v in ap.items()},
        "detection_ap50_95": {k: round(v["ap50_95"], 5) for k, v in ap.items()},
        "ap50_onnx_minus_torch": round(ap["onnx"]["ap50"] - ap["torch"]["ap50"], 5),
        "embedding_cosine": {"min": round(float(cos.min(initial=1.0)), 6), "mean": round(float(cos.mean()) if len(cos) else 1.0, 6)},
        "same_top1_species": round(agree / n_boxes, 5) if n_boxes else 1.0,
        "detector_s_per_frame": {k: round(v / max(len(ids), 1), 3) for k, v in secs.items()},
        "imgsz": {"model": base.cfg.imgsz, **{f"onnx@{s}": s for s in extra}},
    }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="models/default", help="artifact folder to add the ONNX files to")
    p.add_argument("--opset", type=int, default=OPSET)
    p.add_argument("--data", default=None, help="folder from training.prepare: also compare both runtimes on its validation frames")
    p.add_argument("--limit", type=int, default=0, help="with --data: only this many validation frames")
    p.add_argument("--imgsz", type=int, nargs="*", default=[], help="with --data: also the ONNX detector's AP@0.5 at these input sizes")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: available cores)")
    p.add_argument("--int8", action="store_true", help="with --data: then make and check the INT8 files (python -m training.quantize)")
    args = p.parse_args(argv)
    if args.int8 and not args.data:
        p.error("--int8 needs --data: INT8 files are calibrated on training frames and checked on validation frames")
    setup()
    folder = Path(args.model)
    start = time.perf_counter()
    section = export_artifact(folder, opset=args.opset, threads=args.threads)
    log.info("exported %s/detector.onnx and embedder.onnx in %.1f s; random-input parity %s", folder, time.perf_counter() - start, section["parity"])
    if args.data:
        val = validation_parity(folder, Path(args.data), args.limit, tuple(args.imgsz))
        val["command"] = "python -m training.export_onnx " + " ".join(sys.argv[1:] if argv is None else argv)
        config = read_config(folder, check_files=False)
        config["onnx"]["validation"] = val
        write_manifest(folder, config)
        section = config["onnx"]
        log.info("validation: AP50 torch %.4f onnx %.4f; embedding cosine min %.6f; same species %.4f",
                 val["detection_ap50"]["torch"], val["detection_ap50"]["onnx"], val["embedding_cosine"]["min"], val["same_top1_species"])
    print(json.dumps(section, indent=2))
    if args.int8:
        from .quantize import main as quantize

        quantize([str(folder), "--data", str(args.data), *(["--limit", str(args.limit)] if args.limit else []),
                  *(["--imgsz", *map(str, args.imgsz)] if args.imgsz else []), *(["--threads", str(args.threads)] if args.threads else [])])
    return section


if __name__ == "__main__":
    main()
