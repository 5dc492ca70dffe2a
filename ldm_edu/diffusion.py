"""Gaussian diffusion: noise schedules, the training loss, DDPM/DDIM steps, sampling, inversion.

diffusers-style: nothing here knows what network predicts ε. A *model* is any callable
``model(x_t, t, y=None) → ε̂`` with x_t's shape (``ldm_edu.unet.UNet`` is one); schedules are
plain tensors; each sampler update is one small ``*_step`` function; the loops only glue them.

Notation (seed paper eq. 1-4, slides "DDPM" and "DDIM"): β_t the noise added at step t,
α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s. Timesteps are **0-based** indices into these tensors, as in
diffusers: t = 0 is the first noising step, t = T − 1 the last; ``t_prev = -1`` stands for the
clean data (ᾱ = 1).

- forward chain  q(x_t | x_{t−1}) = N(√(1−β_t) x_{t−1}, β_t I)           (seed eq. 3)
- closed form    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε,  ε ~ N(0, I)                  (seed eq. 4)
- training       min ‖ε − ε_θ(x_t, t)‖²                                     (slides, Algorithm 1)
- DDPM step      x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t + σ_t z               (slides, Algorithm 2)
- DDIM step      x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}−σ²) ε̂ + σ z               (Song et al. 2021)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .progress import progress_bar

KINDS = ("linear", "cosine")


# ----------------------------------------------------------------------------- schedules
class NoiseSchedule:
    """β_t, α_t = 1 − β_t and ᾱ_t = ∏ α_s for t = 0 … T−1 (0-based), computed in float64.

    - ``"linear"``: β from 1e-4 to 0.02 (Ho et al. 2020; for other T the endpoints scale by 1000/T
      so the total noise stays comparable, as in improved-diffusion).
    - ``"cosine"``: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = 0.008,
      β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at 0.999 (Nichol & Dhariwal 2021).
    """

    def __init__(self, T: int = 1000, kind: str = "linear", device: str | torch.device = "cpu"):
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive int (number of diffusion steps), got {T!r}")
        if kind not in KINDS:
            raise ValueError(f"unknown schedule kind {kind!r}: choose 'linear' or 'cosine'")
        self.T, self.kind = T, kind
        if kind == "linear":
            scale = 1000.0 / T
            betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64)
        else:
            s = 0.008
            steps = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            abar = f / f[0]
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
        self.betas64 = betas
        self.alpha_bars64 = torch.cumprod(1 - betas, 0)
        self.to(device)

    def to(self, device) -> "NoiseSchedule":
        """Move the float32 tensors to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.betas = self.betas64.float().to(self.device)
        self.alphas = (1 - self.betas64).float().to(self.device)
        self.alpha_bars = self.alpha_bars64.float().to(self.device)
        return self

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of x_t, shape (T,)."""
        return (self.alpha_bars64 / (1 - self.alpha_bars64)).float().to(self.device)

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t, the variance of q(x_{t−1} | x_t, x_0); β̃_0 = 0."""
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars64[:-1]])
        return ((1 - abar_prev) / (1 - self.alpha_bars64) * self.betas64).float().to(self.device)

    def ab(self, t: int) -> float:
        """ᾱ_t as a Python float in float64 precision; ``t = -1`` gives 1 (used by the step functions)."""
        t = int(self.check_t(t, allow_minus_one=True))
        return 1.0 if t < 0 else float(self.alpha_bars64[t])

    def alpha_bar(self, t) -> torch.Tensor:
        """ᾱ at (0-based) timestep(s) ``t``; ``t = -1`` gives 1 (clean data). Float32 tensor."""
        t = self.check_t(t, allow_minus_one=True)
        ab = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars64])[(t + 1).cpu()]
        return ab.float().to(self.device)

    def check_t(self, t, allow_minus_one: bool = False) -> torch.Tensor:
        """``t`` as a long tensor; a clear ValueError when it is not an integer in [0, T−1]."""
        if isinstance(t, torch.Tensor):
            if t.is_floating_point():
                if not torch.equal(t, t.round()):
                    raise ValueError("timesteps must be integers (0-based indices into the schedule)")
            t = t.long()
        else:
            if isinstance(t, float) and not float(t).is_integer():
                raise ValueError(f"timestep must be an integer index, got {t}")
            t = torch.as_tensor(t, dtype=torch.long)
        low = -1 if allow_minus_one else 0
        if t.numel() and (int(t.min()) < low or int(t.max()) > self.T - 1):
            raise ValueError(f"timestep out of range: got {t.min().item()}..{t.max().item()}, "
                             f"valid is {low}..{self.T - 1} (0-based, T={self.T})")
        return t

    def timesteps(self, steps: int | None = None, t_max: int | None = None) -> torch.Tensor:
        """A decreasing sub-sequence of ``steps`` timesteps from ``t_max`` (default T−1, so sampling
        starts from pure noise) down to 0, evenly spaced; None → all of them.

        Why ``t_max``: the cosine schedule's last steps push ᾱ down to ~1e-9, where
        x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ divides by ~5e-5. Sampling survives it (x̂_0 is clipped), but
        DDIM *inversion* up to T−1 cannot be undone; invert to e.g. t_max = 980 (ᾱ ≈ 9e-4) instead."""
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


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a (B,) or scalar tensor over x's (B, C, H, W)."""
    v = v.to(device=x.device, dtype=x.dtype)
    return v.reshape(-1, *([1] * (x.dim() - 1))) if v.dim() else v


