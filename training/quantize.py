"""INT8 versions of the detector and the embedder, made and checked in one
command, and the faster route that holds accuracy added to the artifact.

    python -m training.quantize models/default --data work/data [--routes openvino onnxruntime] [--calib-frames 32]
                                [--overflow-fix enable first_layer] [--this-class-only] [--imgsz 1600 1280] [--limit 0]
    python -m training.quantize MODEL_DIR --coco PATH/TO/annotations.coco.json    # the split from MODEL_DIR/training.json

Needs current fp32 ONNX files (``python -m training.export_onnx``; its
``--int8`` runs this too). Both routes quantize the same fp32 ONNX graphs
with the same calibration frames, taken from the model's TRAINING split
(never its validation frames): the detector sees them letterboxed as the
``Detector`` does, the embedder sees the crops of their ground-truth boxes.

- ``openvino``: OpenVINO IR quantized by NNCF (``nncf.quantize``, mixed
  preset: symmetric weights per channel, asymmetric activations), by
  default with NNCF's overflow fix on every layer (7-bit weights), which
  keeps CPUs without VNNI from saturating; "first_layer" is NNCF's default.
- ``onnxruntime``: ONNX Runtime static quantization, QDQ, signed 8-bit
  weights per channel, with 7-bit weight range (``reduce_range``): CPUs
  without VNNI add u8×s8 products in 16 bits, which 8-bit weights can
  saturate (ONNX Runtime's quantization guide).

In both, the detection head's decoding (DFL, box arithmetic, the score
sigmoid and the concatenation of pixel boxes with 0..1 scores, which share
no sensible 8-bit scale) stays in fp32, as Ultralytics' own OpenVINO INT8
export does ("decode"); a second variant also keeps the head's
convolutions in fp32 ("head"; on the bundled model it cut the AP@0.5
loss from 0.0047 to 0.0033 for 15-25% more detector time). The
embedder's final L2 normalisation stays fp32 too.

Then ``training.int8_parity`` runs fp32 ONNX and each route on the
validation frames, each route also with the fp32 embedder in its runtime,
on this CPU's class of 8-bit arithmetic and again, in a child process, with
OpenVINO limited to each lesser class's kernels (AVX2 without VNNI on a
VNNI CPU; also VNNI on an AMX one). A variant ships when it holds on every
class measured (else on this CPU's; the runtime then refuses the others).
A route keeps its INT8 embedder only if identification holds with it,
else it runs ``embedder.onnx`` in fp32 (on the bundled model the INT8
EfficientNet-Lite0 lost 0.03-0.05 F1-macro, whichever layers were kept in
fp32). The routes that pass are timed (network only, interleaved, on a
calibration frame), the fastest ships, the others' files are removed,
and config.json's "int8" section records the route, each network's
precision, the sources' sha256, the calibration frame ids, the CPU class,
every route's parity and timing, and the command.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plankton.pipeline.load import load_artifact
from plankton.files import sha256
from plankton.model.identifier import to_tensor
from plankton.artifact.manifest import read_config, write_manifest
from plankton.runtime.onnx import EMBEDDER_ONNX, onnx_status
from plankton.runtime.quantized import (ISA_ENV, ISA_LIMITS, ONNXRUNTIME, OPENVINO, ROUTE_FILES, SOURCES, cpu_flags, cpu_isa, cpu_name,
                                        isa_classes_below, route_files, with_weights)

from .common import log, setup
from .quantize_routes import OVERFLOW_FIXES, build_route, fp32_nodes, head_decode_nodes  # noqa: F401  (fp32_nodes, head_decode_nodes: this module's API)

CALIB_FRAMES = 32


def calibration_ids(train_ids: list[int], n: int) -> list[int]:
    """``n`` training frames spread evenly over the sorted ids (a fixed
    choice, recorded in the config)."""
    ids = sorted(int(i) for i in train_ids)
    if n >= len(ids):
        return ids
    return [ids[int(k * len(ids) / n)] for k in range(n)]


class Calibration:
    """Re-iterable network inputs for the calibration frames, decoded on
    each pass (NNCF iterates twice; 32 letterboxed frames would hold 0.8 GB)."""

    def __init__(self, cascade, coco, ids: list[int], batch: int = 32):
        self.cascade, self.coco, self.ids, self.batch = cascade, coco, list(ids), batch

    def _frames(self):
        from plankton.images import read_image

        for i in self.ids:
            yield read_image(self.coco.path_of(i)), self.coco.xyxy_of(i)

    def detector(self):
        """1×3×H×W float32 0..1 per frame, letterboxed as ``Detector._infer`` does."""
        det = self.cascade.detector
        imgsz = -(-det.cfg.imgsz // det.stride) * det.stride
        for image, _ in self._frames():
            boxed = det._letterbox(image, imgsz)
            yield {"images": np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32) / 255}

    def embedder(self):
        """Batches of the ground-truth boxes' crops (and sizes, for a size-aware embedder)."""
        from plankton.model.crops import size_features

        ident = self.cascade.identifier
        crops, sizes = [], []
        for image, xyxy in self._frames():
            if len(xyxy):
                crops.append(ident.crops(image, xyxy))
                sizes.append(size_features(xyxy))
        if not crops:
            raise ValueError("the calibration frames have no boxes to calibrate the embedder on")
        crops, sizes = np.concatenate(crops), np.concatenate(sizes).astype(np.float32)
        for i in range(0, len(crops), self.batch):
            feed = {"crops": to_tensor(crops[i : i + self.batch], ident.cfg.mean, ident.cfg.std).numpy()}
            if ident.cfg.crop.size_input:
                feed["sizes"] = sizes[i : i + self.batch]
            yield feed

    def count(self, kind: str) -> int:
        return len(self.ids) if kind == "detector" else sum(len(f["crops"]) for f in self.embedder())


