"""Class and sub-centre prototypes from the training crops, then the model
artifact: detector + embedder + prototypes + config in one folder.

    python -m training.build_prototypes --crops work/data/crops.json --detector work/gpu_out/det \
        --embedder work/gpu_out/emb --out models/default
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.torch import load_file
from tqdm import tqdm

from plankton.artifact import save_artifact
from plankton.crops import CropConfig, extract_crops
from plankton.detector import DetectorConfig, build_detection_model
from plankton.embedder import EmbeddingNet
from plankton.identifier import Identifier, IdentifierConfig
from plankton.prototypes import Prototypes

from .common import hardware, log, setup
from .crops_data import FrameCache, load_index


def embed_records(identifier: Identifier, records: list[dict], cache: FrameCache, desc: str) -> np.ndarray:
    """Crops of ``records`` (one frame at a time, all its boxes in one batch) → N×D."""
    out = np.zeros((len(records), identifier.model.dim), np.float32)
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_file.setdefault(r["file"], []).append(i)
    for f, idx in tqdm(by_file.items(), desc=desc, unit="frame"):
        crops = extract_crops(cache.frames[f], np.array([records[i]["xyxy"] for i in idx]), identifier.cfg.crop, cache.fill[f])
        out[idx] = identifier.embed_crops(crops)
    return out


def open_set_threshold(train_sim: np.ndarray, labels: np.ndarray, quantile: float) -> float:
    """The identifier's default threshold, from training data only: the
    ``quantile`` of training crops' similarity to their own class, so about
    that share of known-species crops would be called unknown."""
    own = train_sim[np.arange(len(labels)), labels]
    return round(float(np.quantile(own, quantile)), 3)


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
    """The comparison training.choose_embedder wrote, without the per-epoch histories."""
    f = folder / "comparison.json"
    if not f.exists():
        return None
    c = json.loads(f.read_text())
    return c | {"runs": {n: {s: {k: v for k, v in r.items() if k != "history"} for s, r in runs.items()} for n, runs in c["runs"].items()}}


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", required=True)
    p.add_argument("--detector", required=True, help="folder with detector.safetensors and detector.json")
    p.add_argument("--embedder", required=True, help="folder with embedder.safetensors and embedder.json")
    p.add_argument("--out", default="models/default")
    p.add_argument("--detector-before", nargs="*", default=[], metavar="JSON",
                   help="train_detector.json of earlier stages (oldest first) that this detector continued from (--init)")
    p.add_argument("--k", type=int, default=5, help="sub-centres per class")
    p.add_argument("--det-conf", type=float, default=0.05, help="default detector threshold (low: recall first; set a priori, not tuned on validation)")
    p.add_argument("--det-imgsz", type=int, default=1920)
    p.add_argument("--quantile", type=float, default=0.02, help="see open_set_threshold")
    p.add_argument("--name", default="plankton-studycase")
    p.add_argument("--weights-dtype", default="float16", choices=["float16", "float32"], help="storage precision of the weights files")
    p.add_argument("--limit", type=int, default=0, help="use only this many crops (quick tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup(args.seed)

    emb_info = json.loads((Path(args.embedder) / "embedder.json").read_text())
    det_info = json.loads((Path(args.detector) / "detector.json").read_text())
    records, names, categories = load_index(args.crops, "train", emb_info["names"])
    records = records[: args.limit] if args.limit else records
    embedder = EmbeddingNet(emb_info["backbone"], emb_info["dim"])
    embedder.load_state_dict(load_file(str(Path(args.embedder) / "embedder.safetensors")))
    id_cfg = IdentifierConfig(crop=CropConfig(**emb_info["crop"]), mean=tuple(emb_info["mean"]), std=tuple(emb_info["std"]))
    placeholder = Prototypes(["_"], np.zeros((1, embedder.dim)), np.zeros((1, 1, embedder.dim)))
    identifier = Identifier(embedder, placeholder, id_cfg)
    cache = FrameCache([r["file"] for r in records])
    emb = embed_records(identifier, records, cache, "training crops")
    labels = np.array([r["label"] for r in records])
    protos = Prototypes.build(emb, labels, names, k=args.k, seed=args.seed)
    label_idx = np.array([protos.names.index(names[y]) for y in labels])
    threshold = open_set_threshold(protos.similarity(emb), label_idx, args.quantile)
    log.info("%d prototypes from %d crops; default identifier threshold %.3f", len(protos.names), len(records), threshold)

    detector = build_detection_model(det_info["yaml"])
    detector.load_state_dict(load_file(str(Path(args.detector) / "detector.safetensors")))
    det_cfg = DetectorConfig(architecture=det_info["architecture"], imgsz=args.det_imgsz, conf=args.det_conf)
    split = Path(args.crops).parent / "split.json"
    det_train = Path(args.detector) / "train_detector.json"
    stages = [json.loads(Path(f).read_text()) for f in args.detector_before]
    stages += [json.loads(det_train.read_text())] if det_train.exists() else []
    training = {
        "data": "StudyCase brightfield frames (1920×1080), frame-level split",
        "split": portable_split(json.loads(split.read_text())) if split.exists() else None,
        "detector": detector_history(det_info["architecture"], stages),
        "embedder": {k: emb_info.get(k) for k in ("backbone", "best_val_f1_macro", "history", "train_crops", "val_crops", "hardware", "device", "args")}
        | {"comparison": embedder_choice(Path(args.embedder))},
        "prototypes": {"command": "python -m training.build_prototypes " + " ".join(sys.argv[1:] if argv is None else argv), "threshold_rule": f"{args.quantile:.0%} quantile of training crops' own-class similarity", "hardware": hardware()},
    }
    out = save_artifact(
        args.out, detector=detector, detector_cfg=det_cfg, embedder=embedder,
        identifier_cfg=IdentifierConfig(crop=id_cfg.crop, mean=id_cfg.mean, std=id_cfg.std, threshold=threshold),
        prototypes=protos, categories=categories, name=args.name, extra={"training": training}, weights_dtype=args.weights_dtype,
    )
    log.info("artifact written to %s", out)
    return out


if __name__ == "__main__":
    main()
