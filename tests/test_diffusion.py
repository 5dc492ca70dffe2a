"""Schedules, the forward process and the training loss against independent references
(closed forms, Monte Carlo, Algorithm 1 written out by hand). The step functions appear only where
a schedule's clean index (t_prev = −1) or its input checks are tested; they are tested in test_sampling."""
import math

import pytest
import torch

from ldm_edu.diffusion import NoiseSchedule, diffusion_loss, predict_x0, q_sample, q_step
from ldm_edu.sampling import ddim_reverse_step, ddim_step, ddpm_step


# ----------------------------------------------------------------------------- schedules
def test_linear_schedule_hand_values_and_published_endpoint():
    s = NoiseSchedule(1000, "linear")
    assert s.betas.shape == s.alphas.shape == s.alpha_bars.shape == (1000,)
    assert s.betas[0].item() == pytest.approx(1e-4)
    assert s.betas[-1].item() == pytest.approx(0.02)
    assert s.betas[1].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 999)
    # ᾱ by hand for the first steps, and Ho et al.'s endpoint ᾱ_T ≈ 4.04e-5
    b0, b1 = 1e-4, 1e-4 + (0.02 - 1e-4) / 999
    assert s.alpha_bars[1].item() == pytest.approx((1 - b0) * (1 - b1), rel=1e-6)
    assert s.alpha_bars[-1].item() == pytest.approx(4.04e-5, rel=0.01)
    assert torch.allclose(s.alphas, 1 - s.betas)


def test_cosine_schedule_matches_formula():
    T, sft = 1000, 0.008
    s = NoiseSchedule(T, "cosine")
    f = lambda t: math.cos((t / T + sft) / (1 + sft) * math.pi / 2) ** 2
    for t in (0, 1, 10, 500, 900):
        assert s.alpha_bars[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-4, abs=1e-7)
    assert s.betas.max().item() <= 0.999 + 1e-6
    assert s.betas[-1].item() == pytest.approx(0.999)     # the clip is active at the end
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()


def test_snr_posterior_variance_and_the_clean_index():
    s = NoiseSchedule(100, "linear")
    assert s.alpha_bars.dtype == torch.float64 and not hasattr(s, "ab") and not hasattr(s, "alpha_bar")
    ab = s.alpha_bars
    assert torch.allclose(s.snr, ab / (1 - ab), rtol=1e-12)
    pv = s.posterior_variance
    assert pv[0].item() == 0.0
    t = 37
    assert pv[t].item() == pytest.approx(((1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t]) * s.betas[t]).item(), rel=1e-12)
    # t_prev = −1 is the clean data (ᾱ = 1): a deterministic step there returns x̂_0 itself
    x, eps = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(ddim_step(s, x, eps, 5, -1), predict_x0(s, x, eps, 5))
    torch.testing.assert_close(ddpm_step(s, x, eps, 0, noise=torch.randn_like(x), clip_x0=1e9), predict_x0(s, x, eps, 0))


def test_cosine_schedule_ends_near_2e9():
    """The clip β ≤ 0.999 makes the cosine ᾱ fall to ≈ 2.4e-9 at the last step (lesson 04's number)."""
    s = NoiseSchedule(1000, "cosine")
    assert 1e-9 < s.alpha_bars[-1].item() < 5e-9
    assert s.snr[-1].item() == pytest.approx(s.alpha_bars[-1].item(), rel=1e-6)


def test_timesteps_subsequence():
    s = NoiseSchedule(1000)
    ts = s.timesteps(50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and (ts[1:] < ts[:-1]).all()
    assert s.timesteps(1).tolist() == [999] and s.timesteps(3, t_max=980).tolist() == [980, 490, 0]
    assert torch.equal(s.timesteps(None, t_max=9), torch.arange(9, -1, -1))
    with pytest.raises(ValueError, match="t_max"):
        s.timesteps(10, t_max=1000)
    assert torch.equal(s.timesteps(), torch.arange(999, -1, -1))
    with pytest.raises(ValueError, match="steps"):
        s.timesteps(0)


def test_linear_schedule_with_few_steps_stays_a_schedule():
    """β scales by 1000/T, so T < 21 would give β > 1; β is clipped at 0.999 as the cosine one is."""
    s = NoiseSchedule(10, "linear")
    assert s.betas.max().item() == pytest.approx(0.999) and (s.alpha_bars > 0).all()


def test_bad_schedule_input():
    with pytest.raises(ValueError, match="linear"):
        NoiseSchedule(10, "quadratic")
    with pytest.raises(ValueError, match="positive"):
        NoiseSchedule(0)
    s = NoiseSchedule(10)
    with pytest.raises(ValueError, match="out of range"):
        q_sample(s, torch.zeros(2, 1, 4, 4), 10)
    with pytest.raises(ValueError, match="out of range"):
        q_sample(s, torch.zeros(2, 1, 4, 4), -1)
    with pytest.raises(ValueError, match="shape"):
        q_sample(s, torch.zeros(2, 1, 4, 4), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise"):
        q_sample(s, torch.zeros(2, 1, 4, 4), 3, torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="integer"):
        q_sample(s, torch.zeros(2, 1, 4, 4), 2.5)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, 5)
    with pytest.raises(ValueError, match="variance"):
        ddpm_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, variance="big")
    with pytest.raises(ValueError, match="eps"):
        ddpm_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 3), 3)
    with pytest.raises(ValueError, match="noise"):
        ddpm_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, noise=torch.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match="t_prev"):
        ddpm_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, 3)
    with pytest.raises(ValueError, match="t_next"):
        ddim_reverse_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 5, 2)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(s, torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), 3, 1, eta=-0.1)


