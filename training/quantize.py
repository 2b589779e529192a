"""INT8 versions of the detector and the embedder, made and checked in one
command, and the faster route that holds accuracy added to the artifact.

    python -m training.quantize models/default --data work/data [--routes openvino onnxruntime] [--calib-frames 32]
                                [--imgsz 1600 1280] [--limit 0]

Needs current fp32 ONNX files (``python -m training.export_onnx``; its
``--int8`` runs this too). Both routes quantize the same fp32 ONNX graphs
with the same calibration frames, taken from the model's TRAINING split
(never its validation frames): the detector sees them letterboxed as the
``Detector`` does, the embedder sees the crops of their ground-truth boxes.

- ``openvino``: OpenVINO IR quantized by NNCF (``nncf.quantize``, mixed
  preset: symmetric weights per channel, asymmetric activations).
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
validation frames, each route also with the fp32 embedder in its runtime.
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
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from plankton.artifact.folder import load_artifact
from plankton.files import sha256
from plankton.model.identifier import to_tensor
from plankton.artifact.manifest import read_config, write_manifest
from plankton.runtime.onnx import DETECTOR_ONNX, EMBEDDER_ONNX, onnx_status
from plankton.runtime.quantized import (ONNXRUNTIME, OPENVINO, ROUTE_FILES, SOURCES, cpu_flags, int8_isa, load_int8_models, route_files,
                                with_weights)

from .common import log, setup

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


def head_decode_nodes(names: list[str], keep_fp32: str = "decode") -> list[str]:
    """Node names of the detection head to keep in fp32. Ultralytics names
    nodes after their module, ``/model/model.N/...``, and the head is the
    last module. "decode": all of the head but its convolution branches
    (cv2/cv3, one2one_cv2/3); "head": all of it; "none": nothing."""
    if keep_fp32 == "none":
        return []
    found = [int(m.group(1)) for n in names if (m := re.match(r".*?/model\.(\d+)/", n))]
    if not found:
        return []
    scope = next(m.group(0) for n in names if (m := re.match(r".*?/model\.(\d+)/", n)) and int(m.group(1)) == max(found))
    branch = re.compile(r"(one2one_)?cv\d")
    return [n for n in names if n.startswith(scope) and (keep_fp32 == "head" or not branch.match(n[len(scope):].split("/")[0]))]


def fp32_nodes(names: list[str], kind: str, keep_fp32: str = "decode") -> list[str]:
    """What stays fp32: the detector's head decoding (``head_decode_nodes``);
    the embedder's final L2 normalisation (the top-level nodes, outside the
    backbone and neck modules), so that embeddings stay unit vectors."""
    if kind == "detector":
        return head_decode_nodes(names, keep_fp32)
    return [n for n in names if n.startswith("/") and n.count("/") == 1]


def _onnx_metadata(path: Path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def quantize_openvino(src: Path, dst: Path, data, exclude_rule: str, subset: int) -> dict:
    """fp32 ONNX → OpenVINO IR quantized by NNCF, the plankton metadata in its rt_info."""
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # not one line per node kept in fp32
    model = ov.convert_model(str(src))
    for k, v in _onnx_metadata(src).items():
        model.set_rt_info(v, ["plankton", k])
    names = [op.get_friendly_name() for op in model.get_ordered_ops()]
    exclude = fp32_nodes(names, "detector" if "detector" in src.name else "embedder", exclude_rule)
    if "embedder" in src.name:  # OpenVINO names an output's node after the output ("embeddings"), not "/Div"
        exclude += [r.input_value(0).get_node().get_friendly_name() for r in model.get_results()]
    ignored = nncf.IgnoredScope(names=exclude, validate=False) if exclude else None
    q = nncf.quantize(model, nncf.Dataset(data), preset=nncf.QuantizationPreset.MIXED, subset_size=subset, ignored_scope=ignored)
    ov.save_model(q, str(dst), compress_to_fp16=False)
    return {"kept_fp32_nodes": len(exclude), "nncf": nncf.__version__, "openvino": ov.__version__, "preset": "mixed"}


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a re-iterable source, with
    the ``set_range`` that ``CalibStridedMinMax`` needs: ranges are then
    computed frame by frame and merged, instead of holding every
    intermediate tensor of every frame."""

    def __init__(self, source):
        self.source = source
        self.n = sum(1 for _ in source())
        self.set_range(0, self.n)

    def __len__(self):
        return self.n

    def set_range(self, start_index: int, end_index: int):
        import itertools

        self.it = itertools.islice(self.source(), start_index, end_index)

    def get_next(self):
        return next(self.it, None)


