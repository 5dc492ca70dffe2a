"""Latent diffusion (Rombach et al. 2022; seed paper §2.2): compress, then diffuse in the latent.

Stage 1, a ``FirstStage`` autoencoder with a spatial latent: ℰ maps an image x (1 × 28 × 28,
zero-padded to 32 × 32 so that every f ∈ {1, 2, 4, 8} divides it) to z of shape c × 32/f × 32/f,
and 𝒟 maps z back (seed eq. 5–7). It is regularised either

- "kl": ℰ outputs (μ, log σ²), z = μ + σ ε, loss = ‖x − 𝒟(z)‖² + w · KL (eq. 12, 19, 22) with a
  tiny weight w ≈ 1e-6 relative to the summed reconstruction error, as in the paper's
  KL-f models: enough to keep the latent from drifting, far too little to make it N(0, I);
- "vq": a VectorQuantizer (eq. 20–25) sits *inside the decoder*: diffusion runs on the continuous
  pre-quantisation z_e, and 𝒟 snaps it to the nearest codes before decoding (the paper's VQ-f).

Stage 2, a UNet (lesson 04) learns ε-prediction on z · s, where s = 1 / std(z) over training
latents (``latent_scale_factor``) so the diffusion sees unit-variance data, as its noise schedule
assumes. ``LatentDiffusion`` ties both stages together for training and sampling.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .nn import ConvDecoder, ConvEncoder, eval_batches
from .autoencoders import reparameterize
from .diffusion import diffusion_loss
from .losses import gaussian_kl
from .nn import check_image_batch
from .sampling import sample as diffusion_sample, sample_progressive

IMAGE_SIZE = 28        # MNIST
PADDED_SIZE = 32       # padded so that f = 1, 2, 4, 8 all divide it: latents 32², 16², 8², 4²
BACKGROUND = -1.0      # images live in [-1, 1] here (the diffusion lessons' range); -1 is black


def check_factor(f: int, size: int = PADDED_SIZE) -> int:
    """Return ``f`` if it is a power of two dividing ``size`` with a latent of ≥ 2 × 2; else ValueError."""
    if not isinstance(f, int) or isinstance(f, bool) or f < 1 or (f & (f - 1)) or size % f or size // f < 2:
        allowed = [2 ** k for k in range(int(math.log2(size))) if size // 2 ** k >= 2]
        raise ValueError(
            f"compression factor f={f!r} does not fit a {size}×{size} image: each halving step of the "
            f"encoder needs f to be a power of two dividing {size}; use one of {allowed} "
            f"(MNIST's 28×28 is padded to {size}×{size} so that f=8 gives a 4×4 latent)")
    return f


def pad_images(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 28, 28) → (B, 1, 32, 32), padding with the background value −1."""
    p = (PADDED_SIZE - IMAGE_SIZE) // 2
    return F.pad(x, (p, p, p, p), value=BACKGROUND)


