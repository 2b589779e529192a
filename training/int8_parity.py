"""INT8 against fp32 ONNX on the validation frames, with the issue's
tolerances: detection AP@0.5 and recall at the default threshold may drop
by at most 0.005, identification top-1 (nearest prototype, ground-truth
boxes) by 0.005 and F1-macro by 0.01. A gain is never a failure.

INT8 arithmetic differs by CPU class (``plankton.runtime.quantized.int8_isa``),
so ``measure_class`` also runs the check with OpenVINO limited to a lesser
class's kernels, in a process of its own (the limit is read once per
process), and records the kernels that ran, so a limit that did not take
is never recorded as that class's parity:

    python -m training.int8_parity JOB.json --out RESULT.json    # what measure_class runs

Also recorded, to see what the figures hide: how many of fp32's boxes
(at the default threshold) INT8 finds again at IoU ≥ 0.9, how often both
name the same species, and the cosine between their embeddings.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOLERANCES = {"ap50": 0.005, "recall": 0.005, "top1": 0.005, "f1_macro": 0.01, "open_set_unknown_rate": 0.01}


def _same_boxes(ref: np.ndarray, got: np.ndarray, iou: float = 0.9) -> tuple[int, int]:
    """(fp32 boxes that an INT8 box overlaps at IoU ≥ ``iou``, fp32 boxes)."""
    from plankton.geometry import box_iou

    if not len(ref):
        return 0, 0
    if not len(got):
        return 0, len(ref)
    return int((box_iou(ref, got).max(1) >= iou).sum()), len(ref)


def _scores(gt, dets, conf, true, sim, names, thr) -> dict:
    """Detection as training.evaluate scores it; identification as its
    ``identification_metrics`` does: nearest prototype on ground-truth boxes,
    over the species that have one, F1-macro over the species present; the
    unseen-species check as its ``open_set``: each species' prototype removed
    in turn, the macro share of its objects then answered unknown at the
    model's thresholds."""
    from sklearn.metrics import accuracy_score, f1_score

    from plankton.metrics import open_set

    from .detection_metrics import coco_ap, precision_recall

    ap = coco_ap({i: (b, ["plankton"] * len(b)) for i, b in gt.items()}, {i: (d.xyxy, d.score, ["plankton"] * len(d)) for i, d in dets.items()})
    pr = precision_recall(gt, {i: d.xyxy[d.score >= conf] for i, d in dets.items()})
    known = np.isin(true, names)
    t, pred = true[known], np.asarray(names, dtype=object)[sim[known].argmax(1)] if known.any() else np.array([], dtype=object)
    top1 = float(accuracy_score(t, pred)) if len(t) else 0.0
    f1 = float(f1_score(t, pred, labels=sorted(set(t)), average="macro", zero_division=0)) if len(t) else 0.0
    unseen = open_set(t, sim[known], names, thr)["unknown_rate_macro"] if len(t) else None
    return {"ap50": round(ap["ap50"], 5), "ap50_95": round(ap["ap50_95"], 5), "recall": round(pr["recall"], 5),
            "precision": round(pr["precision"], 5), "top1": round(top1, 5), "f1_macro": round(f1, 5),
            "open_set_unknown_rate": round(unseen, 5) if unseen is not None else 0.0}


def ap_at_sizes(network, det_cfg, coco, val_ids: list[int], sizes: tuple[int, ...], floor: float = 0.001) -> dict:
    """AP@0.5 of a detector network at other input sizes (long side)."""
    from tqdm import tqdm

    from plankton.model.detector import Detector
    from plankton.images import read_image

    from .detection_metrics import coco_ap

    dets = {s: Detector(network, dataclasses.replace(det_cfg, imgsz=s)) for s in sizes}
    found, gt = {s: {} for s in sizes}, {}
    for i in tqdm(val_ids, desc="AP at other input sizes", unit="frame"):
        image = read_image(coco.path_of(i))
        gt[i] = coco.xyxy_of(i)
        for s, det in dets.items():
            found[s][i] = det.predict(image, conf=floor)
    return {str(s): round(coco_ap({i: (b, ["plankton"] * len(b)) for i, b in gt.items()},
                                  {i: (d.xyxy, d.score, ["plankton"] * len(d)) for i, d in found[s].items()})["ap50"], 5) for s in sizes}


