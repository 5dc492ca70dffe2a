"""Autoencoder / VAE shapes, clear errors, the reparametrisation gradient, and the lesson helpers."""
import pytest
import torch

from ldm_edu.autoencoders import (VAE, Autoencoder, ae_loss, reparameterize, encode_all, reconstruction_error, vae_loss)
from ldm_edu.analysis import (gradient_estimates, interpolate, fit_pca, hole_fraction, kl_per_dim, latent_bounds, latent_grid, linear_probe, pca_codes, pca_reconstruction_errors)


def _images(n=4, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_autoencoder_shapes_and_range():
    model = Autoencoder(latent_dim=3, hidden=32)
    x_hat, z = model(_images())
    assert z.shape == (4, 3) and x_hat.shape == (4, 1, 28, 28)
    assert x_hat.min() >= 0 and x_hat.max() <= 1
    assert ae_loss(model, _images()).dim() == 0


@pytest.mark.parametrize("bad", [torch.rand(4, 784), torch.rand(4, 3, 28, 28), torch.rand(4, 1, 32, 32)])
def test_wrong_image_shape_is_a_clear_error(bad):
    for model in (Autoencoder(2, 32), VAE(2, 32)):
        with pytest.raises(ValueError, match="28"):
            model.encode(bad)


def test_wrong_latent_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        Autoencoder(2, 32).decode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(batch, 4\)"):
        VAE(4, 32).decode(torch.zeros(4))


def test_vae_rejects_unknown_likelihood():
    with pytest.raises(ValueError, match="bernoulli"):
        VAE(likelihood="poisson")


def test_vae_forward_shapes_and_parts():
    model = VAE(latent_dim=5, hidden=32)
    out = model(torch.bernoulli(_images()), beta=2.0)
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (4, 5)
    assert out["neg_elbo"].shape == out["recon"].shape == out["kl"].shape == (4,)
    torch.testing.assert_close(out["loss"], (out["recon"] + 2.0 * out["kl"]).mean())
    torch.testing.assert_close(out["neg_elbo"], out["recon"] + out["kl"])
    assert model.sample(6).shape == (6, 1, 28, 28)


def test_reparameterisation_gradient_flows_to_encoder():
    torch.manual_seed(0)
    model = VAE(latent_dim=3, hidden=16)
    out = model(torch.bernoulli(_images()))
    out["recon"].sum().backward()           # the reconstruction term reaches the encoder only via z
    enc_grad = sum(p.grad.abs().sum() for p in model.to_stats.parameters())
    assert enc_grad > 0


def test_reparameterize_value_and_derivatives():
    torch.manual_seed(1)
    mu = torch.randn(5, 3, requires_grad=True)
    logvar = torch.randn(5, 3, requires_grad=True)
    torch.manual_seed(2)
    z = reparameterize(mu, logvar)
    torch.manual_seed(2)
    eps = torch.randn(5, 3)
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(5, 3))
    torch.testing.assert_close(logvar.grad, 0.5 * (0.5 * logvar.detach()).exp() * eps)


def test_a_plain_sample_blocks_the_gradient():
    """What the reparametrisation fixes: .sample() is cut from the graph, .rsample() is not."""
    mu = torch.zeros(3, requires_grad=True)
    d = torch.distributions.Normal(mu, 1.0)
    assert not d.sample().requires_grad
    assert d.rsample().requires_grad


def test_gradient_estimators_are_unbiased_and_reparam_has_lower_variance():
    # f(z) = −‖z − c‖²: ∇_μ E[f] = −2 (μ − c) exactly
    c = torch.tensor([1.0, -2.0])
    mu, logvar = torch.tensor([0.5, 0.5]), torch.tensor([-1.0, 0.0])
    f = lambda z: -(z - c).pow(2).sum(1)
    exact = -2 * (mu - c)
    g = torch.Generator().manual_seed(0)
    rep = gradient_estimates(f, mu, logvar, 20000, "reparam", generator=g)
    sco = gradient_estimates(f, mu, logvar, 20000, "score", generator=g)
    assert rep.shape == sco.shape == (20000, 2)
    for est in (rep, sco):
        se = est.std(0) / 20000 ** 0.5
        assert ((est.mean(0) - exact).abs() < 5 * se + 1e-3).all(), (est.mean(0), exact)
    assert rep.var(0).sum() * 3 < sco.var(0).sum()
    base = gradient_estimates(f, mu, logvar, 20000, "score", baseline=True, generator=g)
    assert base.var(0).sum() < sco.var(0).sum()
    with pytest.raises(ValueError, match="estimator"):
        gradient_estimates(f, mu, logvar, 10, "magic")


