"""Embeddings: the stored validation objects on their UMAP map, prototypes
as stars, and the upload's objects placed beside their nearest neighbours."""
from __future__ import annotations

import gradio as gr

from .. import plots
from . import FAST, Context, on_thresholds, track


def build(ctx: Context) -> None:
    service = ctx.service
    with gr.Tab("Embeddings", id="embeddings") as tab:
        if service.validation is None:
            gr.Markdown("This model has no stored validation set, so there is no embedding map to show.")
        else:
            gr.Markdown("Validation objects (dots, coloured by their true species) in the embedding map made at training time; "
                        "prototypes are stars. Your upload's objects are diamonds, coloured by the species they were given, "
                        "placed beside their nearest validation neighbours. Hover for species and similarity; click legend entries to hide them.")
        plot = gr.Plot(label="Embedding map", elem_id="embedding-plot", visible=service.validation is not None)
    track(tab, "embeddings", ctx)

    def figure(det, cls, session):
        view = service.refilter(session, det, cls) if session is not None and session.frames else None
        return plots.embedding_figure(service.validation, session, view)

    def figure_if_shown(det, cls, session, shown):
        return figure(det, cls, session) if shown == "embeddings" else gr.skip()

    tab.select(figure, [ctx.det, ctx.cls, ctx.session], plot, api_name="ui_plot", **FAST)
    on_thresholds(ctx, figure_if_shown, [ctx.det, ctx.cls, ctx.session, ctx.shown_tab], [plot])
