"""Lesson 06: first-stage shapes, the scale factor, the LatentDiffusion pipeline, bad input."""
import math

import pytest
import torch

from ldm_edu.diffusion import NoiseSchedule
from ldm_edu.latent import (FirstStage, LatentDiffusion, check_factor, crop_images, encode_dataset, first_stage_loss, latent_scale_factor, pad_images, reconstruction_psnr)
from ldm_edu.presets import get_preset
from ldm_edu.unet import UNet



def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


@pytest.mark.parametrize("f,size", [(1, 32), (2, 16), (4, 8), (8, 4)])
@pytest.mark.parametrize("reg", ["kl", "vq"])
def test_first_stage_shapes_per_f(f, size, reg):
    ae = FirstStage(f=f, latent_ch=3, ch=8, reg=reg, codebook_size=16)
    x = _images(2)
    z = ae.encode(x)
    assert z.shape == (2, 3, size, size) == (2, *ae.latent_shape)
    assert ae.decode(z).shape == (2, 1, 28, 28)
    out = ae(x)
    assert out["x_hat"].shape == x.shape and out["loss"].dim() == 0 and torch.isfinite(out["loss"])


def test_pad_crop_roundtrip_and_background():
    x = _images(3)
    p = pad_images(x)
    assert p.shape == (3, 1, 32, 32)
    assert torch.equal(crop_images(p), x)
    assert (p[..., :2, :] == -1).all() and (p[..., :, -2:] == -1).all()


@pytest.mark.parametrize("bad", [3, 5, 6, 0, -2, 64, 2.0, "4"])
def test_bad_compression_factor_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="compression factor"):
        check_factor(bad)
    with pytest.raises(ValueError, match="compression factor"):
        FirstStage(f=bad)


def test_bad_regulariser_and_image_shape():
    with pytest.raises(ValueError, match="reg must be"):
        FirstStage(reg="gan")
    ae = FirstStage(f=4, ch=8)
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\)"):
        ae.encode(torch.zeros(2, 28, 28))          # no channel axis
    with pytest.raises(ValueError, match=r"\(batch, 4, 8, 8\)"):
        ae.decode(torch.zeros(2, 4, 7, 7))         # latent of another f


def test_kl_loss_matches_hand_computation():
    """loss = Σ_pixels (x − x̂)² + w · ½ Σ (μ² + σ² − 1 − log σ²) (eq. 19, 22), with fixed ε."""
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=2, ch=8, kl_weight=0.5)
    x = _images(4)
    torch.manual_seed(1)
    out = ae(x)
    mu, logvar = ae.posterior(x)
    torch.manual_seed(1)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    x_hat = crop_images(ae.decoder(z))
    rec = ((x_hat - x) ** 2).sum((1, 2, 3)).mean()
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum((1, 2, 3)).mean()
    torch.testing.assert_close(out["rec"], rec)
    torch.testing.assert_close(out["kl"], kl, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["loss"], rec + 0.5 * kl, rtol=1e-5, atol=1e-5)


def test_vq_first_stage_decodes_through_codebook():
    """decode(z_e) equals decode(nearest code) — the quantiser sits inside the decoder."""
    ae = FirstStage(f=4, latent_ch=3, ch=8, reg="vq", codebook_size=8).eval()
    z = ae.encode(_images(2))
    cb = ae.quantizer.codebook.detach()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = cb[torch.cdist(flat, cb).argmin(1)].view(2, 8, 8, 3).permute(0, 3, 1, 2)
    torch.testing.assert_close(ae.decode(z), crop_images(ae.decoder(nearest)))
    loss, logs = first_stage_loss(ae.train(), _images(4))
    assert "vq" in logs and torch.isfinite(loss)


def test_scale_factor_gives_unit_variance():
    torch.manual_seed(0)
    z = torch.randn(500, 4, 8, 8) * 7.3 + 0.2
    s = latent_scale_factor(z)
    assert abs(s - 1 / z.std().item()) < 1e-9
    assert abs((z * s).std().item() - 1.0) < 1e-5
    with pytest.raises(ValueError, match="collapsed"):
        latent_scale_factor(torch.zeros(10, 4, 2, 2))


