"""Lesson 07, the VQGAN / LDM first-stage recipe: adaptive weight against a hand computation, hinge
losses, warm-up, the perceptual network (frozen, random, not the FID classifier), PatchGAN shapes,
and the two-optimiser step inside fit()."""
import copy

import pytest
import torch

from ldm_edu.latent import FirstStage
from ldm_edu.classifier import MNISTClassifier
from ldm_edu.movq import MoVQFirstStage
from ldm_edu.dcae import DCAutoencoder
from ldm_edu.train import fit
from ldm_edu.vqgan import (PatchDiscriminator, RandomFeatureNet, VQGANLoss, adaptive_weight, first_stage_terms,
                           gan_factor, hinge_d_loss, hinge_g_loss, vqgan_loss_fn)


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


def test_adaptive_weight_against_hand_computation():
    """Last layer y = W x: ∇_W Σ(y − t)² = 2 (y − t) xᵀ and ∇_W Σ a ⊙ y = a xᵀ, so
    λ = ‖2 (Wx − t) xᵀ‖ / (‖a xᵀ‖ + δ) = ‖2 (Wx − t)‖ ‖x‖ / (‖a‖ ‖x‖ + δ)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 5, generator=g, requires_grad=True)
    x, t, a = torch.randn(5, generator=g), torch.randn(3, generator=g), torch.randn(3, generator=g)
    y = W @ x
    rec, gan = (y - t).pow(2).sum(), (a * y).sum()
    delta = 1e-4
    lam = adaptive_weight(rec, gan, W, delta=delta)
    with torch.no_grad():
        hand = (2 * (W @ x - t)).norm() * x.norm() / (a.norm() * x.norm() + delta)
    torch.testing.assert_close(lam, hand)
    assert not lam.requires_grad                                   # a weight, not a gradient path
    rec.backward()                                                 # the graph was kept for the real backward
    # rescaling the GAN loss by c rescales λ by 1/c: λ·L_GAN's gradient keeps the size of L_rec's
    lam3 = adaptive_weight((W @ x - t).pow(2).sum(), 3 * (a * (W @ x)).sum(), W, delta=0.0)
    lam1 = adaptive_weight((W @ x - t).pow(2).sum(), (a * (W @ x)).sum(), W, delta=0.0)
    torch.testing.assert_close(lam3 * 3, lam1)


def test_adaptive_weight_is_clamped():
    w = torch.ones(2, requires_grad=True)
    lam = adaptive_weight((w * 1e6).sum(), (w * 1e-12).sum(), w, delta=0.0, max_weight=1e4)
    assert lam.item() == pytest.approx(1e4)


def test_hinge_losses_hand_computed():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # ½ (mean(relu(1 − [2, 0.5])) + mean(relu(1 + [−2, 0.5]))) = ½ (0.25 + 0.75)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5)
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)
    assert hinge_d_loss(torch.full((3,), 5.0), torch.full((3,), -5.0)).item() == 0.0   # confident D: no loss


def test_warm_up_switch():
    assert [gan_factor(s, 3) for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    loss = VQGANLoss(disc_start=2)
    assert [loss.gan_on(s) for s in range(4)] == [False, False, True, True]
    assert not VQGANLoss(disc_weight=0.0).gan_on(10)


def test_perceptual_net_is_frozen_random_deterministic_and_not_the_fid_classifier():
    a, b = RandomFeatureNet(seed=7), RandomFeatureNet(seed=7)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)                                  # rebuilt bit for bit from its seed
    assert not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training
    assert not any(isinstance(m, MNISTClassifier) for m in a.modules())
    assert not torch.equal(next(RandomFeatureNet(seed=8).parameters()), next(a.parameters()))
    x, y = _images(3), _images(3, seed=1)
    d = a.distance(x, y)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(a.distance(x, x), torch.zeros(3))
    torch.testing.assert_close(d, a.distance(y, x))
    # a slightly perturbed image is closer than an unrelated one
    assert (a.distance(x, x + 0.05 * torch.randn_like(x)) < d).all()


def test_perceptual_distance_hand_computed_for_one_layer():
    """Uniform-weight LPIPS: mean over positions of ‖f/‖f‖ − g/‖g‖‖² for each layer, summed."""
    net = RandomFeatureNet(widths=(4,), seed=3)
    x, y = _images(2), _images(2, seed=5)
    fx, fy = net.stages[0](x), net.stages[0](y)
    nx, ny = fx / (fx.norm(dim=1, keepdim=True) + 1e-10), fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
    hand = (nx - ny).pow(2).sum(1).mean((1, 2))
    torch.testing.assert_close(net.distance(x, y), hand, rtol=1e-4, atol=1e-6)


def test_patch_discriminator_shapes():
    d = PatchDiscriminator(ch=8, n_layers=2)
    assert d(_images(3)).shape == (3, 1, 5, 5)
    assert PatchDiscriminator(ch=8, n_layers=1)(_images(2)).shape == (2, 1, 12, 12)   # 28 → 14 → 13 → 12
    with pytest.raises(ValueError, match="shape"):
        d(torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match="n_layers"):
        PatchDiscriminator(n_layers=0)


def test_generator_loss_is_rec_plus_lambda_gan():
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=2, ch=8)
    loss = VQGANLoss(perceptual_weight=0.5, disc_weight=0.8, disc_start=0, disc_ch=8)
    x = _images(4)
    x_hat = ae(x)["x_hat"]
    total, logs = loss.generator_loss(x, x_hat, ae.last_layer, step=0)
    # by hand: Σ|x − x̂| + w_p · P · 784 per image, mean over the batch; then + λ · (−mean D(x̂))
    rec = ((x - x_hat).abs().flatten(1).sum(1) + 0.5 * loss.perceptual.distance(x, x_hat) * 784).mean()
    g = -loss.discriminator(x_hat).mean()
    lam = 0.8 * adaptive_weight(rec, g, ae.decoder.conv_out.weight)
    torch.testing.assert_close(total, rec + lam * g, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logs["lam"], lam)
    # before the warm-up ends: reconstruction only, no discriminator call
    loss.disc_start = 10
    total, logs = loss.generator_loss(x, x_hat, ae.last_layer, step=3)
    torch.testing.assert_close(total, rec, rtol=1e-5, atol=1e-4)
    assert "lam" not in logs
    with pytest.raises(ValueError, match="rec must be"):
        VQGANLoss(rec="l3")


def test_first_stage_terms_for_every_first_stage():
    x = _images(2)
    kl = FirstStage(f=4, latent_ch=2, ch=8, kl_weight=0.5)
    torch.manual_seed(0)
    x_hat, reg, logs = first_stage_terms(kl, x)
    assert x_hat.shape == x.shape and "kl" in logs
    torch.testing.assert_close(reg, 0.5 * logs["kl"])
    vq = MoVQFirstStage(f=4, latent_ch=2, ch=8, codebook_size=8)
    _, reg, logs = first_stage_terms(vq, x)
    torch.testing.assert_close(reg, logs["vq"] * 2 * 8 * 8)
    dc = DCAutoencoder(f=16, latent_ch=16, ch=8, max_ch=32)
    _, reg, logs = first_stage_terms(dc, x)
    assert reg.item() == 0 and logs == {}
    assert dc.last_layer is dc.conv_out.weight and vq.last_layer is vq.decoder.conv_out.weight
    assert kl.last_layer is kl.decoder.conv_out.weight and kl.latent_shape == (kl.latent_ch, 8, 8)


def test_fit_trains_generator_and_discriminator_after_warm_up():
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=2, ch=8)
    loss = VQGANLoss(disc_start=3, disc_ch=8)
    d0 = copy.deepcopy(loss.discriminator.state_dict())
    fn = vqgan_loss_fn(loss, lr=1e-3)
    x = _images(8)
    batches = iter(lambda: x, None)
    hist = fit(ae, fn, batches, 3, progress=False, live_plot=False, log_every=1)
    for k, v in loss.discriminator.state_dict().items():           # warm-up: D untouched
        assert torch.equal(v, d0[k]), k
    assert "lam" not in hist.metrics
    w0 = ae.decoder.conv_out.weight.detach().clone()
    hist = fit(ae, fn, batches, 3, progress=False, live_plot=False, log_every=1, history=hist)
    assert any(not torch.equal(v, d0[k]) for k, v in loss.discriminator.state_dict().items() if v.is_floating_point())
    assert not torch.equal(w0, ae.decoder.conv_out.weight)
    assert len(hist.metrics["lam"]) == 3 and all(v > 0 for v in hist.metrics["lam"])
    assert {"d_loss", "d_real", "d_fake", "gan", "perceptual", "pixel", "kl"} <= set(hist.metrics)
    assert fn.state["step"] == 6
    # fit's optimiser holds the autoencoder only: the discriminator has its own
    assert not set(map(id, loss.discriminator.parameters())) & set(map(id, ae.parameters()))


def test_discriminator_can_start_before_the_adversarial_term():
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=2, ch=8)
    loss = VQGANLoss(disc_start=3, d_start=1, disc_ch=8)
    assert [loss.d_on(s) for s in range(4)] == [False, True, True, True]
    assert [loss.gan_on(s) for s in range(4)] == [False, False, False, True]
    fn = vqgan_loss_fn(loss, lr=1e-3)
    x = _images(8)
    d0 = copy.deepcopy(loss.discriminator.state_dict())
    hist = fit(ae, fn, iter(lambda: x, None), 3, progress=False, live_plot=False, log_every=1)
    assert any(not torch.equal(v, d0[k]) for k, v in loss.discriminator.state_dict().items() if v.is_floating_point())
    assert "lam" not in hist.metrics and len(hist.metrics["d_loss"]) == 2     # D stepped at steps 1 and 2 only
    with pytest.raises(ValueError, match="d_start"):
        VQGANLoss(disc_start=2, d_start=5)