def _batch_t(schedule: NoiseSchedule, t, x: torch.Tensor, allow_minus_one=False) -> torch.Tensor:
    t = schedule.check_t(t, allow_minus_one=allow_minus_one)
    if t.dim() == 0:
        return t
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be an int or have shape (batch,)=({x.shape[0]},), got {tuple(t.shape)}")
    return t


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{nb} must have the shape of {na} {tuple(a.shape)}, got {tuple(b.shape)}")


# ----------------------------------------------------------------------------- forward process
def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Jump straight to step t: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (seed eq. 4). ``t``: int or (B,)."""
    t = _batch_t(schedule, t, x0)
    noise = torch.randn_like(x0) if noise is None else noise
    _check_same_shape(x0, noise, "x0", "noise")
    ab = _per_sample(schedule.alpha_bar(t), x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_step(schedule: NoiseSchedule, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One step of the forward chain: x_t ~ N(√(1−β_t) x_{t−1}, β_t I) (seed eq. 3)."""
    t = _batch_t(schedule, t, x_prev)
    noise = torch.randn_like(x_prev) if noise is None else noise
    beta = _per_sample(schedule.betas.to(x_prev.device)[t.to(x_prev.device)], x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def predict_x0(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """x̂_0 = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t: the closed form solved for x_0."""
    t = _batch_t(schedule, t, x_t)
    _check_same_shape(x_t, eps, "x_t", "eps")
    ab = _per_sample(schedule.alpha_bar(t), x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


# ----------------------------------------------------------------------------- training loss
def diffusion_loss(model, schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor | None = None,
                   p_uncond: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """The simple ε-prediction loss (slides, Algorithm 1; Ho et al. 2020, eq. 14):

    t ~ U{0..T−1}, ε ~ N(0, I), loss = mean ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t, y)‖².

    With labels ``y`` and ``p_uncond > 0`` each label is replaced by the null label
    ``model.num_classes`` with probability p_uncond, so the same network also learns the
    unconditional ε (classifier-free guidance, Ho & Salimans 2022).
    """
    if x0.dim() < 2:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond is a probability, got {p_uncond}")
    b = x0.shape[0]
    t = torch.randint(0, schedule.T, (b,), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    x_t = q_sample(schedule, x0, t, noise)
    if y is not None and p_uncond > 0:
        null = _null_label(model)
        drop = torch.rand(b, device=x0.device, generator=generator) < p_uncond
        y = torch.where(drop, torch.full_like(y, null), y)
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


# ----------------------------------------------------------------------------- sampler steps
def ddpm_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int,
              noise: torch.Tensor | None = None, variance: str = "beta_tilde",
              clip_x0: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One ancestral step x_t → x_{t−1} (slides, Algorithm 2):

    x_{t−1} = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε̂) + σ_t z,  σ_t² = β_t ("beta") or β̃_t ("beta_tilde"),
    and z = 0 at t = 0. With ``clip_x0`` the mean is taken as the posterior mean
    μ̃(x_t, clip(x̂_0)) instead — identical without clipping, steadier for pixel images.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    t = int(schedule.check_t(t))
    _check_same_shape(x_t, eps, "x_t", "eps")
    beta, alpha, ab = (float(schedule.betas64[t]), 1 - float(schedule.betas64[t]),
                       float(schedule.alpha_bars64[t]))
    ab_prev = float(schedule.alpha_bars64[t - 1]) if t > 0 else 1.0
    if clip_x0 is None:
        mean = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)
    else:
        x0 = predict_x0(schedule, x_t, eps, t).clamp(-clip_x0, clip_x0)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * x_t
    if t == 0:
        return mean
    var = beta if variance == "beta" else (1 - ab_prev) / (1 - ab) * beta
    if noise is None:
        noise = _randn(x_t, generator)
    return mean + math.sqrt(var) * noise


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """σ_t(η) = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}) (Song et al. 2021, eq. 16); η=1 ⇒ β̃."""
    ab, ab_prev = schedule.ab(t), schedule.ab(t_prev)
    return eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(max(0.0, 1 - ab / ab_prev))


def ddim_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: float | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDIM step x_t → x_{t_prev} for any t_prev < t (``t_prev = -1``: ᾱ = 1, the data):

    x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t;  x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}−σ²) ε̂ + σ z, σ = σ_t(η).
    η = 0 is deterministic; η = 1 with t_prev = t−1 is the DDPM step with σ² = β̃_t.
    """
    t, t_prev = int(schedule.check_t(t)), int(schedule.check_t(t_prev, allow_minus_one=True))
    if t_prev >= t:
        raise ValueError(f"t_prev must be smaller than t (sampling goes backwards), got t={t}, t_prev={t_prev}")
    if eta < 0:
        raise ValueError(f"eta must be ≥ 0, got {eta}")
    _check_same_shape(x_t, eps, "x_t", "eps")
    ab, ab_prev = schedule.ab(t), schedule.ab(t_prev)
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)     # keep ε consistent with the clipped x̂_0
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    out = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps
    if sigma > 0:
        if noise is None:
            noise = _randn(x_t, generator)
        out = out + sigma * noise
    return out


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default) → like's device,
    so a seed gives the same images on CPU and GPU."""
    gdev = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=gdev, dtype=torch.float32).to(like)


