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
    """Wrap a render function so the box records how many renders ran, with which values
    (``box_state["calls"]``, when that list is present) and the last error."""
    def wrapped(**kw):
        box_state["renders"] += 1
        if "calls" in box_state:
            box_state["calls"].append(dict(kw))
        try:
            return render(**kw)
        except Exception as e:
            box_state["last_error"] = e
            raise
    return wrapped


def latent_explorer(decode: Callable, z, labels, extent=None, point=None, step: float | None = None,
                    title: str | None = None) -> W.Box:
    """Two sliders (z₁, z₂) move a point in a 2-D latent plane; the figure shows it on the scatter
    of ``z`` (coloured by ``labels``) and the image ``decode(point)`` beside it (lessons 01, 02).

    ``extent``: a number e (the square [−e, e]²), a box ((lo₁, hi₁), (lo₂, hi₂)), or ``None`` for the
    codes' own bounding box. Decoding one point is one MLP pass, so it runs in the callback; the
    sliders fire on release. ``box.render(z1=…, z2=…)`` draws one state as a static Figure and
    ``box.bounds`` is the box shown; ``title`` names the scatter panel."""
    from . import viz
    from .analysis import latent_bounds
    import torch

    zc = z.detach().cpu() if hasattr(z, "detach") else torch.as_tensor(z)
    if extent is None:
        bounds = latent_bounds(zc)
    elif isinstance(extent, (int, float)):
        bounds = ((-float(extent), float(extent)),) * 2
    else:
        bounds = tuple((float(a), float(b)) for a, b in extent)
    if point is None:
        point = tuple(0.5 * (a + b) for a, b in bounds)

    def render(z1: float, z2: float):
        with torch.no_grad():
            img = decode(torch.tensor([[z1, z2]], dtype=torch.float32))
        return viz.latent_point_figure(zc, labels, (z1, z2), img.detach().cpu(), extent=bounds, title=title)

    sliders = {name: W.FloatSlider(value=float(v), min=lo, max=hi, step=step or (hi - lo) / 200,
                                   description=name, continuous_update=False, readout_format=".2f")
               for name, v, (lo, hi) in zip(("z1", "z2"), point, bounds)}
    state = {"renders": 0, "last_error": None}
    box = interactive_figure(_counted(render, state), sliders)
    box.render, box.state, box.bounds = render, state, bounds
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


# ----------------------------------------------------------------------------- lesson 03: VQ-VAE
def token_editor(model, image, description: str = "edit one token") -> W.Box:
    """Edit one token of an image's token map and decode live (lesson 03).

    Sliders pick the row, the column and the new code index; moving row/column shows the code
    that is there now. ``model`` is a VQVAE (``tokenize``, ``decode_tokens``, ``token_shape``)."""
    import torch

    from .viz import token_map_figure

    model.eval()
    base = model.tokenize(image[None])[0]
    h, w = base.shape
    k = model.quantizer.num_codes
    row = W.IntSlider(value=h // 2, min=0, max=h - 1, description="row", continuous_update=False)
    col = W.IntSlider(value=w // 2, min=0, max=w - 1, description="column", continuous_update=False)
    code = W.IntSlider(value=int(base[h // 2, w // 2]), min=0, max=k - 1, description="code",
                       continuous_update=False)

    def render(row, col, code):
        edited = base.clone()
        edited[row, col] = code
        with torch.no_grad():
            decoded = model.decode_tokens(edited[None])[0]
        return token_map_figure(image, edited, decoded, highlight=(row, col),
                                title=f"{description}: ({row}, {col}) = {int(base[row, col])} → {code}")

    def follow(_):
        code.value = int(base[row.value, col.value])

    # registered before the figure's own observers, so a new row/column first takes the code that is
    # there and the figure never shows the old code written at the new place
    row.observe(follow, names="value")
    col.observe(follow, names="value")
    state = {"renders": 0, "last_error": None, "calls": []}
    box = interactive_figure(_counted(render, state), {"row": row, "col": col, "code": code})
    box.base_tokens, box.render, box.state = base, render, state
    return box
