"""Gaussian diffusion, the forward half: noise schedules, the forward process and the training loss.

diffusers-style: nothing here knows what network predicts ε. A *model* is any callable
``model(x_t, t, y=None) → ε̂`` with x_t's shape (``ldm_edu.unet.UNet`` is one); schedules are
plain tensors. The reverse process — the DDPM/DDIM steps, the samplers and inversion — is in
``ldm_edu.sampling``.

Notation (Ho et al. 2020; seed paper eq. 1-3; slides "DDPM" and "DDIM"): β_t the noise added at
step t, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s (``schedule.alpha_bars``).

Indices. The papers count t = 1 … T with x_0 the clean image. The code, like diffusers, uses
**0-based** indices into the schedule tensors: index t = 0 is the first noising step (the papers'
t = 1), t = T − 1 the last (the papers' T), and ``t_prev = -1`` stands for the clean data
(ᾱ = 1, the papers' x_0). So "the sample at index t" is the papers' x_{t+1}.

- forward chain  q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I)      (Ho et al. eq. 2; seed eq. 3)
- closed form    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε,  ε ~ N(0, I)             (Ho et al. eq. 4; slides)
- training       min ‖ε − ε_θ(x_t, t)‖²                  (Ho et al. eq. 14, Algorithm 1; slides)
"""
from __future__ import annotations

import math

import torch

KINDS = ("linear", "cosine")


# ----------------------------------------------------------------------------- schedules
class NoiseSchedule:
    """β_t, α_t = 1 − β_t and ᾱ_t = ∏ α_s for t = 0 … T−1 (0-based), float64 tensors.

    - ``"linear"``: β from 1e-4 to 0.02 (Ho et al. 2020; for other T the endpoints scale by 1000/T
      so the total noise stays comparable, as in improved-diffusion; clipped at 0.999 for T < 21).
    - ``"cosine"``: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008,
      β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at 0.999 (Nichol & Dhariwal 2021).

    ``alpha_bars`` is the one accessor of ᾱ. The tensors are float64 because ᾱ spans 1 … 2e-9 (cosine)
    and 1 − ᾱ_t near t = 0 is ~1e-4, where float32 keeps only three digits; the step functions cast
    to the sample's dtype. Index a batch of timesteps as ``schedule.alpha_bars[t].to(x)``.
    """

    def __init__(self, T: int = 1000, kind: str = "linear", device: str | torch.device = "cpu"):
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int (number of diffusion steps), got {T!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}: choose 'linear' or 'cosine'")
        self.T, self.kind = T, kind
        if kind == "linear":
            scale = 1000.0 / T
            betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64).clamp(max=0.999)
        else:
            s = 0.008
            steps = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            abar = f / f[0]
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)
        self.to(device)

    def to(self, device) -> "NoiseSchedule":
        """Move the tensors to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.betas, self.alphas, self.alpha_bars = (v.to(self.device) for v in (self.betas, self.alphas, self.alpha_bars))
        self._host_alpha_bars = self.alpha_bars.tolist()     # read by sampling's step functions: no GPU sync per step
        return self

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of x_t, shape (T,)."""
        return self.alpha_bars / (1 - self.alpha_bars)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t, the variance of q(x_{t−1} | x_t, x_0) (Ho et al.
        eq. 7); β̃_0 = 0 (ᾱ_{−1} = 1)."""
        abar_prev = torch.cat([self.alpha_bars.new_ones(1), self.alpha_bars[:-1]])
        return (1 - abar_prev) / (1 - self.alpha_bars) * self.betas

    def check_t(self, t, allow_clean: bool = False) -> torch.Tensor:
        """``t`` as a long tensor; a clear ValueError when it is not an integer in [0, T−1]
        (or −1, the clean data, with ``allow_clean``)."""
        if isinstance(t, torch.Tensor):
            if t.is_floating_point():
                if not torch.equal(t, t.round()):
                    raise ValueError("timesteps must be integers (0-based indices into the schedule)")
            t = t.long()
        else:
            if isinstance(t, float) and not float(t).is_integer():
                raise ValueError(f"timestep must be an integer index, got {t}")
            t = torch.as_tensor(t, dtype=torch.long)
        low = -1 if allow_clean else 0
        if t.numel() and (int(t.min()) < low or int(t.max()) > self.T - 1):
            raise ValueError(f"timestep out of range: got {t.min().item()}..{t.max().item()}, "
                             f"valid is {low}..{self.T - 1} (0-based, T={self.T})")
        return t

    def timesteps(self, steps: int | None = None, t_max: int | None = None) -> torch.Tensor:
        """A decreasing sub-sequence of ``steps`` timesteps from ``t_max`` (default T−1, so sampling
        starts from pure noise) down to 0, evenly spaced; None → all of them.

        Why ``t_max``: the cosine schedule's last steps push ᾱ down to ~2e-9, where
        x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ divides by ~5e-5. Sampling survives it only with x̂_0 clipped, and
        DDIM *inversion* up to T−1 cannot be undone; invert to e.g. t_max = 980 (ᾱ ≈ 1e-3) instead."""
        t_max = self.T - 1 if t_max is None else int(t_max)
        if not 0 <= t_max < self.T:
            raise ValueError(f"t_max must be a timestep in 0 … {self.T - 1}, got {t_max}")
        steps = t_max + 1 if steps is None else int(steps)
        if not 1 <= steps <= t_max + 1:
            raise ValueError(f"steps must be between 1 and {t_max + 1} (T={self.T}), got {steps}")
        if steps == 1:
            return torch.tensor([t_max])
        return torch.linspace(t_max, 0, steps, dtype=torch.float64).round().long()

    def __repr__(self) -> str:
        return f"NoiseSchedule(T={self.T}, kind={self.kind!r})"


def _at(v: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """v[t] as x's dtype on x's device, broadcast over x's (B, C, H, W) when t is a (B,) tensor."""
    t = torch.as_tensor(t, device=v.device)
    out = v[t].to(device=x.device, dtype=x.dtype)
    return out.reshape(-1, *([1] * (x.dim() - 1))) if out.dim() else out


