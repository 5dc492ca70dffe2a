"""Lesson 03 exercises: the mistake catalogue (WRONG: checker, wrong answer, the hint it must print;
run by tests/test_exercises.py) and the solutions against the library."""
import pytest
import torch

from ldm_edu.exercises import lesson03 as L3
from ldm_edu.vq import VectorQuantizer, VQVAE, codebook_perplexity


def _p(c):
    return c / c.sum()


def _unit(a):
    return a / a.norm(dim=1, keepdim=True)


def _kmeans_nan_for_empty(z, e):
    k = torch.cdist(z, e).argmin(1)
    return torch.stack([z[k == j].mean(0) for j in range(len(e))])        # mean of nothing = NaN


def _kmeans_empty_to_zero(z, e):
    k = torch.cdist(z, e).argmin(1)
    n = torch.bincount(k, minlength=len(e)).clamp_min(1)
    return torch.zeros_like(e).index_add_(0, k, z) / n[:, None]


def _kmeans_sum(z, e):
    k = torch.cdist(z, e).argmin(1)
    s = torch.zeros_like(e).index_add_(0, k, z)
    return torch.where(torch.bincount(k, minlength=len(e))[:, None] > 0, s, e)


def _sum_both(z, e, b):
    return ((z.detach() - e).pow(2) + b * (z - e.detach()).pow(2)).flatten(1).sum(1)


WRONG = [
    (L3.check_kmeans_step, lambda z, e: torch.cdist(z, e).argmin(1), "assignments"),
    (L3.check_kmeans_step, _kmeans_nan_for_empty, "NaN"),
    (L3.check_kmeans_step, _kmeans_empty_to_zero, "stay where it is"),
    (L3.check_kmeans_step, _kmeans_sum, "divide by their number"),
    (L3.check_kmeans_step, lambda z, e: torch.cat([z.mean(0).expand(len(e) - 1, -1), e[-1:]]), "mean of all rows"),
    (L3.check_nearest_code_cosine, lambda z, e: torch.cdist(z, e).argmin(1), "Euclidean"),
    (L3.check_nearest_code_cosine, lambda z, e: (z @ e.T).argmax(1), "long codes"),
    (L3.check_nearest_code_cosine, lambda z, e: (_unit(z) @ _unit(e).T).argmin(1), "least similar"),
    (L3.check_nearest_code_cosine, lambda z, e: (_unit(z) @ _unit(e).T).argmax(0), "shape"),
    (L3.check_vq_loss_per_image, lambda z, e, b: _sum_both(z, e, b).sum(), "one value per image"),
    (L3.check_vq_loss_per_image,
     lambda z, e, b: ((z.detach() - e).pow(2) + b * (z - e.detach()).pow(2)).flatten(1).mean(1), "averaged"),
    (L3.check_vq_loss_per_image, lambda z, e, b: ((z - e).pow(2) * (1 + b)).flatten(1).sum(1), "no stop-gradients"),
    (L3.check_vq_loss_per_image,
     lambda z, e, b: ((z - e.detach()).pow(2) + b * (z.detach() - e).pow(2)).flatten(1).sum(1), "wrong way round"),
    (L3.check_vq_loss_per_image,
     lambda z, e, b: (b * (z.detach() - e).pow(2) + (z - e.detach()).pow(2)).flatten(1).sum(1), "β on the wrong term"),
    (L3.check_vq_loss_per_image, lambda z, e, b: _sum_both(z, e, 1.0), "weighted by β"),
    (L3.check_vq_loss_per_image, lambda z, e, b: _sum_both(z, e, b) / 784, "divided by 784"),
    (L3.check_vq_loss_per_image, lambda z, e, b: (z.detach() - e).pow(2).flatten(1).sum(1), "only one term"),
    (L3.check_vq_loss_per_image, lambda z, e, b: _sum_both(z.detach(), e.detach(), b), "no gradient"),
    (L3.check_perplexity, lambda c: torch.exp(-(_p(c) * _p(c).log()).sum()), "0·log 0"),
    (L3.check_perplexity, lambda c: -(_p(c) * _p(c).clamp_min(1e-12).log()).sum(), "entropy"),
    (L3.check_perplexity, lambda c: torch.exp(-(c * c.clamp_min(1e-12).log()).sum()), "normalise"),
    (L3.check_perplexity, lambda c: 1 / 0, "ZeroDivisionError"),
]


def test_solutions_agree_with_the_library():
    """The reference solutions and the library compute the same things by different code paths."""
    g = torch.Generator().manual_seed(0)
    # k-means step = the library's EMA step with γ = 0 and ε = 0
    z = torch.randn(300, 3, generator=g, dtype=torch.float64)
    q = VectorQuantizer(num_codes=7, code_dim=3, ema=True, decay=0.0, eps=0.0, restart_dead=False).double()
    with torch.no_grad():
        q.codebook.copy_(z[:7])
        q.ema_sum.copy_(z[:7])
    want = L3.solution_kmeans_step(z, z[:7].clone())
    q.ema_step(z, q.nearest(z))
    torch.testing.assert_close(q.codebook.detach(), want)
    # the per-image VQ terms, summed over the batch, are VQVAE's vq_loss × C·H·W × B
    torch.manual_seed(0)
    m = VQVAE(num_codes=16, code_dim=4, ch=8, ema=False, restart_dead=False).eval()
    x = torch.rand(3, 1, 28, 28)
    out = m(x)
    z_e = m.encoder(x)
    e = m.quantizer.lookup(out["indices"])
    per_image = L3.solution_vq_loss_per_image(z_e, e, m.quantizer.beta)
    assert out["vq_loss"].item() == pytest.approx(per_image.mean().item() / 784, rel=1e-5)
    counts = torch.tensor([4.0, 1, 0, 3])
    assert L3.solution_perplexity(counts).item() == pytest.approx(codebook_perplexity(counts).item())
