"""Lesson 07's recipes: the seed paper's compression methods (§2.1–2.2) built on lesson 06's first
stage and measured — VQGAN's perceptual + adversarial recipe, MoVQ's spatially conditional decoder,
DC-AE's residual autoencoding at high compression — each first stage followed by the same
downstream latent DDPM (lesson 06's ``train_latent_ddpm``: lesson 04's UNet and recipe), and the
text that says, from the numbers, which of the paper's claims the data reproduce.

Every comparison is a pair that differs in one thing:

- **VQGAN recipe** — lesson 06's KL-f first stage trained ``warmup_steps`` with its own loss
  (Σ(x − x̂)² + w·KL, the recipe's warm-up), then copied: one copy continues with that loss, the
  other with L1 + perceptual + PatchGAN (adaptive λ), ``gan_steps`` each. Same network, same steps.
- **MoVQ** — a VQ first stage with spatially conditional norms in the decoder vs the very same
  network with GroupNorm, same loss and steps (parameters differ by the modulation convs only).
- **DC-AE** — at f = 16 and 32, the autoencoder with residual (space-to-channel) shortcuts vs
  without them: identical parameters, loss and steps.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn
import torch.nn.functional as F

from .. import pretrained
from ..classifier import classifier_outputs
from ..data import TensorBatches
from ..dcae import DCAutoencoder, dcae_loss
from ..latent import (FirstStage, LatentDiffusion, encode_dataset, first_stage_loss, latent_scale_factor,
                      posterior_dataset, posterior_sample)
from ..intervals import Interval
from ..metrics import fid_interval, paired_fid_difference, psnr, quality_report, reference_outputs
from ..movq import MoVQFirstStage, movq_loss
from ..nn import eval_batches
from ..sampling import sample_images
from ..train import History, fit
from ..vqgan import VQGANLoss, vqgan_loss_fn
from .latent_diffusion import latent_unet, train_latent_ddpm, unet_step_flops


# ----------------------------------------------------------------------------- stage 1
@dataclass
class StageRun:
    """One trained first stage: a key ("kl-l2", "dc-f16-res", …), a label for tables, the family
    (which comparison it belongs to), the model, its history and cost."""
    key: str
    label: str
    family: str
    ae: nn.Module
    history: History
    steps: int
    seconds: float
    params: int = 0                 # every parameter, the codebook included (set from ``ae`` if 0)

    def __post_init__(self):
        if not self.params:
            self.params = sum(p.numel() for p in self.ae.parameters())

    @property
    def f(self) -> int:
        return self.ae.f

    @property
    def latent_shape(self) -> tuple:
        return tuple(self.ae.latent_shape)


def _fit(ae, loss_fn, x, steps, cfg, seed, desc, progress, cosine=True, history=None, live_plot=False):
    return fit(ae, loss_fn, TensorBatches(x, batch_size=cfg.batch_size, seed=seed), steps, lr=cfg.lr,
               cosine_decay=cosine, history=history, desc=desc, progress=progress, live_plot=live_plot)


def make_vqgan_loss(cfg) -> VQGANLoss:
    """The recipe's loss module with the lesson's weights (L1, w_p, λ factor, PatchGAN width). Counted from
    the branch point (the autoencoder's warm-up is the shared phase before it): the discriminator trains
    from the first step, its gradient reaches the decoder after ``cfg.disc_start`` steps."""
    return VQGANLoss(perceptual_weight=cfg.perceptual_weight, disc_weight=cfg.disc_weight, disc_start=cfg.disc_start,
                     d_start=0, rec="l1", disc_ch=cfg.disc_ch, disc_layers=cfg.disc_layers)


def make_l1_loss() -> VQGANLoss:
    """The recipe's reconstruction term alone: Σ|x − x̂| per image (no perceptual term, no GAN): the
    control that separates the L2 → L1 switch from what the perceptual and adversarial terms add."""
    return VQGANLoss(perceptual_weight=0.0, disc_weight=0.0, rec="l1")


def train_vqgan_pair(x: torch.Tensor, cfg, seed: int = 0, progress: bool = True, live_plot=False,
                     l1_control: bool = False) -> dict:
    """Lesson 06's KL first stage, then two copies: its own loss vs the VQGAN/LDM recipe (see module doc).

    1. warm-up: ``FirstStage(f, latent_ch, ch, reg="kl")`` trained ``cfg.warmup_steps`` with lesson 06's
       loss at a constant learning rate;
    2. copy A continues ``cfg.gan_steps`` with the same loss (cosine-decayed learning rate);
    3. copy B trains ``cfg.gan_steps`` with L1 + perceptual + PatchGAN, λ adaptive (same schedule); its
       discriminator trains from the first of these steps and its gradient is added after ``cfg.disc_start``;
    4. with ``l1_control``, copy C trains ``cfg.gan_steps`` with the L1 term alone (``make_l1_loss``), same
       batches and schedule as B (trained last, so A and B are the same with or without it).
    Returns {"kl-l2": StageRun, "kl-gan": StageRun[, "kl-l1": StageRun]}; seconds include the shared warm-up."""
    torch.manual_seed(seed)
    base = FirstStage(f=cfg.f, latent_ch=cfg.latent_ch, ch=cfg.ch, reg="kl", kl_weight=cfg.kl_weight).to(x.device)
    warm = _fit(base, first_stage_loss, x, cfg.warmup_steps, cfg, seed, f"KL-f{cfg.f}: warm-up (lesson 06 loss)",
                progress, cosine=False, live_plot=live_plot)
    runs = {}
    arms = [("kl-l2", "lesson 06 loss (L2 + KL)", None),                      # None: lesson 06's loss
            ("kl-gan", "VQGAN recipe (L1 + perceptual + GAN)", lambda: make_vqgan_loss(cfg))]
    if l1_control:
        arms.append(("kl-l1", "L1 only (+ KL)", make_l1_loss))
    for key, label, make_loss in arms:
        ae = copy.deepcopy(base)
        if make_loss is None:
            loss_fn = first_stage_loss
        else:
            torch.manual_seed(seed + 1)
            loss_fn = vqgan_loss_fn(make_loss().to(x.device), lr=cfg.lr)
        hist = _fit(ae, loss_fn, x, cfg.gan_steps, cfg, seed + 1, f"KL-f{cfg.f}: {label}", progress,
                    live_plot=live_plot)
        runs[key] = StageRun(key, label, "VQGAN recipe", ae.eval(), hist, cfg.warmup_steps + cfg.gan_steps,
                             warm.seconds + hist.seconds)
    return runs


def train_movq_pair(x: torch.Tensor, cfg, seed: int = 0, progress: bool = True, live_plot=False) -> dict:
    """The VQ first stage with GroupNorm vs with MoVQ's spatially conditional norm, from the same
    seed (same encoder and codebook initialisation), same loss and steps."""
    runs = {}
    for norm, label in (("group", "VQ, GroupNorm decoder"), ("spatial", "MoVQ: spatially conditional norm")):
        torch.manual_seed(seed)
        ae = MoVQFirstStage(f=cfg.movq_f, latent_ch=cfg.movq_latent_ch, ch=cfg.ch, codebook_size=cfg.codebook_size,
                            norm=norm).to(x.device)
        hist = _fit(ae, movq_loss, x, cfg.movq_steps, cfg, seed, f"VQ-f{cfg.movq_f}: {norm} norm", progress,
                    live_plot=live_plot)
        runs[f"vq-{norm}"] = StageRun(f"vq-{norm}", label, "MoVQ", ae.eval(), hist, cfg.movq_steps, hist.seconds)
    return runs


def train_dcae_runs(x: torch.Tensor, cfg, seed: int = 0, progress: bool = True, live_plot=False) -> dict:
    """For each f in ``cfg.dc_fs`` (with ``cfg.dc_latent_ch``): the autoencoder without and with DC-AE's
    residual shortcuts, same seed, same parameters, loss and steps."""
    runs = {}
    for f, c in zip(cfg.dc_fs, cfg.dc_latent_ch):
        for residual in (False, True):
            torch.manual_seed(seed)
            ae = DCAutoencoder(f=f, latent_ch=c, ch=cfg.ch, max_ch=cfg.dc_max_ch, residual=residual).to(x.device)
            name = "DC-AE (residual)" if residual else "plain AE"
            hist = _fit(ae, dcae_loss, x, cfg.dc_steps, cfg, seed, f"f={f}: {name}", progress, live_plot=live_plot)
            key = f"dc-f{f}-{'res' if residual else 'plain'}"
            runs[key] = StageRun(key, name, f"DC-AE f={f}", ae.eval(), hist, cfg.dc_steps, hist.seconds)
    return runs


# ----------------------------------------------------------------------------- reading the training curves
def loss_drop(history: History, frac: float = 0.2, window: int = 10) -> float:
    """Relative drop of the smoothed loss (``History.smoothed``, moving mean of ``window`` logged values)
    over the last ``frac`` of the logged steps: (L_start − L_end) / L_start, L_start at the entry
    ⌈(1 − frac)·n⌉ − 1. 0.3 = the loss fell 30 % in that stretch (still improving); ≈ 0 = flat."""
    y = history.smoothed("loss", window)
    if len(y) < 2:
        raise ValueError("need at least two logged losses")
    start = min(len(y) - 2, max(0, math.ceil((1 - frac) * len(y)) - 1))
    return float((y[start] - y[-1]) / abs(y[start]))


def loss_trend(history: History, start: float = 0.4, end: float = 0.7, window: int = 10) -> float:
    """Relative drop of the smoothed loss (``History.smoothed``) between the logged entries at the fractions
    ``start`` and ``end`` of the run: (L(start) − L(end)) / L(start), entries ⌊frac·(n − 1)⌋. Under fit's
    cosine schedule lr(i) = ½(1 + cos(πi/N))·lr₀ the default 0.4 → 0.7 is where the learning rate is still
    0.79 → 0.35 of its peak: a flat stretch there is the run's, not the schedule's (over the last 20 % the
    factor is below 0.1, so every cosine run ends flat). 0.3 = the loss fell 30 % there; ≈ 0 = flat."""
    y = history.smoothed("loss", window)
    if len(y) < 2 or not 0 <= start < end <= 1:
        raise ValueError("need at least two logged losses and 0 ≤ start < end ≤ 1")
    i, j = int(start * (len(y) - 1)), int(end * (len(y) - 1))
    j = max(j, i + 1)
    return float((y[i] - y[j]) / abs(y[i]))


def cosine_lr_factor(frac: float) -> float:
    """fit's cosine learning-rate factor ½(1 + cos(π·frac)) at the fraction ``frac`` of the steps."""
    return 0.5 * (1 + math.cos(math.pi * frac))


def first_step_below(base: History, new: History, window: int = 10) -> int | None:
    """The first logged step from which ``new``'s smoothed loss stays below ``base``'s to the end
    (both logged at the same steps); None if it is not below at the last step."""
    a, b = base.smoothed("loss", window), new.smoothed("loss", window)
    if len(a) != len(b) or list(base.steps) != list(new.steps):
        raise ValueError("the two histories must be logged at the same steps")
    below = b < a
    if not below[-1]:
        return None
    i = len(below) - 1
    while i > 0 and below[i - 1]:
        i -= 1
    return int(base.steps[i])


IMPROVING = 0.05   # relative drop of the smoothed loss over 0.4 N → 0.7 N above which a run "was still improving"


def dc_curve_text(stages: dict, fs, start: float = 0.4, end: float = 0.7, window: int = 10) -> dict:
    """For each f: sentences read off the plain and residual arms' training curves. ``loss_trend`` between
    the fractions ``start`` and ``end`` of the run (where fit's cosine learning rate is still large) says
    whether a run was still improving (a drop > ``IMPROVING``) — then the verdict is a snapshot of a run
    that more steps would have moved; ``first_step_below`` says from which step the residual arm stayed
    ahead, if it did. Every entry ends with the schedule's caveat: the cosine schedule takes the learning
    rate to 0 at the last step, so a flat end is the schedule's, not convergence. Returns {f: sentence}."""
    out = {}
    for f in fs:
        p, r = stages[f"dc-f{f}-plain"], stages[f"dc-f{f}-res"]
        dp, dr = loss_trend(p.history, start, end, window), loss_trend(r.history, start, end, window)
        a, b = round(start * p.steps), round(end * p.steps)
        lr = f"{cosine_lr_factor(start):.2f} → {cosine_lr_factor(end):.2f} of its peak"
        change = (f"the smoothed loss fell {dp:.0%} / {dr:.0%}, plain / residual, from step {a} to {b}, where the "
                  f"learning rate was still {lr}")
        still = [name for name, d in (("plain", dp), ("residual", dr)) if d > IMPROVING]
        if len(still) == 2:
            txt = f"Both f = {f} runs were still improving while the learning rate was large ({change})."
        elif still:
            txt = (f"At f = {f} the {still[0]} run was still improving while the learning rate was large, the other "
                   f"was not ({change}).")
        else:
            txt = (f"Both f = {f} runs had flattened while the learning rate was still large ({change}), so more "
                   "steps at this rate would likely not have moved them much.")
        s = first_step_below(p.history, r.history, window)
        if s is None:
            txt += " The residual arm's loss ends above the plain arm's."
        elif s <= p.history.steps[0]:
            txt += " The residual arm's loss is below the plain arm's throughout."
        else:
            txt += f" The residual arm's loss stays below the plain arm's from step {s} on."
        txt += (f" The cosine schedule takes the learning rate to 0 at step {p.steps}, so a flat end is the "
                f"schedule's, not convergence: the verdict is a {p.steps}-step snapshot.")
        out[f] = txt
    return out


def dc_why_not(stages: dict, ldms: dict, f: int, start: float = 0.4, end: float = 0.7, window: int = 10) -> str:
    """The reason offered when DC-AE's claim is not reproduced at f: only what was measured. Runs still
    improving while the learning rate was large (``loss_trend`` > ``IMPROVING``) make the verdict a snapshot;
    otherwise the refutation is unexplained at one run per arm, and the sentence says from which step the
    residual arm's loss stayed above the plain arm's (``first_step_below`` with the arms swapped). Given the
    LDM runs (their scale s = 1/std of the latent), latents whose std differs more than 3× are named — an
    observation, not a cause."""
    p, r = stages[f"dc-f{f}-plain"], stages[f"dc-f{f}-res"]
    still = [name for name, st in (("plain", p), ("residual", r))
             if loss_trend(st.history, start, end, window) > IMPROVING]
    if still:
        txt = (f"The {' and '.join(still)} run{'s were' if len(still) > 1 else ' was'} still improving while the "
               f"learning rate was large (§3's curves): the verdict is a {p.steps}-step snapshot.")
    else:
        above = first_step_below(r.history, p.history, window)          # plain below residual = residual above
        where = ("" if above is None else " (the residual arm's loss was above the plain arm's throughout)"
                 if above <= p.history.steps[0] else f" (the residual arm's loss was above the plain arm's from "
                                                     f"step {above} on)")
        txt = f"Unexplained at one run per arm{where}."
    lp, lr_ = ldms.get(f"dc-f{f}-plain"), ldms.get(f"dc-f{f}-res")
    if lp is not None and lr_ is not None and lp.scale > 0 and lr_.scale > 0:
        sp, sr = 1 / lp.scale, 1 / lr_.scale
        if max(sp, sr) > 3 * min(sp, sr):
            txt += (f" An observation, not a measured cause: the residual arm's latent has std {sr:.2g} against "
                    f"{sp:.2g} for the plain arm's (1/s, §4's check) — the shortcuts carry unnormalised activations "
                    "into the latent.")
    return txt


def discriminator_gap(history: History, from_step: int, block: int = 10) -> tuple[float, float]:
    """Mean of D(x) − D(x̂) (the logged mean logits "d_real", "d_fake") over the logged steps > ``from_step``
    (the GAN-on steps: fit logs call i as step i + 1, and λ·L_GAN acts from call ``disc_start`` on), and its standard error from the means of consecutive blocks of ``block`` logged
    steps (neighbouring steps are correlated: the s.e. of block means is honest, the naive one is not).
    How well the discriminator told real from reconstructed while its gradient reached the decoder."""
    real, fake = history.metrics["d_real"], history.metrics["d_fake"]
    steps = history.steps[len(history.steps) - len(real):]            # logged from some step on
    gap = torch.tensor([r - f for st, r, f in zip(steps, real, fake) if st > from_step], dtype=torch.float64)
    if len(gap) < 2:
        raise ValueError(f"fewer than two logged steps after step {from_step}")
    nb = len(gap) // block
    means = gap[:nb * block].reshape(nb, block).mean(1) if nb >= 2 else gap
    return float(gap.mean()), float(means.std() / math.sqrt(len(means)))


# ----------------------------------------------------------------------------- stage-1 measurements
@dataclass
class StageEval:
    """Reconstruction quality on n test images: PSNR per image (dB), its mean, rFID-MNIST (FID of the
    reconstructions against the originals, bootstrap interval), the reconstructions in [0, 1], the
    classifier features of reconstructions and originals (for paired ΔrFID) and the sharpness ratio
    per image (``sharpness_ratio``: edge strength of x̂ over that of x)."""
    psnr_per_image: torch.Tensor
    rfid: Interval
    recon: torch.Tensor
    features: object = None          # ClassifierOutputs of the reconstructions
    ref_features: object = None      # … of the originals (the same for every stage on the same images)
    sharpness_per_image: torch.Tensor | None = None
    originals: torch.Tensor | None = None     # the test images in [0, 1] (for ``collapse_ratio``)

    @property
    def psnr(self) -> float:
        return float(self.psnr_per_image.mean())

    @property
    def psnr_se(self) -> float:
        """Standard error of the mean PSNR over the test images."""
        return float(self.psnr_per_image.std() / math.sqrt(len(self.psnr_per_image)))

    @property
    def sharpness(self) -> float:
        return float(self.sharpness_per_image.mean())


@torch.no_grad()
@torch.no_grad()
def reconstruct(ae: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """𝒟(ℰ(x)) for images x in [−1, 1], returned in [0, 1] on the CPU."""
    ae.eval()
    return ((torch.cat(eval_batches(lambda xb: ae.decode(ae.encode(xb)), x, batch_size)) + 1) / 2).clamp(0, 1).cpu()


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def edge_strength(images01: torch.Tensor) -> torch.Tensor:
    """Mean Sobel gradient magnitude per image, (N,): mean over pixels of √(G_x² + G_y²), G_x, G_y the
    Sobel responses (3 × 3, zero padding). A blurred copy of an image has weaker edges."""
    x = images01.float()
    k = torch.stack([_SOBEL, _SOBEL.t()]).unsqueeze(1).to(x)               # (2, 1, 3, 3): G_x, G_y
    g = F.conv2d(x, k, padding=1)
    return g.pow(2).sum(1).sqrt().flatten(1).mean(1)


def sharpness_ratio(recon01: torch.Tensor, orig01: torch.Tensor) -> torch.Tensor:
    """Per image: edge_strength(x̂) / edge_strength(x). 1 = as sharp as the original; an L2-trained
    autoencoder's averaged reconstructions score < 1 (the "blurriness typical of the L2 loss")."""
    return edge_strength(recon01) / edge_strength(orig01).clamp_min(1e-8)


def evaluate_stage(ae: nn.Module, x_test: torch.Tensor, n_boot: int = 100, seed: int = 0) -> StageEval:
    """PSNR, rFID-MNIST and sharpness of ``ae`` on the test images ``x_test`` (in [−1, 1]); the
    classifier runs once on the reconstructions and once on the originals."""
    rec = reconstruct(ae, x_test)
    orig = ((x_test + 1) / 2).clamp(0, 1).cpu()
    fr, fo = classifier_outputs(rec), classifier_outputs(orig)
    return StageEval(psnr(orig, rec), fid_interval(fr, fo, n_boot=n_boot, seed=seed), rec, fr, fo,
                     sharpness_ratio(rec, orig), orig)


def paired_psnr_difference(a: StageEval, b: StageEval) -> tuple[float, float]:
    """Mean PSNR(b) − PSNR(a) over the same test images and its standard error (paired)."""
    d = b.psnr_per_image - a.psnr_per_image
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def paired_sharpness_difference(a: StageEval, b: StageEval) -> tuple[float, float]:
    """Mean sharpness ratio of b minus that of a over the same test images and its standard error."""
    d = (b.sharpness_per_image - a.sharpness_per_image).double()
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def paired_rfid_difference(a: StageEval, b: StageEval, n_boot: int = 200, seed: int = 0) -> Interval:
    """rFID(b) − rFID(a) on the same test images: ``metrics.paired_fid_difference`` with one index
    resample per replicate applied to both reconstructions and the originals."""
    return paired_fid_difference(a.features, b.features, a.ref_features, n_boot=n_boot, seed=seed, paired=True)


# ----------------------------------------------------------------------------- stage 2
@dataclass
class LDMRun:
    """The downstream latent DDPM of one first stage: the pipeline, steps, compute and time, and (after
    ``evaluate_ldm``) its samples, their classifier outputs, the sampler's name and the quality report."""
    ldm: LatentDiffusion
    history: History
    steps: int
    flops_per_step: float
    scale: float
    samples: torch.Tensor | None = None
    sample_seconds: float = 0.0
    quality: dict = field(default_factory=dict)
    features: object = None          # ClassifierOutputs of the samples
    sampler: str = ""                # e.g. "ancestral DDPM, 20 steps"
    batch_size: int = 0
    latent_kurtosis: float = float("nan")    # excess kurtosis of the scaled training latents z·s
    clip_count: dict = field(default_factory=dict)   # LatentDiffusion.sampler's count over the samples

    @property
    def clip_share(self) -> float | None:
        """Share of the sampled latents' entries at the clip bound ±max|z·s| (None before sampling)."""
        c = self.clip_count
        return c["at_bound"] / c["total"] if c.get("total") else None

    @property
    def sample_rms(self) -> float | None:
        """RMS of the sampled (scaled) latents' entries; the training latents' is 1 by construction of s."""
        c = self.clip_count
        return math.sqrt(c["sum_sq"] / c["total"]) if c.get("total") else None

    @property
    def gflop(self) -> float:
        return self.steps * self.flops_per_step / 1e9

    @property
    def seconds(self) -> float:
        return self.history.seconds - self.history.eval_seconds

    @property
    def fid(self) -> Interval | None:
        return self.quality.get("fid")


def second_stage_config(dcfg, cfg):
    """Lesson 04's DiffusionConfig with the lesson's latent-UNet width (everything else: its recipe)."""
    return replace(dcfg, ch=cfg.unet_ch, ch_mult=tuple(cfg.unet_ch_mult), patch=1)


def ldm_steps(ae: nn.Module, dcfg, cfg) -> tuple[int, float]:
    """(training steps, FLOPs per step) of the downstream UNet: as many steps as ``cfg.ldm_gflop`` GFLOP
    buy at this latent size, at most ``cfg.ldm_max_steps`` (equal compute wherever the cap does not bite;
    where it bites, equal steps — ``ldm_budget_text`` says which held)."""
    fl = unet_step_flops(latent_unet(dcfg, tuple(ae.latent_shape)), dcfg.batch_size)
    return max(1, min(cfg.ldm_max_steps, int(round(cfg.ldm_gflop * 1e9 / fl)))), fl


def train_ldm(ae: nn.Module, x: torch.Tensor, y: torch.Tensor, dcfg, cfg, seed: int = 0, progress: bool = True,
              desc: str = "latent DDPM", live_plot=False) -> LDMRun:
    """Encode the training images once (scale s = 1/std: of posterior samples for a KL first stage, of
    the latents otherwise, as lesson 06), then lesson 06's ``train_latent_ddpm`` for ``ldm_steps``."""
    steps, fl = ldm_steps(ae, dcfg, cfg)
    if getattr(ae, "reg", None) == "kl":
        z, logvar = posterior_dataset(ae, x)                     # the means train; a draw sets s
        s = latent_scale_factor(posterior_sample(z, logvar, torch.Generator().manual_seed(seed)))
    else:
        z = encode_dataset(ae, x)
        s = latent_scale_factor(z)
    z = z * s
    ldm, hist = train_latent_ddpm(z, y, ae, s, dcfg, steps, seed=seed, desc=desc, progress=progress,
                                  live_plot=live_plot)
    return LDMRun(ldm, hist, steps, fl, s, batch_size=dcfg.batch_size, latent_kurtosis=excess_kurtosis(z))


def excess_kurtosis(z: torch.Tensor) -> float:
    """E[(z − μ)⁴] / σ⁴ − 3 over all entries (population moments): 0 for a Gaussian, −2 for ±1 coin
    flips, large and positive for heavy tails (a few entries far out, where 1/std scales the rest small)."""
    z = z.double().flatten()
    c = z - z.mean()
    return float(c.pow(4).mean() / c.pow(2).mean().pow(2) - 3)


@torch.no_grad()
def decode_noisy_latents(run: LDMRun, x: torch.Tensor, sigma: float = 0.5, seed: int = 0) -> torch.Tensor:
    """𝒟((z·s + σ ε)/s) in [0, 1] for the images x (in [−1, 1]): training latents (the encoder's mean)
    pushed off by Gaussian noise of σ in the scaled units (where the training latents have std 1), then
    decoded. If these still look like digits the decoder tolerates latents near its training range, and
    an LDM whose samples do not has drawn latents far outside it."""
    z = run.ldm.encode(x)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed)).to(z)
    return run.ldm.decode(z + sigma * eps).cpu()


