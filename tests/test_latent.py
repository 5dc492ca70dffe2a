"""Lesson 06: first-stage shapes, the scale factor, the LatentDiffusion pipeline, bad input."""
import math

import pytest
import torch
from torch import nn

from ldm_edu.diffusion import NoiseSchedule
from ldm_edu.latent import (FirstStage, LatentDiffusion, check_factor, crop_images, encode_dataset, first_stage_loss, latent_scale_factor, pad_images, posterior_dataset, posterior_sample, reconstruction_psnr)
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
    z = ldm.sample(2, steps=3, decode=False, generator=torch.Generator().manual_seed(0))
    traj = list(ldm.sample_progressive(2, steps=3, generator=torch.Generator().manual_seed(0)))
    assert z.shape == (2, 4, 8, 8) and len(traj) == 4 and traj[-1].t == -1
    torch.testing.assert_close(traj[-1].x_t, z)


def test_ldm_sample_is_the_four_steps():
    """z_T from the generator → the sampler on scaled latents → z / s → decode, mapped to [0, 1]."""
    from ldm_edu.sampling import sample
    ldm = _ldm(num_classes=10)
    with torch.no_grad():
        ldm.unet.conv_out.weight.normal_(0, 0.05)             # a UNet that does not output ε = 0
    y = torch.tensor([1, 5, 9])
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 4, 8, 8, generator=g)
    z = sample(ldm.unet, ldm.schedule, z.shape, method="ddpm", steps=5, y=y, guidance=2.0, generator=g, x_T=z,
               progress=False)
    want = ((ldm.autoencoder.decode(z / 0.37) + 1) / 2).clamp(0, 1)
    got = ldm.sample(3, y=y, guidance=2.0, steps=5, method="ddpm", generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, want)


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
    with pytest.raises(ValueError, match="clip_x0"):
        LatentDiffusion(ldm.autoencoder, ldm.unet, ldm.schedule, clip_x0=-1.0)


def test_ldm_sample_clips_x0_to_the_training_range():
    """The cosine schedule's last ᾱ ≈ 2e-9: a UNet that predicts ε̂ = 0 makes x̂_0 = z_T/√ᾱ ≈ 1e4 on the first
    step. With clip_x0 every x̂_0 of the trajectory, and the final latent, stay within ±clip_x0."""
    ldm = _ldm()
    zero = UNet(in_ch=4, ch=8, ch_mult=(1, 2), image_size=8)
    for p_ in zero.parameters():
        torch.nn.init.zeros_(p_)
    cos = NoiseSchedule(1000, "cosine")
    free = LatentDiffusion(ldm.autoencoder, zero, cos)
    clipped = LatentDiffusion(ldm.autoencoder, zero, cos, clip_x0=2.5)
    g = lambda: torch.Generator().manual_seed(0)
    assert free.sample(3, steps=10, generator=g(), decode=False).abs().max() > 1e3
    steps = list(clipped.sample_progressive(3, steps=10, generator=g()))
    assert all(s.x0_hat.abs().max() <= 2.5 + 1e-5 for s in steps)
    assert clipped.sample(3, steps=10, generator=g(), decode=False).abs().max() <= 2.5 + 1e-5


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
    from ldm_edu.experiments.latent_diffusion import latent_unet, study_unet
    preset = get_preset(name, device="cpu")
    cfg, d = preset.ldm, preset.diffusion
    torch.manual_seed(0)
    ae = FirstStage(f=cfg.f, latent_ch=cfg.latent_ch, ch=cfg.ae_ch, kl_weight=cfg.kl_weight)
    loss, _ = first_stage_loss(ae, _images(2))
    loss.backward()
    unet = latent_unet(d, ae.latent_shape)
    pixel = __import__("ldm_edu.unet", fromlist=["unet_from_config"]).unet_from_config(d)
    # lesson 04's UNet family: the same widths, so parameters differ only in the first and last conv
    assert unet.config["ch"] == d.ch and tuple(unet.config["ch_mult"]) == tuple(d.ch_mult) and unet.patch == 1
    n_lat, n_pix = (sum(p.numel() for p in m.parameters()) for m in (unet, pixel))
    assert abs(n_lat - n_pix) < 0.01 * n_pix
    ldm = LatentDiffusion(ae, unet, NoiseSchedule(d.T, d.schedule), scale_factor=1.0)
    ldm.loss(torch.randn(2, *ae.latent_shape), y=torch.tensor([1, 2]), p_uncond=d.p_uncond).backward()
    assert len(cfg.study_fs) == len(cfg.study_latent_ch) and len(cfg.study_seeds) >= 2
    for f, c in zip(cfg.study_fs, cfg.study_latent_ch):
        check_factor(f)
        study_unet(f, c, cfg.study_unet_ch)
    assert cfg.steps % cfg.eval_every == 0, "evaluate at the last step too"
    assert all(m in ("ddpm", "ddim") and k >= 1 for m, k in cfg.samplers)


