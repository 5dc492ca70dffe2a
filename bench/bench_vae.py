"""Lesson 02's 32-d VAE at a preset's size: wall time, steps/s, and test −ELBO / IW bound in nats.

    python bench/bench_vae.py [--preset cpu] [--threads 2]

Test set: all 10 000 MNIST test digits, binarised once with torch.Generator().manual_seed(1234)
(the same pixels lesson 02 uses); single-sample −ELBO (β = 1, closed-form KL); IW bound with the
preset's k on its first ``n_eval_iw`` images. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from ldm_edu.autoencoders import VAE, vae_loss
from ldm_edu.analysis import evaluate_vae, iw_log_likelihood
from ldm_edu.data import TensorBatches, binarize, mnist_tensors
from ldm_edu.presets import get_preset
from ldm_edu.train import fit, seed_everything


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    args, _ = ap.parse_known_args()     # bench/run_all.py passes its own arguments through
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    cfg = preset.vae
    steps = args.steps or cfg.steps
    seed_everything(preset.seed)
    x, _ = mnist_tensors("train", device=preset.device)
    xt, _ = mnist_tensors("test", device=preset.device)
    xt_bin = binarize(xt.cpu(), generator=torch.Generator().manual_seed(1234)).to(preset.device)
    model = VAE(cfg.latent_dim, cfg.hidden).to(preset.device)
    t0 = time.time()
    fit(model, vae_loss(), TensorBatches(x, batch_size=cfg.batch_size, seed=preset.seed), steps, lr=cfg.lr,
        cosine_decay=True, warmup_steps=min(500, steps // 10), amp=preset.amp, progress=False, live_plot=False)
    seconds = time.time() - t0
    ev = evaluate_vae(model, xt_bin)
    iw = -iw_log_likelihood(model, xt_bin[:cfg.n_eval_iw], k=cfg.iw_samples).mean().item()
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"device {preset.device}\n")
    print("| preset | steps | batch | hidden | wall (s) | steps/s | test −ELBO (nats) | recon | KL | "
          f"−log p(x), IW k={cfg.iw_samples} on {cfg.n_eval_iw} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {preset.name} | {steps} | {cfg.batch_size} | {cfg.hidden} | {seconds:.0f} | {steps / seconds:.0f} | "
          f"{ev['neg_elbo']:.2f} | {ev['recon']:.2f} | {ev['kl']:.2f} | {iw:.2f} |")


if __name__ == "__main__":
    main()
