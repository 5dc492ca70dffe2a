"""Lesson 05 (DDIM) exercises: reference solutions and checkers.

Each checker builds its own test cases, compares the answer with the reference solution and, when
it differs, with the plausible mistakes below, so the hint can name the one that was made."""
from __future__ import annotations

import math

import torch

from . import guarded
from ..diffusion import NoiseSchedule

__all__ = ["solution_ddim_update", "check_ddim_update", "solution_sigma_eta", "check_sigma_eta",
           "solution_slerp", "check_slerp"]


def _abar(s: NoiseSchedule, t: int) -> float:
    return 1.0 if t < 0 else float(s.alpha_bars[t])


# ----------------------------------------------------------------------------- 1. the η = 0 update
def solution_ddim_update(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float, ab_prev: float) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021 eq. 12, σ = 0): x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, then
    x_prev = √ᾱ_prev x̂_0 + √(1−ᾱ_prev) ε̂."""
    x0 = (x_t - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
    return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps


def check_ddim_update(fn) -> bool:
    """``fn(x_t, eps, ab_t, ab_prev)`` → x_prev, on jumps (999 → 979), (500 → 100) and (20 → data)."""
    def check():
        s = NoiseSchedule(1000, "linear")
        g = torch.Generator().manual_seed(0)
        x, eps = torch.randn(2, 1, 4, 4, generator=g), torch.randn(2, 1, 4, 4, generator=g)
        for t, tp in ((500, 100), (999, 979), (20, -1)):
            ab, abp = _abar(s, t), _abar(s, tp)
            got = torch.as_tensor(fn(x, eps, ab, abp)).to(x)
            want = solution_ddim_update(x, eps, ab, abp)
            if got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-4):
                continue
            x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
            mistakes = {
                "old_noise": math.sqrt(abp) * x0 + math.sqrt(1 - ab) * eps,
                "no_sqrt": abp * x0 + (1 - abp) * eps,
                "x0_only": x0,
                "rescale": math.sqrt(abp / ab) * x,
            }
            hints = {
                "old_noise": "re-noise to the *new* level: the ε̂ term is √(1 − ᾱ_prev), not √(1 − ᾱ_t)",
                "no_sqrt": "the coefficients are √ᾱ_prev and √(1 − ᾱ_prev), as in the closed form",
                "x0_only": "that is x̂_0; DDIM then re-noises it to ᾱ_prev with the same ε̂ (except at the data, ᾱ_prev = 1)",
                "rescale": "rescaling x_t is not enough: split it into x̂_0 and ε̂ first, then recombine at ᾱ_prev",
            }
            for name, value in mistakes.items():
                if value.shape == got.shape and torch.allclose(got, value, atol=1e-4, rtol=1e-4):
                    return False, hints[name]
            return False, ("first predict x̂_0 from x_t and ε̂, then re-noise it to ᾱ_prev with the *same* ε̂ "
                           "(no fresh noise when η = 0); at the last step ᾱ_prev = 1")
        return True, ""
    return guarded("ddim_update", check)


# ----------------------------------------------------------------------------- 2. σ_t(η)
def solution_sigma_eta(ab_t: float, ab_prev: float, eta: float) -> float:
    """σ_t(η) = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (Song et al. 2021, eq. 16)."""
    return eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)


def check_sigma_eta(fn) -> bool:
    """``fn(ab_t, ab_prev, eta)`` → σ (a float), on four (t, t_prev, η) of a cosine schedule."""
    def check():
        s = NoiseSchedule(1000, "cosine")
        for t, tp, eta in ((400, 200, 0.5), (999, 949, 1.0), (400, 399, 1.0), (10, 5, 0.0)):
            ab, abp = _abar(s, t), _abar(s, tp)
            got = float(fn(ab, abp, eta))
            want = solution_sigma_eta(ab, abp, eta)
            if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-7):
                continue
            mistakes = {
                "variance": want ** 2,
                "no_eta": solution_sigma_eta(ab, abp, 1.0),
                "swapped": math.sqrt(max(0.0, (1 - ab) / (1 - abp) * (1 - ab / abp))) * eta,
            }
            hints = {
                "variance": "that is σ²; return σ itself (the standard deviation that multiplies z)",
                "no_eta": "σ scales with η: η = 0 must give 0 (deterministic DDIM)",
                "swapped": "the first factor is (1 − ᾱ_prev)/(1 − ᾱ_t): the *earlier* time's noise over the current one",
            }
            for name, value in mistakes.items():
                if math.isclose(got, value, rel_tol=1e-4, abs_tol=1e-9):
                    return False, hints[name]
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
    """``fn(a, b, w)`` → the spherical interpolation, at w = 0.3, 0 and 1 between two noise tensors."""
    def check():
        g = torch.Generator().manual_seed(3)
        a, b = torch.randn(1, 1, 8, 8, generator=g), torch.randn(1, 1, 8, 8, generator=g)
        for w in (0.3, 0.0, 1.0):
            got = torch.as_tensor(fn(a, b, w)).to(a)
            if got.shape == a.shape and torch.allclose(got, solution_slerp(a, b, w), atol=1e-4):
                continue
            if torch.allclose(got, (1 - w) * a + w * b, atol=1e-4):
                return False, "that is linear interpolation: it shrinks the norm; use the angle θ between a and b"
            if torch.allclose(got, solution_slerp(a, b, 1 - w), atol=1e-4):
                return False, "w = 0 must give a and w = 1 must give b: the weights are swapped"
            lerp = (1 - w) * a + w * b
            nlerp = lerp / lerp.norm() * ((1 - w) * a.norm() + w * b.norm())
            if torch.allclose(got, nlerp, atol=1e-4):
                return False, ("rescaling the straight line keeps the norm but not the angle: the point must make "
                               "the angle wθ with a, so interpolate the angle itself")
            return False, ("interpolate the *angle*: the weights of a and b are sines of fractions of θ (the angle "
                           "between a and b), divided by sin θ")
        return True, ""
    return guarded("slerp", check)
