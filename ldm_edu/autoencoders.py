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
def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The reparametrisation trick (slides; Kingma & Welling 2014): z = μ + σ ⊙ ε, ε ~ N(0, I),
    σ = exp(½ log σ²). The sample is a differentiable function of (μ, σ); the randomness is all in ε.
    Every Gaussian posterior of the course (VAE, the KL first stage of lesson 06) samples through here."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device) if generator is not None \
        else torch.randn_like(mu)
    return mu + (0.5 * logvar).exp() * eps


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
        z = reparameterize(mu, logvar)
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


# ----------------------------------------------------------------------------- lesson helpers
# Small, testable functions the lessons 01–02 call; each does one measurement.

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


def fit_pca(x_train: torch.Tensor, k: int, seed: int = 0, max_fit: int | None = 10000):
    """A scikit-learn PCA with k components fitted on (at most ``max_fit`` of) ``x_train``.

    PCA is the best *linear* autoencoder (Baldi & Hornik 1989): code z = Vₖᵀ(x − m), decoder
    x̂ = m + Vₖ z. Its components are nested, so one fit with the largest k serves every smaller k.
    10 000 images give the same top components as 60 000 to within plotting accuracy, 6× faster."""
    from sklearn.decomposition import PCA

    a = x_train[:max_fit] if max_fit else x_train
    return PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(a.flatten(1).cpu().numpy())


def pca_reconstruction_errors(x_train: torch.Tensor | None, x_test: torch.Tensor, dims, seed: int = 0,
                              pca=None, max_fit: int | None = 10000) -> dict:
    """Mean ‖x − x̂‖² on ``x_test`` of PCA with k components, for each k in ``dims``: {k: error}
    (same units as ``reconstruction_error``). Pass a ``fit_pca`` result as ``pca`` to reuse it."""
    pca = pca if pca is not None else fit_pca(x_train, max(dims), seed, max_fit)
    if pca.n_components_ < max(dims):
        raise ValueError(f"the PCA has {pca.n_components_} components; dims go up to {max(dims)}")
    b = x_test.flatten(1).cpu().numpy()
    centred = b - pca.mean_
    errors = {}
    for k in dims:
        w = pca.components_[:k]                       # (k, 784), orthonormal rows
        b_hat = centred @ w.T @ w + pca.mean_
        errors[int(k)] = float(((b - b_hat) ** 2).sum(1).mean())
    return errors


