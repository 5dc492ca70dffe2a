"""Measurement helpers the lessons use to look at latent spaces and estimators: PCA baselines,
linear probes, latent grids and interpolation, holes in a latent space and what a sampler's
decoded codes look like to a classifier (lesson 01, reused by lesson 02); VAE evaluation,
importance-weighted bounds, KL per dimension and gradient-estimator variance (lesson 02).
"""
from __future__ import annotations

import math

import torch

from .autoencoders import VAE, decode_all, reparameterize
from .losses import gaussian_kl

# A latent dimension whose KL(q(z_j|x) ‖ N(0, 1)), averaged over x, is below this many nats carries
# (almost) no information about x: it is *inactive* (collapsed onto the prior). 0.01 nats is far
# below what an informative dimension costs (≈ 1 nat or more) and far above float noise.
ACTIVE_KL = 0.01


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


def hole_mask(z_codes: torch.Tensor, z_samples: torch.Tensor, k: int = 5, q: float = 0.95) -> torch.Tensor:
    """Which of ``z_samples`` fall into a *hole* of the latent space, where the decoder never saw
    data: those whose distance to their k-th nearest real code exceeds the q-quantile of the same
    distance for held-out real codes (half of ``z_codes`` is the reference, the other half held
    out). Held-out real codes are flagged with probability ≈ 1 − q by construction. (N,) bool."""
    zc, zs = z_codes.detach().float().cpu(), z_samples.detach().float().cpu()
    if zc.dim() != 2 or zs.dim() != 2 or zc.shape[1] != zs.shape[1]:
        raise ValueError(f"codes and samples must be (N, d) with the same d, got {tuple(zc.shape)}, {tuple(zs.shape)}")
    if len(zc) < 2 * (k + 1):
        raise ValueError(f"need at least {2 * (k + 1)} codes for k = {k}, got {len(zc)}")
    ref, held = zc[0::2], zc[1::2]
    kth = lambda a: torch.cdist(a, ref).topk(k, dim=1, largest=False).values[:, -1]
    return kth(zs) > kth(held).quantile(q)


def hole_fraction(z_codes: torch.Tensor, z_samples: torch.Tensor, k: int = 5, q: float = 0.95) -> float:
    """The fraction of ``z_samples`` in a hole of ``z_codes`` (``hole_mask``). A sampler matched to
    the codes scores ≈ 1 − q; a sampler that misses the holes but piles up in one dense region
    also scores low, so read it beside ``class_coverage``."""
    return float(hole_mask(z_codes, z_samples, k, q).float().mean())


