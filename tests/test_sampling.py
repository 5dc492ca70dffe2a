"""DDPM/DDIM steps, sampling, guidance and inversion against independent references.

The main reference is data = a single Gaussian N(μ, s² I), where the optimal ε-predictor is known
in closed form (``GaussianEpsModel``) and every marginal of the forward process is Gaussian.
"""
import math

import pytest
import torch

from ldm_edu.diffusion import NoiseSchedule, predict_x0, q_sample
from ldm_edu.sampling import (ddim_invert, ddim_reverse_step, ddim_sigma, ddim_step, ddpm_step, guided_eps,
                              sample, sample_images, sample_progressive, slerp)
from test_diffusion import _ToyCond


class GaussianEpsModel(torch.nn.Module):
    """The *optimal* ε-predictor when the data is a single Gaussian N(μ, s² I), an independent reference:
    x_t ~ N(√ᾱ_t μ, (ᾱ_t s² + 1 − ᾱ_t) I), so E[ε | x_t] = √(1−ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t)."""

    num_classes = None

    def __init__(self, schedule: NoiseSchedule, mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.schedule, self.mean, self.std = schedule, float(mean), float(std)

    def forward(self, x, t, y=None):
        ab = self.schedule.alpha_bars[torch.as_tensor(t).long()].to(x)
        ab = ab.view(-1, *([1] * (x.dim() - 1))) if ab.dim() else ab
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mean) / (ab * self.std**2 + 1 - ab)


# ----------------------------------------------------------------------------- steps and samplers
def _gauss_setup(T=1000, kind="linear", mu=0.5, std=0.3):
    s = NoiseSchedule(T, kind)
    return s, GaussianEpsModel(s, mu, std)


def test_ddim_eta1_is_the_ddpm_posterior_step():
    """η = 1, t_prev = t−1: same mean and the same variance β̃_t as DDPM (Song et al. 2021)."""
    s = NoiseSchedule(1000)
    x, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t in (1, 10, 500, 999):
        assert ddim_sigma(s, t, t - 1, 1.0) ** 2 == pytest.approx(s.posterior_variance[t].item(), rel=1e-4)
        m_ddim = ddim_step(s, x, eps, t, t - 1, eta=1.0, noise=torch.zeros_like(x))
        m_ddpm = ddpm_step(s, x, eps, t, noise=torch.zeros_like(x))
        assert torch.allclose(m_ddim, m_ddpm, atol=1e-4), t
        z = torch.randn_like(x)
        assert torch.allclose(ddim_step(s, x, eps, t, t - 1, eta=1.0, noise=z),
                              ddpm_step(s, x, eps, t, noise=z, variance="beta_tilde"), atol=1e-4)


def test_ddpm_step_algorithm2_by_hand_and_no_noise_at_t0():
    s = NoiseSchedule(10)
    x, eps, z = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    t = 4
    b, a, ab = s.betas[t].item(), s.alphas[t].item(), s.alpha_bars[t].item()
    want = (x - b / math.sqrt(1 - ab) * eps) / math.sqrt(a) + math.sqrt(b) * z
    assert torch.allclose(ddpm_step(s, x, eps, t, noise=z, variance="beta"), want, atol=1e-5)
    assert torch.equal(ddpm_step(s, x, eps, 0, noise=z), ddpm_step(s, x, eps, 0, noise=torch.zeros_like(z)))
    # with clipping off/on at a huge bound the posterior-mean form equals Algorithm 2
    assert torch.allclose(ddpm_step(s, x, eps, t, noise=z, clip_x0=1e6), ddpm_step(s, x, eps, t, noise=z), atol=1e-4)


def test_ddim_eta0_deterministic_and_sampling_reproducible():
    s, m = _gauss_setup(100)
    x, eps = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    assert torch.equal(ddim_step(s, x, eps, 50, 30), ddim_step(s, x, eps, 50, 30))
    x_T = torch.randn(4, 1, 3, 3)
    a = sample(m, s, (4, 1, 3, 3), method="ddim", steps=20, x_T=x_T, progress=False)
    b = sample(m, s, (4, 1, 3, 3), method="ddim", steps=20, x_T=x_T, progress=False)
    assert torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(sample(m, s, (2, 1, 3, 3), generator=g1, progress=False),
                       sample(m, s, (2, 1, 3, 3), generator=g2, progress=False))