# ----------------------------------------------------------------------------- the FLOP counter
def test_training_step_flops_against_hand_count():
    """Linear(a, b) → Linear(b, c) on B inputs: forward 2B(ab + bc); backward: the first layer needs only
    its weight gradient (2Bab; the input needs none), the second its weight and input gradients (4Bbc)."""
    from torch import nn
    from ldm_edu.nn import training_step_flops
    a, b, c = 5, 7, 3
    m = nn.Sequential(nn.Linear(a, b), nn.Linear(b, c))
    x = torch.randn(2, a)
    for batch in (1, 4, 64):
        assert training_step_flops(m, x, batch_size=batch) == batch * (2 * a * b + 2 * b * c + 2 * a * b + 4 * b * c)
        assert training_step_flops(m, x, batch_size=batch, backward=False) == batch * 2 * (a * b + b * c)
    assert all(p.grad is None for p in m.parameters())          # the counter leaves no gradients behind
    with pytest.raises(ValueError, match="batched example input"):
        training_step_flops(m, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        training_step_flops(m, x, batch_size=0)


def test_unet_step_flops_scale_with_latent_positions_and_batch():
    from ldm_edu.experiments.latent_diffusion import study_unet, unet_step_flops
    fl = {f: unet_step_flops(study_unet(f, c, 8), batch_size=4) for f, c in ((1, 1), (2, 2), (4, 4))}
    assert fl[1] > 3 * fl[2] > 9 * fl[4] > 0
    u = study_unet(4, 4, 8)
    assert math.isclose(unet_step_flops(u, 8), 2 * unet_step_flops(u, 4), rel_tol=1e-9)


# ----------------------------------------------------------------------------- the SNR and the scale factor
def test_latent_log_snr_matches_the_correlation_of_noised_data():
    """x_t = √ᾱ x₀ + √(1−ᾱ) ε with std(x₀) = σ has corr(x_t, x₀)² = SNR / (1 + SNR): an independent
    estimate of σ² ᾱ / (1 − ᾱ) (Fisher-z tolerance, 4 standard errors)."""
    from ldm_edu.latent import latent_log_snr
    s = NoiseSchedule(200, "cosine")
    g = torch.Generator().manual_seed(0)
    n = 20000
    for sigma in (1.0, 5.5, 0.2):
        x0 = torch.randn(n, generator=g, dtype=torch.float64) * sigma + 3.0
        ls = latent_log_snr(s, sigma)
        for t in (20, 100, 180):
            ab = s.alpha_bars[t].double()
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
            rho = torch.corrcoef(torch.stack([xt, x0]))[0, 1]
            snr = ls[t].exp()
            assert abs(torch.atanh(rho) - torch.atanh((snr / (1 + snr)).sqrt())) < 4 / (n - 3) ** 0.5
    torch.testing.assert_close(latent_log_snr(s, 5.5) - latent_log_snr(s, 1.0),
                               torch.full((200,), 2 * math.log(5.5), dtype=torch.float64))
    with pytest.raises(ValueError, match="data_std"):
        latent_log_snr(s, 0.0)


def test_encode_dataset_samples_the_posterior():
    """sample=True draws μ + σ ε with ε from the generator: reproducible, different per generator,
    and its variance is Var(μ) + E[σ²] (law of total variance)."""
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=4, ch=8).eval()
    x = _images(64)
    a = encode_dataset(ae, x, batch_size=20, sample=True, generator=torch.Generator().manual_seed(1))
    b = encode_dataset(ae, x, batch_size=64, sample=True, generator=torch.Generator().manual_seed(1))
    c = encode_dataset(ae, x, sample=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    mu, logvar = ae.posterior(x)
    torch.testing.assert_close(encode_dataset(ae, x), mu.detach())
    eps = (a - mu.detach()) / (0.5 * logvar.detach()).exp()
    assert abs(eps.mean().item()) < 4 / eps.numel() ** 0.5 and abs(eps.std().item() - 1) < 4 / (2 * eps.numel()) ** 0.5
    m, lv = posterior_dataset(ae, x, batch_size=7)                      # one pass gives μ and log σ²
    torch.testing.assert_close(m, mu.detach())
    torch.testing.assert_close(lv, logvar.detach())
    torch.testing.assert_close(posterior_sample(m, lv, torch.Generator().manual_seed(1)), a)
    vq = FirstStage(f=4, latent_ch=4, ch=8, reg="vq", codebook_size=8)
    with pytest.raises(ValueError, match="KL first stage"):
        encode_dataset(vq, x, sample=True)


def test_ldm_decode_in_batches_equals_one_pass(monkeypatch):
    import ldm_edu.nn as N
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=4, ch=8).eval()
    ldm = LatentDiffusion(ae, nn.Identity(), NoiseSchedule(10), scale_factor=0.5)
    z = torch.randn(10, *ae.latent_shape)
    whole = ldm.decode(z)
    monkeypatch.setattr(N, "eval_batch_size", lambda device: 3)          # 3 + 3 + 3 + 1 (nn.eval_batches)
    torch.testing.assert_close(ldm.decode(z), whole)
    torch.testing.assert_close(whole, ((ae.decode(z / 0.5) + 1) / 2).clamp(0, 1))


