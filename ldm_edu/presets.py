"""Every size knob of every lesson, in one place, for three machines.

- ``tiny``: CI and smoke tests. Every code path, plot and widget runs; each lesson ≤ 60 s on 2 CPU
  cores (lesson 06 ≤ 90 s). Results may look poor.
- ``cpu``: the default without a GPU. Each lesson ≤ 10 min on a 2-core laptop (lesson 06 ≤ 15).
- ``gpu``: the default with CUDA. Each lesson ≤ 3 min on one H100 (lesson 06 ≤ 5).
- ``pretrained``: ``cpu``'s models trained longer, once, by ``python -m ldm_edu.pretrain``; with
  ``LDM_EDU_PRETRAINED=1`` every fit() loads those shipped weights instead of training.

``get_preset()`` picks one: an explicit name, else "pretrained" when ``$LDM_EDU_PRETRAINED`` is 1,
else ``$LDM_EDU_PRESET``, else "gpu" if CUDA is available, else "cpu" (``$LDM_EDU_DEVICE`` moves it).
Each lesson section is a frozen dataclass; read them as
``preset.ae.steps``, ``preset.vae.latent_dim``, ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

from . import pretrained

NAMES = ("tiny", "cpu", "gpu", "pretrained")


# ----------------------------------------------------------------------------- lesson 01
@dataclass(frozen=True)
class AEConfig:
    latent_dim: int = 2            # 2-D so the latent space can be drawn
    hidden: int = 512
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    sweep_dims: tuple = (2, 4, 8, 16, 32)   # AE vs PCA, reconstruction error vs latent size
    sweep_steps: int = 1500
    n_eval: int = 10000            # test images used for scatter plots and errors


# ----------------------------------------------------------------------------- lesson 02
@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 32
    hidden: int = 512
    steps: int = 20000
    batch_size: int = 128
    lr: float = 1e-3
    latent_dim_2d: int = 2         # a second, 2-D VAE for the manifold plot and the β study
    steps_2d: int = 3000
    # β values precomputed for the β slider, chosen to span "both latent dims active" → "one collapsed" →
    # "both collapsed" on the cpu preset (2-D, beta_steps each); lesson 02 reads where that happens from its own run
    betas: tuple = (0.1, 0.5, 1.0, 4.0, 24.0, 64.0)
    beta_steps: int = 1500
    iw_samples: int = 100          # importance samples for log p(x) (Burda et al. 2016)
    n_eval: int = 10000            # test images for the negative ELBO
    n_eval_iw: int = 1000          # test images for the (costlier) importance-weighted bound


# ----------------------------------------------------------------------------- lesson 03
@dataclass(frozen=True)
class VQConfig:
    """VQ-VAE (lesson 03): codebook size K, code size D, the conv autoencoder (28 → 7×7 tokens),
    the four codebook variants compared, and the autoregressive token prior."""
    num_codes: int = 512           # K
    code_dim: int = 16             # D
    ch: int = 32
    ch_mult: tuple = (1, 2, 2)     # f = 4: a 7×7 token map
    num_res: int = 1
    beta: float = 0.25             # commitment weight (eq. 25)
    decay: float = 0.99            # EMA codebook decay γ
    eps: float = 1e-5              # Laplace smoothing of EMA counts
    dead_threshold: float = 1.0    # restart codes used < this many times per batch (running mean)
    steps: int = 1000              # per variant: codebook loss / EMA / EMA + restart / EMA + k-means init
    extra_steps: int = 1000        # the EMA + restart model trains on for the rest of the lesson
    kmeans_images: int = 1000      # training images whose encoder outputs (× 49 vectors) k-means clusters
    batch_size: int = 64
    lr: float = 2e-3
    n_eval: int = 5000             # test images for PSNR and codebook usage
    # stage 2: the autoregressive prior over the code indices
    n_tokens: int = 30000          # training images tokenised for the prior
    prior_dim: int = 128           # transformer width, layers, attention heads
    prior_depth: int = 4
    prior_heads: int = 4
    prior_steps: int = 2000
    prior_batch_size: int = 128
    prior_lr: float = 1e-3
    # sampling the prior: keep the top_k likeliest tokens and sharpen with the temperature (as VQGAN does),
    # and classifier-free guidance w on the class label (Ho & Salimans 2022, as LlamaGen does)
    prior_temperature: float = 0.8
    prior_top_k: int = 20
    prior_guidance: float = 2.0


# ----------------------------------------------------------------------------- lessons 04-05
@dataclass(frozen=True)
class DiffusionConfig:
    """Lessons 04-05: a class-conditional pixel DDPM on MNIST in [-1, 1], reused by lesson 05.

    Cost model (bench/bench_unet.py): a training step costs ≈ batch × GFLOP/image (fwd+bwd); a
    sampling step ≈ n × GFLOP/image / 3. ``patch=2`` folds 2×2 pixels into channels (lossless)."""
    T: int = 1000
    schedule: str = "cosine"
    ch: int = 32
    ch_mult: tuple = (1, 2)
    num_res: int = 1
    attn: bool = True
    patch: int = 2
    num_classes: int = 10          # class-conditional; the null label enables guidance
    p_uncond: float = 0.1          # label dropout for classifier-free guidance
    batch_size: int = 48           # cpu: ≈ 0.12 s per step alone on 2 cores (lesson 06 §5 times it);
    steps: int = 2000              # 2 000 steps at batch 64 made lesson 04 take 469 s alone (over 70 % of 10 min)
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    clip_x0: float = 1.0           # clip x̂_0 to [−1, 1] while sampling (lesson 04 measures the choice)
    # lesson 04: every figure from ancestral DDPM (strided when final_steps < T); DDIM is lesson 05's
    eval_every: int = 250          # FID-MNIST during training, every this many steps, …
    eval_method: str = "ddpm"      # … with this sampler (lesson 06 evaluates its latent DDPM the same way)
    eval_steps: int = 20
    n_eval: int = 200
    n_fid: int = 1000              # samples per row of lesson 04's final table (and the real-vs-real n)
    final_steps: int = 20          # ancestral steps of those rows and the guidance grid (T = the full chain)
    n_traj: int = 8                # images in the trajectory strip/slider (full chain, Algorithm 2 by hand)
    traj_frames: int = 21
    guidance_values: tuple = (0.0, 1.0, 2.0, 4.0)
    n_guidance: int = 200          # samples per guidance value (classifier agreement, FID)
    # lesson 05
    steps_list: tuple = (5, 10, 20, 50)        # the steps table: DDPM (η = 1) and DDIM (η = 0) at each
    n_fid_steps: int = 1000        # samples per entry of the steps table
    widget_steps: tuple = (5, 10, 20, 50, 100, 1000)
    widget_etas: tuple = (0.0, 0.5, 1.0)
    n_widget: int = 8
    invert_steps: int = 50


# ----------------------------------------------------------------------------- lesson 06
@dataclass(frozen=True)
class LDMConfig:
    """Lesson 06: the first stage, the latent DDPM, the pixel-vs-latent comparison, the f-study.

    The latent UNet and its training recipe ARE lesson 04's (``preset.diffusion``: widths, cosine
    schedule, AdamW with warm-up and cosine decay, batch, label dropout, EMA; only ``patch`` is 1),
    and the pixel baseline is lesson 04's checkpoint with its history. FID along training uses
    lesson 04's evaluation (``diffusion.eval_method``, ``eval_steps``, ``n_eval`` samples) on both sides."""
    n_train: int = 60000           # training images used (tiny: fewer, so encoding them is quick)
    # first stage: 28×28 padded to 32×32 → latent_ch × 32/f × 32/f
    f: int = 4
    latent_ch: int = 4
    ae_ch: int = 16                # first-stage base width
    # its training (lesson 06's loss: ‖x − x̂‖² + kl_weight·KL, or the VQ terms)
    ae_steps: int = 1500
    ae_batch_size: int = 128
    ae_lr: float = 2e-3
    kl_weight: float = 1e-6
    codebook_size: int = 128
    # second stage: lesson 04's UNet and recipe on the scaled latents
    steps: int = 4000              # training steps of the latent DDPM
    eval_every: int = 500          # FID along training, every this many steps
    unscaled_steps: int = 2000     # the unscaled ablation's steps (a multiple of eval_every ≤ steps): it is read
                                   # against the scaled run's evaluation at the same step
    unscaled_std: float = 5.5      # §2: an equally good first stage whose latent has this std (Stable
                                   # Diffusion's KL-f8: 1 / 0.18215 ≈ 5.5), diffused without the scale
    # the final comparison: each (method, steps) sampler on both models, n_fid samples each
    samplers: tuple = (("ddim", 20), ("ddpm", 20))
    n_fid: int = 1000
    guidance: float = 2.0
    guidance_values: tuple = (0.0, 1.0, 2.0, 4.0)
    # compression-factor study (small analogue of the seed paper's fig. 13), equal stage-2 compute
    # every f's first stage is trained with §1's recipe (ae_ch, ae_steps, ae_batch_size); f = 4 IS §1's
    study_fs: tuple = (1, 2, 4, 8)
    study_latent_ch: tuple = (1, 2, 4, 4)
    study_unet_ch: int = 16
    study_gflop: float = 4000.0    # stage-2 training compute of every f (GFLOP, counted per step)
    study_seeds: tuple = (0, 1)    # stage-2 seeds (the first stage is trained once per f)
    study_batch_size: int = 64     # stage-2 batch at f = 4; f gets 64·(f/4)² (same latent positions per batch)
    study_lr: float = 2e-3
    study_evals: int = 3
    study_n_fid: int = 300
    study_sample_steps: int = 20
    study_n_train: int = 20000


