"""The timed frame loop of ``benchmarks.speed``: frames decoded ahead in a
thread, each stage of ``Cascade.predict`` timed, memory sampled, and the
machine described (CPU, threads, versions)."""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FRAMES = REPO / "plankton_app" / "examples" / "frames"
STAGES = ("decode", "detect", "crop", "embed", "match", "write")
GROWTH_AFTER = 50


def _stats(values_s: list[float]) -> dict:
    """Seconds → {median, p90, mean, max} in milliseconds."""
    import numpy as np

    if not values_s:
        return {"median": None, "p90": None, "mean": None, "max": None, "n": 0}
    v = np.asarray(values_s) * 1000
    return {"median": round(float(np.median(v)), 2), "p90": round(float(np.percentile(v, 90)), 2),
            "mean": round(float(v.mean()), 2), "max": round(float(v.max()), 2), "n": int(len(v))}


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    peak = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def hardware(threads: int) -> dict:
    """What the numbers were measured on."""
    from plankton.runtime.onnx import available_cpus

    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "logical_cpus": os.cpu_count(), "available_cpus": available_cpus(), "threads": threads}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)  # other processes competing for the CPUs
    except (ImportError, OSError):
        pass
    return info


def versions() -> dict:
    out = {}
    for name in ("plankton", "torch", "onnxruntime", "openvino", "ultralytics", "numpy", "cv2", "PIL"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    return out


def frame_paths(paths: list[str] | None, n: int | None) -> list[Path]:
    """Image files (folders expanded), repeated cyclically to ``n``."""
    from plankton.images import find_images

    found = find_images(paths) if paths else sorted(DEFAULT_FRAMES.glob("*.jpg"))
    if not found:
        raise SystemExit(f"benchmarks.speed: no frames found in {paths or DEFAULT_FRAMES}")
    n = n or len(found)
    return [found[i % len(found)] for i in range(n)]


def decode_ahead(paths: list[Path], prefetch: int = 2):
    """(path, image, decode seconds) per path, in order, decoded up to
    ``prefetch`` frames ahead in a thread as ``plankton predict`` does
    (``plankton.run.prefetch.ahead``); a frame that fails raises in turn."""
    from plankton.images import read_image
    from plankton.run.prefetch import ahead

    for p, image, seconds in ahead(paths, read_image, depth=prefetch):
        if isinstance(image, BaseException):
            raise image
        yield p, image, seconds


class _TimedCall:
    """Wraps the detector's network to time its calls; everything else is
    passed through to the wrapped model."""

    def __init__(self, model):
        self.__dict__.update(_model=model, times=[], shapes=set())

    def __call__(self, x, *args, **kwargs):
        t = time.perf_counter()
        out = self._model(x, *args, **kwargs)
        self.times.append(time.perf_counter() - t)
        self.shapes.add(tuple(int(v) for v in x.shape))
        return out

    def __getattr__(self, name):
        return getattr(self._model, name)


def run_frames(cascade, paths: list[Path], warmup: int = 2, prefetch: int = 2, out_dir: Path | None = None) -> dict:
    """Run ``paths`` (after ``warmup`` untimed frames) through the cascade
    stage by stage, streaming CSV rows to ``out_dir`` (default: a temporary
    folder) and writing the COCO file at the end. Returns timings, RSS per
    frame and the first 20 analyses."""
    import csv

    from plankton.files import atomic_write_text
    from plankton.pipeline.cascade import FrameAnalysis
    from plankton.run.writers import CSV_COLUMNS, coco_results, detection_rows

    det, ident = cascade.detector, cascade.identifier
    floor, det_conf, cls_conf, topk = cascade.det_floor, cascade.det_conf, cascade.cls_conf, ident.cfg.topk
    names = list(ident.prototypes.names)
    categories = (getattr(cascade, "config", None) or {}).get("categories", [])
    times = {s: [] for s in STAGES}
    rss, objects, analyses, shapes, images, annotations, net = [], [], [], set(), [], [], []
    n = 0
    timed = _TimedCall(det.model)
    det.model = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(out_dir or tmp)
            for p, image, _ in decode_ahead(paths[:warmup], prefetch=0):
                cascade.predict(image, p.name)
            timed.times.clear()
            rss_start = _rss_mb()
            start = time.perf_counter()
            with open(folder / "detections.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
                writer.writeheader()
                for p, image, t_decode in decode_ahead(paths[warmup:], prefetch):
                    calls = len(timed.times)
                    t0 = time.perf_counter()
                    d = det.predict_batch([image], conf=floor)[0]
                    t1 = time.perf_counter()
                    net.append(sum(timed.times[calls:]))
                    crops = ident.crops(image, d.xyxy)
                    t2 = time.perf_counter()
                    emb = ident.embed_crops(crops)
                    t3 = time.perf_counter()
                    sim = ident.prototypes.similarity(emb)
                    H, W = image.shape[:2]
                    a = FrameAnalysis(p.name, W, H, d, emb, sim, names, floor)
                    fr = a.resolve(det_conf, cls_conf, topk)
                    t4 = time.perf_counter()
                    writer.writerows(detection_rows([fr]))
                    coco = coco_results([fr], categories, {fr.image: n + 1})
                    images += coco["images"]
                    annotations += coco["annotations"]
                    t5 = time.perf_counter()
                    for s, v in zip(STAGES, (t_decode, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                        times[s].append(v)
                    n += 1
                    objects.append(len(d))
                    shapes.add((W, H))
                    if len(analyses) < 20:
                        analyses.append(a)
                    del image, crops, emb, a
                    rss.append(_rss_mb())
            wall = time.perf_counter() - start
            t = time.perf_counter()
            for i, ann in enumerate(annotations, start=1):
                ann["id"] = i
            coco = {"images": images, "categories": coco_results([], categories)["categories"], "annotations": annotations}
            atomic_write_text(folder / "predictions.coco.json", json.dumps(coco) + "\n")
            write_final = time.perf_counter() - t
    finally:
        det.model = timed._model
    detect_pre_post = [a - b for a, b in zip(times["detect"], net)]
    return {"n": n, "wall_s": wall, "times": times, "detect_network": net, "detect_pre_post": detect_pre_post, "network_inputs": sorted(timed.shapes),
            "write_final_s": write_final, "rss": rss, "rss_start": rss_start, "objects": objects,
            "analyses": analyses, "shapes": sorted(shapes), "cls_conf": cls_conf, "topk": topk, "floor": floor}


def time_refilter(analyses: list, cls_conf: float, topk: int, floor: float, repeats: int = 200, seed: int = 0) -> dict:
    """The app's slider: ``FrameAnalysis.resolve`` at random thresholds
    (detector threshold between the floor and the top score, so objects are
    kept), for the busiest frame and for a whole upload (up to 20 frames,
    the app's limit)."""
    import numpy as np

    if not analyses:
        return {}
    rng = np.random.default_rng(seed)
    top = max((float(a.detections.score.max(initial=floor)) for a in analyses), default=floor)
    busiest = max(analyses, key=lambda a: len(a.detections))
    one, session, kept = [], [], []
    for i in range(repeats):
        det = floor if i == 0 else float(rng.uniform(floor, max(top, floor)))
        cls = float(rng.uniform(0.0, 0.9))
        t = time.perf_counter()
        fr = busiest.resolve(det, cls, topk)
        one.append(time.perf_counter() - t)
        kept.append(len(fr.objects))
    for i in range(max(repeats // 10, 3)):
        det = floor if i == 0 else float(rng.uniform(floor, max(top, floor)))
        cls = float(rng.uniform(0.0, 0.9))
        t = time.perf_counter()
        for a in analyses:
            a.resolve(det, cls, topk)
        session.append(time.perf_counter() - t)
    return {"frame_ms": _stats(one), "frame_objects_at_floor": len(busiest.detections), "frame_objects_kept_mean": round(float(np.mean(kept)), 1),
            "session_ms": _stats(session), "session_frames": len(analyses),
            "session_objects_at_floor": int(sum(len(a.detections) for a in analyses))}
