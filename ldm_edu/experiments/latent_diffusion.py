"""Lesson 06's recipes: training a first stage, and the compression-factor study (seed paper fig. 13
in miniature) at equal training compute."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..data import TensorBatches, balanced_labels
from ..diffusion import NoiseSchedule, diffusion_batches_loss
from ..metrics import fid_mnist
from ..train import EMA, fit
from ..unet import UNet
from ..latent import (PADDED_SIZE, FirstStage, LatentDiffusion, check_factor, encode_dataset, first_stage_loss,
                      latent_scale_factor, reconstruction_psnr)


def train_first_stage(x: torch.Tensor, f: int = 4, latent_ch: int = 4, ch: int = 16, reg: str = "kl",
                      steps: int = 1000, batch_size: int = 64, lr: float = 2e-3, kl_weight: float = 1e-6,
                      codebook_size: int = 128, seed: int = 0, desc: str | None = None, progress: bool = True):
    """Build a FirstStage on x's device and fit it on images ``x`` in [−1, 1]; returns (ae, History)."""
    torch.manual_seed(seed)
    ae = FirstStage(f=f, latent_ch=latent_ch, ch=ch, reg=reg, kl_weight=kl_weight,
                    codebook_size=codebook_size).to(x.device)
    hist = fit(ae, first_stage_loss, TensorBatches(x, batch_size=batch_size, seed=seed), steps, lr=lr,
               cosine_decay=True, desc=desc or f"{reg.upper()}-f{f} autoencoder", progress=progress,
               live_plot=False)
    return ae.eval(), hist


@torch.no_grad()
def sample_in_batches(sample_fn, n: int, batch_size: int = 500, seed: int = 0) -> torch.Tensor:
    """Call ``sample_fn(k, y, generator)`` → images in [0, 1] for n balanced labels, batch by batch."""
    g = torch.Generator().manual_seed(seed)
    y = balanced_labels(n)
    return torch.cat([sample_fn(len(y[i:i + batch_size]), y[i:i + batch_size], g).cpu()
                      for i in range(0, n, batch_size)])


def time_per_step(step_fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``step_fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step_fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step_fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@dataclass
class StudyResult:
    """One compression factor of the f-study: first-stage PSNR and LDM FID at several step counts."""

    f: int
    latent_shape: tuple
    psnr: float
    flops_per_step: float = 0.0                     # one training step of the latent UNet (fwd + bwd)
    steps: list = field(default_factory=list)
    fid: list = field(default_factory=list)
    seconds: list = field(default_factory=list)     # cumulative stage-2 training seconds at each step count

    @property
    def gflops(self) -> list:
        """Cumulative stage-2 training compute (GFLOP) at each evaluation."""
        return [n * self.flops_per_step / 1e9 for n in self.steps]


def training_flops(unet: nn.Module, latent_shape: tuple, batch_size: int) -> float:
    """FLOPs of one training step (forward + backward of the ε-loss) at ``batch_size``, counted
    with torch.utils.flop_counter on a batch of two."""
    from torch.utils.flop_counter import FlopCounterMode
    p = next(unet.parameters())
    x = torch.randn(2, *latent_shape, device=p.device)
    t, y = torch.tensor([10, 500], device=p.device), torch.tensor([1, 2], device=p.device)
    with FlopCounterMode(display=False) as fc:
        (unet(x, t, y) - x).pow(2).mean().backward()
    unet.zero_grad(set_to_none=True)
    return fc.get_total_flops() / 2 * batch_size


def study_step_counts(flops_per_step: list, steps: int, budget: str = "flops", max_steps: int | None = None) -> list:
    """Training steps per f. ``budget="steps"``: every f gets ``steps``. ``budget="flops"``: the
    costliest UNet gets ``steps`` and every other one the steps that cost the same compute
    (capped at ``max_steps``)."""
    if budget == "steps":
        return [steps] * len(flops_per_step)
    if budget != "flops":
        raise ValueError(f"budget must be 'steps' (equal training steps) or 'flops' (equal compute), got {budget!r}")
    top = max(flops_per_step)
    counts = [int(round(steps * top / fl)) for fl in flops_per_step]
    return [min(n, max_steps) if max_steps else n for n in counts]


def compression_study(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, reference: torch.Tensor,
                      fs=(1, 2, 4, 8), latent_chs=(1, 2, 4, 4), ae_ch: int = 16, ae_steps: int = 400,
                      unet_ch: int = 16, steps: int = 800, evals: int = 4, batch_size: int = 64,
                      lr: float = 2e-3, n_fid: int = 300, sample_steps: int = 20, T: int = 1000,
                      budget: str = "flops", max_steps: int | None = None, guidance: float = 1.0,
                      seed: int = 0, progress: bool = True) -> list[StudyResult]:
    """The small analogue of the seed paper's fig. 13: for each f, a KL first stage (PSNR on
    ``x_test``) and a class-conditional latent UNet of the same width, FID-MNIST (against
    ``reference``, images in [0, 1]) at ``evals`` evenly spaced points of its training.

    ``budget="flops"`` (default): f = min(fs) (the costliest, most pixels) trains ``steps`` steps and
    every other f as many steps as cost the same FLOPs (at most ``max_steps``), the comparison at
    equal compute; ``budget="steps"``: ``steps`` for all. Images in [−1, 1]."""
    if len(fs) != len(latent_chs):
        raise ValueError(f"fs {fs} and latent_chs {latent_chs} must have the same length")
    for f in fs:
        check_factor(f)
    schedule = NoiseSchedule(T=T, device=x.device)

    def make_unet(f, c):
        torch.manual_seed(seed)
        return UNet(in_ch=c, ch=unet_ch, ch_mult=(1, 2), num_classes=10, image_size=PADDED_SIZE // f).to(x.device)

    flops = [training_flops(make_unet(f, c), (c, PADDED_SIZE // f, PADDED_SIZE // f), batch_size)
             for f, c in zip(fs, latent_chs)]
    counts = study_step_counts(flops, steps, budget, max_steps)
    results = []
    for f, c, fl, n_steps in zip(fs, latent_chs, flops, counts):
        ae, _ = train_first_stage(x, f=f, latent_ch=c, ch=ae_ch, steps=ae_steps, batch_size=batch_size,
                                  lr=lr, seed=seed, progress=progress)
        res = StudyResult(f=f, latent_shape=ae.latent_shape, psnr=reconstruction_psnr(ae, x_test), flops_per_step=fl)
        z = encode_dataset(ae, x)
        s = latent_scale_factor(z)
        unet = make_unet(f, c)
        ema = EMA(unet, 0.995)
        opt = torch.optim.AdamW(unet.parameters(), lr=lr)
        batches = TensorBatches(z * s, y, batch_size=batch_size, seed=seed)
        ldm = LatentDiffusion(ae, ema.model, schedule, s)
        hist, done = None, 0
        for k in range(1, evals + 1):
            chunk = round(n_steps * k / evals) - done
            hist = fit(unet, diffusion_batches_loss(schedule, 0.1), batches, chunk, optimizer=opt, ema=ema,
                       history=hist, desc=f"LDM-{f} ({c}×{ae.latent_shape[1]}²)", progress=progress,
                       live_plot=False)
            done += chunk
            imgs = sample_in_batches(lambda n, yy, g: ldm.sample(n, y=yy.to(x.device), steps=sample_steps,
                                                                 guidance=guidance, generator=g), n_fid, seed=seed)
            res.steps.append(done)
            res.fid.append(fid_mnist(imgs, reference[:n_fid]))
            res.seconds.append(hist.seconds)
        results.append(res)
    return results
