"""Class and sub-centre prototypes from the training crops, per-class
thresholds from held-out training frames, then the model artifact:
detector + embedder + prototypes + config in one folder.

    python -m training.build_prototypes --crops work/data/crops.json --detector work/gpu_out/det \
        --embedder work/gpu_out/emb --out models/default [--frames all]

``--frames all`` builds the prototypes (not the thresholds, not the
networks) from every labelled frame, validation frames included: for a
model to ship after it has been evaluated with ``--frames train``.

``--heldout-from RUN`` is for an embedder that trained on every labelled
frame: the held-out similarities behind the thresholds come from the fold
models of the cross-validation that chose its recipe (``training.crossfit``),
each object matched by the fold model that never saw its frame.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.torch import load_file
from tqdm import tqdm

from .args import seed_arg
from plankton.artifact.folder import save_artifact
from plankton.model.crops import CropConfig, dihedral_views, size_features
from plankton.coco import read_coco_json
from plankton.model.detector import DetectorConfig, build_detection_model
from plankton.model.embedder import EmbeddingNet
from plankton.files import portable
from plankton.model.identifier import Identifier, IdentifierConfig
from plankton.model.prototypes import MODES, Prototypes

from .common import hardware, log, setup
from .crops_data import FrameCache, load_index
from .lineage import parent_record, summary
from .thresholds import class_thresholds, held_out_similarity, quantile_table


def embed_records(identifier: Identifier, records: list[dict], cache: FrameCache, desc: str, views: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Crops of ``records`` (one frame at a time, all its boxes in one
    batch) → (M×D embeddings, M record indices). Records flagged in
    ``views`` (N bools) add their 7 other dihedral views, so M ≥ N."""
    embs, owners = [], []
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_file.setdefault(r["file"], []).append(i)
    for f, idx in tqdm(by_file.items(), desc=desc, unit="frame"):
        boxes = np.array([records[i]["xyxy"] for i in idx], np.float32)
        crops, sizes = identifier.crops(cache.frames[f], boxes, cache.fill[f]), size_features(boxes)
        embs.append(identifier.embed_crops(crops, sizes))
        owners.append(np.array(idx))
        more = [j for j, i in enumerate(idx) if views is not None and views[i]]
        if more:
            v = dihedral_views(crops[more])[len(more):]  # the first view is the crop itself
            embs.append(identifier.embed_crops(v, np.tile(sizes[more], (7, 1))))
            owners.append(np.tile(np.array(idx)[more], 7))
    if not embs:
        return np.zeros((0, identifier.model.dim), np.float32), np.zeros(0, int)
    return np.concatenate(embs), np.concatenate(owners)


def write_exemplars(folder: Path, protos: Prototypes, emb: np.ndarray, labels: np.ndarray, records: list[dict], cache: FrameCache, crop: CropConfig) -> None:
    """The gallery's exemplars (``plankton.artifact.gallery``): for each sub-centre the
    training crops nearest to it, small, each object's own shape kept on a
    square of the frame's background (the embedder's square window would
    squeeze a filament to a grey square)."""
    from plankton.sample.ecotaxa import object_crop
    from plankton.artifact.gallery import FILE, PER_SUBCENTER, SIDE, Exemplars, choose_exemplars
    from plankton.artifact.manifest import read_config, write_manifest
    from plankton.thumbs import letterbox

    index = {n: i for i, n in enumerate(protos.names)}
    by_proto = np.array([index[records[i]["name"]] for i in range(len(records))])
    chosen, counts = choose_exemplars(protos, emb, by_proto, PER_SUBCENTER)
    crops = np.zeros((*chosen.shape, SIDE, SIDE, 3), np.uint8)
    for c, k, e in zip(*np.nonzero(chosen >= 0)):
        r = records[chosen[c, k, e]]
        crops[c, k, e] = letterbox(object_crop(cache.frames[r["file"]], r["xyxy"]), SIDE, cache.fill[r["file"]])
    Exemplars(list(protos.names), crops, counts, (chosen >= 0).sum(-1)).save(folder / FILE)
    config = read_config(folder, check_files=False)
    config["gallery"] = {"file": FILE, "per_subcenter": PER_SUBCENTER, "side": SIDE}
    write_manifest(folder, config)