# ----------------------------------------------------------------------------- guidance
def guided_eps(model, x: torch.Tensor, t, y: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
    """ε̂ for a batch at timestep ``t`` (int or (B,)).

    Classifier-free guidance (Ho & Salimans 2022): ε = ε_u + w (ε_c − ε_u), with ε_u the
    prediction for the null label ``model.num_classes``. w = 1 is the plain conditional model,
    w = 0 the unconditional one; both passes run as one batch.
    """
    b = x.shape[0]
    tt = torch.as_tensor(t, device=x.device).long()
    tt = tt.expand(b) if tt.dim() == 0 else tt
    if y is None:
        if guidance != 1.0:
            raise ValueError("guidance needs class labels y (guidance=1.0 samples without them)")
        n = getattr(model, "num_classes", None)
        return model(x, tt) if n is None else model(x, tt, torch.full((b,), int(n), device=x.device, dtype=torch.long))
    y = torch.as_tensor(y, device=x.device).long()
    if y.shape != (b,):
        raise ValueError(f"y must hold one class per sample, shape ({b},), got {tuple(y.shape)}")
    if guidance == 1.0:
        return model(x, tt, y)
    null = torch.full_like(y, _null_label(model))
    eps = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, null]))
    eps_c, eps_u = eps.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


# ----------------------------------------------------------------------------- sampling loops
@dataclass
class Trajectory:
    """What a sampling run went through (kept on the CPU): ``xs[0]`` = x_T, ``xs[k+1]`` = the
    sample after step k; ``x0_preds[k]`` = x̂_0 predicted at step k, from ``timesteps[k]``."""

    timesteps: list = field(default_factory=list)
    xs: list = field(default_factory=list)
    x0_preds: list = field(default_factory=list)
    seconds: float = 0.0


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def sample(model, schedule: NoiseSchedule, shape, method: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, y=None, guidance: float = 1.0, generator: torch.Generator | None = None,
           x_T: torch.Tensor | None = None, return_trajectory: bool = False, progress: bool = True,
           variance: str = "beta_tilde", clip_x0: float | None = None, device=None,
           t_max: int | None = None):
    """Draw samples by running the reverse process from x_T ~ N(0, I).

    - ``method="ddpm"``: ancestral sampling (Algorithm 2) over all T steps; with ``steps < T``
      the strided version (a DDIM step with η = 1 on the sub-sequence, Song et al. 2021).
    - ``method="ddim"``: DDIM over ``steps`` evenly spaced timesteps (default 50) with ``eta``.
    ``y`` (class indices, (B,)) and ``guidance`` w give classifier-free guidance.
    ``generator`` (a CPU torch.Generator) makes runs repeatable. ``t_max`` starts the chain at
    that timestep instead of T−1 (to undo a ``ddim_invert(..., t_max=...)``). Returns x_0, or
    ``(x_0, Trajectory)`` with ``return_trajectory=True``.
    """
    if method not in ("ddpm", "ddim"):
        raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
    shape = tuple(int(s) for s in shape)
    device = torch.device(device) if device is not None else _model_device(model)
    if x_T is None:
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
    else:
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have shape {shape}, got {tuple(x_T.shape)}")
        x = x_T.to(device, torch.float32)
    if y is not None:
        y = torch.as_tensor(y).long().to(device)
    if steps is None:
        steps = schedule.T if method == "ddpm" else 50
    ts = schedule.timesteps(steps, t_max).tolist()
    full = method == "ddpm" and steps == schedule.T
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    traj = Trajectory(timesteps=ts, xs=[x.cpu()] if return_trajectory else [])
    start = time.time()
    for k, t in enumerate(progress_bar(ts, progress, desc=f"{method} sampling", leave=False)):
        t_prev = ts[k + 1] if k + 1 < len(ts) else -1
        eps = guided_eps(model, x, t, y, guidance).float()
        if return_trajectory:
            traj.x0_preds.append(predict_x0(schedule, x, eps, t).cpu())
        z = _randn(x, generator) if (method == "ddpm" or eta > 0) and t_prev >= 0 else None
        if full:
            x = ddpm_step(schedule, x, eps, t, noise=z, variance=variance, clip_x0=clip_x0)
        else:
            x = ddim_step(schedule, x, eps, t, t_prev, eta=1.0 if method == "ddpm" else eta,
                          noise=z, clip_x0=clip_x0)
        if return_trajectory:
            traj.xs.append(x.cpu())
    traj.seconds = time.time() - start
    if was_training:
        model.train()
    return (x, traj) if return_trajectory else x