def quantize_onnxruntime(src: Path, dst: Path, source, exclude_rule: str) -> dict:
    """fp32 ONNX → QDQ ONNX by ``quantize_static`` (see the module doc)."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="plankton-ort-q.") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # dynamic H, W defeat symbolic inference
        names = [n.name for n in onnx.load(str(pre)).graph.node]
        exclude = fp32_nodes(names, "detector" if "detector" in src.name else "embedder", exclude_rule)
        # Conv and MatMul only: Q/DQ pairs around SiLU's Sigmoid and Mul cost more than they save (measured on AVX2).
        quantize_static(str(pre), str(dst), _Reader(source), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        op_types_to_quantize=["Conv", "MatMul"], extra_options={"CalibStridedMinMax": 1})
    model = onnx.load(str(dst))
    have = {p.key for p in model.metadata_props}
    for k, v in _onnx_metadata(src).items():
        if k not in have:
            model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return {"kept_fp32_nodes": len(exclude), "onnxruntime": onnxruntime.__version__, "format": "QDQ", "per_channel": True, "reduce_range": True,
            "op_types": ["Conv", "MatMul"]}


def build_route(route: str, folder: Path, out: Path, calib: Calibration, keep_fp32: str) -> dict:
    """Both networks of ``route`` into ``out``; returns its settings."""
    det_dst, emb_dst = (out / f for f in ROUTE_FILES[route])
    t = time.perf_counter()
    if route == OPENVINO:
        det = quantize_openvino(folder / DETECTOR_ONNX, det_dst, list_source(calib.detector), keep_fp32, len(calib.ids))
        emb = quantize_openvino(folder / EMBEDDER_ONNX, emb_dst, list(calib.embedder()), keep_fp32, 10**6)
    else:
        det = quantize_onnxruntime(folder / DETECTOR_ONNX, det_dst, calib.detector, keep_fp32)
        emb = quantize_onnxruntime(folder / EMBEDDER_ONNX, emb_dst, calib.embedder, keep_fp32)
    return {"detector": det, "embedder": emb, "keep_fp32": keep_fp32, "build_s": round(time.perf_counter() - t, 1)}


class list_source:
    """A re-iterable, sized view of a generator function, for nncf.Dataset."""

    def __init__(self, fn):
        self.fn = fn

    def __iter__(self):
        return iter(self.fn())


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


def _fp32_embedder(route: str, folder: Path, threads: int | None):
    """The fp32 embedder.onnx in the route's own runtime (one runtime loaded, not two)."""
    from plankton.runtime.onnx import default_threads, load_embedder
    from plankton.runtime.quantized import load_openvino

    if route == OPENVINO:
        return load_openvino(folder / EMBEDDER_ONNX, "embedder", threads or default_threads())
    return load_embedder(folder / EMBEDDER_ONNX, threads)


def _choose(route: str, checked: dict) -> tuple[str, dict]:
    """A route's embedder precision and its parity: INT8 when it holds
    identification, else fp32 (the detector's figures are the same)."""
    int8 = checked["routes"][route]
    if int8["passed"] or not int8["passed_detection"]:
        return "int8", int8
    return "fp32", checked["routes"][f"{route}+fp32-embedder"]