def portable_split(split: dict) -> dict:
    """The split as recorded in the artifact: frame ids and file names, the
    annotation file's name and sha256, but no local paths, which mean
    nothing on another machine. Any string in the meta that names a folder
    is dropped, whatever its key (older split files also had "source")."""
    meta = {k: v for k, v in split["meta"].items() if not (isinstance(v, str) and ("/" in v or "\\" in v))}
    annotations = split["meta"].get("annotations") or split["meta"].get("source")
    if annotations:
        meta["annotations_file"] = Path(annotations).name
    return split | {"meta": meta}


def detector_history(architecture: str, stages: list[dict]) -> dict:
    """train_detector summaries of successive stages (each continuing from
    the last one's weights) → one learning curve with running epoch numbers
    and a ``stage`` field, plus each stage's epochs, wall time and hardware."""
    curve, done = [], 0
    for i, st in enumerate(stages):
        curve += [r | {"epoch": done + r["epoch"], "stage": i + 1} for r in st.get("learning_curve") or []]
        done += st.get("epochs_done") or 0
    info = [{"epochs_done": st.get("epochs_done"), "wall_s": (st.get("learning_curve") or [{}])[-1].get("time"),
             "hardware": st.get("hardware"), "device": st.get("device"), "args": st.get("args")} for st in stages]
    return {"architecture": architecture, "epochs_done": done, "learning_curve": curve, "stages": info}


def embedder_choice(folder: Path) -> dict | None:
    """The comparison experiments.choose_embedder wrote, without the per-epoch histories."""
    f = folder / "comparison.json"
    if not f.exists():
        return None
    c = json.loads(f.read_text())
    return c | {"runs": {n: {s: {k: v for k, v in r.items() if k != "history"} for s, r in runs.items()} for n, runs in c["runs"].items()}}


def with_parent(emb_info: dict) -> dict:
    """A run that started from ``--init`` weights but predates train_embedder
    recording where they came from gets that record now, from the same file."""
    init = (emb_info.get("args") or {}).get("init")
    return emb_info if emb_info.get("init_from") or not init else emb_info | {"init_from": parent_record(init)}


def load_detector(args) -> tuple:
    """(unfused DetectionModel, DetectorConfig, training record) from a
    train_detector folder, or from an existing model (``--detector-from``)."""
    if args.detector_from:
        from plankton.artifact.manifest import DETECTOR_WEIGHTS, read_config

        cfg = read_config(args.detector_from)
        d = {k: v for k, v in cfg["detector"].items() if k not in ("yaml", "weights")}
        model = build_detection_model(cfg["detector"]["yaml"], nc=len(d.get("names", ["plankton"])))
        model.load_state_dict(load_file(str(Path(args.detector_from) / DETECTOR_WEIGHTS)))
        return model, DetectorConfig(**(d | {"names": tuple(d.get("names", ("plankton",)))})), (cfg.get("training") or {}).get("detector")
    info = json.loads((Path(args.detector) / "detector.json").read_text())
    model = build_detection_model(info["yaml"])
    model.load_state_dict(load_file(str(Path(args.detector) / "detector.safetensors")))
    det_train = Path(args.detector) / "train_detector.json"
    stages = [json.loads(Path(f).read_text()) for f in args.detector_before]
    stages += [json.loads(det_train.read_text())] if det_train.exists() else []
    return model, DetectorConfig(architecture=info["architecture"], imgsz=args.det_imgsz, conf=args.det_conf), detector_history(info["architecture"], stages)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", required=True)
    det = p.add_mutually_exclusive_group(required=True)
    det.add_argument("--detector", help="folder with detector.safetensors and detector.json (from train_detector)")
    det.add_argument("--detector-from", metavar="MODEL", help="keep the detector of this model folder, with its settings and training record")
    p.add_argument("--embedder", required=True, help="folder with embedder.safetensors and embedder.json")
    p.add_argument("--out", default="models/default")
    p.add_argument("--detector-before", nargs="*", default=[], metavar="JSON",
                   help="train_detector.json of earlier stages (oldest first) that this detector continued from (--init)")
    p.add_argument("--k", type=int, default=5, help="sub-centres per class")
    p.add_argument("--match", default="subcenter", choices=list(MODES),
                   help="what a crop is matched to: the best of each species' sub-centres and mean, or its mean alone (see Prototypes)")
    p.add_argument("--det-conf", type=float, default=0.05, help="default detector threshold (low: recall first; set a priori, not tuned on validation)")
    p.add_argument("--det-imgsz", type=int, default=1920)
    p.add_argument("--quantile", type=float, default=0.05,
                   help="thresholds: this quantile of held-out training crops' similarity to their own species (see training.thresholds)")
    p.add_argument("--min-class-samples", type=int, default=10, help="species with fewer held-out crops use the global threshold")
    p.add_argument("--cv-folds", type=int, default=5, help="folds (of training frames) for the held-out similarities")
    p.add_argument("--tta-margin", type=float, default=0.0, help="the identifier embeds a crop again in 8 views where its two "
                   "nearest species lie within this similarity (0: never); chosen by the cross-validation (experiments.tta_margin)")
    p.add_argument("--heldout-from", metavar="RUN", help="held-out similarities from these cross-validation fold models "
                   "(experiments.cv_grid OUT/runs/RUN), not from this embedder: for one that trained on every frame")
    p.add_argument("--rare-views", type=int, default=0, metavar="N",
                   help="species with fewer than N training crops also get the 7 other rotations/mirrors of each crop in their prototypes")
    p.add_argument("--frames", default="train", choices=["train", "all"],
                   help="frames whose crops build the prototypes: train (for evaluation) or all labelled frames (to ship, after evaluation)")
    p.add_argument("--keep-out", nargs="*", default=[], metavar="COCO",
                   help="with --frames all: the frames these COCO files list (by file name) stay out of the prototypes "
                        "(the app's example frames, which the tests treat as unseen)")
    p.add_argument("--split-seed", type=int, default=None, help="the frames split again with this seed (as train_embedder --split-seed)")
    p.add_argument("--name", default="plankton-studycase")
    p.add_argument("--weights-dtype", default="float16", choices=["float16", "float32"], help="storage precision of the weights files")
    p.add_argument("--limit", type=int, default=0, help="use only this many crops (quick tests)")
    seed_arg(p)
    return p


