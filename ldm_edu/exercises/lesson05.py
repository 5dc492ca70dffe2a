"""Lesson 05 (DDIM) exercises: reference solutions and checkers."""
from __future__ import annotations

import math

import torch

from . import guarded
from ..diffusion import NoiseSchedule, ddim_sigma, ddim_step, slerp

__all__ = ["solution_ddim_update", "check_ddim_update", "solution_sigma_eta", "check_sigma_eta",
           "solution_slerp", "check_slerp"]


# ----------------------------------------------------------------------------- 1. the η = 0 update
def solution_ddim_update(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_prev: float) -> torch.Tensor:
    """Deterministic DDIM: x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, then x_prev = √ᾱ_prev x̂_0 + √(1−ᾱ_prev) ε̂."""
    x0 = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps


def check_ddim_update(fn) -> bool:
    def check():
        s = NoiseSchedule(1000, "linear")
        g = torch.Generator().manual_seed(0)
        x, eps = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
        for t, tp in ((999, 979), (500, 100), (20, -1)):
            got = torch.as_tensor(fn(x, eps, s.ab(t), s.ab(tp)))
            if not torch.allclose(got, ddim_step(s, x, eps, t, tp, eta=0.0), atol=1e-4):
                return False, ("first predict x̂_0 from x_t and ε̂, then re-noise it to ᾱ_prev with the *same* ε̂ "
                               "(no fresh noise when η = 0); at the last step ᾱ_prev = 1")
        return True, ""
    return guarded("ddim_update", check)


# ----------------------------------------------------------------------------- 2. σ_t(η)
def solution_sigma_eta(ab_t: float, ab_prev: float, eta: float) -> float:
    """σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (Song et al. 2021, eq. 16)."""
    return eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)


def check_sigma_eta(fn) -> bool:
    def check():
        s = NoiseSchedule(1000, "cosine")
        for t, tp, eta in ((999, 949, 1.0), (400, 399, 1.0), (400, 200, 0.5), (10, 5, 0.0)):
            got = float(fn(s.ab(t), s.ab(tp), eta))
            want = ddim_sigma(s, t, tp, eta)
            if not math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-7):
                return False, ("σ = η · sqrt((1−ᾱ_prev)/(1−ᾱ_t)) · sqrt(1 − ᾱ_t/ᾱ_prev); with η = 1 and "
                               "t_prev = t − 1 it equals sqrt(β̃_t)")
        return True, ""
    return guarded("sigma_eta", check)


# ----------------------------------------------------------------------------- 3. slerp
def solution_slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """sin((1−w)θ)/sin θ · a + sin(wθ)/sin θ · b, θ the angle between a and b."""
    theta = torch.acos((a.flatten() @ b.flatten() / (a.norm() * b.norm())).clamp(-1, 1))
    return (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)


def check_slerp(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(3)
        a, b = torch.randn(1, 1, 8, 8, generator=g), torch.randn(1, 1, 8, 8, generator=g)
        for w in (0.0, 0.3, 1.0):
            got = torch.as_tensor(fn(a, b, w))
            if not torch.allclose(got, slerp(a, b, w), atol=1e-4):
                if torch.allclose(got, (1 - w) * a + w * b, atol=1e-4) and 0 < w < 1:
                    return False, "that is linear interpolation: it shrinks the norm; use the angle θ between a and b"
                return False, "slerp(a, b, w) = [sin((1−w)θ) a + sin(wθ) b] / sin θ, θ = arccos(a·b / |a||b|)"
        return True, ""
    return guarded("slerp", check)