SAMPLER_NAMES = {"ddpm": "ancestral DDPM (η = 1, strided)", "ddim": "DDIM (η = 0)"}


def sampler_name(method: str, steps: int) -> str:
    """'ancestral DDPM (η = 1, strided), 20 steps' and the like."""
    return f"{SAMPLER_NAMES.get(method, method)}, {steps} steps"


def evaluate_ldm(run: LDMRun, n: int, steps: int, seed: int = 0, guidance: float = 1.0,
                 method: str = "ddpm") -> LDMRun:
    """n class-balanced samples (``sample_images`` of ``LatentDiffusion.sampler(steps, method, guidance)``:
    z_T ~ N(0, I), the lesson-04/05 sampler on scaled latents with x̂_0 clipped to the training latents'
    range ``ldm.clip_x0``, then 𝒟(z/s), the same pipeline as lesson 06), their classifier outputs and
    their ``quality_report``, and how many sampled latent entries sit at the clip bound (``run.clip_count``,
    ``run.clip_share``). Default ``method="ddpm"``: strided ancestral sampling, the course's best
    20-step sampler (lesson 05's table), as lessons 04 and 06 evaluate.

    Why clip: the cosine schedule's last ᾱ is ≈ 2.4·10⁻⁹, and the first strided step starts there, so its
    x̂_0 multiplies any error of ε̂ by √(1 − ᾱ_T)/√ᾱ_T ≈ 1/√ᾱ_T ≈ 2·10⁴; without a bound the latent run diverges (a VQ decoder hides it by snapping the
    wreck to codes, a continuous decoder does not)."""
    run.clip_count = {}
    s = sample_images(run.ldm.sampler(steps, method, guidance, clip_count=run.clip_count), n, seed=seed)
    run.samples, run.sample_seconds = s.images, s.seconds
    run.features = classifier_outputs(s.images)
    run.quality = quality_report(s.images, seed=seed)
    run.sampler = sampler_name(method, steps)
    return run


