"""Lesson 02 (VAE) exercises: reference solutions and checkers.

In the notebook a student writes a function and calls ``check_<name>(their_function)``;
``show_solution(solution_<name>)`` prints the reference when they are stuck.
"""
from __future__ import annotations

import math

import torch

from . import guarded

__all__ = ["solution_kl_closed_form", "check_kl_closed_form", "solution_score_function",
           "check_score_function", "solution_gaussian_negative_elbo", "check_gaussian_negative_elbo",
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


# ----------------------------------------------------------------------------- 2. score-function gradient
def solution_score_function(f, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Single-sample score-function (REINFORCE) estimates of ∇_μ E_{z~N(μ, σ²)}[f(z)], one row per ε:
    f(z) ∇_μ log q(z) = f(z) (z − μ) / σ², with z = μ + σ ε. Only values of f are used, no gradient."""
    sigma = (0.5 * logvar).exp()
    z = mu + sigma * eps                                   # (n, d)
    return f(z)[:, None] * (z - mu) / sigma**2


def check_score_function(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(5)
        c = torch.tensor([1.0, -2.0, 0.5])
        f = lambda z: -(z - c).pow(2).sum(1)                  # ∇_μ E[f] = −2 (μ − c)
        mu, logvar = torch.tensor([0.3, 0.1, -0.4]), torch.tensor([0.8, -0.6, 1.2])   # σ ≠ 1 on purpose
        eps = torch.randn(64, 3, generator=g)
        got = fn(f, mu.clone(), logvar.clone(), eps.clone())
        want = solution_score_function(f, mu, logvar, eps)
        if not torch.is_tensor(got) or got.shape != want.shape:
            return False, (f"one estimate per sample: shape {tuple(want.shape)}, got "
                           f"{getattr(got, 'shape', type(got).__name__)} (do not average over the samples)")
        got = got.detach()
        if torch.allclose(got, want, rtol=1e-4, atol=1e-4):
            return True, ""
        sigma = (0.5 * logvar).exp()
        z = mu + sigma * eps
        fz = f(z)[:, None]
        if torch.allclose(got, -2 * (z - c), rtol=1e-4, atol=1e-4):
            return False, "that is the reparametrised estimator ∇f(z); the score function uses only f(z)·∇_μ log q(z)"
        for wrong, hint in ((fz * eps, "∇_μ log q(z) = (z − μ)/σ² = ε/σ: you forgot to divide by σ"),
                            (fz * (z - mu), "∇_μ log q(z) = (z − μ)/σ²: divide by σ² = exp(logvar)"),
                            (fz * eps / sigma**2, "(z − μ)/σ² with z − μ = σ ε is ε/σ, not ε/σ²")):
            if torch.allclose(got, wrong, rtol=1e-4, atol=1e-4):
                return False, hint
        return False, "estimate = f(z) · (z − μ) / σ² with z = μ + σ ε and σ = exp(½ logvar)"
    return guarded("score_function", check)


# ----------------------------------------------------------------------------- 3. −ELBO with a Gaussian decoder
def solution_gaussian_negative_elbo(x: torch.Tensor, x_mean: torch.Tensor, mu: torch.Tensor,
                                    logvar: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-image −ELBO with a Gaussian decoder N(x̂, σ² I) (eq. 14–15, 19), one sample of z:
    ‖x − x̂‖² / 2σ² + (dim x / 2) log 2πσ² + KL, dim x = number of pixels."""
    d = x[0].numel()
    recon = (x - x_mean).pow(2).flatten(1).sum(1) / (2 * sigma**2) + 0.5 * d * math.log(2 * math.pi * sigma**2)
    return recon + 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def check_gaussian_negative_elbo(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(6)
        x, x_mean = torch.rand(3, 1, 28, 28, generator=g), torch.rand(3, 1, 28, 28, generator=g)
        mu, logvar = torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g) * 0.3
        sigma = 0.3
        got = torch.as_tensor(fn(x, x_mean, mu, logvar, sigma))
        want = solution_gaussian_negative_elbo(x, x_mean, mu, logvar, sigma)
        if got.shape != want.shape:
            return False, f"one number per image, shape {tuple(want.shape)}, got {tuple(got.shape)}"
        if torch.allclose(got, want, rtol=1e-4, atol=1e-3):
            return True, ""
        sq = (x - x_mean).pow(2).flatten(1).sum(1)
        const = 0.5 * 784 * math.log(2 * math.pi * sigma**2)
        kl = want - sq / (2 * sigma**2) - const
        for wrong, hint in ((sq / (2 * sigma**2) + kl, "add the normalising constant (dim x / 2) log 2πσ² (dim x = 784): "
                             "without it the number is not a −log density in nats"),
                            (sq / (2 * sigma**2) + const, "you have the reconstruction term only: add the KL (eq. 19)"),
                            (sq / (2 * sigma) + const + kl, "divide the squared error by 2σ², not 2σ"),
                            (sq / 784 / (2 * sigma**2) + const + kl, "sum the squared error over the pixels, do not average")):
            if torch.allclose(got, wrong, rtol=1e-4, atol=1e-3):
                return False, hint
        return False, "−ELBO = ‖x − x̂‖²/2σ² + (dim x / 2)·log(2πσ²) + ½ Σ (μ² + exp(logvar) − 1 − logvar)"
    return guarded("gaussian_negative_elbo", check)


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
