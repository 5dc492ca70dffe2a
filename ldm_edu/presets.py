"""Every size knob of every lesson, in one place, for three machines.

- ``tiny``: CI and smoke tests. Every code path, plot and widget runs; each lesson ≤ 60 s on 2 CPU
  cores (lesson 06 ≤ 90 s). Results may look poor.
- ``cpu``: the default without a GPU. Each lesson ≤ 10 min on a 2-core laptop (lesson 06 ≤ 15).
- ``gpu``: the default with CUDA. Each lesson ≤ 3 min on one H100 (lesson 06 ≤ 5).

``get_preset()`` picks one: an explicit name, else ``$LDM_EDU_PRESET``, else "gpu" if CUDA is
available, else "cpu". Each lesson section is a frozen dataclass; read them as
``preset.ae.steps``, ``preset.vae.latent_dim``, ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import torch

NAMES = ("tiny", "cpu", "gpu")


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
    betas: tuple = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)   # β values precomputed for the β slider
    beta_steps: int = 1500
    iw_samples: int = 100          # importance samples for log p(x) (Burda et al. 2016)
    n_eval: int = 10000            # test images for the negative ELBO
    n_eval_iw: int = 1000          # test images for the (costlier) importance-weighted bound


# ----------------------------------------------------------------------------- lesson 03
@dataclass(frozen=True)
class VQConfig:
    """Filled by the VQ-VAE lesson (issue 4)."""


# ----------------------------------------------------------------------------- lessons 04-05
@dataclass(frozen=True)
class DiffusionConfig:
    """Filled by the DDPM/DDIM lessons (issue 5)."""


# ----------------------------------------------------------------------------- lesson 06
@dataclass(frozen=True)
class LDMConfig:
    """Filled by the latent diffusion lesson (issue 6)."""


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
    amp: bool = False               # bf16 autocast in fit() (CUDA only)
    compile: bool = False           # torch.compile in fit() (CUDA only)
    seed: int = 0

    def describe(self) -> str:
        return (f"preset '{self.name}' on {self.device}: each lesson takes about "
                f"{self.minutes:g} min on its target machine")


def _tiny() -> Preset:
    return Preset(
        name="tiny", device="cpu", minutes=1,
        ae=AEConfig(hidden=128, steps=150, sweep_dims=(2, 8, 32), sweep_steps=60, n_eval=2000),
        vae=VAEConfig(hidden=128, steps=200, steps_2d=150, betas=(0.5, 1.0, 4.0), beta_steps=60,
                      iw_samples=16, n_eval=2000, n_eval_iw=200),
        vq=VQConfig(), diffusion=DiffusionConfig(), ldm=LDMConfig(),
    )


def _cpu() -> Preset:
    return Preset(
        name="cpu", device="cpu", minutes=10,
        ae=AEConfig(hidden=512, steps=3000, sweep_steps=1500),
        vae=VAEConfig(hidden=512, steps=12000, steps_2d=3000, beta_steps=1500),
        vq=VQConfig(), diffusion=DiffusionConfig(), ldm=LDMConfig(),
    )


def _gpu() -> Preset:
    return Preset(
        name="gpu", device="cuda", minutes=3, amp=True,
        ae=AEConfig(hidden=1024, steps=6000, batch_size=256, sweep_steps=3000),
        vae=VAEConfig(hidden=1024, steps=40000, batch_size=256, lr=1e-3, steps_2d=6000,
                      beta_steps=3000, iw_samples=1000, n_eval_iw=10000),
        vq=VQConfig(), diffusion=DiffusionConfig(), ldm=LDMConfig(),
    )


_BUILDERS = {"tiny": _tiny, "cpu": _cpu, "gpu": _gpu}


def get_preset(name: str | None = None, device: str | None = None) -> Preset:
    """The preset called ``name``; ``None`` → ``$LDM_EDU_PRESET``, else "gpu" with CUDA, else "cpu".

    ``device`` overrides where it runs (tests build the ``gpu`` preset on the CPU this way)."""
    if name is None:
        name = os.environ.get("LDM_EDU_PRESET") or ("gpu" if torch.cuda.is_available() else "cpu")
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


__all__ = ["Preset", "AEConfig", "VAEConfig", "VQConfig", "DiffusionConfig", "LDMConfig",
           "get_preset", "NAMES", "replace"]
