"""The app's interactive plotly figures: the embedding map and the
confusion matrix of the stored validation set."""
from __future__ import annotations

import html
from collections import Counter

import numpy as np

from plankton.results import UNKNOWN
from plankton.artifact.validation import ValidationSet

from .render import rgb
from .session import Session, View


def embedding_figure(validation: ValidationSet | None, session: Session | None = None, view: View | None = None):
    """Plotly figure: validation embeddings in their stored 2-D layout,
    coloured by true species, prototypes as stars, and the current
    upload's objects (placed by nearest stored neighbours) as diamonds.
    None without a validation set."""
    import plotly.graph_objects as go

    v = validation
    if v is None:
        return None
    fig = go.Figure()
    true = np.asarray(v.true_names, dtype=object)
    best = v.similarity.max(1) if v.similarity.size else np.zeros(len(true))
    match = np.asarray(v.class_names, dtype=object)[v.similarity.argmax(1)] if v.similarity.size else true
    for name in sorted(set(true)):
        m = true == name
        fig.add_trace(go.Scattergl(
            x=v.layout[m, 0], y=v.layout[m, 1], mode="markers", name=name, legendgroup=name,
            marker=dict(size=6, color=rgb(name), opacity=0.55),
            customdata=np.stack([match[m], best[m]], 1),
            hovertemplate=f"<b>{html.escape(name)}</b> (validation)<br>best match: %{{customdata[0]}}<br>similarity: %{{customdata[1]:.2f}}<extra></extra>"))
    pl = np.asarray(v.prototype_layout, np.float32).reshape(-1, 2)
    pnames = list(v.class_names)[: len(pl)]
    if session is not None and session.prototypes is not None:
        for name in session.enrolled:
            i = session.prototypes.names.index(name)
            pl = np.vstack([pl, v.place(session.prototypes.means[i : i + 1])])
            pnames.append(name)
    fig.add_trace(go.Scatter(
        x=pl[:, 0], y=pl[:, 1], mode="markers", name="prototypes", text=pnames,
        marker=dict(symbol="star", size=15, color=[rgb(n) for n in pnames], line=dict(color="black", width=1.2)),
        hovertemplate="<b>prototype</b><br>%{text}<extra></extra>"))
    if session is not None and view is not None and view.n_objects:
        xy, text, colours = [], [], []
        for oid, fr, o in view.objects():
            fi, di = session.locate(oid)
            lay = session.frames[fi].computed.layout
            if lay is None:
                continue
            xy.append(lay[di])
            text.append(f"<b>object #{oid}</b> · {html.escape(fr.image)}<br>species: {html.escape(o.species)}<br>similarity: {o.similarity:.2f}")
            colours.append(rgb(o.species))
        if xy:
            xy = np.asarray(xy)
            fig.add_trace(go.Scatter(
                x=xy[:, 0], y=xy[:, 1], mode="markers", name="this upload", text=text,
                marker=dict(symbol="diamond", size=11, color=colours, line=dict(color="black", width=1.5)),
                hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(
        height=640, margin=dict(l=10, r=10, t=30, b=10), template="plotly_white", hovermode="closest",
        legend=dict(font=dict(size=10), itemsizing="constant"), xaxis=dict(visible=False), yaxis=dict(visible=False),
        title=dict(text=f"{len(true)} validation objects · {len(pnames)} prototypes" + (f" · {view.n_objects} uploaded objects" if view is not None and session is not None else ""), font=dict(size=13)))
    return fig



def confusions(true: np.ndarray, pred: np.ndarray) -> Counter:
    """N true and N predicted names → Counter of (true, predicted) pairs."""
    return Counter(zip(np.asarray(true, dtype=object).tolist(), np.asarray(pred, dtype=object).tolist()))


def top_confusions(true: np.ndarray, pred: np.ndarray, n: int = 15) -> list[dict]:
    """The ``n`` most frequent mistakes: true species, predicted species
    (or unknown), count, and the share of that true species' objects."""
    pairs = confusions(true, pred)
    support = Counter(np.asarray(true, dtype=object).tolist())
    wrong = sorted(((t, p, c) for (t, p), c in pairs.items() if t != p), key=lambda r: (-r[2], r[0], r[1]))[:n]
    return [{"true": t, "predicted": p, "count": c, "share_of_true": round(c / support[t], 3)} for t, p, c in wrong]


def confusion_figure(true: np.ndarray, pred: np.ndarray):
    """Plotly heatmap of a confusion matrix: rows true species, columns
    predicted (``unknown`` last), log-coloured counts; hover gives true,
    predicted and count."""
    import plotly.graph_objects as go

    true, pred = np.asarray(true, dtype=object), np.asarray(pred, dtype=object)
    rows = sorted(set(true.tolist()), key=lambda n: (-int((true == n).sum()), n))
    cols = [n for n in rows if n != UNKNOWN] + sorted(set(pred.tolist()) - set(rows) - {UNKNOWN}) + [UNKNOWN]
    pairs = confusions(true, pred)
    z = np.array([[pairs.get((t, p), 0) for p in cols] for t in rows], float)
    text = [[f"true: {html.escape(t)}<br>predicted: {html.escape(p)}<br>count: {int(z[i, j])}" for j, p in enumerate(cols)] for i, t in enumerate(rows)]
    fig = go.Figure(go.Heatmap(z=np.log1p(z), x=cols, y=rows, text=text, hovertemplate="%{text}<extra></extra>",
                               colorscale="Blues", showscale=False, xgap=1, ygap=1))
    fig.update_layout(height=max(420, 18 * len(rows) + 160), margin=dict(l=10, r=10, t=30, b=10), template="plotly_white",
                      title=dict(text=f"{len(true)} validation objects: true species (rows) against the answer (columns)", font=dict(size=13)),
                      xaxis=dict(tickangle=-60, tickfont=dict(size=9), title="answer"), yaxis=dict(autorange="reversed", tickfont=dict(size=9)))
    return fig



def size_figure(view: View, um_per_px: float | None):
    """Plotly box plot of object size per species (unknown last): the
    equivalent spherical diameter in µm with a scale, else the box's
    longer side in pixels. Points are the objects, so small counts show."""
    import plotly.graph_objects as go

    from plankton.sample.measure import box_sizes_um

    by_species: dict[str, list[float]] = {}
    for _, _, o in view.objects():
        x1, y1, x2, y2 = o.xyxy
        v = float(box_sizes_um(np.array([o.xyxy]), um_per_px)[0, 2]) if um_per_px else max(x2 - x1, y2 - y1)
        by_species.setdefault(o.species, []).append(v)
    order = sorted((s for s in by_species if s != UNKNOWN), key=lambda s: (-len(by_species[s]), s)) + ([UNKNOWN] if UNKNOWN in by_species else [])
    fig = go.Figure()
    for s in order:
        fig.add_trace(go.Box(y=by_species[s], name=f"{s} ({len(by_species[s])})", boxpoints="all", jitter=0.4, pointpos=0,
                             marker=dict(color=rgb(s), size=4), line=dict(color=rgb(s)), showlegend=False,
                             hovertemplate=f"<b>{html.escape(s)}</b><br>%{{y:.1f}}<extra></extra>"))
    unit = "equivalent spherical diameter (µm)" if um_per_px else "box's longer side (pixels; give the scale for µm)"
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white", yaxis=dict(title=unit, rangemode="tozero"),
                      xaxis=dict(tickangle=-40, tickfont=dict(size=10)),
                      title=dict(text=f"Size per species, {view.n_objects} objects (box-based estimates)", font=dict(size=13)))
    return fig
