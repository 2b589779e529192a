"""Command line: ``python -m plankton predict|classify|enrol|info``.

    python -m plankton predict INPUT... --out DIR [--model DIR] [--det-conf F] [--cls-conf F] [--tile/--no-tile]
                               [--um-per-px F] [--volume-ul V] [--export ecotaxa dwca] [--sample-meta FILE] [--taxonomy FILE]
                               [--engine local|ray [--ray-address ADDR] [--workers N] [--threads-per-worker T] [--batch-size B]]
    python -m plankton classify COCO_JSON --images DIR --out DIR [--model DIR]
    python -m plankton enrol --model DIR --coco CORRECTIONS.json --images DIR --out NEW_MODEL_DIR [--force] [--taxonomy FILE]
    python -m plankton info [--model DIR]
    python -m plankton discover OUT --out DIR [--all] [--species NAME]...   (docs/unknowns.md)
    python -m plankton compare OUT_A OUT_B --out DIR

An input that cannot be read gets one line on stderr; the rest are still
processed and the exit status is 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from plankton.runtime import RUNTIMES
from plankton.images import DEFAULT_MAX_PIXELS, ImageError, read_image

EXIT_OK, EXIT_PARTIAL = 0, 2


def _err(msg: str) -> None:
    print(f"plankton: {msg}", file=sys.stderr, flush=True)


def _model_source(args):
    """(folder, ResolvedModel or None): --model, else the Hub repo from flags
    or $PLANKTON_MODEL_REPO (bounded, checksummed, falling back to its
    cached copy), else the bundled model."""
    if args.model:
        return args.model, None
    from plankton.hub import resolve_model_from_env

    resolved = resolve_model_from_env(args.model_repo, args.model_revision)
    if resolved.repo_id and not getattr(args, "quiet", False):
        _err(f"model: {resolved.description}")
    return resolved.path, resolved


def _model_dir(args):
    return _model_source(args)[0]


def _load_model(args):
    from plankton.pipeline.load import load_artifact

    return load_artifact(_model_dir(args), device=args.device, runtime=args.runtime)


def cmd_predict(args) -> int:
    from plankton.run.batch import options, run_local, settings, write_outputs
    from plankton.run.inputs import iter_items
    from plankton.run.journal import Journal

    if args.engine == "local" and (args.ray_address or args.workers):
        _err("--ray-address and --workers need --engine ray")
        return EXIT_PARTIAL
    if args.engine == "ray":
        from plankton.run.ray_engine import require_ray

        try:
            require_ray()
        except ImportError as e:
            _err(str(e))
            return EXIT_PARTIAL
    path, resolved = _model_source(args)
    from plankton.pipeline.load import load_artifact

    # Ray workers load their own models; locally two frames share the cores (OpenVINO streams, ``cascade.frames_in_flight``).
    cascade = load_artifact(path, device=args.device, runtime=args.runtime, streams=args.in_flight if args.engine == "local" else 1)
    cascade.detector.set_gate(args.gate)  # --no-gate: whole frames even where the model records a gate
    if not args.quiet:
        # Informational, so not prefixed like the warnings and errors.
        flight = f", {cascade.frames_in_flight} frames in flight" if args.engine == "local" and cascade.frames_in_flight > 1 else ""
        print(f"runtime: {cascade.runtime}{flight}", file=sys.stderr, flush=True)
    opts = options(cascade, args)
    try:
        sample = _sample(args, cascade.config)
    except ValueError as e:
        _err(str(e))
        return EXIT_PARTIAL
    from plankton.sample.exports import PublishInputError, publish_inputs

    try:  # checked before the run: a typo in a coordinate should not cost an hour of frames
        meta, taxonomy = publish_inputs(args.sample_meta, args.taxonomy, path, cascade.class_names)
    except PublishInputError as e:
        for line in e.problems:
            _err(line)
        return EXIT_PARTIAL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.annotate:
        (out / "annotated" / ".staging").mkdir(parents=True, exist_ok=True)
    journal = Journal(out, settings(cascade, opts), args.resume)
    if journal.stale:
        _err("the unfinished run in this folder used other settings; starting over")
    elif journal.done:
        _err(f"resuming: {len(journal.done)} frames already done")
    # The number of frames is not known in advance (inputs are enumerated lazily): the bar counts and shows the rate.
    progress = tqdm(desc="frames", unit="frame", disable=args.quiet, dynamic_ncols=True)

    def report(msg: str) -> None:  # above the bar, on a line of its own
        tqdm.write(f"plankton: {msg}", file=sys.stderr)

    try:
        if args.engine == "ray":
            from plankton.run.ray_engine import RunStopped, run

            # Workers load the very snapshot the driver resolved: a Hub commit, else the same folder.
            model = {"path": str(Path(path).resolve()), "repo": resolved.repo_id if resolved and resolved.commit else None,
                     "commit": resolved.commit if resolved else None, "runtime": args.runtime, "device": args.device}
            try:
                frames, bad = run(args, cascade, model, opts, journal, out, report, progress)
            except RunStopped as e:
                journal.close()
                _err(f"the Ray run stopped: {e}; finished frames are kept: rerun with --resume")
                return EXIT_PARTIAL
        else:
            frames, bad = run_local(cascade, iter_items(args.paths, skip=journal.done.keys()), opts, out, journal, report, progress)
    finally:
        progress.close()
    try:
        counter = cascade.count_model(opts.det_conf, opts.cls_conf)
        write_outputs(out, frames, cascade.config.get("categories", []), args.annotate, sample, cascade.class_names, meta, counter=counter)
        from plankton.run.runfiles import write_run_files

        note = None if args.quiet else (lambda m: print(m, file=sys.stderr))  # informational: unprefixed, like "runtime:"
        drift = write_run_files(out, frames, cascade.path, note, (opts.det_conf, opts.cls_conf))
        if args.export:
            from plankton.run.exports import export

            export(args.export, out, args.sample_id or out.resolve().name, args.paths, frames, sample, meta, taxonomy, cascade.config,
                   args.max_pixels, _err, args.quiet)
    except OSError as e:  # disk full, read-only folder…: finished frames stay in the journal
        journal.close()
        _err(f"cannot write the results to {out}: {e.strerror or e}; rerun with --resume once that is fixed")
        return EXIT_PARTIAL
    journal.finish()
    if not args.quiet:
        n = sum(len(f.objects) for f in frames.values())
        print(f"{len(frames)} frames, {n} objects → {out / 'detections.csv'}", file=sys.stderr)
    if drift:
        _err(drift)
    status = EXIT_PARTIAL if bad else EXIT_OK
    if getattr(args, "compare_model", None):
        from plankton.review.compare import with_second_model

        return max(status, with_second_model(args, cmd_predict, _err))
    return status


def _sample(args, config: dict):
    """The scale (flag, else the model's recorded one) and the volume per frame."""
    from plankton.sample.measure import Sample

    um = args.um_per_px if args.um_per_px is not None else (config.get("sample") or {}).get("um_per_px")
    return Sample(um, args.volume_ul)


def cmd_enrol(args) -> int:
    from plankton.pipeline.load import load_artifact
    from plankton.artifact.enrol import EnrolRefused, embed_corrections, enrol
    from plankton.files import sha256
    from plankton.coco import CocoError
    from plankton.images import ImageError

    from plankton.artifact.taxonomy import TaxonomyError, read_csv

    try:
        taxonomy = read_csv(args.taxonomy) if args.taxonomy else None
    except TaxonomyError as e:
        for line in e.problems:
            _err(line)
        return EXIT_PARTIAL
    folder = _model_dir(args)
    cascade = load_artifact(folder, runtime=args.runtime)
    try:
        examples = embed_corrections(cascade, args.coco, args.images, progress=not args.quiet)
    except (CocoError, ImageError) as e:
        _err(str(e).splitlines()[0])
        return EXIT_PARTIAL
    if not examples:
        _err(f"{args.coco}: no boxes to enrol")
        return EXIT_PARTIAL
    source = {"kind": "COCO file", "file": Path(args.coco).name, "sha256": sha256(args.coco), "objects": sum(len(v) for v in examples.values())}
    try:
        report = enrol(folder, examples, args.out, force=args.force, max_drop=args.max_drop, source=source, taxonomy=taxonomy)
    except (EnrolRefused, TaxonomyError) as e:
        _err(str(e))
        return EXIT_PARTIAL
    change = "" if report.top1_change is None else (f"; top-1 on the {report.objects_checked} stored validation objects of the known species "
                                                     f"{report.top1_before:.3f} → {report.top1_after:.3f} ({report.top1_change:+.3f})")
    print(f"version {report.version} → {report.out}: {', '.join(f'{k} {v}' for k, v in sorted(report.examples.items()))}"
          + (f"; new species: {', '.join(report.new_species)}" if report.new_species else "") + change, file=sys.stderr)
    return EXIT_OK


def cmd_classify(args) -> int:
    from plankton.files import atomic_write_text
    from plankton.coco import CocoError, load_coco
    from plankton.results import Detections
    from plankton.run.writers import csv_text

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
    from plankton.artifact.manifest import read_config
    from plankton.runtime.registry import auto_runtime, runtime_summary

    from plankton.artifact.gallery import summary, summary_lines

    folder = _model_dir(args)
    cfg = read_config(folder)
    int8 = cfg.get("int8") or {}
    runtime = auto_runtime(folder, cfg) | {"int8_parity": {k: (int8.get("parity") or {}).get(k) for k in ("drop_vs_fp32", "passed")} if int8.get("route") else None}
    runtime["summary"] = runtime_summary(folder, cfg)  # which runtime runs and why, in one line
    gallery = summary(folder)
    from plankton.sample.exports import taxonomy_summary

    taxonomy, taxonomy_lines = taxonomy_summary(folder, cfg["prototypes"].get("names") or [])
    info = ({k: cfg.get(k) for k in ("name", "version", "created", "versions", "detector", "embedder", "identifier")}
            | {"classes": cfg["prototypes"].get("names"), "runtime": runtime, "gallery": gallery, "taxonomy": taxonomy})
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    ident = cfg["identifier"]
    matched = "each species' mean" if cfg["prototypes"].get("mode") == "mean" else "the best of each species' mean and sub-centres"
    lines = [f"model: {cfg.get('name')} (version {cfg.get('version', 1)}, created {cfg.get('created')}) in {folder}",
             f"runtime: {runtime['summary']}",
             f"detector: {cfg['detector'].get('architecture')} at {cfg['detector'].get('imgsz')} px, candidates from score {cfg['detector'].get('conf')}",
             _counting_line(cfg.get("counting")),
             f"embedder: {cfg['embedder'].get('backbone')}, {cfg['embedder'].get('dim')}-d, crops {ident['crop']}",
             f"similarity threshold cls_conf: {ident.get('cls_conf', ident.get('threshold'))} (species with their own: {len(ident.get('class_thresholds') or {})}); matched to {matched}",
             f"species ({len(info['classes'])}): " + ", ".join(f"{n} [{ident['class_thresholds'][n]}]" if n in (ident.get("class_thresholds") or {}) else n
                                                            for n in info["classes"])]
    print("\n".join(lines + taxonomy_lines + (summary_lines(gallery) if gallery else [])))
    return EXIT_OK


def _counting_line(counting: dict | None) -> str:
    if not counting:
        return "counting: raw boxes at the detector threshold (this model has no count calibration)"
    cv = counting.get("cross_validation") or {}
    return (f"counting point: detector score {counting['det_conf']}; estimates ({counting['method']}) calibrated on {counting.get('validation_frames')} "
            f"validation frames: cross-validated total {cv.get('pooled_total_error_est', float('nan')):+.1%}, Bray-Curtis "
            f"{cv.get('pooled_bray_curtis_est', float('nan')):.3f} (raw {cv.get('pooled_bray_curtis_raw', float('nan')):.3f}), "
            f"95% intervals hold {cv.get('coverage') or float('nan'):.0%} of species counts")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


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
        sp.add_argument("--cls-conf", type=float, default=None, help="cls_conf, the similarity threshold below which an object is unknown (default: the model's)")
        sp.add_argument("--device", default="cpu")
        sp.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help="auto: the model's INT8 files where their parity is recorded and the CPU has the kernels, else its ONNX files, else PyTorch")
        sp.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images (default %(default)s)")
        sp.add_argument("--quiet", action="store_true")

    pr = sub.add_parser("predict", help="detect and identify objects in frames")
    pr.add_argument("paths", nargs="+", help="image files, folders, globs, zip or tar archives, or manifests (.txt/.lst: one path a line)")
    common(pr)
    pr.add_argument("--det-conf", type=float, default=None,
                    help="detector score threshold (default: the model's counting point, where false boxes balance misses; as low as the model's candidate floor, 0.05, for review)")
    pr.add_argument("--tile", action=argparse.BooleanOptionalAction, default=None, help="sliced inference for small objects (default: the model's)")
    pr.add_argument("--gate", action=argparse.BooleanOptionalAction, default=None, help="detect only where a cheap pass finds something (default: the model's; docs/speed-gate.md)")
    pr.add_argument("--in-flight", type=_positive, default=2, metavar="N",
                    help="frames analysed at once by the OpenVINO INT8 runtime, sharing the cores (default %(default)s; 1: one at a time, ~0.3 GB less memory; other runtimes run one)")
    pr.add_argument("--annotate", action="store_true", help="also write annotated images to OUT/annotated/")
    pr.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT: frames it finished are not redone")
    pr.add_argument("--compare-model", default=None, metavar="DIR", help="also run model DIR on the same frames (OUT/model_b) and compare (OUT/compare)")
    sm = pr.add_argument_group("the sample: sizes and concentrations (box-based estimates)")
    sm.add_argument("--um-per-px", type=float, default=None, metavar="F", help="optical scale in micrometres per pixel (default: the model's, if it records one); adds width_um, height_um and esd_um")
    sm.add_argument("--volume-ul", type=float, default=None, metavar="V", help="microlitres of sample imaged per frame; adds counts.csv and concentration.csv")
    from plankton.sample import formats  # read when the parser is built: a row added to the table is a choice

    sm.add_argument("--export", choices=formats.names(), nargs="+", action="extend", default=None, metavar="|".join(formats.names()), help=formats.cli_help())
    sm.add_argument("--sample-id", default=None, help="the sample's id in the exports, part of every object id (default: the output folder's name)")
    sm.add_argument("--sample-meta", default=None, metavar="FILE",
                    help="the sample's station, latitude, longitude, date, time (UTC) and depth_min/max: a JSON object or key,value CSV")
    sm.add_argument("--taxonomy", default=None, metavar="FILE", help="class,scientific_name,rank,aphia_id CSV naming the classes in exports "
                                                                      "(default: the model's taxonomy.csv, else derived from the labels)")
    sc = pr.add_argument_group("scaling out (docs/scale.md)")
    sc.add_argument("--engine", choices=["local", "ray"], default="local", help="local: this process (default); ray: a Ray cluster, with Ray Data")
    sc.add_argument("--ray-address", default=None, metavar="ADDR", help="join this cluster (auto, HOST:PORT or ray://HOST:PORT); default: start a local one")
    sc.add_argument("--workers", type=_positive, default=None, metavar="N", help="model replicas (Ray actors; default: the cluster's CPUs / threads per worker)")
    sc.add_argument("--threads-per-worker", type=_positive, default=1, metavar="T", help="CPUs each worker reserves and its inference threads (default %(default)s)")
    sc.add_argument("--batch-size", type=_positive, default=4, metavar="B", help="frames per block: the unit handed to a worker and retried if it dies (default %(default)s)")
    pr.set_defaults(func=cmd_predict)

    cl = sub.add_parser("classify", help="identify the boxes of a COCO file (no detector)")
    cl.add_argument("coco", help="COCO detection file")
    cl.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    common(cl)
    cl.set_defaults(func=cmd_classify)

    en = sub.add_parser("enrol", help="a new model version from corrected boxes (no retraining)")
    en.add_argument("--coco", required=True, help="COCO file of corrected boxes (e.g. the app's corrections.coco.json)")
    en.add_argument("--images", default=None, help="image root (default: the COCO file's folder)")
    en.add_argument("--out", required=True, help="folder for the new model version")
    model_args(en)
    en.add_argument("--force", action="store_true", help="write it even if top-1 on the known species drops by more than --max-drop")
    en.add_argument("--max-drop", type=float, default=0.01, help="largest accepted drop of top-1 on the stored validation objects (default %(default)s)")
    en.add_argument("--taxonomy", default=None, metavar="FILE", help="class,scientific_name,rank,aphia_id CSV stored as the new version's taxonomy.csv")
    en.add_argument("--runtime", default="auto", choices=RUNTIMES)
    en.add_argument("--quiet", action="store_true")
    en.set_defaults(func=cmd_enrol)

    from plankton.review.compare import add_parser as compare_parser
    from plankton.review.discover import add_parser as discover_parser

    discover_parser(sub, _err)
    compare_parser(sub, _err)

    info = sub.add_parser("info", help="describe a model folder: runtime, classes, thresholds, closest species pairs, sub-centres")
    model_args(info)
    info.add_argument("--json", action="store_true", help="everything as JSON, for scripts")
    info.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from plankton.artifact.manifest import ArtifactError

    try:
        return args.func(args)
    except ArtifactError as e:
        _err(str(e))
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        _err("interrupted; no output file was left half-written")
        return 130
