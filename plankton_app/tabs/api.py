"""The API tab (how to call the app from a script) and the named endpoints
behind it, whose names and JSON results do not depend on the layout."""
from __future__ import annotations

import dataclasses

import gradio as gr

from ..session import parse_ids
from ..uploads import InputError
from . import Context, track

HELP = """
Every result shown here is also available to scripts through [`gradio_client`](https://www.gradio.app/guides/getting-started-with-the-python-client):

```python
from gradio_client import Client, handle_file

client = Client("{url}")
result = client.predict([handle_file("frame.jpg")], 0.25, 0.5, api_name="/identify")  # files, det_conf, cls_conf
for frame in result["frames"]:
    for obj in frame["objects"]:
        print(frame["image"], obj["id"], obj["species"], obj["similarity"], obj["box"])
stricter = client.predict(0.4, 0.7, api_name="/refilter")   # same upload, other thresholds: no model run
client.predict("Noctiluca sp", "3, 5", api_name="/enrol")    # a new species for this client's session
print(client.predict(api_name="/model_info"))
print(client.predict(0.5, api_name="/per_class"))
client.predict(3, "Chlorella sp", api_name="/correct")      # object 3 is Chlorella sp ("not plankton", or "" to undo)
coco = client.predict(api_name="/corrections")              # the corrections as COCO (for classify, enrol, training)
conc = client.predict(0.25, 0.5, 0.8, 0.1, api_name="/sample")  # det_conf, cls_conf, µm per pixel, µl per frame
```

Object `id`s count from 0 (the app's tables show `id + 1` as #). `/model_info` gives the thresholds the app starts with under `defaults`.
Boxes are `[x1, y1, x2, y2]` in pixels of the original frame; `det_score` is the detector's confidence, `similarity` the cosine
similarity to the closest species (the species is `unknown` below its threshold, which moves with `cls_conf` and never passes 1); `top` lists the best candidates.
"""


def _error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def help_text(url: str) -> str:
    return HELP.replace("{url}", url)


def address(request: gr.Request | None) -> str:
    """The app's address as the browser reached it (behind a proxy too): the
    example must work as pasted, whatever port or host the app runs on."""
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host")
    if not host:
        return "http://127.0.0.1:7860/"
    scheme = headers.get("x-forwarded-proto") or getattr(getattr(request, "url", None), "scheme", None) or "http"
    return f"{scheme.split(',')[0].strip()}://{host.split(',')[0].strip()}/"


def build(ctx: Context) -> None:
    """The API tab: inside ``gr.Tabs()``."""
    with gr.Tab("API", id="api") as tab:
        text = gr.Markdown(help_text("http://127.0.0.1:7860/"), elem_id="api-help")
    track(tab, "api", ctx)

    def show(request: gr.Request):
        return help_text(address(request))

    tab.select(show, None, text, api_visibility="private", queue=False)


def endpoints(ctx: Context) -> None:
    """The named endpoints and their hidden inputs: outside ``gr.Tabs()``."""
    service = ctx.service

    def identify(files, det_conf, cls_conf, session):
        try:
            new = service.analyse([files] if isinstance(files, str) else files or [], previous=session)
        except InputError as e:
            raise _error(str(e)) from None
        return service.refilter(new, det_conf, cls_conf).to_json() | {"messages": new.messages}, new

    def refilter(det_conf, cls_conf, session):
        if session is None or not session.frames:
            raise _error("Nothing to re-filter in this session: call /identify first.")
        return service.refilter(session, det_conf, cls_conf).to_json() | {"messages": session.messages}

    def enrol(name, objects, session):
        if session is None or not session.frames:
            raise _error("Call /identify first, then enrol objects by their id.")
        try:
            ids = parse_ids(objects) if isinstance(objects, str) else [int(i) for i in objects or []]
            new = service.enrol(session, name, ids)
        except InputError as e:
            raise _error(str(e)) from None
        return {"enrolled": new.enrolled, "classes": list(new.prototypes.names)}, new

    def correct(object_id, species, session):
        if session is None or not session.frames:
            raise _error("Call /identify first, then correct objects by their id.")
        try:
            new = service.correct(session, object_id, species)
        except InputError as e:
            raise _error(str(e)) from None
        return {"corrections": {str(k): v for k, v in sorted(new.corrections.items())}, "earlier": len(new.earlier)}, new

    def corrections(session):
        if session is None:
            raise _error("No corrections in this session: call /identify, then /correct.")
        return service.corrections_coco(session)

    def sample(det_conf, cls_conf, um_per_px, volume_ul, session):
        from plankton.sample.measure import Sample, concentration_rows

        if session is None or not session.frames:
            raise _error("Call /identify first.")
        try:
            s = Sample(um_per_px or None, volume_ul or None)
        except ValueError as e:
            raise _error(str(e)) from None
        new = dataclasses.replace(session, sample=s)
        view = service.refilter(new, det_conf, cls_conf)
        counter = service.counter(view)
        rows = concentration_rows(view.frames, s, estimate=counter.estimate(view.frames) if counter else None) if s.volume_ul else []
        return {"um_per_px": s.um_per_px, "volume_ul": s.volume_ul, "frames": len(view.frames), "concentration": rows}, new

    with gr.Column(visible=False):  # inputs of the endpoints; never shown
        files = gr.File(file_count="multiple", label="files")
        det = gr.Number(value=service.det_conf, label="det_conf")
        cls = gr.Number(value=service.cls_conf, label="cls_conf")
        name = gr.Textbox(label="name")
        objects = gr.Textbox(label="objects")
        object_id = gr.Number(label="object_id", precision=0)
        species = gr.Textbox(label="species")
        um = gr.Number(label="um_per_px")
        ul = gr.Number(label="volume_ul")
        out = gr.JSON(label="result")
        buttons = iter([gr.Button(visible=False) for _ in range(8)])
    s = ctx.session
    next(buttons).click(identify, [files, det, cls, s], [out, s], api_name="identify", concurrency_id="model", concurrency_limit=1,
                        api_description="Detect and identify objects in images or zips of images; the results are kept for /refilter.")
    next(buttons).click(refilter, [det, cls, s], out, api_name="refilter", concurrency_id="fast",
                        api_description="Apply other thresholds to this session's last /identify, without running the models.")
    next(buttons).click(enrol, [name, objects, s], [out, s], api_name="enrol", concurrency_id="fast",
                        api_description="Enrol a species for this session from object ids of the last /identify (e.g. '3, 5, 7-9').")
    next(buttons).click(service.model_info, None, out, api_name="model_info", concurrency_id="fast",
                        api_description="The loaded model: name, source, runtime, versions, training, classes, the app's default thresholds, thresholds.")
    next(buttons).click(service.per_class, [cls, s], out, api_name="per_class", concurrency_id="fast",
                        api_description="Per-species precision, recall, F1, support and threshold on the validation set at a similarity threshold.")
    next(buttons).click(correct, [object_id, species, s], [out, s], api_name="correct", concurrency_id="fast",
                        api_description="Set an object's species (a known one, a new name, or 'not plankton'; '' undoes it) for this session.")
    next(buttons).click(corrections, [s], out, api_name="corrections", concurrency_id="fast",
                        api_description="This session's corrections as a COCO file (for classify, enrol and training).")
    next(buttons).click(sample, [det, cls, um, ul, s], [out, s], api_name="sample", concurrency_id="fast",
                        api_description="Concentrations of the last /identify, corrections applied: the estimate (count_est, cells_per_ml_est, with 95% "
                                        "intervals) beside the raw count (cells_per_ml with its Poisson interval).")
