"""Lesson 04 (DDPM) exercises: reference solutions and checkers.

Each checker builds its own test cases, compares the answer with the reference solution and, when
it differs, with the plausible mistakes below, so the hint can name the one that was made."""
from __future__ import annotations

import torch

from . import guarded
from ..diffusion import NoiseSchedule

__all__ = ["solution_q_sample", "check_q_sample", "solution_posterior_mean", "check_posterior_mean",
           "solution_cfg", "check_cfg", "solution_eps_gain", "check_eps_gain"]


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


# ----------------------------------------------------------------------------- 2. the strided posterior mean
def _abar_at(alpha_bars: torch.Tensor, t: int) -> torch.Tensor:
    """ᾱ at code index t; t = −1 is the clean image, ᾱ = 1 (NOT alpha_bars[-1], the last ᾱ)."""
    return torch.ones((), dtype=alpha_bars.dtype) if t < 0 else alpha_bars[t]


def solution_posterior_mean(alpha_bars: torch.Tensor, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int,
                            t_prev: int) -> torch.Tensor:
    """μ̃(x_t, x̂_0) for a strided jump t → t_prev (code indices, t_prev = −1: the clean image, ᾱ = 1):
    Ho et al. 2020 eq. 7 on the respaced chain, α = ᾱ_t/ᾱ_{t'}, β = 1 − α:

        μ̃ = √ᾱ_{t'} β/(1 − ᾱ_t) · x̂_0 + √α (1 − ᾱ_{t'})/(1 − ᾱ_t) · x_t.

    With x̂_0 clipped this is ``sampling.ddpm_step(..., t_prev=t_prev, clip_x0=c)``'s mean."""
    ab, ab_prev = alpha_bars[t], _abar_at(alpha_bars, t_prev)
    alpha = ab / ab_prev
    return ab_prev.sqrt() * (1 - alpha) / (1 - ab) * x0_hat + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t


def check_posterior_mean(fn) -> bool:
    """``fn(alpha_bars, x_t, x0_hat, t, t_prev)`` → μ̃, checked on jumps of a 100-step cosine schedule:
    999-style first jump 99 → 94, a middle one 60 → 55, and the last one 4 → −1 (onto the data)."""
    def check():
        s, x, x0 = _case(NoiseSchedule(100, "cosine"), seed=1, shape=(2, 1, 5, 5))
        x0 = x0.clamp(-1, 1)                        # a clipped x̂_0, as the sampler passes it
        ab_all = s.alpha_bars
        for t, tp in ((60, 55), (99, 94), (4, -1)):
            got = torch.as_tensor(fn(ab_all, x, x0, t, tp)).to(x)
            ab, ab_prev = ab_all[t], _abar_at(ab_all, tp)
            alpha = ab / ab_prev
            b1 = s.betas[t]                          # one step's β instead of the jump's 1 − ᾱ_t/ᾱ_t′
            mistakes = {
                "one_step_beta": (ab_prev.sqrt() * b1 / (1 - ab) * x0 + (1 - b1).sqrt() * (1 - ab_prev) / (1 - ab) * x,
                                  "a strided jump t → t′ is one step of the respaced chain: its α is ᾱ_t/ᾱ_t′ and "
                                  "β = 1 − ᾱ_t/ᾱ_t′, not the single-step β_t of schedule.betas"),
                "no_sqrt": (ab_prev * (1 - alpha) / (1 - ab) * x0 + alpha * (1 - ab_prev) / (1 - ab) * x,
                            "the coefficients carry square roots: √ᾱ_t′ in front of x̂_0 and √α in front of x_t"),
                "swapped": (alpha.sqrt() * (1 - alpha) / (1 - ab) * x0 + ab_prev.sqrt() * (1 - ab_prev) / (1 - ab) * x,
                            "√ᾱ_t′ goes with x̂_0 (the clean signal at the new level), √α with x_t (one step of shrinking)"),
                "x0_hat": (x0, "that is x̂_0 itself; the mean mixes x̂_0 and x_t (only the last jump, t′ = −1, "
                               "lands on x̂_0)"),
            }
            if tp < 0:                               # alpha_bars[-1] is the LAST ᾱ, not the clean image's 1
                wrong = ab_all[-1]
                a_w = ab / wrong
                mistakes = {"python_minus_one": (wrong.sqrt() * (1 - a_w) / (1 - ab) * x0
                                                 + a_w.sqrt() * (1 - wrong) / (1 - ab) * x,
                                                 "t′ = −1 is the clean image with ᾱ = 1; alpha_bars[-1] is Python's "
                                                 "LAST entry (ᾱ_T ≈ 0)"), **mistakes}
            if hint := _diagnose(got, solution_posterior_mean(ab_all, x, x0, t, tp), mistakes,
                                 default="μ̃ = √ᾱ_t′ (1−α)/(1−ᾱ_t) · x̂_0 + √α (1−ᾱ_t′)/(1−ᾱ_t) · x_t with α = ᾱ_t/ᾱ_t′ "
                                         "and ᾱ_t′ = 1 when t′ = −1",
                                 shape_hint=f"return the mean with the shape of x_t {tuple(x.shape)}", atol=1e-5):
                return False, hint
        return True, ""
    return guarded("posterior_mean", check)


