"""Lessons 04–05 exercises: the mistake catalogue (WRONG: checker, wrong answer, the hint it must
print), run by tests/test_exercises.py."""
import math

import torch

from ldm_edu.exercises import lesson04 as L4
from ldm_edu.exercises import lesson05 as L5


def _sqrt(v):
    return math.sqrt(v) if isinstance(v, float) else v.sqrt()


WRONG = [
    # lesson 04, 1: the closed form
    (L4.check_q_sample, lambda ab, x0, t, e: (1 - ab[t] + ab[t]) * x0, "sqrt"),            # no noise at all
    (L4.check_q_sample, lambda ab, x0, t, e: ab[t] * x0 + (1 - ab[t]) * e, "square roots"),
    (L4.check_q_sample, lambda ab, x0, t, e: (1 - ab[t]).sqrt() * x0 + ab[t].sqrt() * e, "survives"),
    (L4.check_q_sample, lambda ab, x0, t, e: ab[t + 1].sqrt() * x0 + (1 - ab[t + 1]).sqrt() * e if t < 49
     else ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * e, "0-based"),
    (L4.check_q_sample, lambda ab, x0, t, e: ab[max(t - 1, 0)].sqrt() * x0 + (1 - ab[max(t - 1, 0)]).sqrt() * e,
     "no shift"),
    (L4.check_q_sample, lambda ab, x0, t, e: x0[:1], "shape"),
    # lesson 04, 2: Algorithm 2's mean
    (L4.check_ddpm_mean, lambda s, x, e, t: (x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * e) / s.alpha_bars[t].sqrt(),
     "not by √ᾱ_t"),
    (L4.check_ddpm_mean, lambda s, x, e, t: (x - s.betas[t] / (1 - s.alpha_bars[t]) * e) / s.alphas[t].sqrt(),
     "square root in the denominator"),
    (L4.check_ddpm_mean, lambda s, x, e, t: (x - (1 - s.alpha_bars[t]).sqrt() * e) / s.alpha_bars[t].sqrt(), "x̂_0"),
    (L4.check_ddpm_mean, lambda s, x, e, t: x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * e, "rescale"),
    (L4.check_ddpm_mean, lambda s, x, e, t: x, "single-step"),
    # lesson 04, 3: guidance
    (L4.check_cfg, lambda c, u, w: c + w * (u - c), "start from the unconditional"),
    (L4.check_cfg, lambda c, u, w: (1 + w) * c - w * u, "Ho & Salimans"),
    (L4.check_cfg, lambda c, u, w: w * c, "scaling ε_c alone"),
    # lesson 05, 1: the DDIM update
    (L5.check_ddim_update, lambda x, e, a, ap: _sqrt(ap) * (x - _sqrt(1 - a) * e) / _sqrt(a) + _sqrt(1 - a) * e,
     "new* level"),
    (L5.check_ddim_update, lambda x, e, a, ap: ap * (x - _sqrt(1 - a) * e) / _sqrt(a) + (1 - ap) * e, "√ᾱ_prev"),
    (L5.check_ddim_update, lambda x, e, a, ap: (x - _sqrt(1 - a) * e) / _sqrt(a), "that is x̂_0"),
    (L5.check_ddim_update, lambda x, e, a, ap: _sqrt(ap / a) * x, "rescaling x_t"),
    (L5.check_ddim_update, lambda x, e, a, ap: x + torch.randn_like(x), "same* ε̂"),
    # lesson 05, 2: σ(η)
    (L5.check_sigma_eta, lambda a, ap, eta: L5.solution_sigma_eta(a, ap, eta) ** 2, "σ²"),
    (L5.check_sigma_eta, lambda a, ap, eta: L5.solution_sigma_eta(a, ap, 1.0), "η = 0 must give 0"),
    (L5.check_sigma_eta, lambda a, ap, eta: eta * math.sqrt((1 - a) / (1 - ap) * (1 - a / ap)), "*earlier*"),
    (L5.check_sigma_eta, lambda a, ap, eta: eta, "sqrt(β̃_t)"),
    # lesson 05, 3: slerp
    (L5.check_slerp, lambda a, b, w: (1 - w) * a + w * b, "linear interpolation"),
    (L5.check_slerp, lambda a, b, w: L5.solution_slerp(a, b, 1 - w), "swapped"),
    (L5.check_slerp, lambda a, b, w: a, "arccos"),
]
