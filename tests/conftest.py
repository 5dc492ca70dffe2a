"""Fixtures shared by several test files."""
import pytest
import torch

from ldm_edu.data import mnist_tensors


@pytest.fixture(scope="session")
def test_images():
    """2000 random MNIST test images in [0, 1], (N, 1, 28, 28), and their labels (seed 0)."""
    x, y = mnist_tensors("test")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(x), generator=g)[:2000]
    return x[idx], y[idx]
