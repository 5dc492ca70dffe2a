"""Autoencoders of the course: the plain AE (lesson 01) and the VAE (lesson 02), with their losses.

Notation of the seed paper: encoder ℰ, decoder 𝒟, z = ℰ(x), x̂ = 𝒟(z) (eq. 5–7); the VAE's
ELBO (eq. 10–15) with the closed-form Gaussian KL (eq. 18–19). The convolutional stacks of lessons
03 and 06 live in ``nn.py``, the measurement helpers in ``analysis.py``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .losses import bernoulli_nll, gaussian_kl, gaussian_nll, log_normal, negative_elbo
from .nn import check_image_batch, mlp

IMAGE_SHAPE = (1, 28, 28)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The reparametrisation trick (slides; Kingma & Welling 2014): z = μ + σ ⊙ ε, ε ~ N(0, I),
    σ = exp(½ log σ²). The sample is a differentiable function of (μ, σ); the randomness is all in ε.
    Every Gaussian posterior of the course (VAE, the KL first stage of lesson 06) samples through here.
    ``generator`` (a CPU generator) fixes ε, so a cell that draws ε the same way gets the same z."""
    # 1. all the randomness: ε ~ N(0, I), independent of μ and σ
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device) if generator is not None \
        else torch.randn_like(mu)
    # 2. a deterministic, differentiable map of (μ, log σ², ε)
    return mu + (0.5 * logvar).exp() * eps


def _check_codes(z: torch.Tensor, latent_dim: int) -> None:
    if z.dim() != 2 or z.shape[1] != latent_dim:
        raise ValueError(f"z must have shape (batch, {latent_dim}), got {tuple(z.shape)}")


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
        return self.encoder(x.flatten(1))                       # z = ℰ(x) (eq. 5–7)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        _check_codes(z, self.latent_dim)
        return self._decode(z)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).view(-1, *IMAGE_SHAPE)   # x̂ = 𝒟(z), pixels in [0, 1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self._decode(z), z