def load_embedder(args, emb_info: dict) -> Identifier:
    """The trained embedder, as an Identifier without prototypes (it only embeds)."""
    embedder = EmbeddingNet(emb_info["backbone"], emb_info["dim"], size_features=emb_info.get("size_features", 0))
    embedder.load_state_dict(load_file(str(Path(args.embedder) / "embedder.safetensors")))
    return Identifier(embedder, IdentifierConfig.for_backbone(emb_info["backbone"], CropConfig(**emb_info["crop"])))


def records_of(args, names: list[str], train: list) -> tuple[list, set]:
    """(the crops that build the prototypes, the file names kept out)."""
    kept_out = {Path(im["file_name"]).name for f in args.keep_out for im in read_coco_json(f)[0]["images"]}
    if args.frames != "all":
        return train, kept_out
    val, _, _ = load_index(args.crops, "val", names, split_seed=args.split_seed)
    # a species without training crops has no place in the embedder's training
    # training.prepare names a frame's copy ID_NAME (six-digit id), so NAME is the original file name
    return train + [r for r in val if r["label"] >= 0 and Path(r["file"]).name.split("_", 1)[-1] not in kept_out], kept_out


def split_record(args, names: list[str], train: list) -> dict | None:
    """split.json as the artifact records it (portable; re-split with --split-seed)."""
    split = Path(args.crops).parent / "split.json"
    split = portable_split(json.loads(split.read_text())) if split.exists() else None
    if split and args.split_seed is not None:
        val_ids = sorted({r["image_id"] for r in load_index(args.crops, "val", names, split_seed=args.split_seed)[0]})
        train_ids = sorted({r["image_id"] for r in train})
        split = {"train_ids": train_ids, "val_ids": val_ids,
                 "meta": split["meta"] | {"resplit_seed": args.split_seed, "n_train": len(train_ids), "n_val": len(val_ids)}}
    return split


def held_out(args, names, emb, owner, original, labels, records, n_train, kept_out) -> tuple[np.ndarray, np.ndarray, str]:
    """(own-species similarities of held-out crops, their labels, how they were held out): from the
    cross-validation's fold models with ``--heldout-from``, else from this embedder over folds of its
    training frames (one view per crop), whichever frames built the prototypes."""
    if args.heldout_from:
        from .crossfit import load

        oof = load(args.heldout_from, names, mode=args.match, tta_margin=args.tta_margin, k=args.k, seed=args.seed).without(kept_out)
        index = {n: i for i, n in enumerate(names)}
        return oof.own(), np.array([index.get(t, -1) for t in oof.true]), (
            f"each crop matched by the cross-validation fold model that never saw its frame ({len(set(oof.fold.tolist()))} folds of "
            f"{len(set(oof.frames.tolist()))} frames, {portable_run(args.heldout_from)}), to prototypes of that model's training folds")
    held = original[owner[original] < n_train]
    frame_ids = np.array([r["image_id"] for r in records])
    own = held_out_similarity(emb[held], labels[owner[held]], frame_ids[owner[held]], names, k=args.k, folds=args.cv_folds, seed=args.seed,
                              mode=args.match)
    return own, labels[owner[held]], f"built without the crop's frame ({args.cv_folds}-fold over training frames)"