# ----------------------------------------------------------------------------- lesson 07
@dataclass(frozen=True)
class CompressionConfig:
    """Lesson 07: the seed paper's compression methods as pairs that differ in one thing, each first
    stage followed by the same downstream latent DDPM (lesson 04's recipe at width ``unet_ch``).

    VQGAN recipe: lesson 06's KL-f first stage, ``warmup_steps`` shared, then ``gan_steps`` with its own
    loss vs L1 + perceptual + PatchGAN (the discriminator trains from the branch's first step, its
    gradient reaches the decoder after ``disc_start``). MoVQ: VQ-f first stage, GroupNorm vs spatial
    norm, ``movq_steps`` each. DC-AE: plain vs residual autoencoder at each f in ``dc_fs``, ``dc_steps``
    each. Stage 2: each LDM gets ``ldm_gflop`` of training compute, at most ``ldm_max_steps`` steps (where the
    cap binds — on cpu for every latent — the LDMs get equal steps, not equal compute), and is sampled with
    ``sample_method`` at ``sample_steps``.
    f = 8 for the first two: at f = 4 MNIST reconstructions are already near-perfect for the classifier."""
    n_train: int = 10000           # training images (first stages and the LDMs' latents)
    n_eval: int = 1000             # test images for PSNR and rFID-MNIST
    batch_size: int = 32           # first-stage batch and learning rate
    lr: float = 2e-3
    ch: int = 16                   # first-stage base width (every first stage)
    # VQGAN / LDM recipe on lesson 06's KL first stage
    f: int = 8
    latent_ch: int = 4
    kl_weight: float = 1e-6
    warmup_steps: int = 300
    gan_steps: int = 150
    disc_start: int = 50           # steps of the recipe's branch before λ·L_GAN reaches the decoder
    perceptual_weight: float = 1.0
    disc_weight: float = 0.5       # w_d, factor on the adaptive λ (LDM's KL configs use 0.5)
    disc_ch: int = 32
    disc_layers: int = 1           # PatchGAN depth: 16 × 16-px patches on 28 × 28 (2 layers: 34 px, the whole digit)
    # MoVQ
    movq_f: int = 8
    movq_latent_ch: int = 4
    codebook_size: int = 128
    movq_steps: int = 300
    # DC-AE at high compression: 32×32 → 2×2 and 1×1
    dc_fs: tuple = (16, 32)
    dc_latent_ch: tuple = (16, 64)
    dc_max_ch: int = 64
    dc_steps: int = 300
    # downstream LDMs
    unet_ch: int = 16
    unet_ch_mult: tuple = (1, 2)
    ldm_gflop: float = 380.0       # ≈ 1 350 steps of the 4×4×4 latent's UNet at batch 48 (282 GFLOP per 1 000 steps),
    ldm_max_steps: int = 850       # so on cpu this cap binds for EVERY latent: equal steps, not equal compute (the
                                   # lesson's budget sentence says so from the runs)
    sample_method: str = "ddpm"    # strided ancestral, x̂₀ clipped: the course's best 20-step sampler (lessons 04–06)
    sample_steps: int = 20
    n_fid: int = 1000
    n_show: int = 10               # images per row in the figures and the widget
    # the course table
    table_n: int = 1000            # samples per model for FID/IS (and test images for NLLs); the
                                   # sampling time of these n is scaled to 1 000 images
    table_ddpm_steps: int = 20     # strided ancestral DDPM steps of the pixel model's DDPM row (= sample_steps)
    table_ddim_steps: int = 20


