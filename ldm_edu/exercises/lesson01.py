"""Lesson 01 (autoencoder) exercises: reference solutions and checkers.

In the notebook a student writes a function and calls ``check_<name>(their_function)``;
``show_solution(solution_<name>)`` prints the reference when they are stuck.
"""
from __future__ import annotations

import torch

from . import guarded

__all__ = ["solution_mse_per_image", "check_mse_per_image", "solution_pca_reconstruct",
           "check_pca_reconstruct", "solution_interpolate", "check_interpolate"]


# ----------------------------------------------------------------------------- 1. the AE loss
def solution_mse_per_image(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """‖x − x̂‖² per image, summed over all pixels: shape (B,)."""
    return (x - x_hat).pow(2).flatten(1).sum(1)


def check_mse_per_image(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(1)
        x, x_hat = torch.rand(5, 1, 28, 28, generator=g), torch.rand(5, 1, 28, 28, generator=g)
        got = torch.as_tensor(fn(x, x_hat))
        want = solution_mse_per_image(x, x_hat)
        if got.shape != want.shape:
            return False, (f"expected one number per image, shape {tuple(want.shape)}, got {tuple(got.shape)}: "
                           "sum over pixels (flatten(1).sum(1)), do not average over the batch")
        if torch.allclose(got, want / 784, rtol=1e-4):
            return False, "you averaged over pixels; the loss here sums over the 784 pixels"
        return torch.allclose(got, want, rtol=1e-4), "compute (x − x̂)² and sum over everything but the batch"
    return guarded("mse_per_image", check)


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