@pytest.mark.parametrize("method,steps,eta", [("ddpm", None, 0.0), ("ddim", 1000, 0.0), ("ddim", 1000, 0.5)])
def test_samplers_reproduce_the_data_gaussian(method, steps, eta):
    """With the exact ε of N(μ, s²), DDPM and (fine-stepped) DDIM return samples with mean μ, std s."""
    mu, std = 0.5, 0.3
    s, m = _gauss_setup(1000, "linear", mu, std)
    g = torch.Generator().manual_seed(0)
    x = sample(m, s, (4000, 1, 2, 2), method=method, steps=steps, eta=eta, generator=g, progress=False)
    assert x.mean().item() == pytest.approx(mu, abs=0.02)
    assert x.std().item() == pytest.approx(std, rel=0.06)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_progressive_sampler_is_the_trajectory_of_sample(method):
    s, m = _gauss_setup(100)
    traj = list(sample_progressive(m, s, (2, 1, 3, 3), method=method, steps=10, eta=0.5,
                                   generator=torch.Generator().manual_seed(4), progress=False))
    x = sample(m, s, (2, 1, 3, 3), method=method, steps=10, eta=0.5, generator=torch.Generator().manual_seed(4),
               progress=False)
    assert [st.t for st in traj] == s.timesteps(10).tolist() + [-1]
    assert torch.equal(traj[-1].x_t, x) and torch.equal(traj[-1].x0_hat, x)
    # each x̂_0 is the closed form solved for x_0 with the model's ε at that state
    for st in traj[:-1]:
        torch.testing.assert_close(st.x0_hat, predict_x0(s, st.x_t, m(st.x_t, torch.tensor(st.t)), st.t))
    g = torch.Generator().manual_seed(4)
    assert torch.equal(traj[0].x_t, torch.randn((2, 1, 3, 3), generator=g))     # x_T drawn first


def test_sample_restores_training_mode():
    s, m = _gauss_setup(10)
    m.train()
    sample(m, s, (1, 1, 2, 2), method="ddim", steps=3, progress=False)
    assert m.training


def test_ddim_few_steps_is_a_discretisation_that_converges():
    """DDIM-k is an ODE discretisation: its error in the sample std shrinks as k grows."""
    s, m = _gauss_setup(1000, "linear", 0.5, 0.3)
    errs = []
    for steps in (20, 100, 1000):
        g = torch.Generator().manual_seed(0)
        x = sample(m, s, (4000, 1, 2, 2), method="ddim", steps=steps, generator=g, progress=False)
        errs.append(abs(x.std().item() - 0.3))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.006


def test_ddim_reverse_step_undoes_the_deterministic_step():
    """With the same ε̂, going down (η = 0) then up returns the start exactly — an algebraic inverse."""
    s = NoiseSchedule(1000, "cosine")
    x, eps = torch.randn(3, 1, 4, 4, dtype=torch.float64), torch.randn(3, 1, 4, 4, dtype=torch.float64)
    for t, tp in ((999, 960), (500, 20), (40, -1)):
        down = ddim_step(s, x, eps, t, tp)
        torch.testing.assert_close(ddim_reverse_step(s, down, eps, tp, t), x, rtol=1e-6, atol=1e-6 / s.alpha_bars[t].sqrt().item())
    # by hand: from the data (t = −1) x̂_0 = x, so one step up is the closed form with ε̂
    torch.testing.assert_close(ddim_reverse_step(s, x, eps, -1, 300), q_sample(s, x, 300, eps))


def test_ddim_inversion_round_trip():
    s, m = _gauss_setup(1000, "linear", 0.5, 0.3)
    torch.manual_seed(0)
    x0 = 0.5 + 0.3 * torch.randn(8, 1, 4, 4)
    errs = []
    for steps in (50, 1000):
        x_T = ddim_invert(m, s, x0, steps=steps)
        # x_T looks like N(0, I) noise, and decoding it brings x0 back
        back = sample(m, s, x0.shape, method="ddim", steps=steps, x_T=x_T, progress=False)
        errs.append((back - x0).abs().max().item())
        assert 0.7 < x_T.std().item() < 1.3
    assert errs[1] < 0.01 and errs[0] < 0.15 and errs[1] < errs[0] / 5


def test_strided_ddpm_is_algorithm2_on_the_respaced_chain():
    """ddpm_step(t → t′) = Algorithm 2 with α = ᾱ_t/ᾱ_t′; with σ² = β̃ it equals DDIM η = 1 on the jump."""
    s = NoiseSchedule(1000, "cosine")
    x, eps, z = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t, tp in ((999, 949), (600, 300), (50, 0)):
        ab, abp = s.alpha_bars[t].item(), s.alpha_bars[tp].item()
        a = ab / abp
        want = (x - (1 - a) / math.sqrt(1 - ab) * eps) / math.sqrt(a) + math.sqrt(1 - a) * z
        torch.testing.assert_close(ddpm_step(s, x, eps, t, tp, noise=z, variance="beta"), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ddpm_step(s, x, eps, t, tp, noise=z), ddim_step(s, x, eps, t, tp, eta=1.0, noise=z),
                                   rtol=1e-4, atol=1e-4)
        # with clipping: the posterior mean of the clipped x̂_0 equals DDIM(η = 1) with ε recomputed from it
        torch.testing.assert_close(ddpm_step(s, x, eps, t, tp, noise=z, clip_x0=1.0),
                                   ddim_step(s, x, eps, t, tp, eta=1.0, noise=z, clip_x0=1.0), rtol=1e-4, atol=1e-4)


