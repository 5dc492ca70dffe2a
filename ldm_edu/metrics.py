"""Quality measures used across lessons: PSNR; on the shipped classifier's features
(``ldm_edu.classifier``) FID-MNIST, KID-MNIST, IS-MNIST and precision/recall, each with its interval
(``ldm_edu.intervals``); the real reference sets and ``quality_report``, which gathers them all.

The classifier runs ONCE per image set; every metric below reuses its features / probabilities
(float64 numpy). The small dense algebra (128 × 128 eigendecompositions, ≤ 2000 × 2000 kernel
matrices) runs on one BLAS thread: on a busy 2-core machine, BLAS threads spinning against torch's
made it 10–50× slower.
"""
from __future__ import annotations

import numpy as np
import torch

from .classifier import ClassifierOutputs, as_features, classifier_features, classifier_outputs, classifier_probs
from .intervals import Interval, shifted_percentiles

try:
    from threadpoolctl import ThreadpoolController  # installed with scikit-learn
    _BLAS = ThreadpoolController()                   # finds the BLAS libraries once (≈ 2 ms a time)

    def one_blas_thread():
        """Small matrices (128 × 128): BLAS threads only contend, so the metrics use one."""
        return _BLAS.limit(limits=1, user_api="blas")
except ImportError:  # pragma: no cover
    from contextlib import nullcontext

    def one_blas_thread():
        return nullcontext()


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: 10 log10(range² / MSE). Inputs in [0, range]."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    mse = (x - x_hat).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


def sqrt_psd(cov: np.ndarray) -> np.ndarray:
    """Σ^{1/2} of a symmetric positive semi-definite matrix, by its eigendecomposition (stable, real)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2, sqrt_cov1=None) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}) (Heusel et al. 2017), float64.

    The matrix square roots go through symmetric eigendecompositions, so they are stable and real.
    ``sqrt_cov1``: Σ1^{1/2} when the caller has it already (two FIDs against one reference)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    with one_blas_thread():
        s1 = sqrt_psd(cov1) if sqrt_cov1 is None else sqrt_cov1
        m = s1 @ cov2 @ s1
        tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fid_mnist(images_a: torch.Tensor, images_b: torch.Tensor, device=None) -> float:
    """FID-MNIST: the Fréchet distance between Gaussians fitted to the shipped classifier's
    128-d penultimate features of two image sets. **Inputs in [0, 1]**, shape (N, 1, 28, 28)
    (samples in [−1, 1]: pass ``from_signed(x)``). Small sets bias FID upwards: compare numbers
    at the same N, with an interval and next to the real-vs-real reference at that N — both come
    with ``quality_report`` / ``fid_interval``."""
    fa, fb = classifier_features(images_a, device), classifier_features(images_b, device)
    if len(fa) < 2 or len(fb) < 2:
        raise ValueError("FID needs at least 2 images per set (a few hundred for a useful number)")
    return _fid_features(fa.numpy(), fb.numpy())


def inception_score_mnist(images: torch.Tensor, device=None) -> float:
    """IS-MNIST = exp E_x KL(p(y|x) ‖ p(y)) with the shipped classifier (Salimans et al. 2016).
    Between 1 (one class, or unsure) and 10 (confident and all classes equally often); real
    MNIST test images score ≈ 9.6 (2000 test images). Inputs in [0, 1]."""
    p = classifier_probs(images, device).clamp_min(1e-12)
    py = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - py.log())).sum(1).mean()))


# ----------------------------------------------------------------------------- FID, KID, P/R, IS with intervals
def _fid_features(fa: np.ndarray, fb: np.ndarray) -> float:
    """FID between feature sets; fb is the reference, whose Σ^{1/2} is taken (as ``paired_fid_difference``
    does, so a difference of two FIDs and the paired Δ agree to the last digit)."""
    return frechet_distance(fb.mean(0), np.cov(fb, rowvar=False), fa.mean(0), np.cov(fa, rowvar=False))


def fid_bootstrap(fa: np.ndarray, fb: np.ndarray, n_boot: int = 100, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of FID between feature sets: each resamples the rows of BOTH
    sets with replacement (the classifier never runs again)."""
    rng = np.random.default_rng(seed)
    with one_blas_thread():
        return np.array([_fid_features(fa[rng.integers(0, len(fa), len(fa))],
                                       fb[rng.integers(0, len(fb), len(fb))]) for _ in range(n_boot)])