@dataclass(frozen=True)
class Preset:
    name: str
    device: str
    minutes: float                  # expected wall time of one lesson on the target machine
    ae: AEConfig = field(default_factory=AEConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    vq: VQConfig = field(default_factory=VQConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    amp: bool = False               # bf16 autocast in fit() (CUDA only)
    compile: bool = False           # torch.compile in fit() (CUDA only)
    seed: int = 0

    def describe(self) -> str:
        if self.name == "pretrained":
            if pretrained.replaying():    # which of its two uses: replaying shipped runs, or recording them
                return (f"preset 'pretrained' on {self.device}: pretrained mode — every training cell loads the "
                        "shipped weights and history of a longer run (docs/MODEL_CARD.md) instead of training; "
                        "everything after it runs live")
            return f"preset 'pretrained' on {self.device}: training the shipped weights (python -m ldm_edu.pretrain)"
        return (f"preset '{self.name}' on {self.device}: time budget ≤ {self.minutes:g} min per lesson "
                f"on its target machine (docs/BENCHMARKS.md lists the measured times)")


def _tiny() -> Preset:
    return Preset(
        name="tiny", device="cpu", minutes=1,
        compression=CompressionConfig(n_train=1000, n_eval=100, batch_size=16, ch=8, warmup_steps=8, gan_steps=6, disc_start=2, disc_ch=8, codebook_size=32, movq_steps=8, dc_fs=(16, 32), dc_latent_ch=(16, 32), dc_max_ch=32, dc_steps=8, unet_ch=8, ldm_gflop=1.0, ldm_max_steps=12, sample_steps=4, n_fid=50, n_show=6, table_n=50, table_ddpm_steps=4, table_ddim_steps=4),
        ae=AEConfig(hidden=128, steps=150, sweep_dims=(2, 8, 32), sweep_steps=60, n_eval=2000),
        vae=VAEConfig(hidden=128, steps=200, steps_2d=150, betas=(0.5, 1.0, 4.0), beta_steps=60,
                      iw_samples=16, n_eval=2000, n_eval_iw=200),
        vq=VQConfig(num_codes=64, code_dim=8, ch=8, steps=40, extra_steps=0, batch_size=32, n_eval=1000, kmeans_images=100,
                    n_tokens=2000, prior_dim=32, prior_depth=1, prior_heads=2, prior_steps=40, prior_batch_size=64),
        diffusion=DiffusionConfig(T=100, ch=8, ch_mult=(1, 2), steps=40, batch_size=16, eval_every=20,
                                  eval_steps=5, n_eval=32, n_fid=64, final_steps=10, n_traj=4,
                                  traj_frames=6, guidance_values=(0.0, 1.0, 3.0), n_guidance=20,
                                  steps_list=(5, 10), n_fid_steps=32,
                                  widget_steps=(5, 100), widget_etas=(0.0, 1.0), n_widget=4,
                                  invert_steps=10, warmup_steps=5),
        ldm=LDMConfig(n_train=4000, ae_ch=8, ae_steps=60, ae_batch_size=32, steps=40, eval_every=20, unscaled_steps=20,
                      samplers=(("ddim", 5), ("ddpm", 5)), n_fid=100, guidance_values=(0.0, 1.0, 3.0),
                      study_fs=(4, 8), study_latent_ch=(4, 4), study_unet_ch=8,
                      study_gflop=2.0, study_batch_size=32, study_evals=2, study_n_fid=50, study_sample_steps=4,
                      study_n_train=1000),
    )


def _cpu() -> Preset:
    return Preset(
        name="cpu", device="cpu", minutes=10,
        compression=CompressionConfig(),
        ae=AEConfig(hidden=512, steps=3000, sweep_steps=1500),
        vae=VAEConfig(hidden=512, steps=10000, steps_2d=3000, beta_steps=1200),
        vq=VQConfig(ch=16, steps=350, extra_steps=450, n_tokens=30000, n_eval=2000, prior_dim=64, prior_depth=2, prior_steps=1600,
                    prior_lr=2e-3),
        diffusion=DiffusionConfig(),
        ldm=LDMConfig(ae_ch=16, ae_steps=300, ae_batch_size=64, steps=2000, eval_every=250, unscaled_steps=1000,
                      samplers=(("ddim", 20), ("ddpm", 10), ("ddpm", 20)), n_fid=1000, study_fs=(4, 8), study_latent_ch=(4, 4),
                      study_unet_ch=16, study_gflop=1500.0, study_evals=2,
                      study_n_fid=200, study_sample_steps=20),
    )


def _gpu() -> Preset:
    return Preset(
        name="gpu", device="cuda", minutes=3, amp=True,
        compression=CompressionConfig(n_train=60000, n_eval=2000, batch_size=128, ch=32, warmup_steps=2000, gan_steps=1000, disc_start=300, disc_ch=64, codebook_size=256, movq_steps=3000, dc_steps=3000, dc_max_ch=128, unet_ch=32, ldm_gflop=20000.0, ldm_max_steps=6000, sample_steps=50, n_fid=2000, table_n=2000, table_ddpm_steps=50, table_ddim_steps=50),
        ae=AEConfig(hidden=1024, steps=6000, batch_size=256, sweep_steps=3000),
        vae=VAEConfig(hidden=1024, steps=40000, batch_size=256, lr=1e-3, steps_2d=6000,
                      beta_steps=3000, iw_samples=1000, n_eval_iw=10000),
        vq=VQConfig(num_codes=512, code_dim=32, ch=64, steps=2250, extra_steps=3750, batch_size=256, lr=2e-3,
                    n_eval=10000, n_tokens=60000, prior_dim=256, prior_depth=6, prior_heads=8, prior_steps=6000,
                    prior_batch_size=256, prior_lr=6e-4),
        diffusion=DiffusionConfig(ch=64, ch_mult=(1, 2, 2), num_res=2, patch=1, batch_size=256,
                                  steps=6000, lr=1e-3, warmup_steps=200, ema_decay=0.999,
                                  eval_every=2000, eval_steps=50, n_eval=1000, n_fid=2000,
                                  final_steps=100, n_traj=16, traj_frames=41, n_guidance=500,
                                  steps_list=(10, 20, 50, 100, 250, 1000),
                                  n_fid_steps=2000, widget_steps=(5, 10, 20, 50, 100, 250, 1000),
                                  n_widget=16),
        ldm=LDMConfig(ae_ch=32, ae_steps=2000, ae_batch_size=128, steps=6000, eval_every=500, unscaled_steps=3000,
                      samplers=(("ddim", 50), ("ddpm", 50), ("ddpm", 250)), n_fid=2000,
                      study_unet_ch=32, study_gflop=100000.0,
                      study_batch_size=256, study_lr=1e-3, study_evals=4, study_n_fid=1000,
                      study_sample_steps=25, study_n_train=60000),
    )


def _pretrained() -> Preset:
    """The shipped weights' preset: the ``cpu`` preset's models and evaluations, trained longer.

    ``python -m ldm_edu.pretrain`` runs every lesson in it once, recording each fit();
    ``LDM_EDU_PRETRAINED=1`` (or this preset by name) replays those runs instead of training, so a
    lesson shows these longer runs' histories and quality in the time its evaluations take."""
    cpu = _cpu()
    # training: longer than cpu (FID-MNIST along training, n_eval samples, is recorded with each run);
    # the lessons' own sampling after training: half cpu's n or less (wider intervals), and lesson 05's widget
    # without η = 0.5 (the steps table keeps it), so a replayed lesson runs in 2 minutes with inline figures
    return replace(
        cpu, name="pretrained", minutes=2,
        ae=replace(cpu.ae, steps=6000, sweep_steps=3000),
        vae=replace(cpu.vae, steps=20000, steps_2d=6000, beta_steps=2400),
        vq=replace(cpu.vq, steps=700, extra_steps=1300, prior_steps=4000),
        diffusion=replace(cpu.diffusion, steps=5000, batch_size=64, eval_every=500,
                          n_fid=500, n_fid_steps=300, n_guidance=100, widget_etas=(0.0, 1.0)),
        ldm=replace(cpu.ldm, ae_steps=1000, steps=5000, eval_every=500, unscaled_steps=2500, study_gflop=4000.0,
                    n_fid=400),
        compression=replace(cpu.compression, warmup_steps=800, gan_steps=400, disc_start=100, movq_steps=800,
                            dc_steps=800, ldm_gflop=1000.0, ldm_max_steps=2000, n_fid=500, table_n=500),
    )


_BUILDERS = {"tiny": _tiny, "cpu": _cpu, "gpu": _gpu, "pretrained": _pretrained}


def get_preset(name: str | None = None, device: str | None = None) -> Preset:
    """The preset called ``name``; ``None`` → ``$LDM_EDU_PRESET``, else "gpu" with CUDA, else "cpu".

    ``device`` overrides where it runs (tests build the ``gpu`` preset on the CPU this way)."""
    if name is None:
        name = os.environ.get("LDM_EDU_PRESET") or ("gpu" if torch.cuda.is_available() else "cpu")
        if pretrained.requested():
            name = "pretrained"            # the shipped weights were trained in it (ldm_edu.pretrained)
    device = device or os.environ.get("LDM_EDU_DEVICE") or None
    key = str(name).strip().lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(NAMES)} "
                         "(or set LDM_EDU_PRESET to one of them)")
    preset = _BUILDERS[key]()
    if device is not None:
        return replace(preset, device=str(device))
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("preset 'gpu' needs CUDA, and torch sees no GPU here: use 'cpu' "
                         "(the default without a GPU) or 'tiny'")
    return preset


__all__ = ["Preset", "AEConfig", "VAEConfig", "VQConfig", "DiffusionConfig", "LDMConfig", "CompressionConfig",
           "get_preset", "NAMES", "replace"]