def test_interpolate_and_latent_grid():
    a, b = torch.zeros(2), torch.ones(2)
    path = interpolate(a, b, 5)
    assert path.shape == (5, 2)
    torch.testing.assert_close(path[2], torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="same shape"):
        interpolate(torch.zeros(2), torch.zeros(3))
    grid = latent_grid(5)
    assert grid.shape == (25, 2)
    assert grid[0, 0] < 0 < grid[0, 1] and grid[4, 0] > 0      # top-left: z₁ < 0, z₂ > 0
    q = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.95))
    torch.testing.assert_close(grid[:, 0].max(), q)
    torch.testing.assert_close(latent_grid(3, extent=2.0)[:, 0].unique(), torch.tensor([-2.0, 0.0, 2.0]))
    box = latent_grid(3, extent=((0.0, 1.0), (10.0, 12.0)))
    torch.testing.assert_close(box[:, 0].unique(), torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(box[:3, 1], torch.full((3,), 12.0))          # top row = largest z₂
    z = torch.stack([torch.linspace(0, 10, 1001), torch.linspace(-1, 1, 1001)], 1)
    (a, b), (c, d) = latent_bounds(z, q=0.0, pad=0.1)
    assert (a, b) == pytest.approx((-1.0, 11.0)) and (c, d) == pytest.approx((-1.2, 1.2))


def test_pca_errors_decrease_with_dim_and_match_exact_projection():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 1, 28, 28, generator=g)
    errs = pca_reconstruction_errors(x[:200], x[200:], (2, 8, 32))
    assert errs[2] > errs[8] > errs[32] > 0
    # reference: exact SVD projection
    a = x[:200].flatten(1).double()
    m = a.mean(0, keepdim=True)
    v = torch.linalg.svd(a - m, full_matrices=False).Vh[:8].T
    b = x[200:].flatten(1).double()
    ref = (b - (m + (b - m) @ v @ v.T)).pow(2).sum(1).mean().item()
    assert errs[8] == pytest.approx(ref, rel=1e-3)
    pca = fit_pca(x[:200], 8)
    assert pca_reconstruction_errors(None, x[200:], (8,), pca=pca)[8] == pytest.approx(ref, rel=1e-3)
    with pytest.raises(ValueError, match="components"):
        pca_reconstruction_errors(None, x[200:], (32,), pca=pca)


def test_pca_codes_match_exact_svd_on_low_rank_data():
    g = torch.Generator().manual_seed(6)
    basis = torch.linalg.qr(torch.randn(784, 3, generator=g)).Q.T           # 3 orthonormal directions
    x = (torch.randn(400, 3, generator=g) * torch.tensor([5.0, 3.0, 1.0])) @ basis + 0.5
    x = x + 0.01 * torch.randn(400, 784, generator=g)
    pca = fit_pca(x[:300].view(-1, 1, 28, 28), 3)
    codes = pca_codes(pca, x[300:].view(-1, 1, 28, 28))
    m = x[:300].mean(0, keepdim=True)
    v = torch.linalg.svd(x[:300] - m, full_matrices=False).Vh[:3].T
    ref = (x[300:] - m) @ v
    assert codes.shape == (100, 3)
    torch.testing.assert_close(codes.abs(), ref.abs(), atol=2e-2, rtol=1e-2)    # up to the sign of each axis
    assert pca_codes(pca, x[300:].view(-1, 1, 28, 28), 2).shape == (100, 2)


def test_hole_fraction():
    g = torch.Generator().manual_seed(5)
    ring = torch.randn(4000, 2, generator=g)
    ring = ring / ring.norm(dim=1, keepdim=True) * 3                 # codes on a circle: the inside is a hole
    assert hole_fraction(ring, torch.randn(200, 2, generator=g) * 0.3) == 1.0    # the centre is empty
    fresh = torch.randn(2000, 2, generator=g)
    fresh = fresh / fresh.norm(dim=1, keepdim=True) * 3
    assert hole_fraction(ring, fresh) < 0.1                           # new codes from the same circle
    assert hole_fraction(ring, torch.full((10, 2), 100.0)) == 1.0    # far outside is a hole too
    with pytest.raises(ValueError, match="same d"):
        hole_fraction(torch.zeros(5, 3), torch.zeros(5, 2))


def test_linear_probe_reads_separable_codes():
    g = torch.Generator().manual_seed(4)
    y = torch.arange(200) % 2
    z = torch.randn(200, 2, generator=g) * 0.3 + y[:, None].float() * 3
    assert linear_probe(z[:100], y[:100], z[100:], y[100:]) > 0.95
    z_noise = torch.randn(200, 2, generator=g)
    assert linear_probe(z_noise[:100], y[:100], z_noise[100:], y[100:]) < 0.8


def test_helpers_on_small_models():
    x = _images(10)
    ae, vae = Autoencoder(2, 16).eval(), VAE(3, 16).eval()
    assert encode_all(ae, x, batch_size=3).shape == (10, 2)
    assert encode_all(vae, x, batch_size=3).shape == (10, 3)
    with torch.no_grad():
        ref = (ae(x)[0] - x).pow(2).flatten(1).sum(1).mean().item()
    assert reconstruction_error(ae, x, batch_size=4) == pytest.approx(ref, rel=1e-5)
    kd = kl_per_dim(vae, x, batch_size=4)
    with torch.no_grad():
        mu, logvar = vae.encode(x)
    from ldm_edu.losses import gaussian_kl
    assert kd.shape == (3,)
    assert kd.sum().item() == pytest.approx(gaussian_kl(mu, logvar).mean().item(), rel=1e-5)


def test_vae_loss_trains_a_step():
    torch.manual_seed(0)
    model = VAE(4, 32)
    x = _images(16)
    loss, parts = vae_loss(beta=0.5)(model, x)
    loss.backward()
    assert set(parts) == {"recon", "kl"} and torch.isfinite(loss)


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_preset_sizes_build_and_take_one_step(name):
    """Every preset's AE and VAE (lessons 01–02) builds and trains one step on the CPU."""
    from ldm_edu.data import TensorBatches
    from ldm_edu.presets import get_preset
    from ldm_edu.train import fit
    p = get_preset(name, device="cpu")
    x = _images(p.vae.batch_size)
    ae = Autoencoder(p.ae.latent_dim, p.ae.hidden)
    vae = VAE(p.vae.latent_dim, p.vae.hidden)
    for model, loss in ((ae, ae_loss), (vae, vae_loss())):
        h = fit(model, loss, TensorBatches(x, batch_size=p.vae.batch_size), 1, lr=p.vae.lr, progress=False,
                live_plot=False)
        assert len(h.loss) == 1 and torch.isfinite(torch.tensor(h.loss)).all()
    assert max(p.ae.sweep_dims) <= 784 and p.vae.n_eval_iw <= p.vae.n_eval and min(p.vae.betas) > 0
