"""Losses of the course, each with the seed equation it implements.

All per-sample: a tensor of shape (B,) in nats, summed over pixels / latent dimensions, so the
numbers compare with the literature (negative ELBO on MNIST ≈ 85–100 nats).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) per sample, summed over latent dims (seed paper eq. 19).

    eq. 19: D_KL = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)
    """
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


def gaussian_nll(x: torch.Tensor, x_hat: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """−log N(x | x̂, σ² I) per sample (seed paper eq. 14): ‖x − x̂‖² / 2σ² + (d/2) log 2πσ².

    With σ fixed the constant does not change the gradient: a Gaussian decoder *is* MSE.
    """
    d = x[0].numel()
    sq = (x - x_hat).pow(2).flatten(1).sum(1)
    return sq / (2 * sigma**2) + 0.5 * d * math.log(2 * math.pi * sigma**2)


def bernoulli_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """−log Bernoulli(x | sigmoid(logits)) per sample = binary cross-entropy summed over pixels."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def negative_elbo(recon_nll: torch.Tensor, kl: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """−ELBO = E_q[−log p(x|z)] + β · KL(q(z|x) ‖ p(z))   (seed paper eq. 15; β = 1 is the true bound)."""
    return recon_nll + beta * kl


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z | μ, diag e^logvar), summed over the last dimensions after the batch ones."""
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)
