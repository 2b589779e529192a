"""The app's tabs, one module each. Every tab is built by its own
``build(ctx)`` inside ``gr.Tabs()``: it lays out its components and wires
its own events to the shared sliders and session in ``Context``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from ..service import Service


@dataclass
class Context:
    """What the tabs share: the loaded service, the two threshold sliders,
    the user's session (``plankton_app.session.Session`` or None) and the
    name of the tab on screen (so hidden tabs skip work on slider moves)."""

    service: Service
    det: gr.Slider
    cls: gr.Slider
    session: gr.State
    shown_tab: gr.State
    models_root: Path | None = None  # app.py --models-root: the folders Compare may load (none on a public Space)
    followers: list = field(default_factory=list)  # (fn, inputs, outputs) that redraw a tab from the session
    on_thresholds: list = field(default_factory=list)  # (fn, inputs, outputs) that redraw a tab when a slider moves


# Cheap handlers (no model run): skip the queue and hide progress.
FAST = dict(queue=False, show_progress="hidden", api_visibility="undocumented")


def slider_step(minimum: float, value: float) -> float:
    """The coarsest of 0.01, 0.001, 0.0001 on whose grid (from ``minimum``)
    ``value`` lies. A default off the grid (0.624 on a 0.01 step) shows one
    number in the box and another under the thumb, and the first drag jumps."""
    for step in (0.01, 0.001, 0.0001):
        if abs((value - minimum) / step - round((value - minimum) / step)) < 1e-6:
            return step
    return 0.0001


def on_thresholds(ctx: Context, fn, inputs: list, outputs: list) -> None:
    """Have ``fn(*inputs) -> outputs`` redraw a tab when a slider moves."""
    ctx.on_thresholds.append((fn, inputs, outputs))


def wire_thresholds(ctx: Context):
    """One event per slider, not one per tab: Gradio 6's front end re-sends a
    trigger to every handler bound to it when any one of them was deferred
    (``always_last``), so several handlers on one slider keep each other
    going after a drag (issue 42: 172 requests in 10 s). One handler runs the
    tabs' redraws in turn; the hidden ones answer ``gr.skip()`` at once."""
    inputs = list({id(c): c for _, ins, _ in ctx.on_thresholds for c in ins}.values())
    outputs = [c for _, _, outs in ctx.on_thresholds for c in outs]
    if len({id(c) for c in outputs}) != len(outputs):
        raise ValueError("two tabs redraw the same component on a slider move")
    where = {id(c): i for i, c in enumerate(inputs)}

    def redraw(*values):
        out = []
        for fn, ins, outs in ctx.on_thresholds:
            got = fn(*(values[where[id(c)]] for c in ins))
            out.extend(got if len(outs) > 1 else [got])
        return out

    return gr.on([ctx.det.change, ctx.cls.change], redraw, inputs, outputs, api_name="ui_refilter", trigger_mode="always_last", **FAST)


def track(tab: gr.Tab, name: str, ctx: Context) -> None:
    """Remember in ``ctx.shown_tab`` that ``tab`` is on screen when selected."""
    tab.select(lambda: name, None, ctx.shown_tab, api_visibility="private", queue=False)


def follow(ctx: Context, event):
    """Redraw the tabs in ``ctx.followers`` after ``event`` changed the
    session (a correction, an undo, the sample's scale): one state, so no
    tab keeps old numbers until a slider moves."""
    for fn, inputs, outputs in ctx.followers:
        event = event.then(fn, inputs, outputs, trigger_mode="always_last", **FAST)  # a quick second change must redraw too
    return event
