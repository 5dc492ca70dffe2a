"""Measurement helpers of lessons 01–02 (ldm_edu.analysis) and the seeded VAE estimators, each against
an independent reference: torch.distributions, hand-derived formulas, or sampling error."""
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from ldm_edu.analysis import (ACTIVE_KL, bootstrap_interval, class_coverage, effective_classes, evaluate_vae,
                              gaussian_fit_samples, gradient_estimates, hole_fraction, hole_mask, iw_log_likelihood,
                              kl_per_dim, sampler_report)
from ldm_edu.autoencoders import VAE, Autoencoder


def _binary(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.rand(n, 1, 28, 28, generator=g), generator=g)


def _vae(d=3, seed=0):
    torch.manual_seed(seed)
    return VAE(latent_dim=d, hidden=16).eval()


def test_kl_per_dim_matches_torch_distributions():
    vae, x = _vae(4), _binary(10)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).mean(0)    # (d,)
    torch.testing.assert_close(kl_per_dim(vae, x, batch_size=3), ref, rtol=1e-5, atol=1e-6)
    assert 0 < ACTIVE_KL < 0.1


def test_vae_forward_is_the_one_sample_elbo_with_the_given_generator():
    vae, x = _vae(3), _binary(5)
    with torch.no_grad():
        out = vae(x, beta=2.0, generator=torch.Generator().manual_seed(3))
        again = vae(x, generator=torch.Generator().manual_seed(3))
        other = vae(x, generator=torch.Generator().manual_seed(4))
        mu, logvar = vae.encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        z = mu + (0.5 * logvar).exp() * eps
        recon = -Bernoulli(logits=vae.decode_logits(z)).log_prob(x).flatten(1).sum(1)
        kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(out["z"], z)
    torch.testing.assert_close(out["neg_elbo"], recon + kl, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out["loss"], (recon + 2.0 * kl).mean(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(again["neg_elbo"], out["neg_elbo"])
    assert not torch.allclose(other["z"], out["z"])
    with pytest.raises(ValueError, match="beta"):
        vae(x, beta=-1.0)


def test_iw_bound_k1_is_the_elbo_with_a_sampled_kl_and_tightens_with_k():
    vae, x = _vae(2), _binary(8)
    with torch.no_grad():
        l1 = vae.log_likelihood_iw(x, k=1, generator=torch.Generator().manual_seed(5))
        mu, logvar = vae.encode(x)
        sd = (0.5 * logvar).exp()
        z = mu + sd * torch.randn(1, *mu.shape, generator=torch.Generator().manual_seed(5))[0]
        log_px_z = Bernoulli(logits=vae.decode_logits(z)).log_prob(x).flatten(1).sum(1)
        ref = log_px_z + Normal(0.0, 1.0).log_prob(z).sum(1) - Normal(mu, sd).log_prob(z).sum(1)
    torch.testing.assert_close(l1, ref, rtol=1e-5, atol=1e-3)
    # E[L_k] is non-decreasing in k: over 200 images, L_50 − L_1 must not be negative beyond sampling error
    xs = _binary(200, seed=1)
    gap = iw_log_likelihood(vae, xs, k=50, seed=1) - iw_log_likelihood(vae, xs, k=1, seed=2)
    assert gap.mean() > -4 * gap.std() / math.sqrt(len(gap))
    with pytest.raises(ValueError, match="k"):
        vae.log_likelihood_iw(x, k=0)


def test_evaluate_vae_is_seeded():
    vae, x = _vae(3), _binary(12)
    a, b = evaluate_vae(vae, x, batch_size=5, seed=0), evaluate_vae(vae, x, batch_size=5, seed=0)
    c = evaluate_vae(vae, x, batch_size=5, seed=1)
    assert a == b and a["neg_elbo"] != c["neg_elbo"]
    assert a["neg_elbo"] == pytest.approx(a["recon"] + a["kl"], rel=1e-5)
    assert a["kl"] == c["kl"]                                # the KL is in closed form: no sampling noise


def test_gradient_estimators_use_the_generator_and_match_closed_forms():
    c = torch.tensor([1.0, -2.0])
    f = lambda z: -(z - c).pow(2).sum(1)
    mu, logvar = torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 0.4])
    eps = torch.randn(30, 2, generator=torch.Generator().manual_seed(2))
    z = mu + (0.5 * logvar).exp() * eps
    rep = gradient_estimates(f, mu, logvar, 30, "reparam", generator=torch.Generator().manual_seed(2))
    sco = gradient_estimates(f, mu, logvar, 30, "score", generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(rep, -2 * (z - c))                                  # ∇_z f at z = μ + σε
    torch.testing.assert_close(sco, f(z)[:, None] * (z - mu) / logvar.exp())       # f(z) (z − μ)/σ²


def test_hole_mask_is_calibrated_on_fresh_codes_and_flags_far_ones():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(4000, 2, generator=g)
    fresh = torch.randn(4000, 2, generator=g)
    p = hole_fraction(codes, fresh)
    se = math.sqrt(0.05 * 0.95 / 4000 + 0.05 * 0.95 / 2000)
    assert abs(p - 0.05) < 4 * se, p
    wide = torch.randn(4000, 2, generator=g) * 3.0               # a sampler 3× too wide: many samples in holes
    assert hole_fraction(codes, wide) > 0.5
    mask = hole_mask(codes, torch.tensor([[0.0, 0.0], [50.0, 50.0]]))
    assert mask.tolist() == [False, True]
    with pytest.raises(ValueError, match="at least"):
        hole_mask(codes[:5], fresh)


def test_gaussian_fit_samples_match_the_codes_moments():
    g = torch.Generator().manual_seed(1)
    cov = torch.tensor([[4.0, 1.5], [1.5, 1.0]])
    codes = torch.tensor([5.0, -3.0]) + torch.randn(3000, 2, generator=g) @ torch.linalg.cholesky(cov).T
    n = 40000
    s = gaussian_fit_samples(codes, n, generator=torch.Generator().manual_seed(2))
    m_c, cov_c = codes.mean(0), torch.cov(codes.T)
    se_m = (cov_c.diagonal() / n).sqrt()
    se_c = ((cov_c.diagonal()[:, None] * cov_c.diagonal()[None] + cov_c**2) / n).sqrt()
    assert ((s.mean(0) - m_c).abs() < 5 * se_m).all()
    assert ((torch.cov(s.T) - cov_c).abs() < 5 * se_c).all()
    again = gaussian_fit_samples(codes, 5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(gaussian_fit_samples(codes, 5, torch.Generator().manual_seed(3)), again)
    assert not torch.allclose(gaussian_fit_samples(codes, 5, torch.Generator().manual_seed(4)), again)
    with pytest.raises(ValueError, match="N > d"):
        gaussian_fit_samples(codes[:2], 5)


def test_effective_classes_by_hand():
    assert effective_classes(torch.tensor([0, 0, 1, 1])) == pytest.approx(2.0)
    assert effective_classes(torch.tensor([3, 3, 3, 3, 3])) == pytest.approx(1.0)
    assert effective_classes(torch.arange(10).repeat(7)) == pytest.approx(10.0)
    # p = (3/4, 1/4): H = −(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335 nats, e^H = 1.754765
    assert effective_classes(torch.tensor([0, 0, 0, 1])) == pytest.approx(1.754765, abs=1e-6)
    assert math.isnan(effective_classes(torch.tensor([], dtype=torch.long)))


def test_bootstrap_interval_matches_the_binomial_standard_error():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2000, generator=g) < 0.2).double()
    iv = bootstrap_interval(lambda a: a.mean(), x, n_boot=400, seed=1)
    p, n = float(x.mean()), len(x)
    assert iv.value == pytest.approx(p) and iv.low < p < iv.high
    # a 95 % interval spans ≈ 2 · 1.96 standard errors; 400 replicates pin its ends to ≈ ±10 %
    width = 2 * 1.96 * math.sqrt(p * (1 - p) / n)
    assert 0.75 * width < iv.width < 1.25 * width, (iv, width)
    assert bootstrap_interval(lambda a: a.mean(), x, n_boot=50, seed=1) == bootstrap_interval(lambda a: a.mean(), x,
                                                                                               n_boot=50, seed=1)
    assert bootstrap_interval(lambda a: a.mean(), x, n_boot=50, seed=2) != bootstrap_interval(lambda a: a.mean(), x,
                                                                                               n_boot=50, seed=1)
    # a constant sample has no spread; paired samples are resampled together (a − a stays 0)
    c = bootstrap_interval(lambda a: a.mean(), torch.full((30,), 4.0))
    assert (c.value, c.low, c.high) == (4.0, 4.0, 4.0)
    d = bootstrap_interval(lambda a, b: (a - b).abs().max(), x, x.clone())
    assert (d.low, d.high) == (0.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        bootstrap_interval(lambda a, b: 0.0, x, x[:5])
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(lambda a: a.mean(), x, level=1.5)


def test_class_coverage_on_real_digits():
    from ldm_edu.data import mnist_tensors
    from ldm_edu.classifier import class_histogram
    x, y = mnist_tensors("test", limit=1000)
    cov = class_coverage(x)
    h = cov["hist"].numpy()
    ref_entropy = -sum(v * math.log(v) for v in h if v > 0)
    assert cov["entropy"] == pytest.approx(ref_entropy, rel=1e-9)
    assert cov["effective_classes"] == pytest.approx(math.exp(ref_entropy), rel=1e-9)
    assert cov["effective_classes"] == pytest.approx(effective_classes(cov["labels"]), rel=1e-9)
    torch.testing.assert_close(cov["hist"], class_histogram(x))
    assert cov["effective_classes"] > 9.5 and h.sum() == pytest.approx(1.0)
    ci = cov["effective_classes_ci"]
    assert ci.value == cov["effective_classes"] and ci.low < ci.value <= ci.high < 10.0 + 1e-9
    ones = class_coverage(x[y == 1][:100])
    assert ones["effective_classes"] < 1.3 and ones["top_share"] > 0.9 and int(ones["hist"].argmax()) == 1


def test_sampler_report_decodes_and_measures():
    torch.manual_seed(0)
    ae = Autoencoder(latent_dim=2, hidden=16).eval()
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 2, generator=g)
    samples = torch.cat([torch.randn(40, 2, generator=g), 50 + torch.randn(10, 2, generator=g)])   # last 10: far away
    rep = sampler_report(ae, codes, samples, n_boot=50)
    assert rep["images"].shape == (50, 1, 28, 28)
    assert rep["holes"] == hole_fraction(codes, samples)
    assert set(rep) >= {"holes", "hist", "entropy", "effective_classes", "top_share"}
    assert rep["in_hole"][40:].all() and rep["n_outside_holes"] == int((~rep["in_hole"]).sum()) <= 40
    assert rep["effective_classes_outside_holes"] == effective_classes(rep["labels"][~rep["in_hole"]])
    for key in ("holes", "effective_classes", "effective_classes_outside_holes"):
        ci = rep[f"{key}_ci"]
        assert ci.value == pytest.approx(rep[key]) and ci.low <= ci.value <= ci.high, key
    assert 0.2 - 1e-9 <= rep["holes"] and rep["holes_ci"].high > rep["holes_ci"].low
