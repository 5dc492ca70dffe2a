"""Lesson 07's recipes (ldm_edu/experiments/compression.py): the verdict text follows the data, the
equal-compute step counts, the paired PSNR difference, IS with an interval, the tables."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ldm_edu.data import mnist_tensors
from ldm_edu.dcae import DCAutoencoder
from ldm_edu.experiments import compression as C
from ldm_edu.intervals import Interval
from ldm_edu.presets import get_preset
from ldm_edu.train import History


def _stage(key, label, family="X"):
    ae = DCAutoencoder(f=16, latent_ch=16, ch=8, max_ch=16)
    return C.StageRun(key, label, family, ae, History(), steps=10, seconds=1.0)


def _feats(shift, n=200, seed=0):
    """Synthetic classifier features: a fixed reference set, shifted by ``shift`` in one feature (so the
    FID against the reference is shift², exactly, in every paired bootstrap replicate)."""
    ref = np.random.default_rng(seed).normal(size=(n, 4))
    out = ref.copy()
    out[:, 0] += shift
    return out, ref


def _eval(psnrs, rfid, shift=0.5, sharp=None):
    n = len(psnrs)
    f, ref = _feats(shift, n)
    sharp = torch.full((n,), 0.8, dtype=torch.float64) if sharp is None else torch.as_tensor(sharp, dtype=torch.float64)
    return C.StageEval(torch.tensor(psnrs, dtype=torch.float64), rfid, torch.zeros(1, 1, 28, 28), f, ref, sharp)


def test_stage_run_counts_every_parameter():
    s = _stage("a", "A")
    assert s.params == sum(p.numel() for p in s.ae.parameters()) > 0
    s.ae.requires_grad_(False)                        # LatentDiffusion freezes the first stage: still counted
    assert C.StageRun("a", "A", "X", s.ae, History(), 1, 1.0).params == s.params
    assert s.f == 16 and s.latent_shape == (16, 2, 2)


def test_paired_psnr_difference_by_hand():
    a, b = _eval([20.0, 22.0, 24.0], Interval(1, 0, 2)), _eval([21.0, 22.5, 26.0], Interval(1, 0, 2))
    d, se = C.paired_psnr_difference(a, b)
    diffs = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    assert d == pytest.approx(diffs.mean().item())
    assert se == pytest.approx((diffs.std() / 3 ** 0.5).item())


def test_edge_strength_and_sharpness_by_hand():
    """A vertical step edge of height 1: the Sobel G_x is 4 on the two columns beside the step (1 + 2 + 1),
    G_y is 0 away from the borders, so on an 8 × 8 interior crop the mean magnitude is 4·2·8/64 = 1; a
    box-blurred copy has weaker edges (ratio < 1) and an image against itself has ratio 1."""
    x = torch.zeros(1, 1, 12, 12)
    x[..., 6:] = 1.0
    g = F.conv2d(x, torch.stack([C._SOBEL, C._SOBEL.t()]).unsqueeze(1), padding=1)
    mag = g.pow(2).sum(1).sqrt()[0, 2:10, 2:10]
    assert mag.mean().item() == pytest.approx(1.0)
    digits, _ = mnist_tensors("test", limit=20)
    blurred = F.avg_pool2d(F.pad(digits, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert torch.allclose(C.sharpness_ratio(digits, digits), torch.ones(20))
    assert (C.sharpness_ratio(blurred, digits) < 0.95).all()
    assert C.edge_strength(digits).shape == (20,)


def test_paired_rfid_difference_uses_the_stored_features():
    a, b = _eval([20.0] * 200, Interval(1, 0, 2), shift=1.0), _eval([20.0] * 200, Interval(1, 0, 2), shift=0.3)
    iv = C.paired_rfid_difference(a, b, n_boot=20)
    assert iv.value == pytest.approx(0.09 - 1.0, abs=1e-6) and iv.high < 0


@pytest.mark.parametrize("shifts,word", [((1.0, 0.3), "**reproduced**"),
                                         ((0.5, 0.5), "**not resolved**"),
                                         ((0.3, 1.0), "**not reproduced**")])
def test_verdict_follows_the_paired_rfid_difference(shifts, word):
    """The rFID verdict rests on the paired ΔrFID interval (not on the two stored intervals, which are
    made to overlap here in every case)."""
    base, new = _stage("a", "plain"), _stage("b", "residual", "DC-AE f=16")
    eb = _eval([20.0 + 0.1 * (i % 50) for i in range(200)], Interval(10, 5, 15), shifts[0])
    en = _eval([20.0 + 0.1 * (i % 50) + 1.0 for i in range(200)], Interval(10, 5, 15), shifts[1])
    text = C.describe_pair(base, new, eb, en, None, None, "the claim", "higher", why_not="WHY.")
    assert f"on rFID: {word}" in text and "the claim" in text
    assert "on PSNR: **reproduced**" in text and "higher (+1.00" in text
    assert ("WHY." in text) == (word != "**reproduced**")
    assert C.ONE_RUN in text


def _recipe_text(psnr_delta, shifts, sharp_delta):
    base, new = _stage("a", "L2"), _stage("b", "recipe", "VQGAN recipe")
    p = [25.0 + 0.2 * (i % 7) for i in range(200)]
    s0 = [0.8 + 0.01 * (i % 5) for i in range(200)]
    eb = _eval(p, Interval(10, 5, 15), shifts[0], s0)
    en = _eval([v + psnr_delta for v in p], Interval(10, 5, 15), shifts[1], [v + sharp_delta for v in s0])
    return C.describe_pair(base, new, eb, en, None, None, "the recipe claim", "lower", why_not="WHY.")


def test_recipe_text_says_what_the_psnr_cost_bought():
    """Finding 1: 'the expected price of sharper reconstructions' only when rFID fell AND edges got stronger."""
    t = _recipe_text(-1.0, (1.0, 0.3), 0.1)
    assert "**reproduced** on rFID" in t and "expected price of sharper" in t and "edge strength" in t
    t = _recipe_text(-1.0, (1.0, 0.3), 0.0)
    assert "**reproduced** on rFID" in t and "not a measured sharpening" in t and "expected price" not in t
    t = _recipe_text(-1.0, (0.5, 0.5), 0.0)
    assert "**not resolved** on rFID" in t and "buys nothing measurable" in t and "sharper" not in t and "WHY." in t
    t = _recipe_text(-1.0, (0.3, 1.0), 0.1)
    assert "**not reproduced** on rFID" in t and "stronger edges, which the classifier" in t
    t = _recipe_text(1.0, (1.0, 0.3), 0.0)
    assert "PSNR did not even pay for it" in t


def test_psnr_within_noise_is_called_unchanged():
    base, new = _stage("a", "A"), _stage("b", "B")
    g = torch.Generator().manual_seed(0)
    p = (20 + torch.randn(200, generator=g)).tolist()
    q = [v + 0.001 * ((-1) ** i) for i, v in enumerate(p)]
    text = C.describe_pair(base, new, _eval(p, Interval(5, 4, 6)), _eval(q, Interval(5, 4, 6)), None, None, "c")
    assert "unchanged within noise" in text and "on PSNR: **not resolved**" in text


def test_short_verdict_and_latent_size_text():
    eb, en = _eval([20.0] * 200, Interval(1, 0, 2), shift=1.0), _eval([21.0] * 200, Interval(1, 0, 2), shift=0.3)
    assert "**reproduced**" in C.short_verdict(eb, en) and "+1.00" in C.short_verdict(eb, en)
    same = {"a": _stage("a", "A"), "b": _stage("b", "B")}
    assert "64 numbers per image" in C.latent_size_text(same)
    other = dict(same, c=C.StageRun("c", "C", "X", DCAutoencoder(f=8, latent_ch=8, ch=8, max_ch=16), History(), 1, 1.0))
    assert "different numbers per image" in C.latent_size_text(other)


def test_ldm_budget_text_names_what_was_equal():
    stages = {"a": _stage("a", "A"), "b": C.StageRun("b", "B", "X", DCAutoencoder(f=8, latent_ch=4, ch=8, max_ch=16),
                                                      History(), 1, 1.0)}

    def run(steps, flops):
        return C.LDMRun(None, History(), steps, flops, 1.0, batch_size=64)
    capped = C.ldm_budget_text(stages, {"a": run(1000, 1e8), "b": run(1000, 4e8)}, cap=1000)
    assert "same number of steps" in capped and "not the same compute" in capped and "cap bit" in capped
    equal = C.ldm_budget_text(stages, {"a": run(4000, 1e8), "b": run(1000, 4e8)}, cap=5000)
    assert "same compute" in equal and "400 GFLOP" in equal
    mixed = C.ldm_budget_text(stages, {"a": run(1000, 1e8), "b": run(500, 4e8)}, cap=1000)
    assert "these budgets" in mixed


def test_ldm_steps_equal_compute_with_cap():
    dcfg = C.second_stage_config(get_preset("tiny").diffusion, SimpleNamespace(unet_ch=8, unet_ch_mult=(1, 2)))
    ae4 = DCAutoencoder(f=8, latent_ch=8, ch=8, max_ch=16)
    ae32 = DCAutoencoder(f=32, latent_ch=16, ch=8, max_ch=16)
    cfg = SimpleNamespace(ldm_gflop=5.0, ldm_max_steps=10 ** 9)
    (n4, f4), (n32, f32) = C.ldm_steps(ae4, dcfg, cfg), C.ldm_steps(ae32, dcfg, cfg)
    assert f4 > f32 > 0
    assert n4 == round(5e9 / f4) and n32 == round(5e9 / f32) and n32 > n4      # same GFLOP, more cheap steps
    assert C.ldm_steps(ae32, dcfg, SimpleNamespace(ldm_gflop=5.0, ldm_max_steps=7))[0] == 7


def test_is_interval_on_real_and_degenerate_images():
    x, _ = mnist_tensors("test", limit=400)
    iv = C.is_interval(x, n_boot=30)
    assert 7.0 < iv.value < 10.0 and iv.low <= iv.value <= iv.high       # real digits: ≈ 9–10 classes' worth
    one = x[:1].expand(100, -1, -1, -1)
    iv1 = C.is_interval(one, n_boot=20)
    assert iv1.value == pytest.approx(1.0, abs=1e-6) and iv1.width < 1e-6  # one image: IS = 1, no spread


def test_tables_render():
    s = _stage("dc-f16-res", "DC-AE (residual)", "DC-AE f=16")
    e = _eval([20.0, 21.0], Interval(3.0, 2.0, 4.5))
    md = C.results_table({"dc-f16-res": s}, {"dc-f16-res": e}, {})
    assert md.count("\n") == 2 and "3.0 [2.0, 4.5]" in md and "| 16×2×2 | 64 |" in md and "– | – | –" in md
    row = C.CourseRow("m", "07", 10, 5.0, 2.0, 100, {"fid": Interval(1, 0, 2), "real_fid": Interval(0.5, 0, 1)},
                      Interval(9, 8.5, 9.5), source="s", sampler="DDIM, 4 steps", train_images="1,000")
    assert row.seconds_per_1000 == pytest.approx(20.0)
    md = C.course_table_markdown([row])
    assert "| m | 07 | DDIM, 4 steps | 1,000 | 10 | 5 | 20 | 1.0 [0.0, 2.0] | 9.0 [8.5, 9.5] | – | s |" in md
    cap = C.course_table_caption([row])
    assert "100 samples per row" in cap and "0.5 [0.0, 1.0]" in cap and "descriptive" in cap


def test_table_row_samples_and_measures():
    x, _ = mnist_tensors("test", limit=60)

    def sample_fn(k, y, g):
        idx = torch.randint(0, len(x), (k,), generator=g)
        return x[idx]

    row = C.table_row("real test digits", "–", 0, None, sample_fn, 40, seed=3)
    assert row.n == 40 and row.samples.shape == (40, 1, 28, 28) and row.sample_seconds >= 0
    assert isinstance(row.quality["fid"], Interval) and row.is_interval.value > 5


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_every_lesson07_network_builds_for_every_preset(name):
    """The gpu preset is not run here: build each of its networks on the CPU and push one batch through."""
    from ldm_edu.experiments.latent_diffusion import latent_unet
    from ldm_edu.latent import FirstStage
    from ldm_edu.movq import MoVQFirstStage
    p = get_preset(name, device="cpu")
    c = p.compression
    assert c.n_fid >= c.table_n, "the course table reuses the first table_n LDM samples"
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    aes = [FirstStage(f=c.f, latent_ch=c.latent_ch, ch=c.ch, reg="kl"),
           MoVQFirstStage(f=c.movq_f, latent_ch=c.movq_latent_ch, ch=c.ch, codebook_size=c.codebook_size)]
    aes += [DCAutoencoder(f=f, latent_ch=lc, ch=c.ch, max_ch=c.dc_max_ch, residual=True)
            for f, lc in zip(c.dc_fs, c.dc_latent_ch)]
    dcfg = C.second_stage_config(p.diffusion, c)
    for ae in aes:
        z = ae.encode(x)
        assert ae.decode(z).shape == x.shape
        unet = latent_unet(dcfg, tuple(ae.latent_shape))
        assert unet(z, torch.tensor([1, 2]), torch.tensor([3, 4])).shape == z.shape
    loss = C.make_vqgan_loss(c)
    assert loss.discriminator(x).shape[:2] == (2, 1)


def test_latent_sampler_clips_the_latent_x0_to_the_training_range():
    """With the cosine schedule's ᾱ_T ≈ 2e-9 a poor ε̂ (here: always 0) sends x̂_0 = z_T/√ᾱ_T to ~1e4;
    the lesson's sampler clips x̂_0 to ±clip, so the final latent stays in the training range."""
    from ldm_edu.diffusion import NoiseSchedule
    from ldm_edu.sampling import sample
    from ldm_edu.latent import LatentDiffusion

    class Zero(nn.Module):
        num_classes = 10

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, t, y=None):
            return x * self.w

    ae = DCAutoencoder(f=16, latent_ch=16, ch=8, max_ch=16)
    ldm = LatentDiffusion(ae, Zero(), NoiseSchedule(1000, "cosine"), scale_factor=1.0, clip_x0=3.0)
    run = C.LDMRun(ldm, History(), 1, 1.0, 1.0)
    g = torch.Generator().manual_seed(0)
    raw = sample(ldm.unet, ldm.schedule, (4, 16, 2, 2), method="ddim", steps=10, generator=g, progress=False)
    assert raw.abs().max() > 1e3                                          # the unclipped run blows up
    captured = {}
    ae_decode = ae.decode

    def spy(z):
        captured["z"] = z
        return ae_decode(z)
    ae.decode = spy
    imgs = run.ldm.sampler(steps=10)(4, torch.arange(4), torch.Generator().manual_seed(0))
    assert imgs.shape == (4, 1, 28, 28) and captured["z"].abs().max() <= 3.0 + 1e-5


