"""Each loss against an independent reference: torch.distributions, Monte Carlo, hand-computed cases."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Normal, kl_divergence

from ldm_edu.autoencoders import VAE
from ldm_edu.losses import bernoulli_nll, gaussian_kl, gaussian_nll, log_normal, negative_elbo


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1)
    assert gaussian_kl(mu, logvar).shape == (7,)
    torch.testing.assert_close(gaussian_kl(mu, logvar), ref, rtol=1e-5, atol=1e-5)


def test_gaussian_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(1)
    mu, logvar = torch.tensor([[0.7, -1.2, 0.1]]), torch.tensor([[-0.5, 0.4, -2.0]])
    q = Normal(mu, (0.5 * logvar).exp())
    z = mu + (0.5 * logvar).exp() * torch.randn(400_000, 3, generator=g)
    mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(1)
    closed = gaussian_kl(mu, logvar).item()
    stderr = mc.std().item() / math.sqrt(len(mc))
    assert abs(mc.mean().item() - closed) < 5 * stderr, (mc.mean().item(), closed, stderr)


def test_gaussian_kl_zero_at_prior_and_hand_value():
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() < 1e-7
    # one dim, μ = 1, σ² = e: ½(1 + e − 1 − 1) = ½(e − 1)
    val = gaussian_kl(torch.tensor([[1.0]]), torch.tensor([[1.0]])).item()
    assert val == pytest.approx(0.5 * (math.e - 1), rel=1e-6)


def test_gaussian_kl_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4))


def test_gaussian_nll_matches_normal_log_prob():
    g = torch.Generator().manual_seed(2)
    x, x_hat = torch.rand(4, 1, 28, 28, generator=g), torch.rand(4, 1, 28, 28, generator=g)
    for sigma in (0.1, 1.0):
        ref = -Normal(x_hat, sigma).log_prob(x).flatten(1).sum(1)
        torch.testing.assert_close(gaussian_nll(x, x_hat, sigma), ref, rtol=1e-5, atol=1e-3)


def test_gaussian_nll_is_mse_up_to_constants():
    """eq. 14: −log N(x | x̂, σ²I) = ‖x − x̂‖²/2σ² + const: same gradient as MSE/2σ²."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 28, 28, generator=g)
    x_hat = torch.rand(3, 1, 28, 28, generator=g).requires_grad_(True)
    sigma = 0.3
    gaussian_nll(x, x_hat, sigma).sum().backward()
    grad_nll = x_hat.grad.clone()
    x_hat.grad = None
    ((x - x_hat).pow(2).sum() / (2 * sigma**2)).backward()
    torch.testing.assert_close(grad_nll, x_hat.grad)


def test_bernoulli_nll_matches_torch_distributions():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 1, 28, 28, generator=g) * 3
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.4), generator=g)
    ref = -Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(x, logits), ref, rtol=1e-5, atol=1e-4)
    # equals binary cross-entropy on probabilities, summed over pixels
    bce = F.binary_cross_entropy(logits.sigmoid(), x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_nll(x, logits), bce, rtol=1e-4, atol=1e-2)


def test_log_normal_matches_torch_distributions():
    g = torch.Generator().manual_seed(5)
    z, mu, logvar = (torch.randn(3, 6, 4, generator=g) for _ in range(3))
    ref = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, logvar), ref, rtol=1e-5, atol=1e-5)


def test_negative_elbo_weights_kl_by_beta():
    r, k = torch.tensor([10.0, 20.0]), torch.tensor([1.0, 3.0])
    torch.testing.assert_close(negative_elbo(r, k), torch.tensor([11.0, 23.0]))
    torch.testing.assert_close(negative_elbo(r, k, beta=2.0), torch.tensor([12.0, 26.0]))


@pytest.fixture(scope="module")
def tiny_vae_batch():
    torch.manual_seed(0)
    model = VAE(latent_dim=4, hidden=32).eval()
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.2), generator=torch.Generator().manual_seed(6))
    return model, x


def _repeat(x, n):
    """n copies of the batch as one batch: (n·B, …); results reshape to (n, B)."""
    return x.repeat(n, 1, 1, 1)


def test_iw_bound_k1_equals_elbo_in_expectation(tiny_vae_batch):
    model, x = tiny_vae_batch
    n, b = 400, len(x)
    torch.manual_seed(7)
    with torch.no_grad():
        iw1 = model.log_likelihood_iw(_repeat(x, n), k=1).view(n, b)     # MC KL inside
        elbo = -model(_repeat(x, n))["neg_elbo"].view(n, b)               # closed-form KL
    diff = iw1.mean(0) - elbo.mean(0)
    stderr = ((iw1.var(0) + elbo.var(0)) / n).sqrt()
    assert (diff.abs() < 5 * stderr + 0.05).all(), (diff, stderr)


def test_iw_bound_is_above_elbo_and_tightens_with_k(tiny_vae_batch):
    model, x = tiny_vae_batch
    b = len(x)
    torch.manual_seed(8)
    with torch.no_grad():
        elbo = -model(_repeat(x, 200))["neg_elbo"].view(200, b).mean()
        iw10 = model.log_likelihood_iw(_repeat(x, 40), k=10).view(40, b).mean()
        iw100 = model.log_likelihood_iw(_repeat(x, 8), k=100).view(8, b).mean()
    assert iw10 > elbo and iw100 > iw10 - 0.05, (float(elbo), float(iw10), float(iw100))
