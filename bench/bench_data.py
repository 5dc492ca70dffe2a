"""Images/s of one MNIST epoch: device-resident index batches vs torchvision's DataLoader.

    .venv/bin/python bench/bench_data.py            # prints a markdown table

Both sides yield the same thing to a training step: a float batch (128, 1, 28, 28) on the device
plus labels. torchvision reads the uncompressed idx files, so they are unpacked to a temp dir
first (not timed). The DataLoader uses the usual ToTensor + Normalize transforms and
num_workers=0 and 2 (this machine has 2 cores). Each side reports its best of 3 epochs.
"""
from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ldm_edu.data import DATA_DIR, TensorBatches, mnist_tensors

BATCH = 128
REPEATS = 3   # best of 3 epochs each: the first epoch pays allocator warm-up (page faults)


def epoch_resident(device: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    x, y = mnist_tensors("train", device=device)
    t_load = time.perf_counter() - t0
    batches = TensorBatches(x, y, batch_size=BATCH, seed=0)
    best = 0.0
    for _ in range(REPEATS):
        n, checksum = 0, 0.0
        t0 = time.perf_counter()
        for _ in range(len(batches)):
            xb, yb = next(batches)
            checksum += float(xb[0, 0, 14, 14])
            n += len(xb)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, n / (time.perf_counter() - t0))
    return best, t_load


def epoch_torchvision(device: str, workers: int) -> float:
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for f in DATA_DIR.glob("*.gz"):
            with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        ds = datasets.MNIST(tmp, train=True, download=False, transform=tf)
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True,
                                             num_workers=workers)
        best = 0.0
        for _ in range(REPEATS):
            n, checksum = 0, 0.0
            t0 = time.perf_counter()
            for xb, yb in loader:
                xb, yb = xb.to(device), yb.to(device)
                checksum += float(xb[0, 0, 14, 14])
                n += len(xb)
            best = max(best, n / (time.perf_counter() - t0))
        return best


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fast, t_load = epoch_resident(device)
    rows = [("device-resident index batches (ldm_edu.data)", fast)]
    for w in (0, 2):
        rows.append((f"torchvision MNIST + DataLoader, ToTensor/Normalize, num_workers={w}",
                     epoch_torchvision(device, w)))
    best_loader = max(r[1] for r in rows[1:])
    print(f"One epoch of MNIST train (60 000 images), batch {BATCH}, device {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| data path | images/s | speed-up vs best DataLoader |\n|---|---:|---:|")
    for name, ips in rows:
        print(f"| {name} | {ips:,.0f} | {ips / best_loader:.1f}× |")
    print(f"\nOne-time load of the resident tensor (gunzip, checksum, to float, to device): {t_load:.2f} s")


if __name__ == "__main__":
    main()