def crop_images(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, 32, 32) → (B, 1, 28, 28): the inverse of ``pad_images``."""
    p = (PADDED_SIZE - IMAGE_SIZE) // 2
    return x[..., p:p + IMAGE_SIZE, p:p + IMAGE_SIZE]


# ----------------------------------------------------------------------------- stage 1
class LatentAutoencoder(nn.Module):
    """What every first stage of lessons 06–07 shares: ``f`` and ``latent_ch`` give the latent's shape
    (c, 32/f, 32/f), and ``last_layer`` is the decoder's last weight G_L (where VQGAN's adaptive
    weight compares gradients). Subclasses set ``self.f``, ``self.latent_ch`` and ``self.decoder``
    (whose ``conv_out`` maps to pixels) and define encode/decode/forward."""

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = PADDED_SIZE // self.f
        return (self.latent_ch, s, s)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


class FirstStage(LatentAutoencoder):
    """Convolutional autoencoder x (B, 1, 28, 28) in [−1, 1] ↔ z (B, c, 32/f, 32/f).

    ``reg="kl"``: ℰ gives (μ, log σ²) and ``encode`` returns μ (``sample=True``: μ + σ ε);
    ``reg="vq"``: ``encode`` returns the continuous z_e and ``decode`` quantises it first.
    """

    def __init__(self, f: int = 4, latent_ch: int = 4, ch: int = 32, num_res: int = 1,
                 reg: str = "kl", kl_weight: float = 1e-6, codebook_size: int = 256,
                 commitment: float = 0.25, ema: bool = True):
        super().__init__()
        check_factor(f)
        if reg not in ("kl", "vq"):
            raise ValueError(f"reg must be 'kl' (Gaussian posterior, small KL weight) or 'vq' "
                             f"(vector quantisation), got {reg!r}")
        self.config = {"f": f, "latent_ch": latent_ch, "ch": ch, "num_res": num_res, "reg": reg,
                       "kl_weight": kl_weight, "codebook_size": codebook_size,
                       "commitment": commitment, "ema": ema}
        self.f, self.latent_ch, self.reg, self.kl_weight = f, latent_ch, reg, kl_weight
        levels = int(math.log2(f)) + 1
        ch_mult = (1,) + (2,) * (levels - 1)          # f = 2^(levels − 1)
        out = 2 * latent_ch if reg == "kl" else latent_ch
        self.encoder = ConvEncoder(1, out, ch, ch_mult, num_res)
        self.decoder = ConvDecoder(latent_ch, 1, ch, ch_mult, num_res, out_size=PADDED_SIZE)
        self.quantizer = _make_quantizer(codebook_size, latent_ch, commitment, ema) if reg == "vq" else None

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """KL first stage: (μ, log σ²) of q(z|x), each (B, c, h, w)."""
        if self.reg != "kl":
            raise ValueError("posterior() exists for reg='kl' only; a VQ first stage has no σ")
        check_image_batch(x, 1, (IMAGE_SIZE, IMAGE_SIZE), "FirstStage input")
        mu, logvar = self.encoder(pad_images(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """x (B, 1, 28, 28) in [−1, 1] → unscaled latent z (B, c, 32/f, 32/f)."""
        if self.reg == "kl":
            mu, logvar = self.posterior(x)
            return reparameterize(mu, logvar) if sample else mu
        check_image_batch(x, 1, (IMAGE_SIZE, IMAGE_SIZE), "FirstStage input")
        return self.encoder(pad_images(x))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """VQ first stage: (z_q with straight-through gradient, VQ loss, code indices) (eq. 20–25)."""
        return _quantize(self.quantizer, z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent z (B, c, 32/f, 32/f) → x̂ (B, 1, 28, 28), roughly in [−1, 1]."""
        check_image_batch(z, self.latent_ch, self.latent_shape[1:], f"FirstStage(f={self.f}) latent")
        if self.quantizer is not None:
            z = self.quantize(z)[0]
        return crop_images(self.decoder(z))

    def forward(self, x: torch.Tensor) -> dict:
        """Losses per batch. Reconstruction = ‖x − x̂‖² summed over pixels (eq. 22), mean over batch."""
        if self.reg == "kl":
            mu, logvar = self.posterior(x)
            z = reparameterize(mu, logvar)
            x_hat = crop_images(self.decoder(z))
            rec = (x_hat - x).pow(2).flatten(1).sum(1).mean()
            kl = gaussian_kl(mu, logvar).mean()                     # eq. 19, summed over c·h·w
            return {"loss": rec + self.kl_weight * kl, "rec": rec, "kl": kl, "x_hat": x_hat}
        z_e = self.encoder(pad_images(x))
        z_q, vq_loss, codes = self.quantize(z_e)
        x_hat = crop_images(self.decoder(z_q))
        rec = (x_hat - x).pow(2).flatten(1).sum(1).mean()
        # vq_loss is per latent element (eq. 23–24 as means); scale it like the summed reconstruction
        return {"loss": rec + vq_loss * z_e[0].numel(), "rec": rec, "vq": vq_loss, "codes": codes,
                "x_hat": x_hat}


