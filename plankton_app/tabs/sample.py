"""Sample: the optical scale and the volume imaged per frame turn the
upload's objects into sizes and concentrations. The concentration table
and the size distribution follow the sliders and the corrections, and
download with the detections, an EcoTaxa import folder and a Darwin Core
Archive. The sample's id (new for each upload, editable) and its place
and time go into those exports."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import gradio as gr

from plankton.sample.formats import FORMATS
from plankton.sample.measure import Sample, concentration_rows
from plankton.sample.meta import SampleMeta, SampleMetaError, parse

from .. import downloads, plots
from . import quality_panel
from ..exports import default_sample_id
from . import FAST, Context, follow, on_thresholds, track

CONC_HEADERS = ["species", "estimated cells per ml", "95% low", "95% high", "estimated objects", "counted objects", "counted cells per ml"]
FILES = ["detections.csv", "concentration.csv", "counts.csv"] + [f.download for f in FORMATS]
LABELS = {f.download: f.title for f in FORMATS}
PUBLISHED = tuple(f.download for f in FORMATS if f.needs_meta)  # not offered while the sample metadata is wrong


def upload_key(session) -> str:
    """What tells one upload from the next: its frames' names and detections."""
    return hashlib.sha1(json.dumps([(f.name, len(f.analysis.detections)) for f in session.frames]).encode()).hexdigest()


def sample_meta(station, latitude, longitude, date, time, depth_min, depth_max, country_code="") -> tuple[SampleMeta | None, list[str]]:
    """The fields → (SampleMeta, []) or (None, one line per bad field)."""
    try:
        return parse({"station": station or "", "latitude": latitude, "longitude": longitude, "date": (date or "").strip(),
                      "time": (time or "").strip(), "depth_min": depth_min, "depth_max": depth_max, "country_code": (country_code or "").strip()}), []
    except SampleMetaError as e:
        return None, e.problems


def popups(problems: list[str], latitude, longitude) -> list[str]:
    """The problems worth a pop-up now. With one coordinate given and the
    other empty, the other is most likely typed next: its absence waits in
    the note (the exports that need it wait too) instead of interrupting."""
    half = bool(str(latitude or "").strip()) != bool(str(longitude or "").strip())
    return [p for p in problems if not (half and "missing" in p and ("latitude" in p or "longitude" in p))]


def number(text, what: str) -> float | None:
    """A field's text → a number, None when empty; ValueError (one line) otherwise."""
    text = str(text if text is not None else "").strip().replace(",", ".")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number.") from None


OTHERS = "others (each estimated below 0.5)"


def concentration_table(view, sample: Sample, counter=None) -> list[list]:
    """Rows for the table, the total first (where the eye lands). It leads
    with the estimate (``quantify``: boxes weighed by how often such a box
    is a real object, corrected for misses and look-alikes) and its 95%
    interval; the raw count of boxes shown stands beside it. The screen
    shows what concentration.csv holds: a species the calibration gives no
    estimate stays blank there too (never its raw count under "estimated"),
    and the estimates of the names too rare for a row of their own go on
    one ``others`` row, so the rows add up to the estimated total. Without a
    count calibration the estimate columns hold the raw count and its
    Poisson interval."""
    if view is None or sample.volume_ul is None:
        return []
    rows = concentration_rows(view.frames, sample, estimate=counter.estimate(view.frames) if counter is not None else None)
    total = next(r for r in rows if r["species"] == "total")
    rows = [r for r in rows if r["species"] != "total"]
    if counter is not None and "count_est" in total:
        rest = total["count_est"] - sum(r.get("count_est", 0.0) for r in rows)
        if rest >= 0.05:  # (a negative rest would be the calibration's own inconsistency: shown as it is)
            ml = total["volume_ml"]
            rows.append({"species": OTHERS, "count": 0, "cells_per_ml": 0.0, "count_est": rest, "cells_per_ml_est": rest / ml if ml else float("nan")})

    def per_ml(v):  # a concentration's precision is its interval's, not two decimals of a cell; blank where the CSV is
        return "" if v is None else float(f"{v:.3g}") if v == v else v

    def est(r, key, raw):
        return r.get(key, r.get(raw) if counter is None else None)

    def one(v):
        return "" if v is None else round(v, 1)

    return [[r["species"], per_ml(est(r, "cells_per_ml_est", "cells_per_ml")), per_ml(est(r, "cells_per_ml_est_low", "cells_per_ml_low")),
             per_ml(est(r, "cells_per_ml_est_high", "cells_per_ml_high")), one(est(r, "count_est", "count")), r["count"],
             per_ml(r["cells_per_ml"])] for r in [total] + rows]


def note(session, view, problems: list[str] = ()) -> str:
    if session is None or view is None or not session.frames:
        return "Upload frames in the Identify tab; their objects are counted and measured here."
    s = session.sample
    parts = [f"**{len(view.frames)} frame{'s' if len(view.frames) != 1 else ''}, {view.n_objects} objects** at the current thresholds."]
    parts.append(f"Scale {s.um_per_px:g} µm per pixel: sizes are box-based estimates." if s.um_per_px else "No scale: sizes are in pixels and the size columns stay empty.")
    parts.append(f"{s.volume_ul:g} µl per frame, {len(view.frames) * s.volume_ul / 1000:g} ml in all." if s.volume_ul else
                 "Give the volume imaged per frame for concentrations.")
    corrected = sum(o.corrected for f in view.frames for o in f.objects)
    if session.corrections or session.earlier:
        parts.append(f"Counts use your corrections ({corrected} corrected object{'s' if corrected != 1 else ''} shown; "
                     "objects marked not plankton are left out).")
    if problems:
        parts.append(f"  \n⚠️ Fix the sample metadata for the {' and '.join(f.title for f in FORMATS if f.needs_meta)} downloads: " + " · ".join(problems))
    return " ".join(parts)