def parity(fp32, candidates: dict, coco, val_ids: list[int], floor: float = 0.001) -> dict:
    """``fp32``: the fp32 ONNX Cascade; ``candidates``: name → (detector
    network, embedder network). Returns fp32's scores, each candidate's
    scores, differences, agreement and pass/fail."""
    from tqdm import tqdm

    from plankton.model.detector import Detector
    from plankton.model.identifier import Identifier
    from plankton.images import read_image
    from plankton.model.prototypes import Prototypes

    protos = fp32.identifier.prototypes
    eval_file = fp32.config["prototypes"].get("evaluation_file")
    if eval_file:  # as training.evaluate scores identification: prototypes from training frames only
        protos = Prototypes.load(fp32.path / eval_file)
    names = list(protos.names)
    cat = {c.id: c.name for c in coco.categories.values()}
    det_cfg, id_cfg = fp32.detector.cfg, fp32.identifier.cfg
    runs = {"fp32": (fp32.detector, Identifier(fp32.identifier.model, id_cfg, protos))}
    for k, (det, emb) in candidates.items():
        runs[k] = (Detector(det, det_cfg), Identifier(emb, id_cfg, protos))
    first = {}  # candidates that share a detector network share its detections
    for k in runs:
        first.setdefault(id(runs[k][0].model), k)
    gt, true = {}, []
    dets = {k: {} for k in runs}
    embs = {k: [] for k in runs}
    secs = {k: 0.0 for k in runs}
    for i in tqdm(val_ids, desc="INT8 parity, validation frames", unit="frame"):
        image = read_image(coco.path_of(i))
        gt[i] = coco.xyxy_of(i)
        true += [cat[b.category_id] for b in coco.boxes_of(i)]
        for k, (det, ident) in runs.items():
            same = first[id(det.model)]
            if same == k:
                t = time.perf_counter()
                dets[k][i] = det.predict(image, conf=floor)
                secs[k] += time.perf_counter() - t
            else:
                dets[k][i], secs[k] = dets[same][i], secs[same]
            embs[k].append(ident.embed_boxes(image, gt[i]))
    true = np.asarray(true, dtype=object)
    emb = {k: np.concatenate(v) for k, v in embs.items()}
    sims = {k: protos.similarity(v) for k, v in emb.items()}
    from plankton.model.prototypes import shifted_thresholds

    conf, thr = det_cfg.conf, shifted_thresholds(id_cfg.cls_conf, id_cfg.offsets(names))
    base = _scores(gt, dets["fp32"], conf, true, sims["fp32"], names, thr)
    out = {"frames": len(val_ids), "objects": int(len(true)), "detector_floor": floor, "default_threshold": conf,
           "tolerances": TOLERANCES, "fp32": base | {"detector_s_per_frame": round(secs["fp32"] / max(len(val_ids), 1), 3)}, "routes": {}}
    for k in candidates:
        got = _scores(gt, dets[k], conf, true, sims[k], names, thr)
        drop = {m: round(base[m] - got[m], 5) for m in TOLERANCES}
        same = np.array([_same_boxes(dets["fp32"][i].xyxy[dets["fp32"][i].score >= conf], dets[k][i].xyxy[dets[k][i].score >= conf]) for i in gt])
        cos = np.sum(emb["fp32"] * emb[k], axis=1)
        out["routes"][k] = got | {
            "drop_vs_fp32": drop,
            "passed": all(drop[m] <= TOLERANCES[m] for m in TOLERANCES),
            "passed_detection": all(drop[m] <= TOLERANCES[m] for m in ("ap50", "recall")),
            "passed_identification": all(drop[m] <= TOLERANCES[m] for m in ("top1", "f1_macro", "open_set_unknown_rate")),
            "same_boxes_iou0.9": round(float(same[:, 0].sum() / max(same[:, 1].sum(), 1)), 5),
            "same_species": round(float(np.mean(sims["fp32"].argmax(1) == sims[k].argmax(1))), 5) if len(true) else 1.0,
            "embedding_cosine": {"min": round(float(cos.min(initial=1.0)), 5), "mean": round(float(cos.mean()) if len(cos) else 1.0, 5)},
            "detector_s_per_frame": round(secs[k] / max(len(val_ids), 1), 3),
        }
    return out



