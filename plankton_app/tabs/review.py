"""Review: the upload's objects, the most doubtful first; set the species of
any of them (a known one, a new name, or "not plankton"). Corrected and
rejected objects leave the "to review" queue but stay under their filter,
and every change can be undone. Corrections apply at once to every tab,
download as COCO, and become a new model version that names them."""
from __future__ import annotations

import html
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import gradio as gr

from plankton.results import NOT_PLANKTON, UNKNOWN

from plankton.sample.exports import model_label

from .. import downloads, render
from ..exports import model_of
from ..thumbs import img_html
from ..uploads import InputError
from . import FAST, Context, clusters, follow, on_thresholds, track

HEADERS = ["#", "frame", "crop", "answer", "similarity", "det. score", "top-3 candidates"]
TYPES = ["number", "str", "html", "html", "number", "number", "str"]
VERSIONS_ENV = "PLANKTON_VERSIONS_DIR"  # where saved model versions go (default: the temp dir)
FILTERS = ["to review", "corrected", "rejected", "all"]
KEYS = {"n": "review-next", "a": "review-accept", "x": "review-reject", "u": "review-undo"}
# Keys act only while the Review tab is on screen and no text field has the focus (typing a name must not reject).
SHORTCUTS = ("<script>document.addEventListener('keydown', (e) => {"
             "if (e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;"
             "const t = e.target; if (t && (t.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName))) return;"
             f"const id = {json.dumps(KEYS)}[e.key.toLowerCase()]; if (!id) return;"
             "const b = document.getElementById(id); if (!b || !b.offsetParent) return;"
             "e.preventDefault(); b.click(); });</script>")


def number(text) -> int | None:
    """The object # typed or picked (from 1), or None."""
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def state(session, object_id: int) -> str:
    """"rejected", "corrected" or "to review"."""
    label = session.corrections.get(object_id)
    return "to review" if label is None else "rejected" if label == NOT_PLANKTON else "corrected"


def queue(session, view, which: str = "to review") -> list[tuple[int, object, object]]:
    """(object id, frame, object) under filter ``which``, the most doubtful
    first (lowest similarity, then lowest detection score). ``view`` keeps
    rejected objects (``refilter(keep_rejected=True)``)."""
    if session is None or view is None:
        return []
    objs = sorted(view.objects(), key=lambda t: (t[2].similarity, t[2].det_score))
    return [t for t in objs if which == "all" or state(session, t[0]) == which]


def rows(session, view, which: str = "to review", limit: int = render.MAX_TABLE_ROWS) -> list[list]:
    """The table under filter ``which``; objects are numbered from 1."""
    out = []
    for oid, fr, o in queue(session, view, which)[:limit]:
        answer = render.species_html(o.species, view.colours) if o.species != NOT_PLANKTON else "<i>not plankton</i>"
        answer += {"corrected": " <b>✔ corrected</b>", "rejected": " <b>✖ rejected</b>"}.get(state(session, oid), "")
        out.append([oid + 1, html.escape(fr.image), img_html(session, oid), answer, round(o.similarity, 3), round(o.det_score, 3),
                    " · ".join(f"{html.escape(c.species)} {c.similarity:.2f}" for c in o.topk)])
    return out


def status(session, view=None, service=None) -> str:
    if session is None or not session.frames:
        return "Upload frames in the Identify tab; their objects are listed here, the most doubtful first."
    n = len(session.corrections) + len(session.earlier)
    text = f"**{n} correction{'s' if n != 1 else ''}** in this session" + (f" ({len(session.earlier)} from earlier uploads)." if session.earlier else ".")
    if view is not None:
        left = {w: len(queue(session, view, w)) for w in FILTERS[:3]}
        text += f" At these thresholds: {left['to review']} to review, {left['corrected']} corrected, {left['rejected']} rejected."
    text += "  \nKeys: **N** next · **A** accept the answer · **X** not plankton · **U** undo."
    if session.version and service is not None:
        text += f"  \nUsing {model_label(model_of(service, session)[0])}, saved from this session."
    return text