def test_scale_factor_of_an_untrained_encoder_unit_variance():
    ae = FirstStage(f=4, latent_ch=4, ch=8)
    z = encode_dataset(ae, _images(64), batch_size=20)
    assert z.shape == (64, 4, 8, 8)
    assert abs((z * latent_scale_factor(z)).std().item() - 1) < 1e-5


def _ldm(num_classes=None, scale=0.37):
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=4, ch=8)
    unet = UNet(in_ch=4, ch=8, ch_mult=(1, 2), num_classes=num_classes, image_size=8)
    return LatentDiffusion(ae, unet, NoiseSchedule(T=50), scale_factor=scale)


def test_scaled_encode_decode_equals_unscaled():
    ldm = _ldm()
    x = _images(3)
    z = ldm.encode(x)
    torch.testing.assert_close(z, ldm.autoencoder.encode(x) * 0.37)
    expect = ((ldm.autoencoder.decode(ldm.autoencoder.encode(x)) + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(ldm.decode(z), expect, rtol=1e-5, atol=1e-5)


def test_ldm_sampling_shapes_and_determinism():
    ldm = _ldm(num_classes=10)
    a = ldm.sample(3, y=7, guidance=2.0, steps=4, method="ddim", generator=torch.Generator().manual_seed(1))
    b = ldm.sample(3, y=7, guidance=2.0, steps=4, method="ddim", generator=torch.Generator().manual_seed(1))
    c = ldm.sample(3, y=7, guidance=2.0, steps=4, method="ddim", generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    z, traj = ldm.sample(2, steps=3, decode=False, return_trajectory=True, generator=torch.Generator().manual_seed(0))
    assert z.shape == (2, 4, 8, 8) and len(traj.xs) == 4


def test_ldm_bad_input():
    ldm = _ldm(num_classes=10)
    with pytest.raises(ValueError, match=r"\(batch, 4, 8, 8\)"):
        ldm.decode(torch.zeros(2, 4, 7, 7))
    with pytest.raises(ValueError, match=r"\(batch, 4, 8, 8\)"):
        ldm.sample(2, z_T=torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="y must be"):
        ldm.sample(2, y=torch.tensor([1, 2, 3]), steps=2)
    with pytest.raises(ValueError, match="scale_factor"):
        LatentDiffusion(ldm.autoencoder, ldm.unet, ldm.schedule, scale_factor=0.0)


def test_ldm_loss_trains_the_unet_only():
    ldm = _ldm(num_classes=10)
    z0 = torch.randn(4, 4, 8, 8)
    loss = ldm.loss(z0, y=torch.tensor([0, 1, 2, 3]), p_uncond=0.5)
    loss.backward()
    assert all(p.grad is None for p in ldm.autoencoder.parameters())
    assert any(p.grad is not None for p in ldm.unet.parameters())


def test_reconstruction_psnr_of_identity_like_decoder_is_high():
    ae = FirstStage(f=1, latent_ch=1, ch=8)
    # an (almost) perfect decoder: PSNR is large; a constant one: PSNR matches the closed form
    x = _images(4)
    val = reconstruction_psnr(ae, x)
    mse = (((ae.decode(ae.encode(x)) + 1) / 2).clamp(0, 1) - (x + 1) / 2).pow(2).flatten(1).mean(1)
    assert math.isclose(val, (10 * torch.log10(1 / mse)).mean().item(), rel_tol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_presets_build_and_take_one_step_on_cpu(name):
    cfg = get_preset(name, device="cpu").ldm
    torch.manual_seed(0)
    ae = FirstStage(f=cfg.f, latent_ch=cfg.latent_ch, ch=cfg.ae_ch, kl_weight=cfg.kl_weight)
    loss, _ = first_stage_loss(ae, _images(2))
    loss.backward()
    s = PADDED = 32 // cfg.f
    unet = UNet(in_ch=cfg.latent_ch, ch=cfg.unet_ch, ch_mult=cfg.unet_ch_mult, num_res=cfg.unet_num_res,
                num_classes=10, image_size=s)
    ldm = LatentDiffusion(ae, unet, NoiseSchedule(T=cfg.T), scale_factor=1.0)
    ldm.loss(torch.randn(2, cfg.latent_ch, PADDED, PADDED), y=torch.tensor([1, 2]), p_uncond=cfg.p_uncond).backward()
    assert len(cfg.study_fs) == len(cfg.study_latent_ch)
    for f in cfg.study_fs:
        check_factor(f)


# ----------------------------------------------------------------------------- lesson 06 exercises
def test_exercise_checkers_accept_solutions_and_reject_wrong_answers(capsys):
    from ldm_edu.exercises import lesson06 as ex
    ae = FirstStage(f=4, latent_ch=4, ch=8).eval()
    x = _images(3)
    assert ex.check_latent_shape(ex.latent_shape_solution)
    assert not ex.check_latent_shape(lambda f, c, size=32: (c, size // f, size))
    assert ex.check_cost_ratio(ex.pixel_to_latent_cost_ratio_solution)
    assert ex.check_cost_ratio(lambda f: 784 / (32 / f) ** 2)
    assert not ex.check_cost_ratio(lambda f: f * f)
    assert ex.check_scale_factor(ex.scale_factor_solution)
    assert not ex.check_scale_factor(lambda z: 1 / z.abs().mean().item())
    assert ex.check_decode_scaled(ex.decode_scaled_solution, ae, x)
    assert not ex.check_decode_scaled(lambda a, z, s: a.decode(z * s), ae, x)
    assert not ex.check_decode_scaled(lambda a, z, s: (_ for _ in ()).throw(NotImplementedError()), ae, x)
    out = capsys.readouterr().out
    assert "✅" in out and "❌" in out and "Replace `raise NotImplementedError`" in out


# ----------------------------------------------------------------------------- the f-study
def test_training_flops_scale_with_latent_positions():
    """Counted FLOPs of a UNet step fall with the number of latent positions and grow with batch."""
    from ldm_edu.experiments.latent_diffusion import training_flops
    fl = {}
    for f, c in ((1, 1), (2, 2), (4, 4)):
        torch.manual_seed(0)
        unet = UNet(in_ch=c, ch=8, ch_mult=(1, 2), num_classes=10, image_size=32 // f)
        fl[f] = training_flops(unet, (c, 32 // f, 32 // f), batch_size=4)
    assert fl[1] > 3 * fl[2] > 9 * fl[4] > 0
    torch.manual_seed(0)
    unet = UNet(in_ch=4, ch=8, ch_mult=(1, 2), num_classes=10, image_size=8)
    assert math.isclose(training_flops(unet, (4, 8, 8), 8), 2 * training_flops(unet, (4, 8, 8), 4), rel_tol=1e-9)


def test_study_step_counts_equal_compute_and_caps():
    from ldm_edu.experiments.latent_diffusion import study_step_counts
    assert study_step_counts([16.0, 4.0, 1.0], 10, budget="steps") == [10, 10, 10]
    assert study_step_counts([16.0, 4.0, 1.0], 10) == [10, 40, 160]               # equal steps × FLOPs
    assert study_step_counts([16.0, 4.0, 1.0], 10, max_steps=50) == [10, 40, 50]
    with pytest.raises(ValueError, match="'steps'.*'flops'"):
        study_step_counts([1.0], 10, budget="time")


def test_compression_study_runs_and_reports_per_f():
    from ldm_edu.experiments.latent_diffusion import compression_study
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(64) % 10
    res = compression_study(x, y, x[:16], (x[:50] + 1) / 2, fs=(2, 4), latent_chs=(2, 4), ae_ch=4, ae_steps=2,
                            unet_ch=4, steps=2, evals=2, batch_size=8, n_fid=50, sample_steps=2, T=1000,
                            max_steps=5, progress=False)
    assert [r.f for r in res] == [2, 4] and res[0].latent_shape == (2, 16, 16)
    assert res[0].steps == [1, 2] and res[1].steps[-1] == 5          # f=4 is cheaper: more steps, capped
    assert all(len(r.fid) == len(r.steps) == len(r.seconds) == 2 and all(map(math.isfinite, r.fid)) for r in res)
    assert res[1].gflops[-1] == pytest.approx(5 * res[1].flops_per_step / 1e9)
    with pytest.raises(ValueError, match="f"):
        compression_study(x, y, x, x, fs=(3,), latent_chs=(1,))
