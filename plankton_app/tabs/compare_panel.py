"""Model: compare the loaded model with a second version on the current
upload, as ``python -m plankton compare`` does for two runs: counts per
species under each (estimated counts where a model has a count
calibration), and the objects whose name changed.

Model B is a folder the operator offers (``app.py --models-root``) or a
revision of the configured Hub repo; never a path typed by a visitor.
Both models are applied at the sliders' thresholds to the frames as
uploaded: model A is the cached analysis Identify shows (no second run),
so the two agree object for object. At most ``MAX_FRAMES`` frames: the
second model runs in full on each."""
from __future__ import annotations

import csv
import dataclasses
import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from plankton.review.compare import COLUMNS, changed_rows, count_rows
from plankton.files import one_line
from plankton.results import FrameResult

from ..privacy import public
from ..thumbs import data_uri
from ..uploads import MAX_PIXELS, InputError
from . import Context

MAX_FRAMES = 20
CACHED_MODELS = 2  # second versions kept loaded (loading takes seconds)
CHANGED_HEADERS = ["frame", "crop", "model A", "model B", "similarity A", "similarity B"]
_models: OrderedDict[tuple, object] = OrderedDict()
_lock = threading.Lock()
_run_lock = threading.Lock()  # one upload at a time through a second model: its runtimes are not shared safely


@dataclass
class AppRun:
    """What ``plankton.review.compare`` reads of a run (``runfiles.Run``), made from
    the app's FrameResults: detections rows, their boxes, and a folder whose
    concentration.csv holds the estimated counts (when there are any)."""

    detections: list[dict]
    folder: Path

    def box(self, i: int) -> list[float]:
        r = self.detections[i]
        return [float(r[k]) for k in ("x1", "y1", "x2", "y2")]


def as_run(frames: list[FrameResult], folder: Path, counter=None) -> AppRun:
    rows = [{"image": fr.image, "x1": o.xyxy[0], "y1": o.xyxy[1], "x2": o.xyxy[2], "y2": o.xyxy[3], "species": o.species,
             "similarity": f"{o.similarity:.4f}"} for fr in frames for o in fr.objects]
    folder.mkdir(parents=True, exist_ok=True)
    if counter is not None:
        est = counter.estimate(frames)
        with open(folder / "concentration.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["species", "count_est", "count_est_low", "count_est_high"])
            w.writeheader()
            for name in est.species:
                r = est.row(name)
                w.writerow({"species": name, **{k: f"{r[k]:.2f}" for k in ("count_est", "count_est_low", "count_est_high")}})
    return AppRun(rows, folder)


REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9._-]+)*")  # a branch, tag or commit: no "..", no absolute path, no "~"


def local_versions(models_root: Path | None) -> list[str]:
    """The model folders the operator offers (``app.py --models-root``): the
    names of the root's subfolders that hold a config.json."""
    if models_root is None:
        return []
    try:
        return sorted(p.name for p in Path(models_root).iterdir() if (p / "config.json").is_file())
    except OSError:
        return []


def offered(models_root: Path | None, hub_repo: str | None) -> str:
    """What model B may be, in words (the same for any input: a visitor learns nothing of the server's disk)."""
    names = local_versions(models_root)
    ways = ([f"one of the versions offered here ({', '.join(names)})"] if names else []) + (
        [f"a branch, tag or commit of the Hub repo {hub_repo}"] if hub_repo else [])
    if not ways:
        return "This server offers no second model version to compare with."
    return "Model B can be " + " or ".join(ways) + "; nothing else on the server can be named."


def load_second(source: str, models_root: Path | None = None, hub_repo: str | None = None):
    """Model B → its Cascade, cached: a folder offered under ``models_root``
    (by its name), else a revision of ``hub_repo``. Anything else, a path
    on the server above all, is refused with ``offered``'s message, which
    does not depend on the input: whether a folder exists stays private."""
    source = str(source or "").strip()
    if not source:
        raise InputError("Give model B: " + offered(models_root, hub_repo))
    if source in local_versions(models_root):
        folder = Path(models_root) / source
        key = ("folder", str(folder))
    elif hub_repo and REVISION.fullmatch(source) and ".." not in source:
        key, folder = ("hub", hub_repo, source), None
    else:
        raise InputError(offered(models_root, hub_repo))
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    try:
        if folder is not None:
            from plankton.pipeline.load import load_artifact

            cascade = load_artifact(folder, runtime="auto")
        else:
            from plankton.hub import load_resolved

            cascade, _ = load_resolved(hub_repo, source, strict=True)
    except Exception as e:  # a broken or missing version: one line, no server path, keep serving
        where = f"version {source!r}" if folder is not None else f"revision {source!r} of {hub_repo}"
        raise InputError(f"Cannot load {where}: {public(one_line(e))}") from None
    with _lock:
        _models[key] = cascade
        while len(_models) > CACHED_MODELS:
            _models.popitem(last=False)
    return cascade


def frame_names(session) -> list[str]:
    """One name per frame, unique: two uploads named frame.jpg stay two frames."""
    seen: dict[str, int] = {}
    out = []
    for f in session.frames:
        seen[f.name] = seen.get(f.name, 0) + 1
        out.append(f.name if seen[f.name] == 1 else f"{f.name} ({seen[f.name]})")
    return out


def _resolve(cascade, analysis, det: float, cls: float, topk: int) -> FrameResult:
    return analysis.resolve(max(det, float(analysis.det_floor)), cls, topk)