def _batch_t(schedule: NoiseSchedule, t, x: torch.Tensor) -> torch.Tensor:
    t = schedule.check_t(t)
    if t.dim() == 0:
        return t
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be an int or have shape (batch,)=({x.shape[0]},), got {tuple(t.shape)}")
    return t


def _check_same_shape(a: torch.Tensor, b: torch.Tensor | None, na: str, nb: str) -> None:
    if b is not None and a.shape != b.shape:
        raise ValueError(f"{nb} must have the shape of {na} {tuple(a.shape)}, got {tuple(b.shape)}")


# ----------------------------------------------------------------------------- forward process
def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Jump straight to step t: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. 2020 eq. 4; slides).
    ``t``: int or (B,)."""
    t = _batch_t(schedule, t, x0)
    _check_same_shape(x0, noise, "x0", "noise")
    noise = torch.randn_like(x0) if noise is None else noise
    ab = _at(schedule.alpha_bars, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_step(schedule: NoiseSchedule, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the forward chain: x_t ~ N(√(1−β_t) x_{t−1}, β_t I) (Ho et al. eq. 2; seed eq. 3)."""
    t = _batch_t(schedule, t, x_prev)
    _check_same_shape(x_prev, noise, "x_prev", "noise")
    noise = torch.randn_like(x_prev) if noise is None else noise
    beta = _at(schedule.betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t: the closed form (Ho et al. eq. 4) solved for x_0."""
    t = _batch_t(schedule, t, x_t)
    _check_same_shape(x_t, eps, "x_t", "eps")
    ab = _at(schedule.alpha_bars, t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


# ----------------------------------------------------------------------------- training loss
def diffusion_loss(model, schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor | None = None,
                   p_uncond: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple ε-prediction loss of one training step (Ho et al. 2020 eq. 14, Algorithm 1; slides).

    With labels ``y`` and ``p_uncond > 0`` each label is replaced by the null label
    ``model.num_classes`` with probability p_uncond, so the same network also learns the
    unconditional ε (classifier-free guidance, Ho & Salimans 2022). Random draws come from
    ``generator`` (default: the global one), in the order t, ε, label dropout.
    """
    if x0.dim() < 2:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond is a probability, got {p_uncond}")
    b = x0.shape[0]
    # 1. t ~ Uniform{0, …, T−1} (the papers' {1, …, T}), one per image
    t = torch.randint(0, schedule.T, (b,), device=x0.device, generator=generator)
    # 2. ε ~ N(0, I)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    # 3. x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (Ho et al. eq. 4)
    x_t = q_sample(schedule, x0, t, noise)
    # 4. label dropout for classifier-free guidance: y → null with probability p_uncond
    if y is not None and p_uncond > 0:
        null = _null_label(model)
        drop = torch.rand(b, device=x0.device, generator=generator) < p_uncond
        y = torch.where(drop, torch.full_like(y, null), y)
    # 5. ‖ε − ε_θ(x_t, t, y)‖², averaged over pixels and batch
    eps = model(x_t, t, y) if y is not None else model(x_t, t)
    return (eps.float() - noise.float()).pow(2).mean()


def diffusion_batches_loss(schedule: NoiseSchedule, p_uncond: float = 0.0):
    """A loss_fn for fit(): batches are (x0, labels) or x0 alone — pixels or scaled latents alike.

    The loss is ``diffusion_loss`` (Algorithm 1). Labels reach a class-conditional model (one with
    ``num_classes``), dropped to the null class with probability ``p_uncond`` so one network learns
    both ε(x, y) and ε(x) (classifier-free guidance); an unconditional model gets none."""
    def loss_fn(model, batch):
        x0, y = batch if isinstance(batch, (tuple, list)) else (batch, None)
        if getattr(model, "num_classes", None) is None:
            y = None
        return diffusion_loss(model, schedule, x0, y=y, p_uncond=p_uncond if y is not None else 0.0)
    return loss_fn


def _null_label(model) -> int:
    n = getattr(model, "num_classes", None)
    if n is None:
        raise ValueError("classifier-free guidance needs a class-conditional model "
                         "(build it with num_classes=...); its null label is num_classes")
    return int(n)


__all__ = ["NoiseSchedule", "q_sample", "q_step", "predict_x0", "diffusion_loss", "diffusion_batches_loss",
           "KINDS"]