def test_ddim_with_all_steps_eta1_approaches_ddpm_distribution():
    s, m = _gauss_setup(200, "cosine", -0.2, 0.5)
    g = torch.Generator().manual_seed(1)
    a = sample(m, s, (4000, 1, 1, 1), method="ddim", steps=200, eta=1.0, generator=g, progress=False)
    assert a.mean().item() == pytest.approx(-0.2, abs=0.03)
    assert a.std().item() == pytest.approx(0.5, rel=0.06)


# ----------------------------------------------------------------------------- guidance, interpolation, bad input
def test_guidance_combination():
    m = _ToyCond()
    x = torch.ones(2, 1, 1, 1)
    y = torch.tensor([1, 2])
    # ε_c = x(1+y), ε_u = x·11 ⇒ ε = 11 + w((1+y) − 11)
    out = guided_eps(m, x, 5, y, guidance=3.0)
    assert out.flatten().tolist() == pytest.approx([11 + 3 * (2 - 11), 11 + 3 * (3 - 11)])
    assert guided_eps(m, x, 5, y, guidance=1.0).flatten().tolist() == [2.0, 3.0]
    assert guided_eps(m, x, 5, y, guidance=0.0).flatten().tolist() == [11.0, 11.0]
    # Ho & Salimans' form (1 + w′) ε_c − w′ ε_u with w′ = w − 1
    w_hs = 2.0
    assert out.flatten().tolist() == pytest.approx([(1 + w_hs) * 2 - w_hs * 11, (1 + w_hs) * 3 - w_hs * 11])
    with pytest.raises(ValueError, match="labels"):
        guided_eps(m, x, 5, None, guidance=2.0)


def test_slerp_endpoints_and_norm():
    torch.manual_seed(0)
    a, b = torch.randn(1000), torch.randn(1000)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    mid = slerp(a, b, 0.5)
    assert mid.norm().item() == pytest.approx(((a.norm() + b.norm()) / 2).item(), rel=0.05)
    assert (0.5 * (a + b)).norm().item() < 0.8 * mid.norm().item()   # a linear mix loses norm


def test_sample_bad_input():
    s, m = _gauss_setup(10)
    with pytest.raises(ValueError, match="method"):
        sample(m, s, (1, 1, 2, 2), method="euler", progress=False)
    with pytest.raises(ValueError, match="x_T"):
        sample(m, s, (1, 1, 2, 2), x_T=torch.zeros(2, 1, 2, 2), progress=False)
    with pytest.raises(ValueError, match="steps"):
        sample(m, s, (1, 1, 2, 2), method="ddim", steps=11, progress=False)
    with pytest.raises(ValueError, match="variance"):
        sample(m, s, (1, 1, 2, 2), method="ddpm", variance="huge", progress=False)
    with pytest.raises(ValueError, match="eta"):
        sample(m, s, (1, 1, 2, 2), method="ddim", eta=-1.0, progress=False)


# ----------------------------------------------------------------------------- many images
def _fake_sampler(calls):
    def fn(k, y, generator):
        calls.append((k, None if y is None else y.tolist()))
        return torch.rand(k, 1, 2, 2, generator=generator)
    return fn


def test_sample_images_batches_labels_seed_and_time():
    calls = []
    out = sample_images(_fake_sampler(calls), 23, batch_size=10, seed=3)
    assert out.images.shape == (23, 1, 2, 2) and out.seconds >= 0
    assert [k for k, _ in calls] == [10, 10, 3]
    assert sum((y for _, y in calls), []) == [i % 10 for i in range(23)]      # balanced 0-9, in order
    again = sample_images(_fake_sampler([]), 23, batch_size=10, seed=3).images
    other = sample_images(_fake_sampler([]), 23, batch_size=10, seed=4).images
    assert torch.equal(out.images, again) and not torch.equal(out.images, other)
    calls.clear()
    sample_images(_fake_sampler(calls), 4, labels=None)
    assert calls == [(4, None)]
    calls.clear()
    sample_images(_fake_sampler(calls), 3, labels=torch.tensor([7, 7, 1]))
    assert calls == [(3, [7, 7, 1])]


def test_sample_images_bad_input():
    with pytest.raises(ValueError, match="labels"):
        sample_images(_fake_sampler([]), 3, labels=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="labels"):
        sample_images(_fake_sampler([]), 3, labels="random")
    with pytest.raises(ValueError, match="n and batch_size"):
        sample_images(_fake_sampler([]), 0)
    with pytest.raises(ValueError, match="must return k images"):
        sample_images(lambda k, y, g: torch.zeros(k + 1, 1, 2, 2), 3)
