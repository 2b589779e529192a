"""Plankton identifier: a Gradio web app over the ``plankton`` library.

    python app.py                       # bundled model (or $PLANKTON_MODEL_DIR), http://127.0.0.1:7860
    python app.py --host 0.0.0.0 --port 7860
    python -m benchmarks.slider        # time a slider change (no server)

This file only builds the pipeline, wires the tabs and launches; the app's
logic is in ``plankton_app`` (``service`` without Gradio, ``tabs`` with it).
The model loads once and a warm-up inference runs before the first user.
Each upload runs the models once, at the detector's lowest threshold; the
sliders then only re-filter the cached results.

API (``gradio_client``), with names that do not depend on the layout:
    /identify(files, det_conf, cls_conf) -> results JSON (and keeps them for this session)
    /refilter(det_conf, cls_conf)        -> results JSON for the session's last upload
    /enrol(name, objects)                -> a new species for this session, from object ids
    /model_info()                        -> model name, source, runtime, versions, training, classes, defaults, thresholds
    /per_class(cls_conf)                 -> per-species validation metrics at that threshold
    /correct(object_id, species)         -> set an object's species for this session
    /corrections()                       -> this session's corrections as COCO
    /sample(det_conf, cls_conf, um_per_px, volume_ul) -> concentrations per species
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import gradio as gr  # noqa: E402

from plankton_app import EXAMPLES  # noqa: E402
from plankton_app.service import Service  # noqa: E402
from plankton_app.tabs import Context, api, embeddings, identify, model, review, sample, slider_step, species, wire_thresholds  # noqa: E402
from plankton_app.uploads import MAX_FILE_BYTES  # noqa: E402

CONCURRENCY = max(1, min(2, os.cpu_count() or 1))  # queued events at once (2 CPU cores); model runs are one at a time
CSS = """
#status p { margin: 0.2em 0; }
.counts { width: 100%; border-collapse: collapse; font-size: 0.92em; }
.counts th, .counts td { padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary); }
.counts tfoot td { border-bottom: none; }
#objects img { border-radius: 4px; display: block; }
"""


def theme():
    system = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"]  # no web fonts: works offline
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Soft(primary_hue="teal", secondary_hue="sky", font=system, font_mono=mono)


def create_app(service: Service | None = None, models_root: str | os.PathLike | None = None) -> gr.Blocks:
    """The Blocks app around a loaded Service (default: ``Service.load()``);
    ``models_root``: the folder whose model folders Compare may load."""
    service = service or Service.load()
    info = service.model_info()
    det_min = round(service.det_floor, 4)
    with gr.Blocks(title="Plankton identifier", analytics_enabled=False, delete_cache=(3600, 3 * 3600)) as demo:
        gr.Markdown(f"# Plankton identifier\nDetect and identify plankton in brightfield microscope frames. "
                    f"Model: **{info['name']}** ({info['source']}), {len(info['classes'])} species; objects unlike every known species are *unknown*.")
        det_value = max(service.det_conf, det_min)
        with gr.Row(equal_height=True):
            det = gr.Slider(det_min, 1.0, value=det_value, step=slider_step(det_min, det_value), label="Detector confidence (det_conf)",
                            info="Show objects the detector is at least this sure of.", elem_id="det-slider")
            cls = gr.Slider(0.0, 1.0, value=service.cls_conf, step=slider_step(0.0, service.cls_conf), label="Similarity threshold (cls_conf)",
                            info="Below this similarity to every known species, an object is unknown "
                                 "(species with their own threshold move with it).", elem_id="cls-slider")
        ctx = Context(service, det, cls, gr.State(None, time_to_live=3 * 3600), gr.State("identify"),
                      Path(models_root).expanduser().resolve() if models_root else None)
        with gr.Tabs():
            identify.build(ctx, EXAMPLES)
            review.build(ctx)
            sample.build(ctx)
            species.build(ctx)
            model.build(ctx)
            embeddings.build(ctx)
            api.build(ctx)
        api.endpoints(ctx)
        wire_thresholds(ctx)
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    return demo


def launch(demo: gr.Blocks, host: str | None = None, port: int | None = None, **kwargs):
    return demo.launch(server_name=host, server_port=port, max_file_size=MAX_FILE_BYTES, theme=theme(), css=CSS,
                       head=review.SHORTCUTS, footer_links=["api"], **kwargs)


def main(argv=None) -> int:
    import argparse

    from plankton.artifact.manifest import ArtifactError

    p = argparse.ArgumentParser(description="Plankton identifier web app.")
    p.add_argument("--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--model", default=None, help="model folder (default: the Hub repo below, else $PLANKTON_MODEL_DIR or the bundled model)")
    p.add_argument("--model-repo", default=None, metavar="ORG/NAME", help="Hub model repo (default: $PLANKTON_MODEL_REPO)")
    p.add_argument("--model-revision", default=None, help="branch, tag or full commit sha (default: $PLANKTON_MODEL_REVISION, else main)")
    p.add_argument("--models-root", default=None, metavar="DIR",
                   help="a folder of model folders that visitors may compare with, by name (default: none; only Hub revisions)")
    args = p.parse_args(argv)
    if args.models_root and not Path(args.models_root).expanduser().is_dir():
        p.error(f"--models-root {args.models_root}: not a folder")
    try:
        service = Service.load(args.model, args.model_repo, args.model_revision)
    except ArtifactError as e:
        print(f"app.py: cannot load the model: {e}\n(set PLANKTON_MODEL_DIR or --model to a model folder)", file=sys.stderr)
        return 1
    print(f"app.py: model: {service.description}; runtime: {service.cascade.runtime}", file=sys.stderr)  # goes to the Space's logs
    seconds = service.warm_up(EXAMPLES[0] if EXAMPLES else None)
    print(f"Model {service.config.get('name')!r} loaded and warmed up in {seconds:.1f} s", file=sys.stderr)
    launch(create_app(service, args.models_root), args.host, args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
