"""Matplotlib figures used by the lessons: image grids, latent scatters, strips, curves.

Every function returns the Figure (and closes it from pyplot's state), so a notebook shows it
once with ``display(fig)`` or as the cell's value, and tests can save it with ``fig.savefig``.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch


def _to_numpy_images(images) -> np.ndarray:
    x = images.detach().float().cpu().numpy() if torch.is_tensor(images) else np.asarray(images, float)
    if x.ndim == 4:
        x = x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)
    return x


def _finish(fig):
    plt.close(fig)
    return fig


def grid_array(images, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, 1, H, W) images in [0, 1] into one array, ``nrow`` images per row."""
    x = _to_numpy_images(images)
    n, h, w = x.shape[:3]
    ncol = min(nrow, n)
    nrows = int(np.ceil(n / ncol))
    out = np.full((nrows * (h + pad) + pad, ncol * (w + pad) + pad) + x.shape[3:], pad_value, float)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    return out


def show_grid(images, nrow: int = 8, title: str | None = None, ax=None, scale: float = 0.45,
              vmin: float = 0.0, vmax: float = 1.0):
    """Show images (in [0, 1]) as one grid; returns the figure."""
    arr = grid_array(images, nrow)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(2.0, arr.shape[1] / 29 * scale * 1.6),
                                        max(1.2, arr.shape[0] / 29 * scale * 1.6)))
    ax.imshow(arr, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return _finish(ax.figure) if own else ax.figure


def compare_rows(rows: dict, nrow: int | None = None, title: str | None = None):
    """Several labelled rows of images, e.g. {"original": x, "reconstruction": x_hat}."""
    n = len(rows)
    ncol = nrow or max(len(v) for v in rows.values())
    fig, axes = plt.subplots(n, 1, figsize=(0.62 * ncol + 1.2, 0.75 * n + 0.4 + (0.3 if title else 0)))
    axes = np.atleast_1d(axes)
    for ax, (label, imgs) in zip(axes, rows.items()):
        ax.imshow(grid_array(imgs[:ncol], ncol), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig)


def latent_scatter(z, labels, title: str = "test set in latent space", ax=None, s: float = 2.0,
                   extent: float | None = None):
    """2-D latent codes coloured by digit, with a legend of the ten classes."""
    z = z.detach().cpu().numpy() if torch.is_tensor(z) else np.asarray(z)
    labels = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
    sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=s, vmin=-0.5, vmax=9.5, alpha=0.7)
    ax.figure.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    if extent:
        ax.set_xlim(-extent, extent), ax.set_ylim(-extent, extent)
    ax.set_xlabel("$z_1$"), ax.set_ylabel("$z_2$"), ax.set_title(title, fontsize=10)
    return _finish(ax.figure) if own else ax.figure


def plot_curves(curves: dict, xlabel: str = "step", ylabel: str = "loss", title: str | None = None,
                logy: bool = False, ax=None, marker=None):
    """Several named (x, y) curves on one axis."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, marker=marker)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if own:
        ax.figure.tight_layout()
    return _finish(ax.figure) if own else ax.figure


def plot_history(history, title: str = "training loss", logy: bool = False, metrics: tuple = ()):
    """The loss (and chosen metrics) of a fit() History."""
    names = ("loss",) + tuple(metrics)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3))
    for ax, name in zip(np.atleast_1d(axes), names):
        y = history.loss if name == "loss" else history.metrics[name]
        ax.plot(history.steps, y, alpha=0.3, color="C0")
        ax.plot(history.steps, history.smoothed(name, 10), color="C0")
        ax.set_title(name if name != "loss" else title, fontsize=10)
        ax.set_xlabel("step")
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _finish(fig)


def image_strip(images, labels=None, title: str | None = None, scale: float = 0.9):
    """One row of images with an optional caption under each (interpolations, trajectories)."""
    x = _to_numpy_images(images)
    n = len(x)
    fig, axes = plt.subplots(1, n, figsize=(scale * n, scale * 1.25 + (0.3 if title else 0)))
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(x[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------- lessons 01–02
def latent_point_figure(z, labels, point, image, extent: float | None = None, title: str | None = None):
    """Left: the 2-D latent scatter with ``point`` marked; right: the image 𝒟(point) decoded there."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8.0, 3.6), gridspec_kw={"width_ratios": [1.35, 1]})
    latent_scatter(z, labels, ax=ax0, s=1.5, extent=extent, title=title or "latent space (test set)")
    p = [float(v) for v in point]
    ax0.plot(p[0], p[1], marker="*", color="black", markersize=16, markeredgecolor="white")
    img = _to_numpy_images(image.reshape(1, 1, 28, 28) if torch.is_tensor(image) else np.reshape(image, (1, 1, 28, 28)))[0]
    ax1.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax1.set_axis_off()
    ax1.set_title(f"𝒟(z) at z = ({p[0]:.2f}, {p[1]:.2f})", fontsize=10)
    fig.tight_layout()
    return _finish(fig)


def beta_figure(snapshots: dict, beta: float):
    """One β of a β sweep (``autoencoders.train_beta_sweep``): latent scatter, prior samples,
    the reconstruction/KL trade-off of all βs with this one marked, and the KL per latent dim."""
    snap = snapshots[beta]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5), gridspec_kw={"width_ratios": [1.25, 1, 1, 0.7]})
    latent_scatter(snap["mu"], snap["labels"], ax=axes[0], s=1.5, extent=4,
                   title=f"β = {beta:g}: posterior means μ")
    axes[1].imshow(grid_array(snap["samples"], int(np.ceil(np.sqrt(len(snap["samples"]))))), cmap="gray",
                   vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_axis_off()
    axes[1].set_title("decoded z ~ N(0, I)", fontsize=10)
    bs = sorted(snapshots)
    kl = [snapshots[b]["kl"] for b in bs]
    rec = [snapshots[b]["recon"] for b in bs]
    axes[2].plot(kl, rec, "o-", color="C0")
    for b, k, r in zip(bs, kl, rec):
        axes[2].annotate(f"{b:g}", (k, r), textcoords="offset points", xytext=(4, 3), fontsize=7)
    axes[2].plot(snap["kl"], snap["recon"], "o", color="C3", markersize=12, alpha=0.6)
    axes[2].set_xlabel("KL(q(z|x) ‖ p(z))  [nats]"), axes[2].set_ylabel("reconstruction −log p(x|z)  [nats]")
    axes[2].set_title(f"trade-off; −ELBO(β=1) = {snap['neg_elbo']:.1f}", fontsize=10)
    axes[2].grid(alpha=0.3)
    kd = snap["kl_per_dim"].numpy() if torch.is_tensor(snap["kl_per_dim"]) else np.asarray(snap["kl_per_dim"])
    axes[3].bar([f"z{j + 1}" for j in range(len(kd))], kd, color=["C3" if v < 0.05 else "C0" for v in kd])
    axes[3].set_title("KL per dim (red: collapsed)", fontsize=10)
    axes[3].set_ylim(0, max(0.5, float(kd.max()) * 1.15))
    fig.tight_layout()
    return _finish(fig)