def ldm_fid_difference(a: LDMRun, b: LDMRun, seed: int = 0, n_boot: int = 200) -> Interval:
    """FID(b) − FID(a) of two LDMs' samples against the SAME test images (``quality_report``'s reference):
    ``metrics.paired_fid_difference(paired=False)`` — samples resampled independently, the shared
    reference resampled once per replicate for both. Computed once per pair, seed and n_boot, then
    reused (the lesson's pair paragraphs and its Summary both quote it)."""
    cache = b.__dict__.setdefault("_fid_differences", {})
    key = (id(a), seed, n_boot)
    if key not in cache:
        ref = reference_outputs(len(a.features), "test", seed)
        cache[key] = (a, paired_fid_difference(a.features, b.features, ref, n_boot=n_boot, seed=seed, paired=False))
    return cache[key][1]                                      # a kept alive, so its id stays unique


def ldm_budget_text(stages: dict, ldms: dict, cap: int, gflop_budget: float | None = None) -> str:
    """One sentence, from the runs, on what the downstream LDMs had in common: steps, batch and GFLOP per
    latent shape; "equal compute" only where the GFLOP agree within 2 %, "equal steps" where the step cap
    made them agree instead. Given ``gflop_budget`` (``cfg.ldm_gflop``), a cap that bound for every latent
    is said with the steps the budget would have bought."""
    groups: dict = {}
    for k, r in ldms.items():
        groups.setdefault(tuple(stages[k].latent_shape), []).append(r)
    rows = [(shape, rs[0].steps, rs[0].gflop) for shape, rs in groups.items()]
    steps = {s for _, s, _ in rows}
    gf = [g for _, _, g in rows]
    batch = next(iter(ldms.values())).batch_size
    per = "; ".join(f"{'×'.join(map(str, shape))}: {s:,} steps, {g:,.0f} GFLOP" if g >= 10 else
                    f"{'×'.join(map(str, shape))}: {s:,} steps, {g:.2g} GFLOP" for shape, s, g in rows)
    within = "within each pair the latents have the same shape, so the UNet, steps and compute are identical"
    if max(gf) <= 1.02 * min(gf):
        return f"Every LDM trained at batch {batch} with the **same compute** ({per}); {within}."
    if len(steps) == 1:
        capped = next(iter(steps)) == cap
        bought = sorted(int(round(gflop_budget * 1e9 / rs[0].flops_per_step)) for rs in groups.values()) \
            if gflop_budget else []
        cap_txt = (f"the {cap:,}-step cap bound for every latent (the {gflop_budget:g}-GFLOP budget would have bought "
                   f"{bought[0]:,}–{bought[-1]:,} steps)" if bought and bought[0] > cap else f"the {cap:,}-step cap bit")
        return (f"Every LDM trained the **same number of steps** at batch {batch}, not the same compute ({per}): "
                + (f"{cap_txt}, and a UNet step costs less on a latent with fewer positions"
                   if capped else "a UNet step costs less on a latent with fewer positions")
                + f"; {within}. Across families, compare with that in mind.")
    return (f"The LDMs trained at batch {batch} with these budgets ({per}): equal GFLOP where the "
            f"{cap:,}-step cap did not bite; {within}. Across families, compare with that in mind.")


