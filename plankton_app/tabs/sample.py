"""Sample: the optical scale and the volume imaged per frame turn the
upload's objects into sizes and concentrations. The concentration table
and the size distribution follow the sliders and the corrections, and
download with the detections and an EcoTaxa import folder."""
from __future__ import annotations

import dataclasses

import gradio as gr

from plankton.measure import Sample, concentration_rows

from .. import downloads, plots
from . import FAST, Context, track

CONC_HEADERS = ["species", "count", "volume (ml)", "cells per ml", "95% low", "95% high"]
FILES = ["detections.csv", "concentration.csv", "counts.csv", "ecotaxa.zip"]


def concentration_table(view, sample: Sample) -> list[list]:
    if view is None or sample.volume_ul is None:
        return []
    return [[r["species"], r["count"], round(r["volume_ml"], 6), round(r["cells_per_ml"], 2), round(r["cells_per_ml_low"], 2),
             round(r["cells_per_ml_high"], 2)] for r in concentration_rows(view.frames, sample)]


def note(session, view) -> str:
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
    return " ".join(parts)


def build(ctx: Context) -> None:
    service = ctx.service
    default_scale = (service.config.get("sample") or {}).get("um_per_px")
    with gr.Tab("Sample", id="sample") as tab:
        gr.Markdown("The optical scale turns boxes into sizes; the volume of sample in each frame turns counts into concentrations. "
                    "Concentrations come with an exact 95% Poisson interval.")
        with gr.Row():
            scale = gr.Number(default_scale, label="Scale (µm per pixel)", minimum=0, elem_id="um-per-px")
            volume = gr.Number(None, label="Volume imaged per frame (µl)", minimum=0, elem_id="volume-ul")
        summary = gr.Markdown(note(None, None), elem_id="sample-note")
        table = gr.Dataframe(headers=CONC_HEADERS, interactive=False, label="Concentration (follows the sliders)", elem_id="concentration")
        sizes = gr.Plot(label="Size per species", elem_id="sizes")
        with gr.Row():
            buttons = [gr.DownloadButton(f"⬇ {name}", value=None, interactive=False, size="sm") for name in FILES]
    track(tab, "sample", ctx)

    def refresh(det, cls, session):
        if session is None or not session.frames:
            return [note(None, None), [], None] + [gr.DownloadButton(value=None, interactive=False) for _ in FILES]
        view = service.refilter(session, det, cls)
        files = service.sample_files(session, view)
        paths = dict(zip(files, downloads.write(files)))
        links = [gr.DownloadButton(value=paths.get(n), interactive=n in paths) for n in FILES]
        return [note(session, view), concentration_table(view, session.sample), plots.size_figure(view, session.sample.um_per_px)] + links

    def refresh_if_shown(det, cls, session, shown):
        return refresh(det, cls, session) if shown == "sample" else [gr.skip()] * (3 + len(FILES))

    def set_sample(um, ul, det, cls, session):
        try:
            sample = Sample(um or None, ul or None)
        except ValueError as e:
            gr.Warning(str(e))
            return [session] + [gr.skip()] * (3 + len(FILES))
        if session is None:
            from ..session import Session

            session = Session()
        session = dataclasses.replace(session, sample=sample)
        return [session] + refresh(det, cls, session)

    outs = [summary, table, sizes, *buttons]
    tab.select(refresh, [ctx.det, ctx.cls, ctx.session], outs, api_name="ui_sample", **FAST)
    gr.on([ctx.det.change, ctx.cls.change], refresh_if_shown, [ctx.det, ctx.cls, ctx.session, ctx.shown_tab], outs,
          api_name="ui_sample_if_shown", trigger_mode="always_last", **FAST)
    gr.on([scale.change, volume.change], set_sample, [scale, volume, ctx.det, ctx.cls, ctx.session], [ctx.session, *outs],
          api_name="ui_set_sample", trigger_mode="always_last", **(FAST | {"queue": True}))