# ----------------------------------------------------------------------------- forward process
def test_q_sample_mean_and_variance_monte_carlo():
    torch.manual_seed(0)
    s = NoiseSchedule(1000, "linear")
    x0 = torch.full((20000, 1, 1, 1), 0.7)
    for t in (0, 250, 999):
        xt = q_sample(s, x0, t)
        ab = s.alpha_bars[t].item()
        assert xt.mean().item() == pytest.approx(math.sqrt(ab) * 0.7, abs=4 * math.sqrt((1 - ab) / 20000) + 1e-4)
        assert xt.var().item() == pytest.approx(1 - ab, rel=0.05, abs=1e-6)
    # per-sample timesteps
    t = torch.tensor([0, 999])
    out = q_sample(s, torch.ones(2, 1, 2, 2), t, torch.zeros(2, 1, 2, 2))
    assert torch.allclose(out[:, 0, 0, 0], s.alpha_bars[t].sqrt().float())


def test_forward_chain_equals_closed_form_in_distribution():
    """Iterating the chain (Ho et al. eq. 2, seed eq. 3) t times gives the Gaussian of one jump (Ho et al. eq. 4)."""
    torch.manual_seed(1)
    s = NoiseSchedule(200, "cosine")
    x0 = torch.randn(1, 1, 1, 1).expand(40000, 1, 1, 1).clone() * 0 + 0.5
    x = x0.clone()
    for t in range(120):
        x = q_step(s, x, t)
    jump = q_sample(s, x0, 119)
    assert x.mean().item() == pytest.approx(jump.mean().item(), abs=0.02)
    assert x.std().item() == pytest.approx(jump.std().item(), rel=0.03)
    ab = s.alpha_bars[119].item()
    assert x.std().item() == pytest.approx(math.sqrt(1 - ab), rel=0.03)


def test_predict_x0_inverts_q_sample():
    s = NoiseSchedule(1000)
    x0, eps = torch.randn(4, 1, 5, 5), torch.randn(4, 1, 5, 5)
    t = torch.tensor([0, 10, 500, 900])
    assert torch.allclose(predict_x0(s, q_sample(s, x0, t, eps), eps, t), x0, atol=1e-3)


# ----------------------------------------------------------------------------- training loss
class _ToyCond(torch.nn.Module):
    """ε̂ = x · (1 + label) — lets the test see which labels reached the model."""

    num_classes = 10

    def forward(self, x, t, y=None):
        self.last_y = y
        return x * (1 + y.float()).view(-1, 1, 1, 1)


def test_algorithm1_by_hand_equals_diffusion_loss_with_the_same_generator():
    s = NoiseSchedule(50, "cosine")
    m = _ToyCond()
    x0, y = torch.randn(6, 1, 3, 3), torch.arange(6) % 10
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, s.T, (6,), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    drop = torch.rand(6, generator=g) < 0.5
    ab = s.alpha_bars[t].float().view(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    want = (m(x_t, t, torch.where(drop, 10, y)) - eps).pow(2).mean()
    got = diffusion_loss(m, s, x0, y=y, p_uncond=0.5, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, want)


def test_diffusion_loss_is_mse_of_noise_and_label_dropout():
    s = NoiseSchedule(100)
    # a model that predicts zero has loss E‖ε‖² = 1
    zero = lambda x, t, y=None: torch.zeros_like(x)
    torch.manual_seed(0)
    assert diffusion_loss(zero, s, torch.randn(256, 1, 8, 8)).item() == pytest.approx(1.0, abs=0.02)
    m = _ToyCond()
    y = torch.zeros(4000, dtype=torch.long)
    diffusion_loss(m, s, torch.zeros(4000, 1, 1, 1), y=y, p_uncond=0.25)
    frac_null = (m.last_y == 10).float().mean().item()
    assert frac_null == pytest.approx(0.25, abs=0.03)
    diffusion_loss(m, s, torch.zeros(10, 1, 1, 1), y=y[:10], p_uncond=0.0)
    assert (m.last_y == 0).all()
    with pytest.raises(ValueError, match="probability"):
        diffusion_loss(m, s, torch.zeros(10, 1, 1, 1), y=y[:10], p_uncond=1.5)


def test_diffusion_batches_loss_passes_labels_only_to_conditional_models():
    from ldm_edu.diffusion import diffusion_batches_loss
    seen = []

    class Eps(torch.nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.num_classes = num_classes

        def forward(self, x, t, y=None):
            seen.append(y)
            return torch.zeros_like(x)

    loss_fn = diffusion_batches_loss(NoiseSchedule(10), p_uncond=0.5)
    x, y = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 3])
    loss_fn(Eps(None), (x, y))
    loss_fn(Eps(4), x)
    loss_fn(Eps(4), (x, y))
    assert seen[0] is None and seen[1] is None and seen[2] is not None
    assert set(seen[2].tolist()) <= {0, 1, 2, 3, 4}            # 4 = the null label (dropped)