# ----------------------------------------------------------------------------- FID against time
def _history(evals: dict, steps=100, seconds=50.0):
    from ldm_edu.train import History
    h = History(steps=[steps], loss=[0.1], seconds=seconds)
    h.evals = {k: list(v) for k, v in evals.items()}
    return h


def test_eval_curve_uses_logged_seconds_or_spreads_them():
    from ldm_edu.experiments.latent_diffusion import eval_curve
    fid = [(50, 300.0), (100, 100.0)]
    c = eval_curve(_history({"fid": fid, "fid_low": [(50, 280.0), (100, 90.0)], "fid_high": [(50, 330.0), (100, 120.0)],
                             "seconds": [(50, 20.0), (100, 41.0)]}), offset=10.0)
    assert c.seconds == [30.0, 51.0] and not c.estimated_seconds
    assert c.low == [280.0, 90.0] and c.high == [330.0, 120.0] and c.value == [300.0, 100.0]
    c = eval_curve(_history({"fid": fid}))
    assert c.estimated_seconds and c.seconds == [25.0, 50.0] and c.low == c.value
    with pytest.raises(ValueError, match="no 'fid' evaluations"):
        eval_curve(_history({}))


def test_time_to_quality_interpolates_the_first_crossing():
    from ldm_edu.experiments.latent_diffusion import Curve, time_to_quality, value_at
    c = Curve(steps=[1, 2, 3, 4], seconds=[10.0, 20.0, 30.0, 40.0], value=[400.0, 200.0, 100.0, 150.0],
              low=[0.0] * 4, high=[0.0] * 4)
    assert time_to_quality(c, 500.0) == 10.0
    assert time_to_quality(c, 300.0) == 15.0                  # halfway between 400 and 200
    assert time_to_quality(c, 150.0) == 25.0                  # the first crossing, not the last point
    assert time_to_quality(c, 99.0) is None
    assert value_at(c, 35.0) == 125.0 and value_at(c, 5.0) is None and value_at(c, 40.0) == 150.0