def pca_codes(pca, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """The first k PCA coordinates of ``x`` (``pca`` from ``fit_pca``), for probes and scatters."""
    z = torch.from_numpy(pca.transform(x.flatten(1).cpu().numpy())).float()
    return z[:, :k] if k else z


def hole_fraction(z_codes: torch.Tensor, z_samples: torch.Tensor, k: int = 5, q: float = 0.95) -> float:
    """How often a random code falls into a *hole* of the latent space, where the decoder never
    saw data: the fraction of ``z_samples`` whose distance to their k-th nearest real code exceeds
    the q-quantile of the same distance for held-out real codes. Real codes score ≈ 1 − q by
    construction; a sampler matched to the codes should score about the same."""
    zc, zs = z_codes.detach().float().cpu(), z_samples.detach().float().cpu()
    if zc.dim() != 2 or zs.dim() != 2 or zc.shape[1] != zs.shape[1]:
        raise ValueError(f"codes and samples must be (N, d) with the same d, got {tuple(zc.shape)}, {tuple(zs.shape)}")
    ref, held = zc[0::2], zc[1::2]
    kth = lambda a: torch.cdist(a, ref).topk(k, dim=1, largest=False).values[:, -1]
    threshold = kth(held).quantile(q)
    return float((kth(zs) > threshold).float().mean())


def linear_probe(z_train, y_train, z_test, y_test, max_iter: int = 500) -> float:
    """Test accuracy of a logistic regression on (standardised) codes: how linearly readable
    the digit is from z. Chance is 0.1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    as_np = lambda t: t.detach().cpu().numpy() if torch.is_tensor(t) else t
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    clf.fit(as_np(z_train), as_np(y_train))
    return float(clf.score(as_np(z_test), as_np(y_test)))


def interpolate(a: torch.Tensor, b: torch.Tensor, n: int = 8) -> torch.Tensor:
    """n points on the straight line from a to b (both ends included): (1 − t)·a + t·b."""
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")
    t = torch.linspace(0, 1, n, device=a.device).view(-1, *([1] * a.dim()))
    return (1 - t) * a + t * b


def latent_grid(n: int = 15, extent=None, quantile: float = 0.95) -> torch.Tensor:
    """An n×n grid of 2-D codes, row-major from top-left (top row = largest z₂), shape (n·n, 2).

    ``extent``: a number e → uniform on [−e, e]²; a pair of ranges ((lo₁, hi₁), (lo₂, hi₂)) → uniform
    on that box (e.g. the bounding box of an autoencoder's codes). ``None`` (Kingma & Welling 2014,
    fig. 4): uniform in probability, z = Φ⁻¹(u) for u evenly spaced in [1−q, q], so each cell holds
    equal prior mass of N(0, I)."""
    if extent is None:
        t = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(1 - quantile, quantile, n))
        tx = ty = t
    elif isinstance(extent, (int, float)):
        tx = ty = torch.linspace(-float(extent), float(extent), n)
    else:
        (a, b), (c, d) = extent
        tx, ty = torch.linspace(float(a), float(b), n), torch.linspace(float(c), float(d), n)
    zy, zx = torch.meshgrid(ty.flip(0), tx, indexing="ij")
    return torch.stack([zx.reshape(-1), zy.reshape(-1)], dim=1)


def latent_bounds(z: torch.Tensor, q: float = 0.005, pad: float = 0.1) -> tuple:
    """((lo₁, hi₁), (lo₂, hi₂)): the box holding all but a fraction 2q of the 2-D codes, padded."""
    z = z.detach().float().cpu()
    lo, hi = z.quantile(q, dim=0), z.quantile(1 - q, dim=0)
    span = hi - lo
    lo, hi = lo - pad * span, hi + pad * span
    return ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))


# ----------------------------------------------------------------------------- VAE evaluation
@torch.no_grad()
def evaluate_vae(model: VAE, x: torch.Tensor, batch_size: int = 1000, seed: int | None = 0) -> dict:
    """Single-sample −ELBO (β = 1) on ``x`` in nats per image, with its recon and KL parts.

    ``seed`` fixes the posterior samples so two calls agree. Binarise ``x`` beforehand (with a
    fixed generator) to compare with the literature's dynamically binarised MNIST numbers."""
    model.eval()
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    parts = {"neg_elbo": [], "recon": [], "kl": []}
    try:
        for i in range(0, len(x), batch_size):
            out = model(x[i:i + batch_size])
            for k in parts:
                parts[k].append(out[k])
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)
    return {k: float(torch.cat(v).mean()) for k, v in parts.items()}