def test_movq_arms_share_every_common_weight():
    """Finding 10: from the same seed the GroupNorm and the SCN first stage get identical weights in every
    parameter they share (SpatialNorm draws no random numbers), and those are all but the norms' own."""
    from ldm_edu.movq import MoVQFirstStage, shared_parameters
    torch.manual_seed(3)
    a = MoVQFirstStage(f=8, latent_ch=4, ch=8, codebook_size=16, norm="group")
    torch.manual_seed(3)
    b = MoVQFirstStage(f=8, latent_ch=4, ch=8, codebook_size=16, norm="spatial")
    common = shared_parameters(a, b)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert all(torch.equal(pa[k], pb[k]) for k in common)
    assert set(pa) - set(common) == {k for k in pa if ".norm" in k and k.split(".")[-2] == "norm"}
    assert any(k.startswith("decoder.conv_out") for k in common) and any(k.startswith("encoder") for k in common)
    qa, qb = a.quantizer.state_dict(), b.quantizer.state_dict()           # the codebook (EMA buffers) too
    assert qa and all(torch.equal(v, qb[k]) for k, v in qa.items())


@pytest.mark.parametrize("n_layers,rf", [(1, 16), (2, 34), (3, 70)])
def test_patch_discriminator_receptive_field_is_measured(n_layers, rf):
    """Finding 14: the docstring's arithmetic (16, 34, 70 px) against the gradient support of one logit."""
    from ldm_edu.vqgan import PatchDiscriminator, measured_receptive_field
    torch.manual_seed(0)
    assert measured_receptive_field(PatchDiscriminator(ch=4, n_layers=n_layers), size=160) == rf