def fid_interval(images, reference, n_boot: int = 100, seed: int = 0, level: float = 0.95) -> Interval:
    """FID-MNIST (Heusel et al. 2017, on the shipped classifier's 128-d features) with a bootstrap
    interval over samples.

    ``images``, ``reference``: image sets in [0, 1] (N, 1, 28, 28), or their features (N, D) or
    ``ClassifierOutputs`` (the classifier then does not run again).

    1. ``value`` = FID of the two full feature sets.
    2. ``n_boot`` replicates: resample the rows of both feature sets with replacement, recompute
       the Fréchet distance.
    3. Bias-corrected percentile interval: the (1 ∓ level)/2 percentiles of the replicates, shifted
       by the bootstrap's own bias (replicate mean − value).

    Why step 3 shifts: FID is biased upward at small n (noise in the covariance estimates adds to
    the trace term), and a replicate holds only ≈ 63 % distinct samples, so replicates are biased
    upward further, by about FID itself near the reference: the raw percentile interval lies above
    ``value`` (real-vs-real at n = 1000: 4.3 [5.9, 12.0]; it held ``value`` in 0 of 80 redraws at
    n = 200–2000). Shifted, it is an interval for the FID one gets at THIS n with other draws of
    samples and reference images; measured over 16–24 independent redraws per n (200–2000) it held
    their mean FID in 92–100 % of them. It is conservative: ≈ 1.8× the 95 % spread of FID over
    redraws for real-vs-real sets, ≈ 1.0–1.4× for sets clearly worse than real (blurred digits).
    FID still depends on n: compare FIDs at equal n only, next to the real-vs-real reference
    (``quality_report``'s ``real_fid``). KID (``kid_mnist``) is unbiased."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be ≥ 10 for a percentile interval, got {n_boot}")
    fa, fb = as_features(images, "images"), as_features(reference, "reference")
    if len(fa) < 2 or len(fb) < 2:
        raise ValueError("FID needs at least 2 images per set (a few hundred for a useful number)")
    # 1. the point estimate
    with one_blas_thread():
        value = _fid_features(fa, fb)
    # 2. bootstrap replicates over both sets
    boot = fid_bootstrap(fa, fb, n_boot, seed)
    # 3. percentile interval, shifted by the bootstrap bias
    low, high = shifted_percentiles(boot, value, level)
    return Interval(float(value), low, high)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (xᵀy / d + 1)³, d the feature dimension (Bińkowski et al. 2018, KID's kernel)."""
    k = x @ y.T / x.shape[1] + 1
    return k * k * k


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator of MMD² (Gretton et al. 2012, eq. 3), KID's estimator with the
    polynomial kernel (Bińkowski et al. 2018, sec. 3):

        1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n−1)) Σ_{i≠j} k(y_i, y_j) − 2/(mn) Σ_{i,j} k(x_i, y_j)

    Its expectation is the population MMD² at any m, n ≥ 2, so it can come out slightly negative
    when the two distributions are equal."""
    m, n = len(x), len(y)
    # 1. within-set kernel means without the diagonal (i ≠ j)
    kxx, kyy = polynomial_kernel(x, x), polynomial_kernel(y, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    # 2. cross-set kernel mean over all pairs
    sxy = polynomial_kernel(x, y).mean()
    return float(sxx + syy - 2 * sxy)


def kid_mnist(images, reference, n_subsets: int = 50, subset_size: int | None = None,
              seed: int = 0) -> Interval:
    """KID-MNIST (Bińkowski et al. 2018): the unbiased MMD² (``mmd2_unbiased``, polynomial kernel
    on the shipped classifier's features), averaged over ``n_subsets`` random subsets drawn
    without replacement from each set; ``value`` = mean, ``low, high`` = mean ∓ std over subsets.
    Unbiased at any n, so — unlike FID — its value does not drift with n.

    ``subset_size`` defaults to half the smaller set, capped at 1000, so that subsets differ; the
    std is then the spread of a KID measured on that many samples — a conservative error bar for
    the mean, which uses all samples. Inputs as for ``fid_interval``."""
    fa, fb = as_features(images, "images"), as_features(reference, "reference")
    n_max = min(len(fa), len(fb))
    m = subset_size if subset_size is not None else min(1000, n_max // 2)
    if not 2 <= m <= n_max:
        raise ValueError(f"subset_size must be in [2, {n_max}] (the smaller set's size), got {m}: "
                         "KID needs at least 4 images per set")
    if n_subsets < 2:
        raise ValueError(f"n_subsets must be ≥ 2 to give a spread, got {n_subsets}")
    vals = kid_subset_values(fa, fb, m, n_subsets, seed)
    mean, std = float(vals.mean()), float(vals.std(ddof=1))
    return Interval(mean, mean - std, mean + std)


def kid_subset_values(fa: np.ndarray, fb: np.ndarray, m: int, n_subsets: int, seed: int = 0,
                      max_cached: int = 4000) -> np.ndarray:
    """``mmd2_unbiased`` on ``n_subsets`` pairs of random m-subsets (without replacement).

    When both sets have ≤ ``max_cached`` rows the three kernel matrices are computed once and the
    subsets index into them (same numbers, ≈ 10× faster); otherwise each subset computes its own."""
    rng = np.random.default_rng(seed)
    subsets = [(rng.choice(len(fa), m, replace=False), rng.choice(len(fb), m, replace=False))
               for _ in range(n_subsets)]
    with one_blas_thread():
        if max(len(fa), len(fb)) > max_cached:
            return np.array([mmd2_unbiased(fa[ia], fb[ib]) for ia, ib in subsets])
        kxx, kyy, kxy = polynomial_kernel(fa, fa), polynomial_kernel(fb, fb), polynomial_kernel(fa, fb)
        # subset sums as quadratic forms with 0/1 indicator rows: Σ_{i,j∈S} K_ij = wᵀ K w
        wa, wb = np.zeros((n_subsets, len(fa))), np.zeros((n_subsets, len(fb)))
        for s, (ia, ib) in enumerate(subsets):
            wa[s, ia], wb[s, ib] = 1.0, 1.0
        sxx = (((wa @ kxx) * wa).sum(1) - wa @ np.diagonal(kxx)) / (m * (m - 1))
        syy = (((wb @ kyy) * wb).sum(1) - wb @ np.diagonal(kyy)) / (m * (m - 1))
        sxy = ((wa @ kxy) * wb).sum(1) / (m * m)
        return sxx + syy - 2 * sxy


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0)


def _kth_nn_radii(f: np.ndarray, k: int, chunk: int = 2000) -> np.ndarray:
    """Squared distance from each row of f to its k-th nearest OTHER row of f."""
    out = []
    for i in range(0, len(f), chunk):
        d = _sq_dists(f[i:i + chunk], f)
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf      # exclude the point itself
        out.append(np.partition(d, k - 1, axis=1)[:, k - 1])
    return np.concatenate(out)


def _inside_manifold(query: np.ndarray, support: np.ndarray, radii2: np.ndarray,
                     chunk: int = 2000) -> np.ndarray:
    """For each query row: is it within the k-NN ball (squared radius radii2[j]) of some support row j?"""
    return np.concatenate([(_sq_dists(query[i:i + chunk], support) <= radii2[None, :]).any(1)
                           for i in range(0, len(query), chunk)])


def precision_recall_features(gen, real, k: int = 3) -> dict:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1–2) between feature sets.

    1. Each set's manifold: the union of balls around its features, each ball's radius the
       distance to that feature's k-th nearest neighbour in the same set.
    2. precision = fraction of generated features inside the real manifold (fidelity).
    3. recall = fraction of real features inside the generated manifold (coverage, diversity)."""
    gen, real = as_features(gen, "gen"), as_features(real, "real")
    if gen.shape[1] != real.shape[1]:
        raise ValueError(f"feature dimensions differ: {gen.shape[1]} vs {real.shape[1]}")
    if k < 1 or min(len(gen), len(real)) <= k:
        raise ValueError(f"k must be ≥ 1 and smaller than each set's size, got k={k} with "
                         f"{len(gen)} and {len(real)} samples")
    with one_blas_thread():
        # 1. k-NN radii of each set within itself
        r_real, r_gen = _kth_nn_radii(real, k), _kth_nn_radii(gen, k)
        # 2.-3. membership
        precision = _inside_manifold(gen, real, r_real).mean()
        recall = _inside_manifold(real, gen, r_gen).mean()
    return {"precision": float(precision), "recall": float(recall)}


def precision_recall(images, reference, k: int = 3) -> dict:
    """Precision and recall of ``images`` against ``reference`` (Kynkäänniemi et al. 2019) in the
    shipped classifier's 128-d feature space, k-NN radii with k = 3. Returns
    ``dict(precision=…, recall=…)``: precision = share of samples that lie among real digits
    (fidelity), recall = share of real digits the samples cover (drops when classes or styles are
    missing — mode dropping, which one FID number hides). Inputs as for ``fid_interval``."""
    return precision_recall_features(as_features(images, "images"), as_features(reference, "reference"), k)


def _inception_score_from_probs(p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, None)
    py = p.mean(0, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(py))).sum(1).mean()))


