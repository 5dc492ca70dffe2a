"""Lessons 01–02 widgets run headless: built, one state rendered, a slider move re-renders."""
import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from ldm_edu.autoencoders import Autoencoder
from ldm_edu.experiments.sweeps import train_beta_sweep
from ldm_edu.widgets import beta_explorer, latent_explorer


def test_latent_explorer_rerenders_on_slider_move():
    torch.manual_seed(0)
    ae = Autoencoder(latent_dim=2, hidden=16).eval()
    z = torch.randn(50, 2)
    labels = torch.arange(50) % 10
    box = latent_explorer(ae.decode, z, labels)
    assert box.state["renders"] == 1 and box.state["last_error"] is None
    box.controls["z1"].value = 0.5
    box.controls["z2"].value = -0.25
    assert box.state["renders"] == 3 and box.state["last_error"] is None
    fig = box.render(z1=0.5, z2=-0.25)
    assert len(fig.axes) >= 2
    assert any("0.50" in a.get_title() for a in fig.axes)
    # sliders span the codes' bounding box unless told otherwise
    (lo1, hi1), _ = box.bounds
    assert box.controls["z1"].min == pytest.approx(lo1) and lo1 < float(z[:, 0].min()) + 0.5
    square = latent_explorer(ae.decode, z, labels, extent=3.0)
    assert square.controls["z2"].max == pytest.approx(3.0) and square.controls["z1"].value == pytest.approx(0.0)


def test_latent_explorer_reports_a_broken_decoder():
    def broken(z):
        raise RuntimeError("decoder exploded")
    box = latent_explorer(broken, torch.randn(10, 2), torch.arange(10))
    assert isinstance(box.state["last_error"], RuntimeError)


@pytest.fixture(scope="module")
def tiny_sweep():
    torch.manual_seed(0)
    x = torch.rand(200, 1, 28, 28)
    y = torch.arange(200) % 10
    return train_beta_sweep(x, x[:64], y[:64], betas=(0.5, 4.0), steps=3, hidden=16, batch_size=32,
                            n_prior=9, progress=False)


def test_beta_sweep_snapshot_contents(tiny_sweep):
    assert sorted(tiny_sweep) == [0.5, 4.0]
    snap = tiny_sweep[4.0]
    assert snap["mu"].shape == (64, 2) and snap["samples"].shape == (9, 1, 28, 28)
    assert snap["kl_per_dim"].shape == (2,)
    assert snap["neg_elbo"] == pytest.approx(snap["recon"] + snap["kl"], rel=1e-5)


def test_beta_explorer_rerenders_on_slider_move(tiny_sweep):
    box = beta_explorer(tiny_sweep)
    assert box.state["renders"] == 1
    slider = box.controls["beta"]
    slider.value = 0.5 if slider.value != 0.5 else 4.0
    assert box.state["renders"] == 2 and box.state["last_error"] is None
    assert len(box.render(beta=0.5).axes) >= 4


def test_class_histogram_figure_draws_one_bar_group_per_set():
    from ldm_edu.quality_figures import class_histogram_figure
    flat = torch.full((10,), 0.1, dtype=torch.float64)
    peaked = torch.zeros(10, dtype=torch.float64)
    peaked[8] = 1.0
    fig = class_histogram_figure({"uniform": {"hist": flat, "effective_classes": 10.0}, "one digit": peaked})
    ax = fig.axes[0]
    assert len(ax.patches) == 20                                  # 10 bars per set
    assert max(p.get_height() for p in ax.patches) == pytest.approx(1.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("10.0 effective classes" in t for t in labels) and "one digit" in labels