def test_collapse_ratio_tells_a_mean_image_from_a_working_autoencoder():
    g = torch.Generator().manual_seed(0)
    orig = torch.rand(50, 1, 28, 28, generator=g)
    ok = C.StageEval(torch.zeros(50), None, orig + 0.01 * torch.randn(50, 1, 28, 28, generator=g), originals=orig)
    mean_image = C.StageEval(torch.zeros(50), None, orig.mean(0, keepdim=True).expand(50, -1, -1, -1), originals=orig)
    assert C.collapse_ratio(ok) == pytest.approx(1.0, abs=0.05)
    assert C.collapse_ratio(mean_image) < 1e-6
    assert C.collapse_ratio(C.StageEval(torch.zeros(1), None, orig)) is None      # no originals: no verdict


# ----------------------------------------------------------------------------- review round 2 (issue 14)
def _history(losses, start=0, **metrics):
    h = History()
    for i, v in enumerate(losses):
        h.log(start + i, v, **{k: m[i] for k, m in metrics.items()})
    return h


def test_loss_drop_and_first_step_below_by_hand():
    h = _history([10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    assert C.loss_drop(h, frac=0.2, window=1) == pytest.approx((3 - 1) / 3)     # entries 7 → 9
    assert C.loss_drop(_history([4.0] * 10), window=1) == 0.0
    base = _history([5.0] * 10)
    new = _history([6, 6, 6, 4, 6, 4, 4, 4, 4, 4])
    assert C.first_step_below(base, new, window=1) == 5                           # below from entry 5 to the end
    assert C.first_step_below(new, base, window=1) is None                         # ends above
    assert C.first_step_below(base, _history([1.0] * 10), window=1) == 0
    with pytest.raises(ValueError):
        C.first_step_below(base, _history([1.0] * 9), window=1)


def test_dc_curve_text_reads_the_curves():
    def stage(key, losses):
        return C.StageRun(key, key, "DC", DCAutoencoder(f=16, latent_ch=16, ch=8, max_ch=16), _history(losses),
                          steps=len(losses), seconds=1.0)
    falling = [100 * 0.9 ** i for i in range(50)]
    flat = [50.0] * 50
    stages = {"dc-f16-plain": stage("p", flat), "dc-f16-res": stage("r", falling),
              "dc-f32-plain": stage("p", falling), "dc-f32-res": stage("r", [2 * v for v in falling])}
    t = C.dc_curve_text(stages, (16, 32), window=1)
    assert "the residual run was still improving while the learning rate was large" in t[16]
    assert "stays below the plain arm's from step 7 on" in t[16]                  # 100·0.9^7 ≈ 47.8 < 50
    assert "Both f = 32 runs were still improving" in t[32] and "ends above" in t[32]
    assert all("a 50-step snapshot" in v for v in t.values())                      # the cosine caveat, always
    # finding 1: a run that falls while the lr is large and is flat only at the end is NOT "flattened"
    cosine_like = [100 * 0.97 ** min(i, 40) for i in range(50)]                     # flat over the last 20 % only
    assert C.loss_drop(_history(cosine_like), window=1) < C.IMPROVING                # the old reading: flat
    st = {"dc-f16-plain": stage("p", cosine_like), "dc-f16-res": stage("r", [v * 1.1 for v in cosine_like])}
    t = C.dc_curve_text(st, (16,), window=1)[16]
    assert "Both f = 16 runs were still improving" in t
    assert "still improving" in C.dc_why_not(st, {}, 16, window=1)
    st = {"dc-f16-plain": stage("p", flat), "dc-f16-res": stage("r", [60.0] * 50)}
    assert "had flattened while the learning rate was still large" in C.dc_curve_text(st, (16,), window=1)[16]
    why = C.dc_why_not(st, {"dc-f16-plain": SimpleNamespace(scale=1.0), "dc-f16-res": SimpleNamespace(scale=0.1)},
                       16, window=1)
    assert why.startswith("Unexplained at one run per arm (the residual arm's loss was above the plain arm's throughout)")
    assert "std 10 against 1" in why


def test_loss_trend_and_cosine_factor_by_hand():
    h = _history([10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5])                # 11 entries: 0.4 → entry 4, 0.7 → entry 7
    assert C.loss_trend(h, window=1) == pytest.approx((6 - 3) / 6)
    assert C.cosine_lr_factor(0.0) == 1.0 and C.cosine_lr_factor(0.5) == pytest.approx(0.5)
    assert C.cosine_lr_factor(0.8) < 0.1                                 # the last 20 %: below a tenth of the peak
    with pytest.raises(ValueError):
        C.loss_trend(h, 0.7, 0.4)


def test_discriminator_gap_by_hand():
    """Gaps 1, 3, 1, 3 … from step 2 on (the steps before are left out); blocks of 2 have mean 2 exactly, so
    the block s.e. is 0 while the naive one would not be."""
    real = [9.0, 9.0] + [1.0, 3.0] * 4
    fake = [0.0] * 10
    h = _history([0.0] * 10, d_real=real, d_fake=fake)
    gap, se = C.discriminator_gap(h, from_step=1, block=2)              # logged steps > 1: the GAN-on ones
    assert gap == pytest.approx(2.0) and se == pytest.approx(0.0)
    assert C.discriminator_gap(h, from_step=0, block=2)[0] > 2.5          # step 1 (gap 9) would be counted
    assert "not separated from 0" in C.discriminator_gap_text(_history([0.0] * 41, d_real=[0.0] + [0.1, -0.1] * 20,
                                                                       d_fake=[0.0] * 41), 0)
    assert "Over the 40 logged steps" in C.discriminator_gap_text(_history([0.0] * 41, d_real=[1.0] * 41,
                                                                           d_fake=[0.0] * 41), 0)
    weak = C.discriminator_gap_text(_history([0.0] * 40, d_real=[0.3] * 40, d_fake=[0.0] * 40), 0)
    assert "0.30 ± 0.00" in weak and "weak" in weak
    assert "told them apart" in C.discriminator_gap_text(_history([0.0] * 40, d_real=[1.0] * 40,
                                                                  d_fake=[-1.0] * 40), 0)


def test_excess_kurtosis_by_hand():
    assert C.excess_kurtosis(torch.tensor([-1.0, 1.0] * 50)) == pytest.approx(-2.0)   # coin flips: 1/1 − 3
    g = torch.Generator().manual_seed(0)
    assert abs(C.excess_kurtosis(torch.randn(200000, generator=g))) < 0.05
    spiky = torch.zeros(1000)
    spiky[0] = 1.0                                                                   # one entry far out
    assert C.excess_kurtosis(spiky) > 100


def test_sampler_counts_latents_at_the_clip_bound_without_changing_them():
    """A model whose ε̂ = −10⁶·sign(x_t) sends every x̂_0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ far past ±3 at every step, so
    every sampled entry ends on the clip bound (and Σz² = 9 per entry). The images are the same with and
    without counting."""
    from ldm_edu.diffusion import NoiseSchedule
    from ldm_edu.latent import LatentDiffusion

    class Outward(nn.Module):
        num_classes = 10

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x, t, y=None):
            return -1e6 * self.w * torch.sign(x)

    ae = DCAutoencoder(f=16, latent_ch=16, ch=8, max_ch=16)
    ldm = LatentDiffusion(ae, Outward(), NoiseSchedule(1000, "cosine"), scale_factor=1.0, clip_x0=3.0)
    count = {}
    a = ldm.sampler(steps=5, method="ddpm", clip_count=count)(4, torch.arange(4), torch.Generator().manual_seed(1))
    b = ldm.sampler(steps=5, method="ddpm")(4, torch.arange(4), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert count["total"] == 4 * 16 * 2 * 2 and count["at_bound"] == count["total"]
    assert count["sum_sq"] == pytest.approx(9.0 * count["total"])
    run = C.LDMRun(ldm, History(), 1, 1.0, 1.0, clip_count=count, latent_kurtosis=0.5)
    assert run.clip_share == 1.0 and run.sample_rms == pytest.approx(3.0)
    md = C.latent_range_table({"a": _stage("a", "A")}, {"a": run})
    assert "| a | 1 | 3.00 | 0.5 | 3.00 | 100.0% |" in md and "LDM on a (100%) sit on the clip bound more than 1%" in md
    quiet = C.LDMRun(ldm, History(), 1, 1.0, 1.0, clip_count={"at_bound": 0, "total": 10, "sum_sq": 10.0},
                     latent_kurtosis=8.0)
    md = C.latent_range_table({"a": _stage("a", "A")}, {"a": quiet})
    assert "No LDM's sampled latents sit on the clip bound" in md and "Heavy-tailed latents" in md
    class Itself(Outward):                        # ε̂ = x_t: x̂_0 = x_t (1 − √(1−ᾱ))/√ᾱ stays near 0, far inside ±3
        def forward(self, x, t, y=None):
            return x * self.w
    wide = LatentDiffusion(ae, Itself(), ldm.schedule, scale_factor=1.0, clip_x0=3.0)
    none = {}
    wide.sampler(steps=5, method="ddpm", clip_count=none)(4, torch.arange(4), torch.Generator().manual_seed(1))
    assert none["at_bound"] == 0 and none["total"] == 256
    noisy = C.decode_noisy_latents(run, torch.zeros(3, 1, 28, 28), sigma=0.5)
    assert noisy.shape == (3, 1, 28, 28) and 0 <= noisy.min() and noisy.max() <= 1


def test_recipe_split_text_names_which_part_gained():
    n = 200
    p = [25.0] * n
    e_l2, e_l1, e_rec = _eval(p, Interval(1, 0, 2), 1.0), _eval(p, Interval(1, 0, 2), 0.5), _eval(p, Interval(1, 0, 2), 0.5)
    t = C.recipe_split_text(e_l2, e_l1, e_rec)
    assert "The measured gain is the L1 switch's" in t and "-0.75" in t       # 0.25 − 1 = −0.75 twice
    t = C.recipe_split_text(e_l2, _eval(p, Interval(1, 0, 2), 0.7), _eval(p, Interval(1, 0, 2), 0.3))
    assert "Both parts contribute" in t
    t = C.recipe_split_text(e_l2, _eval(p, Interval(1, 0, 2), 1.0), e_rec)
    assert "The gain is the perceptual and adversarial terms'" in t


def test_sharper_only_past_the_practical_threshold():
    """Finding 7d: a measurable edge gain below SHARPER is reported as 'edges N % stronger', not 'sharper'."""
    t = _recipe_text(-1.0, (1.0, 0.3), 0.01)
    assert "sharper, less averaged" not in t and "% stronger" in t and "not a visible sharpening" in t
    assert "sharper, less averaged" in _recipe_text(-1.0, (1.0, 0.3), C.SHARPER + 0.01)


def test_budget_text_says_the_cap_bound_everywhere_and_latents_sort_by_f():
    stages = {"a": _stage("a", "A"), "b": C.StageRun("b", "B", "X", DCAutoencoder(f=8, latent_ch=4, ch=8, max_ch=16),
                                                      History(), 1, 1.0)}
    runs = {"a": C.LDMRun(None, History(), 1000, 1e8, 1.0, batch_size=48),
            "b": C.LDMRun(None, History(), 1000, 4e8, 1.0, batch_size=48)}
    t = C.ldm_budget_text(stages, runs, cap=1000, gflop_budget=800)
    assert "cap bound for every latent" in t and "2,000–8,000 steps" in t
    assert "cap bit" in C.ldm_budget_text(stages, runs, cap=1000, gflop_budget=200)   # 500 steps < cap for one
    f16_first = {"x": _stage("x", "X"), "y": stages["b"]}          # f = 16 listed first, then f = 8: both 64 numbers
    assert "(latents 4×4×4, 16×2×2;" in C.latent_size_text(f16_first)


def _row(model, secs, fid, samples=None, plain=True, lesson="04–05", sampler="ancestral DDPM (η = 1, strided), 20 steps"):
    return C.CourseRow(model, lesson, 1, 1.0, secs, 1000, {"fid": Interval(fid, fid - 1, fid + 1)}, Interval(9, 8, 10),
                       samples=samples, sampler=sampler, plain_sampling=plain)


def test_sampling_speed_text_names_a_fastest_only_past_the_margin():
    ldm_s = "ancestral DDPM (η = 1, strided), 20 steps, x̂₀ clipped, w = 1, + decoder"
    rows = [_row("pixel DDPM", 13.6, 1, sampler="ancestral DDPM (η = 1, strided), 20 steps, x̂₀ clipped, w = 1"),
            _row("LDM a", 1.13, 1, lesson="06–07", sampler=ldm_s), _row("LDM b", 1.24, 1, lesson="06–07", sampler=ldm_s),
            _row("VAE", 0.01, 1, sampler="z ~ N(0, I), one decoder pass, unconditional")]
    t = C.sampling_speed_text(rows)
    assert "none is named fastest" in t and "11–12× faster than the pixel DDPM" in t and "1.1–1.2 s" in t
    rows[2] = _row("LDM b", 2.0, 1, lesson="06–07", sampler=ldm_s)
    assert "Fastest of the iterative samplers: **LDM a**" in C.sampling_speed_text(rows)


def test_ranking_text_adds_the_plain_samplers_when_the_best_is_tuned():
    x, _ = mnist_tensors("test", limit=200)
    noisy = (x + 0.5 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    rows = [_row("tuned", 1, 5.0, x[:100], plain=False), _row("plain good", 1, 6.0, x[100:200]),
            _row("plain bad", 1, 50.0, noisy[:100])]
    for r in rows:
        r.n = 100
    t = C.ranking_text(rows)
    assert t.startswith("Lowest FID-MNIST: **tuned**") and "among the rows sampled without guidance" in t
    assert "the lowest is **plain good**" in t and "not separated from" not in t.split("It is")[1]
    assert "among the rows" not in C.ranking_text(rows[1:])
    twin = _row("plain twin", 1, 6.5, x[50:150])            # overlapping interval, same distribution: bootstrapped, tied
    twin.n = 100
    t = C.ranking_text(rows + [twin])
    assert "the lowest is **plain good**" in t and "not separated from plain twin" in t.split("It is")[1]
    assert rows[0].label == "tuned" and C.CourseRow("long name", "0", 1, 1.0, 1.0, 1, {}, None, short="s").label == "s"


def test_l1_control_leaves_the_two_arms_unchanged():
    """The L1-only copy trains last, so the L2 and recipe arms are bit-identical with and without it."""
    cfg = get_preset("tiny", device="cpu").compression
    x, _ = mnist_tensors("train", limit=64, scale="signed")
    a = C.train_vqgan_pair(x, cfg, seed=0, progress=False)
    b = C.train_vqgan_pair(x, cfg, seed=0, progress=False, l1_control=True)
    assert set(b) == {"kl-l2", "kl-gan", "kl-l1"} and "perceptual" not in b["kl-l1"].history.metrics
    for k in ("kl-l2", "kl-gan"):
        sa, sb = a[k].ae.state_dict(), b[k].ae.state_dict()
        assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert C.make_l1_loss().gan_on(10 ** 6) is False and C.make_l1_loss().perceptual_weight == 0


# ----------------------------------------------------------------------------- review round 3 (issue 14)
def _ldm(rms, fid=None):
    total = 100
    return C.LDMRun(None, History(), 1, 1.0, 1.0, clip_count={"at_bound": 0, "total": total, "sum_sq": rms ** 2 * total},
                    quality={"fid": fid} if fid is not None else {})


def test_off_distribution_reads_the_sampled_rms(monkeypatch):
    ldms = {"a": _ldm(1.02), "b": _ldm(2.5), "c": _ldm(1.6)}
    assert set(C.off_distribution(ldms)) == {"b", "c"} and C.off_distribution(ldms)["b"] == pytest.approx(2.5)
    t = C.off_distribution_text(ldms)
    assert "LDMs on b, c drew latents with RMS 2.50, 1.60" in t and "do not measure the first stage" in t
    assert "none sits far outside" in C.off_distribution_text({"a": _ldm(1.02), "d": _ldm(1.4)})
    n = 200
    p = [25.0] * n
    a, b = _eval(p, Interval(1, 0, 2), 1.0), _eval(p, Interval(1, 0, 2), 0.5)
    la, lb = _ldm(1.0, Interval(10, 9, 11)), _ldm(3.0, Interval(20, 19, 21))
    monkeypatch.setattr(C, "ldm_fid_difference", lambda *a, **k: Interval(10, 8, 12))      # separated: "worse"
    assert ": worse" in C.short_verdict(a, b, lb=la, ln=_ldm(1.1, Interval(20, 19, 21)))
    t = C.short_verdict(a, b, lb=la, ln=lb)
    assert "LDMs off-distribution, sampled RMS 1.0 / 3.0: not read" in t and ": worse" not in t


def test_collapse_text_is_graded():
    assert "nearly the same image" in C.collapse_text("plain AE", 0.05)
    t = C.collapse_text("plain AE", 0.29)
    assert t.startswith("Plain AE's reconstructions vary only 29%") and "blurred average digit" in t
    assert C.collapse_text("plain AE", 0.6) == "" and C.collapse_text("x", None) == ""


def test_signed_split_and_attribution():
    assert C.signed(Interval(8.5, 7.6, 9.4)) == "+8.5 [+7.6, +9.4]"
    assert C.signed(Interval(-13.9, -15.3, -12.4)) == "-13.9 [-15.3, -12.4]"
    n = 200
    p = [25.0] * n
    e_l2, e_l1, e_rec = _eval(p, Interval(1, 0, 2), 0.5), _eval(p, Interval(1, 0, 2), 1.0), _eval(p, Interval(1, 0, 2), 0.2)
    t = C.recipe_split_summary(e_l2, e_l1, e_rec)
    assert "L2 → L1 switch alone made rFID worse (ΔrFID +0.75" in t and "on top of L1 lowered rFID (ΔrFID -0.96" in t
    assert "no rFID gain to attribute" in C.recipe_attribution_text(0.13, 0.05, False, 0.05, 0.019, 0.010, rfid_lower=False)
    none = C.recipe_attribution_text(0.13, 0.05, False, 0.05, 0.019, 0.010)
    assert "cannot tell whether the lower rFID is a perceptual improvement" in none and "0.13 logits" in none
    allp = C.recipe_attribution_text(1.5, 0.1, True, 0.3, 0.05, 0.05)
    assert "agree with a perceptual change" in allp
    mixed = C.recipe_attribution_text(1.5, 0.1, False, 0.05, 0.019, 0.010)
    assert "mixed" in mixed and "cannot fully attribute" in mixed


def test_seed_claims_text_gives_each_claim_a_word():
    def st(key, f):
        return C.StageRun(key, key, "X", SimpleNamespace(f=f, latent_shape=(4, 4, 4) if f == 8 else
                                                         (16, 2, 2) if f == 16 else (64, 1, 1)),
                          History(), steps=300 if f > 8 or key.startswith("vq") else 450, seconds=1.0, params=1)
    keys = {"kl-l2": 8, "kl-gan": 8, "vq-group": 8, "vq-spatial": 8, "dc-f16-res": 16, "dc-f32-res": 32}
    stages = {k: st(k, f) for k, f in keys.items()}
    rf = {"kl-l2": 10, "kl-gan": 5, "vq-group": 76, "vq-spatial": 72, "dc-f16-res": 200, "dc-f32-res": 364}
    evals = {k: SimpleNamespace(rfid=Interval(v, v - 3, v + 3), psnr=20.0) for k, v in rf.items()}
    fid = {"kl-l2": 69, "kl-gan": 52, "vq-group": 143, "vq-spatial": 159, "dc-f16-res": 352, "dc-f32-res": 416}
    ldms = {k: _ldm(1.0, Interval(v, v - 8, v + 8)) for k, v in fid.items()}
    t = C.seed_claims_text(stages, evals, ldms)
    lines = t.split("\n")
    assert "(8×), not at high (64×)** — **reproduced**" in t
    assert "quality preserved** — in absolute terms **not reproduced**" in t
    assert "**not tested** as a controlled comparison; descriptively the opposite here" in t and "no evidence against" in t
    assert len([l for l in lines if l.startswith("- ")]) == 3
    evals["dc-f16-res"] = SimpleNamespace(rfid=Interval(11, 8, 14), psnr=20.0)   # within the f = 8 reference's interval
    t = C.seed_claims_text(stages, evals, ldms)
    assert "in absolute terms **mixed**" in t and "(8×), not at high (64×)** — **not resolved**" in t
