"""Lessons 01–02 exercises: the mistake catalogue (WRONG: checker, wrong answer, the hint it must
print; run by tests/test_exercises.py) and the solutions against the library."""
import math

import torch

from ldm_edu.exercises import lesson01 as L1
from ldm_edu.exercises import lesson02 as L2


def _fitted(transform):
    """A sampler that draws ε like the solution and maps it with ``transform(eps, m, cov)``."""
    def fn(z, n, generator):
        eps = torch.randn(n, z.shape[1], generator=generator)
        return transform(eps, z.mean(0), torch.cov(z.T))
    return fn


def _sigma(lv):
    return (0.5 * lv).exp()


WRONG = [
    (L1.check_fitted_gaussian, _fitted(lambda e, m, c: e @ torch.linalg.cholesky(c).T), "add the mean"),
    (L1.check_fitted_gaussian, _fitted(lambda e, m, c: m + e * c.diagonal().sqrt()), "uncorrelated"),
    (L1.check_fitted_gaussian, _fitted(lambda e, m, c: m + e @ c), "not by Σ itself"),
    (L1.check_fitted_gaussian, _fitted(lambda e, m, c: m + e @ torch.linalg.cholesky(c)), "not ε L"),
    (L1.check_fitted_gaussian,
     lambda z, n, g: z.mean(0) + torch.randn(n, 2) @ torch.linalg.cholesky(torch.cov(z.T)).T, "generator"),
    (L1.check_fitted_gaussian, lambda z, n, g: z[:n], "shape"),
    (L1.check_pca_reconstruct, lambda x, k: x, "differs"),
    (L1.check_pca_reconstruct,
     lambda x, k: x @ torch.linalg.svd(x, full_matrices=False).Vh[:k].T @ torch.linalg.svd(x, full_matrices=False).Vh[:k],
     "mean"),
    (L1.check_interpolate, lambda a, b, n: torch.stack([a + (b - a) * i / n for i in range(n)]), "last b"),
    (L1.check_interpolate, lambda a, b, n: torch.stack([a, b]), "shape"),
    (L2.check_kl_closed_form, lambda mu, lv: (mu.pow(2) + lv.exp() - 1 - lv).sum(1), "factor 2"),
    (L2.check_kl_closed_form, lambda mu, lv: 0.5 * (mu.pow(2) + lv.exp() - 1 - lv), "one KL per sample"),
    (L2.check_score_function, lambda f, mu, lv, e: f(mu + _sigma(lv) * e)[:, None] * e, "divide by σ"),
    (L2.check_score_function, lambda f, mu, lv, e: f(mu + _sigma(lv) * e)[:, None] * _sigma(lv) * e, "divide by σ²"),
    (L2.check_score_function, lambda f, mu, lv, e: f(mu + _sigma(lv) * e)[:, None] * e / _sigma(lv) ** 2, "not ε/σ²"),
    (L2.check_score_function,
     lambda f, mu, lv, e: torch.func.vmap(torch.func.grad(lambda z: f(z[None])[0]))(mu + _sigma(lv) * e),
     "reparametrised"),
    (L2.check_score_function, lambda f, mu, lv, e: (f(mu + _sigma(lv) * e)[:, None] * e / _sigma(lv)).mean(0),
     "one estimate per sample"),
    (L2.check_gaussian_negative_elbo,
     lambda x, xm, mu, lv, s: (x - xm).pow(2).flatten(1).sum(1) / (2 * s**2) + 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(1),
     "normalising constant"),
    (L2.check_gaussian_negative_elbo,
     lambda x, xm, mu, lv, s: (x - xm).pow(2).flatten(1).sum(1) / (2 * s**2) + 392 * math.log(2 * math.pi * s**2),
     "add the KL"),
    (L2.check_gaussian_negative_elbo,
     lambda x, xm, mu, lv, s: ((x - xm).pow(2).flatten(1).sum(1) / (2 * s) + 392 * math.log(2 * math.pi * s**2)
                               + 0.5 * (mu**2 + lv.exp() - 1 - lv).sum(1)), "not 2σ"),
    (L2.check_iw_bound, lambda lw: lw.mean(0), "ELBO"),
    (L2.check_iw_bound, lambda lw: lw.exp().mean(0).log(), "logsumexp"),
    (L2.check_iw_bound, lambda lw: torch.logsumexp(lw, 0), "math.log(k)"),
    (L1.check_interpolate, lambda a, b, n: 1 / 0, "ZeroDivisionError"),
]


def test_solutions_agree_with_the_library():
    from ldm_edu.analysis import gaussian_fit_samples, gradient_estimates, interpolate
    from ldm_edu.autoencoders import reparameterize
    from ldm_edu.losses import gaussian_kl, gaussian_nll
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    torch.testing.assert_close(L2.solution_kl_closed_form(mu, lv), gaussian_kl(mu, lv))
    x, xm = torch.rand(3, 1, 28, 28, generator=g), torch.rand(3, 1, 28, 28, generator=g)
    torch.testing.assert_close(L2.solution_gaussian_negative_elbo(x, xm, mu, lv, 0.2),
                               gaussian_nll(x, xm, 0.2) + gaussian_kl(mu, lv))
    # the score-function solution = the library's estimator with the same ε
    f = lambda z: torch.sin(z).sum(1)
    m1, lv1 = torch.randn(4, generator=g), torch.randn(4, generator=g)
    eps = torch.randn(50, 4, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(L2.solution_score_function(f, m1, lv1, eps),
                               gradient_estimates(f, m1, lv1, 50, "score", generator=torch.Generator().manual_seed(9)))
    torch.testing.assert_close(reparameterize(m1.expand(50, 4), lv1.expand(50, 4), torch.Generator().manual_seed(9)),
                               m1 + (0.5 * lv1).exp() * eps)
    codes = torch.randn(500, 2, generator=g) @ torch.tensor([[2.0, 0.0], [1.0, 0.5]])
    torch.testing.assert_close(L1.solution_fitted_gaussian(codes, 30, torch.Generator().manual_seed(3)),
                               gaussian_fit_samples(codes, 30, torch.Generator().manual_seed(3)))
    a, b = torch.randn(5, generator=g), torch.randn(5, generator=g)
    torch.testing.assert_close(L1.solution_interpolate(a, b, 6), interpolate(a, b, 6))
    lw = torch.randn(10, 2, generator=g)
    torch.testing.assert_close(L2.solution_iw_bound(lw), (lw.exp().mean(0)).log())
    assert math.isfinite(L2.solution_iw_bound(lw - 1000).sum().item())
