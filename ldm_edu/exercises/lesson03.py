"""Lesson 03 (VQ-VAE) exercises: reference solutions and checkers.

Each ``check_*`` takes the student's function, runs it on random inputs against the reference
solution below, prints ✅/❌ with a hint and returns True/False.
"""
from __future__ import annotations

import math

import torch

from . import guarded


# ----------------------------------------------------------------------------- reference solutions
def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Indices (N,) of the nearest codes for rows z (N, D) of codebook (K, D) (eq. 20),
    via ‖z‖² − 2 z·e + ‖e‖² (no (N, K, D) temporary)."""
    d = z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.pow(2).sum(1)[None]
    return d.argmin(1)


def straight_through(z_e: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Forward value e, gradient copied to z_e unchanged; nothing flows into e."""
    return z_e + (e - z_e).detach()


def vq_loss(z_e: torch.Tensor, e: torch.Tensor, beta: float = 0.25) -> torch.Tensor:
    """Codebook loss ‖sg[z_e] − e‖² (eq. 23) + β · commitment ‖z_e − sg[e]‖² (eq. 24), as means."""
    return (z_e.detach() - e).pow(2).mean() + beta * (z_e - e.detach()).pow(2).mean()


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the usage distribution p_k = n_k / Σ n (0 · log 0 = 0)."""
    p = counts.float() / counts.float().sum()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


# ----------------------------------------------------------------------------- checkers
def _data(seed: int = 0, n: int = 200, k: int = 17, d: int = 5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)


def check_nearest_code(fn) -> bool:
    def check():
        for seed in range(3):
            z, e = _data(seed)
            got = fn(z.clone(), e.clone())
            if not torch.is_tensor(got) or got.shape != (len(z),):
                return False, f"return a tensor of shape (N,) = ({len(z)},) with one index per row, got " \
                              f"{getattr(got, 'shape', type(got).__name__)}"
            if not torch.equal(got.long(), nearest_code(z, e)):
                wrong = (got.long() != nearest_code(z, e)).float().mean().item()
                return False, (f"{wrong:.0%} of the indices differ. Use argmin (not argmax) over the codes of "
                               "the squared distance ‖z‖² − 2 z·eᵀ + ‖e‖².")
        return True, ""
    return guarded("nearest code (eq. 20)", check)


def check_straight_through(fn) -> bool:
    def check():
        z, e = _data(1, n=6, k=6)
        z.requires_grad_(True)
        e.requires_grad_(True)
        out = fn(z, e)
        if not torch.allclose(out, e, atol=1e-6):
            return False, "the forward value must be the code e (the decoder sees the quantised vector)."
        g = torch.randn_like(out)
        (out * g).sum().backward()
        if z.grad is None or not torch.allclose(z.grad, g, atol=1e-6):
            return False, "the gradient w.r.t. z_e must equal the upstream gradient: z_e + sg[e − z_e]."
        if e.grad is not None and e.grad.abs().max() > 0:
            return False, "no gradient may reach e through the straight-through path (detach it)."
        return True, ""
    return guarded("straight-through estimator", check)


def check_vq_loss(fn) -> bool:
    def check():
        z0, e0 = _data(2, n=8, k=8)
        beta = 0.3
        z, e = z0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
        loss = fn(z, e, beta)
        ref = vq_loss(z0, e0, beta)
        if not torch.is_tensor(loss) or loss.dim() != 0:
            return False, "return one scalar (the mean over all elements)."
        if not math.isclose(loss.item(), ref.item(), rel_tol=1e-5):
            return False, f"value {loss.item():.5f}, expected {ref.item():.5f}: codebook + β · commitment, both means."
        loss.backward()
        want_e = 2 * (e0 - z0) / e0.numel()                 # only the codebook term moves e
        want_z = beta * 2 * (z0 - e0) / z0.numel()          # only β · commitment moves z_e
        if e.grad is None or not torch.allclose(e.grad, want_e, atol=1e-6):
            return False, "the codes get a gradient from the codebook term only: detach z_e there (sg[z_e])."
        if z.grad is None or not torch.allclose(z.grad, want_z, atol=1e-6):
            return False, "z_e gets a gradient from β · commitment only: detach e there (sg[e])."
        return True, ""
    return guarded("VQ loss with stop-gradients (eq. 23-25)", check)


def check_perplexity(fn) -> bool:
    def check():
        cases = [(torch.tensor([3.0, 3, 3, 3]), 4.0), (torch.tensor([0.0, 7, 0, 0]), 1.0),
                 (torch.tensor([2.0, 2, 0, 0, 0]), 2.0), (torch.tensor([6.0, 2, 2, 0]), None)]
        for counts, want in cases:
            got = float(fn(counts.clone()))
            want = float(perplexity(counts)) if want is None else want
            if not math.isfinite(got):
                return False, f"perplexity({counts.tolist()}) is {got}: unused codes have p = 0 and 0·log 0 = 0."
            if not math.isclose(got, want, rel_tol=1e-4):
                return False, f"perplexity({counts.tolist()}) = {got:.4f}, expected {want:.4f}: exp(−Σ p log p)."
        return True, ""
    return guarded("codebook perplexity", check)


__all__ = ["nearest_code", "straight_through", "vq_loss", "perplexity", "check_nearest_code",
           "check_straight_through", "check_vq_loss", "check_perplexity"]