def inception_score_interval(probs, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> Interval:
    """IS-MNIST (Salimans et al. 2016: exp E_x KL(p(y|x) ‖ p(y))) with a bootstrap interval over samples.

    ``probs``: p(y | x), (N, 10) (a ``ClassifierOutputs`` or an array). ``value`` = IS of all N;
    ``n_boot`` replicates resample the N rows with replacement and recompute IS (p(y) included);
    the interval is their (1 ∓ level)/2 percentiles shifted by the bootstrap bias (replicate mean −
    value), as in ``fid_interval``. It covers redrawing the N samples from the same sampler
    (Salimans et al. report mean ± std over 10 splits instead, a spread at N/10 samples)."""
    p = np.asarray(probs.probs if isinstance(probs, ClassifierOutputs) else probs, np.float64)
    if p.ndim != 2 or len(p) < 2:
        raise ValueError(f"probs must be (N ≥ 2, classes), got shape {p.shape}")
    if not 0 < level < 1 or n_boot < 10:
        raise ValueError(f"need 0 < level < 1 and n_boot ≥ 10, got {level}, {n_boot}")
    value = _inception_score_from_probs(p)
    rng = np.random.default_rng(seed)
    boot = np.array([_inception_score_from_probs(p[rng.integers(0, len(p), len(p))]) for _ in range(n_boot)])
    low, high = shifted_percentiles(boot, value, level)
    return Interval(value, min(low, value), max(high, value))


def precision_recall_intervals(gen, real, k: int = 3, n_subsets: int = 30, seed: int = 0,
                               z: float = 1.96) -> dict:
    """Precision and recall (``precision_recall_features``) with intervals from half-sampling.

    ``value``: precision / recall of the full sets. Interval: value ∓ z·s, s the standard deviation
    of precision / recall over ``n_subsets`` random halves of the GENERATED set (drawn without
    replacement; the real set, the reference, stays whole), clipped to [0, 1].

    Why halves: for a mean of N indicators, a half-sample drawn without replacement has variance
    σ²/(N/2)·(N/2)/(N−1) ≈ σ²/N — the variance of the full-N estimate — so the spread over halves
    estimates the full estimate's standard error directly. Unlike a binomial ±√(p(1−p)/N), it also
    includes the randomness of the generated k-NN manifold that recall is measured against (recall
    at N/2 uses larger radii; only its spread is used). A bootstrap with replacement would not do:
    duplicated samples have a k-th neighbour at distance 0 and collapse the radii. It covers
    redrawing the samples from the same sampler, with the reference images held fixed."""
    gen, real = as_features(gen, "gen"), as_features(real, "real")
    n = len(gen)
    m = n // 2
    if m <= k or n_subsets < 2:
        raise ValueError(f"need at least 2(k + 1) = {2 * (k + 1)} generated samples and n_subsets ≥ 2, "
                         f"got {n} and {n_subsets}")
    rng = np.random.default_rng(seed)
    subsets = [rng.choice(n, m, replace=False) for _ in range(n_subsets)]
    with one_blas_thread():
        if max(n, len(real)) <= 4000:      # the three distance matrices once; subsets index into them
            d_rr, d_gg, d_rg = _sq_dists(real, real), _sq_dists(gen, gen), _sq_dists(real, gen)
            np.fill_diagonal(d_rr, np.inf)
            np.fill_diagonal(d_gg, np.inf)
            r_real = np.partition(d_rr, k - 1, axis=1)[:, k - 1]
            inside_real = (d_rg <= r_real[:, None]).any(0)                  # precision's indicators
            recall_of = lambda s: (d_rg[:, s] <= np.partition(d_gg[np.ix_(s, s)], k - 1, axis=1)[:, k - 1]
                                   [None, :]).any(1).mean()
        else:
            inside_real = _inside_manifold(gen, real, _kth_nn_radii(real, k))
            recall_of = lambda s: _inside_manifold(real, gen[s], _kth_nn_radii(gen[s], k)).mean()
        full = {"precision": float(inside_real.mean()), "recall": float(recall_of(np.arange(n)))}
        prec = np.array([inside_real[s].mean() for s in subsets])
        rec = np.array([recall_of(s) for s in subsets])
    out = {}
    for name, vals in (("precision", prec), ("recall", rec)):
        v, sd = full[name], float(np.std(vals, ddof=1))
        out[name] = Interval(v, max(0.0, v - z * sd), min(1.0, v + z * sd))
    return out


# ----------------------------------------------------------------------------- real references, the report
_REAL_FID: dict = {}


def real_data_fid(n: int = 1000, seed: int = 0) -> float:
    """FID-MNIST between n random training and n random test images: the real-vs-real reference
    at this n, without its interval. It is not a floor (a model's samples can score below it by
    chance). Superseded by ``quality_report(x)["real_fid"]``, which carries its interval."""
    from .data import mnist_tensors

    key = (int(n), int(seed))
    if key not in _REAL_FID:
        g = torch.Generator().manual_seed(seed)
        xtr, _ = mnist_tensors("train")
        xte, _ = mnist_tensors("test")
        if n > len(xte):
            raise ValueError(f"n must be ≤ {len(xte)} (the test set size), got {n}")
        a = xtr[torch.randperm(len(xtr), generator=g)[:n]]
        b = xte[torch.randperm(len(xte), generator=g)[:n]]
        _REAL_FID[key] = fid_mnist(a, b)
    return _REAL_FID[key]


def reference_images(n: int = 1000, split: str = "test", seed: int = 0) -> torch.Tensor:
    """n random MNIST images in [0, 1] (the reference set for FID-MNIST of samples)."""
    from .data import mnist_tensors

    x, _ = mnist_tensors(split)
    if not 1 <= n <= len(x):
        raise ValueError(f"n must be in [1, {len(x)}] (the MNIST {split} set's size), got {n}")
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n]]