@torch.no_grad()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int = 100, batch_size: int | None = None,
                      seed: int | None = 0) -> torch.Tensor:
    """``VAE.log_likelihood_iw`` over many images in batches; returns log p(x) estimates (N,)."""
    model.eval()
    batch_size = batch_size or max(1, 20000 // k)
    state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        return torch.cat([model.log_likelihood_iw(x[i:i + batch_size], k) for i in range(0, len(x), batch_size)])
    finally:
        if seed is not None:
            torch.random.set_rng_state(state)


@torch.no_grad()
def kl_per_dim(model: VAE, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Average KL(q(z_j|x) ‖ N(0, 1)) of each latent dimension j over ``x`` (eq. 19 per term).

    A dimension with KL ≈ 0 carries no information about x: it has *collapsed* onto the prior."""
    model.eval()
    total = torch.zeros(model.latent_dim, device=x.device)
    for i in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[i:i + batch_size])
        total += (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum(0)
    return total / len(x)


# ----------------------------------------------------------------------------- gradient estimators
def gradient_estimates(f, mu: torch.Tensor, logvar: torch.Tensor, n: int, estimator: str = "reparam",
                       baseline: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` single-sample estimates of ∇_μ E_{z~N(μ, σ²)}[f(z)], shape (n, d).

    - "reparam": z = μ + σ ⊙ ε, gradient of f(z) flows through z (Kingma & Welling 2014; slides).
    - "score" (REINFORCE, Williams 1992): f(z) ∇_μ log q(z), with z sampled and *not*
      differentiated; ``baseline=True`` subtracts the mean of f over the n samples (a control
      variate; it keeps the estimator unbiased up to O(1/n) and lowers its variance).
    ``f`` maps (n, d) codes → (n,) values; ``mu``, ``logvar`` have shape (d,).
    Both estimators are unbiased: their means agree; their variances do not.
    """
    if estimator not in ("reparam", "score"):
        raise ValueError(f"estimator must be 'reparam' or 'score', got {estimator!r}")
    if mu.dim() != 1 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must be 1-D of the same length, got {tuple(mu.shape)}, {tuple(logvar.shape)}")
    eps = torch.randn(n, mu.numel(), generator=generator).to(mu.device)
    mu_n = mu.detach().expand(n, -1).clone().requires_grad_(True)    # one copy of μ per sample
    sigma = (0.5 * logvar.detach()).exp()
    with torch.enable_grad():
        if estimator == "reparam":
            z = mu_n + sigma * eps
            f(z).sum().backward()
        else:
            z = (mu.detach() + sigma * eps)                        # a sample: no path back to μ
            with torch.no_grad():
                fz = f(z)
                if baseline:
                    fz = fz - fz.mean()
            log_q = torch.distributions.Normal(mu_n, sigma).log_prob(z).sum(1)
            (fz * log_q).sum().backward()                          # ∇_μ of the surrogate f(z)·log q(z)
    return mu_n.grad.detach()


# ----------------------------------------------------------------------------- lesson 03: VQ-VAE
def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """‖z_i − e_k‖² for all rows z_i (N, D) and codes e_k (K, D) → (N, K).

    Expanded as ‖z‖² − 2 z·e + ‖e‖² (one matrix product), so no (N, K, D) temporary is built.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"z must be (N, D) and codebook (K, D) with the same D, got "
                         f"{tuple(z.shape)} and {tuple(codebook.shape)}")
    z2 = z.pow(2).sum(1, keepdim=True)                          # (N, 1)
    e2 = codebook.pow(2).sum(1)                                 # (K,)
    return torch.addmm(e2[None], z, codebook.t(), alpha=-2.0).add_(z2).clamp_min_(0.0)


def codebook_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code-usage distribution p_k = n_k / Σ n: K when all K codes are used
    equally often, 1 when a single code is used. The "effective number of codes"."""
    p = counts.float() / counts.float().sum().clamp_min(1e-12)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


class VectorQuantizer(nn.Module):
    """The VQ bottleneck of VQ-VAE (van den Oord et al. 2017), seed paper eq. 20–25.

    Each D-vector of the encoder output z_e (B, D, H, W) is replaced by its nearest code
    e_k, k = argmin_j ‖z_e − e_j‖² (eq. 20; the posterior q(z = k | x) is one-hot, eq. 21).
    The argmin has no gradient, so the decoder's gradient is copied straight through to the
    encoder: z_q = z_e + sg[e_k − z_e] (the value is e_k, the gradient is that of z_e).

    Two ways to learn the codebook:
    - ``ema=False``: the codebook loss ‖sg[z_e] − e‖² (eq. 23) moves the codes;
    - ``ema=True``: codes are running means of the vectors assigned to them (an online k-means
      step, van den Oord 2017 app. A.1, Razavi 2019): N_k ← γN_k + (1−γ)n_k,
      m_k ← γm_k + (1−γ)Σ_{i: k_i = k} z_i, e_k = m_k / Ñ_k with Laplace-smoothed counts Ñ.
    Either way the commitment loss β‖z_e − sg[e]‖² (eq. 24) keeps the encoder near its codes;
    ``loss`` = codebook term + β · commitment term (eq. 25 without the reconstruction term),
    both as means over all elements (like F.mse_loss).

    ``restart_dead=True`` re-seeds codes whose running usage (assignments per batch, averaged
    with ``usage_decay``) falls below ``dead_threshold`` with random encoder outputs of the
    current batch (Dhariwal et al. 2020, Jukebox). ``init_kmeans(z)`` sets the codes by k-means.
    """

    def __init__(self, num_codes: int = 512, code_dim: int = 16, beta: float = 0.25, ema: bool = False,
                 decay: float = 0.99, eps: float = 1e-5, restart_dead: bool = False,
                 dead_threshold: float = 1.0, usage_decay: float = 0.99):
        super().__init__()
        if num_codes < 1 or code_dim < 1:
            raise ValueError(f"num_codes and code_dim must be ≥ 1, got {num_codes}, {code_dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.config = {"num_codes": num_codes, "code_dim": code_dim, "beta": beta, "ema": ema,
                       "decay": decay, "eps": eps, "restart_dead": restart_dead,
                       "dead_threshold": dead_threshold, "usage_decay": usage_decay}
        self.num_codes, self.code_dim, self.beta = num_codes, code_dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.restart_dead, self.dead_threshold, self.usage_decay = restart_dead, dead_threshold, usage_decay
        # nn.Embedding's default init would be N(0, 1); the VQ-VAE papers use U(−1/K, 1/K)
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes),
                                     requires_grad=not ema)
        self.register_buffer("ema_count", torch.ones(num_codes))                 # N_k
        self.register_buffer("ema_sum", self.codebook.detach().clone())          # m_k (so m_k / N_k = e_k)
        self.register_buffer("usage", torch.zeros(num_codes))                    # running assignments / batch
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))      # codes re-seeded so far

    # --- the three steps of eq. 20, 23-25 -------------------------------------------------
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices of the nearest codes for rows z (N, D) (eq. 20)."""
        return squared_distances(z, self.codebook.detach().float()).argmin(1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Token map (B, H, W) of code indices → quantised vectors (B, D, H, W)."""
        if indices.dtype not in (torch.int64, torch.int32) or indices.dim() != 3:
            raise ValueError(f"indices must be an integer tensor (batch, H, W), got "
                             f"{indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_codes):
            raise ValueError(f"indices must lie in [0, {self.num_codes - 1}]")
        return self.codebook[indices.long()].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> dict:
        """Quantise z_e (B, D, H, W). Returns a dict: ``z_q`` (straight-through, B×D×H×W),
        ``indices`` (B, H, W), ``loss``, ``codebook_loss``, ``commitment_loss``, ``counts`` (K,),
        ``perplexity``. In training mode the EMA update and dead-code restarts happen here."""
        check_image_batch(z_e, self.code_dim, name="VectorQuantizer input (the encoder output z_e)")
        with torch.autocast(z_e.device.type, enabled=False):   # argmin in bf16 would pick wrong codes
            z_e = z_e.float()
            b, d, h, w = z_e.shape
            flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)             # (N, D), N = B·H·W
            idx = self.nearest(flat.detach())
            counts = torch.bincount(idx, minlength=self.num_codes).float()
            if self.training:
                self._update(flat.detach(), idx, counts)
                if self.ema or self.restart_dead:                 # codes moved: look up again
                    idx = self.nearest(flat.detach())
                    counts = torch.bincount(idx, minlength=self.num_codes).float()
            # F.embedding: its CPU backward sums rows in a fixed order (codebook[idx] did not, so runs differed)
            e = F.embedding(idx, self.codebook).view(b, h, w, d).permute(0, 3, 1, 2)  # e_k, differentiable w.r.t. the codebook
            codebook_loss = F.mse_loss(e, z_e.detach())              # eq. 23: ‖sg[z_e] − e‖²
            commitment_loss = F.mse_loss(z_e, e.detach())            # eq. 24: ‖z_e − sg[e]‖²
            loss = self.beta * commitment_loss + (0.0 if self.ema else codebook_loss)
            z_q = z_e + (e - z_e).detach()                           # straight-through estimator
        return {"z_q": z_q, "indices": idx.view(b, h, w), "loss": loss, "codebook_loss": codebook_loss,
                "commitment_loss": commitment_loss, "counts": counts,
                "perplexity": codebook_perplexity(counts)}

    # --- codebook maintenance -------------------------------------------------------------
    @torch.no_grad()
    def ema_step(self, z: torch.Tensor, idx: torch.Tensor) -> None:
        """One EMA (online k-means) update of the codebook from rows z (N, D) assigned to idx.

        decay = 0 is exactly one k-means (Lloyd) step for the used codes; codes with a zero
        count keep their position."""
        onehot_sum = torch.zeros_like(self.ema_sum).index_add_(0, idx, z)            # Σ_{i: k_i = k} z_i
        counts = torch.bincount(idx, minlength=self.num_codes).to(z.dtype)
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot_sum, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n   # Laplace smoothing
        new = self.ema_sum / smoothed[:, None]
        self.codebook.data.copy_(torch.where(self.ema_count[:, None] > 0, new, self.codebook.data))

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor) -> int:
        """Re-seed codes whose running usage is below ``dead_threshold`` with random rows of z.
        Returns how many codes were restarted."""
        dead = (self.usage < self.dead_threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pick = torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)
        self.codebook.data[dead] = z[pick]
        self.ema_sum[dead] = z[pick]
        self.ema_count[dead] = 1.0
        # a grace period: a restarted code counts as average until it proves otherwise
        self.usage[dead] = max(self.usage.mean().item(), 2 * self.dead_threshold)
        self.restarts += dead.numel()
        return int(dead.numel())

    @torch.no_grad()
    def _update(self, z: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        if self.ema:
            self.ema_step(z, idx)
        if self.restart_dead:
            self.restart_dead_codes(z)

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, iters: int = 50, seed: int = 0) -> None:
        """Set the codebook to k-means centroids of encoder outputs z (N, D) or (B, D, H, W)
        (scikit-learn; N must be ≥ K). Resets the EMA statistics to match."""
        from sklearn.cluster import KMeans

        if z.dim() == 4:
            z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        if z.dim() != 2 or z.shape[1] != self.code_dim or z.shape[0] < self.num_codes:
            raise ValueError(f"k-means init needs at least {self.num_codes} vectors of size "
                             f"{self.code_dim}, got {tuple(z.shape)}")
        km = KMeans(self.num_codes, n_init=1, max_iter=iters, random_state=seed)
        km.fit(z.detach().float().cpu().numpy())
        centers = torch.as_tensor(km.cluster_centers_, dtype=self.codebook.dtype, device=self.codebook.device)
        self.codebook.data.copy_(centers)
        self.ema_sum.copy_(centers)
        self.ema_count.fill_(1.0)