def gaussian_fit_samples(z_codes: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n samples of N(m, Σ), the Gaussian fitted to the codes (mean m, covariance Σ): z = m + ε Lᵀ
    with Σ = L Lᵀ (Cholesky) and ε ~ N(0, I). The fairest Gaussian sampler for an AE's codes."""
    zc = z_codes.detach().float().cpu()
    if zc.dim() != 2 or len(zc) <= zc.shape[1]:
        raise ValueError(f"z_codes must be (N, d) with N > d, got {tuple(zc.shape)}")
    m, chol = zc.mean(0), torch.linalg.cholesky(torch.cov(zc.T).reshape(zc.shape[1], zc.shape[1]))
    return m + torch.randn(n, zc.shape[1], generator=generator) @ chol.T


def effective_classes(labels: torch.Tensor, num_classes: int = 10) -> float:
    """The effective number of classes of a set of labels: exp(H), H = −Σ_c p_c log p_c the entropy
    (in nats) of their histogram p, with 0 · log 0 = 0 (Hill 1973, the diversity of order 1).
    ``num_classes`` for all p_c equal, 1 for a single class; NaN for an empty set."""
    labels = torch.as_tensor(labels).long().flatten().cpu()
    if len(labels) == 0:
        return math.nan
    p = torch.bincount(labels, minlength=num_classes).double() / len(labels)
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def bootstrap_interval(stat, *samples: torch.Tensor, n_boot: int = 200, level: float = 0.95, seed: int = 0):
    """A statistic of ``samples`` with a percentile bootstrap interval (Efron & Tibshirani 1993, §13.3).

    ``value`` = stat(*samples); each of ``n_boot`` replicates draws n row indices with replacement
    (one draw for all ``samples`` together, so paired rows stay paired) and recomputes ``stat``;
    the interval is the (1 ∓ level)/2 quantiles of the replicates. It measures the spread from the
    sample of n alone (e.g. of decoded codes), not from anything held fixed (the reference codes,
    the classifier). Returns an ``intervals.Interval``."""
    from .intervals import Interval

    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be ≥ 10 for a percentile interval, got {n_boot}")
    n = len(samples[0]) if samples else 0
    if n == 0 or any(len(s) != n for s in samples):
        raise ValueError(f"samples must be non-empty and of equal length, got {[len(s) for s in samples]}")
    g = torch.Generator().manual_seed(seed)
    boot = torch.tensor([float(stat(*(s[idx] for s in samples)))
                         for idx in (torch.randint(0, n, (n,), generator=g) for _ in range(n_boot))], dtype=torch.float64)
    low, high = boot.nanquantile(torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return Interval(float(stat(*samples)), low, high)


def class_coverage(images: torch.Tensor, device=None, n_boot: int = 200, seed: int = 0) -> dict:
    """What the shipped MNIST classifier sees in a set of images in [0, 1]: each image's label
    ``labels`` (the argmax of p(y | x)), their histogram ``hist`` (10,), its entropy H in nats, the
    *effective number of classes* exp(H) (``effective_classes``: 10 for all digits equally often, 1
    for a single digit) with its bootstrap interval over the images (``effective_classes_ci``, a
    ``intervals.Interval``), and the share of the most frequent class ``top_share``."""
    from .classifier import classifier_probs

    labels = classifier_probs(images, device).argmax(1)
    hist = torch.bincount(labels, minlength=10).double() / max(1, len(labels))
    p = hist[hist > 0]                                  # 0 · log 0 = 0
    entropy = float(-(p * p.log()).sum())
    return {"labels": labels, "hist": hist, "entropy": entropy, "effective_classes": math.exp(entropy),
            "effective_classes_ci": bootstrap_interval(effective_classes, labels, n_boot=n_boot, seed=seed),
            "top_share": float(hist.max())}


@torch.no_grad()
def sampler_report(model, z_codes: torch.Tensor, z_samples: torch.Tensor, n_boot: int = 200, seed: int = 0) -> dict:
    """The measures lessons 01 and 02 apply to any way of drawing codes for a decoder ``model``
    (Autoencoder or VAE), each with a bootstrap interval over the samples (``*_ci``, ``intervals.Interval``):

    - ``holes``: the fraction of ``z_samples`` in a hole of the real codes ``z_codes``
      (``hole_fraction``; ``in_hole`` is the (N,) mask);
    - the ``class_coverage`` of all decoded samples (``effective_classes``, ``hist``, ``top_share``,
      ``labels``). The classifier names a digit even for a blend decoded from a hole, so this
      count flatters a sampler that lands in holes; hence also
    - ``effective_classes_outside_holes``: exp(H) of the labels of the samples *not* in a hole
      (NaN if all are), with ``n_outside_holes``.

    ``images`` are the decodings."""
    device = next(model.parameters()).device
    images = decode_all(model, z_samples.to(device)).cpu()
    in_hole = hole_mask(z_codes, z_samples)
    cov = class_coverage(images, n_boot=n_boot, seed=seed)
    labels = cov["labels"]
    outside = lambda lab, hole: effective_classes(lab[~hole])
    return {"holes": float(in_hole.float().mean()), "in_hole": in_hole, "images": images, **cov,
            "holes_ci": bootstrap_interval(lambda h: h.float().mean(), in_hole, n_boot=n_boot, seed=seed),
            "effective_classes_outside_holes": outside(labels, in_hole),
            "effective_classes_outside_holes_ci": bootstrap_interval(outside, labels, in_hole, n_boot=n_boot, seed=seed),
            "n_outside_holes": int((~in_hole).sum())}


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


def _generator(seed: int | None) -> torch.Generator | None:
    return torch.Generator().manual_seed(seed) if seed is not None else None


@torch.no_grad()
def evaluate_vae(model: VAE, x: torch.Tensor, batch_size: int = 1000, seed: int | None = 0) -> dict:
    """Single-sample −ELBO (β = 1) on ``x`` in nats per image, with its recon and KL parts.

    ``seed`` fixes the posterior samples ε so two calls agree. Binarise ``x`` beforehand (with a
    fixed generator) to compare with the literature's dynamically binarised MNIST numbers."""
    model.eval()
    gen = _generator(seed)
    parts = {"neg_elbo": [], "recon": [], "kl": []}
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size], generator=gen)
        for k in parts:
            parts[k].append(out[k])
    return {k: float(torch.cat(v).mean()) for k, v in parts.items()}