def test_crossing_at_the_first_evaluation_is_flagged_as_an_upper_bound():
    from ldm_edu.experiments.latent_diffusion import Curve, reached_at_first, time_to_quality
    c = Curve(steps=[1, 2], seconds=[10.0, 20.0], value=[150.0, 100.0], low=[0.0] * 2, high=[0.0] * 2)
    assert reached_at_first(c, 200.0) and time_to_quality(c, 200.0) == 10.0
    assert not reached_at_first(c, 120.0) and time_to_quality(c, 120.0) == 16.0


def test_time_to_quality_interval_crosses_the_band_edges():
    from ldm_edu.experiments.latent_diffusion import Curve, time_to_quality_interval
    c = Curve(steps=[1, 2, 3], seconds=[10.0, 20.0, 30.0], value=[100.0, 40.0, 20.0], low=[80.0, 30.0, 10.0],
              high=[120.0, 60.0, 35.0])
    early, point, late = time_to_quality_interval(c, 50.0)
    assert early == pytest.approx(10 + 10 * 30 / 50) and point == pytest.approx(10 + 10 * 50 / 60)
    assert late == pytest.approx(20 + 10 * 10 / 25) and early < point < late
    assert time_to_quality_interval(c, 30.0)[2] is None              # the upper edge never gets below 30


def test_recost_curve_puts_both_runs_on_one_clock():
    from ldm_edu.experiments.latent_diffusion import Curve, recost_curve
    c = Curve(steps=[100, 200], seconds=[7.0, 19.0], value=[50.0, 20.0], low=[40.0, 15.0], high=[60.0, 25.0],
              estimated_seconds=True)
    r = recost_curve(c, 0.05, offset=30.0)
    assert r.seconds == [35.0, 40.0] and r.value == c.value and r.low == c.low and not r.estimated_seconds
    assert c.seconds == [7.0, 19.0]                                  # the logged clock is kept
    for bad in ((0.0, 0.0), (float("nan"), 0.0), (0.1, -1.0)):
        with pytest.raises(ValueError, match="seconds_per_step"):
            recost_curve(c, *bad)


def test_learned_to_sample_tells_noise_from_a_model():
    from ldm_edu.experiments.latent_diffusion import Curve, learned_to_sample
    noise = Curve(steps=[1, 2], seconds=[1.0, 2.0], value=[433.0, 397.0], low=[420.0, 383.0], high=[450.0, 411.0])
    model = Curve(steps=[1, 2], seconds=[1.0, 2.0], value=[159.0, 30.0], low=[150.0, 26.0], high=[170.0, 35.0])
    assert not learned_to_sample(noise, floor=20.0) and learned_to_sample(model, floor=20.0)
    assert learned_to_sample(noise, floor=20.0, factor=20.0)          # the factor is the line drawn
    with pytest.raises(ValueError, match="floor"):
        learned_to_sample(model, floor=0.0)


def test_train_latent_ddpm_uses_lesson_04_recipe_and_logs_time():
    from types import SimpleNamespace
    from ldm_edu.experiments.latent_diffusion import train_latent_ddpm
    d = SimpleNamespace(T=50, schedule="cosine", ch=8, ch_mult=(1, 2), num_res=1, attn=True, num_classes=10,
                        patch=2, ema_decay=0.9, batch_size=8, lr=1e-3, warmup_steps=2, p_uncond=0.1,
                        eval_method="ddpm", eval_steps=3, n_eval=12)
    torch.manual_seed(0)
    ae = FirstStage(f=4, latent_ch=4, ch=8)
    z = torch.randn(40, 4, 8, 8)
    ldm, hist = train_latent_ddpm(z, torch.arange(40) % 10, ae, 0.5, d, 4, eval_every=2,
                                  progress=False, live_plot=False)
    assert ldm.unet.patch == 1 and ldm.schedule.kind == "cosine" and ldm.scale_factor == 0.5
    assert [s for s, _ in hist.evals["fid"]] == [2, 4]
    secs = [v for _, v in hist.evals["seconds"]]
    assert 0.0 < secs[0] < secs[1] and {"fid_low", "fid_high", "real_fid"} <= set(hist.evals)