class VQVAE(nn.Module):
    """VQ-VAE with a spatial token map: x (B, 1, 28, 28) → z_e (B, D, 7, 7) → 7×7 code indices
    → z_q → x̂ (B, 1, 28, 28). Loss (eq. 25): ‖x − 𝒟(z_q)‖² (eq. 22, mean per pixel) + VQ terms.

    ``ch_mult`` of length 3 gives f = 4 (28 → 7); the decoder output is unconstrained (clamp to
    [0, 1] for display)."""

    def __init__(self, num_codes: int = 512, code_dim: int = 16, ch: int = 32, ch_mult: tuple = (1, 2, 2),
                 num_res: int = 1, beta: float = 0.25, ema: bool = True, decay: float = 0.99,
                 eps: float = 1e-5, restart_dead: bool = True, dead_threshold: float = 1.0):
        super().__init__()
        ch_mult = tuple(ch_mult)
        self.config = {"num_codes": num_codes, "code_dim": code_dim, "ch": ch, "ch_mult": ch_mult,
                       "num_res": num_res, "beta": beta, "ema": ema, "decay": decay, "eps": eps,
                       "restart_dead": restart_dead, "dead_threshold": dead_threshold}
        self.encoder = ConvEncoder(1, code_dim, ch, ch_mult, num_res)
        self.quantizer = VectorQuantizer(num_codes, code_dim, beta, ema, decay, eps, restart_dead, dead_threshold)
        self.decoder = ConvDecoder(code_dim, 1, ch, ch_mult, num_res, out_size=IMAGE_SHAPE[1])
        self.token_shape = tuple([self.decoder.sizes[0]] * 2)      # (7, 7) for ch_mult of length 3

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z_e = ℰ(x), (B, D, h, w)."""
        check_image_batch(x, 1, IMAGE_SHAPE[1:], "VQVAE input")
        return self.encoder(x)

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Images → token maps (B, h, w) of code indices (eq. 20)."""
        z = self.encode(x)
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self.quantizer.nearest(flat).view(z.shape[0], *z.shape[2:])

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_q)

    def decode_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        """Token maps (B, h, w) → images (B, 1, 28, 28), clamped to [0, 1]."""
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.token_shape:
            raise ValueError(f"token maps must have shape (batch, {self.token_shape[0]}, "
                             f"{self.token_shape[1]}), got {tuple(indices.shape)}")
        return self.decode(self.quantizer.lookup(indices)).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> dict:
        q = self.quantizer(self.encode(x))
        x_hat = self.decode(q["z_q"])
        recon = F.mse_loss(x_hat, x)                                   # eq. 22
        return {**q, "x_hat": x_hat, "recon": recon, "vq_loss": q["loss"], "loss": recon + q["loss"]}


