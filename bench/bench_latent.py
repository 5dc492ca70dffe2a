"""Pixel vs latent UNet: seconds per training step at (nearly) equal parameter count.

Lesson 04's UNet (``preset.diffusion``'s ch, ch_mult, num_res, attention; ``--ch`` overrides the
width) is built with ``unet_from_config`` for 28×28×1 pixels — without and with lesson 04's patch=2
— and for each latent c × 32/f × 32/f of lesson 06 (patch 1): equal parameters up to the first and
last convolution; one training step = forward + ε-MSE + backward + Adam on a batch.
Steps of all shapes are interleaved (round robin) so a machine shared with other jobs slows them
alike; we report the median wall time and the median CPU (process) time per step.

    .venv/bin/python bench/bench_latent.py [--threads 2] [--batch 64] [--repeats 7] [--preset cpu]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ldm_edu.diffusion import NoiseSchedule, diffusion_loss
from ldm_edu.nn import count_parameters
from ldm_edu.presets import get_preset
from ldm_edu.unet import unet_from_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ch", type=int, default=None)
    ap.add_argument("--preset", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = get_preset(args.preset, device="cpu").diffusion
    cfg = {k: getattr(d, k) for k in ("ch", "ch_mult", "num_res", "attn", "num_classes")}
    if args.ch:
        cfg["ch"] = args.ch
    schedule = NoiseSchedule(d.T, d.schedule)
    shapes = {"pixel 1×28×28": (1, 28, 1), "pixel 1×28×28, patch 2 (lesson 04)": (1, 28, 2),
              "latent f=2 2×16×16": (2, 16, 1), "latent f=4 4×8×8": (4, 8, 1), "latent f=8 4×4×4": (4, 4, 1)}
    runs = {}
    for name, (c, s, patch) in shapes.items():
        unet = unet_from_config({**cfg, "patch": patch}, in_ch=c, image_size=s)
        opt = torch.optim.Adam(unet.parameters(), lr=1e-4)
        x = torch.randn(args.batch, c, s, s)
        y = torch.randint(0, 10, (args.batch,))

        def step(unet=unet, opt=opt, x=x, y=y):
            loss = diffusion_loss(unet, schedule, x, y=y, p_uncond=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step()                                          # warm-up
        runs[name] = {"step": step, "params": count_parameters(unet), "wall": [], "cpu": []}
    for _ in range(args.repeats):                       # round robin: contention hits all alike
        for r in runs.values():
            w0, c0 = time.perf_counter(), time.process_time()
            r["step"]()
            r["wall"].append(time.perf_counter() - w0)
            r["cpu"].append(time.process_time() - c0)
    base = runs["pixel 1×28×28"]
    bw, bc = statistics.median(base["wall"]), statistics.median(base["cpu"])
    print(f"threads={args.threads}, batch={args.batch}, lesson 04's UNet ({args.preset}): {cfg}\n")
    print("| input | UNet params | wall s/step | CPU s/step | speed-up vs pixel (wall / CPU) |")
    print("|---|---:|---:|---:|---:|")
    for name, r in runs.items():
        w, c = statistics.median(r["wall"]), statistics.median(r["cpu"])
        print(f"| {name} | {r['params']:,} | {w:.4f} | {c:.4f} | {bw / w:.1f}× / {bc / c:.1f}× |")


if __name__ == "__main__":
    main()
