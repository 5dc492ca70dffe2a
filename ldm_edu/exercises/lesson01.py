"""Lesson 01 (autoencoder) exercises: reference solutions and checkers.

In the notebook a student writes a function and calls ``check_<name>(their_function)``;
``show_solution(solution_<name>)`` prints the reference when they are stuck.
"""
from __future__ import annotations

import torch

from . import guarded

__all__ = ["solution_fitted_gaussian", "check_fitted_gaussian", "solution_pca_reconstruct",
           "check_pca_reconstruct", "solution_interpolate", "check_interpolate"]


# ----------------------------------------------------------------------------- 1. a Gaussian fitted to the codes
def solution_fitted_gaussian(z: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n samples of N(m, Σ), with m and Σ the mean and covariance of the codes z (N, d):
    z' = m + ε Lᵀ, Σ = L Lᵀ (Cholesky), ε ~ N(0, I) drawn with ``generator``."""
    m, cov = z.mean(0), torch.cov(z.T)
    chol = torch.linalg.cholesky(cov)
    eps = torch.randn(n, z.shape[1], generator=generator)
    return m + eps @ chol.T


def check_fitted_gaussian(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(1)
        true_cov = torch.tensor([[4.0, 1.8], [1.8, 1.0]])             # correlated, one long axis
        codes = torch.tensor([3.0, -1.0]) + torch.randn(4000, 2, generator=g) @ torch.linalg.cholesky(true_cov).T
        m, cov = codes.mean(0), torch.cov(codes.T)                     # what the samples must match
        n = 20000
        got = fn(codes.clone(), n, torch.Generator().manual_seed(0))
        if not torch.is_tensor(got) or got.shape != (n, 2):
            return False, f"return n codes, a tensor of shape ({n}, 2), got {getattr(got, 'shape', type(got).__name__)}"
        again = fn(codes.clone(), n, torch.Generator().manual_seed(0))
        other = fn(codes.clone(), n, torch.Generator().manual_seed(1))
        if not torch.equal(got, again) or torch.equal(got, other):
            return False, "draw ε with the generator you are given: torch.randn(n, d, generator=generator)"
        # sampling error of a mean / covariance entry from n draws: tolerance = 5 standard errors
        se_mean = (cov.diagonal() / n).sqrt()
        se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None] + cov ** 2) / n).sqrt()
        mean_s, cov_s = got.mean(0), torch.cov(got.T)
        if not ((mean_s - m).abs() < 5 * se_mean).all():
            if (mean_s.abs() < 5 * se_mean).all():
                return False, "your samples are centred on 0: add the mean m of the codes"
            return False, f"the mean of your samples is {mean_s.numpy().round(2)}, the codes' mean is {m.numpy().round(2)}"
        if ((cov_s - cov).abs() < 5 * se_cov).all():
            return True, ""
        chol = torch.linalg.cholesky(cov)
        near = lambda c: bool(((cov_s - c).abs() < 5 * se_cov + 0.02 * c.abs()).all())
        if abs(float(cov_s[0, 1])) < 5 * float(se_cov[0, 1]):
            return False, ("your samples are uncorrelated, the codes are not: use the full covariance "
                           "(its Cholesky factor L), not one standard deviation per dimension")
        if near(cov @ cov):
            return False, "multiply ε by a square root of Σ (L = torch.linalg.cholesky(Σ)), not by Σ itself"
        if near(chol.T @ chol):
            return False, "for codes stored as rows use z = m + ε Lᵀ (eps @ L.T), not ε L"
        return False, (f"the covariance of your samples is {cov_s.numpy().round(2).tolist()}, the codes' is "
                       f"{cov.numpy().round(2).tolist()}: z = m + ε Lᵀ with Σ = L Lᵀ")
    return guarded("fitted_gaussian", check)


# ----------------------------------------------------------------------------- 2. PCA as a linear AE
def solution_pca_reconstruct(x: torch.Tensor, k: int) -> torch.Tensor:
    """Project the rows of x (N, D) on their top-k principal directions and map back.

    Encoder z = (x − m) Vₖ, decoder x̂ = m + z Vₖᵀ, with Vₖ the top-k right singular vectors of
    the centred data: the best linear autoencoder with a k-dimensional code."""
    m = x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x - m, full_matrices=False)
    v = vh[:k].T                              # (D, k)
    return m + (x - m) @ v @ v.T


def check_pca_reconstruct(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(2)
        basis = torch.randn(4, 20, generator=g)
        x = torch.randn(300, 4, generator=g) * torch.tensor([5.0, 3.0, 2.0, 1.0]) @ basis
        x = x + 0.1 * torch.randn(300, 20, generator=g) + 3.0          # not centred on purpose
        for k in (1, 3):
            got = torch.as_tensor(fn(x.clone(), k), dtype=torch.float32)
            want = solution_pca_reconstruct(x, k)
            if got.shape != x.shape:
                return False, f"return the reconstruction x̂ with the shape of x {tuple(x.shape)}, got {tuple(got.shape)}"
            if not torch.allclose(got, want, atol=1e-3, rtol=1e-3):
                _, _, vh = torch.linalg.svd(x, full_matrices=False)
                uncentred = x @ vh[:k].T @ vh[:k]
                if torch.allclose(got, uncentred, atol=1e-3):
                    return False, "subtract the mean before the SVD and add it back after projecting"
                return False, (f"k={k}: reconstruction differs. Use U, S, Vh = torch.linalg.svd(x − m); "
                               "x̂ = m + (x − m) Vₖ Vₖᵀ with Vₖ = Vh[:k].T")
        return True, ""
    return guarded("pca_reconstruct", check)


# ----------------------------------------------------------------------------- 3. interpolation
def solution_interpolate(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """n points from a to b (ends included), stacked on a new first dimension: (1 − t) a + t b."""
    t = torch.linspace(0, 1, n).view(-1, *([1] * a.dim()))
    return (1 - t) * a + t * b


def check_interpolate(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(3)
        a, b = torch.randn(2, generator=g), torch.randn(2, generator=g)
        got = torch.as_tensor(fn(a, b, 7))
        want = solution_interpolate(a, b, 7)
        if got.shape != want.shape:
            return False, f"expected shape {tuple(want.shape)} (n points stacked on dim 0), got {tuple(got.shape)}"
        if not (torch.allclose(got[0], a, atol=1e-5) and torch.allclose(got[-1], b, atol=1e-5)):
            return False, "the first point must be a and the last b (t = 0 and t = 1 included: torch.linspace(0, 1, n))"
        img_a, img_b = torch.rand(1, 28, 28, generator=g), torch.rand(1, 28, 28, generator=g)
        got2 = torch.as_tensor(fn(img_a, img_b, 4))
        if got2.shape != (4, 1, 28, 28):
            return False, "it must work for any shape (images too): reshape t to broadcast, e.g. t.view(-1, *[1]*a.dim())"
        ok = torch.allclose(got, want, atol=1e-5) and torch.allclose(got2, solution_interpolate(img_a, img_b, 4), atol=1e-5)
        return ok, "the points must be evenly spaced: (1 − t)·a + t·b for t in linspace(0, 1, n)"
    return guarded("interpolate", check)