# ----------------------------------------------------------------------------- the table and the verdicts
def results_table(stages: dict, evals: dict, ldms: dict) -> str:
    """Markdown: one row per first stage — family, f, latent and its numbers per image, parameters,
    training steps and seconds, PSNR ± s.e., sharpness, rFID [interval], and the downstream LDM's
    steps, GFLOP and FID [interval]."""
    head = ("| comparison | first stage | f | latent | numbers | parameters | steps | train s | PSNR (dB) ± s.e. "
            "| sharpness | rFID-MNIST | LDM steps | LDM GFLOP | LDM FID-MNIST |\n"
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n")
    rows = []
    for key, r in stages.items():
        e, l = evals[key], ldms.get(key)
        ldm_cols = (f"{l.steps:,} | {l.gflop:,.0f} | {l.fid}" if l is not None and l.fid is not None else "– | – | –")
        sharp = f"{e.sharpness:.2f}" if e.sharpness_per_image is not None else "–"
        rows.append(f"| {r.family} | {r.label} | {r.f} | {'×'.join(map(str, r.latent_shape))} | "
                    f"{math.prod(r.latent_shape)} | {r.params:,} | {r.steps:,} | {r.seconds:.0f} | "
                    f"{e.psnr:.2f} ± {e.psnr_se:.2f} | {sharp} | {e.rfid} | {ldm_cols} |")
    return head + "\n".join(rows)


def latent_size_text(stages: dict) -> str:
    """What every first stage keeps per image: equal numbers (f trades positions for channels) or not."""
    sizes = {k: math.prod(r.latent_shape) for k, r in stages.items()}
    shapes = ", ".join(dict.fromkeys('×'.join(map(str, r.latent_shape))
                                     for r in sorted(stages.values(), key=lambda r: r.f)))     # in order of f
    if len(set(sizes.values())) == 1:
        n = next(iter(sizes.values()))
        return (f"All first stages keep **{n} numbers per image** (latents {shapes}; 784 pixels, "
                f"{784 / n:.1f}× fewer): f trades spatial positions for channels, the bottleneck's size is the same.")
    by_size: dict = {}
    for k, v in sizes.items():
        by_size.setdefault(v, []).append(k)
    return ("The first stages keep different numbers per image: "
            + "; ".join(f"{v} ({', '.join(ks)})" for v, ks in sorted(by_size.items(), reverse=True))
            + ". Compare reconstructions across these groups with that in mind.")


def _compare(a: Interval, b: Interval) -> str:
    """'lower' / 'higher' when b's interval lies entirely below / above a's, else 'overlap'."""
    if b.high < a.low:
        return "lower"
    if b.low > a.high:
        return "higher"
    return "overlap"


def _sign(iv: Interval) -> str:
    """Direction of a difference b − a from the interval of the difference: 'lower' if it lies below 0,
    'higher' if above, 'same' if it holds 0."""
    return "lower" if iv.high < 0 else "higher" if iv.low > 0 else "same"


def _mean_dir(d: float, se: float) -> str:
    return "same" if abs(d) <= 2 * se else ("higher" if d > 0 else "lower")


@dataclass
class PairVerdict:
    """The measured differences new − base on the same test images, and their directions."""
    d_psnr: float
    se_psnr: float
    psnr_dir: str                    # 'higher' / 'lower' / 'same' (paired ± 2 s.e.)
    d_rfid: Interval                 # paired bootstrap
    rfid_dir: str                    # 'lower' / 'higher' / 'same' (interval of Δ vs 0)
    d_sharp: float
    se_sharp: float
    sharp_dir: str


def pair_verdict(eb: StageEval, en: StageEval, seed: int = 0) -> PairVerdict:
    """PSNR, ΔrFID and sharpness of ``en`` against ``eb`` (computed once per pair and seed, then reused:
    the bootstrap of ΔrFID is the costly part)."""
    cache = en.__dict__.setdefault("_verdicts", {})
    key = (id(eb), seed)
    if key not in cache:
        cache[key] = (eb, _pair_verdict(eb, en, seed))        # eb kept alive, so its id stays unique
    return cache[key][1]


def _pair_verdict(eb: StageEval, en: StageEval, seed: int) -> PairVerdict:
    d, se = paired_psnr_difference(eb, en)
    ds, ses = paired_sharpness_difference(eb, en)
    drf = paired_rfid_difference(eb, en, seed=seed)
    return PairVerdict(d, se, _mean_dir(d, se), drf, _sign(drf), ds, ses, _mean_dir(ds, ses))


_WORD = {"lower": "reproduced", "higher": "not reproduced", "same": "not resolved"}
CLIP_SHARE = 0.01  # share of sampled latent entries on the clip bound above which the text says so
OFF_RMS = 1.5      # RMS of the sampled scaled latents (the training latents': 1) above which an LDM is off-distribution
SHARPER = 0.02     # gain in the edge-strength ratio we call "sharper"; a smaller measured gain is "edges N % stronger"
ONE_RUN = ("One training run per arm: the intervals cover the choice of test images, not training "
           "randomness (a second seed could move each arm).")


def off_distribution(ldms: dict, threshold: float = OFF_RMS) -> dict:
    """{key: RMS} of the LDMs whose sampled scaled latents have RMS > ``threshold`` (the training latents'
    RMS is 1 by construction of s = 1/std; 1.5 is 2.25× their variance): these LDMs did not learn their
    latents' distribution, so their FIDs measure that failure, not the first stage."""
    return {k: r.sample_rms for k, r in ldms.items() if r.sample_rms is not None and r.sample_rms > threshold}


def off_distribution_text(ldms: dict, threshold: float = OFF_RMS) -> str:
    """One sentence naming the off-distribution LDMs (``off_distribution``), or saying there are none."""
    off = off_distribution(ldms, threshold)
    if not off:
        rms = [r.sample_rms for r in ldms.values() if r.sample_rms is not None]
        return (f"Every LDM drew latents with RMS ≤ {threshold:g} ({min(rms):.2f}–{max(rms):.2f}; the training "
                "latents': 1): none sits far outside its training latents' range." if rms else "")
    who = ", ".join(off)
    vals = ", ".join(f"{v:.2f}" for v in off.values())
    many = len(off) > 1
    return (f"The LDM{'s' if many else ''} on {who} drew latents with RMS {vals} (the training latents': 1; we call "
            f"an RMS above {threshold:g} off-distribution): at this budget {'they' if many else 'it'} did not learn "
            f"{'these' if many else 'this'} latents' distribution, so {'their' if many else 'its'} FID"
            f"{'s' if many else ''}, and the ΔFID of any pair {'they belong' if many else 'it belongs'} to, do not "
            "measure the first stage.")


def _numbers(stage: StageRun) -> int:
    c, h, w = stage.latent_shape
    return c * h * w


def collapse_ratio(ev: StageEval) -> float | None:
    """How much the reconstructions vary across test images, relative to the originals: the mean over
    pixels of their std across images, divided by the same for the originals (≈ 1 for a working
    autoencoder, ≈ 0 for one that outputs the mean image)."""
    if ev.recon is None or ev.originals is None:
        return None
    return float(ev.recon.std(0).mean() / ev.originals.std(0).mean().clamp_min(1e-8))


def collapse_text(label: str, spread: float | None) -> str:
    """A sentence for a stage whose reconstructions vary little across test images (``collapse_ratio``),
    graded: < 0.1 "nearly the same image for every input", 0.1–0.5 "mostly a blurred average digit", and
    nothing from 0.5 on (or without a ratio). The label's first letter is capitalised."""
    if spread is None or spread >= 0.5:
        return ""
    name = label[:1].upper() + label[1:]
    if spread < 0.1:
        return (f"{name} outputs nearly the same image for every input (its reconstructions vary {spread:.0%} as much "
                "across test images as the originals): it never left the mean-image plateau.")
    return (f"{name}'s reconstructions vary only {spread:.0%} as much across test images as the originals: mostly "
            "a blurred average digit.")


def describe_pair(base: StageRun, new: StageRun, eb: StageEval, en: StageEval, lb: LDMRun | None,
                  ln: LDMRun | None, claim: str, expect_psnr: str = "higher", why_not: str = "",
                  seed: int = 0, reference: tuple | None = None) -> str:
    """One paragraph, worded from the data, for any outcome.

    Measured new − base on the same test images: PSNR (paired ± 2 s.e.), rFID (paired bootstrap of
    ΔrFID: separated when its interval excludes 0), sharpness (edge-strength ratio, paired ± 2 s.e.),
    and the downstream LDMs' ΔFID (shared test reference). The seed paper's ``claim`` is judged on rFID;
    with ``expect_psnr="higher"`` the claim is about reconstructions in general and gets a PSNR verdict
    too; with ``expect_psnr="lower"`` a PSNR loss is the recipe's expected price, and the text says
    whether it bought anything (lower rFID, stronger edges; "sharper" only for a gain ≥ ``SHARPER``). ``why_not``: a sentence added when the rFID
    claim is not reproduced or not resolved (e.g. how long the new term acted). ``reference``: (StageRun,
    StageEval) of a stage that keeps as many numbers per image, to put a relative win in absolute terms.
    A stage whose reconstructions vary little across images (``collapse_text``) is named."""
    v = pair_verdict(eb, en, seed)
    psnr_word = {"higher": "higher", "lower": "lower", "same": "unchanged within noise"}[v.psnr_dir]
    psnr_txt = (f"PSNR {eb.psnr:.2f} → {en.psnr:.2f} dB, {psnr_word} ({v.d_psnr:+.2f} ± {2 * v.se_psnr:.2f} dB, "
                f"± 2 s.e., paired over the test images)")
    rfid_word = {"lower": "falls", "higher": "rises", "same": "not separated"}[v.rfid_dir]
    rfid_txt = (f"rFID-MNIST {eb.rfid} → {en.rfid}, {rfid_word} (ΔrFID {v.d_rfid}, paired bootstrap over the "
                f"test images{', interval excludes 0' if v.rfid_dir != 'same' else ', interval holds 0'})")
    sharp_word = {"higher": "stronger", "lower": "weaker", "same": "unchanged within noise"}[v.sharp_dir]
    sharp_txt = (f"edge strength relative to the originals {eb.sharpness:.3f} → {en.sharpness:.3f}, {sharp_word} "
                 f"({v.d_sharp:+.3f} ± {2 * v.se_sharp:.3f})")
    parts = [f"**{new.family}** — {new.label} against {base.label}: {psnr_txt}; {rfid_txt}; {sharp_txt}."]
    if lb is not None and ln is not None and lb.fid is not None and ln.fid is not None:
        dl = ldm_fid_difference(lb, ln, seed=seed)
        l = _sign(dl)
        what = {"lower": "improves", "higher": "gets worse", "same": "is not separated"}[l]
        parts.append(f"The downstream LDM (same UNet, {ln.steps:,} steps each, {ln.sampler}) {what}: FID "
                     f"{lb.fid} → {ln.fid}, ΔFID {dl} (bootstrap, shared test reference).")
        off = [(st.label, r.sample_rms) for st, r in ((base, lb), (new, ln))
               if r.sample_rms is not None and r.sample_rms > OFF_RMS]
        if off:
            parts.append("The sampled latents of " + " and ".join(f"{name} (RMS {v:.2f})" for name, v in off) +
                         " lie far outside the training latents' RMS of 1 (§4's check after the samples): at this budget "
                         f"{'these LDMs' if len(off) > 1 else 'that LDM'} did not learn the latents' distribution, so this "
                         "ΔFID does not measure the first stages.")
        clipped = [(st.label, r.clip_share) for st, r in ((base, lb), (new, ln))
                   if r.clip_share is not None and r.clip_share > CLIP_SHARE]
        if clipped:
            parts.append("The sampled latents of " + " and ".join(f"{name} ({p:.0%})" for name, p in clipped) +
                         " end on the clip bound more than " + f"{CLIP_SHARE:.0%} of the time (§4's check after the "
                         "samples), so the LDM FIDs read the sampler's overshoot as much as the latent.")
        if v.rfid_dir != "same" and l != "same" and l != v.rfid_dir and not off:
            limited = ln.fid.low > en.rfid.high and lb.fid.low > eb.rfid.high
            parts.append(f"Reconstructions and samples disagree: the {'better' if v.rfid_dir == 'lower' else 'worse'} "
                         f"decoder gave the {'worse' if v.rfid_dir == 'lower' else 'better'} LDM. " +
                         (f"Both LDMs' FIDs lie far above their first stages' rFIDs ({lb.fid.value:.0f} and "
                          f"{ln.fid.value:.0f} against {eb.rfid.value:.0f} and {en.rfid.value:.0f}): at this budget "
                          "the second stage, not the decoder, limits the samples." if limited else
                          "With one run per arm this is unexplained."))
    w = _WORD[v.rfid_dir]
    if expect_psnr == "higher":
        pw = {"higher": "reproduced", "lower": "not reproduced", "same": "not resolved"}[v.psnr_dir]
        verdict = f"The seed paper's claim — {claim} — on rFID: **{w}**; on PSNR: **{pw}**"
    else:
        verdict = f"The seed paper's claim — {claim} — is **{w}** on rFID"
        if v.psnr_dir == "lower" and v.rfid_dir == "lower":
            rel = v.d_sharp / max(eb.sharpness, 1e-8)
            verdict += (f"; PSNR paid {abs(v.d_psnr):.2f} dB for it, " +
                        (f"and the reconstructions are sharper (edge strength {v.d_sharp:+.3f}, past the {SHARPER} we "
                         "count as sharper): the expected price of sharper, less averaged reconstructions"
                         if v.sharp_dir == "higher" and v.d_sharp >= SHARPER else
                         f"and the edges are {rel:.0%} stronger ({v.d_sharp:+.3f}: measurable, but below the {SHARPER} "
                         "we count as sharper), so the gain is not a visible sharpening" if v.sharp_dir == "higher" else
                         "but the edge strength did not rise measurably, so the gain is not a measured sharpening"))
        elif v.psnr_dir == "lower":
            verdict += (f"; PSNR fell by {abs(v.d_psnr):.2f} ± {2 * v.se_psnr:.2f} dB with no measured rFID gain: at "
                        "this budget the recipe costs fidelity" +
                        (", and its one measured gain is stronger edges, which the classifier's features do not reward"
                         if v.sharp_dir == "higher" else " and buys nothing measurable"))
        elif v.psnr_dir == "higher" and v.rfid_dir == "lower":
            verdict += " (and PSNR did not even pay for it)"
    verdict += "."
    if v.rfid_dir != "lower" and why_not:
        verdict += " " + why_not
    parts.append(verdict)
    if reference is not None and v.rfid_dir == "lower":
        ref_stage, ref_eval = reference
        parts.append(f"That is relative: in absolute terms {new.label} reconstructs at {en.psnr:.1f} dB and rFID "
                     f"{en.rfid.value:.0f}, against {ref_eval.psnr:.1f} dB and {ref_eval.rfid.value:.0f} for "
                     f"{ref_stage.label} (f = {ref_stage.f}) with the same {_numbers(ref_stage)} numbers per image.")
    for st, ev in ((base, eb), (new, en)):
        txt = collapse_text(st.label, collapse_ratio(ev))
        if txt:
            parts.append(txt)
    parts.append(ONE_RUN)
    return " ".join(parts)


def short_verdict(eb: StageEval, en: StageEval, seed: int = 0, lb: LDMRun | None = None,
                  ln: LDMRun | None = None) -> str:
    """The Summary's line for a pair: ΔrFID with its verdict word, ΔPSNR ± 2 s.e. and, given the two
    downstream LDMs, their ΔFID with its direction — or, when either LDM's sampled latents have RMS >
    ``OFF_RMS``, "not read" (``off_distribution``)."""
    v = pair_verdict(eb, en, seed)
    text = (f"rFID {eb.rfid.value:.1f} → {en.rfid.value:.1f} (ΔrFID {v.d_rfid}: claim **{_WORD[v.rfid_dir]}** on rFID); "
            f"PSNR {eb.psnr:.1f} → {en.psnr:.1f} dB ({v.d_psnr:+.2f} ± {2 * v.se_psnr:.2f})")
    if lb is not None and ln is not None and lb.fid is not None and ln.fid is not None:
        dl = ldm_fid_difference(lb, ln, seed=seed)
        what = {"lower": "better", "higher": "worse", "same": "not separated"}[_sign(dl)]
        rms = [r.sample_rms for r in (lb, ln) if r.sample_rms is not None]
        if rms and max(rms) > OFF_RMS:
            what = f"LDMs off-distribution, sampled RMS {' / '.join(f'{v:.1f}' for v in rms)}: not read"
        text += f"; downstream LDM FID {lb.fid.value:.0f} → {ln.fid.value:.0f} (ΔFID {dl}: {what})"
    return text


def claim_word(eb: StageEval, en: StageEval, seed: int = 0) -> str:
    """The rFID verdict word of a pair (reproduced / not reproduced / not resolved)."""
    return _WORD[pair_verdict(eb, en, seed).rfid_dir]


def recipe_split_text(e_l2: StageEval, e_l1: StageEval, e_recipe: StageEval, seed: int = 0) -> str:
    """Split the recipe's ΔrFID (L2 → L1 + perceptual + GAN) into the L2 → L1 switch (the L1-only copy)
    and what perceptual + GAN add on top of L1: ΔrFID(L2→recipe) = ΔrFID(L2→L1) + ΔrFID(L1→recipe),
    each a paired bootstrap over the same test images (``pair_verdict``); worded for every outcome."""
    total, l1, rest = (pair_verdict(a, b, seed) for a, b in ((e_l2, e_recipe), (e_l2, e_l1), (e_l1, e_recipe)))
    txt = (f"Of the recipe's ΔrFID {total.d_rfid}, the L2 → L1 switch alone gives {l1.d_rfid} (the L1-only copy: "
           f"same warm-up, batches and steps, no perceptual term, no GAN; rFID {e_l1.rfid}, PSNR {e_l1.psnr:.2f} dB, "
           f"edge strength {e_l1.sharpness:.3f}); perceptual + GAN add {rest.d_rfid} on top of L1 (paired bootstraps "
           "over the same test images). ")
    word = {("lower", "same"): "the measured gain is the L1 switch's: the perceptual and adversarial terms add "
                               "nothing separable from 0 at this budget",
            ("lower", "lower"): "both parts contribute",
            ("lower", "higher"): "L1 gains, and perceptual + GAN on top of it make rFID worse",
            ("same", "lower"): "the gain is the perceptual and adversarial terms': L1 alone is not separated from L2",
            ("same", "same"): "neither part alone is separated from 0",
            ("same", "higher"): "L1 alone is not separated from L2, and perceptual + GAN make rFID worse",
            ("higher", "lower"): "L1 alone is worse than L2; the perceptual and adversarial terms more than make up "
                                 "for it",
            ("higher", "same"): "L1 alone is worse than L2, and perceptual + GAN do not separably change that",
            ("higher", "higher"): "both parts make rFID worse"}[(l1.rfid_dir, rest.rfid_dir)]
    return txt + word[0].upper() + word[1:] + "."


def signed(iv: Interval) -> str:
    """An interval of a difference with its signs: '+8.5 [+7.6, +9.4]'."""
    d = iv.digits()
    return f"{iv.value:+.{d}f} [{iv.low:+.{d}f}, {iv.high:+.{d}f}]"


def recipe_split_summary(e_l2: StageEval, e_l1: StageEval, e_recipe: StageEval, seed: int = 0) -> str:
    """The Summary's split of the recipe's ΔrFID (``recipe_split_text``'s two paired bootstraps), signed
    and worded by direction: what the L2 → L1 switch did, and what perceptual + GAN did on top of L1."""
    l1, rest = pair_verdict(e_l2, e_l1, seed), pair_verdict(e_l1, e_recipe, seed)
    word = {"lower": "lowered rFID", "higher": "made rFID worse", "same": "did not separably change rFID"}
    return (f"the L2 → L1 switch alone {word[l1.rfid_dir]} (ΔrFID {signed(l1.d_rfid)}); perceptual + GAN on top of "
            f"L1 {word[rest.rfid_dir]} (ΔrFID {signed(rest.d_rfid)}) (§1's L1-only copy, paired bootstraps)")


def recipe_attribution_text(gap: float, gap_se: float, perc_helps: bool, p99_diff: float, mean_diff: float,
                            d_sharp: float, rfid_lower: bool = True, visible: float = 0.15) -> str:
    """What §1 can and cannot attribute the recipe's rFID change to. rFID-MNIST is a distance between conv-net
    features, and the perceptual term is one too, so a lower rFID alone does not show a perceptual
    improvement. The run's four other signs: the discriminator's gap (``discriminator_gap``: ≥ 0.5 logits
    and past 2 s.e. counts as a clear signal), the blur check of §1 (``perc_helps``), a visible difference
    between the two reconstructions (99th percentile of |x̂_recipe − x̂_L2| ≥ ``visible``) and sharper edges
    (a gain ≥ ``SHARPER``). Worded for any mix of them; with ``rfid_lower`` False there is no gain to attribute."""
    if not rfid_lower:
        return "The recipe did not lower rFID here, so §1 has no rFID gain to attribute."
    signs = [(gap >= 0.5 and gap > 2 * gap_se, f"the discriminator separated real from reconstructed by {gap:.2f} "
                                              "logits"),
             (perc_helps, "the random-feature distance " + ("penalised" if perc_helps else "did not penalise") +
              " blur more than L1"),
             (p99_diff >= visible, f"the two reconstructions differ by {p99_diff:.2f} at the 99th percentile of "
                                   f"pixels (mean {mean_diff:.3f})"),
             (d_sharp >= SHARPER, f"the edges changed by {d_sharp:+.3f}")]
    pro = [t for ok, t in signs if ok]
    con = [t for ok, t in signs if not ok]
    head = ("rFID-MNIST is a distance between conv-net features, and the perceptual term is one too, so a lower "
            "rFID alone does not show that reconstructions look better. ")
    if not pro:
        return (head + "Nothing else in this run points to a perceptual change: " + "; ".join(con) + ". So this run "
                "cannot tell whether the lower rFID is a perceptual improvement or the loss matching conv features.")
    if not con:
        return head + "Here the other signs agree with a perceptual change: " + "; ".join(pro) + "."
    return (head + "The other signs are mixed — for a perceptual change: " + "; ".join(pro) + "; against: " +
            "; ".join(con) + ". So this run cannot fully attribute the lower rFID to a perceptual improvement.")


def discriminator_gap_text(history: History, disc_start: int, block: int = 10) -> str:
    """The D gap (``discriminator_gap`` over the GAN-on steps) in a sentence, worded by its size: not
    separated from 0 (± 2 s.e.), below 0.5 logits (weak; the hinge loss saturates at a gap of 2:
    D(x) ≥ 1, D(x̂) ≤ −1), or clear."""
    gap, se = discriminator_gap(history, disc_start, block)
    n = sum(st > disc_start for st in history.steps)
    txt = (f"Over the {n} logged steps with λ·L_GAN on, the discriminator separated real from reconstructed digits by "
           f"{gap:.2f} ± {2 * se:.2f} logits (mean D(x) − D(x̂), ± 2 s.e. from blocks of {block} steps)")
    if abs(gap) <= 2 * se:
        return txt + ": not separated from 0 — D could not tell them apart, so its gradient told the decoder little."
    if gap < 0.5:
        return (txt + ": a small margin (the hinge loss asks for 2: D(x) ≥ 1, D(x̂) ≤ −1), so the adversarial "
                "signal was weak.")
    return txt + ": D told them apart, so its gradient had something to push the decoder towards."


def _slash(xs, fmt) -> str:
    return " / ".join(format(x, fmt) for x in xs)


def seed_claims_text(stages: dict, evals: dict, ldms: dict, reference: str = "kl-l2") -> str:
    """The Summary's "seed's claims" block: the three claims of the seed paper that the run decides beyond
    §1–3's pairs, one line each with its verdict word, the numbers and the reason.

    1. §2.1: the first stages "work well at moderate spatial compression (8×) but cannot reach good
       reconstruction at high compression (e.g. 64×)": the best f = 8 stage against the best f ≥ 16 stage by
       rFID (95 % intervals: **reproduced** when the high-f interval lies wholly above, **not reproduced**
       when wholly below, **not resolved** when they overlap).
    2. §2.1, fig. 12: DC-AE raised f to 128 "while reconstruction quality was preserved" — in absolute terms:
       every residual stage (keys ``dc-f*-res``) against ``reference`` (an f = 8 stage with as many numbers
       per image): **not reproduced** when every residual rFID interval lies wholly above the reference's,
       **reproduced** when none does, **mixed** otherwise.
    3. §2.2: diffusion models in VQ-regularised latents reach better sample quality than in KL-regularised
       ones: **not tested** (keys ``vq-*`` and ``kl-*`` differ in steps and losses too), with the direction the
       LDM FIDs show descriptively (every VQ interval above every KL one: the opposite; below: the same)."""
    lines = []
    low = [k for k in stages if stages[k].f == 8]
    high = [k for k in stages if stages[k].f >= 16]
    if low and high:
        b8 = min(low, key=lambda k: evals[k].rfid.value)
        bh = min(high, key=lambda k: evals[k].rfid.value)
        w = {"higher": "reproduced", "lower": "not reproduced", "overlap": "not resolved"}[
            _compare(evals[b8].rfid, evals[bh].rfid)]
        nums = {_numbers(stages[k]) for k in low + high}
        same = f", all with {nums.pop()} numbers per image" if len(nums) == 1 else ""
        fmax = max(stages[k].f for k in high)
        lines.append(
            f"- **§2.1: good reconstruction at moderate compression (8×), not at high (64×)** — **{w}**: the best "
            f"f = 8 stage ({stages[b8].label}) reconstructs at rFID {evals[b8].rfid}, {evals[b8].psnr:.1f} dB; the "
            f"best f ≥ 16 stage ({stages[bh].label}, f = {stages[bh].f}) at rFID {evals[bh].rfid}, "
            f"{evals[bh].psnr:.1f} dB{same}. The highest f here is {fmax}, not 64; one run per stage, at this "
            "budget.")
    ref = stages.get(reference)
    res = sorted((k for k in stages if k.startswith("dc-") and k.endswith("-res")), key=lambda k: stages[k].f)
    if ref is not None and res:
        worse = [_compare(evals[reference].rfid, evals[k].rfid) == "higher" for k in res]
        w = "not reproduced" if all(worse) else "reproduced" if not any(worse) else "mixed"
        why = (f" Reasons at hand: no three-phase training (DC-AE's), {_slash(sorted({stages[k].steps for k in res}), ',')} "
               "steps, small networks; §3's pairs test the shortcuts' relative gain, a different question."
               if w != "reproduced" else "")
        lines.append(
            f"- **§2.1, fig. 12: DC-AE raises f (to 128) with reconstruction quality preserved** — in absolute terms "
            f"**{w}**: DC-AE at f = {_slash([stages[k].f for k in res], 'd')} reconstructs at rFID "
            f"{_slash([evals[k].rfid.value for k in res], '.0f')} and {_slash([evals[k].psnr for k in res], '.1f')} dB, "
            f"against {evals[reference].rfid.value:.0f} and {evals[reference].psnr:.1f} dB for {ref.label} at f = "
            f"{ref.f} ({_numbers(ref)} numbers per image"
            f"{', as many' if all(_numbers(stages[k]) == _numbers(ref) for k in res) else ''})." + why)
    vq = [k for k in stages if k.startswith("vq-") and k in ldms and ldms[k].fid is not None]
    kl = [k for k in stages if k.startswith("kl-") and k in ldms and ldms[k].fid is not None]
    if vq and kl:
        above = all(ldms[v].fid.low > ldms[k].fid.high for v in vq for k in kl)
        below = all(ldms[v].fid.high < ldms[k].fid.low for v in vq for k in kl)
        seen = ("descriptively the opposite here" if above else "descriptively the same direction here" if below
                else "descriptively no order here")
        steps = lambda ks: _slash(sorted({stages[k].steps for k in ks}), ",")
        off = [k for k in vq + kl if k in off_distribution(ldms)]
        lines.append(
            f"- **§2.2: diffusion in VQ-regularised latents beats KL-regularised ones** — **not tested** as a "
            f"controlled comparison; {seen} (LDM FID: VQ {_slash([ldms[k].fid.value for k in vq], '.0f')} against KL "
            f"{_slash([ldms[k].fid.value for k in kl], '.0f')}). The VQ stages trained {steps(vq)} steps against "
            f"{steps(kl)}, with different losses, and reconstruct at rFID {_slash([evals[k].rfid.value for k in vq], '.0f')}"
            f" against {_slash([evals[k].rfid.value for k in kl], '.0f')}, so this is no evidence "
            f"{'against' if above else 'for' if below else 'either way on'} the seed's claim" +
            (f" (and the LDMs on {', '.join(off)} are off-distribution)." if off else "."))
    return "**The seed's claims** (beyond the pairs above):\n\n" + "\n".join(lines) if lines else ""


def latent_range_table(stages: dict, ldms: dict, threshold: float = CLIP_SHARE) -> str:
    """Markdown: per first stage the latent scale s, the clip bound max|z·s| of the training latents, their
    excess kurtosis, the RMS of the LDM's sampled latents (the training latents': 1) and the share of
    sampled latent entries at the clip bound (``LDMRun.clip_share``); then a sentence for every LDM whose
    share exceeds ``threshold`` (or one saying none does), one naming the LDMs whose sampled latents' RMS
    exceeds ``OFF_RMS`` (``off_distribution_text``), and one naming heavy-tailed latents."""
    head = ("| first stage | s | max \\|z·s\\| (clip) | excess kurtosis of z·s | RMS of sampled z | sampled entries "
            "at the clip bound |\n|---|---:|---:|---:|---:|---:|\n")
    rows = []
    for k, r in ldms.items():
        share, rms = r.clip_share, r.sample_rms
        rows.append(f"| {k} | {r.scale:.3g} | {r.ldm.clip_x0 or float('nan'):.2f} | {r.latent_kurtosis:.1f} | "
                    f"{'–' if rms is None else f'{rms:.2f}'} | {'–' if share is None else f'{share:.1%}'} |")
    over = [(k, r.clip_share) for k, r in ldms.items() if r.clip_share is not None and r.clip_share > threshold]
    if over:
        who = ", ".join(f"{k} ({p:.0%})" for k, p in over)
        text = (f"The samples of the LDM{'s' if len(over) > 1 else ''} on {who} sit on the clip bound more than "
                f"{threshold:.0%} of the time: the sampler pushed them to the edge of the training latents' range, "
                f"where the decoder saw few latents, so {'their FIDs measure' if len(over) > 1 else 'its FID measures'} "
                "that overshoot as much as the latent.")
    else:
        text = (f"No LDM's sampled latents sit on the clip bound more than {threshold:.0%} of the time: the clip "
                "did not shape the samples.")
    text += " " + off_distribution_text(ldms)
    heavy = [k for k, r in ldms.items() if r.latent_kurtosis > 3]
    if heavy:
        text += (f" Heavy-tailed latents (excess kurtosis > 3): {', '.join(heavy)} — a few entries far out set "
                 "both s = 1/std and the clip, so most of the latent is squeezed near 0 and the clip bounds little.")
    return head + "\n".join(rows) + "\n\n" + text


__all__ = ["StageRun", "make_vqgan_loss", "train_vqgan_pair", "train_movq_pair", "train_dcae_runs", "StageEval",
           "reconstruct", "edge_strength", "sharpness_ratio", "evaluate_stage", "paired_psnr_difference",
           "paired_sharpness_difference", "paired_rfid_difference", "LDMRun", "second_stage_config", "ldm_steps",
           "train_ldm", "sampler_name", "evaluate_ldm", "ldm_fid_difference", "ldm_budget_text", "results_table",
           "latent_size_text", "PairVerdict", "pair_verdict", "collapse_ratio", "describe_pair", "short_verdict",
           "claim_word", "ONE_RUN", "make_l1_loss", "loss_drop", "first_step_below", "dc_curve_text",
           "discriminator_gap", "excess_kurtosis", "decode_noisy_latents", "SHARPER", "recipe_split_text",
           "discriminator_gap_text", "latent_range_table", "CLIP_SHARE", "loss_trend", "cosine_lr_factor",
           "IMPROVING", "dc_why_not", "OFF_RMS", "off_distribution", "off_distribution_text", "collapse_text",
           "signed", "recipe_split_summary", "recipe_attribution_text", "seed_claims_text"]


# ----------------------------------------------------------------------------- the course table
# Every generative model of lessons 02–07 on one table. Each comes from the checkpoint its lesson
# saved under lessons/checkpoints/ when that file exists and fits the preset; otherwise it is trained
# here with its lesson's recipe and preset (and saved, so the next run loads it).
MNIST_TRAIN = 60000


@dataclass
class CourseRow:
    """One generative model: where it comes from, its size and cost, its sampler and training data,
    and the quality of n samples."""
    model: str
    lesson: str
    params: int
    train_seconds: float | None     # training only (evaluations during training left out)
    sample_seconds: float           # wall seconds for ``n`` samples
    n: int
    quality: dict                   # quality_report of the n samples
    is_interval: Interval
    nll: str = "–"                  # text: what likelihood the model defines, if any
    source: str = ""
    samples: torch.Tensor | None = None
    sampler: str = ""               # sampler and its knobs (steps, guidance, temperature, top-k)
    train_images: str = ""          # training images the model saw
    plain_sampling: bool = True     # False: guidance w ≠ 1, temperature ≠ 1 or top-k (a tuned sampler)
    short: str = ""                 # a short name for figure labels (default: ``model``)

    @property
    def label(self) -> str:
        return self.short or self.model

    @property
    def seconds_per_1000(self) -> float:
        return self.sample_seconds * 1000 / self.n


def is_interval(images01: torch.Tensor, n_boot: int = 100, seed: int = 0, level: float = 0.95) -> Interval:
    """IS-MNIST (Salimans et al. 2016, the shipped classifier) with a bootstrap percentile interval over
    samples: resample the images' class probabilities with replacement ``n_boot`` times."""
    from ..classifier import classifier_probs
    p = classifier_probs(images01).clamp_min(1e-12)

    def score(q):
        py = q.mean(0, keepdim=True)
        return float(torch.exp((q * (q.log() - py.log())).sum(1).mean()))

    g = torch.Generator().manual_seed(seed)
    boot = torch.tensor([score(p[torch.randint(0, len(p), (len(p),), generator=g)]) for _ in range(n_boot)])
    lo, hi = torch.quantile(boot.double(), torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return Interval(score(p), float(lo), float(hi))


def table_row(model: str, lesson: str, params: int, train_seconds, sample_fn, n: int, labels="balanced",
              seed: int = 0, nll: str = "–", source: str = "", sampler: str = "", train_images: str = "",
              plain_sampling: bool = True, short: str = "") -> CourseRow:
    """Sample n images with ``sample_fn`` (``sample_images``: batched, seeded, timed) and measure them."""
    s = sample_images(sample_fn, n, labels=labels, seed=seed)
    q = quality_report(s.images, seed=seed)            # IS with its bootstrap interval included
    return CourseRow(model, lesson, int(params), train_seconds, s.seconds, n, q, q["is_interval"], nll, source,
                     s.images, sampler, train_images, plain_sampling, short)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _try_load(path, model):
    """(blob, None) if ``path`` loads into ``model``; else (None, why)."""
    from ..train import CheckpointMismatch, load_checkpoint
    try:
        return load_checkpoint(path, model), None
    except FileNotFoundError:
        return None, "no checkpoint"
    except CheckpointMismatch:
        return None, "its checkpoint does not fit this preset"


def _train_seconds(history: History | None) -> float | None:
    """Training wall time of a history: fit()'s seconds minus the evaluations' own time."""
    return None if history is None else history.seconds - history.eval_seconds


def _seconds(blob) -> float | None:
    from ..train import load_history
    if blob is None:
        return None
    extra = blob.get("extra", {}) or {}
    if "train_seconds" in extra:
        return float(extra["train_seconds"])
    return _train_seconds(load_history(blob))


def _source(history, why: str) -> str:
    """The course table's source column for a model this lesson had to make itself."""
    return f"shipped weights ({why})" if history is not None and history.replayed else f"trained here ({why})"


def vae_for_table(preset, checkpoint_dir="checkpoints", progress: bool = True):
    """Lesson 02's VAE: ``vae_<preset>.pt`` (lesson 02 saves it) if it fits, else lesson 02's recipe
    (then saved there). Returns (model, train seconds, source)."""
    from pathlib import Path
    from ..autoencoders import VAE, vae_loss
    from ..data import mnist_tensors
    from ..train import save_checkpoint, seed_everything
    cfg, dev = preset.vae, preset.device
    path = Path(checkpoint_dir) / f"vae_{preset.name}.pt"
    vae = VAE(latent_dim=cfg.latent_dim, hidden=cfg.hidden).to(dev)
    blob, why = _try_load(path, vae)
    if blob is not None and (blob.get("extra") or {}).get("preset", preset.name) != preset.name:
        blob, why = None, "its checkpoint was saved by another preset"
    if blob is not None:
        return vae.eval(), _seconds(blob), f"checkpoint {path.name}"
    seed_everything(preset.seed)
    vae = VAE(latent_dim=cfg.latent_dim, hidden=cfg.hidden).to(dev)
    x, _ = mnist_tensors("train", device=dev)
    hist = fit(vae, vae_loss(beta=1.0), TensorBatches(x, batch_size=cfg.batch_size, seed=preset.seed), cfg.steps,
               lr=cfg.lr, cosine_decay=True, warmup_steps=min(500, cfg.steps // 10),
               desc=f"VAE d={cfg.latent_dim}: −ELBO (nats)",       # lesson 02's run, by the same name
               progress=progress, live_plot=False)
    save_checkpoint(path, vae, hist, extra={"preset": preset.name, "train_seconds": _train_seconds(hist)})
    return vae.eval(), _train_seconds(hist), _source(hist, why)


def vqvae_for_table(preset, checkpoint_dir="checkpoints", progress: bool = True):
    """Lesson 03's VQ-VAE and token prior: ``vqvae.pt`` + ``vq_prior.pt`` if they fit and were saved by
    this preset, else lesson 03's recipe (EMA codebook with restarts, then the prior; saved there).
    Returns (vqvae, prior, train seconds, source)."""
    from pathlib import Path
    from ..data import mnist_tensors
    from ..token_prior import TokenPrior, prior_loss
    from ..train import save_checkpoint, seed_everything
    from ..vq import VQVAE, tokenize_dataset, vqvae_loss
    cfg, dev = preset.vq, preset.device

    def build():
        vq = VQVAE(num_codes=cfg.num_codes, code_dim=cfg.code_dim, ch=cfg.ch, ch_mult=cfg.ch_mult, num_res=cfg.num_res,
                   beta=cfg.beta, ema=True, decay=cfg.decay, eps=cfg.eps, restart_dead=True,
                   dead_threshold=cfg.dead_threshold).to(dev)
        prior = TokenPrior(cfg.num_codes, vq.token_shape, dim=cfg.prior_dim, depth=cfg.prior_depth,
                           heads=cfg.prior_heads, num_classes=10).to(dev)
        return vq, prior

    vq, prior = build()
    pv, pp = Path(checkpoint_dir) / "vqvae.pt", Path(checkpoint_dir) / "vq_prior.pt"
    bv, why = _try_load(pv, vq)
    bp, why_p = _try_load(pp, prior) if bv is not None else (None, why)
    if bv is not None and bp is not None and all((b.get("extra") or {}).get("preset") == preset.name for b in (bv, bp)):
        return vq.eval(), prior.eval(), (_seconds(bv) or 0) + (_seconds(bp) or 0), "checkpoints vqvae.pt, vq_prior.pt"
    why = why_p or why or "its checkpoints were saved by another preset"
    seed_everything(preset.seed)
    vq, prior = build()
    x, y = mnist_tensors("train", device=dev)
    # lesson 03's runs, step for step and by the same names: variant (c), then its continuation
    h1 = fit(vq, vqvae_loss, TensorBatches(x, batch_size=cfg.batch_size, seed=preset.seed), cfg.steps,
             lr=cfg.lr, amp=preset.amp, desc="(c) EMA + restart", progress=progress, live_plot=False)
    if cfg.extra_steps:
        fit(vq, vqvae_loss, TensorBatches(x, batch_size=cfg.batch_size, seed=preset.seed + 1), cfg.extra_steps,
            lr=cfg.lr, amp=preset.amp, history=h1, desc="(c) continued", progress=progress, live_plot=False,
            cosine_decay=True)
    tokens = tokenize_dataset(vq, x[:cfg.n_tokens])
    seed_everything(preset.seed)
    h2 = fit(prior, prior_loss(p_uncond=0.1), TensorBatches(tokens, y[:len(tokens)], batch_size=cfg.prior_batch_size,
                                                            seed=preset.seed),
             cfg.prior_steps, lr=cfg.prior_lr, amp=preset.amp, cosine_decay=True, warmup_steps=cfg.prior_steps // 20,
             desc="token prior", progress=progress, live_plot=False)
    save_checkpoint(pv, vq, h1, extra={"preset": preset.name})
    save_checkpoint(pp, prior, h2, extra={"preset": preset.name})
    return vq.eval(), prior.eval(), _train_seconds(h1) + _train_seconds(h2), _source(h2, why)


def course_table(preset, ldm_rows: list, checkpoint_dir="checkpoints", seed: int = 0,
                 progress: bool = True) -> list[CourseRow]:
    """The course table: lesson 02's VAE, lesson 03's VQ-VAE + token prior (lesson 03's sampling recipe,
    T < 1, top-k, guidance w; and plain sampling, T = 1, no top-k, w = 1), lesson 04's pixel DDPM with
    strided ancestral DDPM and DDIM sampling at ``table_ddpm_steps`` / ``table_ddim_steps`` steps
    (lesson 05), then ``ldm_rows`` (rows already measured, e.g. this lesson's LDMs). Every model draws
    ``preset.compression.table_n`` images in this call (class-balanced labels where the model is
    conditional; the VAE is unconditional) and gets FID-MNIST, IS-MNIST with bootstrap intervals; NLL
    where the model defines one (VAE: the importance-weighted bound on binarised test images; token
    prior: bits per token of the test images' tokens). Training seconds leave out evaluations."""
    from ..analysis import iw_log_likelihood
    from ..data import binarize, mnist_tensors
    from .pixel_ddpm import pixel_sampler, train_or_load_ddpm
    c, dev = preset.compression, preset.device
    n = c.table_n
    rows = []
    x_test, y_test = mnist_tensors("test", device=dev, limit=n)
    # lesson 02: VAE, z ~ N(0, I) → decoder mean
    vae, secs, src = vae_for_table(preset, checkpoint_dir, progress)
    x_bin = binarize(x_test.cpu(), generator=torch.Generator().manual_seed(1234)).to(dev)
    iw = -iw_log_likelihood(vae, x_bin, k=preset.vae.iw_samples, seed=seed)
    rows.append(table_row("VAE (MLP, z ∈ ℝ³²)", "02", _n_params(vae), secs,
                          lambda k, y, g: vae.decode(torch.randn(k, vae.latent_dim, generator=g).to(dev)), n,
                          labels=None, seed=seed,
                          nll=f"≤ {iw.mean():.1f} nats/image (IW-{preset.vae.iw_samples}, binarised pixels)", source=src,
                          sampler="z ~ N(0, I), one decoder pass, unconditional", train_images=f"{MNIST_TRAIN:,}",
                          short="VAE"))
    # lesson 03: VQ-VAE + autoregressive token prior, lesson 03's recipe and plain sampling
    vq, prior, secs, src = vqvae_for_table(preset, checkpoint_dir, progress)
    v = preset.vq
    with torch.no_grad():
        bits = prior.loss(vq.tokenize(x_test), y_test).item() / math.log(2)
    n_tok = vq.token_shape[0] * vq.token_shape[1]
    for name, (temp, top_k, w) in (("VQ-VAE + token prior (lesson 03's sampling)", (v.prior_temperature, v.prior_top_k,
                                                                                      v.prior_guidance)),
                                   ("VQ-VAE + token prior (plain sampling)", (1.0, None, 1.0))):
        rows.append(table_row(name, "03", _n_params(vq) + _n_params(prior), secs,
                              lambda k, y, g, temp=temp, top_k=top_k, w=w: vq.decode_tokens(
                                  prior.sample(k, y=y.to(dev), temperature=temp, top_k=top_k, guidance=w, generator=g)),
                              n, seed=seed, nll=f"{bits:.2f} bits/token × {n_tok} tokens (prior only)", source=src,
                              sampler=f"{n_tok} tokens, T = {temp:g}, top-k {top_k or 'off'}, w = {w:g}",
                              train_images=f"{MNIST_TRAIN:,} (prior: {v.n_tokens:,})",
                              plain_sampling=temp == 1 and not top_k and w == 1,
                              short=f"VQ prior (T {temp:g}, top-k {top_k or 'off'}, w {w:g})"))
    # lessons 04–05: the pixel DDPM, strided ancestral (DDPM) and DDIM sampling
    run = train_or_load_ddpm(preset, checkpoint_dir, evaluate=False, progress=progress, live_plot=False)
    src = f"checkpoint {run.path.name}" if run.loaded else _source(run.history, "no fitting checkpoint")
    train_s = _train_seconds(run.history) if run.history is not None else run.train_seconds
    d = preset.diffusion
    for method, steps in (("ddpm", c.table_ddpm_steps), ("ddim", c.table_ddim_steps)):
        rows.append(table_row(f"pixel DDPM, {dict(ddpm='ancestral', ddim='DDIM')[method]} {steps} steps", "04–05",
                              _n_params(run.model), train_s,
                              pixel_sampler(run.model, run.schedule, method, steps, clip_x0=d.clip_x0), n, seed=seed,
                              source=src, sampler=sampler_name(method, steps) + ", x̂₀ clipped, w = 1",
                              train_images=f"{MNIST_TRAIN:,}", short=f"pixel DDPM, {method} {steps}"))
    return rows + list(ldm_rows)


def ldm_table_row(name: str, stage: StageRun, run: LDMRun, n: int, seed: int = 0, n_train: int | None = None,
                  short: str = "") -> CourseRow:
    """A course-table row for one of this lesson's LDMs, from the samples ``evaluate_ldm`` drew (the first
    n of them; class-balanced, so the first n are balanced too). Training time = first stage + UNet
    (training only); sampling time scaled from the ``evaluate_ldm`` run."""
    if run.samples is None or len(run.samples) < n:
        raise ValueError(f"the LDM drew {0 if run.samples is None else len(run.samples)} samples, the table needs "
                         f"{n}: run evaluate_ldm with n ≥ table_n (preset: n_fid ≥ table_n)")
    images = run.samples[:n]
    q = run.quality if n == len(run.samples) and run.quality else quality_report(images, seed=seed)
    return CourseRow(name, "06–07", stage.params + _n_params(run.ldm.unet), stage.seconds + run.seconds,
                     run.sample_seconds * n / len(run.samples), n, q, q["is_interval"], "–", "this lesson", images,
                     f"{run.sampler}, x̂₀ clipped, w = 1, + decoder", f"{n_train:,}" if n_train else "", short=short)


def course_table_markdown(rows: list[CourseRow]) -> str:
    """The course table as Markdown (FID/IS with 95 % bootstrap intervals, n samples each)."""
    head = ("| model | lesson | sampler | training images | parameters | training (s) | sampling 1 000 images (s) "
            "| FID-MNIST ↓ | IS-MNIST ↑ | NLL | source |\n|---|---|---|---:|---:|---:|---:|---|---|---|---|\n")
    out = []
    for r in rows:
        tr = f"{r.train_seconds:.0f}" if r.train_seconds is not None else "?"
        out.append(f"| {r.model} | {r.lesson} | {r.sampler} | {r.train_images} | {r.params:,} | {tr} | "
                   f"{r.seconds_per_1000:.3g} | {r.quality['fid']} | {r.is_interval} | {r.nll} | {r.source} |")
    return head + "\n".join(out)


def course_table_caption(rows: list[CourseRow]) -> str:
    """What the table holds equal and what it does not (generated from the rows)."""
    ns = sorted({r.n for r in rows})
    n_txt = f"{ns[0]:,} samples per row" if len(ns) == 1 else f"{', '.join(map(str, ns))} samples per row"
    return (f"{n_txt}, FID-MNIST against the same test images, with the real-vs-real reference at this n: "
            f"{rows[0].quality['real_fid']}. **The table is descriptive, not a controlled comparison**: the rows differ "
            f"in training compute and time, training images ({', '.join(sorted({r.train_images for r in rows if r.train_images}))}) "
            f"and sampler (column), and were trained in different runs under different loads; only the pairs of §4 "
            f"hold everything but one thing equal. Sampling times are wall seconds on this machine scaled to "
            f"1 000 images (the LDM rows timed in §4 on their {max(ns):,} samples, the others in this cell). The NLLs "
            f"are in different units and spaces and not comparable across rows; the DDPM defines a variational bound "
            f"(Ho et al. 2020, eq. 5) that this course does not compute."
            + (" In pretrained mode nothing trained in this run: the training seconds are those of the runs that made "
               "the shipped weights (docs/MODEL_CARD.md), on a machine that ran other jobs too — upper bounds."
               if pretrained.replaying() else ""))


def _row_features(row: CourseRow):
    """The classifier outputs of a row's samples, computed once per row and kept on it."""
    if "_features" not in row.__dict__:
        row.__dict__["_features"] = classifier_outputs(row.samples)
    return row.__dict__["_features"]


def rank_rows(rows: list[CourseRow], seed: int = 0) -> tuple[CourseRow, list[tuple[CourseRow, Interval]]]:
    """The row with the lowest FID, and for every other row ΔFID = FID(row) − FID(best) with a bootstrap
    interval on the shared test reference (``metrics.paired_fid_difference(paired=False)``)."""
    best = min(rows, key=lambda r: r.quality["fid"].value)
    ref = reference_outputs(best.n, "test", seed)
    fb = _row_features(best)
    return best, [(r, paired_fid_difference(fb, _row_features(r), ref, n_boot=100, seed=seed, paired=False))
                  for r in rows if r is not best]


def ranking_text(rows: list[CourseRow], seed: int = 0) -> str:
    """The lowest-FID row and the rows not separated from it (``rank_rows``); when that row's sampler is
    tuned (``plain_sampling`` False: guidance, temperature, top-k), a second sentence names the lowest
    among the rows sampled plainly, since a tuned sampler is not a property of the model alone. There,
    only rows whose FID interval overlaps the plain winner's get a ΔFID bootstrap; a row whose 95 %
    interval lies wholly above is separated already (and costs nothing)."""
    best, deltas = rank_rows(rows, seed=seed)
    tied = [r.model for r, dv in deltas if dv.low <= 0]
    text = (f"Lowest FID-MNIST: **{best.model}** ({best.quality['fid']}, {best.sampler})" +
            (f"; not separated from {', '.join(tied)} (the bootstrap interval of ΔFID on the shared test images "
             "holds 0)." if tied else "; every other row's ΔFID interval lies above 0 (bootstrap on the shared "
                                      "test images)."))
    plain = [r for r in rows if r.plain_sampling]
    if best.plain_sampling or len(plain) < 2:
        return text
    best_p = min(plain, key=lambda r: r.quality["fid"].value)
    near = [r for r in plain if r is not best_p and r.quality["fid"].low <= best_p.quality["fid"].high]
    ref = reference_outputs(best_p.n, "test", seed)
    tied_p = [r.model for r in near if paired_fid_difference(_row_features(best_p), _row_features(r), ref, n_boot=100,
                                                             seed=seed, paired=False).low <= 0]
    text += (f" It is the one row with a tuned sampler; among the rows sampled without guidance, temperature or "
             f"top-k (w = 1, T = 1) the lowest is **{best_p.model}** ({best_p.quality['fid']}, {best_p.sampler})" +
             (f"; not separated from {', '.join(tied_p)} (ΔFID bootstrap holds 0)." if tied_p else
              "; every other such row is separated from it (ΔFID bootstrap above 0, or its 95 % FID interval "
              "wholly above)."))
    return text


def sampling_speed_text(rows: list[CourseRow], margin: float = 0.2) -> str:
    """Which iterative sampler is fastest — named only when it is more than ``margin`` faster than the
    runner-up (each time is one timing); otherwise how the LDM rows compare with the pixel DDPM row that
    uses the same sampler and steps (the comparison the table supports)."""
    iterative = sorted((r for r in rows if "one decoder pass" not in r.sampler), key=lambda r: r.seconds_per_1000)
    if len(iterative) < 2:
        return ""
    first, second = iterative[:2]
    if first.seconds_per_1000 < (1 - margin) * second.seconds_per_1000:
        return (f"Fastest of the iterative samplers: **{first.model}** ({first.seconds_per_1000:.3g} s per 1 000 "
                f"images, more than {margin:.0%} ahead of the next; the VAE's single decoder pass is faster still).")
    text = (f"No iterative sampler is more than {margin:.0%} faster than the next ({first.model}: "
            f"{first.seconds_per_1000:.3g} s, {second.model}: {second.seconds_per_1000:.3g} s per 1 000 images, "
            "one timing each), so none is named fastest.")
    core = lambda r: r.sampler.split(", x̂₀ clipped")[0]                       # "ancestral DDPM …, 20 steps"
    ldm = [r for r in rows if r.lesson == "06–07"]
    pixel = [r for r in rows if r.model.startswith("pixel DDPM") and ldm and core(r) == core(ldm[0])]
    if ldm and pixel:
        lo, hi = min(r.seconds_per_1000 for r in ldm), max(r.seconds_per_1000 for r in ldm)
        px = pixel[0].seconds_per_1000
        against = f"the pixel DDPM with the same sampler ({core(pixel[0])}: {px:.3g} s)"
        text += (f" What the table does support: the LDMs ({lo:.2g}–{hi:.2g} s per 1 000 images, with their decoder) "
                 + (f"sample {px / hi:.2g}–{px / lo:.2g}× faster than {against} — a UNet step on a small latent is "
                    "cheap." if px > (1 + margin) * hi else
                    f"are not clearly faster than {against} at this size."))
    return text


__all__ += ["CourseRow", "is_interval", "table_row", "vae_for_table", "vqvae_for_table", "course_table",
            "ldm_table_row", "course_table_markdown", "course_table_caption", "rank_rows", "ranking_text",
            "sampling_speed_text", "MNIST_TRAIN"]
