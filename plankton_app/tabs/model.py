"""Model: what is loaded and how it was trained, per-species metrics that
follow the similarity slider (with each species' own threshold), and the
confusion matrix as an interactive heatmap with its most frequent
mistakes."""
from __future__ import annotations

import json

import gradio as gr

from .. import downloads, plots, render
from . import FAST, Context, compare_panel, on_thresholds, track

METRIC_HEADERS = ["species", "precision", "recall", "F1", "support", "threshold"]
CONFUSION_HEADERS = ["true species", "answer", "objects", "share of the species"]


def metric_rows(rows: list[dict]) -> list[list]:
    th = lambda r: round(r["threshold"], 3) if isinstance(r.get("threshold"), float) else None  # noqa: E731
    return [[r["species"], round(r["precision"], 3), round(r["recall"], 3), round(r["f1"], 3), int(r["support"]), th(r)] for r in rows]


def caption(service, cls_conf: float, session=None) -> str:
    cov = service.coverage(cls_conf, session)
    if cov is None:
        if service.metrics and (service.metrics.get("identification") or {}).get("per_class"):
            return "Per-species metrics as stored with the model (no validation set to recompute them at other thresholds)."
        return "This model has no stored validation metrics."
    acc = "n/a" if cov["accuracy"] != cov["accuracy"] else f"{100 * cov['accuracy']:.0f}%"
    shifted = (" Each species' own threshold moves with the slider, and reaches 1 only when the slider does."
               if service.cascade.identifier.cfg.class_thresholds else "")
    text = (f"**At similarity ≥ {render.num(cls_conf)}**, {100 * cov['coverage']:.0f}% of the {cov['n']} validation objects get a species name "
            f"(the rest are *unknown*) and {acc} of those names are right. Objects left unknown count as misses for recall.{shifted}")
    lost = service.unnameable(cls_conf, session)
    if lost:
        more = f"; and {len(lost) - 6} more species" if len(lost) > 6 else ""
        text += ("  \n⚠️ **Can no longer be named here:** " + "; ".join(f"{r['species']} (threshold {r['threshold']:.3f}, its best validation "
                                                                         f"object {r['best']:.3f})" for r in lost[:6])
                 + f"{more}. Every object of these species will be *unknown*: move the slider left.")
    return text


def taxonomy_rows(service) -> list[list]:
    """The model's classes with the names EcoTaxa and Darwin Core receive (plankton.artifact.taxonomy)."""
    from plankton.artifact.taxonomy import for_model

    table = for_model(service.folder, service.class_names)
    return [[n, t.scientific_name if t else "", t.rank if t else "", t.aphia_id or "" if t else ""] for n in service.class_names
            for t in [table.taxon(n)]]


def confusion(service, cls_conf: float, session=None):
    """(plotly heatmap, rows of the most frequent confusions) at ``cls_conf``, or (None, [])."""
    if service.validation is None or not len(service.validation.true_names):
        return None, []
    true, pred = service.validation_answers(cls_conf, session)
    return plots.confusion_figure(true, pred), [[r["true"], r["predicted"], r["count"], r["share_of_true"]] for r in plots.top_confusions(true, pred)]


def build(ctx: Context) -> None:
    service = ctx.service
    info = service.model_info()
    record = downloads.write({"training_record.json": json.dumps(info.get("training") or {}, indent=1) + "\n"})[0]
    with gr.Tab("Model", id="model") as tab:
        gr.Markdown(render.model_markdown(info))
        rows = render.training_rows(info.get("training") if isinstance(info.get("training"), dict) else None)
        if rows:
            # fixed shares of the width, wrapped: left to itself the table grew past the page and was cut off on the right
            gr.Dataframe(rows, headers=render.TRAINING_HEADERS, interactive=False, wrap=True, label="Training", elem_id="training",
                         column_widths=["15%", "30%", "19%", "8%", "16%", "12%"])
            gr.DownloadButton("⬇ Full training record (JSON)", value=record, size="sm")
        with gr.Accordion("Taxonomy: the scientific names exports use (taxonomy.csv)", open=False):
            gr.Dataframe(taxonomy_rows(service), headers=["class", "scientific name", "rank", "AphiaID"], interactive=False,
                         max_height=400, elem_id="taxonomy")
        metrics_caption = gr.Markdown(caption(service, service.cls_conf), elem_id="metrics-caption")
        metrics = gr.Dataframe(metric_rows(service.per_class(service.cls_conf)), headers=METRIC_HEADERS,
                               datatype=["str", "number", "number", "number", "number", "number"], interactive=False, max_height=600,
                               label="Per-species identification (validation set; follows the similarity slider)", elem_id="metrics")
        fig, top = confusion(service, service.cls_conf)
        heatmap = gr.Plot(fig, label="Confusion matrix (hover a cell)", elem_id="confusion", visible=fig is not None)
        top_table = gr.Dataframe(top, headers=CONFUSION_HEADERS, interactive=False, label="Most frequent confusions",
                                 elem_id="top-confusions", visible=fig is not None)
        if service.reliability is not None:
            gr.Image(str(service.reliability), label="Reliability", interactive=False, buttons=["fullscreen", "download"])
        if service.metrics:
            with gr.Accordion("All stored metrics (metrics.json)", open=False):
                gr.JSON(service.metrics)
        compare_panel.build(ctx, tab)  # a second model version on this upload (issue 30)
    track(tab, "model", ctx)

    def refresh(cls, session):
        fig, top = confusion(service, cls, session)
        return metric_rows(service.per_class(cls, session)), caption(service, cls, session), fig, top

    def refresh_if_shown(cls, session, shown):
        return refresh(cls, session) if shown == "model" else (gr.skip(),) * 4

    outs = [metrics, metrics_caption, heatmap, top_table]
    tab.select(refresh, [ctx.cls, ctx.session], outs, api_name="ui_metrics", **FAST)
    on_thresholds(ctx, refresh_if_shown, [ctx.cls, ctx.session, ctx.shown_tab], outs)
