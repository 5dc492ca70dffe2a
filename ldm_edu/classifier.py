"""The shipped MNIST classifier: the network, its weights, and what it says about an image set.

A small CNN trained once by scripts/train_classifier.py and shipped as ldm_edu/assets/mnist_classifier.pt.
Its penultimate layer (128 features) replaces Inception-v3 in FID and IS (``ldm_edu.metrics``):
"FID-MNIST" and "IS-MNIST" are only comparable with other numbers computed by this same network.
It also labels samples (class histograms, the accuracy of class-conditional samples). The
classifier runs ONCE per image set (``classifier_outputs``); every metric reuses its features and
probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .nn import eval_batch_size, eval_batches

CLASSIFIER_PATH = Path(__file__).parent / "assets" / "mnist_classifier.pt"


class MNISTClassifier(nn.Module):
    """conv16-pool-conv32-pool-conv64-pool → 128 features → 10 logits (≈ 0.1M params, ≈ 2 MMAC/image).

    Input: images in [0, 1], shape (B, 1, 28, 28). ``features(x)`` gives the 128-d penultimate
    activations used by FID-MNIST."""

    def __init__(self, width: int = 16, feat: int = 128):
        super().__init__()
        self.config = dict(width=width, feat=feat)
        w = width

        def block(a, b):
            return [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]

        self.body = nn.Sequential(*block(1, w), *block(w, 2 * w), *block(2 * w, 4 * w),   # 28 → 14 → 7 → 3
                                  nn.Flatten(), nn.Linear(4 * w * 9, feat), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feat, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 0.1307) / 0.3081)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


_CLASSIFIERS: dict = {}


def load_classifier(device="cpu", path: str | Path | None = None) -> MNISTClassifier:
    """The shipped MNIST classifier in eval mode (cached per device)."""
    from .train import load_checkpoint

    key = (str(device), str(path or CLASSIFIER_PATH))
    if key not in _CLASSIFIERS:
        p = Path(path or CLASSIFIER_PATH)
        if not p.exists():
            raise FileNotFoundError(f"no classifier checkpoint at {p}: run "
                                    "`python scripts/train_classifier.py` to train it (≈ 2 min on a CPU)")
        blob = torch.load(p, map_location="cpu", weights_only=True)
        model = MNISTClassifier(**blob.get("config", {}))
        load_checkpoint(p, model)
        _CLASSIFIERS[key] = model.to(device).eval().requires_grad_(False)
    return _CLASSIFIERS[key]


def _check_unit_images(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be MNIST-shaped images (N, 1, 28, 28), got {got}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contain NaN or inf: the model that made them diverged or was sampled "
                         "with too few steps for its schedule; check its training loss first")
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.05 or hi > 1.05:
        raise ValueError(f"{name} must be in [0, 1] (got values in [{lo:.2f}, {hi:.2f}]); "
                         "map [-1, 1] samples with ldm_edu.data.from_signed(x) first")
    return x.float().clamp(0, 1)


@torch.no_grad()
def classifier_features(images: torch.Tensor, device=None, batch_size: int | None = None) -> torch.Tensor:
    """128-d penultimate features of the shipped classifier, float64 on the CPU. Images in [0, 1]."""
    x = _check_unit_images(images, "images")
    device = device or x.device
    clf = load_classifier(device)
    return torch.cat(eval_batches(lambda xb: clf.features(xb.to(device)).double().cpu(), x,
                                  batch_size or eval_batch_size(device)))


@torch.no_grad()
def classifier_probs(images: torch.Tensor, device=None, batch_size: int | None = None) -> torch.Tensor:
    """Softmax class probabilities p(y | x), (N, 10). Images in [0, 1]."""
    x = _check_unit_images(images, "images")
    device = device or x.device
    clf = load_classifier(device)
    return torch.cat(eval_batches(lambda xb: clf(xb.to(device)).softmax(-1).double().cpu(), x,
                                  batch_size or eval_batch_size(device)))


def class_histogram(images: torch.Tensor, device=None) -> torch.Tensor:
    """Fraction of images the classifier assigns to each digit 0-9, shape (10,). Inputs in [0, 1]."""
    pred = classifier_probs(images, device).argmax(1)
    return torch.bincount(pred, minlength=10).double() / max(1, len(pred))


def classifier_accuracy(images: torch.Tensor, labels: torch.Tensor, device=None) -> float:
    """Fraction of images classified as ``labels`` (also: does a conditional sample show its class?)."""
    pred = classifier_probs(images, device).argmax(1)
    return float((pred == labels.cpu()).double().mean())


@dataclass(frozen=True)
class ClassifierOutputs:
    """What the shipped classifier says about one image set: 128-d features and class
    probabilities p(y | x), float64 numpy arrays. Computed once, reused by every metric."""
    features: np.ndarray
    probs: np.ndarray

    def __len__(self) -> int:
        return len(self.features)


@torch.no_grad()
def classifier_outputs(images: torch.Tensor, device=None, batch_size: int | None = None) -> ClassifierOutputs:
    """One classifier pass over ``images`` (in [0, 1], (N, 1, 28, 28)): features and p(y | x)."""
    x = _check_unit_images(images, "images")
    device = device or x.device
    clf = load_classifier(device)

    def one_batch(xb):
        f = clf.features(xb.to(device))
        return f.double().cpu(), clf.head(f).softmax(-1).double().cpu()     # eval mode: dropout is the identity

    feats, probs = zip(*eval_batches(one_batch, x, batch_size or eval_batch_size(device)))
    return ClassifierOutputs(torch.cat(feats).numpy(), torch.cat(probs).numpy())


def as_features(x, name: str = "images") -> np.ndarray:
    """Images (N, 1, 28, 28) in [0, 1] → classifier features (N, 128); features (N, D) as a
    tensor or array, or ``ClassifierOutputs``, pass through. float64 numpy."""
    if isinstance(x, ClassifierOutputs):
        return x.features
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return classifier_outputs(_check_unit_images(x, name)).features
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    if isinstance(x, np.ndarray) and x.ndim == 2:
        if not np.isfinite(x).all():
            raise ValueError(f"{name} features contain NaN or inf")
        return x.astype(np.float64, copy=False)
    got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
    raise ValueError(f"{name} must be MNIST images (N, 1, 28, 28) in [0, 1] or features (N, D), got {got}")
