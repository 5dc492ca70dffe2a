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


# ----------------------------------------------------------------------------- lessons 01–02
def _counted(render: Callable, box_state: dict) -> Callable:
    """Wrap a render function so the box records how many renders ran and the last error."""
    def wrapped(**kw):
        box_state["renders"] += 1
        try:
            return render(**kw)
        except Exception as e:
            box_state["last_error"] = e
            raise
    return wrapped


def latent_explorer(decode: Callable, z, labels, extent: float | None = None, point=(0.0, 0.0),
                    step: float = 0.05) -> W.Box:
    """Two sliders (z₁, z₂) move a point in a 2-D latent plane; the figure shows it on the scatter
    of ``z`` (coloured by ``labels``) and the image ``decode(point)`` beside it (lesson 01).

    Decoding one point is one MLP pass, so it runs in the callback; the sliders only fire on
    release. ``box.render(z1=…, z2=…)`` draws one state as a static Figure."""
    from . import viz
    import torch

    zc = z.detach().cpu() if hasattr(z, "detach") else torch.as_tensor(z)
    lim = float(extent) if extent is not None else float(zc.abs().quantile(0.99)) * 1.1

    def render(z1: float, z2: float):
        with torch.no_grad():
            img = decode(torch.tensor([[z1, z2]], dtype=torch.float32))
        return viz.latent_point_figure(zc, labels, (z1, z2), img.detach().cpu(), extent=lim)

    sliders = {name: W.FloatSlider(value=float(v), min=-lim, max=lim, step=step, description=name,
                                   continuous_update=False, readout_format=".2f")
               for name, v in zip(("z1", "z2"), point)}
    state = {"renders": 0, "last_error": None}
    box = interactive_figure(_counted(render, state), sliders)
    box.render, box.state, box.extent = render, state, lim
    return box


def beta_explorer(snapshots: dict) -> W.Box:
    """A slider over the precomputed β sweep of lesson 02 (``train_beta_sweep``): latent scatter,
    prior samples, recon/KL trade-off and KL per dimension for each β. Nothing is recomputed."""
    from . import viz

    betas = sorted(snapshots)
    start = 1.0 if 1.0 in snapshots else betas[len(betas) // 2]
    slider = W.SelectionSlider(options=[(f"{b:g}", b) for b in betas], value=start, description="β",
                               continuous_update=True, layout=W.Layout(width="420px"))

    def render(beta: float):
        return viz.beta_figure(snapshots, beta)

    state = {"renders": 0, "last_error": None}
    box = interactive_figure(_counted(render, state), {"beta": slider})
    box.render, box.state = render, state
    return box
