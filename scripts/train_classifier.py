"""Train the MNIST classifier behind FID-MNIST / IS-MNIST and save ldm_edu/assets/mnist_classifier.pt.

    .venv/bin/python scripts/train_classifier.py [--epochs 3] [--out PATH]

Reproducible (seeded, 2 CPU threads): small random shifts (±2 px) as augmentation, AdamW with a
cosine decay, then the test accuracy is printed and stored in the checkpoint's ``extra``.
About 3-6 min on 2 CPU cores. The checkpoint holds fp32 weights (≈ 0.5 MB).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ldm_edu.data import TensorBatches, mnist_tensors
from ldm_edu.classifier import CLASSIFIER_PATH, MNISTClassifier
from ldm_edu.train import fit, save_checkpoint, seed_everything


def shift(x, y, max_px=2):
    """Random translation by up to ±max_px pixels (padding with background)."""
    pad = F.pad(x, (max_px,) * 4)
    dx, dy = torch.randint(0, 2 * max_px + 1, (2,)).tolist()
    return pad[:, :, dy:dy + 28, dx:dx + 28], y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", type=str, default=str(CLASSIFIER_PATH))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)
    xtr, ytr = mnist_tensors("train")
    xte, yte = mnist_tensors("test")
    model = MNISTClassifier()
    steps = int(args.epochs * len(xtr) / args.batch)
    batches = TensorBatches(xtr, ytr, batch_size=args.batch, seed=0, transform=shift)

    def loss_fn(m, batch):
        x, y = batch
        logits = m(x)
        return F.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}

    start = time.time()
    hist = fit(model, loss_fn, batches, steps, lr=2e-3, weight_decay=1e-4, warmup_steps=100,
               cosine_decay=True, desc="MNIST classifier", live_plot=False)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xte[i:i + 1000]).argmax(1) for i in range(0, len(xte), 1000)])
    acc = (pred == yte).float().mean().item()
    print(f"test accuracy {acc:.4f} after {steps} steps, {time.time() - start:.0f} s")
    save_checkpoint(args.out, model, history=hist, extra={"test_accuracy": acc, "steps": steps})
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
