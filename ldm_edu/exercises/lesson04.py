"""Lesson 04 (DDPM) exercises: reference solutions and checkers.

Each checker builds its own test cases, compares the answer with the reference solution and, when
it differs, with the plausible mistakes below, so the hint can name the one that was made."""
from __future__ import annotations

import torch

from . import guarded
from ..diffusion import NoiseSchedule

__all__ = ["solution_q_sample", "check_q_sample", "solution_ddpm_mean", "check_ddpm_mean",
           "solution_cfg", "check_cfg"]


def _case(schedule: NoiseSchedule, seed: int, shape: tuple):
    """A checker's test case: the schedule and two seeded standard-normal tensors (x, ε) of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    return schedule, torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _diagnose(got: torch.Tensor, want: torch.Tensor, mistakes: dict, default: str, shape_hint: str,
              atol: float) -> str | None:
    """None when ``got`` equals ``want``; else the hint of the first named mistake ``got`` equals
    (``mistakes``: name → (the value that mistake gives, its hint)), else ``default``."""
    if got.shape != want.shape:
        return shape_hint
    if torch.allclose(got, want, atol=atol, rtol=1e-4):
        return None
    for value, hint in mistakes.values():
        if got.shape == value.shape and torch.allclose(got, value, atol=atol, rtol=1e-4):
            return hint
    return default


# ----------------------------------------------------------------------------- 1. the closed form
def solution_q_sample(alpha_bars: torch.Tensor, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (Ho et al. 2020 eq. 4; slides), t a 0-based index into alpha_bars."""
    ab = alpha_bars[t]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def check_q_sample(fn) -> bool:
    """``fn(alpha_bars, x0, t, noise)`` → x_t, checked at t = 0, 17, 49 of a 50-step linear schedule."""
    def check():
        s, x0, eps = _case(NoiseSchedule(50, "linear"), seed=0, shape=(3, 1, 4, 4))
        for t in (17, 49, 0):
            got = torch.as_tensor(fn(s.alpha_bars, x0, t, eps)).to(x0)
            a, ab = s.alphas[t], s.alpha_bars[t]
            ab_next, ab_before = s.alpha_bars[min(t + 1, s.T - 1)], s.alpha_bars[max(t - 1, 0)]
            if hint := _diagnose(got, solution_q_sample(s.alpha_bars, x0, t, eps), {
                "alpha": (a.sqrt() * x0 + (1 - a).sqrt() * eps,
                          "you used α_t (one step of the chain); the jump needs ᾱ_t = α_0·α_1·…·α_t"),
                "no_sqrt": (ab * x0 + (1 - ab) * eps,
                            "the coefficients are the square roots √ᾱ_t and √(1 − ᾱ_t): they scale standard deviations"),
                "swapped": ((1 - ab).sqrt() * x0 + ab.sqrt() * eps,
                            "x_0 gets √ᾱ_t (the signal that survives) and ε gets √(1 − ᾱ_t)"),
                "one_based": (ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps,
                              "alpha_bars is indexed 0-based: the papers' step t is alpha_bars[t − 1], and the "
                              "exercise's t is already the 0-based index — use alpha_bars[t]"),
                "minus_one": (ab_before.sqrt() * x0 + (1 - ab_before).sqrt() * eps,
                              "no shift needed: the exercise's t is the 0-based index itself, so ᾱ_t is alpha_bars[t] "
                              "(alpha_bars[t − 1] is one step less noise)"),
            }, default="x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε with ᾱ_t = alpha_bars[t]",
                shape_hint=f"return x_t with the shape of x0 {tuple(x0.shape)}", atol=1e-5):
                return False, hint
        return True, ""
    return guarded("q_sample", check)


# ----------------------------------------------------------------------------- 2. Algorithm 2's mean
def solution_ddpm_mean(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
    """μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t) · ε̂) / √α_t (Ho et al. 2020 eq. 11, Algorithm 2)."""
    b, a, ab = schedule.betas[t], schedule.alphas[t], schedule.alpha_bars[t]
    return (x_t - b / (1 - ab).sqrt() * eps) / a.sqrt()


def check_ddpm_mean(fn) -> bool:
    """``fn(schedule, x_t, eps, t)`` → the mean of one ancestral step, checked on a 100-step cosine schedule."""
    def check():
        s, x, eps = _case(NoiseSchedule(100, "cosine"), seed=1, shape=(2, 1, 5, 5))
        for t in (50, 1, 98):
            got = torch.as_tensor(fn(s, x, eps, t)).to(x)
            b, a, ab = s.betas[t], s.alphas[t], s.alpha_bars[t]
            if hint := _diagnose(got, solution_ddpm_mean(s, x, eps, t), {
                "abar_outside": ((x - b / (1 - ab).sqrt() * eps) / ab.sqrt(),
                                 "divide by √α_t (this step's α), not by √ᾱ_t"),
                "no_sqrt": ((x - b / (1 - ab) * eps) / a.sqrt(),
                            "ε̂ is weighted by β_t / √(1 − ᾱ_t) — a square root in the denominator"),
                "x0_hat": ((x - (1 - ab).sqrt() * eps) / ab.sqrt(),
                           "that is x̂_0 (the clean-image guess), not the mean of x_{t−1}; "
                           "the mean removes only β_t/√(1−ᾱ_t) of the noise and rescales by 1/√α_t"),
                "no_scale": (x - b / (1 - ab).sqrt() * eps,
                             "after removing the noise, rescale by 1/√α_t (the forward step shrank x by √α_t)"),
            }, default="μ = (x_t − β_t / sqrt(1 − ᾱ_t) · ε̂) / sqrt(α_t): β_t and α_t are single-step values, "
                       "only the square root under β_t uses ᾱ_t",
                shape_hint=f"return the mean with the shape of x_t {tuple(x.shape)}", atol=1e-4):
                return False, hint
        return True, ""
    return guarded("ddpm_mean", check)


# ----------------------------------------------------------------------------- 3. classifier-free guidance
def solution_cfg(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """ε = ε_u + w (ε_c − ε_u): w = 0 unconditional, 1 conditional, > 1 guided. Ho & Salimans (2022)
    write (1 + w′) ε_c − w′ ε_u: the same line with w′ = w − 1."""
    return eps_uncond + w * (eps_cond - eps_uncond)


def check_cfg(fn) -> bool:
    """``fn(eps_cond, eps_uncond, w)`` → guided ε, checked at w = 3.5, 0 and 1."""
    def check():
        g = torch.Generator().manual_seed(2)
        ec, eu = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
        for w in (3.5, 0.0, 1.0):
            got = torch.as_tensor(fn(ec, eu, w)).to(ec)
            if hint := _diagnose(got, solution_cfg(ec, eu, w), {
                "swapped": (ec + w * (eu - ec),
                            "start from the unconditional ε_u and move towards ε_c: ε_u + w·(ε_c − ε_u)"),
                "paper_w": ((1 + w) * ec - w * eu,
                            "that is Ho & Salimans' (1 + w′)ε_c − w′ε_u with w′ = w; the course's w is theirs "
                            "+ 1, so w = 1 must give ε_c exactly"),
                "scaled": (w * ec, "guidance extrapolates from ε_u towards ε_c; scaling ε_c alone changes its size"),
            }, default="ε = ε_u + w·(ε_c − ε_u): w = 0 returns ε_u, w = 1 returns ε_c",
                shape_hint=f"return ε with the shape of eps_cond {tuple(ec.shape)}", atol=1e-6):
                return False, hint
        return True, ""
    return guarded("cfg", check)