def first_stage_loss(model: FirstStage, batch):
    """A loss_fn for fit(): batch = images in [−1, 1] (or (images, labels))."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = model(x)
    logs = {"rec": out["rec"]}
    logs.update({"kl": out["kl"]} if "kl" in out else {"vq": out["vq"]})
    return out["loss"], logs


# ----------------------------------------------------------------------------- VQ adapter
def _make_quantizer(codebook_size: int, dim: int, commitment: float, ema: bool) -> nn.Module:
    """The lesson-03 VectorQuantizer (eq. 20–25) for a ``dim``-channel latent, with dead-code restarts."""
    from .vq import VectorQuantizer
    return VectorQuantizer(num_codes=codebook_size, code_dim=dim, beta=commitment, ema=ema, restart_dead=True)


def _quantize(quantizer: nn.Module, z: torch.Tensor):
    out = quantizer(z)
    return out["z_q"], out["loss"], out["indices"]


# ----------------------------------------------------------------------------- the scale factor
@torch.no_grad()
def encode_dataset(ae: FirstStage, x: torch.Tensor, batch_size: int | None = None, sample: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Unscaled latents of every image in ``x`` (encoded once; training stage 2 then never runs ℰ).

    ``sample=False``: the posterior means μ (a KL first stage) or z_e (VQ); ``sample=True``: one draw
    z = μ + σ ε from q(z|x) per image (KL only), ε from ``generator`` (see ``posterior_sample``)."""
    if sample:
        return posterior_sample(*posterior_dataset(ae, x, batch_size), generator)
    was = ae.training
    ae.eval()
    z = torch.cat(eval_batches(ae.encode, x, batch_size))
    ae.train(was)
    return z


@torch.no_grad()
def posterior_dataset(ae: FirstStage, x: torch.Tensor, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, log σ²) of q(z|x) for every image in ``x`` (a KL first stage): one pass of ℰ gives both the
    posterior means and, with ``posterior_sample``, a draw from it."""
    if getattr(ae, "reg", None) != "kl":
        raise ValueError("q(z|x) with a variance exists only for a KL first stage (reg='kl')")
    was = ae.training
    ae.eval()
    mu, logvar = zip(*eval_batches(ae.posterior, x, batch_size))
    ae.train(was)
    return torch.cat(mu), torch.cat(logvar)


def posterior_sample(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw z = μ + σ ε per row, ε ~ N(0, I) from ``generator`` (on the CPU, so a seed gives the same
    draw on any device)."""
    eps = torch.randn(mu.shape, generator=generator).to(mu)
    return mu + (0.5 * logvar).exp() * eps


def latent_scale_factor(z: torch.Tensor) -> float:
    """s = 1 / std(z), one number over all elements of training latents (Rombach et al. 2022, §4.3.2
    and App. G: "we rescale the latents by the component-wise standard deviation", estimated from
    samples z ~ q(z|x) of the first stage — pass ``encode_dataset(ae, x, sample=True)``).

    After scaling, z · s has unit variance, the variance the forward process
    x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε assumes for x_0 (Ho et al. 2020, eq. 4)."""
    if z.numel() < 2:
        raise ValueError("need at least two latent values to estimate their standard deviation")
    std = z.float().std().item()
    if not math.isfinite(std) or std <= 0:
        raise ValueError(f"latents have std {std}: the first stage collapsed (train it first)")
    return 1.0 / std


def latent_log_snr(schedule, data_std: float = 1.0) -> torch.Tensor:
    """log SNR(t) of x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε when x_0 has standard deviation σ (per element):

        SNR(t) = Var(√ᾱ_t x_0) / Var(√(1−ᾱ_t) ε) = σ² ᾱ_t / (1 − ᾱ_t)    (Kingma et al. 2021, eq. 2)

    so an unscaled latent (σ ≠ 1) shifts the whole log-SNR curve by 2 log σ. Shape (T,), float64."""
    if not (isinstance(data_std, (int, float)) and math.isfinite(data_std) and data_std > 0):
        raise ValueError(f"data_std must be a positive number, got {data_std!r}")
    ab = schedule.alpha_bars.double().cpu()
    return 2 * math.log(data_std) + torch.log(ab) - torch.log1p(-ab)


