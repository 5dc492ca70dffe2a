"""The shipped MNIST classifier and the FID-MNIST / IS-MNIST built on it."""
import numpy as np
import pytest
import torch

from ldm_edu.data import mnist_tensors
from ldm_edu.metrics import (CLASSIFIER_PATH, class_histogram, classifier_accuracy, fid_mnist,
                             frechet_distance, inception_score_mnist, load_classifier, real_data_fid)


@pytest.fixture(scope="module")
def test_images():
    x, y = mnist_tensors("test")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(x), generator=g)[:2000]
    return x[idx], y[idx]


def test_classifier_checkpoint_is_small_and_accurate(test_images):
    assert CLASSIFIER_PATH.exists() and CLASSIFIER_PATH.stat().st_size < 2_000_000
    x, y = test_images
    assert classifier_accuracy(x, y) >= 0.99
    clf = load_classifier()
    assert not clf.training
    assert clf.features(x[:3]).shape == (3, 128)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    """For diagonal covariances FD = ‖μ1−μ2‖² + Σ (σ1 − σ2)² (an independent formula)."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(want, rel=1e-8)
    # a rotated (non-diagonal) pair: FD is invariant under a common rotation
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    got = frechet_distance(q @ mu1, q @ np.diag(s1**2) @ q.T, q @ mu2, q @ np.diag(s2**2) @ q.T)
    assert got == pytest.approx(want, rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(test_images):
    x = test_images[0][:1000]
    assert abs(fid_mnist(x, x)) < 1e-4
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    fids = [fid_mnist(x, (x + s * noise).clamp(0, 1)) for s in (0.05, 0.2, 0.5)]
    assert 0 < fids[0] < fids[1] < fids[2]
    # the real-data floor (train vs test, same n) is far below heavily noised images
    floor = real_data_fid(1000)
    assert 0 < floor < fids[2]


def test_inception_score_bounds(test_images):
    x, y = test_images
    is_real = inception_score_mnist(x)
    assert 9.0 < is_real <= 10.0
    ones = x[y == 1][:200]
    assert inception_score_mnist(ones) < 1.5           # one class only ⇒ IS ≈ 1
    h = class_histogram(x)
    assert h.sum().item() == pytest.approx(1.0) and h.shape == (10,)
    assert (h > 0.07).all() and (h < 0.13).all()


def test_bad_input(test_images):
    x = test_images[0][:10]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid_mnist(x * 2 - 1, x)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        fid_mnist(x[:, 0], x)
    with pytest.raises(ValueError, match="at least 2"):
        fid_mnist(x[:1], x)


def test_non_finite_images_get_a_clear_error():
    from ldm_edu.metrics import fid_mnist
    x = torch.rand(8, 1, 28, 28)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        fid_mnist(x, torch.rand(8, 1, 28, 28))