# ----------------------------------------------------------------------------- 4. the ε̂-error gain of a jump
def solution_eps_gain(alpha_bars: torch.Tensor, t: int, t_prev: int) -> float:
    """How much an error of ε̂ moves x_{t'} in one unclipped step t → t_prev (code indices): the
    mean μ = (x_t − β/√(1−ᾱ_t) ε̂)/√α (Ho et al. eq. 11, α = ᾱ_t/ᾱ_{t'}, β = 1 − α) has
    ∂μ/∂ε̂ = −β/(√α √(1−ᾱ_t)); the gain is its size, ≈ 1/√α when α ≪ 1."""
    ab, ab_prev = float(alpha_bars[t]), float(_abar_at(alpha_bars, t_prev))
    alpha = ab / ab_prev
    return (1 - alpha) / (alpha ** 0.5 * (1 - ab) ** 0.5)


def check_eps_gain(fn) -> bool:
    """``fn(alpha_bars, t, t_prev)`` → the gain (a number), checked on the cosine T = 1000 schedule: one
    full step from t = T, the first jump of 20 strided steps, and a jump in the middle."""
    def check():
        s = NoiseSchedule(1000, "cosine")
        ab_all = s.alpha_bars
        ts = s.timesteps(20).tolist()
        for t, tp in ((999, 998), (ts[0], ts[1]), (500, 450)):
            got = float(fn(ab_all, t, tp))
            want = solution_eps_gain(ab_all, t, tp)
            ab, ab_prev = float(ab_all[t]), float(ab_all[tp])
            alpha = ab / ab_prev
            wrong = {"x0_gain": (ab ** -0.5, "1/√ᾱ_t is how much x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t amplifies ε̂; "
                                            "the step's mean divides by √α = √(ᾱ_t/ᾱ_t′) instead"),
                     "one_step": (float(s.betas[t]) / (float(s.alphas[t]) ** 0.5 * (1 - ab) ** 0.5),
                                  "that is one step of the full chain; the jump t → t′ has α = ᾱ_t/ᾱ_t′"),
                     "no_beta": (1 / (alpha ** 0.5 * (1 - ab) ** 0.5),
                                 "ε̂ enters the mean multiplied by β = 1 − α, then divided by √α √(1−ᾱ_t)"),
                     "no_alpha": ((1 - alpha) / (1 - ab) ** 0.5,
                                  "the whole bracket (x_t − … ε̂) is divided by √α")}
            if abs(got - want) <= 1e-4 * abs(want):
                continue
            hint = next((h for v, h in wrong.values() if abs(got - v) <= 1e-4 * abs(v)),
                        "gain = β/(√α √(1−ᾱ_t)) with α = ᾱ_t/ᾱ_t′, β = 1 − α")
            return False, f"t = {t} → {tp}: got {got:.4g}. " + hint
        return True, ""
    return guarded("eps_gain", check)


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