_REFERENCE_OUTPUTS: dict = {}
_REAL_REPORT: dict = {}


def reference_outputs(n: int, split: str = "test", seed: int = 0) -> ClassifierOutputs:
    """The classifier's outputs on ``reference_images(n, split, seed)`` (cached): the reference set
    ``quality_report`` scores samples against, for callers that compare two sample sets on it."""
    key = (int(n), split, int(seed))
    if key not in _REFERENCE_OUTPUTS:
        _REFERENCE_OUTPUTS[key] = classifier_outputs(reference_images(n, split, seed))
    return _REFERENCE_OUTPUTS[key]


def quality_report(images01: torch.Tensor, n_ref: int | None = None, seed: int = 0,
                   n_boot: int = 100) -> dict:
    """Everything a lesson prints about a set of samples, with intervals (CURRICULUM rule 4).

    ``images01``: N samples in [0, 1], (N, 1, 28, 28). Reference: ``n_ref`` (default N) random
    test images, ``reference_images(n_ref, "test", seed)``. The real-vs-real reference: N random
    TRAINING images — what a generator that reproduces the training distribution would hand in —
    scored by the same procedure against the same test images. It is a reference at this n, not a
    floor: a model's samples can land below it by chance.

    Returns a dict:
      fid            Interval  FID-MNIST, 95 % bootstrap interval (``fid_interval``)
      kid            Interval  KID-MNIST, mean ∓ std over subsets (``kid_mnist``)
      is             float     IS-MNIST; is_interval: Interval, 95 % bootstrap over samples
                               (``inception_score_interval``)
      precision, recall  float Kynkäänniemi et al. 2019, k = 3 (``precision_recall``);
                               precision_interval, recall_interval: Interval, value ∓ 1.96 s from
                               half-samples of the N samples (``precision_recall_intervals``)
      real_fid, real_kid, real_is_interval, real_precision_interval, real_recall_interval Interval;
      real_precision, real_recall, real_is float: the real-vs-real reference
      hist           (10,) tensor  classifier's class shares; class_min, class_max its extremes
      n, n_ref       int
    The classifier runs once on the samples; reference results are cached per (N, n_ref, seed)."""
    out = classifier_outputs(images01)
    n, n_ref = len(out), int(n_ref or len(out))
    if n < 10 or n_ref < 10:
        raise ValueError(f"quality_report needs at least 10 samples and 10 reference images "
                         f"(a few hundred for useful intervals), got {n} and {n_ref}")
    ref = reference_outputs(n_ref, "test", seed)
    key = (n, n_ref, int(seed), int(n_boot))
    if key not in _REAL_REPORT:
        real = reference_outputs(n, "train", seed)
        pr = precision_recall_intervals(real.features, ref.features, seed=seed)
        r_is = inception_score_interval(real, seed=seed)
        _REAL_REPORT[key] = {"real_fid": fid_interval(real, ref, n_boot=n_boot, seed=seed),
                             "real_kid": kid_mnist(real, ref, seed=seed),
                             "real_precision": pr["precision"].value, "real_recall": pr["recall"].value,
                             "real_precision_interval": pr["precision"], "real_recall_interval": pr["recall"],
                             "real_is": r_is.value, "real_is_interval": r_is}
    pr = precision_recall_intervals(out.features, ref.features, seed=seed)
    is_iv = inception_score_interval(out, seed=seed)
    hist = torch.bincount(torch.from_numpy(out.probs.argmax(1)), minlength=10).double() / n
    return {"fid": fid_interval(out, ref, n_boot=n_boot, seed=seed),
            "kid": kid_mnist(out, ref, seed=seed),
            "is": is_iv.value, "is_interval": is_iv,
            "precision": pr["precision"].value, "recall": pr["recall"].value,
            "precision_interval": pr["precision"], "recall_interval": pr["recall"],
            **_REAL_REPORT[key],
            "hist": hist, "class_min": float(hist.min()), "class_max": float(hist.max()),
            "n": n, "n_ref": n_ref}


