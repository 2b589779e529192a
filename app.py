"""Plankton identifier: a Gradio web app over the ``plankton`` library.

    python app.py                       # bundled model (or $PLANKTON_MODEL_DIR), http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 7860
    python app.py --benchmark           # time a slider change (no server)

The model loads once at start and a warm-up inference runs before the
first user. Each upload runs the models once, at the detector's lowest
threshold; the sliders then only re-filter the cached results.

API (``gradio_client``), with names that do not depend on the layout:
    /identify(files, det_conf, cls_conf) -> results JSON (and keeps them for this session)
    /refilter(det_conf, cls_conf)        -> results JSON for the session's last upload
    /enrol(name, objects)                -> a new species for this session, from object ids
    /model_info()                        -> model name, versions, training, classes, thresholds
    /per_class(cls_conf)                 -> per-species validation metrics at that threshold
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import gradio as gr  # noqa: E402

from plankton.results import UNKNOWN  # noqa: E402
from plankton.service import (  # noqa: E402
    MAX_FILE_BYTES,
    MAX_FRAMES,
    InputError,
    Service,
    View,
    counts_html,
    parse_ids,
    resolve_model,
)

ROOT = Path(__file__).resolve().parent
EXAMPLES = sorted((ROOT / "tests" / "data" / "frames").glob("*.jpg"))
DOWNLOADS = Path(tempfile.gettempdir()) / "plankton-app"
TABLE_HEADERS = ["#", "frame", "crop", "species", "similarity", "det. score", "top-3 candidates"]
TABLE_TYPES = ["number", "str", "html", "html", "number", "number", "str"]
METRIC_HEADERS = ["species", "precision", "recall", "F1", "support"]
CONCURRENCY = max(1, min(2, os.cpu_count() or 1))  # queued events at once (2 CPU cores); model runs are one at a time

CSS = """
#status p { margin: 0.2em 0; }
.counts { width: 100%; border-collapse: collapse; font-size: 0.92em; }
.counts th, .counts td { padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary); }
.counts tfoot td { border-bottom: none; }
#objects img { border-radius: 4px; display: block; }
"""


def _theme():
    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]  # no web fonts: works offline
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="teal", secondary_hue="sky", font=system, font_mono=mono)


# ---------------------------------------------------------------- formatting


def _num(x: float) -> str:
    """A threshold for people: two decimals, three when needed (0.50, 0.011)."""
    s = f"{x:.3f}"
    return s[:-1] if s.endswith("0") else s


_last_prune = [0.0]


def _prune_downloads(max_age: float = 3 * 3600, every: float = 600) -> None:
    """Remove download files older than ``max_age`` (Gradio serves its own copies)."""
    now = time.time()
    if now - _last_prune[0] < every:
        return
    _last_prune[0] = now
    for folder in DOWNLOADS.glob("*"):
        try:
            if now - folder.stat().st_mtime > max_age:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _write_downloads(service: Service, session, view: View) -> tuple[str, str]:
    """CSV and COCO JSON of the current view, named by content (so repeated
    slider moves reuse files) under the system temp dir."""
    _prune_downloads()
    csv = view.csv()
    coco = json.dumps(service.coco(view, session), indent=1) + "\n"
    folder = DOWNLOADS / hashlib.sha256((csv + coco).encode()).hexdigest()[:20]
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "plankton_detections.csv", folder / "plankton_detections.coco.json"
    for p, text in zip(paths, (csv, coco)):
        if not p.exists():
            tmp = p.with_name(f".{p.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(p)
    return str(paths[0]), str(paths[1])


def _status(session, view: View | None) -> str:
    if session is None or view is None:
        return "Upload one or more frames (or a zip of frames), or click an example below."
    n = view.n_objects
    unknown = view.counts.get(UNKNOWN, 0)
    text = (f"**{len(view.frames)} frame{'s' if len(view.frames) != 1 else ''} · {n} object{'s' if n != 1 else ''}**"
            f"{f' ({unknown} unknown)' if unknown else ''} at detector ≥ {_num(view.det_conf)}, similarity ≥ {_num(view.cls_conf)}.")
    if n == 0:
        text += (" No objects at this detector confidence: move the detector slider left." if session.n_detections
                 else " The detector found no objects in this upload.")
    if session.enrolled:
        text += f"  \nEnrolled in this session: {', '.join(session.enrolled)}."
    if session.messages:
        text += "  \n⚠️ Skipped: " + " · ".join(session.messages[:6]) + (f" · and {len(session.messages) - 6} more" if len(session.messages) > 6 else "")
    return text


def _metrics_rows(rows: list[dict]) -> list[list]:
    return [[r["species"], round(r["precision"], 3), round(r["recall"], 3), round(r["f1"], 3), int(r["support"])] for r in rows]


def _metrics_caption(service: Service, cls_conf: float, session=None) -> str:
    cov = service.coverage(cls_conf, session)
    if cov is None:
        if service.metrics and (service.metrics.get("identification") or {}).get("per_class"):
            return "Per-species metrics as stored with the model (no validation set to recompute them at other thresholds)."
        return "This model has no stored validation metrics."
    acc = "n/a" if cov["accuracy"] != cov["accuracy"] else f"{100 * cov['accuracy']:.0f}%"
    return (f"**At similarity ≥ {_num(cls_conf)}**, {100 * cov['coverage']:.0f}% of the {cov['n']} validation objects get a species name "
            f"(the rest are *unknown*) and {acc} of those names are right. Objects left unknown count as misses for recall.")


def _model_markdown(service: Service) -> str:
    info = service.model_info()
    v = info["versions"] or {}
    lines = [f"### {info['name'] or 'Unnamed model'}",
             f"**Source:** {info['source']}  ",
             f"**Trained:** {info['created'] or 'unknown'}  ",
             f"**Versions:** " + (", ".join(f"{k} {val}" for k, val in v.items()) or "unknown") + "  ",
             f"**Detector:** {info['detector'].get('architecture')} at {info['detector'].get('imgsz')} px · "
             f"**Embedder:** {info['embedder'].get('backbone')} ({info['embedder'].get('dim')}-d)  ",
             f"**Species with prototypes:** {len(info['classes'])}  ",
             f"**Default thresholds:** detector {_num(info['thresholds']['det_conf'])}, similarity {_num(info['thresholds']['cls_conf'])}"]
    training = info.get("training")
    if isinstance(training, dict) and training:
        lines.append("\n**Training**\n")
        for k, val in training.items():
            if isinstance(val, (dict, list)):
                val = json.dumps(val)[:300]
            lines.append(f"- {k}: {val}")
    elif training:
        lines.append(f"\n**Training:** {training}")
    for section in ("detection", "end_to_end"):
        d = info["metrics"].get(section)
        if isinstance(d, dict):
            flat = {k: val for k, val in d.items() if isinstance(val, (int, float)) and not isinstance(val, bool)}
            if flat:
                lines.append(f"\n**{section.replace('_', '-').capitalize()}:** " + " · ".join(f"{k} {val:.3g}" if isinstance(val, float) else f"{k} {val}" for k, val in flat.items()))
    if info["problems"]:
        lines.append("\n⚠️ " + " · ".join(info["problems"]))
    return "\n".join(lines)


# ---------------------------------------------------------------- the app


def create_app(service: Service | None = None) -> gr.Blocks:
    """Build the Blocks app around a loaded Service (default: load the
    model from ``resolve_model()``)."""
    service = service or Service.load()
    det_min = round(service.det_floor, 4)

    def view_outputs(session, view: View | None, update: bool = True):
        """gallery, table, table caption, counts, csv, coco, status. With
        ``update`` (a new upload), the gallery opens on the first frame and
        the download buttons are enabled; without (slider moves, enrolment),
        plain values only: the gallery stays on the frame shown, and Gradio
        skips the ~8 ms each component update costs."""
        if session is None or view is None or not session.frames:
            off = gr.DownloadButton(value=None, interactive=False)
            return [], [], "", "", off, gr.DownloadButton(value=None, interactive=False), _status(None, None)
        rows, total = service.table(session, view)
        caption = f"Showing {len(rows)} of {total} objects; the CSV has them all." if total > len(rows) else ""
        csv_path, coco_path = _write_downloads(service, session, view)
        images = service.annotated(session, view)
        if update:
            images = gr.Gallery(value=images, selected_index=0)
            csv_path, coco_path = gr.DownloadButton(value=csv_path, interactive=True), gr.DownloadButton(value=coco_path, interactive=True)
        return images, rows, caption, counts_html(view), csv_path, coco_path, _status(session, view)

    # ---- UI handlers
    def ui_identify(files, det, cls, session, progress=gr.Progress()):
        carry = session.emptied() if session is not None else None  # enrolled species outlive an upload
        if not files:
            return *view_outputs(None, None), carry
        try:
            new = service.analyse(files, lambda f, d: progress(f, desc=d), previous=session)
        except InputError as e:
            gr.Warning(str(e), duration=12)
            out = list(view_outputs(None, None))
            out[-1] = f"⚠️ {e}"
            return *out, carry
        if new.messages:
            gr.Warning("Some files were skipped: " + " · ".join(new.messages[:4]), duration=12)
        view = service.refilter(new, det, cls)
        if view.n_objects == 0 and new.n_detections == 0:
            gr.Info("No objects were found in this upload.")
        return *view_outputs(new, view), new

    def ui_refilter(det, cls, session):
        if session is None or not session.frames:
            return view_outputs(None, None)
        return view_outputs(session, service.refilter(session, det, cls), update=False)

    def ui_metrics(cls, session):
        return _metrics_rows(service.per_class(cls, session)), _metrics_caption(service, cls, session)

    def ui_metrics_if_shown(cls, session, tab):
        return ui_metrics(cls, session) if tab == "model" else gr.skip()

    def ui_plot_if_shown(det, cls, session, tab):
        return ui_plot(det, cls, session) if tab == "embeddings" else gr.skip()

    def ui_plot(det, cls, session):
        view = service.refilter(session, det, cls) if session is not None and session.frames else None
        return service.embedding_figure(session, view)

    def ui_enrol(name, ids, det, cls, session):
        if session is None or not session.frames:
            gr.Warning("Upload frames first, then choose objects from the table.")
            return *view_outputs(None, None), session, gr.skip()
        try:
            new = service.enrol(session, name, parse_ids(ids))
        except InputError as e:
            gr.Warning(str(e))
            return *view_outputs(session, service.refilter(session, det, cls), update=False), session, gr.skip()
        gr.Info(f"Enrolled '{' '.join(name.split())}' from {len(set(parse_ids(ids)))} object(s). It applies to this session only.")
        return *view_outputs(new, service.refilter(new, det, cls), update=False), new, ""

    # ---- API handlers (stable names and JSON results)
    def api_identify(files, det_conf, cls_conf, session):
        if isinstance(files, str):
            files = [files]
        try:
            new = service.analyse(files or [], previous=session)
        except InputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        out = service.refilter(new, det_conf, cls_conf).to_json()
        return out | {"messages": new.messages}, new

    def api_refilter(det_conf, cls_conf, session):
        if session is None or not session.frames:
            raise gr.Error("Nothing to re-filter in this session: call /identify first.", print_exception=False)
        return service.refilter(session, det_conf, cls_conf).to_json() | {"messages": session.messages}

    def api_enrol(name, objects, session):
        if session is None or not session.frames:
            raise gr.Error("Call /identify first, then enrol objects by their id.", print_exception=False)
        try:
            ids = parse_ids(objects) if isinstance(objects, str) else [int(i) for i in objects or []]
            new = service.enrol(session, name, ids)
        except InputError as e:
            raise gr.Error(str(e), print_exception=False) from None
        return {"enrolled": new.enrolled, "classes": list(new.prototypes.names)}, new

    def api_model_info():
        return service.model_info()

    def api_per_class(cls_conf, session):
        return service.per_class(cls_conf, session)

    info = service.model_info()
    with gr.Blocks(title="Plankton identifier", analytics_enabled=False, delete_cache=(3600, 3 * 3600)) as demo:
        session = gr.State(None, time_to_live=3 * 3600)
        shown_tab = gr.State("identify")
        gr.Markdown(f"# Plankton identifier\nDetect and identify plankton in brightfield microscope frames. "
                    f"Model: **{info['name']}** ({info['source']}), {len(info['classes'])} species; objects unlike every known species are *unknown*.")
        with gr.Row(equal_height=True):
            det = gr.Slider(det_min, 1.0, value=max(service.det_conf, det_min), step=0.01, label="Detector confidence",
                            info="Show objects the detector is at least this sure of.", elem_id="det-slider")
            cls = gr.Slider(0.0, 1.0, value=service.cls_conf, step=0.01, label="Identifier similarity",
                            info="Below this similarity to every known species, an object is unknown.", elem_id="cls-slider")
        with gr.Tabs():
            with gr.Tab("Identify", id="identify") as identify_tab:
                with gr.Row():
                    with gr.Column(scale=1, min_width=320):
                        files = gr.File(label=f"Frames (images, or a zip of up to {MAX_FRAMES})", file_count="multiple",
                                        file_types=["image", ".zip"], height=150, elem_id="upload")
                        status = gr.Markdown(_status(None, None), elem_id="status")
                        counts = gr.HTML("", elem_id="counts")
                        with gr.Row():
                            csv_btn = gr.DownloadButton("⬇ CSV", value=None, interactive=False, size="sm", elem_id="download-csv")
                            coco_btn = gr.DownloadButton("⬇ COCO JSON", value=None, interactive=False, size="sm", elem_id="download-coco")
                    with gr.Column(scale=2):
                        gallery = gr.Gallery(label="Annotated frames (boxes coloured by species; unknown in grey)", format="jpeg",
                                             columns=3, height="auto", preview=True, object_fit="contain", elem_id="frames")
                if EXAMPLES:
                    gr.Examples([[[str(p)]] for p in EXAMPLES] + ([[[str(p) for p in EXAMPLES]]] if len(EXAMPLES) > 1 else []),
                                inputs=[files], label="Examples: click to identify",
                                example_labels=[f"Example frame {i + 1}" for i in range(len(EXAMPLES))] + (["All example frames"] if len(EXAMPLES) > 1 else []))
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
            with gr.Tab("Model", id="model") as model_tab:
                gr.Markdown(_model_markdown(service))
                metrics_caption = gr.Markdown(_metrics_caption(service, service.cls_conf), elem_id="metrics-caption")
                metrics = gr.Dataframe(_metrics_rows(service.per_class(service.cls_conf)), headers=METRIC_HEADERS,
                                       datatype=["str", "number", "number", "number", "number"], interactive=False,
                                       max_height=600, label="Per-species identification (validation set; follows the similarity slider)",
                                       elem_id="metrics")
                with gr.Row():
                    if service.confusion is not None:
                        gr.Image(str(service.confusion), label="Confusion matrix", interactive=False, elem_id="confusion",
                                 buttons=["fullscreen", "download"])
                    if service.reliability is not None:
                        gr.Image(str(service.reliability), label="Reliability", interactive=False, buttons=["fullscreen", "download"])
                if service.metrics:
                    with gr.Accordion("All stored metrics (metrics.json)", open=False):
                        gr.JSON(service.metrics)
            with gr.Tab("Embeddings", id="embeddings") as emb_tab:
                if service.validation is None:
                    gr.Markdown("This model has no stored validation set, so there is no embedding map to show.")
                else:
                    gr.Markdown("Validation objects (dots, coloured by their true species) in the embedding map made at training time; "
                                "prototypes are stars. Your upload's objects are diamonds, coloured by the species they were given, "
                                "placed beside their nearest validation neighbours. Hover for species and similarity; click legend entries to hide them.")
                plot = gr.Plot(label="Embedding map", elem_id="embedding-plot", visible=service.validation is not None)
            with gr.Tab("API", id="api") as api_tab:
                gr.Markdown(API_HELP)

        # hidden components for the API endpoints
        with gr.Column(visible=False):
            api_files = gr.File(file_count="multiple", label="files")
            api_det = gr.Number(value=service.det_conf, label="det_conf")
            api_cls = gr.Number(value=service.cls_conf, label="cls_conf")
            api_name = gr.Textbox(label="name")
            api_objects = gr.Textbox(label="objects")
            api_out = gr.JSON(label="result")
            api_buttons = [gr.Button(visible=False) for _ in range(5)]

        view_comps = [gallery, table, table_caption, counts, csv_btn, coco_btn, status]
        fast = dict(queue=False, show_progress="hidden", api_visibility="undocumented")  # cheap (no model runs): skip the queue
        files.change(ui_identify, [files, det, cls, session], view_comps + [session], api_name="ui_identify",
                     concurrency_id="model", concurrency_limit=1, api_visibility="undocumented", show_progress_on=[gallery])
        gr.on([det.change, cls.change], ui_refilter, [det, cls, session], view_comps, api_name="ui_refilter", trigger_mode="always_last", **fast)
        for tab, name in ((identify_tab, "identify"), (model_tab, "model"), (emb_tab, "embeddings"), (api_tab, "api")):
            tab.select((lambda n: lambda: n)(name), None, shown_tab, api_visibility="private", queue=False)
        emb_tab.select(ui_plot, [det, cls, session], plot, api_name="ui_plot", **fast)
        gr.on([det.change, cls.change], ui_plot_if_shown, [det, cls, session, shown_tab], plot, api_name="ui_plot_if_shown",
              trigger_mode="always_last", **fast)
        model_tab.select(ui_metrics, [cls, session], [metrics, metrics_caption], api_name="ui_metrics", **fast)
        cls.change(ui_metrics_if_shown, [cls, session, shown_tab], [metrics, metrics_caption], api_name="ui_metrics_if_shown",
                   trigger_mode="always_last", **fast)
        enrol_btn.click(ui_enrol, [enrol_name, enrol_ids, det, cls, session], view_comps + [session, enrol_ids], api_name="ui_enrol",
                        concurrency_id="fast", api_visibility="undocumented")

        b = iter(api_buttons)
        next(b).click(api_identify, [api_files, api_det, api_cls, session], [api_out, session], api_name="identify",
                      concurrency_id="model", concurrency_limit=1,
                      api_description="Detect and identify objects in images or zips of images; the results are kept for /refilter.")
        next(b).click(api_refilter, [api_det, api_cls, session], api_out, api_name="refilter", concurrency_id="fast",
                      api_description="Apply other thresholds to this session's last /identify, without running the models.")
        next(b).click(api_enrol, [api_name, api_objects, session], [api_out, session], api_name="enrol", concurrency_id="fast",
                      api_description="Enrol a species for this session from object ids of the last /identify (e.g. '3, 5, 7-9').")
        next(b).click(api_model_info, None, api_out, api_name="model_info", concurrency_id="fast",
                      api_description="The loaded model: name, source, creation time, versions, training, classes, thresholds.")
        next(b).click(api_per_class, [api_cls, session], api_out, api_name="per_class", concurrency_id="fast",
                      api_description="Per-species precision, recall, F1 and support on the validation set at a similarity threshold.")
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


API_HELP = """
Every result shown here is also available to scripts through [`gradio_client`](https://www.gradio.app/guides/getting-started-with-the-python-client):

```python
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860/")
result = client.predict([handle_file("frame.jpg")], 0.25, 0.5, api_name="/identify")  # files, det_conf, cls_conf
for frame in result["frames"]:
    for obj in frame["objects"]:
        print(frame["image"], obj["id"], obj["species"], obj["similarity"], obj["box"])
stricter = client.predict(0.4, 0.7, api_name="/refilter")   # same upload, other thresholds: no model run
client.predict("Noctiluca sp", "3, 5", api_name="/enrol")    # a new species for this client's session
print(client.predict(api_name="/model_info"))
print(client.predict(0.5, api_name="/per_class"))
```

Boxes are `[x1, y1, x2, y2]` in pixels of the original frame; `det_score` is the detector's confidence, `similarity` the cosine
similarity to the closest species (the species is `unknown` below `cls_conf`); `top` lists the best candidates.
"""


def launch(demo: gr.Blocks, host: str | None = None, port: int | None = None, **kwargs):
    return demo.launch(server_name=host, server_port=port, max_file_size=MAX_FILE_BYTES, theme=_theme(), css=CSS,
                       footer_links=["api"], **kwargs)


def benchmark_e2e(service: Service, n_objects: int = 20, repeats: int = 30) -> dict:
    """Slider changes through a running app (HTTP, Gradio pre/post-processing,
    no browser): the UI's re-filter handler on the first example frame at
    the detector threshold that keeps about ``n_objects`` objects, against
    a no-op endpoint's round trip. Milliseconds."""
    import socket
    import statistics

    from gradio_client import Client, handle_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo = create_app(service)
    launch(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        frame = handle_file(str(EXAMPLES[0]))
        scores = sorted((o["det_score"] for f in client.predict([frame], service.det_floor, 0.0, api_name="/identify")["frames"]
                         for o in f["objects"]), reverse=True)
        det = scores[min(n_objects, len(scores)) - 1] if scores else service.det_conf
        client.predict([frame], det, 0.0, api_name="/ui_identify")

        def timed(*args, api_name):
            t = time.perf_counter()
            client.predict(*args, api_name=api_name)
            return (time.perf_counter() - t) * 1000

        slider = [timed(det, 0.3 + 0.4 * (i % 2), 0, api_name="/ui_refilter") for i in range(repeats)]
        noop = [timed(api_name="/model_info") for _ in range(repeats)]
        n = sum(1 for s in scores if s >= det)
    finally:
        demo.close()
    return {"objects": n, "ui_refilter_median_ms": round(statistics.median(slider), 1), "ui_refilter_p95_ms": round(sorted(slider)[int(0.95 * (repeats - 1))], 1),
            "noop_round_trip_median_ms": round(statistics.median(noop), 1), "repeats": repeats}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Plankton identifier web app.")
    p.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--model", default=None, help="model folder (default: the Hub repo below, else $PLANKTON_MODEL_DIR or the bundled model)")
    p.add_argument("--model-repo", default=None, metavar="ORG/NAME", help="Hub model repo (default: $PLANKTON_MODEL_REPO)")
    p.add_argument("--model-revision", default=None, help="branch, tag or full commit sha (default: $PLANKTON_MODEL_REVISION, else main)")
    p.add_argument("--benchmark", action="store_true", help="time a slider change for a frame of --objects objects, then exit")
    p.add_argument("--e2e", action="store_true", help="with --benchmark: also through a running app with gradio_client")
    p.add_argument("--objects", type=int, default=20)
    args = p.parse_args(argv)

    from plankton.artifact import ArtifactError

    folder, description = (Path(args.model), f"--model {args.model}") if args.model else resolve_model(args.model_repo, args.model_revision)
    print(f"app.py: model: {description}", file=sys.stderr)  # goes to the Space's logs
    try:
        service = Service.load(folder, description)
    except ArtifactError as e:
        from plankton.hub import fallback_model

        fallback = fallback_model()
        if args.model or Path(folder) == Path(fallback.path):
            print(f"app.py: cannot load the model: {e}\n(set PLANKTON_MODEL_DIR or --model to a model folder)", file=sys.stderr)
            return 1
        description = f"{fallback.description} ({description} does not load: {str(e).splitlines()[0]})"
        print(f"app.py: {description}", file=sys.stderr)
        service = Service.load(fallback.path, description)
    if args.benchmark:
        from plankton.images import read_image
        from plankton.service import benchmark_refilter

        image = read_image(EXAMPLES[0]) if EXAMPLES else None
        print(json.dumps({"service": benchmark_refilter(service, image, args.objects)}, indent=2))
        if args.e2e:
            print(json.dumps({"app": benchmark_e2e(service, args.objects)}, indent=2))
        return 0
    seconds = service.warm_up(EXAMPLES[0] if EXAMPLES else None)
    print(f"Model {service.config.get('name')!r} ({description}) loaded and warmed up in {seconds:.1f} s", file=sys.stderr)
    launch(create_app(service), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
