"""Evaluation batch size on the CPU: seconds to encode + decode MNIST through the first stages of
lessons 06–07 and to run the classifier, at several batch sizes (what ``nn.eval_batch_size`` picks).

Untrained networks at the `cpu` preset's sizes (the time does not depend on the weights): lesson 06's
KL-f4 and KL-f8 ``FirstStage``, lesson 07's f = 32 ``DCAutoencoder``, and the shipped classifier.
Each timing is the median of ``--repeats`` passes over ``--n`` test images, no gradients.

    .venv/bin/python bench/bench_eval_batch.py [--threads 2] [--n 2000] [--repeats 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ldm_edu.classifier import classifier_outputs
from ldm_edu.data import mnist_tensors
from ldm_edu.dcae import DCAutoencoder
from ldm_edu.latent import FirstStage

SIZES = (32, 64, 256, 1000)


def seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x01, _ = mnist_tensors("test", limit=args.n)
    x = x01 * 2 - 1
    nets = {"KL-f4 FirstStage (lesson 06)": FirstStage(f=4, latent_ch=4, ch=32),
            "KL-f8 FirstStage (lesson 06)": FirstStage(f=8, latent_ch=4, ch=32),
            "DC-AE f=32 (lesson 07)": DCAutoencoder(f=32, latent_ch=64, ch=16, max_ch=64)}
    print(f"{args.n} images, {args.threads} threads; seconds (median of {args.repeats}) at batch size:")
    print("| network | " + " | ".join(str(b) for b in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    with torch.no_grad():
        for name, ae in nets.items():
            ae.eval()
            row = [seconds(lambda b=b: [ae.decode(ae.encode(x[i:i + b])) for i in range(0, len(x), b)], args.repeats)
                   for b in SIZES]
            print(f"| {name}, encode + decode | " + " | ".join(f"{t:.2f}" for t in row) + " |")
        row = [seconds(lambda b=b: classifier_outputs(x01, batch_size=b), args.repeats) for b in SIZES]
        print("| MNIST classifier (FID/IS features) | " + " | ".join(f"{t:.2f}" for t in row) + " |")


if __name__ == "__main__":
    main()
