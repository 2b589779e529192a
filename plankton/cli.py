"""Command line: ``python -m plankton predict|classify|info``.

    python -m plankton predict FRAME_OR_FOLDER... --out DIR [--model DIR] [--det-conf F] [--cls-conf F] [--tile/--no-tile]
    python -m plankton classify COCO_JSON --images DIR --out DIR [--model DIR]

An input that cannot be read gets one line on stderr; the rest are still
processed and the exit status is 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from .images import DEFAULT_MAX_PIXELS, ImageError, find_images, read_image

EXIT_OK, EXIT_PARTIAL = 0, 2


def _err(msg: str) -> None:
    print(f"plankton: {msg}", file=sys.stderr, flush=True)


def _model_dir(args):
    """--model, else the Hub repo from flags or $PLANKTON_MODEL_REPO (bounded,
    checksummed, falling back to its cached copy), else the bundled model."""
    if args.model:
        return args.model
    from .hub import resolve_model_from_env

    resolved = resolve_model_from_env(args.model_repo, args.model_revision)
    if resolved.repo_id and not getattr(args, "quiet", False):
        _err(f"model: {resolved.description}")
    return resolved.path


def _load_model(args):
    from .artifact import load_artifact

    return load_artifact(_model_dir(args), device=args.device, runtime=args.runtime)


def _tile(args, cascade) -> int | None:
    if args.tile is None:
        return None
    return (cascade.detector.cfg.tile or 640) if args.tile else 0


def cmd_predict(args) -> int:
    from .journal import Journal
    from .writers import save_annotated, write_coco, write_detections_csv

    status, paths = EXIT_OK, []
    for p in args.paths:
        try:
            paths += find_images([p])
        except FileNotFoundError as e:
            _err(str(e))
            status = EXIT_PARTIAL
    cascade = _load_model(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.annotate:
        (out / "annotated").mkdir(exist_ok=True)
    frames, written = [], set()
    det_conf = cascade.det_conf if args.det_conf is None else args.det_conf
    cls_conf = cascade.cls_conf if args.cls_conf is None else args.cls_conf
    settings = {"model": cascade.config.get("files", {}).get("detector.safetensors", {}).get("sha256"), "embedder": cascade.config.get("files", {}).get("embedder.safetensors", {}).get("sha256"),
                "prototypes": list(cascade.identifier.prototypes.names), "det_conf": det_conf, "cls_conf": cls_conf, "tile": _tile(args, cascade)}
    journal = Journal(out, settings, args.resume)
    if journal.stale:
        _err("the unfinished run in this folder used other settings; starting over")
    elif journal.done:
        _err(f"resuming: {len(journal.done)} frames already done")
    for path in tqdm(paths, desc="frames", unit="frame", disable=len(paths) < 2 or args.quiet):
        key = str(path.resolve())
        if key in journal.done:
            frames.append(journal.done[key])
            continue
        try:
            image = read_image(path, max_pixels=args.max_pixels)
        except ImageError as e:
            _err(str(e))
            status = EXIT_PARTIAL
            continue
        try:
            frame = cascade.predict(image, path.name, det_conf, cls_conf, tile=_tile(args, cascade))
        except MemoryError:  # e.g. crops of a 200000×10 frame; the rest of the batch still runs
            _err(f"{path}: out of memory analysing a {image.shape[1]}x{image.shape[0]} frame")
            status = EXIT_PARTIAL
            continue
        frames.append(frame)
        journal.add(key, frame)
        if args.annotate:
            target = out / "annotated" / f"{path.stem}.jpg"
            n = 1
            while target.name in written:  # a.png and a.jpg, or sub1/x.jpg and sub2/x.jpg
                target, n = target.with_name(f"{path.stem}_{n}.jpg"), n + 1
            written.add(target.name)
            save_annotated(target, image, frame)
    try:
        write_detections_csv(out / "detections.csv", frames)
        write_coco(out / "predictions.coco.json", frames, cascade.config.get("categories", []))
    except OSError as e:  # disk full, read-only folder…: finished frames stay in the journal
        journal.close()
        _err(f"cannot write the results to {out}: {e.strerror or e}; rerun with --resume once that is fixed")
        return EXIT_PARTIAL
    journal.finish()
    if not args.quiet:
        n = sum(len(f.objects) for f in frames)
        print(f"{len(frames)} frames, {n} objects → {out / 'detections.csv'}", file=sys.stderr)
    return status


def cmd_classify(args) -> int:
    from .artifact import atomic_write_text
    from .data import CocoError, load_coco
    from .results import Detections
    from .writers import csv_text

    try:
        ds = load_coco(args.coco, args.images, strict=False, check_files=False)
    except CocoError as e:
        _err(str(e).splitlines()[0])
        return EXIT_PARTIAL
    status = EXIT_OK
    for problem in ds.problems:
        _err(f"skipped: {problem}")
        status = EXIT_PARTIAL
    cascade = _load_model(args)
    rows = []
    for image_id in tqdm(sorted(ds.images), desc="frames", unit="frame", disable=len(ds.images) < 2 or args.quiet):
        boxes = ds.boxes_of(image_id)
        if not boxes:
            continue
        try:
            image = read_image(ds.path_of(image_id), max_pixels=args.max_pixels)
        except ImageError as e:
            _err(str(e))
            status = EXIT_PARTIAL
            continue
        dets = Detections(ds.xyxy_of(image_id), [1.0] * len(boxes))
        frame = cascade.analyse_boxes(image, dets, ds.images[image_id].file_name).resolve(0.0, cascade.cls_conf if args.cls_conf is None else args.cls_conf, cascade.identifier.cfg.topk)
        for b, o in zip(boxes, frame.objects):
            row = {"ann_id": b.id, "image": ds.images[image_id].file_name, "species": o.species, "similarity": f"{o.similarity:.4f}", "true_species": ds.categories[b.category_id].name}
            if len(o.topk) > 1:
                row |= {"top2": o.topk[1].species, "top2_similarity": f"{o.topk[1].similarity:.4f}"}
            rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "classifications.csv", csv_text(rows, ["ann_id", "image", "species", "similarity", "true_species", "top2", "top2_similarity"]))
    if not args.quiet:
        print(f"{len(rows)} boxes → {out / 'classifications.csv'}", file=sys.stderr)
    return status


def cmd_info(args) -> int:
    from .artifact import read_config

    cfg = read_config(_model_dir(args))
    print(json.dumps({k: cfg.get(k) for k in ("name", "created", "versions", "detector", "embedder", "identifier")} | {"classes": cfg["prototypes"].get("names")}, indent=2, default=str))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m plankton", description="Detect and identify plankton in microscope frames.")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp):
        sp.add_argument("--model", default=None, help="model folder (default: the Hub repo below, else $PLANKTON_MODEL_DIR or the bundled model)")
        sp.add_argument("--model-repo", default=None, metavar="ORG/NAME", help="Hub model repo (default: $PLANKTON_MODEL_REPO); if unreachable, its cached copy, then the bundled model")
        sp.add_argument("--model-revision", default=None, metavar="REV", help="branch, tag or full commit sha (default: $PLANKTON_MODEL_REVISION, else main)")

    def common(sp):
        sp.add_argument("--out", required=True, help="output folder")
        model_args(sp)
        sp.add_argument("--cls-conf", type=float, default=None, help="identifier similarity threshold (default: the model's)")
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"], help="auto: ONNX Runtime when the model carries current .onnx files and the device is the CPU, else PyTorch")
        sp.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default %(default)s)")
        sp.add_argument("--quiet", action="store_true")

    pr = sub.add_parser("predict", help="detect and identify objects in frames")
    pr.add_argument("paths", nargs="+", help="image files or folders")
    common(pr)
    pr.add_argument("--det-conf", type=float, default=None, help="detector confidence threshold (default: the model's)")
    pr.add_argument("--tile", action=argparse.BooleanOptionalAction, default=None, help="sliced inference for small objects (default: the model's)")
    pr.add_argument("--annotate", action="store_true", help="also write annotated images to OUT/annotated/")
    pr.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT: frames it finished are not redone")
    pr.set_defaults(func=cmd_predict)

    cl = sub.add_parser("classify", help="identify the boxes of a COCO file (no detector)")
    cl.add_argument("coco", help="COCO detection file")
    cl.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    common(cl)
    cl.set_defaults(func=cmd_classify)

    info = sub.add_parser("info", help="describe a model folder")
    model_args(info)
    info.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .artifact import ArtifactError

    try:
        return args.func(args)
    except ArtifactError as e:
        _err(str(e))
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        _err("interrupted; no output file was left half-written")
        return 130
