"""How much work each lesson asks of a GPU in the `gpu` preset — counted on the CPU.

    .venv/bin/python bench/gpu_budget.py [--preset gpu] [--tflops 100] [--step-ms 3] [--sample-ms 1.5]

No GPU is needed: every network of every lesson is built at the preset's size, one training step
(forward + backward) or one sampler step (forward) is counted with ``ldm_edu.nn.training_step_flops``
— the course's one FLOP counter — and multiplied by the step counts and batch sizes the preset sets.
Lessons 04–05 and 06 take their workload from their recipes' own cost functions
(``experiments.pixel_ddpm.workload``, ``experiments.latent_diffusion.workload``); lessons 01–03 from
the preset fields below (their sampling is a few hundred images and not counted). The time column
is an *estimate* under two stated assumptions — a sustained bf16 throughput (TFLOP/s) for these small
networks and a fixed per-step overhead (kernel launches, optimizer, Python) — not a measurement.
Replace it with measured figures when a GPU is at hand (docs/BENCHMARKS.md says which are which).
"""
from __future__ import annotations

import argparse

import torch

from ldm_edu.autoencoders import VAE, Autoencoder
from ldm_edu.experiments.latent_diffusion import workload as latent_workload
from ldm_edu.experiments.pixel_ddpm import workload as pixel_workload
from ldm_edu.nn import training_step_flops
from ldm_edu.presets import get_preset
from ldm_edu.token_prior import TokenPrior
from ldm_edu.vq import VQVAE


def _reconstruction(model):
    """A callable whose output is the model's reconstruction (the counter squares and averages it)."""
    def fn(x):
        out = model(x)
        if isinstance(out, dict):
            return out.get("recon", out.get("x_hat", out.get("loss")))
        return out
    return fn


def early_lessons(p) -> list[tuple]:
    """Lessons 01–03: (lesson, part, training steps, training FLOPs, sampler steps, sampling FLOPs)."""
    img = torch.rand(2, 1, 28, 28)
    rows = []
    ae = Autoencoder(p.ae.latent_dim, p.ae.hidden)
    n = p.ae.steps + len(p.ae.sweep_dims) * p.ae.sweep_steps
    rows.append(("01", "AE + latent-size sweep", n,
                 training_step_flops(_reconstruction(ae), img, batch_size=p.ae.batch_size) * n, 0, 0.0))
    vae = VAE(p.vae.latent_dim, p.vae.hidden)
    step = training_step_flops(lambda x: vae.decode(vae.encode(x)[0]), img, batch_size=p.vae.batch_size)
    fwd = training_step_flops(lambda x: vae.decode(vae.encode(x)[0]), img, batch_size=1, backward=False)
    n = p.vae.steps + p.vae.steps_2d + len(p.vae.betas) * p.vae.beta_steps
    rows.append(("02", "VAEs + β study + importance-weighted bound", n, step * n, 0,
                 fwd * p.vae.iw_samples * p.vae.n_eval_iw))
    q = p.vq
    vq = VQVAE(num_codes=q.num_codes, code_dim=q.code_dim, ch=q.ch, ch_mult=q.ch_mult, num_res=q.num_res)
    n = 3 * q.steps + q.extra_steps
    rows.append(("03", "VQ-VAE ×3 variants + extra steps", n,
                 training_step_flops(_reconstruction(vq), img, batch_size=q.batch_size) * n, 0, 0.0))
    prior = TokenPrior(q.num_codes, (7, 7), q.prior_dim, q.prior_depth, q.prior_heads, num_classes=10)
    tokens, y = torch.randint(0, q.num_codes, (2, 7, 7)), torch.tensor([1, 2])
    rows.append(("03", "token prior", q.prior_steps,
                 training_step_flops(prior.loss, tokens, y, batch_size=q.prior_batch_size) * q.prior_steps, 0, 0.0))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpu", help="preset whose workload is counted (default gpu)")
    ap.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s")
    ap.add_argument("--step-ms", type=float, default=3.0, help="assumed overhead per training step")
    ap.add_argument("--sample-ms", type=float, default=1.5, help="assumed overhead per sampling step")
    a, _ = ap.parse_known_args()
    p = get_preset(a.preset, device="cpu")
    torch.manual_seed(0)
    rows = early_lessons(p) + pixel_workload(p) + latent_workload(p)

    R = a.tflops * 1e12
    print(f"{p.name} preset, counted on the CPU; estimate = FLOPs / {a.tflops:g} TFLOP/s + "
          f"{a.step_ms:g} ms per training step + {a.sample_ms:g} ms per sampling step (assumptions, not measured)\n")
    print("| lesson | part | train steps | train PFLOP | sampler steps | sampling PFLOP | estimate (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    totals = {}
    for les, part, n, fl, ns, sfl in rows:
        est = (fl + sfl) / R + n * a.step_ms / 1e3 + ns * a.sample_ms / 1e3
        totals[les] = totals.get(les, 0.0) + est
        print(f"| {les} | {part} | {n:,} | {fl / 1e15:.3f} | {ns:,} | {sfl / 1e15:.3f} | {est:.0f} |")
    print("\n| lesson | estimated total (s) |\n|---|---:|")
    for les, t in totals.items():
        print(f"| {les} | {t:.0f} |")


if __name__ == "__main__":
    main()