# ----------------------------------------------------------------------------- paired differences
def paired_fid_difference(images_a, images_b, reference, n_boot: int = 100, seed: int = 0,
                          level: float = 0.95, paired: bool = True) -> Interval:
    """Δ = FID(b, ref) − FID(a, ref) with a bootstrap interval that keeps what the two FIDs share.

    Inputs as for ``fid_interval`` (images in [0, 1], features or ``ClassifierOutputs``).

    - ``paired=True``: a, b and the reference are three views of the SAME items (row i of a and of
      b reconstruct reference image i, e.g. two autoencoders' rFID on the same test images). Each
      replicate draws ONE index resample and applies it to all three sets.
    - ``paired=False``: a and b are independent sample sets scored against a SHARED reference (two
      generators' FIDs on the same test images). Each replicate resamples a and b independently and
      the reference once, used by both FIDs.

    ``value`` = Δ of the full sets; the interval is the (1 ∓ level)/2 percentiles of the replicates'
    Δ shifted by the bootstrap bias (replicate mean − value), as ``fid_interval``. Why: two
    independent intervals that overlap can still hide a clear difference — most of the noise of each
    FID (which test images, which reference) is common to both and cancels in Δ. "Separated" means
    the interval of Δ excludes 0 (Efron & Tibshirani 1993, ch. 13, on bootstrap intervals)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 10:
        raise ValueError(f"n_boot must be ≥ 10 for a percentile interval, got {n_boot}")
    fa, fb = as_features(images_a, "images_a"), as_features(images_b, "images_b")
    fr = as_features(reference, "reference")
    if min(len(fa), len(fb), len(fr)) < 2:
        raise ValueError("FID needs at least 2 images per set (a few hundred for a useful number)")
    if paired and not len(fa) == len(fb) == len(fr):
        raise ValueError(f"paired=True needs one row per item in each set, got {len(fa)}, {len(fb)}, {len(fr)} "
                         "rows (use paired=False for independent sample sets on a shared reference)")
    rng = np.random.default_rng(seed)

    def delta(a, b, r):                     # FID(b, r) − FID(a, r), Σ_r^{1/2} computed once for both
        mu_r, cov_r = r.mean(0), np.cov(r, rowvar=False)
        s_r = sqrt_psd(cov_r)
        return (frechet_distance(mu_r, cov_r, b.mean(0), np.cov(b, rowvar=False), s_r)
                - frechet_distance(mu_r, cov_r, a.mean(0), np.cov(a, rowvar=False), s_r))

    with one_blas_thread():
        value = delta(fa, fb, fr)
        boot = []
        for _ in range(n_boot):
            ir = rng.integers(0, len(fr), len(fr))
            ia, ib = (ir, ir) if paired else (rng.integers(0, len(fa), len(fa)), rng.integers(0, len(fb), len(fb)))
            boot.append(delta(fa[ia], fb[ib], fr[ir]))
    low, high = shifted_percentiles(np.asarray(boot), value, level)
    return Interval(float(value), min(low, value), max(high, value))