# ----------------------------------------------------------------------------- the f-study
def test_study_step_counts_equal_compute():
    from ldm_edu.experiments.latent_diffusion import study_step_counts
    assert study_step_counts([16.0, 4.0, 1.0], 160.0) == [10, 40, 160]
    assert study_step_counts([3.0], 1.0) == [1]
    with pytest.raises(ValueError, match="positive"):
        study_step_counts([1.0, 0.0], 10.0)


def test_compression_study_runs_and_reports_per_f_and_seed():
    from ldm_edu.experiments.latent_diffusion import compression_study
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(64) % 10
    res = compression_study(x, y, x[:16], fs=(2, 4), latent_chs=(2, 4), ae_ch=4, ae_steps=2, unet_ch=4, gflop=0.05,
                            evals=2, batch_size=8, n_fid=50, sample_steps=2, T=100, seeds=(0, 1), progress=False)
    assert [(r.f, r.seed) for r in res] == [(2, 0), (2, 1), (4, 0), (4, 1)] and res[0].latent_shape == (2, 16, 16)
    for r in res:
        assert len(r.fid) == len(r.steps) == len(r.seconds) == len(r.fid_low) == 2 and all(map(math.isfinite, r.fid))
        assert r.gflops[-1] == pytest.approx(0.05, rel=0.5)          # equal compute (up to rounding to steps)
    assert (res[0].batch_size, res[2].batch_size) == (2, 8)          # same latent positions per batch: 2·16² = 8·8²
    assert res[2].flops_per_step == pytest.approx(res[0].flops_per_step, rel=0.25)   # so about the same FLOPs per step
    assert res[0].fid != res[1].fid                                 # the seeds differ
    assert res[0].psnr == res[1].psnr                               # one first stage per f
    with pytest.raises(ValueError, match="f"):
        compression_study(x, y, x, fs=(3,), latent_chs=(1,))


def test_compression_study_reuses_a_given_first_stage_and_refuses_a_mismatched_one():
    from ldm_edu.experiments.latent_diffusion import compression_study, train_first_stage
    from ldm_edu.latent import reconstruction_psnr
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(32) % 10
    ae, _ = train_first_stage(x, f=4, latent_ch=4, ch=4, steps=3, batch_size=8, progress=False)
    kw = dict(ae_ch=4, ae_steps=1, unet_ch=4, gflop=0.02, evals=1, batch_size=8, n_fid=20, sample_steps=2, T=100,
              seeds=(0,), progress=False)
    res = compression_study(x, y, x[:16], fs=(4,), latent_chs=(4,), first_stages={4: ae}, **kw)
    assert res[0].psnr == pytest.approx(reconstruction_psnr(ae, x[:16]))
    with pytest.raises(ValueError, match="first_stages"):
        compression_study(x, y, x[:16], fs=(4,), latent_chs=(2,), first_stages={4: ae}, **kw)