@torch.no_grad()
def ddim_invert(model, schedule: NoiseSchedule, x0: torch.Tensor, steps: int = 50, y=None,
                guidance: float = 1.0, return_trajectory: bool = False, progress: bool = False,
                t_max: int | None = None):
    """Run deterministic DDIM (η = 0) backwards, x_0 → x_T (Song et al. 2021, sec. 4.3;
    Dhariwal & Nichol 2021): at each step ε̂ is evaluated at the current point with the *next*
    timestep, x̂_0 = (x − √(1−ᾱ_prev) ε̂)/√ᾱ_prev, x_next = √ᾱ_next x̂_0 + √(1−ᾱ_next) ε̂.
    ``sample(..., method="ddim", steps=steps, eta=0, x_T=x_T, t_max=t_max)`` maps the result back
    to ≈ x0. Stop short of T−1 with a schedule whose last ᾱ is ~0 (cosine: ``t_max=980``): the
    step into ᾱ ≈ 1e-9 scales x̂_0 by 5e-5 and the way back cannot recover it.
    """
    if x0.dim() < 2:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    device = _model_device(model)
    x = x0.to(device, torch.float32)
    if y is not None:
        y = torch.as_tensor(y).long().to(device)
    if hasattr(model, "eval"):
        model.eval()
    ts = schedule.timesteps(steps, t_max).flip(0).tolist()   # increasing: 0 … t_max
    traj = Trajectory(timesteps=ts, xs=[x.cpu()] if return_trajectory else [])
    t_prev = -1
    for t in progress_bar(ts, progress, desc="DDIM inversion", leave=False):
        eps = guided_eps(model, x, t, y, guidance).float()
        ab_prev, ab = schedule.ab(t_prev), schedule.ab(t)
        x0_pred = (x - math.sqrt(1 - ab_prev) * eps) / math.sqrt(ab_prev)
        x = math.sqrt(ab) * x0_pred + math.sqrt(1 - ab) * eps
        if return_trajectory:
            traj.xs.append(x.cpu())
            traj.x0_preds.append(x0_pred.cpu())
        t_prev = t
    return (x, traj) if return_trajectory else x


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (keeps the norm a Gaussian expects)."""
    _check_same_shape(a, b, "a", "b")
    af, bf = a.flatten(), b.flatten()
    cos = (af @ bf / (af.norm() * bf.norm())).clamp(-1, 1)
    theta = torch.acos(cos)
    if float(theta) < 1e-6:
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)


# ----------------------------------------------------------------------------- a reference model
class GaussianEpsModel(nn.Module):
    """The *optimal* ε-predictor when the data is a single Gaussian N(μ, s² I) — an independent
    reference for tests and the lessons' checks. Then x_t ~ N(√ᾱ_t μ, (ᾱ_t s² + 1 − ᾱ_t) I) and
    E[ε | x_t] = √(1−ᾱ_t) (x_t − √ᾱ_t μ) / (ᾱ_t s² + 1 − ᾱ_t)."""

    def __init__(self, schedule: NoiseSchedule, mean: float | torch.Tensor = 0.0, std: float = 1.0):
        super().__init__()
        self.schedule = schedule
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.std = float(std)
        self.num_classes = None

    def forward(self, x: torch.Tensor, t: torch.Tensor, y=None) -> torch.Tensor:
        ab = _per_sample(self.schedule.alpha_bar(t), x)
        return (1 - ab).sqrt() * (x - ab.sqrt() * self.mean) / (ab * self.std**2 + 1 - ab)


__all__ = ["NoiseSchedule", "q_sample", "q_step", "predict_x0", "diffusion_loss", "diffusion_batches_loss", "ddpm_step",
           "ddim_sigma", "ddim_step", "guided_eps", "sample", "ddim_invert", "slerp", "Trajectory",
           "GaussianEpsModel", "KINDS"]
