"""Autoencoders of the course: the plain AE (lesson 01), the VAE (lesson 02), and convolutional
encoders/decoders with a spatial latent (lessons 03 and 06).

Notation of the seed paper: encoder ℰ, decoder 𝒟, z = ℰ(x), x̂ = 𝒟(z) (eq. 5–7).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .losses import bernoulli_nll, gaussian_kl, gaussian_nll, log_normal
from .nn import Downsample, ResBlock, Upsample, check_image_batch, group_norm, mlp

IMAGE_SHAPE = (1, 28, 28)


# ----------------------------------------------------------------------------- lesson 01
class Autoencoder(nn.Module):
    """MLP autoencoder 784 → hidden → hidden/2 → d → … → 784 (Hinton & Salakhutdinov 2006).

    ``encode(x)`` → z (B, d); ``decode(z)`` → x̂ in [0, 1], shape (B, 1, 28, 28).
    """

    def __init__(self, latent_dim: int = 2, hidden: int = 512):
        super().__init__()
        self.config = {"latent_dim": latent_dim, "hidden": hidden}
        self.latent_dim = latent_dim
        self.encoder = mlp([784, hidden, hidden // 2, latent_dim])
        self.decoder = mlp([latent_dim, hidden // 2, hidden, 784])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, 1, IMAGE_SHAPE[1:], "Autoencoder input")
        return self.encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (batch, {self.latent_dim}), got {tuple(z.shape)}")
        return torch.sigmoid(self.decoder(z)).view(-1, *IMAGE_SHAPE)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z


def ae_loss(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Mean squared reconstruction error per image, summed over pixels: ‖x − 𝒟(ℰ(x))‖²."""
    x_hat, _ = model(x)
    return (x_hat - x).pow(2).flatten(1).sum(1).mean()


# ----------------------------------------------------------------------------- lesson 02
class VAE(nn.Module):
    """MLP VAE (Kingma & Welling 2014): q_φ(z|x) = N(μ, diag σ²), p(z) = N(0, I), and a decoder
    p_θ(x|z) that is Bernoulli (pixels ∈ {0, 1}) or Gaussian with fixed σ (eq. 13–14).
    """

    def __init__(self, latent_dim: int = 32, hidden: int = 512, likelihood: str = "bernoulli",
                 sigma: float = 0.1):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.config = {"latent_dim": latent_dim, "hidden": hidden, "likelihood": likelihood, "sigma": sigma}
        self.latent_dim, self.likelihood, self.sigma = latent_dim, likelihood, sigma
        self.encoder = mlp([784, hidden, hidden], last_act=True)
        self.to_stats = nn.Linear(hidden, 2 * latent_dim)       # eq. 12: μ, log σ² = ℰ(x)
        self.decoder = mlp([latent_dim, hidden, hidden, 784])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_image_batch(x, 1, IMAGE_SHAPE[1:], "VAE input")
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = μ + σ ⊙ ε, ε ~ N(0, I): the sample is a differentiable function of (μ, σ)."""
        return mu + (0.5 * logvar).exp() * torch.randn_like(mu)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (batch, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z).view(-1, *IMAGE_SHAPE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1]."""
        out = self.decode_logits(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.clamp(0, 1)

    def recon_nll(self, x: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "bernoulli":
            return bernoulli_nll(x, decoder_out)
        return gaussian_nll(x, decoder_out, self.sigma)

    def forward(self, x: torch.Tensor, beta: float = 1.0) -> dict:
        """One-sample estimate of −ELBO = E_q[−log p(x|z)] + β·KL (eq. 15), per image, in nats."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        recon = self.recon_nll(x, self.decode_logits(z))
        kl = gaussian_kl(mu, logvar)
        return {"loss": (recon + beta * kl).mean(), "neg_elbo": recon + kl, "recon": recon, "kl": kl,
                "mu": mu, "logvar": logvar, "z": z}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode z ~ p(z) = N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z)

    @torch.no_grad()
    def log_likelihood_iw(self, x: torch.Tensor, k: int = 100) -> torch.Tensor:
        """Importance-weighted bound on log p(x) (Burda et al. 2016), per image, in nats:
        log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x). k = 1 gives the ELBO; k → ∞, log p(x)."""
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * torch.randn(k, *mu.shape, device=mu.device)   # (k, B, d)
        logits = self.decode_logits(z.flatten(0, 1))
        log_px_z = -self.recon_nll(x.repeat(k, 1, 1, 1), logits).view(k, -1)
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = log_normal(z, mu, logvar)
        return torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(k)


def vae_loss(beta: float = 1.0, binarize: bool = True):
    """A loss_fn for fit(): −ELBO (β-weighted) on dynamically binarised batches."""
    def loss_fn(model: VAE, x: torch.Tensor):
        xb = torch.bernoulli(x) if binarize else x
        out = model(xb, beta=beta)
        return out["loss"], {"recon": out["recon"].mean(), "kl": out["kl"].mean()}
    return loss_fn


# ----------------------------------------------------------------------------- spatial latents
def _down_sizes(size: int, n: int) -> list[int]:
    sizes = [size]
    for _ in range(n):
        sizes.append((sizes[-1] + 1) // 2)          # stride-2 conv with padding 1 rounds up
    return sizes


class ConvEncoder(nn.Module):
    """Conv encoder with a spatial latent: (B, in_ch, H, W) → (B, out_ch, H/f, W/f), f = 2^(levels−1).

    ``ch_mult`` gives the channel multiplier per resolution level; one ResBlock per level.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 4, ch: int = 32, ch_mult: tuple = (1, 2, 2),
                 num_res: int = 1):
        super().__init__()
        self.in_ch = in_ch
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        blocks, c = [], ch
        for i, m in enumerate(ch_mult):
            for _ in range(num_res):
                blocks.append(ResBlock(c, ch * m))
                c = ch * m
            if i < len(ch_mult) - 1:
                blocks.append(Downsample(c))
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResBlock(c, c)
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_ch, name="ConvEncoder input")
        return self.conv_out(F.silu(self.norm_out(self.mid(self.blocks(self.conv_in(x))))))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: (B, in_ch, h, w) → (B, out_ch, out_size, out_size)."""

    def __init__(self, in_ch: int = 4, out_ch: int = 1, ch: int = 32, ch_mult: tuple = (1, 2, 2),
                 num_res: int = 1, out_size: int = 28):
        super().__init__()
        self.in_ch = in_ch
        self.sizes = _down_sizes(out_size, len(ch_mult) - 1)[::-1]   # e.g. [7, 14, 28]
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(in_ch, c, 3, padding=1)
        self.mid = ResBlock(c, c)
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, m in enumerate(reversed(ch_mult)):
            level = []
            for _ in range(num_res):
                level.append(ResBlock(c, ch * m))
                c = ch * m
            self.levels.append(nn.Sequential(*level))
            self.ups.append(Upsample(c) if i < len(ch_mult) - 1 else nn.Identity())
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_image_batch(z, self.in_ch, (self.sizes[0], self.sizes[0]), "ConvDecoder input")
        h = self.mid(self.conv_in(z))
        for i, (level, up) in enumerate(zip(self.levels, self.ups)):
            h = level(h)
            if i < len(self.levels) - 1:
                h = up(h, size=(self.sizes[i + 1], self.sizes[i + 1]))
        return self.conv_out(F.silu(self.norm_out(h)))
