"""Identify: upload frames or a zip, see annotated frames, the objects
table, counts per species and downloads; enrol a new species from objects
of the upload. Slider moves re-filter the cached analyses."""
from __future__ import annotations

import json

import gradio as gr

from .. import downloads, render
from ..session import View, parse_ids
from ..uploads import MAX_FRAMES, InputError
from . import Context, on_thresholds, track

TABLE_HEADERS = ["#", "frame", "crop", "species", "similarity", "det. score", "top-3 candidates"]
TABLE_TYPES = ["number", "str", "html", "html", "number", "number", "str"]


def status(session, view: View | None) -> str:
    """One paragraph saying what is shown, and why when it is nothing."""
    if session is None or view is None:
        return "Upload one or more frames (or a zip of frames), or click an example below."
    n = view.n_objects
    unknown = view.counts.get("unknown", 0)
    text = (f"**{len(view.frames)} frame{'s' if len(view.frames) != 1 else ''} · {n} object{'s' if n != 1 else ''}**"
            f"{f' ({unknown} unknown)' if unknown else ''} at detector ≥ {render.num(view.det_conf)}, similarity ≥ {render.num(view.cls_conf)}.")
    if n == 0:
        text += (" No objects at this detector confidence: move the detector slider left." if session.n_detections
                 else " The detector found no objects in this upload.")
    if session.enrolled:
        text += f"  \nEnrolled in this session: {', '.join(session.enrolled)}."
    if session.messages:
        more = f" · and {len(session.messages) - 6} more" if len(session.messages) > 6 else ""
        text += "  \n⚠️ Skipped: " + " · ".join(session.messages[:6]) + more
    return text


