"""Lesson 02 (VAE) exercises: reference solutions and checkers.

In the notebook a student writes a function and calls ``check_<name>(their_function)``;
``show_solution(solution_<name>)`` prints the reference when they are stuck.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import guarded

__all__ = ["solution_kl_closed_form", "check_kl_closed_form", "solution_reparameterize",
           "check_reparameterize", "solution_negative_elbo", "check_negative_elbo",
           "solution_iw_bound", "check_iw_bound"]


# ----------------------------------------------------------------------------- 1. KL, eq. 19
def solution_kl_closed_form(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²), per sample: (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def check_kl_closed_form(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(4)
        mu, logvar = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
        got = torch.as_tensor(fn(mu, logvar))
        want = solution_kl_closed_form(mu, logvar)
        if got.shape != want.shape:
            return False, f"one KL per sample: shape {tuple(want.shape)}, got {tuple(got.shape)} (sum over dim 1)"
        if torch.allclose(got, 2 * want, rtol=1e-4):
            return False, "off by a factor 2: the formula has ½ in front"
        sigma_as_logvar = 0.5 * (mu.pow(2) + logvar.pow(2) - 1 - 2 * logvar.abs().clamp_min(1e-9).log()).sum(1)
        if torch.allclose(got, sigma_as_logvar, rtol=1e-4):
            return False, "logvar is log σ², so σ² = exp(logvar), not logvar²"
        ok = torch.allclose(got, want, rtol=1e-4, atol=1e-5)
        return ok, "eq. 19: ½ Σ (μ² + exp(logvar) − 1 − logvar); check against torch.distributions.kl_divergence"
    return guarded("kl_closed_form", check)


# ----------------------------------------------------------------------------- 2. reparametrisation
def solution_reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = μ + σ ⊙ ε with σ = exp(½ logvar): z is a differentiable function of μ and logvar."""
    return mu + (0.5 * logvar).exp() * eps


def check_reparameterize(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(5)
        mu = torch.randn(4, 2, generator=g).requires_grad_(True)
        logvar = torch.randn(4, 2, generator=g).requires_grad_(True)
        eps = torch.randn(4, 2, generator=g)
        z = fn(mu, logvar, eps)
        if not torch.is_tensor(z) or z.shape != mu.shape:
            return False, f"return a tensor z with the shape of mu {tuple(mu.shape)}"
        want = solution_reparameterize(mu, logvar, eps)
        if torch.allclose(z, mu + logvar.exp() * eps, atol=1e-5):
            return False, "logvar is log σ², so σ = exp(½ logvar), not exp(logvar)"
        if torch.allclose(z, mu + logvar * eps, atol=1e-5):
            return False, "logvar is log σ²: σ = exp(½ logvar)"
        if not torch.allclose(z, want, atol=1e-5):
            return False, "use the ε you are given: z = mu + exp(0.5 * logvar) * eps"
        if not z.requires_grad:
            return False, "z does not depend on mu/logvar in the autograd graph: no detach, no torch.no_grad"
        z.sum().backward()
        ok = (mu.grad is not None and logvar.grad is not None
              and torch.allclose(mu.grad, torch.ones_like(mu))
              and torch.allclose(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps, atol=1e-5))
        return ok, "gradients must flow to both mu and logvar (∂z/∂μ = 1, ∂z/∂logvar = ½ σ ε)"
    return guarded("reparameterize", check)


# ----------------------------------------------------------------------------- 3. −ELBO in nats
def solution_negative_elbo(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor,
                           logvar: torch.Tensor) -> torch.Tensor:
    """Per-image −ELBO with a Bernoulli decoder (eq. 15): BCE summed over pixels + KL (eq. 19)."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return recon + kl


def check_negative_elbo(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(6)
        x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3), generator=g)
        logits = torch.randn(3, 1, 28, 28, generator=g)
        mu, logvar = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g) * 0.3
        got = torch.as_tensor(fn(x, logits, mu, logvar))
        want = solution_negative_elbo(x, logits, mu, logvar)
        if got.shape != want.shape:
            return False, f"one number per image, shape {tuple(want.shape)}, got {tuple(got.shape)}"
        recon = want - solution_negative_elbo(torch.zeros_like(x), torch.full_like(logits, -1e4), mu, logvar)
        if torch.allclose(got, recon, rtol=1e-4):
            return False, "you have the reconstruction term only: add the KL (eq. 19)"
        if torch.allclose(got * 784, want, rtol=1e-3) or torch.allclose(got, want / 784, rtol=1e-2):
            return False, "sum the cross-entropy over pixels (nats per image), do not average"
        ok = torch.allclose(got, want, rtol=1e-4, atol=1e-3)
        return ok, ("−ELBO = Σ_pixels BCE(logits, x) + KL: "
                    "F.binary_cross_entropy_with_logits(logits, x, reduction='none').flatten(1).sum(1) + KL")
    return guarded("negative_elbo", check)


# ----------------------------------------------------------------------------- 4. IW bound
def solution_iw_bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/k) Σ_i w_i from log-weights log w_i = log p(x, z_i) − log q(z_i|x), shape (k, B) → (B,).

    logsumexp keeps it finite: the weights themselves are e^(−100) or smaller on MNIST."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def check_iw_bound(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(7)
        log_w = torch.randn(50, 4, generator=g) * 3 - 150.0     # like MNIST: log p(x, z) ≈ −100…−200 nats
        got = torch.as_tensor(fn(log_w))
        want = solution_iw_bound(log_w)
        if got.shape != want.shape:
            return False, f"average over the k samples (dim 0): shape {tuple(want.shape)}, got {tuple(got.shape)}"
        if not torch.isfinite(got).all():
            return False, "exp(log w) underflows to 0 at −150 nats: use torch.logsumexp(log_w, 0) − log k"
        if torch.allclose(got, log_w.mean(0), rtol=1e-4):
            return False, "that is the ELBO (mean of log w); the bound is the log of the mean of w"
        if torch.allclose(got, torch.logsumexp(log_w, 0), rtol=1e-4):
            return False, "divide the sum by k: subtract math.log(k)"
        ok = torch.allclose(got, want, rtol=1e-4)
        return ok, "log (1/k) Σ exp(log w_i) = logsumexp(log w, dim=0) − log k"
    return guarded("iw_bound", check)
