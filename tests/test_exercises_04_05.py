"""Lessons 04–05 exercises: the mistake catalogue (WRONG: checker, wrong answer, the hint it must
print), run by tests/test_exercises.py."""
import math

import torch

from ldm_edu.exercises import lesson04 as L4
from ldm_edu.exercises import lesson05 as L5


def _sqrt(v):
    return math.sqrt(v) if isinstance(v, float) else v.sqrt()


def _pm(ab, x, x0, t, tp, one_step_beta=False, sqrt=True, python_index=False):
    """Wrong versions of the strided posterior mean (lesson 04, Ex. 2)."""
    a_t = ab[t]
    a_p = ab[tp] if (tp >= 0 or python_index) else torch.ones((), dtype=ab.dtype)
    alpha = a_t / ab[t - 1] if one_step_beta else a_t / a_p
    r = (lambda v: v.sqrt()) if sqrt else (lambda v: v)
    return r(a_p) * (1 - alpha) / (1 - a_t) * x0 + r(alpha) * (1 - a_p) / (1 - a_t) * x


def test_posterior_mean_solution_is_the_samplers_step():
    """Ex. 2's reference μ̃ with a clipped x̂_0 is ``ddpm_step(..., t_prev, clip_x0=1)`` with z = 0, on a
    strided jump, on the first jump from T and on the last one onto the data (t_prev = −1)."""
    from ldm_edu.diffusion import NoiseSchedule, predict_x0
    from ldm_edu.sampling import ddpm_step
    s = NoiseSchedule(1000, "cosine")
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(3, 1, 6, 6, generator=g), torch.randn(3, 1, 6, 6, generator=g)
    for t, tp in ((999, 946), (300, 247), (52, -1)):
        x0 = predict_x0(s, x, eps, t).clamp(-1, 1)
        want = ddpm_step(s, x, eps, t, tp, noise=torch.zeros_like(x), clip_x0=1.0)
        torch.testing.assert_close(L4.solution_posterior_mean(s.alpha_bars, x, x0, t, tp).float(), want,
                                   rtol=1e-4, atol=1e-5)


def test_eps_gain_solution_is_the_derivative_of_the_step():
    """Ex. 4's gain is the change of ddpm_step's (unclipped) output per unit change of ε̂, and one full step
    from t = T on the cosine schedule gives 0.999/√0.001 ≈ 31.6 (β_T clipped at 0.999)."""
    from ldm_edu.diffusion import NoiseSchedule
    from ldm_edu.sampling import ddpm_step
    s = NoiseSchedule(1000, "cosine")
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    for t, tp in ((999, 998), (999, 946), (500, 450)):
        d = 1e-3
        step = lambda e: ddpm_step(s, x, torch.full_like(x, e), t, tp, noise=torch.zeros_like(x))
        slope = ((step(0.0) - step(d)) / d).mean().item()
        assert abs(slope - L4.solution_eps_gain(s.alpha_bars, t, tp)) < 1e-3 * slope
    assert abs(L4.solution_eps_gain(s.alpha_bars, 999, 998) - 0.999 / 0.001 ** 0.5) < 0.01


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
    # lesson 04, 2: the strided posterior mean μ̃(x_t, x̂_0) (Ho et al. eq. 7 with α = ᾱ_t/ᾱ_t′)
    (L4.check_posterior_mean, lambda ab, x, x0, t, tp: _pm(ab, x, x0, t, tp, one_step_beta=True), "single-step β_t"),
    (L4.check_posterior_mean, lambda ab, x, x0, t, tp: _pm(ab, x, x0, t, tp, sqrt=False), "carry square roots"),
    (L4.check_posterior_mean, lambda ab, x, x0, t, tp: _pm(ab, x, x0, t, tp, python_index=True), "LAST entry"),
    (L4.check_posterior_mean, lambda ab, x, x0, t, tp: x0, "that is x̂_0 itself"),
    (L4.check_posterior_mean, lambda ab, x, x0, t, tp: x0[:1], "shape"),
    # lesson 04, 3: guidance
    (L4.check_cfg, lambda c, u, w: c + w * (u - c), "start from the unconditional"),
    (L4.check_cfg, lambda c, u, w: (1 + w) * c - w * u, "Ho & Salimans"),
    (L4.check_cfg, lambda c, u, w: w * c, "scaling ε_c alone"),
    # lesson 04, 4: the ε̂-error gain of a jump
    (L4.check_eps_gain, lambda ab, t, tp: float(ab[t]) ** -0.5, "x̂_0 = "),
    (L4.check_eps_gain, lambda ab, t, tp: 1 / ((float(ab[t]) / float(ab[tp])) ** 0.5 * (1 - float(ab[t])) ** 0.5),
     "multiplied by β = 1 − α"),
    (L4.check_eps_gain, lambda ab, t, tp: (1 - float(ab[t] / ab[t - 1])) / ((float(ab[t] / ab[t - 1])) ** 0.5
                                                                          * (1 - float(ab[t])) ** 0.5),
     "one step of the full chain"),
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
    (L5.check_slerp, lambda a, b, w: a, "interpolate the *angle*"),
    (L5.check_slerp, lambda a, b, w: ((1 - w) * a + w * b) / ((1 - w) * a + w * b).norm()
     * ((1 - w) * a.norm() + w * b.norm()), "keeps the norm but not the angle"),
]