def quantize_artifact(folder: str | Path, coco, train_ids: list[int], val_ids: list[int], routes=(OPENVINO, ONNXRUNTIME),
                      calib_frames: int = CALIB_FRAMES, keep_fp32=("decode", "head"), sizes: tuple[int, ...] = (),
                      ship: str | None = None, threads: int | None = None, command: str = "") -> dict:
    """Build every route with each choice of what of the detection head
    stays fp32 (``keep_fp32``), measure parity and speed, ship the fastest
    variant that passes (of route ``ship`` if given), and record the
    "int8" section. Returns it."""
    from .int8_parity import ap_at_sizes, parity

    folder = Path(folder)
    config = read_config(folder)
    problem = onnx_status(folder, config)
    if problem:
        raise SystemExit(f"training.quantize: the fp32 ONNX files are not usable: {problem}")
    fp32 = load_artifact(folder, runtime="onnx")
    calib = Calibration(fp32, coco, calibration_ids(train_ids, calib_frames))
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.int8."))
    try:
        built, candidates, variants = {}, {}, [f"{r}/{k}" for r in routes for k in keep_fp32]
        fp32_emb = {r: _fp32_embedder(r, folder, threads) for r in routes}
        for v in variants:
            route, keep = v.split("/")
            log.info("quantizing with %s (head kept fp32: %s) on %d training frames", route, keep, len(calib.ids))
            (tmp / v).mkdir(parents=True)
            built[v] = build_route(route, folder, tmp / v, calib, keep)
            det, emb, _ = load_int8_models(tmp / v, {"int8": {"route": route}}, threads)
            candidates[v], candidates[f"{v}+fp32-embedder"] = (det, emb), (det, fp32_emb[route])
        checked = parity(fp32, candidates, coco, val_ids)
        choice = {v: _choose(v, checked) for v in variants}
        models = {"onnx": (fp32.detector.model, fp32.identifier.model)}
        models |= {v: candidates[v if choice[v][0] == "int8" else f"{v}+fp32-embedder"] for v in variants}
        speed = network_times(models, calib)
        passed = [v for v in variants if choice[v][1]["passed"] and (ship is None or v.startswith(f"{ship}/"))]
        chosen = min(passed, key=lambda v: speed[v]["detector"] + speed[v]["embedder"], default=None)
        if ship and chosen is None:  # forced: the most accurate detector variant of that route
            chosen = max((v for v in variants if v.startswith(f"{ship}/")), key=lambda v: choice[v][1]["ap50"])
        if chosen and sizes:
            choice[chosen][1]["ap50_at_imgsz"] = ap_at_sizes(models[chosen][0], fp32.detector.cfg, coco, val_ids, sizes)
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
    flags = cpu_flags()
    section = {
        "route": chosen.split("/")[0] if chosen else None,
        "files": files,
        "precision": {"detector": "int8", "detector_head_kept_fp32": chosen.split("/")[1], "embedder": choice[chosen][0]} if chosen else {},
        "source_sha256": {name: sha256(folder / name) for name in SOURCES},
        "calibration": {"split": "train", "frame_ids": calib.ids, "frames": len(calib.ids), "embedder_crops": calib.count("embedder"),
                        "detector_input": f"letterboxed to {fp32.detector.cfg.imgsz} px as the Detector does"},
        "cpu": {"int8_isa": int8_isa(flags), "vnni": bool(flags and {"avx512_vnni", "avx_vnni"} & flags),
                "avx512": bool(flags and "avx512f" in flags)},
        "parity": choice[chosen][1] if chosen else {"passed": False},
        "tolerances": checked["tolerances"],
        "fp32": checked["fp32"],
        "variants": {v: built[v] | {"embedder_precision": choice[v][0], "parity": choice[v][1], "int8_embedder_parity": checked["routes"][v],
                                    "network_ms": speed[v]} for v in variants},
        "network_ms_fp32_onnx": speed["onnx"],
        "why": (f"{chosen}: {'the fastest variant of --ship ' + ship if ship else 'the fastest variant whose parity passed'}" if chosen
                else "no variant held accuracy: no INT8 files shipped"),
        "command": command,
    }
    config = read_config(folder, check_files=False)
    config["int8"] = section
    write_manifest(folder, config)
    return section


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="models/default", help="artifact folder with current fp32 ONNX files")
    p.add_argument("--data", required=True, help="folder from training.prepare (split.json)")
    p.add_argument("--routes", nargs="+", choices=(OPENVINO, ONNXRUNTIME), default=[OPENVINO, ONNXRUNTIME])
    p.add_argument("--ship", choices=(OPENVINO, ONNXRUNTIME), default=None, help="ship this route even if another is faster")
    p.add_argument("--calib-frames", type=int, default=CALIB_FRAMES, help="training frames to calibrate on (default %(default)s)")
    p.add_argument("--keep-fp32", nargs="+", choices=("decode", "head", "none"), default=["decode", "head"],
                   help="what of the detection head stays fp32; each choice is built and measured (default: %(default)s)")
    p.add_argument("--imgsz", type=int, nargs="*", default=[], help="also the INT8 detector's AP@0.5 at these input sizes")
    p.add_argument("--limit", type=int, default=0, help="only this many validation frames (quick runs)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    setup()
    from plankton.coco import load_coco

    folder, data = Path(args.model), Path(args.data)
    split = json.loads((data / "split.json").read_text())
    model_split = (read_config(folder, check_files=False).get("training") or {}).get("split") or split
    coco = load_coco(split["meta"]["annotations"], strict=False)
    val_ids = model_split["val_ids"][: args.limit] if args.limit else model_split["val_ids"]
    command = "python -m training.quantize " + " ".join(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    section = quantize_artifact(folder, coco, model_split["train_ids"], val_ids, tuple(args.routes), args.calib_frames, tuple(args.keep_fp32),
                                tuple(args.imgsz), args.ship, args.threads, command)
    log.info("INT8: %s in %.0f s", section["why"], time.perf_counter() - start)
    print(json.dumps({k: section[k] for k in ("route", "precision", "why", "parity", "variants", "network_ms_fp32_onnx")}, indent=2))
    return section


if __name__ == "__main__":
    main()
