"""The app's tabs, one module each. Every tab is built by its own
``build(ctx)`` inside ``gr.Tabs()``: it lays out its components and wires
its own events to the shared sliders and session in ``Context``."""
from __future__ import annotations

from dataclasses import dataclass, field

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
    followers: list = field(default_factory=list)  # (fn, inputs, outputs) that redraw a tab from the session


# Cheap handlers (no model run): skip the queue and hide progress.
FAST = dict(queue=False, show_progress="hidden", api_visibility="undocumented")


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
