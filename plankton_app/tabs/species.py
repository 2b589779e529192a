"""Species: what the model learned. Each species' sub-centres side by side
with the training crops nearest to each, and the species pairs whose
prototypes are closest, with how often the validation frames confused
them: the look-alikes."""
from __future__ import annotations

import gradio as gr

from plankton.artifact.gallery import closest_pairs, subcenter_spread
from plankton.results import NOT_PLANKTON

from .. import render
from . import Context, track


def pairs(service, top: int = 15) -> list[dict]:
    """Closest pairs of the loaded prototypes, with their confusions (both
    ways) among the stored validation objects at the default thresholds."""
    rows = closest_pairs(service.cascade.identifier.prototypes, top)
    if service.validation is not None and len(service.validation.true_names):
        true, pred = service.validation_answers(service.cls_conf)
        for r in rows:
            r["confused"] = int(((true == r["a"]) & (pred == r["b"])).sum() + ((true == r["b"]) & (pred == r["a"])).sum())
    return rows


def build(ctx: Context) -> None:
    service = ctx.service
    protos = service.cascade.identifier.prototypes
    names = [n for n in protos.names if n != NOT_PLANKTON]
    spread = subcenter_spread(protos)
    ex = service.exemplars
    with gr.Tab("Species", id="species") as tab:
        if ex is None:
            gr.Markdown("This model carries no exemplar crops (`exemplars.safetensors`), so its sub-centres cannot be shown; "
                        "rebuild it with `python -m training.build_prototypes`.")
        choice = gr.Dropdown(names, value=names[0] if names else None, label="Species", elem_id="species-choice")
        gallery = gr.HTML("", elem_id="species-gallery")
        gr.Markdown("### Closest species pairs\nRanked by the cosine between their closest sub-centres: the species the model "
                    "finds hard to tell apart. Size often separates them where looks do not (see the Sample tab).")
        gr.HTML(render.pairs_html(pairs(service), ex), elem_id="closest-pairs")
    track(tab, "species", ctx)

    def show(name):
        if not name or ex is None or name not in ex.names:
            return f"<p>No exemplars stored for {render.species_html(name)}.</p>" if name else ""
        return render.species_gallery_html(name, ex.of(name), spread.get(name))

    tab.select(show, [choice], gallery, api_name="ui_species", queue=False, show_progress="hidden", api_visibility="undocumented")
    choice.change(show, [choice], gallery, api_name="ui_species_choice", queue=False, show_progress="hidden", api_visibility="undocumented")