def versions_dir() -> Path:
    return Path(os.environ.get(VERSIONS_ENV) or Path(tempfile.gettempdir()) / "plankton-versions")


def build(ctx: Context) -> None:
    service = ctx.service
    labels = [n for n in service.class_names if n != NOT_PLANKTON] + [NOT_PLANKTON]
    with gr.Tab("Review", id="review") as tab:
        note = gr.Markdown(status(None), elem_id="review-status")
        with gr.Row():
            which = gr.Radio(FILTERS, value="to review", label="Show", scale=3, elem_id="review-filter")
            # a Textbox: Gradio's Number shows "no object" as 0
            object_id = gr.Textbox("", label="Object #", placeholder="click a row", max_lines=1, scale=1, elem_id="review-object")
            label = gr.Dropdown(labels, value=None, allow_custom_value=True, label="Species (or type a new name)", scale=3, elem_id="review-label")
        with gr.Row():
            set_btn = gr.Button("Set species", variant="primary", elem_id="review-set")
            accept_btn = gr.Button("Accept the answer (A)", elem_id="review-accept")
            reject_btn = gr.Button("Not plankton (X)", elem_id="review-reject")
            next_btn = gr.Button("Next (N)", elem_id="review-next")
            undo_btn = gr.Button("Undo (U)", elem_id="review-undo")
            clear_btn = gr.Button("Clear correction", elem_id="review-clear")
        table = gr.Dataframe(headers=HEADERS, datatype=TYPES, interactive=False, wrap=True, max_height=620, elem_id="review-table",
                             column_widths=["6%", "16%", "12%", "22%", "10%", "10%", "24%"])
        with gr.Row():
            coco_btn = gr.DownloadButton("⬇ corrections.coco.json", value=None, interactive=False, size="sm")
        with gr.Accordion("Save as a new model version", open=False):
            gr.Markdown("Your corrections teach the model without retraining: new species get prototypes, corrected examples join their "
                        "species, and objects marked *not plankton* will be answered *unknown*. The new version is checked on the model's "
                        "validation objects first; one that costs the known species more than 0.01 top-1 is refused unless you force it.")
            force = gr.Checkbox(False, label="Save even if top-1 on the known species drops by more than 0.01")
            save_btn = gr.Button("Save as new model version")
            saved = gr.Markdown("", elem_id="review-saved")
            pending = gr.State(None)  # the folder of a version just written, until the session switches to it
        named = clusters.build(ctx, tab)  # the unknown objects, grouped (issue 30)
    track(tab, "review", ctx)

    def view_of(det, cls, session):
        return service.refilter(session, det, cls, keep_rejected=True) if session is not None and session.frames else None

    def refresh(det, cls, session, which, current, move_from: int | None = None):
        """status, table, COCO download and the object in hand: ``current``
        (a # shown, from 1) while it is listed; after an action on
        ``move_from`` (an id), the object after it, so review moves on."""
        view = view_of(det, cls, session)
        corrections = session.all_corrections() if session is not None and session.frames else []
        coco = (downloads.write({"corrections.coco.json": json.dumps(service.corrections_coco(session), indent=1) + "\n"})[0]
                if corrections else None)
        listed = [oid for oid, _, _ in queue(session, view, which)]
        pick = number(current) - 1 if number(current) is not None else None
        if move_from is not None:
            pick = listed[(listed.index(move_from) + 1) % len(listed)] if move_from in listed else (listed[0] if listed else None)
        elif pick not in listed:
            pick = listed[0] if listed else None
        return (status(session, view, service), rows(session, view, which), gr.DownloadButton(value=coco, interactive=coco is not None),
                "" if pick is None else str(pick + 1))

    def refresh_if_shown(det, cls, session, which, current, shown):
        return refresh(det, cls, session, which, current) if shown == "review" else (gr.skip(),) * 4

    def chosen(session, current) -> int | None:
        """The object id in hand, or None after a warning saying why not."""
        if session is None or not session.frames:
            gr.Warning("Upload frames first, then review their objects here.")
            return None
        n = number(current)
        if n is None:
            gr.Warning("Pick an object first: click its row, or type its #." if not str(current or "").strip()
                       else f"{str(current).strip()!r} is not an object number: type the # shown in the table.")
            return None
        if not 1 <= n <= session.n_detections:
            gr.Warning(f"No object {n} in this upload (numbers go from 1 to {session.n_detections}).")
            return None
        return n - 1

    def act(session, oid, new_label, det, cls, which, current):
        try:
            session = service.correct(session, oid, new_label)
        except InputError as e:
            gr.Warning(str(e))
            return session, *refresh(det, cls, session, which, current)
        return session, *refresh(det, cls, session, which, current, move_from=oid)

    def on_set(oid, name, det, cls, session, which):
        """As ``act``, and the species box emptied once it named an object:
        Object # moves on, and a second click must not name the next one too."""
        i = chosen(session, oid)
        if i is None:
            return session, *refresh(det, cls, session, which, oid), gr.skip()
        if not " ".join(str(name or "").split()):
            gr.Warning("Choose a species (or type a new name) first, then Set species.")
            return session, *refresh(det, cls, session, which, oid), gr.skip()
        out = act(session, i, name, det, cls, which, oid)
        named = out[0] is not None and out[0].corrections.get(i) == " ".join(str(name).split())
        return *out, (None if named else gr.skip())

    def on_accept(oid, det, cls, session, which):
        i = chosen(session, oid)
        if i is None:
            return session, *refresh(det, cls, session, which, oid)
        answer = next((o.species for k, _, o in view_of(det, cls, session).objects() if k == i), None)
        if answer in (None, UNKNOWN):
            gr.Warning(f"Object {oid} is {'not shown at these thresholds' if answer is None else 'unknown'}: "
                       "choose its species, or mark it not plankton.")
            return session, *refresh(det, cls, session, which, oid)
        return act(session, i, answer, det, cls, which, oid)

    def on_reject(oid, det, cls, session, which):
        i = chosen(session, oid)
        return act(session, i, NOT_PLANKTON, det, cls, which, oid) if i is not None else (session, *refresh(det, cls, session, which, oid))

    def on_clear(oid, det, cls, session, which):
        i = chosen(session, oid)
        if i is not None and i not in session.corrections:
            gr.Warning(f"Object {oid} has no correction to clear.")
            i = None
        return act(session, i, "", det, cls, which, oid) if i is not None else (session, *refresh(det, cls, session, which, oid))

    def on_next(oid, det, cls, session, which):
        if session is None or not session.frames:
            gr.Warning("Upload frames first, then review their objects here.")
            return refresh(det, cls, session, which, oid)
        out = refresh(det, cls, session, which, oid, move_from=number(oid) - 1 if number(oid) is not None else -1)
        if not out[3]:
            gr.Info(f"Nothing {which if which != 'all' else 'listed'} at these thresholds.")
        return out

    def on_undo(det, cls, session, which):
        try:
            session, oid = service.undo(session) if session is not None else (None, None)
            if session is None:
                raise InputError("Nothing to undo: upload frames and correct some objects first.")
        except InputError as e:
            gr.Warning(str(e))
            return session, *refresh(det, cls, session, which, None)
        label = session.corrections.get(oid)
        gr.Info(f"Undone: object {oid + 1} is back to " + ("the model's answer." if label is None else f"{label!r}."))
        return session, *refresh(det, cls, session, which, oid + 1)  # the undone object in hand, where the filter lists it

    def on_save(force_it, session):
        """The slow part: the version is written and published. It returns no
        session: one written back at the end would undo corrections made
        meanwhile (``adopt`` switches the session as it is by then)."""
        if session is None or not session.all_corrections():
            gr.Warning("There are no corrections to save: correct some objects first.")
            return "", None
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", str(service.config.get("name") or "model"))
        folder = versions_dir() / f"{stem}-v{int(service.config.get('version', 1)) + 1}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            report = service.write_version(session, folder, force=bool(force_it))
        except (InputError, ValueError) as e:
            gr.Warning(service.public(e), duration=15)
            return f"⚠️ {service.public(e)}", None
        print(f"app: model version {report.version} saved to {folder}", file=sys.stderr)  # for the operator; visitors never see the server's disk
        change = "" if report.top1_change is None else (f" Top-1 on the {report.objects_checked} validation objects of the known species: "
                                                         f"{report.top1_before:.3f} → {report.top1_after:.3f}.")
        text = (f"Saved **version {report.version}** of {service.config.get('name') or 'the model'}: {sum(report.examples.values())} examples"
                + (f", new species: {', '.join(report.new_species)}" if report.new_species else "") + f".{change} This session now uses it.")
        try:
            pushed = service.publish_version(folder)
        except Exception as e:  # the Hub's and the network's own errors: the saved folder stays
            pushed = None
            text += f"  \n⚠️ Not published to the Hub: {service.public(' '.join(str(e).split()))[:300]}"
        if pushed:
            text += (f"  \nPublished to {pushed['repo_id']}, branch {pushed['revision']}, as commit `{pushed['commit_sha']}`: "
                     f"set `PLANKTON_MODEL_REVISION={pushed['commit_sha']}` to serve it.")
        else:
            text += "  \nIt lives on this server only: to share it, the operator can publish it (`python -m hub push`) or set PLANKTON_PUSH_REPO."
        return text, str(folder)

    def adopt(folder, det, cls, session, which, current):
        """The quick part: the session as it is now, corrections made during
        the save included, switches to the saved version."""
        if not folder or session is None:
            return gr.skip(), None, *refresh(det, cls, session, which, current)
        session = service.use_version(session, folder)
        return session, None, *refresh(det, cls, session, which, current)

    def pick(evt: gr.SelectData):
        """Clicking a row picks its object."""
        row = evt.row_value or []
        return str(int(row[0])) if row else gr.skip()

    table.select(pick, None, object_id, api_visibility="private", queue=False)
    outs = [note, table, coco_btn, object_id]
    base = [ctx.det, ctx.cls, ctx.session, which]
    tab.select(refresh, [*base, object_id], outs, api_name="ui_review", **FAST)
    for ev in named: ev.then(refresh, [*base, object_id], outs, **FAST)  # noqa: E701 (a named cluster's objects leave "to review" at once)
    which.change(refresh, [*base, object_id], outs, api_name="ui_review_filter", **FAST)
    on_thresholds(ctx, refresh_if_shown, [*base, object_id, ctx.shown_tab], outs)
    fast = dict(api_visibility="undocumented", concurrency_id="fast")
    follow(ctx, set_btn.click(on_set, [object_id, label, *base], [ctx.session, *outs, label], api_name="ui_correct", **fast))
    follow(ctx, accept_btn.click(on_accept, [object_id, *base], [ctx.session, *outs], api_name="ui_accept", **fast))
    follow(ctx, reject_btn.click(on_reject, [object_id, *base], [ctx.session, *outs], api_name="ui_reject", **fast))
    follow(ctx, clear_btn.click(on_clear, [object_id, *base], [ctx.session, *outs], api_name="ui_clear_correction", **fast))
    follow(ctx, undo_btn.click(on_undo, base, [ctx.session, *outs], api_name="ui_undo", **fast))
    next_btn.click(on_next, [object_id, *base], outs, api_name="ui_next", **fast)
    written = save_btn.click(on_save, [force, ctx.session], [saved, pending], api_name="ui_save_version",
                             api_visibility="undocumented", concurrency_id="model", concurrency_limit=1)
    follow(ctx, written.then(adopt, [pending, *base, object_id], [ctx.session, pending, *outs], api_name="ui_use_version", **fast))
