"""Gaussian diffusion, the reverse half: DDPM/DDIM steps, classifier-free guidance, the sampling
loops, DDIM inversion and the batched image sampler.

Each sampler update is one small ``*_step`` function; the loops only glue them. A *model* is any
callable ``model(x_t, t, y=None) → ε̂``; schedules, indices (0-based, ``t_prev = -1`` the clean data)
and notation are those of ``ldm_edu.diffusion``.

- DDPM step      x_{t−1} = (x_t − β_t/√(1−ᾱ_t) ε̂)/√α_t + σ_t z   (Ho et al. eq. 11, Algorithm 2)
- DDIM step      x_{t'} = √ᾱ_{t'} x̂_0 + √(1−ᾱ_{t'}−σ²) ε̂ + σ z        (Song et al. 2021, eq. 12)
"""
from __future__ import annotations

import math
import time
from typing import Iterator, NamedTuple

import torch

from .data import balanced_labels
from .diffusion import NoiseSchedule, _check_same_shape, _null_label, predict_x0
from .progress import progress_bar

VARIANCES = ("beta", "beta_tilde")
METHODS = ("ddpm", "ddim")


def _abar(schedule: NoiseSchedule, t: int) -> float:
    """ᾱ at an int timestep as a float64 Python number; t = −1 (the clean data) gives 1."""
    return 1.0 if t < 0 else schedule._host_alpha_bars[t]


def _check_step(schedule: NoiseSchedule, x_t, eps, noise, t, t_prev) -> tuple[int, int]:
    """Validation shared by the step functions: ints in range, t_prev < t, shapes agree."""
    t, t_prev = int(schedule.check_t(t)), int(schedule.check_t(t_prev, allow_clean=True))
    if t_prev >= t:
        raise ValueError(f"t_prev must be smaller than t (sampling goes backwards), got t={t}, t_prev={t_prev}")
    _check_same_shape(x_t, eps, "x_t", "eps")
    _check_same_shape(x_t, noise, "x_t", "noise")
    return t, t_prev


# ----------------------------------------------------------------------------- sampler steps
def ddpm_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int | None = None,
              noise: torch.Tensor | None = None, variance: str = "beta_tilde", clip_x0: float | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One ancestral step x_t → x_{t−1} of Algorithm 2 (Ho et al. 2020):

        x_{t−1} = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε̂) + σ_t z   (eq. 11 for the mean),

    σ_t² = β_t (``"beta"``) or β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t (``"beta_tilde"``, the posterior
    variance of eq. 7) — the two choices of Ho et al. sec. 3.2 — and z = 0 at the last step.

    ``t_prev`` (default t − 1) jumps further: the same step on the *respaced* chain whose one step
    goes t → t_prev, with α = ᾱ_t/ᾱ_{t'} and β = 1 − α (strided sampling, Nichol & Dhariwal 2021
    sec. 4). ``clip_x0`` clips x̂_0 to [−c, c] and takes the posterior mean μ̃(x_t, x̂_0) of eq. 7;
    without clipping μ̃ equals eq. 11's mean exactly. ``noise`` (z) is drawn from ``generator`` when
    not given."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    t_prev = int(t) - 1 if t_prev is None else t_prev
    t, t_prev = _check_step(schedule, x_t, eps, noise, t, t_prev)

    # 1. the (respaced) step's schedule values: ᾱ_t, ᾱ_{t'} (= 1 for the clean data), α = ᾱ_t/ᾱ_{t'}, β = 1 − α
    ab, ab_prev = _abar(schedule, t), _abar(schedule, t_prev)
    alpha = ab / ab_prev
    beta = 1 - alpha
    # 2. the mean of p_θ(x_{t'} | x_t)
    if clip_x0 is None:
        # Ho et al. eq. 11: μ_θ = (x_t − β/√(1−ᾱ_t) ε̂) / √α
        mean = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)
    else:
        # x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t clipped, then Ho et al. eq. 7: μ̃ = √ᾱ_{t'} β/(1−ᾱ_t) x̂_0 + √α (1−ᾱ_{t'})/(1−ᾱ_t) x_t
        x0 = ((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-clip_x0, clip_x0)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)) * x_t
    # 3. no noise on the step that lands on the data (Algorithm 2: z = 0 if t = 1)
    if t_prev < 0:
        return mean
    # 4. σ² = β or β̃ = (1−ᾱ_{t'})/(1−ᾱ_t) β (Ho et al. sec. 3.2)
    var = beta if variance == "beta" else (1 - ab_prev) / (1 - ab) * beta
    # 5. x_{t'} = μ + σ z,  z ~ N(0, I)
    z = _randn(x_t, generator) if noise is None else noise
    return mean + math.sqrt(var) * z


