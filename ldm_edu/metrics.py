"""Quality measures used across lessons.

PSNR; a small MNIST classifier (shipped checkpoint) and, on its features, FID-MNIST and IS-MNIST.
"""
from __future__ import annotations

import torch


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image in dB: 10 log10(range² / MSE). Inputs in [0, range]."""
    if x.shape != x_hat.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(x_hat.shape)}")
    mse = (x - x_hat).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


# ----------------------------------------------------------------------------- MNIST classifier
# A small CNN trained once by scripts/train_classifier.py and shipped as ldm_edu/assets/mnist_classifier.pt.
# Its penultimate layer (128 features) replaces Inception-v3 in FID and IS: "FID-MNIST" and
# "IS-MNIST" are only comparable with other numbers computed by this same network.
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

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
def classifier_features(images: torch.Tensor, device=None, batch_size: int = 1000) -> torch.Tensor:
    """128-d penultimate features of the shipped classifier, float64 on the CPU. Images in [0, 1]."""
    x = _check_unit_images(images, "images")
    device = device or x.device
    clf = load_classifier(device)
    return torch.cat([clf.features(x[i:i + batch_size].to(device)).double().cpu()
                      for i in range(0, len(x), batch_size)])


@torch.no_grad()
def classifier_probs(images: torch.Tensor, device=None, batch_size: int = 1000) -> torch.Tensor:
    """Softmax class probabilities p(y | x), (N, 10). Images in [0, 1]."""
    x = _check_unit_images(images, "images")
    device = device or x.device
    clf = load_classifier(device)
    return torch.cat([clf(x[i:i + batch_size].to(device)).softmax(-1).double().cpu()
                      for i in range(0, len(x), batch_size)])


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}) (Heusel et al. 2017), float64.

    The matrix square root goes through symmetric eigendecompositions, so it is stable and real."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    w, v = np.linalg.eigh(cov1)
    s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = s1 @ cov2 @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * tr_sqrt)


def fid_mnist(images_a: torch.Tensor, images_b: torch.Tensor, device=None) -> float:
    """FID-MNIST: the Fréchet distance between Gaussians fitted to the shipped classifier's
    128-d penultimate features of two image sets. **Inputs in [0, 1]**, shape (N, 1, 28, 28)
    (samples in [−1, 1]: pass ``from_signed(x)``). Small sets bias FID upwards: compare numbers
    at the same N, next to ``real_data_fid(N)`` (the floor two real sets reach)."""
    fa, fb = classifier_features(images_a, device), classifier_features(images_b, device)
    if len(fa) < 2 or len(fb) < 2:
        raise ValueError("FID needs at least 2 images per set (a few hundred for a useful number)")
    return frechet_distance(fa.mean(0).numpy(), np.cov(fa.numpy(), rowvar=False),
                            fb.mean(0).numpy(), np.cov(fb.numpy(), rowvar=False))


def inception_score_mnist(images: torch.Tensor, device=None) -> float:
    """IS-MNIST = exp E_x KL(p(y|x) ‖ p(y)) with the shipped classifier (Salimans et al. 2016).
    Between 1 (one class, or unsure) and 10 (confident and all classes equally often); real
    MNIST test images score ≈ 9.6 (2000 test images). Inputs in [0, 1]."""
    p = classifier_probs(images, device).clamp_min(1e-12)
    py = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - py.log())).sum(1).mean()))


def class_histogram(images: torch.Tensor, device=None) -> torch.Tensor:
    """Fraction of images the classifier assigns to each digit 0-9, shape (10,). Inputs in [0, 1]."""
    pred = classifier_probs(images, device).argmax(1)
    return torch.bincount(pred, minlength=10).double() / max(1, len(pred))


def classifier_accuracy(images: torch.Tensor, labels: torch.Tensor, device=None) -> float:
    """Fraction of images classified as ``labels`` (also: does a conditional sample show its class?)."""
    pred = classifier_probs(images, device).argmax(1)
    return float((pred == labels.cpu()).double().mean())


_REAL_FID: dict = {}


def real_data_fid(n: int = 1000, seed: int = 0) -> float:
    """The floor: FID-MNIST between n random training and n random test images. A generator
    evaluated with n samples against n test images cannot be expected to go below this."""
    from .data import mnist_tensors

    key = (int(n), int(seed))
    if key not in _REAL_FID:
        g = torch.Generator().manual_seed(seed)
        xtr, _ = mnist_tensors("train")
        xte, _ = mnist_tensors("test")
        if n > len(xte):
            raise ValueError(f"n must be ≤ {len(xte)} (the test set size), got {n}")
        a = xtr[torch.randperm(len(xtr), generator=g)[:n]]
        b = xte[torch.randperm(len(xte), generator=g)[:n]]
        _REAL_FID[key] = fid_mnist(a, b)
    return _REAL_FID[key]


def reference_images(n: int = 1000, split: str = "test", seed: int = 0) -> torch.Tensor:
    """n random MNIST images in [0, 1] (the reference set for FID-MNIST of samples)."""
    from .data import mnist_tensors

    x, _ = mnist_tensors(split)
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(len(x), generator=g)[:n]]
