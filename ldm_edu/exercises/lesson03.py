"""Lesson 03 (VQ-VAE) exercises: reference solutions and checkers.

In the notebook a student writes a function and calls ``check_<name>(their_function)``; the checker
builds its own test cases, compares with ``solution_<name>`` and names the mistake when it recognises
one. ``show_solution(solution_<name>)`` prints the reference when they are stuck. The lesson's cells
already write the VQ forward pass and the EMA update; these exercises go one step further.
"""
from __future__ import annotations

import math

import torch

from . import guarded

__all__ = ["solution_kmeans_step", "check_kmeans_step", "solution_nearest_code_cosine",
           "check_nearest_code_cosine", "solution_vq_loss_per_image", "check_vq_loss_per_image",
           "solution_perplexity", "check_perplexity"]


def _shape(x) -> str:
    return str(tuple(x.shape)) if torch.is_tensor(x) else type(x).__name__


# ----------------------------------------------------------------------------- 1. one k-means step
def solution_kmeans_step(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """One Lloyd step: assign every row of z (N, D) to its nearest code (eq. 20), then move each code
    to the mean of its rows; a code that got no row stays where it is. Returns the new (K, D) codebook.
    (The EMA update with γ = 0 and ε = 0.)"""
    k = torch.cdist(z, codebook).argmin(1)
    n_k = torch.bincount(k, minlength=len(codebook)).to(z.dtype)
    s_k = torch.zeros_like(codebook).index_add_(0, k, z)
    return torch.where(n_k[:, None] > 0, s_k / n_k.clamp_min(1)[:, None], codebook)


def check_kmeans_step(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(0)
        z = torch.randn(400, 2, generator=g, dtype=torch.float64) * torch.tensor([2.0, 0.7], dtype=torch.float64)
        codebook = torch.cat([z[:6], torch.tensor([[40.0, 40.0]], dtype=torch.float64)])   # the last code wins nothing
        got = fn(z.clone(), codebook.clone())
        if not torch.is_tensor(got) or got.shape != codebook.shape:
            if torch.is_tensor(got) and got.shape == (len(z),):
                return False, "you returned the assignments: return the new codebook (K, D), each code moved to its mean"
            return False, f"return the new codebook, shape {tuple(codebook.shape)}, got {_shape(got)}"
        want = solution_kmeans_step(z, codebook)
        got = got.to(want.dtype)
        if torch.isnan(got[-1]).any():
            return False, "the code that won no row became NaN (the mean of nothing): leave such a code where it is"
        if torch.allclose(got, want, atol=1e-6):
            return True, ""
        if torch.allclose(got[:-1], want[:-1], atol=1e-6):
            return False, "a code that won no row must stay where it is, not move"
        k = torch.cdist(z, codebook).argmin(1)
        sums = torch.zeros_like(codebook).index_add_(0, k, z)
        if torch.allclose(got[:-1], sums[:-1], atol=1e-6):
            return False, "you moved each code to the sum of its rows: divide by their number"
        if torch.allclose(got[:-1], z.mean(0).expand(6, 2), atol=1e-6):
            return False, "every code went to the mean of all rows: average only the rows assigned to that code"
        far = torch.cdist(z, codebook).argmax(1)
        if torch.allclose(got[:-1], (torch.zeros_like(codebook).index_add_(0, far, z) /
                                     torch.bincount(far, minlength=7).clamp_min(1)[:, None])[:-1], atol=1e-6):
            return False, "assign each row to its *nearest* code (argmin of the distance), not the farthest"
        return False, "the new codes differ: assign with argmin of the distance, then average each code's rows"
    return guarded("kmeans_step", check)


# ----------------------------------------------------------------------------- 2. nearest code by cosine
def solution_nearest_code_cosine(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Indices (N,) of the codes with the largest cosine similarity to each row of z (N, D)
    (ViT-VQGAN, Yu et al. 2022: z and e normalised to unit length, then the Euclidean nearest code)."""
    zn = z / z.norm(dim=1, keepdim=True)
    en = codebook / codebook.norm(dim=1, keepdim=True)
    return (zn @ en.T).argmax(1)


def check_nearest_code_cosine(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(1)
        # codes of very different lengths, so length-sensitive answers differ from the cosine one
        e = torch.randn(23, 5, generator=g) * torch.linspace(0.2, 3.0, 23)[:, None]
        z = torch.randn(300, 5, generator=g) * 2.0
        got = fn(z.clone(), e.clone())
        if not torch.is_tensor(got) or got.shape != (len(z),):
            return False, f"return one index per row, a tensor of shape ({len(z)},), got {_shape(got)}"
        got = got.long()
        if torch.equal(got, solution_nearest_code_cosine(z, e)):
            return True, ""
        if torch.equal(got, torch.cdist(z, e).argmin(1)):
            return False, "that is the Euclidean nearest code: normalise z and the codes to unit length first"
        if torch.equal(got, (z @ e.T).argmax(1)):
            return False, "a raw dot product favours long codes: divide each code by its norm"
        if torch.equal(got, (z / z.norm(dim=1, keepdim=True) @ (e / e.norm(dim=1, keepdim=True)).T).argmin(1)):
            return False, "you took the least similar code: the largest cosine similarity (argmax) is the nearest"
        return False, "indices differ: cosine similarity = (z/‖z‖)·(e/‖e‖), take the largest per row"
    return guarded("nearest_code_cosine", check)


# ----------------------------------------------------------------------------- 3. the VQ terms per image
def solution_vq_loss_per_image(z_e: torch.Tensor, e: torch.Tensor, beta: float = 0.25) -> torch.Tensor:
    """Codebook loss ‖sg[z_e] − e‖² (eq. 23) + β · commitment ‖z_e − sg[e]‖² (eq. 24) for each image,
    summed over its D·h·w latent elements: shape (B,). (``VQVAE`` adds this to ‖x − x̂‖² per image.)"""
    return (z_e.detach() - e).pow(2).flatten(1).sum(1) + beta * (z_e - e.detach()).pow(2).flatten(1).sum(1)


def check_vq_loss_per_image(fn) -> bool:
    def check():
        g = torch.Generator().manual_seed(2)
        z0, e0 = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
        beta = 0.3
        z, e = z0.clone().requires_grad_(True), e0.clone().requires_grad_(True)
        loss = fn(z, e, beta)
        sq = (z0 - e0).pow(2)
        if not torch.is_tensor(loss) or loss.shape != (3,):
            if torch.is_tensor(loss) and loss.dim() == 0:
                return False, "return one value per image, shape (B,) = (3,), not one number for the batch"
            return False, f"return one value per image, shape (3,), got {_shape(loss)}"
        ref = solution_vq_loss_per_image(z0, e0, beta)
        if not torch.allclose(loss.detach(), ref, rtol=1e-5):
            per_image_mean = sq.flatten(1).mean(1)
            if torch.allclose(loss.detach(), (1 + beta) * per_image_mean, rtol=1e-5):
                return False, "you averaged over the latent elements: sum them (eq. 25 is a loss per image)"
            if torch.allclose(loss.detach(), ref / 784, rtol=1e-5):
                return False, ("you divided by 784 as VQVAE does for the whole of eq. 25: return the plain sums "
                               "over the latent elements here")
            if torch.allclose(loss.detach(), 2 * sq.flatten(1).sum(1), rtol=1e-5):
                return False, "the commitment term is weighted by β: ‖sg[z_e] − e‖² + β‖z_e − sg[e]‖²"
            if torch.allclose(loss.detach(), sq.flatten(1).sum(1), rtol=1e-5) or \
                    torch.allclose(loss.detach(), beta * sq.flatten(1).sum(1), rtol=1e-5):
                return False, "only one term: add the codebook term (eq. 23) and β times the commitment term (eq. 24)"
            return False, f"values {loss.detach().tolist()}, expected {ref.tolist()}"
        if not loss.requires_grad:
            return False, "the loss has no gradient: detach z_e in one term and e in the other, not both everywhere"
        loss.sum().backward()
        want_e, want_z = 2 * (e0 - z0), beta * 2 * (z0 - e0)    # only eq. 23 moves e, only β·eq. 24 moves z_e
        ge = e.grad if e.grad is not None else torch.zeros_like(e0)
        gz = z.grad if z.grad is not None else torch.zeros_like(z0)
        if torch.allclose(ge, want_e, atol=1e-5) and torch.allclose(gz, want_z, atol=1e-5):
            return True, ""
        if torch.allclose(ge, (1 + beta) * want_e, atol=1e-5) and torch.allclose(gz, (1 + beta) / beta * want_z, atol=1e-5):
            return False, ("no stop-gradients: both terms move both z_e and e. Use sg[z_e] = z_e.detach() in eq. 23 "
                           "and sg[e] = e.detach() in eq. 24")
        if torch.allclose(ge, beta * want_e, atol=1e-5) and torch.allclose(gz, want_z / beta, atol=1e-5):
            return False, ("the codes move with weight β and z_e with weight 1, the wrong way round: swapped "
                           "stop-gradients or β on the wrong term. ‖sg[z_e] − e‖² (weight 1) moves e, "
                           "β‖z_e − sg[e]‖² moves z_e")
        if not torch.allclose(ge, want_e, atol=1e-5):
            return False, "the codes get a gradient from the codebook term only: detach z_e there (sg[z_e])"
        return False, "z_e gets a gradient from β · commitment only: detach e there (sg[e])"
    return guarded("vq_loss_per_image (eq. 23-25)", check)


# ----------------------------------------------------------------------------- 4. perplexity
def solution_perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the usage distribution p_k = n_k / Σ n (0 · log 0 = 0)."""
    p = counts.float() / counts.float().sum()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


def check_perplexity(fn) -> bool:
    def check():
        cases = [(torch.tensor([3.0, 3, 3, 3]), 4.0), (torch.tensor([0.0, 7, 0, 0]), 1.0),
                 (torch.tensor([2.0, 2, 0, 0, 0]), 2.0), (torch.tensor([6.0, 2, 2, 0]), None)]
        for counts, want in cases:
            got = float(fn(counts.clone()))
            want = float(solution_perplexity(counts)) if want is None else want
            if not math.isfinite(got):
                return False, (f"perplexity({counts.tolist()}) is {got}: unused codes have p = 0 and 0·log 0 = 0 "
                               "(clamp p before the log)")
            if math.isclose(got, want, rel_tol=1e-4):
                continue
            if math.isclose(got, math.log(want), rel_tol=1e-4, abs_tol=1e-6):
                return False, f"perplexity({counts.tolist()}) = {got:.4f} is the entropy H; the perplexity is exp(H)"
            return False, (f"perplexity({counts.tolist()}) = {got:.4f}, expected {want:.4f}: normalise the counts "
                           "to probabilities first, then exp of the entropy")
        return True, ""
    return guarded("perplexity", check)
