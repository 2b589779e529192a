"""How fast the app answers a slider move, measured without a browser:
the server work for one frame (``benchmark_refilter``), and optionally the
round trip through a running app with gradio_client (``benchmark_e2e``).

    python -m benchmarks.slider [--model DIR] [--objects 20] [--e2e]
"""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from plankton.sample.ecotaxa import object_crop
from plankton.images import read_image
from plankton.results import Detections

from plankton_app import EXAMPLES_DIR
from plankton_app.render import annotated, counts_html, downscale, table
from plankton_app.service import Service
from plankton_app.session import Computed, Frame, Session


def synthetic_session(service: Service, image: np.ndarray, n_objects: int = 20, seed: int = 0) -> Session:
    """A session with one frame and exactly ``n_objects`` boxes spread over
    the frame (scores spread over [floor, 1]), whatever the detector does:
    what the slider benchmark needs."""
    rng = np.random.default_rng(seed)
    H, W = image.shape[:2]
    wh = rng.uniform(30, 120, size=(n_objects, 2))
    xy = rng.uniform(0, 1, size=(n_objects, 2)) * (np.array([W, H]) - wh)
    dets = Detections(np.hstack([xy, xy + wh]), np.sort(rng.uniform(service.det_floor, 1.0, n_objects))[::-1])
    with service._model_lock:
        analysis = service.cascade.analyse_boxes(image, dets, "benchmark")
    analysis.det_floor = service.det_floor
    display, scale = downscale(image)
    layout = service.validation.place(analysis.embeddings) if service.validation is not None else None
    crops = [np.ascontiguousarray(object_crop(image, b)) for b in dets.xyxy]
    return Session([Frame("benchmark", Computed(analysis, display, scale, layout, crops))])


def benchmark_refilter(service: Service, image: np.ndarray | None = None, n_objects: int = 20, repeats: int = 50) -> dict:
    """Time what one slider move costs on the server for a frame with
    ``n_objects`` objects: re-filter, annotate, encode the image as the
    gallery does (JPEG), build table, counts, CSV and COCO. Milliseconds."""
    if image is None:
        image = np.random.default_rng(0).integers(150, 230, size=(1080, 1920, 3), dtype=np.uint8)
    session = synthetic_session(service, image, n_objects)
    rng = np.random.default_rng(1)
    parts: dict[str, list[float]] = {k: [] for k in ("refilter", "annotate+encode", "table+counts", "csv+coco", "total")}
    for _ in range(repeats):
        det, cls = float(rng.uniform(service.det_floor, 0.5)), float(rng.uniform(0, 0.9))
        t0 = time.perf_counter()
        view = service.refilter(session, det, cls)
        t1 = time.perf_counter()
        for img, _ in annotated(session, view):
            img.save(io.BytesIO(), format="JPEG", quality=85)
        t2 = time.perf_counter()
        table(session, view)
        counts_html(view)
        t3 = time.perf_counter()
        view.csv()
        json.dumps(service.coco(view, session))
        t4 = time.perf_counter()
        for k, a, b in (("refilter", t0, t1), ("annotate+encode", t1, t2), ("table+counts", t2, t3), ("csv+coco", t3, t4), ("total", t0, t4)):
            parts[k].append((b - a) * 1000)
    return {k: {"median_ms": round(float(np.median(v)), 2), "p95_ms": round(float(np.percentile(v, 95)), 2)} for k, v in parts.items()} | {"objects": n_objects, "repeats": repeats}


def benchmark_e2e(model: str | None = None, n_objects: int = 20, repeats: int = 30, timeout: float = 180) -> dict:
    """Slider changes through a running app (``python app.py`` in a child
    process: HTTP, Gradio pre/post-processing, no browser): the UI's
    re-filter handler on the first example frame, at the detector threshold
    that keeps about ``n_objects`` objects, against a no-op endpoint's
    round trip. Milliseconds."""
    import os
    import socket
    import statistics
    import subprocess

    from gradio_client import Client, handle_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, str(root / "app.py"), "--host", "127.0.0.1", "--port", str(port)] + (["--model", model] if model else [])
    proc = subprocess.Popen(cmd, cwd=root, env=os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app did not start: {' '.join(cmd)}") from None
                time.sleep(1)
        frame = handle_file(str(EXAMPLES_DIR / "frames" / sorted(p.name for p in (EXAMPLES_DIR / "frames").glob("*.jpg"))[0]))
        info = client.predict(api_name="/model_info")
        floor = info["thresholds"]["det_floor"]
        scores = sorted((o["det_score"] for f in client.predict([frame], floor, 0.0, api_name="/identify")["frames"] for o in f["objects"]), reverse=True)
        det = scores[min(n_objects, len(scores)) - 1] if scores else info["thresholds"]["det_conf"]
        client.predict([frame], det, 0.0, api_name="/ui_identify")

        def timed(*args, api_name):
            t = time.perf_counter()
            client.predict(*args, api_name=api_name)
            return (time.perf_counter() - t) * 1000

        slider = [timed(det, 0.3 + 0.4 * (i % 2), api_name="/ui_refilter") for i in range(repeats)]
        noop = [timed(api_name="/model_info") for _ in range(repeats)]
    finally:
        proc.terminate()
        proc.wait(30)
    return {"objects": sum(1 for s in scores if s >= det), "ui_refilter_median_ms": round(statistics.median(slider), 1),
            "ui_refilter_p95_ms": round(sorted(slider)[int(0.95 * (repeats - 1))], 1),
            "noop_round_trip_median_ms": round(statistics.median(noop), 1), "repeats": repeats}


def main(argv=None) -> int:
    import argparse

    from plankton.artifact.manifest import ArtifactError

    p = argparse.ArgumentParser(prog="python -m benchmarks.slider", description="Time what one slider move costs the app (server work; --e2e: through a running app).")
    p.add_argument("--model", default=None, help="model folder (default: as the app resolves it)")
    p.add_argument("--frame", default=None, help="frame to use (default: the first example frame)")
    p.add_argument("--objects", type=int, default=20)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--e2e", action="store_true", help="also through a running app (python app.py) with gradio_client")
    args = p.parse_args(argv)
    try:
        service = Service.load(args.model)
    except ArtifactError as e:
        print(f"benchmarks.slider: {e} (set PLANKTON_MODEL_DIR or --model)", file=sys.stderr)
        return 1
    frames = sorted((EXAMPLES_DIR / "frames").glob("*.jpg"))
    frame = args.frame or (frames[0] if frames else None)
    out = {"service": benchmark_refilter(service, read_image(frame) if frame else None, args.objects, args.repeats)}
    if args.e2e:
        out["app"] = benchmark_e2e(args.model, args.objects)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
