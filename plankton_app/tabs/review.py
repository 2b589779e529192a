"""Review: the upload's objects, the most doubtful first; set the species of
any of them (a known one, a new name, or "not plankton"). Corrections
apply at once to counts, concentrations and downloads, download as COCO,
and become a new model version that names them."""
from __future__ import annotations

import html
import json
import os
import re
import tempfile
import time
from pathlib import Path

import gradio as gr

from plankton.results import NOT_PLANKTON

from .. import downloads, render
from ..uploads import InputError
from . import FAST, Context, track

HEADERS = ["#", "frame", "crop", "answer", "similarity", "det. score", "top-3 candidates"]
TYPES = ["number", "str", "html", "html", "number", "number", "str"]
VERSIONS_ENV = "PLANKTON_VERSIONS_DIR"  # where saved model versions go (default: the temp dir)


def rows(session, view, limit: int = render.MAX_TABLE_ROWS) -> list[list]:
    """The view's objects, most doubtful first (lowest similarity, then lowest detection score)."""
    if session is None or view is None:
        return []
    out = []
    for oid, fr, o in sorted(view.objects(), key=lambda t: (t[2].similarity, t[2].det_score))[:limit]:
        fi, di = session.locate(oid)
        thumb = session.frames[fi].computed.thumbs[di]
        answer = render.species_html(o.species) + (" <b>✔ corrected</b>" if o.corrected else "")
        out.append([oid, html.escape(fr.image), f'<img src="{thumb}" alt="object {oid}" width="72" height="72">', answer,
                    round(o.similarity, 3), round(o.det_score, 3), " · ".join(f"{html.escape(c.species)} {c.similarity:.2f}" for c in o.topk)])
    return out


def status(session) -> str:
    if session is None or not session.frames:
        return "Upload frames in the Identify tab; their objects are listed here, the most doubtful first."
    n = len(session.corrections) + len(session.earlier)
    text = f"**{n} correction{'s' if n != 1 else ''}** in this session" + (f" ({len(session.earlier)} from earlier uploads)." if session.earlier else ".")
    if session.version:
        text += f"  \nUsing the model version saved from this session: `{Path(session.version).name}`."
    return text


def versions_dir() -> Path:
    return Path(os.environ.get(VERSIONS_ENV) or Path(tempfile.gettempdir()) / "plankton-versions")