def vqvae_loss(model: VQVAE, x: torch.Tensor):
    """A loss_fn for fit(): eq. 25 (reconstruction + codebook + β·commitment), with metrics."""
    out = model(x)
    return out["loss"], {"recon": out["recon"], "vq": out["vq_loss"], "perplexity": out["perplexity"],
                         "used": (out["counts"] > 0).sum()}


# ----------------------------------------------------------------------------- sweeps (precomputed for plots and sliders)
def train_ae_sweep(x_train: torch.Tensor, dims, steps: int, hidden: int = 512, batch_size: int = 128,
                   lr: float = 1e-3, seed: int = 0, progress: bool = True) -> dict:
    """Train one Autoencoder per latent size in ``dims`` (same data order, same steps).

    Returns {d: (model, history)}; with ``reconstruction_error`` this gives the AE curve of the
    AE-vs-PCA plot."""
    from .data import TensorBatches
    from .train import fit, seed_everything

    out = {}
    for d in dims:
        seed_everything(seed)
        model = Autoencoder(latent_dim=int(d), hidden=hidden).to(x_train.device)
        hist = fit(model, ae_loss, TensorBatches(x_train, batch_size=batch_size, seed=seed), steps, lr=lr,
                   cosine_decay=True, desc=f"AE d={d}", progress=progress, live_plot=False)
        out[int(d)] = (model.eval(), hist)
    return out