def ae_loss(model: Autoencoder, x: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared error summed over pixels: ‖x − 𝒟(ℰ(x))‖² (eq. 5–7)."""
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
        if sigma <= 0:
            raise ValueError(f"sigma (the Gaussian decoder's noise level) must be > 0, got {sigma}")
        self.config = {"latent_dim": latent_dim, "hidden": hidden, "likelihood": likelihood, "sigma": sigma}
        self.latent_dim, self.likelihood, self.sigma = latent_dim, likelihood, sigma
        self.encoder = mlp([784, hidden, hidden], last_act=True)
        self.to_stats = nn.Linear(hidden, 2 * latent_dim)       # eq. 12: μ, log σ² = ℰ(x)
        self.decoder = mlp([latent_dim, hidden, hidden, 784])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """μ and log σ² of q_φ(z|x) (eq. 12), each (B, d)."""
        check_image_batch(x, 1, IMAGE_SHAPE[1:], "VAE input")
        mu, logvar = self.to_stats(self.encoder(x.flatten(1))).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output: Bernoulli logits, or the Gaussian mean (B, 1, 28, 28)."""
        _check_codes(z, self.latent_dim)
        return self._decode_logits(z)

    def _decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z).view(-1, *IMAGE_SHAPE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image in [0, 1]."""
        out = self.decode_logits(z)
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out.clamp(0, 1)

    def recon_nll(self, x: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """−log p_θ(x|z) per image, in nats: BCE summed over pixels, or eq. 14 for the Gaussian."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(x, decoder_out)
        return gaussian_nll(x, decoder_out, self.sigma)

    def forward(self, x: torch.Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> dict:
        """One-sample estimate of the negative ELBO per image, in nats (seed paper eq. 11, 15):

            −ELBO(x) = E_{q_φ(z|x)}[−log p_θ(x|z)] + KL(q_φ(z|x) ‖ p(z)) ≥ −log p(x).

        ``loss`` is the batch mean of recon + β·KL (β = 1: the true bound; otherwise the β-VAE of
        Higgins et al. 2017); ``neg_elbo`` always has β = 1. ``generator`` fixes the sample ε."""
        if beta < 0:
            raise ValueError(f"beta (the KL weight) must be ≥ 0, got {beta}")
        # 1. the encoder gives q_φ(z|x) = N(μ, diag σ²) (eq. 12)
        mu, logvar = self.encode(x)
        # 2. one sample z ~ q_φ(z|x), reparametrised: z = μ + σ ⊙ ε, so ∇_φ passes through z
        z = reparameterize(mu, logvar, generator)
        # 3. reconstruction term −log p_θ(x|z) at that sample: the one-sample estimate of
        #    E_q[−log p_θ(x|z)] (eq. 16–17); Gaussian decoder ⇒ scaled MSE (eq. 13–14), Bernoulli ⇒ BCE
        recon = self.recon_nll(x, self._decode_logits(z))
        # 4. KL(q_φ(z|x) ‖ N(0, I)) in closed form (eq. 18–19): no sampling noise in this term
        kl = gaussian_kl(mu, logvar)
        # 5. −ELBO = recon + KL (eq. 11, 15); the training loss weights the KL by β
        return {"loss": negative_elbo(recon, kl, beta).mean(), "neg_elbo": negative_elbo(recon, kl),
                "recon": recon, "kl": kl, "mu": mu, "logvar": logvar, "z": z}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode z ~ p(z) = N(0, I)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        return self.decode(z)

    @torch.no_grad()
    def log_likelihood_iw(self, x: torch.Tensor, k: int = 100,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance-weighted bound L_k on log p(x) (Burda et al. 2016), per image, in nats:

            L_k = log (1/k) Σ_i p_θ(x|z_i) p(z_i) / q_φ(z_i|x),   z_i ~ q_φ(z|x).

        L_1 is the ELBO (with a sampled KL); L_k grows with k and tends to log p(x)."""
        if k < 1:
            raise ValueError(f"k (the number of importance samples) must be ≥ 1, got {k}")
        # 1. q_φ(z|x) and k reparametrised samples from it: z (k, B, d)
        mu, logvar = self.encode(x)
        z = reparameterize(mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape), generator)
        # 2. log weights log w_i = log p_θ(x|z_i) + log p(z_i) − log q_φ(z_i|x)
        logits = self._decode_logits(z.flatten(0, 1))
        log_px_z = -self.recon_nll(x.repeat(k, 1, 1, 1), logits).view(k, -1)
        log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = log_normal(z, mu, logvar)
        # 3. log of the mean weight, through logsumexp (the weights themselves are ≈ e^-100)
        return torch.logsumexp(log_px_z + log_pz - log_qz, dim=0) - math.log(k)


def vae_loss(beta: float = 1.0, binarize: bool = True):
    """A loss_fn for fit(): −ELBO (β-weighted) on dynamically binarised batches."""
    def loss_fn(model: VAE, x: torch.Tensor):
        xb = torch.bernoulli(x) if binarize else x
        out = model(xb, beta=beta)
        return out["loss"], {"recon": out["recon"].mean(), "kl": out["kl"].mean()}
    return loss_fn


# ----------------------------------------------------------------------------- batched helpers
@torch.no_grad()
def encode_all(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Latent codes of many images: z = ℰ(x) for an Autoencoder, the posterior mean μ for a VAE."""
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        z = model.encode(x[i:i + batch_size])
        out.append(z[0] if isinstance(z, tuple) else z)
    return torch.cat(out)


@torch.no_grad()
def decode_all(model: nn.Module, z: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """𝒟(z) in [0, 1] for many codes."""
    model.eval()
    return torch.cat([model.decode(z[i:i + batch_size]) for i in range(0, len(z), batch_size)])


@torch.no_grad()
def reconstruction_error(model: nn.Module, x: torch.Tensor, batch_size: int = 2000) -> float:
    """Mean over images of ‖x − 𝒟(ℰ(x))‖², summed over the 784 pixels (the AE loss, eq. 5–7).

    For a VAE the code is the posterior mean μ (no sampling)."""
    z = encode_all(model, x, batch_size)
    x_hat = decode_all(model, z, batch_size)
    return float((x_hat - x).pow(2).flatten(1).sum(1).mean())