def build(ctx: Context) -> None:
    service = ctx.service
    labels = [n for n in service.class_names if n != NOT_PLANKTON] + [NOT_PLANKTON]
    with gr.Tab("Review", id="review") as tab:
        note = gr.Markdown(status(None), elem_id="review-status")
        with gr.Row():
            object_id = gr.Number(None, label="Object #", precision=0, minimum=0, scale=1, elem_id="review-object")
            label = gr.Dropdown(labels, value=None, allow_custom_value=True, label="Species (or type a new name)", scale=3, elem_id="review-label")
            set_btn = gr.Button("Set species", variant="primary", scale=1)
            clear_btn = gr.Button("Clear correction", scale=1)
        table = gr.Dataframe(headers=HEADERS, datatype=TYPES, interactive=False, wrap=True, max_height=620, elem_id="review-table",
                             column_widths=["6%", "16%", "10%", "22%", "10%", "10%", "26%"])
        with gr.Row():
            coco_btn = gr.DownloadButton("⬇ corrections.coco.json", value=None, interactive=False, size="sm")
        with gr.Accordion("Save as a new model version", open=False):
            gr.Markdown("Your corrections teach the model without retraining: new species get prototypes, corrected examples join their "
                        "species, and objects marked *not plankton* will be answered *unknown*. The new version is checked on the model's "
                        "validation objects first; one that costs the known species more than 0.01 top-1 is refused unless you force it.")
            force = gr.Checkbox(False, label="Save even if top-1 on the known species drops by more than 0.01")
            save_btn = gr.Button("Save as new model version")
            saved = gr.Markdown("")
    track(tab, "review", ctx)

    def refresh(det, cls, session):
        view = service.refilter(session, det, cls) if session is not None and session.frames else None
        corrections = session.all_corrections() if session is not None and session.frames else []
        coco = (downloads.write({"corrections.coco.json": json.dumps(service.corrections_coco(session), indent=1) + "\n"})[0]
                if corrections else None)
        return status(session), rows(session, view), gr.DownloadButton(value=coco, interactive=coco is not None)

    def refresh_if_shown(det, cls, session, shown):
        return refresh(det, cls, session) if shown == "review" else (gr.skip(),) * 3

    def on_set(oid, name, det, cls, session, clear=False):
        if session is None or not session.frames:
            gr.Warning("Upload frames first, then correct their objects here.")
            return session, *refresh(det, cls, session)
        try:
            session = service.correct(session, oid, "" if clear else name)
        except InputError as e:
            gr.Warning(str(e))
        return session, *refresh(det, cls, session)

    def on_save(force_it, det, cls, session):
        if session is None:
            gr.Warning("There are no corrections to save.")
            return session, "", *refresh(det, cls, session)
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(service.config.get("name") or "model"))
        folder = versions_dir() / f"{stem}-v{int(service.config.get('version', 1)) + 1}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            report, session = service.save_version(session, folder, force=bool(force_it))
        except (InputError, ValueError) as e:
            gr.Warning(str(e), duration=15)
            return session, f"⚠️ {e}", *refresh(det, cls, session)
        change = "" if report.top1_change is None else (f" Top-1 on the {report.objects_checked} validation objects of the known species: "
                                                         f"{report.top1_before:.3f} → {report.top1_after:.3f}.")
        text = (f"Saved **version {report.version}** to `{folder}`: {sum(report.examples.values())} examples"
                + (f", new species: {', '.join(report.new_species)}" if report.new_species else "") + f".{change} "
                f"This session now uses it. Serve it to everyone with `python app.py --model {folder}`.")
        try:
            pushed = service.publish_version(folder)
        except Exception as e:  # the Hub's and the network's own errors: the saved folder stays
            pushed = None
            text += f"  \n⚠️ Not published to the Hub: {' '.join(str(e).split())[:300]}"
        if pushed:
            text += (f"  \nPublished to {pushed['repo_id']}@{pushed['revision']} as commit `{pushed['commit_sha']}`: "
                     f"set `PLANKTON_MODEL_REVISION={pushed['commit_sha']}` to serve it.")
        return session, text, *refresh(det, cls, session)

    def pick(evt: gr.SelectData):
        """Clicking a row picks its object."""
        row = evt.row_value or []
        return int(row[0]) if row else gr.skip()

    table.select(pick, None, object_id, api_visibility="private", queue=False)
    outs = [note, table, coco_btn]
    tab.select(refresh, [ctx.det, ctx.cls, ctx.session], outs, api_name="ui_review", **FAST)
    gr.on([ctx.det.change, ctx.cls.change], refresh_if_shown, [ctx.det, ctx.cls, ctx.session, ctx.shown_tab], outs,
          api_name="ui_review_if_shown", trigger_mode="always_last", **FAST)
    set_btn.click(on_set, [object_id, label, ctx.det, ctx.cls, ctx.session], [ctx.session, *outs], api_name="ui_correct",
                  api_visibility="undocumented", concurrency_id="fast")
    clear_btn.click(lambda *a: on_set(*a, clear=True), [object_id, label, ctx.det, ctx.cls, ctx.session], [ctx.session, *outs],
                    api_name="ui_clear_correction", api_visibility="undocumented", concurrency_id="fast")
    save_btn.click(on_save, [force, ctx.det, ctx.cls, ctx.session], [ctx.session, saved, *outs], api_name="ui_save_version",
                   api_visibility="undocumented", concurrency_id="model", concurrency_limit=1)