@torch.no_grad()
def iw_log_likelihood(model: VAE, x: torch.Tensor, k: int = 100, batch_size: int | None = None,
                      seed: int | None = 0) -> torch.Tensor:
    """``VAE.log_likelihood_iw`` (the bound L_k) over many images in batches: (N,) in nats."""
    model.eval()
    batch_size = batch_size or max(1, 20000 // k)
    gen = _generator(seed)
    return torch.cat([model.log_likelihood_iw(x[i:i + batch_size], k, gen) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def kl_per_dim(model: VAE, x: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Average KL(q(z_j|x) ‖ N(0, 1)) of each latent dimension j over ``x`` (eq. 19, term by term).

    A dimension with KL ≈ 0 (below ``ACTIVE_KL``) carries no information about x: it has
    *collapsed* onto the prior."""
    model.eval()
    total = torch.zeros(model.latent_dim, device=x.device)
    for i in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[i:i + batch_size])
        total += gaussian_kl(mu.T, logvar.T)          # rows = latent dims: eq. 19 summed over the batch
    return total / len(x)


def gradient_estimates(f, mu: torch.Tensor, logvar: torch.Tensor, n: int, estimator: str = "reparam",
                       baseline: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` single-sample estimates of ∇_μ E_{z~N(μ, σ²)}[f(z)], shape (n, d).

    - "reparam": z = μ + σ ⊙ ε, gradient of f(z) flows through z (Kingma & Welling 2014; slides).
    - "score" (REINFORCE, Williams 1992): f(z) ∇_μ log q(z), with z sampled and *not*
      differentiated; ``baseline=True`` subtracts the leave-one-out baseline
      b_i = (Σ_j f(z_j) − f(z_i)) / (n − 1), the mean of f over the *other* n − 1 samples (a control
      variate, Kool et al. 2019 "Buy 4 REINFORCE samples"). b_i is independent of z_i and
      E[∇_μ log q(z_i)] = 0, so E[b_i ∇_μ log q(z_i)] = 0: the estimator stays exactly unbiased
      (subtracting the mean over all n samples, f_i included, would shrink it by (n − 1)/n) and
      its variance drops. Needs n ≥ 2.
    ``f`` maps (n, d) codes → (n,) values; ``mu``, ``logvar`` have shape (d,).
    All three are unbiased: their means agree; their variances do not.
    """
    if estimator not in ("reparam", "score"):
        raise ValueError(f"estimator must be 'reparam' or 'score', got {estimator!r}")
    if mu.dim() != 1 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must be 1-D of the same length, got {tuple(mu.shape)}, {tuple(logvar.shape)}")
    if baseline and (estimator != "score" or n < 2):
        raise ValueError(f"baseline=True needs estimator='score' and n ≥ 2 (leave-one-out), got {estimator!r}, n={n}")
    mu_n = mu.detach().expand(n, -1).clone().requires_grad_(True)    # one copy of μ per sample
    logvar_n = logvar.detach().expand(n, -1)
    with torch.enable_grad():
        if estimator == "reparam":
            # z = μ + σ ⊙ ε keeps its path to μ: differentiate f(z) itself
            f(reparameterize(mu_n, logvar_n, generator)).sum().backward()
        else:
            # 1. a sample with no path back to μ (the same ε as the reparametrised estimator)
            z = reparameterize(mu_n.detach(), logvar_n, generator)
            # 2. f(z) is only evaluated, never differentiated (minus a baseline, if asked)
            with torch.no_grad():
                fz = f(z)
                if baseline:                       # leave-one-out: b_i = mean of f over the other n − 1
                    fz = fz - (fz.sum() - fz) / (n - 1)
            # 3. ∇_μ of the surrogate f(z) · log q(z): f(z) ∇_μ log q(z) = f(z) (z − μ) / σ²
            log_q = torch.distributions.Normal(mu_n, (0.5 * logvar_n).exp()).log_prob(z).sum(1)
            (fz * log_q).sum().backward()
    return mu_n.grad.detach()
