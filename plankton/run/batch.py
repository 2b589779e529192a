"""What both ``predict`` engines share, so that their outputs are the same
bytes: the per-frame step (decode, predict, annotate), the settings a
journal must match to be resumed, and the final merge, which writes every
output sorted by frame (name, then key) whatever order frames finished in.

Annotated images are first written under a name made from the frame's key
(``OUT/annotated/.staging/``) and renamed in sorted order at the end: the
``_1`` suffix of two frames with the same name then goes to the same one
with either engine.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from plankton import palette
from plankton.run import writers
from plankton.files import atomic_write_bytes
from plankton.images import ImageError
from plankton.run.inputs import Item, read
from plankton.run.prefetch import ahead
from plankton.sample.measure import Sample
from plankton.run.runfiles import keep_for_later
from plankton.results import FrameResult

STAGING = Path("annotated") / ".staging"
PREFETCH = 2  # frames decoded ahead of the models (two full frames: 12 MB)


@dataclass(frozen=True)
class Options:
    """Thresholds and switches of a run (the model's defaults resolved)."""

    det_conf: float
    cls_conf: float
    tile: int | None
    max_pixels: int | None
    annotate: bool


@dataclass
class Outcome:
    """One frame's result: ``frame`` or ``error`` (one line naming it),
    and the annotated JPEG when asked for."""

    key: str
    frame: FrameResult | None = None
    error: str | None = None
    jpeg: bytes = b""


def options(cascade, args) -> Options:
    tile = None if args.tile is None else ((cascade.detector.cfg.tile or 640) if args.tile else 0)
    return Options(cascade.det_conf if args.det_conf is None else args.det_conf,
                   cascade.cls_conf if args.cls_conf is None else args.cls_conf, tile, args.max_pixels, args.annotate)


def settings(cascade, opts: Options) -> dict:
    """What a resumed run must share with the one that wrote the journal."""
    files = cascade.config.get("files", {})
    return {"model": files.get("detector.safetensors", {}).get("sha256"), "embedder": files.get("embedder.safetensors", {}).get("sha256"),
            "prototypes": list(cascade.identifier.prototypes.names), "det_conf": opts.det_conf, "cls_conf": opts.cls_conf, "tile": opts.tile}


def decode(item: Item, max_pixels: int | None):
    """The frame's pixels, or None for an item already known to be bad."""
    return None if item.error else read(item, max_pixels)


def run_item(cascade, item: Item, opts: Options, image=None) -> Outcome:
    """Decode (unless ``image``, decoded ahead, or the ImageError decoding
    raised, is given) and analyse one frame; never raises for a bad frame."""
    if item.error:
        return Outcome(item.key, error=item.error)
    if isinstance(image, ImageError):
        return Outcome(item.key, error=str(image))
    if image is None:
        try:
            image = read(item, opts.max_pixels)
        except ImageError as e:
            return Outcome(item.key, error=str(e))
    try:
        frame = cascade.predict(image, item.name, opts.det_conf, opts.cls_conf, tile=opts.tile)
    except MemoryError:  # e.g. crops of a 200000×10 frame; the rest of the batch still runs
        return Outcome(item.key, error=f"{item.shown}: out of memory analysing a {image.shape[1]}x{image.shape[0]} frame")
    frame = keep_for_later(frame, image)  # image statistics and compact embeddings, for quality.csv and embeddings.safetensors
    jpeg = b""
    if opts.annotate:
        buf = io.BytesIO()
        writers.annotate(image, frame, colours=palette.for_prototypes(cascade.identifier.prototypes)).save(buf, format="JPEG", quality=90)
        jpeg = buf.getvalue()
    return Outcome(item.key, frame, jpeg=jpeg)


def staged(out: Path, key: str) -> Path:
    return out / STAGING / f"{hashlib.sha1(key.encode()).hexdigest()}.jpg"


def keep(out: Path, outcome: Outcome) -> None:
    """Store a finished frame's annotated image (before the journal records
    the frame, so a journaled frame always has its image)."""
    if outcome.jpeg:
        atomic_write_bytes(staged(out, outcome.key), outcome.jpeg)


def _decoded(image):
    if isinstance(image, BaseException) and not isinstance(image, ImageError):
        raise image
    return image


def outcomes(cascade, items: Iterable[Item], opts: Options, in_flight: int = 1):
    """Outcomes in input order. The next frames decode in a thread while the
    models run; with ``in_flight`` > 1, that many frames are analysed at
    once, each in its own thread (``cascade.frames_in_flight``)."""
    decoded = ahead(items, lambda it: decode(it, opts.max_pixels), depth=PREFETCH)
    if in_flight <= 1:
        for item, image, _ in decoded:
            yield run_item(cascade, item, opts, _decoded(image))
        return
    with ThreadPoolExecutor(in_flight, thread_name_prefix="frame") as pool:
        pending = deque()
        for item, image, _ in decoded:
            pending.append(pool.submit(run_item, cascade, item, opts, _decoded(image)))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def run_local(cascade, items: Iterable[Item], opts: Options, out: Path, journal, report: Callable[[str], None], progress,
              in_flight: int | None = None) -> tuple[dict, bool]:
    """The local engine: frames in this process, decoded ahead, and
    ``in_flight`` (default: ``cascade.frames_in_flight``) analysed at once.
    Returns ({key: FrameResult}, whether any input was bad)."""
    frames, bad = dict(journal.done), False
    in_flight = cascade.frames_in_flight if in_flight is None else in_flight
    for outcome in outcomes(cascade, items, opts, in_flight):
        if outcome.error:
            report(outcome.error)
            bad = True
        else:
            keep(out, outcome)
            journal.add(outcome.key, outcome.frame)
            frames[outcome.key] = outcome.frame
        progress.update(1)
    return frames, bad


def write_outputs(out: Path, frames: dict[str, FrameResult], categories: list[dict], annotate: bool,
                  sample: Sample = Sample(), names: list[str] | None = None, meta=None, counter=None) -> None:
    """detections.csv (with sizes when the scale is known) and
    predictions.coco.json, counts.csv and concentration.csv when the volume
    per frame is known (each written atomically; ``meta``, a SampleMeta,
    adds the sample's place and time to concentration.csv), then the
    annotated images under their final names, all in frame order.
    ``counter`` (the model's ``quantify.CountModel`` at the run's
    thresholds) adds probabilities and estimated counts."""
    order = sorted(frames, key=lambda k: (frames[k].image, k))
    ordered = [frames[k] for k in order]
    writers.write_detections_csv(out / "detections.csv", ordered, sample.um_per_px, counter)
    writers.write_coco(out / "predictions.coco.json", ordered, categories)
    for name, text in writers.sample_tables(ordered, sample, names, meta, counter).items():
        atomic_write_bytes(out / name, text.encode("utf-8"))
    if not annotate:
        return
    used: set[str] = set()
    for key in order:
        source = staged(out, key)
        if not source.exists():  # a frame resumed from a run made without --annotate
            continue
        stem, n = Path(frames[key].image).stem, 0
        name = f"{stem}.jpg"
        while name in used:  # a.png and a.jpg, or sub1/x.jpg and sub2/x.jpg
            n += 1
            name = f"{stem}_{n}.jpg"
        used.add(name)
        os.replace(source, out / "annotated" / name)
    try:
        (out / STAGING).rmdir()
    except OSError:
        pass


__all__ = ["Options", "Outcome", "options", "settings", "run_item", "outcomes", "run_local", "keep", "staged", "write_outputs"]