def compare(service, session, cascade_b, det: float | None = None, cls: float | None = None, progress=None, limit: int = MAX_FRAMES) -> dict:
    """{counts: compare.csv rows, changed: changed.csv rows (with ``crop``,
    a data URI), lone_a, lone_b, frames} for the session's first ``limit``
    frames at thresholds (det, cls) (default: the loaded model's). Model A
    is what Identify shows at those thresholds before corrections, the
    cached analysis itself; model B runs on the frames as uploaded."""
    from plankton.images import read_image

    if session is None or not session.frames:
        raise InputError("Upload frames in the Identify tab first, then compare the models on them.")
    frames = session.frames[:limit]
    names = frame_names(session)[:limit]
    view = service.refilter(dataclasses.replace(session, corrections={}), det, cls)
    det, cls = view.det_conf, view.cls_conf
    a_frames, b_frames, crops = [], [], {}
    for i, (f, name) in enumerate(zip(frames, names)):
        if progress is not None:
            progress(i / len(frames), f"Model B on {f.name}")
        image = read_image(f.computed.source, max_pixels=MAX_PIXELS, name=f.name)
        with _run_lock:
            b = cascade_b.analyse(image, name)
        a_frames.append(dataclasses.replace(view.frames[i], image=name))
        b_frames.append(dataclasses.replace(_resolve(cascade_b, b, det, cls, service.topk), image=name))
        crops[name] = f.computed
    with tempfile.TemporaryDirectory(prefix="plankton-compare-") as tmp:
        run_a = as_run(a_frames, Path(tmp) / "a", service.counter(view))
        run_b = as_run(b_frames, Path(tmp) / "b", cascade_b.count_model(max(det, float(cascade_b.det_floor)), cls))
        counts = count_rows(run_a, run_b)
    changed, lone_a, lone_b = changed_rows(run_a, run_b)
    for r in changed:
        c = crops[r["image"]]
        x1, y1, x2, y2 = (int(round(float(r[k]) * c.scale)) for k in ("x1", "y1", "x2", "y2"))
        piece = c.display[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
        r["crop"] = data_uri(piece) if piece.size else ""
    return {"counts": counts, "changed": changed, "lone_a": lone_a, "lone_b": lone_b, "frames": len(frames), "of": len(session.frames),
            "det_conf": det, "cls_conf": cls}


HEADERS = {"species": "species", "count_a": "count A", "count_b": "count B", "difference": "B − A",
           "count_est_a": "estimated A", "count_est_b": "estimated B", "count_est_low_a": "A: 95% low", "count_est_high_a": "A: 95% high",
           "count_est_low_b": "B: 95% low", "count_est_high_b": "B: 95% high", "intervals_overlap": "intervals overlap"}


def build(ctx: Context, tab=None) -> None:
    """The accordion, inside the Model tab's layout."""
    service = ctx.service
    with gr.Accordion("Compare with a second model version on this upload", open=False):
        gr.Markdown(f"{offered(ctx.models_root, service.hub_repo)} Both models are applied at the sliders' thresholds to the first "
                    f"{MAX_FRAMES} frames of the upload; model A is what Identify shows, before your corrections.", elem_id="compare-offer")
        with gr.Row():
            source = gr.Textbox("", label="Model B: a version offered here, or a Hub revision", max_lines=1, scale=4, elem_id="compare-source")
            go = gr.Button("Compare on this upload", scale=1, elem_id="compare-go")
        summary = gr.Markdown("", elem_id="compare-summary")
        counts = gr.Dataframe(headers=[HEADERS[c] for c in COLUMNS], interactive=False, wrap=True,
                              label="Counts per species (A: the loaded model, B: the second)", elem_id="compare-counts")
        changed = gr.Dataframe(headers=CHANGED_HEADERS, datatype=["str", "html", "str", "str", "str", "str"], interactive=False,
                               label="Objects whose name changed", max_height=500, elem_id="compare-changed")

    def on_compare(text, det, cls, session, progress=gr.Progress()):
        try:
            if session is None or not session.frames:
                raise InputError("Upload frames in the Identify tab first, then compare the models on them.")
            progress(0, "Loading model B")
            cascade_b = load_second(text, ctx.models_root, service.hub_repo)
            out = compare(service, session, cascade_b, det, cls, progress)
        except InputError as e:
            gr.Warning(str(e))
            return f"⚠️ {e}", gr.skip(), gr.skip()
        total = out["counts"][-1]
        line = (f"**{total['count_a']} → {total['count_b']} objects; {len(out['changed'])} renamed**; {out['lone_a']} only in A, "
                f"{out['lone_b']} only in B (objects matched by box, IoU ≥ 0.5). On {out['frames']} of {out['of']} frames, at detector ≥ "
                f"{out['det_conf']:.3g}, similarity ≥ {out['cls_conf']:.3g}.")
        rows = [[r.get(k, "") for k in COLUMNS] for r in out["counts"]]
        ch = [[r["image"], f'<img src="{r["crop"]}" style="max-height:72px">' if r["crop"] else "", r["species_a"], r["species_b"],
               r["similarity_a"], r["similarity_b"]] for r in out["changed"]]
        return line, rows, ch

    go.click(on_compare, [source, ctx.det, ctx.cls, ctx.session], [summary, counts, changed], api_name="ui_compare",
             api_visibility="undocumented", concurrency_id="model", concurrency_limit=1)


__all__ = ["MAX_FRAMES", "AppRun", "as_run", "local_versions", "offered", "load_second", "frame_names", "compare", "build"]
