"""The dataset audit as one self-contained HTML page: plotly.js inlined once,
every figure drawn from the numbers that also go to audit.json, and the
example crops as data URIs, so the page reads offline and can be mailed."""
from __future__ import annotations

import html
import math

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from .audit_data import WARNING_KINDS

_CONFIG = {"displaylogo": False, "responsive": True}
_ROW_PX = 22  # height per species in the per-species charts, so 40 names stay legible
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1300px;padding:0 1em;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ddd} .note{color:#555;max-width:60em}
.warn li{font-family:monospace;font-size:90%} details{margin:.3em 0} summary{cursor:pointer}
summary.bad{color:#b00;font-weight:600} table{border-collapse:collapse;font-size:90%}
td,th{padding:2px 8px;text-align:right} td:first-child,th:first-child{text-align:left}
tr:nth-child(even){background:#f4f4f4} .species{margin:.8em 0} .species h3{margin:.2em 0;font-size:100%}
.crops{display:flex;flex-wrap:wrap;gap:6px} figure{margin:0;text-align:center;font-size:75%;color:#555}
figure img{display:block;width:96px;height:96px}
"""


def _size_label(unit: str) -> str:
    return f"longer box side ({unit})"


def species_figure(stats: dict) -> go.Figure:
    rows = stats["species"]
    names = [r["name"] if r["boxes"] else f"{r['name']} (no boxes)" for r in rows]
    fig = go.Figure([
        go.Bar(name="boxes", y=names, x=[r["boxes"] or None for r in rows], orientation="h",
               text=[f"{r['boxes']} ({100 * r['share']:.2g}%)" if r["boxes"] else "" for r in rows],
               textposition="outside", cliponaxis=False),
        go.Bar(name="frames", y=names, x=[r["frames"] or None for r in rows], orientation="h"),
    ])
    fig.update_layout(title="Boxes and frames per species (log scale, so the long tail shows)",
                      barmode="group", height=140 + 2 * _ROW_PX * len(rows), margin=dict(l=10, r=90),
                      legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    fig.update_xaxes(type="log", title="count")
    fig.update_yaxes(autorange="reversed")
    return fig


def sizes_figure(stats: dict) -> go.Figure:
    rows = sorted((r for r in stats["species"] if r["size"]["n"]), key=lambda r: r["size"]["median"])
    fig = go.Figure([go.Box(x=r["sizes"], name=r["name"], orientation="h", boxpoints="outliers",
                            marker=dict(size=3, color="#4c6ef5"), line=dict(width=1, color="#4c6ef5"),
                            showlegend=False) for r in rows])
    fig.update_layout(title=f"Box size per species, smallest median first ({stats['size_unit']}, log scale)",
                      height=140 + _ROW_PX * len(rows), margin=dict(l=10, r=20))
    fig.update_xaxes(type="log", title=_size_label(stats["size_unit"]))
    fig.update_yaxes(autorange="reversed")
    return fig


def objects_figure(stats: dict) -> go.Figure:
    hist = stats["objects_per_frame"]["histogram"]
    fig = go.Figure(go.Bar(x=[int(k) for k in hist], y=list(hist.values()),
                           hovertemplate="%{y} frames hold %{x} objects<extra></extra>"))
    fig.update_layout(title="Objects per frame", height=380, bargap=0.1)
    fig.update_xaxes(title="objects in the frame")
    fig.update_yaxes(title="frames")
    return fig


def cooccurrence_figure(stats: dict) -> go.Figure:
    names, counts = stats["cooccurrence"]["species"], stats["cooccurrence"]["frames"]
    # Colour on a log scale: one common species is in most frames and would
    # wash every other cell out; the hover keeps the real count.
    z = [[math.log10(c) if c else None for c in row] for row in counts]
    top = max((c for row in counts for c in row), default=1)
    ticks = [v for v in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000) if v <= max(top, 1)]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, customdata=counts, colorscale="Viridis", xgap=1, ygap=1,
        hovertemplate="%{y} and %{x}: %{customdata} frames<extra></extra>",
        colorbar=dict(title="frames", tickvals=[math.log10(v) for v in ticks], ticktext=[str(v) for v in ticks])))
    side = 200 + _ROW_PX * len(names)
    fig.update_layout(title="Species found in the same frames (diagonal: frames of that species)",
                      height=side + 60, width=side + 180, margin=dict(l=10, b=10))
    fig.update_xaxes(tickangle=-60, side="bottom")
    fig.update_yaxes(autorange="reversed")
    return fig


FIGURES = {"species": species_figure, "sizes": sizes_figure, "objects": objects_figure,
           "cooccurrence": cooccurrence_figure}


def _div(name: str, fig: go.Figure) -> str:
    # plotly.js is inlined once in <head>; each figure only adds its own div.
    return pio.to_html(fig, include_plotlyjs=False, full_html=False, config=_CONFIG, div_id=f"fig-{name}")


def _warnings_html(warnings: dict[str, list[dict]]) -> str:
    found = [k for k in WARNING_KINDS if warnings.get(k)]
    clean = [WARNING_KINDS[k][0].lower() + WARNING_KINDS[k][1:] for k in WARNING_KINDS if not warnings.get(k)]  # keeps 'COCO'
    parts = [] if found else ["<p>No warnings.</p>"]
    for k in found:
        items = "".join(f"<li>{html.escape(w['message'])}</li>" for w in warnings[k])
        parts.append(f'<details class="warn" {"open" if len(warnings[k]) <= 10 else ""}>'
                     f'<summary class="bad">{html.escape(WARNING_KINDS[k])}: {len(warnings[k])}</summary>'
                     f"<ul>{items}</ul></details>")
    if clean:
        parts.append(f'<p class="note">Checked, none found: {html.escape("; ".join(clean))}.</p>')
    return "\n".join(parts)


def _table_html(stats: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(r['name'])}</td><td>{r['id']}</td><td>{r['boxes']}</td>"
                   f"<td>{r['frames']}</td><td>{r['share']:.2%}</td><td>{r['size'].get('median', '')}</td></tr>"
                   for r in stats["species"])
    return (f"<details><summary>The same as a table</summary><table><tr><th>species</th><th>id</th><th>boxes</th>"
            f"<th>frames</th><th>share of boxes</th><th>median size ({stats['size_unit']})</th></tr>"
            f"{rows}</table></details>")


def _crops_html(stats: dict, crops: dict[int, list[dict]], um_per_px: float | None) -> str:
    unit, scale = ("µm", um_per_px) if um_per_px else ("px", 1.0)
    parts = []
    for r in stats["species"]:
        figures = []
        for c in crops.get(r["id"], []):
            w, h = c["bbox"][2] * scale, c["bbox"][3] * scale
            title = html.escape(f"image {c['image_id']}, annotation {c['ann_id']}: {c['file_name']}", quote=True)
            figures.append(f'<figure><img alt="{html.escape(r["name"], quote=True)}" title="{title}" '
                           f'src="data:image/jpeg;base64,{c["jpeg"]}"><figcaption>{w:.3g}×{h:.3g} {unit}'
                           f"</figcaption></figure>")
        body = "".join(figures) or '<span class="note">no example (no readable box)</span>'
        parts.append(f'<div class="species"><h3>{html.escape(r["name"])} <small>{r["boxes"]} boxes in '
                     f'{r["frames"]} frames</small></h3><div class="crops">{body}</div></div>')
    return "\n".join(parts)


def render_html(result: dict, crops: dict[int, list[dict]]) -> str:
    stats, params = result, result["parameters"]
    t, um = stats["totals"], params["um_per_px"]
    figs = {name: _div(name, make(stats)) for name, make in FIGURES.items()}
    scale = (f"Sizes are in µm at {um:g} µm per pixel." if um else
             "Sizes are in pixels; pass <code>--um-per-px</code> to see them in µm.")
    title = f"Dataset audit: {html.escape(result['source']['annotations'])}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{_CSS}</style>
<script type="text/javascript">{get_plotlyjs()}</script></head>
<body>
<h1>{title}</h1>
<p>{t['frames']} frames, {t['boxes']} boxes, {t['species_with_boxes']} of {t['categories']} categories with boxes.
Annotation file sha256 <code>{result['source']['sha256'][:16]}…</code>; {result['source']['files_read']} of {result['source']['files_listed']} files read.</p>
<h2>Warnings</h2>
{_warnings_html(result['warnings'])}
<h2>Species</h2>
{figs['species']}
{_table_html(stats)}
<h2>Box sizes</h2>
<p class="note">Size separates look-alike species in this data. Every crop is resized to the same side before the
embedder sees it (as in the examples below), so the picture alone hides how big the object was: compare the
species' sizes here. {scale}</p>
{figs['sizes']}
<h2>Objects per frame</h2>
{figs['objects']}
<h2>Species in the same frames</h2>
{figs['cooccurrence']}
<h2>Example crops</h2>
<p class="note">Up to {params['examples']} boxes per species, from different frames where possible, cut as the
embedder sees them ({params['crop']['size']} px squares, with a margin of {params['crop']['context']:g} of the box's
longer side);
the caption is the box's own size. Hover a crop for its frame.</p>
{_crops_html(stats, crops, um)}
</body></html>
"""
