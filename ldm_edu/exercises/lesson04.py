"""Lesson 04 (DDPM) exercises: reference solutions and checkers."""
from __future__ import annotations


import torch

from . import guarded
from ..diffusion import NoiseSchedule, ddpm_step, q_sample

__all__ = ["solution_q_sample", "check_q_sample", "solution_ddpm_mean", "check_ddpm_mean",
           "solution_cfg", "check_cfg"]


# ----------------------------------------------------------------------------- 1. the closed form
def solution_q_sample(alpha_bars: torch.Tensor, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (seed eq. 4), t a 0-based index into alpha_bars."""
    ab = alpha_bars[t]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def check_q_sample(fn) -> bool:
    def check():
        s = NoiseSchedule(50, "linear")
        g = torch.Generator().manual_seed(0)
        x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
        for t in (0, 17, 49):
            got = torch.as_tensor(fn(s.alpha_bars, x0, t, eps))
            want = q_sample(s, x0, t, eps)
            if got.shape != want.shape:
                return False, f"return x_t with the shape of x0 {tuple(x0.shape)}"
            if torch.allclose(got, s.alphas[t].sqrt() * x0 + (1 - s.alphas[t]).sqrt() * eps, atol=1e-5) and t > 0:
                return False, "you used α_t (one step); the jump needs ᾱ_t, the product of all α up to t"
            if not torch.allclose(got, want, atol=1e-5):
                return False, "x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε — check the square roots"
        return True, ""
    return guarded("q_sample", check)


# ----------------------------------------------------------------------------- 2. Algorithm 2's mean
def solution_ddpm_mean(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t) · ε̂) / √α_t (slides, Algorithm 2)."""
    b, a, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    return (x_t - b / (1 - ab).sqrt() * eps) / a.sqrt()


def check_ddpm_mean(fn) -> bool:
    def check():
        s = NoiseSchedule(100, "cosine")
        g = torch.Generator().manual_seed(1)
        x, eps = torch.randn(2, 1, 5, 5, generator=g), torch.randn(2, 1, 5, 5, generator=g)
        for t in (1, 50, 99):
            got = torch.as_tensor(fn(s, x, eps, t))
            want = ddpm_step(s, x, eps, t, noise=torch.zeros_like(x))
            if not torch.allclose(got, want, atol=1e-4):
                return False, ("μ = (x_t − β_t / sqrt(1 − ᾱ_t) · ε̂) / sqrt(α_t): note β_t and α_t are "
                               "single-step values, only the square root under β uses ᾱ_t")
        return True, ""
    return guarded("ddpm_mean", check)


# ----------------------------------------------------------------------------- 3. classifier-free guidance
def solution_cfg(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """ε = ε_u + w (ε_c − ε_u) (Ho & Salimans 2022): w = 0 unconditional, 1 conditional, > 1 guided."""
    return eps_uncond + w * (eps_cond - eps_uncond)


def check_cfg(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(2)
        ec, eu = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
        for w in (0.0, 1.0, 3.5):
            got = torch.as_tensor(fn(ec, eu, w))
            if not torch.allclose(got, solution_cfg(ec, eu, w), atol=1e-6):
                if w == 0.0 and torch.allclose(got, ec):
                    return False, "with w = 0 guidance must give the *unconditional* ε_u"
                return False, "ε = ε_u + w·(ε_c − ε_u): w = 1 returns ε_c exactly"
        return True, ""
    return guarded("cfg", check)