def network_times(models: dict, calib: Calibration, rounds: int = 5) -> dict:
    """Median ms of each runtime's detector and embedder networks on one
    calibration frame and its crops, the runtimes interleaved so that load
    from other processes hits all of them alike."""
    det_x = next(iter(calib.detector()))["images"]
    emb_feed = next(iter(calib.embedder()))
    emb_args = [emb_feed["crops"][:24]] + ([emb_feed["sizes"][:24]] if "sizes" in emb_feed else [])
    times = {k: {"detector": [], "embedder": []} for k in models}
    for k, (det, emb) in models.items():
        det(det_x), emb(*emb_args)  # warm up: first calls compile kernels
    for _ in range(rounds):
        for k, (det, emb) in models.items():
            t = time.perf_counter()
            det(det_x)
            t1 = time.perf_counter()
            emb(*emb_args)
            times[k]["detector"].append(t1 - t)
            times[k]["embedder"].append(time.perf_counter() - t1)
    return {k: {n: round(float(np.median(v)) * 1000, 1) for n, v in d.items()} | {"input": list(det_x.shape), "crops": len(emb_args[0]), "rounds": rounds}
            for k, d in times.items()}


def _choose(variant: str, by_isa: dict) -> tuple[str, dict]:
    """A variant's embedder precision and its parity on each CPU class
    measured: INT8 when identification holds with it on every class, else
    fp32 (the detector's figures are the same)."""
    int8 = {isa: c["routes"][variant] for isa, c in by_isa.items() if variant in c["routes"]}
    if all(r["passed"] for r in int8.values()) or not all(r["passed_detection"] for r in int8.values()):
        return "int8", int8
    return "fp32", {isa: c["routes"][f"{variant}+fp32-embedder"] for isa, c in by_isa.items() if variant in c["routes"]}


def _spec(variants: list[str], tmp: Path) -> dict:
    """``int8_parity.load_candidates``' spec: each variant with its INT8
    embedder and with the fp32 one."""
    spec = {}
    for v in variants:
        base = {"dir": str(tmp / v), "route": v.split("/")[0]}
        spec[v], spec[f"{v}+fp32-embedder"] = base | {"embedder": "int8"}, base | {"embedder": "fp32"}
    return spec


def _variants(routes, keep_fp32, overflow_fix) -> list[str]:
    """route/head-kept-fp32[/overflow fix]: ONNX Runtime's weights are always 7-bit."""
    return [f"{r}/{k}" + (f"/{o}" if r == OPENVINO else "") for r in routes for k in keep_fp32 for o in (overflow_fix if r == OPENVINO else ("",))
            if r == OPENVINO or not o]