def portable_run(run: str) -> str:
    """A run folder as the record names it: its last three parts (OUT/runs/RUN), no machine path."""
    return "/".join(Path(run).parts[-3:])


def main(argv=None) -> Path:
    args = build_parser().parse_args(argv)
    setup(args.seed)
    emb_info = json.loads((Path(args.embedder) / "embedder.json").read_text())
    train, names, categories = load_index(args.crops, "train", emb_info["names"], split_seed=args.split_seed)
    train = train[: args.limit] if args.limit else train
    identifier = load_embedder(args, emb_info)
    records, kept_out = records_of(args, names, train)
    cache = FrameCache([r["file"] for r in records])
    labels = np.array([r["label"] for r in records])
    rare = np.bincount(labels, minlength=len(names))[labels] < args.rare_views
    emb, owner = embed_records(identifier, records, cache, f"{args.frames} crops", rare)
    protos = Prototypes.build(emb, labels[owner], names, k=args.k, seed=args.seed, mode=args.match)
    from_train = owner < len(train)
    train_protos = None if from_train.all() else Prototypes.build(emb[from_train], labels[owner[from_train]], names, k=args.k, seed=args.seed, mode=args.match)
    original = np.unique(owner, return_index=True)[1]  # a crop's own view comes before its extra views
    own, own_labels, rule = held_out(args, names, emb, owner, original, labels, records, len(train), kept_out)
    threshold, per_class = class_thresholds(own, own_labels, names, args.quantile, args.min_class_samples)
    log.info("%d prototypes from %d crops (%d views) of %s frames; global threshold %.3f, %d species with their own",
             len(protos.names), len(records), len(emb), args.frames, threshold, len(per_class))

    detector, det_cfg, det_history = load_detector(args)
    training = portable({
        "data": "StudyCase brightfield frames (1920×1080), frame-level split",
        "split": split_record(args, names, train),
        "detector": det_history,
        "embedder": {k: emb_info.get(k) for k in ("backbone", "best_val_f1_macro", "train_crops", "val_crops", "hardware", "device", "args")}
        | summary(with_parent(emb_info)) | {"comparison": embedder_choice(Path(args.embedder))},
        "prototypes": {
            "command": "python -m training.build_prototypes " + " ".join(sys.argv[1:] if argv is None else argv),
            "frames": args.frames, "split_seed": args.split_seed, "crops": int(len(records)), "embeddings": int(len(emb)),
            "crops_per_species": {n: int(c) for n, c in zip(names, np.bincount(labels, minlength=len(names))) if c},
            "rare_views": args.rare_views, "match": args.match,
            "kept_out_frames": sorted(kept_out) if args.frames == "all" else [],
            "threshold_rule": (f"{args.quantile:.0%} quantile of held-out similarity to the own species' prototypes, {rule}; "
                               f"species with fewer than {args.min_class_samples} held-out crops use the pooled quantile, which is "
                               f"also every species' floor"),
            "heldout_quantiles": quantile_table(own, own_labels, names, args.min_class_samples),
            "hardware": hardware()},
    })
    out = save_artifact(
        args.out, detector=detector, detector_cfg=det_cfg, embedder=identifier.model,
        identifier_cfg=dataclasses.replace(identifier.cfg, cls_conf=threshold, class_thresholds=per_class, tta_margin=args.tta_margin),
        prototypes=protos, categories=categories, name=args.name, extra={"training": training}, weights_dtype=args.weights_dtype,
        evaluation_prototypes=train_protos,
    )
    write_exemplars(out, protos, emb[original], labels[owner[original]], [records[i] for i in owner[original]], cache, identifier.cfg.crop)
    log.info("artifact written to %s", out)
    return out


if __name__ == "__main__":
    main()