# ----------------------------------------------------------------------------- both stages
class LatentDiffusion(nn.Module):
    """A trained first stage + a latent ε-prediction UNet + its noise schedule + the scale factor.

    ``encode(x)`` → z·s (what the UNet sees), ``decode(z)`` → 𝒟(z/s) in [0, 1] at 28 × 28,
    ``loss(z0, y)`` → the DDPM loss on scaled latents, ``sample(n, y, guidance, steps, method)`` →
    images in [0, 1] (the range the metrics take), ``sample_progressive`` → the latent trajectory.
    """

    def __init__(self, autoencoder: FirstStage, unet: nn.Module, schedule, scale_factor: float = 1.0,
                 clip_x0: float | None = None):
        super().__init__()
        if not (isinstance(scale_factor, (int, float)) and math.isfinite(scale_factor) and scale_factor > 0):
            raise ValueError(f"scale_factor must be a positive number (1 / std of the latents), got {scale_factor!r}")
        if clip_x0 is not None and not (math.isfinite(clip_x0) and clip_x0 > 0):
            raise ValueError(f"clip_x0 must be a positive number (max |z·s| of the training latents) or None, "
                             f"got {clip_x0!r}")
        self.autoencoder, self.unet, self.schedule = autoencoder, unet, schedule
        self.scale_factor = float(scale_factor)
        # The latent analogue of lesson 04's clipping of x̂_0 to [−1, 1]: the range the *scaled* training
        # latents span. With the cosine schedule's last ᾱ ≈ 2·10⁻⁹ the first strided step multiplies any
        # error of ε̂ by ≈ 10³ (lesson 04, §6); without a bound the latent run never recovers.
        self.clip_x0 = None if clip_x0 is None else float(clip_x0)
        self.autoencoder.requires_grad_(False).eval()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.latent_shape

    def check_latent(self, z: torch.Tensor, name: str = "latent") -> None:
        c, h, w = self.latent_shape
        check_image_batch(z, c, (h, w), f"{name} of this LatentDiffusion (f={self.autoencoder.f})")

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) in [−1, 1] → scaled latents z · s."""
        return self.autoencoder.encode(x) * self.scale_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → images in [0, 1]: 𝒟(z / s), mapped from [−1, 1] (in batches of
        ``eval_batch_size``: the sampler hands over hundreds at once)."""
        self.check_latent(z)
        x = torch.cat(eval_batches(lambda zb: self.autoencoder.decode(zb / self.scale_factor), z))
        return ((x + 1) / 2).clamp(0, 1)

    def loss(self, z0: torch.Tensor, y: torch.Tensor | None = None, p_uncond: float = 0.0):
        """ε-prediction loss (DDPM Algorithm 1) on scaled latents z0 (B, c, h, w)."""
        self.check_latent(z0, "training latent")
        return diffusion_loss(self.unet, self.schedule, z0, y=y, p_uncond=p_uncond)

    def _sampler_args(self, n: int, y, z_T):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        device = next(self.unet.parameters()).device
        if isinstance(y, int):
            y = torch.full((n,), y, dtype=torch.long)
        if y is not None:
            y = torch.as_tensor(y).long()
            if y.shape != (n,):
                raise ValueError(f"y must be an int or a tensor of shape ({n},), got shape {tuple(y.shape)}")
            y = y.to(device)
        if z_T is not None:
            self.check_latent(z_T, "z_T")
            if len(z_T) != n:
                raise ValueError(f"z_T holds {len(z_T)} latents but n={n}")
        return (n, *self.latent_shape), y

    @torch.no_grad()
    def sample(self, n: int, y=None, guidance: float = 1.0, steps: int | None = 50, method: str = "ddim",
               eta: float = 0.0, generator: torch.Generator | None = None, z_T: torch.Tensor | None = None,
               progress: bool = False, decode: bool = True) -> torch.Tensor:
        """The LDM sampler (Rombach et al. 2022, §3.3), in four steps:

        1. z_T ~ N(0, I) of the latent's shape (from ``generator``, unless ``z_T`` is given);
        2. the lesson-04/05 sampler (``method``, ``steps``, ``eta``) on *scaled* latents, with
           class labels ``y`` (int or (n,)), classifier-free guidance w = ``guidance`` and x̂_0
           clipped to ±``self.clip_x0`` (the training latents' range; None: no clipping);
        3. undo the scale: z_0 / s;
        4. decode: 𝒟(z_0 / s), mapped from [−1, 1] to [0, 1].
        Returns images (n, 1, 28, 28) in [0, 1]; ``decode=False`` → the scaled latents z_0."""
        shape, y = self._sampler_args(n, y, z_T)
        self.unet.eval()
        # 1.-2. z_T and the reverse process on scaled latents (sampling.sample draws z_T from generator)
        z = diffusion_sample(self.unet, self.schedule, shape, method=method, steps=steps, eta=eta, y=y,
                             guidance=guidance, generator=generator, x_T=z_T, progress=progress,
                             clip_x0=self.clip_x0)
        # 3.-4. z / s, then the decoder
        return self.decode(z) if decode else z

    def sampler(self, steps: int | None = 50, method: str = "ddim", guidance: float = 1.0, eta: float = 0.0,
                clip_count: dict | None = None):
        """``sample`` as a ``sample_fn(k, y, generator)`` for ``sampling.sample_images`` (the course's one
        batched, seeded, timed image sampler): k images in [0, 1] for the labels y (or None).

        ``clip_count``: a dict that each call adds to — "at_bound" (entries of the sampled latents z_0 at
        the clip bound, |z_0| = ``clip_x0``, i.e. where the sampler wanted to go further out than any
        training latent), "total" (entries) and "sum_sq" (Σ z_0², for their RMS). The images are the
        same as without it: the latents are sampled, counted, then decoded."""
        device = next(self.unet.parameters()).device

        def sample_fn(k, y, generator):
            z = self.sample(k, y=None if y is None else y.to(device), guidance=guidance, steps=steps,
                            method=method, eta=eta, generator=generator, decode=False)
            if clip_count is not None:
                at_bound = 0 if self.clip_x0 is None else int((z.abs() >= self.clip_x0).sum())
                clip_count["at_bound"] = clip_count.get("at_bound", 0) + at_bound
                clip_count["total"] = clip_count.get("total", 0) + z.numel()
                clip_count["sum_sq"] = clip_count.get("sum_sq", 0.0) + float(z.double().pow(2).sum())
            return self.decode(z)
        return sample_fn

    def sample_progressive(self, n: int, y=None, guidance: float = 1.0, steps: int | None = 50,
                           method: str = "ddim", eta: float = 0.0, generator: torch.Generator | None = None,
                           z_T: torch.Tensor | None = None, progress: bool = False):
        """``sample``'s trajectory (x̂_0 clipped as in ``sample``): yields ``SamplerStep(t, z_t, ẑ_0)`` per step, scaled latents
        (decode them with ``decode``); the last item is (−1, z_0, z_0)."""
        shape, y = self._sampler_args(n, y, z_T)
        self.unet.eval()
        yield from sample_progressive(self.unet, self.schedule, shape, method=method, steps=steps, eta=eta, y=y,
                                      guidance=guidance, generator=generator, x_T=z_T, progress=progress,
                                      clip_x0=self.clip_x0)


# ----------------------------------------------------------------------------- measurement helpers
@torch.no_grad()
def reconstruction_psnr(ae: FirstStage, x: torch.Tensor, batch_size: int | None = None) -> float:
    """Mean PSNR (dB, images in [0, 1]) of 𝒟(ℰ(x)) over ``x`` (in [−1, 1])."""
    from .metrics import psnr
    ae.eval()
    vals = eval_batches(lambda xb: psnr((xb + 1) / 2, ((ae.decode(ae.encode(xb)) + 1) / 2).clamp(0, 1)), x, batch_size)
    return torch.cat(vals).mean().item()


__all__ = ["FirstStage", "first_stage_loss", "check_factor", "pad_images", "crop_images",
           "encode_dataset", "posterior_dataset", "posterior_sample", "latent_scale_factor", "latent_log_snr", "LatentDiffusion",
           "reconstruction_psnr", "IMAGE_SIZE", "PADDED_SIZE"]
