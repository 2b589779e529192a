"""Review: the upload's ``unknown`` objects grouped by their embeddings
(``plankton.review.discover``: HDBSCAN, leaf selection, an honest noise group),
largest cluster first, each with a strip of its crops. *Name this
cluster* and *Not plankton* correct every object of a cluster through
``Service.correct``, the same path as one object in the Review table, so
the download, undo and *Save as a new model version* treat them alike."""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr
import numpy as np

from plankton.review.discover import NOISE, UNKNOWNS, centre_similarity, cluster
from plankton.results import NOT_PLANKTON, UNKNOWN

from ..thumbs import img_html
from ..uploads import InputError
from . import Context, follow

MIN_CLUSTER_SIZE = 3  # as ``discover``'s default
STRIP = 24  # crops shown per cluster: the ones closest to its centre


@dataclass
class Group:
    name: str  # "1", "2", … largest first, or "noise"
    ids: list[int]  # object ids, closest to the centre first


def groups(service, session, det=None, cls=None, min_cluster_size: int = MIN_CLUSTER_SIZE) -> list[Group]:
    """The unknown objects shown at these thresholds (a corrected object is
    no longer unknown), clustered as ``discover`` clusters a run's."""
    if session is None or not session.frames:
        return []
    view = service.refilter(session, det, cls)
    ids = [oid for oid, _, o in view.objects() if o.species == UNKNOWN and not o.corrected]
    if not ids:
        return []
    emb = []
    for oid in ids:
        fi, di = session.locate(oid)
        emb.append(session.frames[fi].analysis.embeddings[di])
    emb = np.asarray(emb, np.float32)
    emb /= np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    # discover's setting for unknowns (leaf selection, chosen by leaving species out: docs/unknowns.md)
    labels = cluster(emb, **(UNKNOWNS | {"min_cluster_size": min_cluster_size}))
    sim = np.nan_to_num(centre_similarity(emb, labels), nan=-2.0)
    out = []
    for c in sorted(set(labels.tolist()) - {0}) + ([0] if (labels == 0).any() else []):
        idx = sorted(np.flatnonzero(labels == c), key=lambda k: -sim[k])
        out.append(Group(str(c) if c else NOISE, [int(ids[k]) for k in idx]))
    return out


def name_cluster(service, session, group_ids: list[int], label: str, group: str | None = None):
    """The session with every object of a cluster corrected to ``label``
    (a species, a new name, or ``NOT_PLANKTON``); InputError on a bad label.
    The noise group (``group`` NOISE) can only be rejected: its objects are
    alike to nothing, so one name for all of them would be a guess."""
    label = " ".join(str(label or "").split())
    if not label:
        raise InputError("Type a name for the cluster first (a species, a new name, or 'not plankton').")
    if not group_ids:
        raise InputError("Choose a cluster first: press 'Group the unknown objects', then pick one.")
    if group == NOISE and label != NOT_PLANKTON:
        raise InputError("The noise group is objects like no other, not one species: reject it as not plankton, "
                         "or name its objects one by one in the table.")
    for oid in group_ids:
        session = service.correct(session, oid, label)
    return session


def gallery_html(session, found: list[Group]) -> str:
    if not found:
        return "<p><i>No unknown objects at these thresholds.</i></p>"
    parts = []
    for g in found:
        title = f"Cluster {g.name}: {len(g.ids)} objects" if g.name != NOISE else f"Noise: {len(g.ids)} objects in no cluster"
        more = f" (the {STRIP} closest to the centre shown)" if len(g.ids) > STRIP else ""
        crops = "".join(f'<span title="#{oid + 1}">{img_html(session, oid, 72)}</span>' for oid in g.ids[:STRIP])
        # a flex row: the app's CSS draws images as blocks, which would stack the strip into a column
        parts.append(f"<div style='margin:6px 0'><b>{html.escape(title)}</b>{more}"
                     f"<div style='display:flex;flex-wrap:wrap;gap:4px;align-items:flex-end'>{crops}</div></div>")
    return "".join(parts)


def build(ctx: Context, tab=None) -> list:
    """The accordion, inside the Review tab's layout; returns the events
    that change the session, for the Review table to redraw after."""
    service = ctx.service
    with gr.Accordion("Unknown objects, grouped", open=False):
        gr.Markdown("The objects answered *unknown* at the current thresholds, grouped by how alike the model sees them (HDBSCAN, "
                    f"clusters of {MIN_CLUSTER_SIZE} or more, largest first; *noise*: objects like no other). Name a cluster to correct "
                    "all its objects at once (each can still be undone in the table), or reject it as not plankton. "
                    "The noise group can only be rejected; name its objects one by one in the table.")
        group_btn = gr.Button("Group the unknown objects", elem_id="clusters-group")
        shown = gr.State({})  # cluster name → object ids, as looked at: naming never re-clusters
        gallery = gr.HTML("", elem_id="clusters-gallery")
        with gr.Row():
            which = gr.Dropdown([], value=None, label="Cluster", scale=1, elem_id="clusters-which")
            name = gr.Textbox("", label="Name", placeholder="a species or a new name", max_lines=1, scale=3, elem_id="clusters-name")
        with gr.Row():
            name_btn = gr.Button("Name this cluster", variant="primary", elem_id="clusters-name-btn")
            reject_btn = gr.Button("Not plankton", elem_id="clusters-reject")

    def on_group(det, cls, session):
        if session is None or not session.frames:
            gr.Warning("Upload frames first, then group their unknown objects here.")
            return {}, "", gr.Dropdown(choices=[], value=None)
        found = groups(service, session, det, cls)
        choices = [g.name for g in found if g.name != NOISE] + ([NOISE] if any(g.name == NOISE for g in found) else [])
        first = next((c for c in choices if c != NOISE), None)  # never noise by default: it is no cluster
        return {g.name: g.ids for g in found}, gallery_html(session, found), gr.Dropdown(choices=choices, value=first)

    def on_name(session, clusters, chosen, label, det, cls):
        try:
            session = name_cluster(service, session, list(clusters.get(chosen) or []), label, chosen)
        except InputError as e:
            gr.Warning(str(e))
            return session, *on_group(det, cls, session)
        gr.Info(f"Cluster {chosen}: {len(clusters[chosen])} objects are now {' '.join(str(label).split())!r}.")
        return session, *on_group(det, cls, session)

    outs = [shown, gallery, which]
    group_btn.click(on_group, [ctx.det, ctx.cls, ctx.session], outs, api_visibility="undocumented")
    named = name_btn.click(on_name, [ctx.session, shown, which, name, ctx.det, ctx.cls], [ctx.session, *outs], api_visibility="undocumented")
    rejected = reject_btn.click(lambda s, c, w, d, k: on_name(s, c, w, NOT_PLANKTON, d, k), [ctx.session, shown, which, ctx.det, ctx.cls],
                                [ctx.session, *outs], api_visibility="undocumented")
    follow(ctx, named)  # the other tabs' counts and tables
    follow(ctx, rejected)
    return [named, rejected]


__all__ = ["Group", "groups", "name_cluster", "gallery_html", "build"]
