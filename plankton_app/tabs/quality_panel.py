"""Sample: watch the frames. The per-frame statistics of ``predict``'s
``quality.csv`` (``plankton.quality``) for the upload at the current
thresholds, plotted in frame order with the model's training range
shaded (``frame_quality.json``), and the frames outside it with their flags.

The image statistics come from ``Computed.stats`` (measured on the
decoded frame by ``Service.compute``, as ``predict`` measures them); a
frame analysed without them (e.g. cached before) is measured on its
display copy, which the library downscales further to its 640 px: close
to, not the same as, the full frame's values."""
from __future__ import annotations

import dataclasses
import html

import gradio as gr

from plankton.quality import flags, for_thresholds, frame_values, image_stats, load_ranges

from . import FAST, on_thresholds

PLOTTED = ("focus", "brightness", "contrast", "unknown_share", "mean_similarity")
FLAG_HEADERS = ["frame #", "frame", "flags"]


def stats_of(computed) -> dict:
    """The frame's image statistics: kept at analysis, else from the display copy (cached with it)."""
    kept = getattr(computed, "stats", None)
    return kept if kept else image_stats(computed.display)  # a few ms on the ≤1280 px copy: no cache needed


def frame_table(service, session, view) -> tuple[list[dict], dict | None, str]:
    """(per frame: {image, statistic: value, flags}, the training ranges
    that apply at the view's thresholds or None, a one-line note)."""
    ranges, why = load_ranges(service.folder)
    ranges, dropped = for_thresholds(ranges, view.det_conf, view.cls_conf)
    rows = []
    for f, fr in zip(session.frames, view.frames):
        v = frame_values(dataclasses.replace(fr, stats=stats_of(f.computed)))
        rows.append({"image": f.name, **v, "flags": flags(v, ranges)})
    if ranges is None:
        note = f"No training range to compare with: {why}."
    elif dropped:
        note = (f"Not flagged at these thresholds: {', '.join(dropped)} (the training range was measured at the model's defaults; "
                "another threshold changes them, not the frames).")
    else:
        note = "Shaded: the range of the training frames; a frame outside it is flagged."
    return rows, ranges, note


def figure(rows: list[dict], ranges: dict | None):
    """Plotly: one panel per statistic against frame order, the training range shaded."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=len(PLOTTED), cols=1, shared_xaxes=True, vertical_spacing=0.03, subplot_titles=PLOTTED)
    x = list(range(1, len(rows) + 1))
    names = [r["image"] for r in rows]
    stats = (ranges or {}).get("stats") or {}
    for k, name in enumerate(PLOTTED, start=1):
        y = [r.get(name) for r in rows]
        bad = ["red" if any(f.startswith(name) or (name == "brightness" and f in ("dark", "bright")) for f in r["flags"]) else "#1f77b4"
               for r in rows]
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, marker=dict(color=bad, size=7), line=dict(color="#9ab"),
                                 customdata=names, hovertemplate=f"%{{customdata}}<br>{name}: %{{y:.4g}}<extra></extra>", showlegend=False),
                      row=k, col=1)
        r = stats.get(name)
        if r:
            lo = r.get("low") if r.get("low") is not None else r.get("p1", min([v for v in y if v is not None], default=0))
            hi = r.get("high") if r.get("high") is not None else r.get("p99", max([v for v in y if v is not None], default=1))
            fig.add_hrect(y0=lo, y1=hi, fillcolor="green", opacity=0.12, line_width=0, row=k, col=1)
        if name == "focus":
            fig.update_yaxes(type="log", row=k, col=1)  # focus spans orders of magnitude
    fig.update_xaxes(title_text="frame (upload order)", row=len(PLOTTED), col=1)
    fig.update_xaxes(tickmode="linear", dtick=max(1, len(rows) // 20))  # frames are whole numbers
    fig.update_layout(height=170 * len(PLOTTED), margin=dict(l=50, r=20, t=40, b=40))
    return fig


def flagged_rows(rows: list[dict]) -> list[list]:
    return [[i + 1, r["image"], "; ".join(r["flags"])] for i, r in enumerate(rows) if r["flags"]]


def build(ctx, tab) -> None:
    """The panel, inside the Sample tab's layout; redrawn when the tab is shown or a slider moves while it is."""
    service = ctx.service
    with gr.Accordion("Watch the frames: do they look like the training frames?", open=False):
        note = gr.Markdown("", elem_id="quality-note")
        plot = gr.Plot(label="Per-frame statistics (" + ", ".join(PLOTTED) + ")", elem_id="quality-plot")
        table = gr.Dataframe(headers=FLAG_HEADERS, interactive=False, label="Flagged frames", elem_id="quality-flags")

    def refresh(det, cls, session):
        if session is None or not session.frames:
            return "Upload frames in the Identify tab to see their quality here.", None, []
        view = service.refilter(session, det, cls)
        rows, ranges, line = frame_table(service, session, view)
        n = sum(bool(r["flags"]) for r in rows)
        head = f"**{n} of {len(rows)} frames flagged.** " if ranges is not None else ""
        return head + html.escape(line), figure(rows, ranges), flagged_rows(rows)

    def refresh_if_shown(det, cls, session, shown):
        return refresh(det, cls, session) if shown == "sample" else (gr.skip(),) * 3

    tab.select(refresh, [ctx.det, ctx.cls, ctx.session], [note, plot, table], **FAST)
    on_thresholds(ctx, refresh_if_shown, [ctx.det, ctx.cls, ctx.session, ctx.shown_tab], [note, plot, table])


__all__ = ["PLOTTED", "stats_of", "frame_table", "figure", "flagged_rows", "build"]