def quantize_artifact(folder: str | Path, coco, train_ids: list[int], val_ids: list[int], routes=(OPENVINO, ONNXRUNTIME),
                      calib_frames: int = CALIB_FRAMES, keep_fp32=("decode", "head"), sizes: tuple[int, ...] = (),
                      ship: str | None = None, threads: int | None = None, command: str = "", overflow_fix=("enable",),
                      lesser_classes: bool = True) -> dict:
    """Build every route with each choice of what of the detection head
    stays fp32 (``keep_fp32``) and, for OpenVINO, of NNCF's overflow fix;
    measure parity on this CPU's class and, with ``lesser_classes``, with
    OpenVINO limited to each lesser class's kernels; measure speed; ship the
    fastest variant that passes on every class measured (else on this CPU's),
    of route ``ship`` if given, and record the "int8" section. Returns it."""
    from .int8_parity import ap_at_sizes, kernels_of, load_candidates, measure_class, parity

    folder = Path(folder)
    config = read_config(folder)
    problem = onnx_status(folder, config)
    if problem:
        raise SystemExit(f"training.quantize: the fp32 ONNX files are not usable: {problem}")
    flags = cpu_flags()
    native = cpu_isa(flags) or "none"  # under ONEDNN_MAX_CPU_ISA, the class it limits OpenVINO to
    fp32 = load_artifact(folder, runtime="onnx")
    calib = Calibration(fp32, coco, calibration_ids(train_ids, calib_frames))
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.int8."))
    try:
        built, variants = {}, _variants(routes, keep_fp32, overflow_fix)
        for v in variants:
            route, keep, fix = (v.split("/") + [""])[:3]
            log.info("quantizing with %s (head kept fp32: %s%s) on %d training frames", route, keep, f", overflow fix: {fix}" if fix else "",
                     len(calib.ids))
            (tmp / v).mkdir(parents=True)
            built[v] = build_route(route, folder, tmp / v, calib, keep, fix or "enable")
        spec = _spec(variants, tmp)
        candidates = load_candidates(folder, spec, threads)
        limit = f"{ISA_ENV}={os.environ[ISA_ENV]}" if os.environ.get(ISA_ENV) else None  # set by hand: this run's class is the limit's
        by_isa = {native: parity(fp32, candidates, coco, val_ids) | {"cpu": cpu_name(), "kernels": kernels_of(candidates), "isa_limit": limit}}
        not_measured = {}
        for isa in isa_classes_below(native, flags) if lesser_classes else ():
            limited = {k: c for k, c in spec.items() if c["route"] == OPENVINO}
            log.info("INT8 parity with OpenVINO limited to the %s class's kernels (%s=%s)", isa, ISA_ENV, ISA_LIMITS[isa])
            got = measure_class(isa, folder, coco, val_ids, limited, threads) if limited else {
                "not_measured": "ONNX Runtime's kernels cannot be limited to a lesser class"}
            if "not_measured" in got:
                not_measured[isa] = got["not_measured"]
                log.warning("not measured for %s: %s", isa, got["not_measured"])
            else:
                by_isa[isa] = got
        choice = {v: _choose(v, by_isa) for v in variants}
        models = {"onnx": (fp32.detector.model, fp32.identifier.model)}
        models |= {v: candidates[v if choice[v][0] == "int8" else f"{v}+fp32-embedder"] for v in variants}
        speed = network_times(models, calib)
        shippable = [v for v in variants if ship is None or v.startswith(f"{ship}/")]
        everywhere = [v for v in shippable if all(r["passed"] for r in choice[v][1].values())]
        here = [v for v in shippable if choice[v][1][native]["passed"]]
        chosen = min(everywhere or here, key=lambda v: speed[v]["detector"] + speed[v]["embedder"], default=None)
        if ship and chosen is None:  # forced: the most accurate detector variant of that route
            chosen = max(shippable, key=lambda v: choice[v][1][native]["ap50"])
        if chosen and sizes:
            choice[chosen][1][native]["ap50_at_imgsz"] = ap_at_sizes(models[chosen][0], fp32.detector.cfg, coco, val_ids, sizes)
        for route in ROUTE_FILES:  # no stale files of another route stay behind
            for f in route_files(route):
                (folder / f).unlink(missing_ok=True)
        files = {}
        if chosen:
            det_file, emb_file = ROUTE_FILES[chosen.split("/")[0]]
            files = {"detector": det_file, "embedder": emb_file if choice[chosen][0] == "int8" else EMBEDDER_ONNX}
            for f in with_weights([det_file] + ([emb_file] if choice[chosen][0] == "int8" else [])):
                shutil.move(str(tmp / chosen / f), str(folder / f))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    context = ("cpu", "kernels", "isa_limit", "frames", "objects")
    section = {
        "route": chosen.split("/")[0] if chosen else None,
        "files": files,
        "precision": {"detector": "int8", "detector_head_kept_fp32": chosen.split("/")[1], "embedder": choice[chosen][0],
                      "overflow_fix": built[chosen]["detector"].get("overflow_fix"), "weights_7bit": built[chosen]["weights_7bit"]} if chosen else {},
        "source_sha256": {name: sha256(folder / name) for name in SOURCES},
        "calibration": {"split": "train", "frame_ids": calib.ids, "frames": len(calib.ids), "embedder_crops": calib.count("embedder"),
                        "detector_input": f"letterboxed to {fp32.detector.cfg.imgsz} px as the Detector does"},
        "cpu": {"int8_isa": cpu_isa(flags), "vnni": bool(flags and {"avx512_vnni", "avx_vnni"} & flags),
                "avx512": bool(flags and "avx512f" in flags), "name": cpu_name()},
        "parity": choice[chosen][1][native] if chosen else {"passed": False},
        # which CPU classes the shipped files were checked on, where and with which kernels: what plankton.runtime.quantized.cpu_problem reads
        "parity_by_isa": {isa: rec | {k: by_isa[isa].get(k) for k in context} for isa, rec in choice[chosen][1].items()} if chosen else {},
        "parity_not_measured": not_measured,
        "tolerances": by_isa[native]["tolerances"],
        "fp32": by_isa[native]["fp32"],
        "variants": {v: built[v] | {"embedder_precision": choice[v][0], "parity": choice[v][1][native], "parity_by_isa": choice[v][1],
                                    "int8_embedder_parity": by_isa[native]["routes"][v], "network_ms": speed[v]} for v in variants},
        "network_ms_fp32_onnx": speed["onnx"],
        "why": (f"{chosen}: {'the fastest variant of --ship ' + ship if ship else 'the fastest variant whose parity passed'}"
                + ("" if chosen in everywhere else " on this CPU's class only") if chosen else "no variant held accuracy: no INT8 files shipped"),
        "command": command,
    }
    config = read_config(folder, check_files=False)
    # every variant's build and parity is the training record (training.json); inference reads the chosen one
    config["int8"] = {k: v for k, v in section.items() if k != "variants"}
    config.setdefault("training", {})["int8_variants"] = section["variants"]
    write_manifest(folder, config)
    return section


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="models/default", help="artifact folder with current fp32 ONNX files")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="folder from training.prepare (split.json)")
    src.add_argument("--coco", help="the annotations, with the model's split from its training.json")
    p.add_argument("--routes", nargs="+", choices=(OPENVINO, ONNXRUNTIME), default=[OPENVINO, ONNXRUNTIME])
    p.add_argument("--ship", choices=(OPENVINO, ONNXRUNTIME), default=None, help="ship this route even if another is faster")
    p.add_argument("--calib-frames", type=int, default=CALIB_FRAMES, help="training frames to calibrate on (default %(default)s)")
    p.add_argument("--keep-fp32", nargs="+", choices=("decode", "head", "none"), default=["decode", "head"],
                   help="what of the detection head stays fp32; each choice is built and measured (default: %(default)s)")
    p.add_argument("--overflow-fix", nargs="+", choices=OVERFLOW_FIXES, default=["enable"],
                   help="NNCF's overflow fix for the OpenVINO route; each choice is built and measured (default: %(default)s)")
    p.add_argument("--this-class-only", action="store_true", help="measure parity on this CPU's class only, not also on the lesser ones")
    p.add_argument("--imgsz", type=int, nargs="*", default=[], help="also the INT8 detector's AP@0.5 at these input sizes")
    p.add_argument("--limit", type=int, default=0, help="only this many validation frames (quick runs)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    setup()
    from plankton.coco import load_coco

    folder = Path(args.model)
    if args.data:
        split = json.loads((Path(args.data) / "split.json").read_text())
        model_split = (read_config(folder, check_files=False).get("training") or {}).get("split") or split
        annotations = split["meta"]["annotations"]
    else:
        record = folder / "training.json"
        model_split = json.loads(record.read_text()).get("split") if record.is_file() else None
        if not model_split or not model_split.get("train_ids"):
            raise SystemExit(f"training.quantize: {record} records no split; give --data")
        annotations = args.coco
    coco = load_coco(annotations, strict=False)
    val_ids = model_split["val_ids"][: args.limit] if args.limit else model_split["val_ids"]
    command = "python -m training.quantize " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    section = quantize_artifact(folder, coco, model_split["train_ids"], val_ids, tuple(args.routes), args.calib_frames, tuple(args.keep_fp32),
                                tuple(args.imgsz), args.ship, args.threads, command, tuple(args.overflow_fix), not args.this_class_only)
    log.info("INT8: %s in %.0f s", section["why"], time.perf_counter() - start)
    print(json.dumps({k: section[k] for k in ("route", "precision", "why", "parity_by_isa", "parity_not_measured", "network_ms_fp32_onnx")}, indent=2))
    return section


if __name__ == "__main__":
    main()