def build(ctx: Context, examples: list) -> None:
    service = ctx.service
    with gr.Tab("Identify", id="identify") as tab:
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                files = gr.File(label=f"Frames (images, or a zip of up to {MAX_FRAMES})", file_count="multiple",
                                file_types=["image", ".zip"], height=150, elem_id="upload")
                status_md = gr.Markdown(status(None, None), elem_id="status")
                counts = gr.HTML("", elem_id="counts")
                with gr.Row():
                    csv_btn = gr.DownloadButton("⬇ CSV", value=None, interactive=False, size="sm", elem_id="download-csv")
                    coco_btn = gr.DownloadButton("⬇ COCO JSON", value=None, interactive=False, size="sm", elem_id="download-coco")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Annotated frames (boxes coloured by species; unknown in grey)", format="jpeg",
                                     columns=3, height="auto", preview=True, object_fit="contain", elem_id="frames")
        if examples:
            many = [[[str(p) for p in examples]]] if len(examples) > 1 else []
            gr.Examples([[[str(p)]] for p in examples] + many, inputs=[files], label="Examples: click to identify",
                        example_labels=[f"Example frame {i + 1}" for i in range(len(examples))] + (["All example frames"] if many else []))
        gr.Markdown("### Objects")
        table_caption = gr.Markdown("")
        table = gr.Dataframe(headers=TABLE_HEADERS, datatype=TABLE_TYPES, interactive=False, wrap=True, max_height=560,
                             column_widths=["6%", "16%", "9%", "22%", "10%", "10%", "27%"], elem_id="objects")
        with gr.Accordion("Enrol a new species (no retraining)", open=False):
            gr.Markdown("Pick a few objects of the new species by their **#** in the table, give it a name, and enrol it. "
                        "It is used at once for this upload and later ones in this session; the shared model is unchanged.")
            with gr.Row():
                enrol_ids = gr.Textbox(label="Objects (#)", placeholder="e.g. 3, 5, 7-9", scale=2)
                enrol_name = gr.Textbox(label="Species name", placeholder="e.g. Noctiluca scintillans", scale=2)
                enrol_btn = gr.Button("Enrol", variant="primary", scale=1)
    track(tab, "identify", ctx)

    def outputs(session, view: View | None, update: bool = True):
        """gallery, table, caption, counts, csv, coco, status. With ``update``
        (a new upload) the gallery opens on the first frame and the download
        buttons are enabled; without (slider moves, enrolment), plain values
        only: the gallery stays on the frame shown, and Gradio skips the
        ~8 ms each component update costs."""
        if session is None or view is None or not session.frames:
            off = gr.DownloadButton(value=None, interactive=False)
            return [], [], "", "", off, gr.DownloadButton(value=None, interactive=False), status(None, None)
        rows, total = render.table(session, view)
        caption = f"Showing {len(rows)} of {total} objects; the CSV has them all." if total > len(rows) else ""
        csv_path, coco_path = downloads.write({"plankton_detections.csv": view.csv(counter=service.counter(view)),
                                               "plankton_detections.coco.json": json.dumps(service.coco(view, session), indent=1) + "\n"})
        images = render.annotated(session, view)
        if update:
            images = gr.Gallery(value=images, selected_index=0)
            csv_path, coco_path = gr.DownloadButton(value=csv_path, interactive=True), gr.DownloadButton(value=coco_path, interactive=True)
        return images, rows, caption, render.counts_html(view), csv_path, coco_path, status(session, view)

    def on_upload(files, det, cls, session, progress=gr.Progress()):
        carry = session.emptied() if session is not None else None  # enrolled species outlive an upload
        if not files:
            return *outputs(None, None), carry
        try:
            new = service.analyse(files, lambda f, d: progress(f, desc=d), previous=session)
        except InputError as e:
            gr.Warning(str(e), duration=12)
            out = list(outputs(None, None))
            out[-1] = f"⚠️ {e}"
            return *out, carry
        if new.messages:
            gr.Warning("Some files were skipped: " + " · ".join(new.messages[:4]), duration=12)
        view = service.refilter(new, det, cls)
        if view.n_objects == 0 and new.n_detections == 0:
            gr.Info("No objects were found in this upload.")
        return *outputs(new, view), new

    def on_slider(det, cls, session):
        if session is None or not session.frames:
            return outputs(None, None)
        return outputs(session, service.refilter(session, det, cls), update=False)

    def on_enrol(name, ids, det, cls, session):
        if session is None or not session.frames:
            gr.Warning("Upload frames first, then choose objects from the table.")
            return *outputs(None, None), session, gr.skip()
        try:
            numbers = parse_ids(ids)  # as shown, from 1
            bad = [i for i in numbers if not 1 <= i <= session.n_detections]
            if bad:
                raise InputError(f"No object {', '.join(map(str, bad))} in this upload (numbers go from 1 to {session.n_detections}).")
            new = service.enrol(session, name, [i - 1 for i in numbers])
        except InputError as e:
            gr.Warning(str(e))
            return *outputs(session, service.refilter(session, det, cls), update=False), session, gr.skip()
        gr.Info(f"Enrolled '{' '.join(name.split())}' from {len(set(parse_ids(ids)))} object(s). It applies to this session only.")
        return *outputs(new, service.refilter(new, det, cls), update=False), new, ""

    comps = [gallery, table, table_caption, counts, csv_btn, coco_btn, status_md]
    ctx.followers.append((on_slider, [ctx.det, ctx.cls, ctx.session], comps))  # corrections elsewhere redraw this tab at once
    files.change(on_upload, [files, ctx.det, ctx.cls, ctx.session], comps + [ctx.session], api_name="ui_identify",
                 concurrency_id="model", concurrency_limit=1, api_visibility="undocumented", show_progress_on=[gallery])
    on_thresholds(ctx, on_slider, [ctx.det, ctx.cls, ctx.session], comps)
    enrol_btn.click(on_enrol, [enrol_name, enrol_ids, ctx.det, ctx.cls, ctx.session], comps + [ctx.session, enrol_ids],
                    api_name="ui_enrol", concurrency_id="fast", api_visibility="undocumented")