@torch.no_grad()
def vae_snapshot(model: VAE, x_eval: torch.Tensor, y_eval: torch.Tensor, x_eval_bin: torch.Tensor,
                 z_prior: torch.Tensor, n_show: int = 8) -> dict:
    """Everything a slider needs about one trained VAE, as small CPU tensors: codes μ of
    ``x_eval`` (scatter), decoded prior samples of ``z_prior``, reconstructions, −ELBO parts, and
    the KL of each latent dimension (posterior collapse)."""
    model.eval()
    ev = evaluate_vae(model, x_eval_bin)
    return {"mu": encode_all(model, x_eval).cpu(), "labels": y_eval.cpu(),
            "samples": model.decode(z_prior.to(x_eval.device)).cpu(),
            "originals": x_eval[:n_show].cpu(), "recons": decode_all(model, encode_all(model, x_eval[:n_show])).cpu(),
            "kl_per_dim": kl_per_dim(model, x_eval_bin).cpu(), **ev}


def train_beta_sweep(x_train: torch.Tensor, x_eval: torch.Tensor, y_eval: torch.Tensor, betas, steps: int,
                     latent_dim: int = 2, hidden: int = 512, batch_size: int = 128, lr: float = 1e-3,
                     n_prior: int = 36, seed: int = 0, progress: bool = True) -> dict:
    """Train one Bernoulli VAE per KL weight β (the β-VAE objective recon + β·KL, Higgins et al.
    2017) and keep a ``vae_snapshot`` of each: {β: snapshot}. The β slider indexes this dict, so
    moving it recomputes nothing. The −ELBO in the snapshots always uses β = 1 (the true bound)."""
    from .data import TensorBatches
    from .train import fit, seed_everything

    gen = torch.Generator().manual_seed(seed + 1)
    z_prior = torch.randn(n_prior, latent_dim, generator=gen)
    x_eval_bin = torch.bernoulli(x_eval.cpu(), generator=gen).to(x_eval.device)
    out = {}
    for beta in betas:
        seed_everything(seed)
        model = VAE(latent_dim=latent_dim, hidden=hidden).to(x_train.device)
        hist = fit(model, vae_loss(beta=float(beta)), TensorBatches(x_train, batch_size=batch_size, seed=seed),
                   steps, lr=lr, cosine_decay=True, desc=f"VAE β={beta:g}", progress=progress, live_plot=False)
        snap = vae_snapshot(model, x_eval, y_eval, x_eval_bin, z_prior)
        snap["history"] = hist
        out[float(beta)] = snap
    return out


@torch.no_grad()
def evaluate_vqvae(model: VQVAE, x: torch.Tensor, batch_size: int = 500) -> dict:
    """Tokenise and reconstruct ``x`` (N, 1, 28, 28) in [0, 1]: mean PSNR (dB) of the decoded
    tokens, code-usage ``counts`` (K,), number of ``used`` codes and the usage ``perplexity``."""
    from .metrics import psnr

    model.eval()
    tokens, scores = [], []
    for i in range(0, len(x), batch_size):
        t = model.tokenize(x[i:i + batch_size])
        tokens.append(t)
        scores.append(psnr(x[i:i + batch_size], model.decode_tokens(t)))
    tokens = torch.cat(tokens)
    counts = torch.bincount(tokens.flatten(), minlength=model.quantizer.num_codes).float().cpu()
    return {"psnr": torch.cat(scores).mean().item(), "counts": counts, "used": int((counts > 0).sum()),
            "perplexity": codebook_perplexity(counts).item(), "tokens": tokens}