def load_candidates(folder: str | Path, spec: dict, threads: int | None = None) -> dict:
    """name → (detector, embedder) networks from {name: {"dir", "route",
    "embedder": "int8" | "fp32"}}: the route's files in "dir", or the
    folder's fp32 embedder.onnx in the route's runtime. Candidates that share
    a folder share its detector object, so ``parity`` runs it once."""
    from plankton.runtime.onnx import EMBEDDER_ONNX, default_threads, load_detector, load_embedder
    from plankton.runtime.quantized import OPENVINO, ROUTE_FILES, load_openvino

    def load(path: Path, kind: str, route: str):
        if route == OPENVINO:
            return load_openvino(path, kind, threads or default_threads())
        return (load_detector if kind == "detector" else load_embedder)(path, threads)

    folder, nets, out = Path(folder), {}, {}
    for name, c in spec.items():
        route, where = c["route"], Path(c["dir"])
        det_file, emb_file = ROUTE_FILES[route]
        emb_path = where / emb_file if c["embedder"] == "int8" else folder / EMBEDDER_ONNX
        for path, kind in ((where / det_file, "detector"), (emb_path, "embedder")):
            if (str(path), route) not in nets:
                nets[(str(path), route)] = load(path, kind, route)
        out[name] = (nets[(str(where / det_file), route)], nets[(str(emb_path), route)])
    return out


def kernels_of(candidates: dict) -> list[str]:
    """The 8-bit kernels OpenVINO compiled for the candidates' networks."""
    from plankton.runtime.quantized import int8_kernels

    return sorted({k for pair in candidates.values() for m in pair if hasattr(m, "compiled") for k in int8_kernels(m.compiled)})


EXPECTED_KERNELS = {"avx2": "avx2", "vnni": "avx512"}  # what oneDNN's names say under each class's limit


def measure_here(folder: str | Path, coco, val_ids: list[int], spec: dict, isa: str, threads: int | None = None) -> dict:
    """``parity`` of the candidates in ``spec`` on this process's kernels,
    labelled with the class ``isa`` they stand for, the CPU and the kernels."""
    from plankton.pipeline.load import load_artifact
    from plankton.runtime.quantized import ISA_ENV, cpu_name, kernels_class

    candidates = load_candidates(folder, spec, threads)
    kernels = kernels_of(candidates)
    limit = os.environ.get(ISA_ENV)
    if limit and isa in EXPECTED_KERNELS and kernels_class(kernels) != EXPECTED_KERNELS[isa]:
        return {"isa": isa, "not_measured": f"{ISA_ENV}={limit} did not limit OpenVINO's 8-bit kernels to {isa} (got {', '.join(kernels) or 'none'})"}
    checked = parity(load_artifact(folder, runtime="onnx"), candidates, coco, val_ids)
    return checked | {"isa": isa, "cpu": cpu_name(), "kernels": kernels, "isa_limit": f"{ISA_ENV}={limit}" if limit else None}


def measure_class(isa: str, folder: str | Path, coco, val_ids: list[int], spec: dict, threads: int | None = None) -> dict:
    """``measure_here`` in a child process whose OpenVINO may use only the
    kernels of class ``isa`` (``ISA_LIMITS``); {"not_measured": why} when
    the child fails or the limit did not take."""
    from plankton.runtime.quantized import ISA_ENV, ISA_LIMITS

    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="plankton-parity.") as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"folder": str(Path(folder).resolve()), "annotations": str(coco.source), "image_root": str(coco.image_root),
                                   "val_ids": [int(i) for i in val_ids], "spec": spec, "isa": isa, "threads": threads}))
        env = os.environ | {ISA_ENV: ISA_LIMITS[isa], "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        run = subprocess.run([sys.executable, "-m", "training.int8_parity", str(job), "--out", str(out)], env=env, cwd=root,
                             stdout=subprocess.PIPE, stderr=None, text=True)
        if run.returncode != 0 or not out.is_file():
            return {"isa": isa, "not_measured": f"the {isa} parity run failed (exit {run.returncode})"}
        return json.loads(out.read_text())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description="One class's INT8 parity, as training.quantize asks for it (a JSON job file).")
    p.add_argument("job", help="JSON: folder, annotations, image_root, val_ids, spec, isa, threads")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from plankton.coco import load_coco

    job = json.loads(Path(args.job).read_text())
    coco = load_coco(job["annotations"], job["image_root"], strict=False)
    result = measure_here(job["folder"], coco, job["val_ids"], job["spec"], job["isa"], job.get("threads"))
    Path(args.out).write_text(json.dumps(result))
    return result


__all__ = ["TOLERANCES", "ap_at_sizes", "kernels_of", "load_candidates", "measure_class", "measure_here", "parity"]


if __name__ == "__main__":
    main()
