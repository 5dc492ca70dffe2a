"""Measurement helpers the lessons use to look at latent spaces and estimators: PCA baselines,
linear probes, holes in a latent space, latent grids and interpolation (lesson 01); VAE evaluation,
importance-weighted bounds, KL per dimension and gradient-estimator variance (lesson 02).
"""
from __future__ import annotations

import torch

from .autoencoders import VAE


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