def ddim_sigma(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> float:
    """σ_t(η) = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}) (Song et al. 2021, eq. 16); η = 1 ⇒ √β̃."""
    t, t_prev = int(schedule.check_t(t)), int(schedule.check_t(t_prev, allow_clean=True))
    ab, ab_prev = _abar(schedule, t), _abar(schedule, t_prev)
    return eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(max(0.0, 1 - ab / ab_prev))


def ddim_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip_x0: float | None = None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One DDIM step x_t → x_{t'} for any t' = ``t_prev`` < t (Song et al. 2021, eq. 12):

        x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ²) ε̂ + σ z,   x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t,

    σ = σ_t(η) (eq. 16). η = 0 is deterministic; η = 1 with t' = t − 1 is the DDPM step with
    σ² = β̃_t. ``t_prev = -1`` lands on the data (ᾱ = 1). ``clip_x0`` clips x̂_0 to [−c, c] and
    recomputes ε̂ from the clipped x̂_0, so both terms agree (diffusers keeps the model's ε̂ instead)."""
    if eta < 0:
        raise ValueError(f"eta must be ≥ 0, got {eta}")
    t, t_prev = _check_step(schedule, x_t, eps, noise, t, t_prev)

    # 1. ᾱ_t and ᾱ_{t'} (ᾱ_{−1} = 1: the clean data)
    ab, ab_prev = _abar(schedule, t), _abar(schedule, t_prev)
    # 2. the "predicted x_0" of eq. 12
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    # 3. optional clipping, and the ε̂ that points from the clipped x̂_0 to x_t
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)
        eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
    # 4. σ_t(η) (eq. 16)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    # 5. the "direction pointing to x_t": √(1 − ᾱ_{t'} − σ²) ε̂
    direction = math.sqrt(max(0.0, 1 - ab_prev - sigma**2)) * eps
    # 6. x_{t'} = √ᾱ_{t'} x̂_0 + direction + σ z
    x_prev = math.sqrt(ab_prev) * x0 + direction
    if sigma > 0:
        z = _randn(x_t, generator) if noise is None else noise
        x_prev = x_prev + sigma * z
    return x_prev


def ddim_reverse_step(schedule: NoiseSchedule, x_t: torch.Tensor, eps: torch.Tensor, t: int,
                      t_next: int) -> torch.Tensor:
    """The η = 0 DDIM update run *up* the chain, x_t → x_{t_next} with t_next > t (the encoding
    direction of the DDIM ODE, Song et al. 2021 sec. 4.3):

        x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t,   x_{t_next} = √ᾱ_{t_next} x̂_0 + √(1−ᾱ_{t_next}) ε̂.

    ``t = -1`` starts from the data (ᾱ = 1). The caller evaluates ε̂ — ``ddim_invert`` uses
    ε_θ(x_t, t_next), the only point it has (one reason inversion is approximate)."""
    t, t_next = int(schedule.check_t(t, allow_clean=True)), int(schedule.check_t(t_next))
    if t_next <= t:
        raise ValueError(f"t_next must be larger than t (inversion goes up the chain), got t={t}, t_next={t_next}")
    _check_same_shape(x_t, eps, "x_t", "eps")

    # 1. ᾱ_t (ᾱ_{−1} = 1) and ᾱ_{t_next}
    ab, ab_next = _abar(schedule, t), _abar(schedule, t_next)
    # 2. predicted x̂_0 at the current point
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    # 3. re-noise it to ᾱ_{t_next} along the same ε̂ (eq. 12 with σ = 0, t' = t_next)
    return math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next) * eps


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (CPU by default) → like's device,
    so a seed gives the same images on CPU and GPU."""
    gdev = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=gdev, dtype=torch.float32).to(like)


# ----------------------------------------------------------------------------- guidance
def guided_eps(model, x: torch.Tensor, t, y: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
    """ε̂ for a batch at timestep ``t`` (int or (B,)).

    Classifier-free guidance (Ho & Salimans 2022): ε̂ = ε_u + w (ε_c − ε_u), ε_u the prediction for
    the null label ``model.num_classes``. The paper writes ε̃ = (1 + w′) ε_c − w′ ε_u: the same line
    with w′ = w − 1 — our w = 1 (the paper's w′ = 0) is the plain conditional model, w = 0 the
    unconditional one. Both passes run as one batch.
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
class SamplerStep(NamedTuple):
    """One state of a sampling run (see ``sample_progressive``): the 0-based timestep ``t`` (−1 for
    the final, clean sample), the sample ``x_t`` there and the x̂_0 the sampler predicted from it."""
    t: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@torch.no_grad()
def sample_progressive(model, schedule: NoiseSchedule, shape, method: str = "ddpm", steps: int | None = None,
                       eta: float = 0.0, y=None, guidance: float = 1.0, generator: torch.Generator | None = None,
                       x_T: torch.Tensor | None = None, progress: bool = True, variance: str = "beta_tilde",
                       clip_x0: float | None = None, device=None, t_max: int | None = None) -> Iterator[SamplerStep]:
    """Run the reverse process from x_T ~ N(0, I), yielding a ``SamplerStep(t, x_t, x0_hat)`` per step.

    The first item is (t_max, x_T, x̂_0(x_T)), the last (−1, x_0, x_0): ``list(sample_progressive(...))``
    is the whole trajectory, ``steps + 1`` items. x̂_0 is the clean-image guess each step used
    (clipped when ``clip_x0``). Arguments as in ``sample``."""
    if method not in METHODS:
        raise ValueError(f"method must be 'ddpm' or 'ddim', got {method!r}")
    if variance not in VARIANCES:
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    if eta < 0:
        raise ValueError(f"eta must be ≥ 0, got {eta}")
    if method == "ddim" and variance != "beta_tilde":
        raise ValueError("variance applies to method='ddpm'; DDIM's noise is set by eta")
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

    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for k, t in enumerate(progress_bar(ts, progress, desc=f"{method} sampling", leave=False)):
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            eps = guided_eps(model, x, t, y, guidance).float()
            x0_hat = predict_x0(schedule, x, eps, t)
            yield SamplerStep(t, x, x0_hat if clip_x0 is None else x0_hat.clamp(-clip_x0, clip_x0))
            z = _randn(x, generator) if (method == "ddpm" or eta > 0) and t_prev >= 0 else None
            if method == "ddpm":
                x = ddpm_step(schedule, x, eps, t, t_prev, noise=z, variance=variance, clip_x0=clip_x0)
            else:
                x = ddim_step(schedule, x, eps, t, t_prev, eta=eta, noise=z, clip_x0=clip_x0)
        yield SamplerStep(-1, x, x)
    finally:
        if was_training:
            model.train()


@torch.no_grad()
def sample(model, schedule: NoiseSchedule, shape, method: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, y=None, guidance: float = 1.0, generator: torch.Generator | None = None,
           x_T: torch.Tensor | None = None, progress: bool = True, variance: str = "beta_tilde",
           clip_x0: float | None = None, device=None, t_max: int | None = None) -> torch.Tensor:
    """Draw one batch of samples x_0 by running the reverse process from x_T ~ N(0, I).

    - ``method="ddpm"``: ancestral sampling (Algorithm 2, ``ddpm_step``) over all T steps, σ² from
      ``variance``; with ``steps < T`` the same step on the respaced sub-sequence (strided DDPM).
    - ``method="ddim"``: DDIM (``ddim_step``) over ``steps`` evenly spaced timesteps (default 50)
      with ``eta`` (0: deterministic).
    ``y`` (class indices, (B,)) and ``guidance`` w give classifier-free guidance. ``clip_x0``
    clips x̂_0 to [−c, c] at every step. ``generator`` (a CPU torch.Generator) draws x_T and every
    z, so a seed gives the same images on CPU and GPU. ``t_max`` starts the chain at that timestep
    instead of T−1 (to undo a ``ddim_invert(..., t_max=...)``). For the trajectory, iterate
    ``sample_progressive`` (same arguments); for many images, ``sample_images``.
    """
    for step in sample_progressive(model, schedule, shape, method=method, steps=steps, eta=eta, y=y,
                                   guidance=guidance, generator=generator, x_T=x_T, progress=progress,
                                   variance=variance, clip_x0=clip_x0, device=device, t_max=t_max):
        pass
    return step.x_t


@torch.no_grad()
def ddim_invert(model, schedule: NoiseSchedule, x0: torch.Tensor, steps: int = 50, y=None,
                guidance: float = 1.0, progress: bool = False, t_max: int | None = None) -> torch.Tensor:
    """Deterministic DDIM run backwards, x_0 → x_{t_max} (Song et al. 2021 sec. 4.3), one
    ``ddim_reverse_step`` per pair of the ``steps`` timesteps 0 … t_max, with ε̂ = ε_θ(x_t, t_next).

    ``sample(..., method="ddim", steps=steps, eta=0, x_T=result, t_max=t_max)`` maps the result back
    to ≈ x0. Stop short of T−1 with a schedule whose last ᾱ is ~0 (cosine: ``t_max=980``): the
    step into ᾱ ≈ 2e-9 scales x̂_0 by 5e-5 and the way back cannot recover it.
    """
    if x0.dim() < 2:
        raise ValueError(f"x0 must be a batch (B, C, H, W), got shape {tuple(x0.shape)}")
    device = _model_device(model)
    x = x0.to(device, torch.float32)
    if y is not None:
        y = torch.as_tensor(y).long().to(device)
    if hasattr(model, "eval"):
        model.eval()
    ts = [-1] + schedule.timesteps(steps, t_max).flip(0).tolist()   # −1 (the data), then 0 … t_max
    for t, t_next in progress_bar(list(zip(ts[:-1], ts[1:])), progress, desc="DDIM inversion", leave=False):
        eps = guided_eps(model, x, t_next, y, guidance).float()
        x = ddim_reverse_step(schedule, x, eps, t, t_next)
    return x


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (keeps the norm a Gaussian expects)."""
    _check_same_shape(a, b, "a", "b")
    af, bf = a.flatten(), b.flatten()
    cos = (af @ bf / (af.norm() * bf.norm())).clamp(-1, 1)
    theta = torch.acos(cos)
    if float(theta) < 1e-6:
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * theta) * a + torch.sin(w * theta) * b) / torch.sin(theta)


# ----------------------------------------------------------------------------- many images
class Samples(NamedTuple):
    """What ``sample_images`` returns: ``images`` (N, C, H, W) on the CPU and the wall ``seconds``."""
    images: torch.Tensor
    seconds: float


@torch.no_grad()
def sample_images(sample_fn, n: int, labels="balanced", batch_size: int = 500, seed: int = 0,
                  progress: bool = False, num_classes: int = 10) -> Samples:
    """The one batched, seeded, timed image sampler of the course.

    ``sample_fn(k, y, generator)`` returns k images in [0, 1] for the labels ``y`` (a (k,) long
    tensor, or None when ``labels=None``); it is called batch after batch with ONE CPU generator
    seeded with ``seed``, so a seed gives the same images on any batch size that divides the work
    the same way, and on CPU and GPU. ``labels``: "balanced" (0, 1, …, 9, 0, … — every class equally
    often), None (unconditional) or a (n,) tensor. The wall time covers all calls (CUDA is synced
    before the clock stops). Returns ``Samples(images, seconds)``, images float32 on the CPU."""
    if int(n) < 1 or int(batch_size) < 1:
        raise ValueError(f"n and batch_size must be ≥ 1, got n={n}, batch_size={batch_size}")
    n, batch_size = int(n), int(batch_size)
    if isinstance(labels, str):
        if labels != "balanced":
            raise ValueError(f"labels must be 'balanced', None or a tensor of n class indices, got {labels!r}")
        labels = balanced_labels(n, num_classes)
    elif labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        if labels.shape != (n,):
            raise ValueError(f"labels must hold one class per image, shape ({n},), got {tuple(labels.shape)}")
    generator = torch.Generator().manual_seed(int(seed))
    cuda = torch.cuda.is_available()
    out = []
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in progress_bar(range(0, n, batch_size), progress, desc=f"sampling {n} images", leave=False):
        k = min(batch_size, n - i)
        images = sample_fn(k, None if labels is None else labels[i:i + k], generator)
        if not isinstance(images, torch.Tensor) or images.shape[0] != k:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"sample_fn(k={k}, y, generator) must return k images, got {got}")
        out.append(images.detach().float().cpu())
    if cuda:
        torch.cuda.synchronize()
    return Samples(torch.cat(out), time.perf_counter() - start)


__all__ = ["ddpm_step", "ddim_sigma", "ddim_step", "ddim_reverse_step", "guided_eps", "SamplerStep",
           "sample_progressive", "sample", "ddim_invert", "slerp", "Samples", "sample_images"]
