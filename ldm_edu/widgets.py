"""ipywidgets builders used by the lessons.

Rules that keep them working in class and headless (nbval): the controls and an Output are built
by hand; anything that runs a network uses ``continuous_update=False`` or indexes precomputed
results; callbacks are wrapped so errors show in the output; figures are closed after display.
Each builder returns the container widget; its controls are reachable as ``w.controls[name]``
so a test (or a student) can set ``.value`` and the callback runs.
"""
from __future__ import annotations

from typing import Callable

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display


def interactive_figure(render: Callable[..., "plt.Figure"], controls: dict, layout: str = "vbox") -> W.Box:
    """Call ``render(**values)`` → Figure whenever a control changes; show it in an Output.

    Returns a Box with ``.controls`` (name → widget) and ``.output``; the first render happens now.
    """
    out = W.Output(layout=W.Layout(min_height="120px"))

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            try:
                fig = render(**{k: c.value for k, c in controls.items()})
                if fig is not None:
                    display(fig)
                    plt.close(fig)
            except Exception as e:  # show errors to the student instead of swallowing them
                print(f"{type(e).__name__}: {e}")

    for c in controls.values():
        c.observe(redraw, names="value")
    redraw()
    box_cls = W.VBox if layout == "vbox" else W.HBox
    box = box_cls([W.HBox(list(controls.values())), out])
    box.controls, box.output, box.redraw = controls, out, redraw
    return box


def frame_slider(frames: list, render: Callable[[object], "plt.Figure"], description: str = "step",
                 labels: list | None = None) -> W.Box:
    """A slider over precomputed ``frames`` (a trajectory, a sweep): nothing is recomputed on move."""
    slider = W.IntSlider(value=0, min=0, max=len(frames) - 1, description=description,
                         continuous_update=True, layout=W.Layout(width="420px"))
    label = W.Label()

    def render_index(i):
        label.value = str(labels[i]) if labels is not None else ""
        return render(frames[i])

    box = interactive_figure(lambda i: render_index(i), {"i": slider})
    box.children = (W.HBox([slider, label]), box.output)
    return box
