"""Library pieces lesson 02 relies on: the leave-one-out baseline of the score-function gradient,
the β sweep's snapshots (per-image −ELBO, the caller's binarised test set) and the β figure."""
import matplotlib
matplotlib.use("Agg")
import pytest
import torch

from ldm_edu.analysis import evaluate_vae, gradient_estimates, kl_per_dim
from ldm_edu.autoencoders import VAE
from ldm_edu.experiments.sweeps import train_beta_sweep, vae_snapshot


def test_leave_one_out_baseline_by_hand():
    # n = 3 samples, d = 1: estimate_i = (f_i − mean of the other two) · (z_i − μ)/σ²
    f = lambda z: 3.0 * z.sum(1) + z.pow(2).sum(1)
    mu, logvar = torch.tensor([0.2]), torch.tensor([0.5])
    eps = torch.randn(3, 1, generator=torch.Generator().manual_seed(4))
    z = mu + (0.5 * logvar).exp() * eps
    fz = f(z)
    b = torch.stack([(fz[1] + fz[2]) / 2, (fz[0] + fz[2]) / 2, (fz[0] + fz[1]) / 2])
    want = ((fz - b)[:, None] * (z - mu) / logvar.exp())
    got = gradient_estimates(f, mu, logvar, 3, "score", baseline=True, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, want)


def test_leave_one_out_baseline_is_unbiased_where_the_plain_mean_is_not():
    # f(z) = a·z: ∇_μ E[f] = a exactly. With n = 2 samples per estimate, subtracting the mean over
    # both samples (f_i included) gives E = a (n − 1)/n = a/2; the leave-one-out baseline gives a.
    a = torch.tensor([2.0, -1.0])
    f = lambda z: z @ a
    mu, logvar = torch.tensor([0.3, -0.4]), torch.tensor([0.0, -0.5])
    g = torch.Generator().manual_seed(0)
    est = torch.cat([gradient_estimates(f, mu, logvar, 2, "score", baseline=True, generator=g) for _ in range(3000)])
    se = est.std(0) / len(est) ** 0.5
    assert ((est.mean(0) - a).abs() < 4 * se).all(), (est.mean(0), a, se)
    assert ((est.mean(0) - a / 2).abs() > 4 * se).all()          # the biased version would be caught
    with pytest.raises(ValueError, match="n ≥ 2"):
        gradient_estimates(f, mu, logvar, 1, "score", baseline=True)
    with pytest.raises(ValueError, match="score"):
        gradient_estimates(f, mu, logvar, 5, "reparam", baseline=True)


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 1, 28, 28, generator=g) > 0.7).float() * torch.rand(n, 1, 28, 28, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g)


def test_vae_snapshot_per_image_elbo_matches_evaluate_vae():
    torch.manual_seed(0)
    x, y = _data()
    xb = torch.bernoulli(x, generator=torch.Generator().manual_seed(1))
    model = VAE(latent_dim=2, hidden=16)
    snap = vae_snapshot(model, x, y, xb, torch.randn(4, 2))
    ev = evaluate_vae(model, xb)
    assert snap["neg_elbo_per_image"].shape == (len(x),)
    for k in ("neg_elbo", "recon", "kl"):
        assert snap[k] == pytest.approx(ev[k], rel=1e-5)
    assert float(snap["neg_elbo_per_image"].mean()) == pytest.approx(ev["neg_elbo"], rel=1e-5)
    torch.testing.assert_close(snap["kl_per_dim"], kl_per_dim(model, xb))
    torch.testing.assert_close(snap["mu"], model.encode(xb)[0].detach())        # codes of the pixels it evaluates


def test_beta_sweep_uses_the_callers_binarised_test_set():
    x, y = _data()
    xb = torch.bernoulli(x, generator=torch.Generator().manual_seed(5))
    s1 = train_beta_sweep(x, x, y, betas=(1.0,), steps=2, hidden=16, batch_size=32, x_eval_bin=xb, progress=False)
    s2 = train_beta_sweep(x, x, y, betas=(1.0,), steps=2, hidden=16, batch_size=32, progress=False)
    # same training (same seed), different evaluation pixels: the −ELBO differs unless xb is ignored
    assert s1[1.0]["neg_elbo"] != pytest.approx(s2[1.0]["neg_elbo"], rel=1e-6)
    with pytest.raises(ValueError, match="x_eval_bin"):
        train_beta_sweep(x, x, y, betas=(1.0,), steps=1, hidden=16, batch_size=32, x_eval_bin=xb[:10], progress=False)


def test_beta_figure_says_inactive_and_counts_codes_outside_the_box():
    from ldm_edu.viz import beta_figure
    x, y = _data()
    sweep = train_beta_sweep(x, x, y, betas=(0.5, 4.0), steps=2, hidden=16, batch_size=32, progress=False)
    sweep[0.5]["kl_per_dim"] = torch.tensor([1.5, 0.001])
    sweep[0.5]["mu"] = torch.cat([torch.randn(len(x) - 1, 2), torch.tensor([[1e3, 0.0]])])   # one far outlier
    fig = beta_figure(sweep, 0.5)
    kl_ax = next(a for a in fig.axes if "KL per dim" in a.get_title())
    texts = [t.get_text() for t in kl_ax.texts] + [kl_ax.get_title()]
    assert any("inactive" in t for t in texts) and not any("collapsed" in t for t in texts)
    assert "outside" in fig.axes[0].get_title()


def test_plot_history_labels_and_latent_grid_and_kl_figures():
    from types import SimpleNamespace
    from ldm_edu.analysis import latent_grid
    from ldm_edu.viz import kl_per_dim_figure, latent_grid_figure, plot_history
    h = SimpleNamespace(steps=[1, 2, 3], loss=[3.0, 2.0, 1.0], metrics={"kl": [1.0, 1.0, 1.0]},
                        smoothed=lambda name, w: [1.0, 1.0, 1.0])
    fig = plot_history(h, title="−ELBO (nats)", metrics=("kl",), labels={"kl": "KL (nats)"})
    assert [a.get_title() for a in fig.axes] == ["−ELBO (nats)", "KL (nats)"]
    grid = latent_grid(4)
    fig = latent_grid_figure(torch.rand(16, 1, 28, 28), grid, title="g")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == f"{float(grid[:, 0].min()):.2f}" and labels[-1] == f"{float(grid[:, 0].max()):.2f}"
    ylabels = [t.get_text() for t in ax.get_yticklabels()]
    assert ylabels[0] == f"{float(grid[:, 1].max()):.2f}"              # top row = largest z₂
    fig = kl_per_dim_figure(torch.tensor([0.001, 2.0, 0.5]), 0.01)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == sorted(heights, reverse=True) and fig.axes[0].get_yscale() == "log"


def test_latent_explorer_title_reaches_the_figure():
    from ldm_edu.widgets import latent_explorer
    box = latent_explorer(lambda z: torch.zeros(len(z), 1, 28, 28), torch.randn(20, 2), torch.arange(20) % 10,
                          extent=4, title="2-D VAE: posterior means μ(x)")
    assert box.render(z1=0.0, z2=0.0).axes[0].get_title() == "2-D VAE: posterior means μ(x)"
