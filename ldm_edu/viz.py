"""Matplotlib figures used by the lessons: image grids, latent scatters, strips, curves.

Every function returns the Figure (and closes it from pyplot's state), so a notebook shows it
once with ``display(fig)`` or as the cell's value, and tests can save it with ``fig.savefig``.
Figures of sample quality (class shares, FID curves, the f-study) are in ``ldm_edu.quality_figures``.
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
                logy: bool = False, ax=None, marker=None, logx: bool = False):
    """Several named (x, y) curves on one axis."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=name, marker=marker)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel), ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if own:
        ax.figure.tight_layout()
    return _finish(ax.figure) if own else ax.figure


def plot_history(history, title: str = "training loss", logy: bool = False, metrics: tuple = (),
                 labels: dict | None = None):
    """The loss (and chosen metrics) of a fit() History. ``labels``: metric name → panel title
    (e.g. with its unit, {"kl": "KL (nats)"}); the loss panel is titled ``title``."""
    names = ("loss",) + tuple(metrics)
    labels = {"loss": title, **(labels or {})}
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3))
    for ax, name in zip(np.atleast_1d(axes), names):
        y = history.loss if name == "loss" else history.metrics[name]
        ax.plot(history.steps, y, alpha=0.3, color="C0")
        ax.plot(history.steps, history.smoothed(name, 10), color="C0")
        ax.set_title(labels.get(name, name), fontsize=10)
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
def latent_point_figure(z, labels, point, image, extent=None, title: str | None = None):
    """Left: the 2-D latent scatter with ``point`` marked; right: the image 𝒟(point) decoded there.
    ``extent``: a number e (square [−e, e]²) or a box ((lo₁, hi₁), (lo₂, hi₂))."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(8.0, 3.6), gridspec_kw={"width_ratios": [1.35, 1]})
    box = extent if extent is not None and not isinstance(extent, (int, float)) else None
    latent_scatter(z, labels, ax=ax0, s=1.5, extent=None if box else extent,
                   title=title or "latent space (test set)")
    if box:
        ax0.set_xlim(*box[0]), ax0.set_ylim(*box[1])
    p = [float(v) for v in point]
    ax0.plot(p[0], p[1], marker="*", color="black", markersize=16, markeredgecolor="white")
    img = _to_numpy_images(image.reshape(1, 1, 28, 28) if torch.is_tensor(image) else np.reshape(image, (1, 1, 28, 28)))[0]
    ax1.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax1.set_axis_off()
    ax1.set_title(f"D(z) at z = ({p[0]:.2f}, {p[1]:.2f})", fontsize=10)
    fig.tight_layout()
    return _finish(fig)


def beta_figure(snapshots: dict, beta: float):
    """One β of a β sweep (``experiments.sweeps.train_beta_sweep``): latent scatter, prior samples,
    the reconstruction/KL trade-off of all βs with this one marked, and the KL per latent dim."""
    from .analysis import ACTIVE_KL, latent_bounds

    snap = snapshots[beta]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.5), gridspec_kw={"width_ratios": [1.25, 1, 1, 0.7]})
    # one box for every β (the one holding the codes of all βs), so the panels can be compared;
    # codes outside it are counted in the title rather than silently cut
    box = latent_bounds(torch.cat([torch.as_tensor(s["mu"]).float().cpu() for s in snapshots.values()]), q=0.001)
    mu = torch.as_tensor(snap["mu"]).float().cpu()
    outside = float(((mu[:, 0] < box[0][0]) | (mu[:, 0] > box[0][1]) | (mu[:, 1] < box[1][0]) |
                     (mu[:, 1] > box[1][1])).float().mean())
    latent_scatter(mu, snap["labels"], ax=axes[0], s=1.5,
                   title=f"β = {beta:g}: posterior means μ" + (f" ({outside:.1%} outside)" if outside > 0 else ""))
    axes[0].set_xlim(*box[0]), axes[0].set_ylim(*box[1])
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
    axes[3].bar([f"z{j + 1}" for j in range(len(kd))], kd, color=["C3" if v < ACTIVE_KL else "C0" for v in kd])
    for j, v in enumerate(kd):       # label every bar: an inactive one has no height to see
        axes[3].annotate(f"{v:.3f}" + ("\ninactive" if v < ACTIVE_KL else ""), (j, float(v)), ha="center",
                         va="bottom", fontsize=8, color="C3" if v < ACTIVE_KL else "black",
                         textcoords="offset points", xytext=(0, 2))
    axes[3].set_title(f"KL per dim, nats (red: < {ACTIVE_KL:g}, inactive)", fontsize=10)
    axes[3].set_ylim(0, max(0.5, float(kd.max()) * 1.15))
    fig.tight_layout()
    return _finish(fig)


def latent_grid_figure(images, grid, title: str | None = None, scale: float = 0.3, n_ticks: int = 5):
    """Images decoded on a 2-D grid of codes (``analysis.latent_grid``: row-major, top row = largest
    z₂), drawn as one picture with the z₁ / z₂ value of some columns / rows on the axes."""
    grid = torch.as_tensor(grid).float().cpu()
    zx, zy = grid[:, 0].unique(sorted=True), grid[:, 1].unique(sorted=True).flip(0)
    n = len(zx)
    fig = show_grid(images, nrow=n, title=title, scale=scale)
    ax = fig.axes[0]
    ax.set_axis_on()
    cell = 28 + 1                                             # grid_array: 28 px + 1 px padding
    idx = np.unique(np.linspace(0, n - 1, min(n_ticks, n)).round().astype(int))
    ax.set_xticks(1 + cell * idx + 14), ax.set_xticklabels([f"{float(zx[i]):.2f}" for i in idx], fontsize=7)
    ax.set_yticks(1 + cell * idx + 14), ax.set_yticklabels([f"{float(zy[i]):.2f}" for i in idx], fontsize=7)
    ax.set_xlabel("$z_1$", fontsize=9), ax.set_ylabel("$z_2$", fontsize=9)
    for side in ax.spines.values():
        side.set_visible(False)
    fig.tight_layout()
    return _finish(fig)


def kl_per_dim_figure(kl_dims, threshold: float, title: str | None = None):
    """The KL of each latent dimension (``analysis.kl_per_dim``), sorted, on a log axis, with the
    activity threshold as a line: whether "active" is a clear split or hangs on the threshold."""
    kd = np.sort(np.asarray(torch.as_tensor(kl_dims).float().cpu()))[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    ax.bar(np.arange(len(kd)), np.maximum(kd, 1e-6), color=np.where(kd > threshold, "C0", "C3"))
    ax.axhline(threshold, color="black", lw=1, ls="--", label=f"ACTIVE_KL = {threshold:g} nats")
    ax.set_yscale("log")
    ax.set_xlabel("latent dimension, sorted by KL"), ax.set_ylabel("mean KL per image (nats)")
    ax.set_title(title or "KL(q(z_j|x) ‖ N(0, 1)) of each dimension (blue: active, red: inactive)", fontsize=10)
    ax.legend(fontsize=8), ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------- lesson 03: VQ-VAE
def codebook_usage_figure(counts: dict, title: str = "codebook usage on test images"):
    """One panel per run: how often each code is used, codes sorted by use (log scale).

    ``counts``: name → (K,) tensor of assignment counts. The title of each panel gives the number
    of used codes and the perplexity exp(H(p)) of the usage distribution."""
    fig, axes = plt.subplots(1, len(counts), figsize=(4.2 * len(counts), 3.0), sharey=True, squeeze=False)
    for ax, (name, c) in zip(axes[0], counts.items()):
        c = torch.as_tensor(c).float().cpu()
        k = len(c)
        srt = c.sort(descending=True).values.numpy()
        p = c / c.sum().clamp_min(1)
        ppl = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum()))
        used = int((c > 0).sum())
        ax.bar(np.arange(k), np.maximum(srt, 0.8), width=1.0, color=np.where(srt > 0, "C0", "C3"))
        ax.set_yscale("log")
        ax.set_ylim(0.8, None)
        ax.set_xlabel("code (sorted by use)")
        ax.set_title(f"{name}\nused {used}/{k} ({used / k:.0%}), perplexity {ppl:.0f}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("assignments")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig)


def token_map_figure(image, tokens, decoded=None, highlight: tuple | None = None, title: str | None = None):
    """An image, its token map (code indices written in the cells) and the decoded tokens."""
    tok = torch.as_tensor(tokens).cpu()
    n = 2 + (decoded is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.1))
    axes[0].imshow(_to_numpy_images(image[None] if image.dim() == 3 else image)[0], cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(tok.numpy(), cmap="tab20", interpolation="nearest")
    h, w = tok.shape
    for i in range(h):
        for j in range(w):
            axes[1].text(j, i, str(int(tok[i, j])), ha="center", va="center", fontsize=6.5 if h <= 8 else 4)
    if highlight is not None:
        r, c = highlight
        axes[1].add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=2))
    axes[1].set_title(f"{h}×{w} token map (code indices)", fontsize=9)
    if decoded is not None:
        axes[2].imshow(_to_numpy_images(decoded[None] if decoded.dim() == 3 else decoded)[0], cmap="gray",
                       vmin=0, vmax=1)
        if highlight is not None:
            s = axes[2].get_images()[0].get_array().shape[0] / h
            axes[2].add_patch(plt.Rectangle((c * s - 0.5, r * s - 0.5), s, s, fill=False, ec="red", lw=1.5))
        axes[2].set_title("decoded tokens", fontsize=9)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _finish(fig)


def codebook_pca_figure(codebook, counts=None, z=None, title: str = "codebook projected to 2-D (PCA)"):
    """Codebook vectors (K, D) in the plane of their first two principal components, coloured by
    usage (dead codes as red crosses); optionally a sample of encoder outputs z (N, D) behind them."""
    e = torch.as_tensor(codebook).detach().float().cpu()
    pts = e if z is None else torch.cat([e, torch.as_tensor(z).detach().float().cpu()])
    mean = pts.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(pts - mean, q=2, center=False)
    proj = lambda a: ((a - mean) @ v[:, :2]).numpy()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    if z is not None:
        zp = proj(torch.as_tensor(z).detach().float().cpu())
        ax.scatter(zp[:, 0], zp[:, 1], s=1, color="0.75", alpha=0.4, label="encoder outputs $z_e$")
    ep = proj(e)
    if counts is None:
        ax.scatter(ep[:, 0], ep[:, 1], s=8, color="C0", label="codes")
    else:
        c = torch.as_tensor(counts).float().cpu().numpy()
        alive = c > 0
        sc = ax.scatter(ep[alive, 0], ep[alive, 1], s=9, c=np.log10(c[alive]), cmap="viridis", label="used codes")
        fig.colorbar(sc, ax=ax, label="log10 uses")
        if (~alive).any():
            ax.scatter(ep[~alive, 0], ep[~alive, 1], s=12, marker="x", color="C3", label=f"dead codes ({(~alive).sum()})")
    ax.set_xlabel("PC 1"), ax.set_ylabel("PC 2"), ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best", markerscale=2)
    fig.tight_layout()
    return _finish(fig)


def vq_training_figure(histories: dict, window: int = 10):
    """Training curves of several VQ-VAE runs on shared axes, one colour per run: the loss (eq. 25
    per image / C·H·W), the reconstruction MSE per pixel and the codebook perplexity per batch.

    ``histories``: name → History whose metrics hold "recon" and "perplexity" (``vqvae_loss``).
    Faint lines are the logged values, solid lines a moving average over ``window`` points."""
    panels = [("loss", "loss (eq. 25 per image / 784)", True), ("recon", "reconstruction MSE per pixel", True),
              ("perplexity", "perplexity per batch", False)]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for i, (name, h) in enumerate(histories.items()):
        for ax, (key, label, logy) in zip(axes, panels):
            y = np.asarray(h.loss if key == "loss" else h.metrics[key], float)
            ax.plot(h.steps, y, color=f"C{i}", alpha=0.2, lw=0.8)
            ax.plot(h.steps, h.smoothed(key, window), color=f"C{i}", lw=1.6, label=name)
            ax.set_ylabel(label, fontsize=9)
            if logy:
                ax.set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig)


# ----------------------------------------------------------------------------- lesson 06: latent diffusion
def log_snr_figure(log_snrs: dict, timesteps: dict | None = None, title: str | None = None):
    """log SNR(t) of several data scales on one axis, the SNR = 1 level, and where each crosses it.

    ``log_snrs``: label → (T,) tensor of log SNR over the 0-based timesteps; ``timesteps``: label → the
    sampler's timesteps, drawn as ticks on the matching curve."""
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    for i, (label, ls) in enumerate(log_snrs.items()):
        ls = ls.detach().double().cpu().numpy() if torch.is_tensor(ls) else np.asarray(ls, float)
        t = np.arange(len(ls))
        ax.plot(t, ls, color=f"C{i}", label=label)
        cross = int(np.argmax(ls < 0)) if (ls < 0).any() else None
        if cross is not None:
            ax.axvline(cross, color=f"C{i}", ls=":", lw=1)
            ax.annotate(f"SNR = 1 at t = {cross}", (cross, 0), textcoords="offset points",
                        xytext=(4, 6 + 12 * (i // 2)) if i % 2 else (4, -14 - 12 * (i // 2)), fontsize=8, color=f"C{i}")
        if timesteps and label in timesteps:
            ts = np.asarray(timesteps[label], int)
            ax.plot(ts, ls[ts], "|", color=f"C{i}", ms=9)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xlabel("timestep t (0-based; ticks: the sampler's steps)")
    ax.set_ylabel("log SNR(t) = log σ² ᾱ_t / (1 − ᾱ_t)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig)
