"""Lesson 06 (latent diffusion) exercises: reference solutions and checkers.

Each ``check_<name>(answer)`` takes only the student's function, builds its own test cases,
accepts ``solution_<name>`` and names the plausible mistakes in its hints.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from . import guarded
from ..diffusion import NoiseSchedule
from ..sampling import ddim_step

__all__ = ["solution_latent_shape", "check_latent_shape", "solution_scale_factor", "check_scale_factor",
           "solution_log_snr", "check_log_snr", "solution_guided_sample", "check_guided_sample"]


# ----------------------------------------------------------------------------- 1. latent shape
def solution_latent_shape(f: int, channels: int, size: int = 32) -> tuple[int, int, int]:
    """Shape (c, h, w) of the latent of a size × size image at compression factor f: each of the
    log2(f) stride-2 convolutions halves H and W; the last conv outputs c channels."""
    return (channels, size // f, size // f)


def check_latent_shape(fn) -> bool:
    """``fn(f, channels, size)`` → (c, h, w)."""
    def check():
        for f, c, size in ((1, 1, 32), (2, 2, 32), (4, 4, 32), (8, 4, 32), (4, 3, 256), (8, 4, 512)):
            got = tuple(int(v) for v in fn(f, c, size))
            want = solution_latent_shape(f, c, size)
            if got == want:
                continue
            if got == (size // f, size // f, c):
                return False, "PyTorch puts channels first: (c, h, w), not (h, w, c)"
            if got == (c, size // f ** 2, size // f ** 2) or got == (c, size // (2 * f), size // (2 * f)):
                return False, "f is the total downsampling factor: h = size / f (log2 f halvings), not more"
            return False, (f"for f={f}, c={c}, a {size}×{size} image you returned {got}; the encoder "
                           "halves H and W log2(f) times and outputs c channels")
        return True, ""
    return guarded("latent_shape", check)


# ----------------------------------------------------------------------------- 2. scale factor
def solution_scale_factor(z: torch.Tensor) -> float:
    """s = 1 / std(z), one number over every element of a batch of latents (Rombach et al. 2022)."""
    return 1.0 / z.float().std().item()


def check_scale_factor(fn) -> bool:
    """``fn(z)`` → the float s with std(z · s) = 1."""
    def check():
        g = torch.Generator().manual_seed(6)
        for std, mean in ((5.0, 2.0), (0.2, 0.3), (13.0, -9.0)):
            # channels with different spreads, so a per-channel answer differs from the global one
            spread = torch.tensor([0.5, 1.0, 1.5, 2.0]).view(1, 4, 1, 1)
            z = torch.randn(256, 4, 8, 8, generator=g) * spread * std + mean
            got = fn(z)
            if isinstance(got, torch.Tensor) and got.numel() > 1:
                return False, "return ONE number for all elements (not one per channel): s = 1 / z.std()"
            got, want = float(got), solution_scale_factor(z)
            if math.isclose(got, want, rel_tol=1e-4):
                continue
            if math.isclose(got, 1 / want, rel_tol=1e-3):
                return False, "you returned std(z); the scale factor is its inverse, s = 1 / std(z)"
            if math.isclose(got, 1 / z.abs().mean().item(), rel_tol=1e-3) or \
                    math.isclose(got, 1 / z.pow(2).mean().sqrt().item(), rel_tol=1e-3):
                return False, "use the standard deviation (around the mean), not mean |z| or the RMS"
            return False, f"for latents with std {z.std().item():.3g} you returned {got:.4g}, expected {want:.4g}"
        return True, ""
    return guarded("scale_factor", check)


# ----------------------------------------------------------------------------- 3. log-SNR of a latent
def solution_log_snr(alpha_bars: torch.Tensor, std: float) -> torch.Tensor:
    """log SNR(t) of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε when x_0 has standard deviation σ:
    SNR = σ² ᾱ_t / (1 − ᾱ_t) (the signal's variance over the noise's)."""
    return torch.log(std ** 2 * alpha_bars / (1 - alpha_bars))


def check_log_snr(fn) -> bool:
    """``fn(alpha_bars, std)`` → log SNR(t), a tensor like alpha_bars."""
    def check():
        ab = NoiseSchedule(100, "cosine").alpha_bars.double()[:-1]      # ᾱ < 1 and > 0
        for std in (1.0, 5.5, 0.3):
            got = torch.as_tensor(fn(ab, std)).double()
            want = solution_log_snr(ab, std)
            if got.shape != want.shape:
                return False, f"return one value per timestep, shape {tuple(want.shape)}, got {tuple(got.shape)}"
            if torch.allclose(got, want.exp(), rtol=1e-4):
                return False, "you returned the SNR itself; the plot needs its logarithm"
            if std != 1 and torch.allclose(got, torch.log(std * ab / (1 - ab)), rtol=1e-4):
                return False, "the signal's variance is σ² ᾱ_t: square the standard deviation"
            if std != 1 and torch.allclose(got, torch.log(ab / (1 - ab)), rtol=1e-4):
                return False, "the latent's std changes the signal: SNR = σ² ᾱ_t / (1 − ᾱ_t), not ᾱ_t / (1 − ᾱ_t)"
            if torch.allclose(got, torch.log(std ** 2 * ab.sqrt() / (1 - ab).sqrt()), rtol=1e-4):
                return False, "compare variances, not standard deviations: ᾱ_t and 1 − ᾱ_t without square roots"
            if not torch.allclose(got, want, rtol=1e-4, atol=1e-6):
                return False, "log SNR = log(σ² ᾱ_t / (1 − ᾱ_t))"
        return True, ""
    return guarded("log_snr", check)


# ----------------------------------------------------------------------------- 4. the guided LDM sampler
def solution_guided_sample(ldm, z_T: torch.Tensor, y: torch.Tensor, w: float, steps: int) -> torch.Tensor:
    """DDIM (η = 0) with classifier-free guidance on scaled latents, x̂₀ clipped to ±``ldm.clip_x0``,
    then decode (Rombach et al. 2022 §3.2–3.3; Ho & Salimans 2022; Song et al. 2021). ``ldm`` has
    .unet, .schedule, .autoencoder, .scale_factor, .clip_x0, .latent_shape."""
    ts = ldm.schedule.timesteps(steps).tolist()
    null = torch.full_like(y, ldm.unet.num_classes)
    z = z_T
    for k, t in enumerate(ts):
        t_prev = ts[k + 1] if k + 1 < len(ts) else -1
        tt = torch.full((len(z),), t)
        eps_c, eps_u = ldm.unet(z, tt, y), ldm.unet(z, tt, null)          # 1. conditional and null-label ε̂
        eps = eps_u + w * (eps_c - eps_u)                                  # 2. guidance
        z = ddim_step(ldm.schedule, z, eps, t, t_prev, clip_x0=ldm.clip_x0)  # 3. one DDIM step on z·s
    x = ldm.autoencoder.decode(z / ldm.scale_factor)                       # 4. undo the scale, decode
    return ((x + 1) / 2).clamp(0, 1)                                       # 5. [−1, 1] → [0, 1]


def _toy_ldm(seed: int = 0):
    """A small untrained LDM whose UNet output is NOT zero (UNets start at ε̂ = 0), as a namespace
    without ``sample`` — the checker compares the student's loop with the library's sampler."""
    from ..latent import FirstStage, LatentDiffusion
    from ..unet import UNet
    torch.manual_seed(seed)
    ae = FirstStage(f=4, latent_ch=2, ch=8).eval()
    unet = UNet(in_ch=2, ch=8, ch_mult=(1, 2), num_classes=10, image_size=8).eval()
    with torch.no_grad():
        unet.conv_out.weight.normal_(0, 0.05)
    ldm = LatentDiffusion(ae, unet, NoiseSchedule(40, "cosine"), scale_factor=0.37, clip_x0=1.0)  # the clip binds
    view = SimpleNamespace(unet=unet, schedule=ldm.schedule, autoencoder=ae, scale_factor=ldm.scale_factor,
                           clip_x0=ldm.clip_x0, latent_shape=ldm.latent_shape)
    return ldm, view


def check_guided_sample(fn) -> bool:
    """``fn(ldm, z_T, y, w, steps)`` → images in [0, 1] equal to ``LatentDiffusion.sample`` (DDIM, η = 0)."""
    from ..latent import LatentDiffusion

    def check():
        ldm, view = _toy_ldm()
        g = torch.Generator().manual_seed(3)
        z_T = torch.randn(4, *ldm.latent_shape, generator=g)
        y = torch.tensor([0, 3, 7, 9])
        with torch.no_grad():
            for w, steps in ((3.0, 8), (0.0, 4), (1.0, 5)):
                try:
                    got = fn(view, z_T.clone(), y, w, steps)
                except AttributeError as e:
                    if "sample" in str(e):
                        return False, "write the loop yourself: ldm.sample is the function you are rebuilding"
                    if "decode" in str(e):
                        return False, ("ldm.decode is part of what you are rebuilding: use "
                                       "ldm.autoencoder.decode(z / ldm.scale_factor), then map [−1, 1] to [0, 1]")
                    raise
                want = ldm.sample(4, y=y, guidance=w, steps=steps, method="ddim", z_T=z_T)
                if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                    hint = (" — that is a latent: decode it with ldm.autoencoder.decode"
                            if isinstance(got, torch.Tensor) and got.shape[1:] == z_T.shape[1:] else "")
                    return False, f"return images of shape {tuple(want.shape)}, got {shape}{hint}"
                if torch.allclose(got, want, atol=1e-4):
                    continue
                unclipped = LatentDiffusion(ldm.autoencoder, ldm.unet, ldm.schedule, ldm.scale_factor, clip_x0=None)
                if torch.allclose(got, unclipped.sample(4, y=y, guidance=w, steps=steps, method="ddim", z_T=z_T), atol=1e-4):
                    return False, ("x̂₀ is not clipped: pass clip_x0=ldm.clip_x0 to ddim_step (§4: without it the "
                                   "first step multiplies ε̂'s error by ≈ 10³)")
                z = ldm.sample(4, y=y, guidance=w, steps=steps, method="ddim", z_T=z_T, decode=False)
                if torch.allclose(got, ((ldm.autoencoder.decode(z) + 1) / 2).clamp(0, 1), atol=1e-4):
                    return False, "the UNet works on z·s; divide by ldm.scale_factor before decoding"
                if torch.allclose(got, ((ldm.autoencoder.decode(z * ldm.scale_factor) + 1) / 2).clamp(0, 1), atol=1e-4):
                    return False, "undo the scale by DIVIDING by s (the latents were multiplied by it)"
                if torch.allclose(got, ldm.autoencoder.decode(z / ldm.scale_factor), atol=1e-4):
                    return False, "the decoder outputs [−1, 1]; map it to [0, 1] with (x + 1) / 2 and clamp"
                if w != 1.0 and torch.allclose(got, ldm.sample(4, y=y, guidance=1.0, steps=steps, z_T=z_T), atol=1e-4):
                    return False, f"with w = {w} the guidance must change ε̂: ε̂ = ε̂_∅ + w (ε̂_y − ε̂_∅)"
                if w != 1.0 and torch.allclose(got, ldm.sample(4, y=y, guidance=1 - w, steps=steps, z_T=z_T), atol=1e-4):
                    return False, "guidance goes from the null-label ε̂_∅ towards ε̂_y: ε̂_∅ + w (ε̂_y − ε̂_∅), not the reverse"
                return False, (f"with w={w}, {steps} steps your images differ from the library's by "
                               f"{(got - want).abs().max():.3g}: run DDIM (η = 0) over schedule.timesteps(steps), "
                               "ending at t_prev = −1")
        return True, ""
    return guarded("guided_sample", check)