def build(ctx: Context) -> None:
    service = ctx.service
    default_scale = (service.config.get("sample") or {}).get("um_per_px")
    with gr.Tab("Sample", id="sample") as tab:
        gr.Markdown("The optical scale turns boxes into sizes; the volume of sample in each frame turns counts into concentrations. "
                    "Concentrations lead with the estimate of the cells present and its 95% interval (counting noise and the calibration's "
                    "own uncertainty); the raw count of boxes shown stands beside it.")
        with gr.Row():
            # Textboxes, not gr.Number: Gradio's Number shows an empty value as 0, which reads as a real setting
            scale = gr.Textbox(f"{default_scale:g}" if default_scale else "", label="Scale (µm per pixel)", placeholder="e.g. 0.8", elem_id="um-per-px")
            volume = gr.Textbox("", label="Volume imaged per frame (µl)", placeholder="e.g. 0.1", elem_id="volume-ul")
        with gr.Accordion("Sample id, place and time (for EcoTaxa and Darwin Core)", open=False):
            with gr.Row():
                sample_id = gr.Textbox("", label="Sample id (new for each upload; editable)", elem_id="sample-id")
                station = gr.Textbox("", label="Station", elem_id="station")
            with gr.Row():
                meta_fields = [station,
                               gr.Textbox("", label="Latitude (°N, decimal)", placeholder="-90 to 90", elem_id="latitude"),
                               gr.Textbox("", label="Longitude (°E, decimal)", placeholder="-180 to 180", elem_id="longitude"),
                               gr.Textbox("", label="Date (YYYY-MM-DD)", elem_id="sample-date"),
                               gr.Textbox("", label="Time (HH:MM:SS, UTC)", elem_id="sample-time"),
                               gr.Textbox("", label="Depth min (m)", elem_id="depth-min"),
                               gr.Textbox("", label="Depth max (m)", elem_id="depth-max"),
                               gr.Textbox("", label="Country (ISO code, e.g. GB)", placeholder="OBIS asks for it", elem_id="country-code")]
        shown_upload = gr.State(None)
        summary = gr.Markdown(note(None, None), elem_id="sample-note")
        table = gr.Dataframe(headers=CONC_HEADERS, interactive=False, label="Concentration (follows the sliders)", elem_id="concentration")
        sizes = gr.Plot(label="Size per species", elem_id="sizes")
        with gr.Row():
            buttons = [gr.DownloadButton(f"⬇ {LABELS.get(name, name)}", value=None, interactive=False, size="sm") for name in FILES]
        quality_panel.build(ctx, tab)  # watch the frames (issue 30)
    track(tab, "sample", ctx)

    def refresh(det, cls, session, sid, key, *meta_values):
        if session is None or not session.frames:
            return [note(None, None), [], None] + [gr.DownloadButton(value=None, interactive=False) for _ in FILES] + [gr.skip(), key]
        if upload_key(session) != key or not (sid or "").strip():  # a new upload is a new sample
            sid, key = default_sample_id(), upload_key(session)
        meta, problems = sample_meta(*meta_values)
        for problem in popups(problems, *meta_values[1:3]):
            gr.Warning(problem)
        view = service.refilter(session, det, cls)
        files = service.sample_files(session, view, meta, sid.strip())
        if problems:
            files = {k: v for k, v in files.items() if k not in PUBLISHED}
        paths = dict(zip(files, downloads.write(files)))
        links = [gr.DownloadButton(value=paths.get(n), interactive=n in paths) for n in FILES]
        return ([note(session, view, problems), concentration_table(view, session.sample, service.counter(view)), plots.size_figure(view, session.sample.um_per_px)]
                + links + [sid, key])

    def refresh_if_shown(det, cls, session, shown, sid, key, *meta_values):
        return refresh(det, cls, session, sid, key, *meta_values) if shown == "sample" else [gr.skip()] * (5 + len(FILES))

    def set_sample(um, ul, session):
        """Only the session's sample, at once: the slow part (tables, zips)
        follows without writing the session, so a correction made meanwhile
        in another tab is not overwritten by this event's older copy."""
        try:
            sample = Sample(number(um, "Scale"), number(ul, "Volume per frame"))
        except ValueError as e:
            gr.Warning(str(e))
            return gr.skip()
        if session is None:
            from ..session import Session

            session = Session()
        return dataclasses.replace(session, sample=sample)

    outs = [summary, table, sizes, *buttons, sample_id, shown_upload]
    ids = [sample_id, shown_upload, *meta_fields]
    tab.select(refresh, [ctx.det, ctx.cls, ctx.session, *ids], outs, api_name="ui_sample", **FAST)
    on_thresholds(ctx, refresh_if_shown, [ctx.det, ctx.cls, ctx.session, ctx.shown_tab, *ids], outs)
    set_event = gr.on([scale.submit, scale.blur, volume.submit, volume.blur], set_sample, [scale, volume, ctx.session], ctx.session,
                      api_name="ui_set_sample", trigger_mode="always_last", **(FAST | {"queue": True}))
    redraw = set_event.then(refresh, [ctx.det, ctx.cls, ctx.session, *ids], outs, trigger_mode="always_last", **(FAST | {"queue": True}))
    follow(ctx, redraw)  # and the Identify crops get their scale bars
    # On submit or leaving a field, not on each keystroke: every refresh zips the crops again.
    gr.on([c.submit for c in [sample_id, *meta_fields]] + [c.blur for c in [sample_id, *meta_fields]], refresh,
          [ctx.det, ctx.cls, ctx.session, *ids], outs, api_name="ui_sample_meta", trigger_mode="always_last", **(FAST | {"queue": True}))