def test_study_batch_sizes_keep_latent_positions_per_batch():
    from ldm_edu.experiments.latent_diffusion import study_batch_sizes
    assert study_batch_sizes((1, 2, 4, 8), 64) == [4, 16, 64, 256]
    assert [b * (32 // f) ** 2 for f, b in zip((2, 4, 8), study_batch_sizes((2, 4, 8), 64))] == [4096] * 3
    assert study_batch_sizes((1,), 8) == [1]                        # never below one image
    with pytest.raises(ValueError, match="batch"):
        study_batch_sizes((4,), 0)


def _result(f, seed, fids, rfid=50.0, psnr=25.0, steps=(100, 200)):
    from ldm_edu.experiments.latent_diffusion import StudyResult
    return StudyResult(f=f, seed=seed, latent_shape=(4, 32 // f, 32 // f), psnr=psnr, rfid=rfid,
                       flops_per_step=1e9 / f ** 2, steps=[s * f ** 2 for s in steps], fid=list(fids),
                       fid_low=[v - 5 for v in fids], fid_high=[v + 5 for v in fids], seconds=[1.0, 2.0])


def test_describe_study_follows_the_data():
    from ldm_edu.experiments.latent_diffusion import describe_study, study_summary
    f8_ahead = [_result(4, 0, (200, 120)), _result(4, 1, (210, 125)), _result(8, 0, (150, 90), rfid=70),
                _result(8, 1, (155, 95), rfid=70)]
    text = describe_study(f8_ahead)
    assert "f = 8 (92) < f = 4 (122)" in text and "**f = 8 is still ahead of f = 4**" in text
    assert "does **not** reach" in text and "+50 → +30" in text and "close to that floor" in text
    f4_ahead = [_result(4, 0, (200, 60)), _result(4, 1, (210, 62)), _result(8, 0, (150, 90)), _result(8, 1, (155, 95))]
    text = describe_study(f4_ahead)
    assert "**f = 4 has passed f = 8**" in text and "in every seed" not in text   # the best pair is the question: said once
    assert "about equal seconds" in text
    tied = [_result(4, 0, (200, 90)), _result(4, 1, (210, 100)), _result(8, 0, (150, 95)), _result(8, 1, (155, 92))]
    text = describe_study(tied)
    assert "not separated" in text and "cannot tell which is ahead" in text
    assert "both the seeds and the bootstrap intervals overlap" in text
    seeds_apart = [_result(4, 0, (200, 90)), _result(4, 1, (210, 91)), _result(8, 0, (150, 93)), _result(8, 1, (155, 94))]
    assert "every seed of f = 4 is ahead, but the bootstrap intervals overlap" in describe_study(seeds_apart)
    f8_leads_tied = [_result(4, 0, (160, 89), rfid=20), _result(4, 1, (221, 188), rfid=20),
                     _result(8, 0, (77, 47), rfid=41), _result(8, 1, (65, 45), rfid=41)]
    f8_leads_tied[1].fid_low = [200.0, 160.0]
    f8_leads_tied[0].fid_low = [150.0, 50.0]
    text = describe_study(f8_leads_tied)
    assert "not separated" in text and "On the means f = 8 leads" in text and "does **not** reach" in text
    assert "f = 4 seed 1 (FID 188" in text and "seed 0" not in text.split("did not learn where")[1].split("—")[0]
    assert [r["f"] for r in study_summary(f4_ahead)] == [4, 8]
    noise = [_result(4, 0, (520, 470), rfid=20), _result(8, 0, (525, 515), rfid=50)]
    text = describe_study(noise)
    assert "no f learned to sample" in text and "ranks nothing" in text and "ahead" not in text
    one_noisy = [_result(2, 0, (500, 480), rfid=10), _result(4, 0, (200, 60)), _result(8, 0, (150, 90))]
    assert "f = 2 did not learn to sample" in describe_study(one_noisy)
    slow8 = [_result(4, 0, (200, 60)), _result(8, 0, (150, 90))]
    slow8[1].seconds = [2.0, 8.0]
    assert "Equal FLOPs is not equal seconds" in describe_study(slow8) and "(4.0×)" in describe_study(slow8)


def test_workload_counts_every_part_of_lesson_06():
    from ldm_edu.experiments.latent_diffusion import workload
    rows = workload(get_preset("tiny", device="cpu"))
    assert [r[0] for r in rows] == ["06"] * 4
    assert all(r[2] >= 0 and r[3] >= 0 and r[5] >= 0 for r in rows) and rows[0][3] > 0 and rows[3][3] > 0
