"""MNIST from the shipped idx files, and device-resident batching.

The whole data set is one tensor on the device; a batch is a random index into it. On small
data this is the biggest speed lever there is (no DataLoader workers, no per-sample Python):
bench/bench_data.py measures it against torchvision's DataLoader.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch

DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "MNIST" / "raw"

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SHA256 = {
    "train-images-idx3-ubyte.gz": "71524e2cd1ad2968737f7f2f2ff69cbfc32df8ccddff51593f7cb2d4e0eb5b64",
    "train-labels-idx1-ubyte.gz": "fe03b8bd7915f70bf5aa08be480aa413fbd85afcaa58b35d230d335f284fd88e",
    "t10k-images-idx3-ubyte.gz": "5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341",
    "t10k-labels-idx1-ubyte.gz": "ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6",
}


class DataError(RuntimeError):
    """A data file is missing or does not match its checksum."""


def _read_idx(path: Path) -> torch.Tensor:
    if not path.exists():
        raise DataError(
            f"MNIST file not found: {path}\n"
            "The course ships MNIST in data/MNIST/raw/. Restore it with `git checkout -- data/` "
            "(or re-create it with scripts/convert_mnist.py, see data/README.md)."
        )
    blob = path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SHA256[path.name]:
        raise DataError(
            f"MNIST file {path.name} is corrupt (sha256 {digest[:12]}…, expected "
            f"{SHA256[path.name][:12]}…). Restore it with `git checkout -- data/`."
        )
    raw = gzip.decompress(blob)
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


@lru_cache(maxsize=2)
def _load(split: str, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_file, label_file = FILES[split]
    images = _read_idx(Path(data_dir) / image_file)
    labels = _read_idx(Path(data_dir) / label_file).long()
    return images, labels


def load_mnist(split: str = "train", data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images ``uint8 (N, 28, 28)`` and labels ``int64 (N,)`` in the original order.

    ``split`` is "train" (60 000) or "test" (10 000). Returns fresh tensors (safe to modify).
    """
    if split not in FILES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    images, labels = _load(split, str(data_dir or DATA_DIR))
    return images.clone(), labels.clone()


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 28, 28) in [0, 1]."""
    if images.is_floating_point():
        raise TypeError(f"to_unit/to_signed take uint8 images (0–255), got {images.dtype}: float images "
                        "are already scaled — use x * 2 - 1 for [0, 1] → [−1, 1], or mnist_tensors(scale='signed')")
    return images.float().div(255.0).unsqueeze(1) if images.dim() == 3 else images.float().div(255.0)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) → float (N, 1, 28, 28) in [-1, 1], the range the diffusion lessons use."""
    return to_unit(images) * 2 - 1


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1] (clamped), for display and metrics."""
    return ((x + 1) / 2).clamp(0, 1)


def mnist_tensors(split: str = "train", device: str | torch.device = "cpu", scale: str = "unit",
                  limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float ``(N, 1, 28, 28)`` on ``device`` (scale "unit" → [0,1], "signed" → [-1,1])."""
    if scale not in ("unit", "signed"):
        raise ValueError(f"unknown scale {scale!r}: use 'unit' ([0, 1]) or 'signed' ([-1, 1])")
    images, labels = load_mnist(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = to_unit(images) if scale == "unit" else to_signed(images)
    return x.to(device), labels.to(device)


class TensorBatches:
    """Endless shuffled mini-batches from tensors that already live on the device.

    >>> batches = TensorBatches(x, y, batch_size=128, seed=0)
    >>> xb, yb = next(batches)
    Each epoch is a fresh permutation (drawn on the device from a seeded generator); the last
    incomplete batch of an epoch is dropped so every step sees the same batch size.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 128, seed: int = 0,
                 transform=None):
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError("all tensors must have the same first dimension")
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the data set ({n})")
        self.tensors, self.batch_size, self.transform = tensors, batch_size, transform
        self.device = tensors[0].device
        self.seed = seed                 # part of a run's key in ldm_edu.pretrained
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.epoch, self._order, self._pos = 0, None, n

    def __len__(self) -> int:
        return len(self.tensors[0]) // self.batch_size

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        n = len(self.tensors[0])
        if self._pos + self.batch_size > n:
            self._order = torch.randperm(n, generator=self.generator).to(self.device)
            self._pos, self.epoch = 0, self.epoch + 1
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        # index_select, not t[idx]: on CPU advanced indexing measured ~50x slower here
        batch = tuple(t.index_select(0, idx) for t in self.tensors)
        if self.transform is not None:
            batch = self.transform(*batch)
        return batch if len(batch) > 1 else batch[0]


def balanced_labels(n: int, num_classes: int = 10, device="cpu") -> torch.Tensor:
    """0, 1, …, 9, 0, 1, … — n labels with every class equally often."""
    return (torch.arange(n, device=device) % num_classes).long()


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarisation: each pixel ~ Bernoulli(intensity) (the VAE literature's MNIST)."""
    return torch.bernoulli(x, generator=generator)
