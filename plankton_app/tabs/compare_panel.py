"""Model: compare the loaded model with a second version (a folder or a
Hub revision) on the current upload, as ``python -m plankton compare``
does for two runs: counts per species under each (estimated counts where
a model has a count calibration), and the objects whose name changed.

Each model runs at its own default thresholds, as ``predict --model``
would, and sees the same pixels: the app keeps a display copy of each
frame (at most 1280 px), not the upload. Where that copy is the frame
itself, model A's cached analysis is used; otherwise both models run on
the copy, so a difference is the models', not the resolution's. At most
``MAX_FRAMES`` frames: the second model runs in full on each."""
from __future__ import annotations

import csv
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from plankton.review.compare import COLUMNS, changed_rows, count_rows
from plankton.files import one_line
from plankton.results import FrameResult

from ..thumbs import data_uri
from ..uploads import InputError
from . import Context

MAX_FRAMES = 20
CACHED_MODELS = 2  # second versions kept loaded (loading takes seconds)
CHANGED_HEADERS = ["frame", "crop", "model A", "model B", "similarity A", "similarity B"]
_models: OrderedDict[str, object] = OrderedDict()
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


def load_second(source: str):
    """A folder path or a Hub revision (of $PLANKTON_MODEL_REPO) → its Cascade, cached."""
    source = str(source or "").strip()
    if not source:
        raise InputError("Give a model folder or a Hub revision to compare with.")
    with _lock:
        if source in _models:
            _models.move_to_end(source)
            return _models[source]
    try:
        if Path(source).expanduser().is_dir():
            from plankton.artifact.folder import load_artifact

            cascade = load_artifact(Path(source).expanduser(), runtime="auto")
        else:
            from plankton.hub import ENV_REPO, load_resolved

            if not os.environ.get(ENV_REPO):
                raise InputError(f"{source!r} is no folder here, and no Hub repo is configured (${ENV_REPO}) to take it as a revision of.")
            cascade, _ = load_resolved(None, source, strict=True)
    except InputError:
        raise
    except Exception as e:  # a broken or missing version: say why in one line, keep serving
        raise InputError(f"Cannot load {source!r}: {one_line(e)}") from None
    with _lock:
        _models[source] = cascade
        while len(_models) > CACHED_MODELS:
            _models.popitem(last=False)
    return cascade


def _resolve(cascade, analysis, scale: float, topk: int) -> FrameResult:
    det = max(float(cascade.det_conf), float(analysis.det_floor))
    fr = analysis.resolve(det, float(cascade.cls_conf), topk)
    if scale == 1.0:
        return fr
    # boxes back in the frame's pixels, as the rest of the app reports them
    from dataclasses import replace

    objs = [replace(o, xyxy=tuple(v / scale for v in o.xyxy)) for o in fr.objects]
    return replace(fr, width=round(fr.width / scale), height=round(fr.height / scale), objects=objs)


def compare(service, session, cascade_b, progress=None, limit: int = MAX_FRAMES) -> dict:
    """{counts: compare.csv rows, changed: changed.csv rows (with ``crop``,
    a data URI), lone_a, lone_b, frames} for the session's first ``limit`` frames."""
    if session is None or not session.frames:
        raise InputError("Upload frames in the Identify tab first, then compare the models on them.")
    frames = session.frames[:limit]
    a_frames, b_frames, crops = [], [], {}
    for i, f in enumerate(frames):
        if progress is not None:
            progress(i / len(frames), f"Model B on {f.name}")
        c = f.computed
        if c.scale == 1.0:
            a = f.analysis
        else:
            with service._model_lock:
                a = service.cascade.analyse(c.display, f.name)
        with _run_lock:
            b = cascade_b.analyse(c.display, f.name)
        a_frames.append(_resolve(service.cascade, a, c.scale, service.topk))
        b_frames.append(_resolve(cascade_b, b, c.scale, service.topk))
        crops[f.name] = c
    with tempfile.TemporaryDirectory(prefix="plankton-compare-") as tmp:
        run_a = as_run(a_frames, Path(tmp) / "a", service.cascade.count_model())
        run_b = as_run(b_frames, Path(tmp) / "b", cascade_b.count_model())
        counts = count_rows(run_a, run_b)
    changed, lone_a, lone_b = changed_rows(run_a, run_b)
    for r in changed:
        c = crops[r["image"]]
        x1, y1, x2, y2 = (int(round(float(r[k]) * c.scale)) for k in ("x1", "y1", "x2", "y2"))
        piece = c.display[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
        r["crop"] = data_uri(piece) if piece.size else ""
    return {"counts": counts, "changed": changed, "lone_a": lone_a, "lone_b": lone_b, "frames": len(frames), "of": len(session.frames)}


def build(ctx: Context, tab=None) -> None:
    """The accordion, inside the Model tab's layout."""
    service = ctx.service
    with gr.Accordion("Compare with a second model version on this upload", open=False):
        gr.Markdown(f"A model folder, or a revision (branch, tag or commit) of the Hub repo this app is configured with. Each model "
                    f"runs at its own default thresholds on the first {MAX_FRAMES} frames of the upload (your corrections are not applied).")
        with gr.Row():
            source = gr.Textbox("", label="Model B: folder or Hub revision", max_lines=1, scale=4, elem_id="compare-source")
            go = gr.Button("Compare on this upload", scale=1, elem_id="compare-go")
        summary = gr.Markdown("", elem_id="compare-summary")
        counts = gr.Dataframe(headers=COLUMNS, interactive=False, label="Counts per species (A: the loaded model, B: the second)",
                              elem_id="compare-counts")
        changed = gr.Dataframe(headers=CHANGED_HEADERS, datatype=["str", "html", "str", "str", "str", "str"], interactive=False,
                               label="Objects whose name changed", max_height=500, elem_id="compare-changed")

    def on_compare(text, session, progress=gr.Progress()):
        try:
            if session is None or not session.frames:
                raise InputError("Upload frames in the Identify tab first, then compare the models on them.")
            progress(0, "Loading model B")
            cascade_b = load_second(text)
            out = compare(service, session, cascade_b, progress)
        except InputError as e:
            gr.Warning(str(e))
            return gr.skip(), gr.skip(), gr.skip()
        total = out["counts"][-1]
        line = (f"**{total['count_a']} → {total['count_b']} objects; {len(out['changed'])} renamed**; {out['lone_a']} only in A, "
                f"{out['lone_b']} only in B (objects matched by box, IoU ≥ 0.5). On {out['frames']} of {out['of']} frames.")
        rows = [[r.get(k, "") for k in COLUMNS] for r in out["counts"]]
        ch = [[r["image"], f'<img src="{r["crop"]}" style="max-height:72px">' if r["crop"] else "", r["species_a"], r["species_b"],
               r["similarity_a"], r["similarity_b"]] for r in out["changed"]]
        return line, rows, ch

    go.click(on_compare, [source, ctx.session], [summary, counts, changed], api_visibility="undocumented")


__all__ = ["MAX_FRAMES", "AppRun", "as_run", "load_second", "compare", "build"]
