"""Quality measures used across lessons.

PSNR here; the MNIST classifier, FID-MNIST and IS-MNIST are added with the diffusion lessons.
"""
from __future__ import annotations

import torch


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: 10 log10(range² / MSE). Inputs in [0, range]."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    mse = (x - x_hat).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)
