"""Lessons 01–02 exercises: every reference solution passes its checker; typical mistakes fail."""
import math

import pytest
import torch
import torch.nn.functional as F

from ldm_edu.exercises import lesson01 as L1
from ldm_edu.exercises import lesson02 as L2

PAIRS = [(L1.check_mse_per_image, L1.solution_mse_per_image),
         (L1.check_pca_reconstruct, L1.solution_pca_reconstruct),
         (L1.check_interpolate, L1.solution_interpolate),
         (L2.check_kl_closed_form, L2.solution_kl_closed_form),
         (L2.check_reparameterize, L2.solution_reparameterize),
         (L2.check_negative_elbo, L2.solution_negative_elbo),
         (L2.check_iw_bound, L2.solution_iw_bound)]


@pytest.mark.parametrize("check,solution", PAIRS, ids=lambda f: getattr(f, "__name__", ""))
def test_reference_solution_passes(check, solution, capsys):
    assert check(solution) is True
    assert "✅" in capsys.readouterr().out


def _todo(*args):
    raise NotImplementedError


WRONG = [
    (L1.check_mse_per_image, lambda x, x_hat: (x - x_hat).pow(2).mean(), "shape"),
    (L1.check_mse_per_image, lambda x, x_hat: (x - x_hat).pow(2).flatten(1).mean(1), "averaged over pixels"),
    (L1.check_pca_reconstruct, lambda x, k: x, "differs"),
    (L1.check_pca_reconstruct,
     lambda x, k: x @ torch.linalg.svd(x, full_matrices=False).Vh[:k].T @ torch.linalg.svd(x, full_matrices=False).Vh[:k],
     "mean"),
    (L1.check_interpolate, lambda a, b, n: torch.stack([a + (b - a) * i / n for i in range(n)]), "last b"),
    (L1.check_interpolate, lambda a, b, n: torch.stack([a, b]), "shape"),
    (L2.check_kl_closed_form, lambda mu, lv: (mu.pow(2) + lv.exp() - 1 - lv).sum(1), "factor 2"),
    (L2.check_kl_closed_form, lambda mu, lv: 0.5 * (mu.pow(2) + lv.exp() - 1 - lv), "one KL per sample"),
    (L2.check_reparameterize, lambda mu, lv, eps: mu + lv.exp() * eps, "exp(½ logvar)"),
    (L2.check_reparameterize, lambda mu, lv, eps: (mu + (0.5 * lv).exp() * eps).detach(), "autograd"),
    (L2.check_reparameterize, lambda mu, lv, eps: mu + (0.5 * lv).exp() * torch.randn_like(mu), "use the ε"),
    (L2.check_negative_elbo,
     lambda x, lo, mu, lv: F.binary_cross_entropy_with_logits(lo, x, reduction="none").flatten(1).sum(1),
     "add the KL"),
    (L2.check_iw_bound, lambda lw: lw.mean(0), "ELBO"),
    (L2.check_iw_bound, lambda lw: lw.exp().mean(0).log(), "logsumexp"),
    (L2.check_iw_bound, lambda lw: torch.logsumexp(lw, 0), "math.log(k)"),
    (L2.check_kl_closed_form, _todo, "NotImplementedError"),
    (L1.check_interpolate, lambda a, b, n: 1 / 0, "ZeroDivisionError"),
]


@pytest.mark.parametrize("check,wrong,hint", WRONG, ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(WRONG)])
def test_wrong_answer_fails_with_a_hint(check, wrong, hint, capsys):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert "❌" in out and hint in out, out


def test_solutions_agree_with_the_library():
    from ldm_edu.analysis import interpolate
    from ldm_edu.losses import bernoulli_nll, gaussian_kl
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    torch.testing.assert_close(L2.solution_kl_closed_form(mu, lv), gaussian_kl(mu, lv))
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.5), generator=g)
    lo = torch.randn(3, 1, 28, 28, generator=g)
    torch.testing.assert_close(L2.solution_negative_elbo(x, lo, mu, lv), bernoulli_nll(x, lo) + gaussian_kl(mu, lv))
    a, b = torch.randn(5, generator=g), torch.randn(5, generator=g)
    torch.testing.assert_close(L1.solution_interpolate(a, b, 6), interpolate(a, b, 6))
    lw = torch.randn(10, 2, generator=g)
    torch.testing.assert_close(L2.solution_iw_bound(lw), (lw.exp().mean(0)).log())
    assert math.isfinite(L2.solution_iw_bound(lw - 1000).sum().item())
