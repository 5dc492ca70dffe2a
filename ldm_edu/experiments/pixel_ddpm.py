"""The pixel-space DDPM of lessons 04-05, as one code path: build, train (or load), sample, evaluate.

Lesson 04 trains it and saves ``lessons/checkpoints/ddpm_<preset>.pt``; lesson 05 calls the same
``train_or_load_ddpm(preset)`` and gets the saved model back (or trains it, if lesson 04 was not
run). Images live in [-1, 1] for the network (``to_signed``) and in [0, 1] for the metrics.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import TensorBatches, balanced_labels, from_signed, mnist_tensors
from ..diffusion import NoiseSchedule, diffusion_batches_loss, sample
from ..metrics import class_histogram, fid_mnist, inception_score_mnist, real_data_fid, reference_images
from ..train import EMA, CheckpointMismatch, History, fit, load_checkpoint, load_history, save_checkpoint, seed_everything
from ..unet import UNet


def build_unet(cfg, device="cpu") -> UNet:
    """The UNet a DiffusionConfig describes (1×28×28 pixels, class-conditional if num_classes)."""
    return UNet(in_ch=1, ch=cfg.ch, ch_mult=tuple(cfg.ch_mult), num_res=cfg.num_res, attn=cfg.attn,
                num_classes=cfg.num_classes, image_size=28, patch=cfg.patch).to(device)


def make_schedule(cfg, device="cpu") -> NoiseSchedule:
    return NoiseSchedule(cfg.T, cfg.schedule, device=device)


def _autocast(device, amp: bool):
    dev = torch.device(device)
    if amp and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def sample_digits(model, schedule: NoiseSchedule, n: int, labels=None, method: str = "ddim",
                  steps: int | None = 50, eta: float = 0.0, guidance: float = 1.0, seed: int = 0,
                  clip_x0: float | None = 1.0, batch_size: int = 1000, progress: bool = False,
                  amp: bool = False, return_seconds: bool = False):
    """n digit images in [0, 1] (N, 1, 28, 28). labels: None → balanced 0-9 for a conditional
    model (unconditional otherwise), or a (n,) tensor. Deterministic for a given seed."""
    device = next(model.parameters()).device
    if labels is None and getattr(model, "num_classes", None):
        labels = balanced_labels(n, model.num_classes)
    g = torch.Generator().manual_seed(seed)
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with _autocast(device, amp):
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            y = None if labels is None else labels[i:i + b]
            x = sample(model, schedule, (b, 1, 28, 28), method=method, steps=steps, eta=eta, y=y,
                       guidance=guidance, generator=g, progress=progress, clip_x0=clip_x0)
            out.append(from_signed(x.float()).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    images = torch.cat(out)
    return (images, seconds) if return_seconds else images


def sample_quality(images01: torch.Tensor, n_ref: int | None = None, seed: int = 0) -> dict:
    """FID-MNIST against n test images, IS-MNIST, the real-data floor at the same n, the class
    histogram and its min/max share — everything the lessons print about a set of samples."""
    n = n_ref or len(images01)
    ref = reference_images(n, "test", seed)
    hist = class_histogram(images01)
    return {"fid": fid_mnist(images01, ref), "is": inception_score_mnist(images01),
            "fid_floor": real_data_fid(n, seed), "hist": hist,
            "class_min": float(hist.min()), "class_max": float(hist.max()), "n": len(images01)}


def fid_eval_fn(ema: EMA, schedule: NoiseSchedule, cfg, amp: bool = False):
    """An eval_fn for fit(): FID-MNIST and IS-MNIST of DDIM samples from the EMA weights."""
    def eval_fn(_model):
        x = sample_digits(ema.model, schedule, cfg.n_eval, steps=cfg.eval_steps, seed=123,
                          clip_x0=cfg.clip_x0, amp=amp)
        q = sample_quality(x)
        return {"fid": q["fid"], "is": q["is"]}
    return eval_fn


@dataclass
class DDPMRun:
    """What train_or_load_ddpm returns: the EMA model (for sampling), its schedule, the history."""
    model: UNet
    schedule: NoiseSchedule
    history: History | None
    cfg: object
    path: Path
    loaded: bool
    train_seconds: float


def checkpoint_path(preset, checkpoint_dir: str | Path = "checkpoints") -> Path:
    return Path(checkpoint_dir) / f"ddpm_{preset.name}.pt"


def train_or_load_ddpm(preset, checkpoint_dir: str | Path = "checkpoints", retrain: bool = False,
                       evaluate: bool = True, progress: bool = True, live_plot: bool | None = None) -> DDPMRun:
    """Load ``<checkpoint_dir>/ddpm_<preset>.pt`` if it exists and fits ``preset.diffusion``;
    otherwise train the class-conditional pixel DDPM (fit + EMA, FID-MNIST every ``eval_every``
    steps when ``evaluate``) and save the EMA weights there. Lessons 04 and 05 both call this."""
    cfg, device = preset.diffusion, preset.device
    path = checkpoint_path(preset, checkpoint_dir)
    schedule = make_schedule(cfg, device)
    model = build_unet(cfg, device)
    if path.exists() and not retrain:
        try:
            blob = load_checkpoint(path, model)
            extra = blob.get("extra", {})
            if extra.get("T") == cfg.T and extra.get("schedule") == cfg.schedule:
                model.to(device).eval()
                print(f"loaded {path} (trained {extra.get('steps')} steps in {extra.get('train_seconds', 0):.0f} s)")
                return DDPMRun(model, schedule, load_history(blob), cfg, path, True,
                               float(extra.get("train_seconds", 0.0)))
            print(f"{path} was trained with another schedule: training again")
        except CheckpointMismatch as e:
            print(f"{e}: training again")
        model = build_unet(cfg, device)
    seed_everything(preset.seed)
    x, y = mnist_tensors("train", device=device, scale="signed")
    batches = TensorBatches(x, y, batch_size=cfg.batch_size, seed=preset.seed)
    ema = EMA(model, cfg.ema_decay)
    eval_fn = fid_eval_fn(ema, schedule, cfg, amp=preset.amp) if evaluate else None
    history = fit(model, diffusion_batches_loss(schedule, cfg.p_uncond), batches, cfg.steps, lr=cfg.lr,
                  warmup_steps=cfg.warmup_steps, cosine_decay=True, ema=ema, amp=preset.amp,
                  compile=preset.compile, eval_fn=eval_fn, eval_every=cfg.eval_every if evaluate else None,
                  desc=f"DDPM ({preset.name})", progress=progress, live_plot=live_plot)
    save_checkpoint(path, ema.model, history=history,
                    extra={"T": cfg.T, "schedule": cfg.schedule, "steps": history.last_step,
                           "train_seconds": history.seconds, "preset": preset.name})
    return DDPMRun(ema.model.eval(), schedule, history, cfg, path, False, history.seconds)


__all__ = ["build_unet", "make_schedule", "balanced_labels", "sample_digits",
           "sample_quality", "fid_eval_fn", "DDPMRun", "checkpoint_path", "train_or_load_ddpm"]
