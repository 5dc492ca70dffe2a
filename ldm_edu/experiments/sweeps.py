"""Sweeps precomputed for the plots and sliders of lessons 01–02: the AE at several latent sizes,
the 2-D VAE at several β."""
from __future__ import annotations

import torch

from ..data import TensorBatches
from ..train import fit, seed_everything
from ..analysis import kl_per_dim
from ..autoencoders import VAE, Autoencoder, ae_loss, decode_all, encode_all, vae_loss


def train_ae_sweep(x_train: torch.Tensor, dims, steps: int, hidden: int = 512, batch_size: int = 128,
                   lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Train one Autoencoder per latent size in ``dims`` (same data order, same steps).

    Returns {d: (model, history)}; with ``reconstruction_error`` this gives the AE curve of the
    AE-vs-PCA plot."""

    out = {}
    for d in dims:
        seed_everything(seed)
        model = Autoencoder(latent_dim=int(d), hidden=hidden).to(x_train.device)
        hist = fit(model, ae_loss, TensorBatches(x_train, batch_size=batch_size, seed=seed), steps, lr=lr,
                   cosine_decay=True, desc=f"AE d={d}", progress=progress, live_plot=False)
        out[int(d)] = (model.eval(), hist)
    return out


@torch.no_grad()
def vae_snapshot(model: VAE, x_eval: torch.Tensor, y_eval: torch.Tensor, x_eval_bin: torch.Tensor,
                 z_prior: torch.Tensor, n_show: int = 8, batch_size: int = 1000, seed: int = 0) -> dict:
    """Everything a slider needs about one trained VAE, as small CPU tensors: codes μ of the
    binarised ``x_eval_bin`` (the pixels the model is trained and evaluated on; ``x_eval`` is only
    kept for display), decoded prior samples of ``z_prior``, reconstructions, the −ELBO parts
    (β = 1, eq. 11, 15) as means and ``neg_elbo_per_image`` (for paired standard errors between
    models: the same images and, with the same ``seed``, the same ε), and the KL of each latent
    dimension. The means equal ``analysis.evaluate_vae(model, x_eval_bin, batch_size, seed)``."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    parts = {"neg_elbo": [], "recon": [], "kl": []}
    for i in range(0, len(x_eval_bin), batch_size):          # the loop of evaluate_vae, kept per image
        out = model(x_eval_bin[i:i + batch_size], generator=gen)
        for k in parts:
            parts[k].append(out[k])
    per_image = {k: torch.cat(v) for k, v in parts.items()}
    return {"mu": encode_all(model, x_eval_bin).cpu(), "labels": y_eval.cpu(),
            "samples": model.decode(z_prior.to(x_eval_bin.device)).cpu(),
            "originals": x_eval[:n_show].cpu(), "inputs": x_eval_bin[:n_show].cpu(),
            "recons": decode_all(model, encode_all(model, x_eval_bin[:n_show])).cpu(),
            "kl_per_dim": kl_per_dim(model, x_eval_bin).cpu(),
            "neg_elbo_per_image": per_image["neg_elbo"].cpu(), **{k: float(v.mean()) for k, v in per_image.items()}}


def train_beta_sweep(x_train: torch.Tensor, x_eval: torch.Tensor, y_eval: torch.Tensor, betas, steps: int,
                     latent_dim: int = 2, hidden: int = 512, batch_size: int = 128, lr: float = 1e-3,
                     n_prior: int = 36, seed: int = 0, progress: bool = True,
                     x_eval_bin: torch.Tensor | None = None) -> dict:
    """Train one Bernoulli VAE per KL weight β (the β-VAE objective recon + β·KL, Higgins et al.
    2017) and keep a ``vae_snapshot`` of each: {β: snapshot}. The β slider indexes this dict, so
    moving it recomputes nothing. The −ELBO in the snapshots always uses β = 1 (the true bound).

    ``x_eval_bin``: the binarised evaluation images (pass the lesson's own, so every −ELBO of the
    lesson is measured on the same pixels); ``None`` binarises ``x_eval`` here with seed + 1."""

    gen = torch.Generator().manual_seed(seed + 1)
    z_prior = torch.randn(n_prior, latent_dim, generator=gen)
    if x_eval_bin is None:
        x_eval_bin = torch.bernoulli(x_eval.cpu(), generator=gen).to(x_eval.device)
    elif x_eval_bin.shape != x_eval.shape:
        raise ValueError(f"x_eval_bin must have the shape of x_eval {tuple(x_eval.shape)}, got {tuple(x_eval_bin.shape)}")
    out = {}
    for beta in betas:
        seed_everything(seed)
        model = VAE(latent_dim=latent_dim, hidden=hidden).to(x_train.device)
        hist = fit(model, vae_loss(beta=float(beta)), TensorBatches(x_train, batch_size=batch_size, seed=seed),
                   steps, lr=lr, cosine_decay=True, desc=f"VAE β={beta:g}", progress=progress, live_plot=False)
        snap = vae_snapshot(model, x_eval, y_eval, x_eval_bin, z_prior)
        snap["history"] = hist
        out[float(beta)] = snap
    return out
