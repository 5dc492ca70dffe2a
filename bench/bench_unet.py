"""Training throughput of the diffusion UNet on this machine (one Adam step of the ε-loss).

    .venv/bin/python bench/bench_unet.py [--threads 2] [--steps 10]

Prints a markdown table: configuration, parameters, forward+backward FLOPs per image (counted with
torch.utils.flop_counter), seconds per step and images/s. The FLOP counts size the gpu preset.
"""
from __future__ import annotations

import argparse
import time

import torch

from ldm_edu.diffusion import NoiseSchedule, diffusion_loss
from ldm_edu.nn import count_parameters, training_step_flops
from ldm_edu.unet import unet_from_config

CONFIGS = [  # (name, UNet kwargs, input shape without batch, batch)
    ("pixel ch32 (1,2) [DESIGN.md calibration]", dict(ch=32, ch_mult=(1, 2)), (1, 28, 28), 128),
    ("pixel ch16 (1,2,2) cond", dict(ch=16, ch_mult=(1, 2, 2), num_classes=10), (1, 28, 28), 64),
    ("pixel ch24 (1,2,2) cond", dict(ch=24, ch_mult=(1, 2, 2), num_classes=10), (1, 28, 28), 64),
    ("pixel patch2 ch32 (1,2) cond [cpu preset]", dict(ch=32, ch_mult=(1, 2), num_classes=10, patch=2), (1, 28, 28), 64),
    ("pixel patch2 ch48 (1,2) cond", dict(ch=48, ch_mult=(1, 2), num_classes=10, patch=2), (1, 28, 28), 64),
    ("pixel ch64 (1,2,2) res2 cond [gpu preset]", dict(ch=64, ch_mult=(1, 2, 2), num_res=2, num_classes=10), (1, 28, 28), 128),
    ("latent 4x8x8 ch32 (1,2)", dict(in_ch=4, ch=32, ch_mult=(1, 2)), (4, 8, 8), 128),
    ("latent 4x7x7 ch64 (1,2) cond", dict(in_ch=4, ch=64, ch_mult=(1, 2), num_classes=10), (4, 7, 7), 128),
]


def flops_per_image(model, shape, y):
    """Forward + backward FLOPs per image of one training step (``ldm_edu.nn.training_step_flops``)."""
    x, t = torch.randn(2, *shape), torch.tensor([10, 500])
    return training_step_flops(model, x, t, None if y is None else y[:2], batch_size=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", type=str, default=None, help="substring of a config name")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sched = NoiseSchedule(1000)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} timed steps after 2 warm-up\n")
    print("| UNet | params | batch | GFLOP/image (fwd+bwd) | s/step | images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, kw, shape, batch in CONFIGS:
        if args.only and args.only not in name:
            continue
        torch.manual_seed(0)
        model = unet_from_config(kw, in_ch=kw.get("in_ch", 1), image_size=shape[-1])
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        x = torch.randn(batch, *shape)
        y = torch.randint(0, 10, (batch,)) if kw.get("num_classes") else None
        gflop = flops_per_image(model, shape, y) / 1e9
        for i in range(args.steps + 2):
            if i == 2:
                start = time.perf_counter()
            loss = diffusion_loss(model, sched, x, y=y, p_uncond=0.1 if y is not None else 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        dt = (time.perf_counter() - start) / args.steps
        print(f"| {name} | {count_parameters(model)/1e6:.2f}M | {batch} | {gflop:.3f} | {dt:.3f} | {batch/dt:.0f} |")


if __name__ == "__main__":
    main()
