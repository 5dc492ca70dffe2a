"""How much work each lesson asks of a GPU in the `gpu` preset — counted on the CPU.

    .venv/bin/python bench/gpu_budget.py [--tflops 100] [--step-ms 3] [--sample-ms 1.5]

No GPU is needed: every network of every lesson is built at its `gpu` size, one forward (+ backward)
pass on two images is counted with torch.utils.flop_counter, and the result is multiplied by the
lesson's step counts and batch sizes. The time column is an *estimate* under two stated
assumptions — a sustained bf16 throughput (TFLOP/s) for these small networks, and a fixed
per-step overhead (kernel launches, optimizer, Python) — not a measurement. Replace it with
measured figures when a GPU is at hand (docs/BENCHMARKS.md says which are which).
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from ldm_edu.autoencoders import VAE, Autoencoder
from ldm_edu.vq import VQVAE
from ldm_edu.latent import FirstStage
from ldm_edu.experiments.latent_diffusion import study_step_counts
from ldm_edu.experiments.pixel_ddpm import build_unet
from ldm_edu.presets import get_preset
from ldm_edu.token_prior import TokenPrior
from ldm_edu.unet import UNet


def per_image(fn, backward: bool) -> float:
    """FLOPs per image of fn(batch of 2) (→ a scalar when backward)."""
    with FlopCounterMode(display=False) as fc:
        out = fn(2)
        if backward:
            out.backward()
    return fc.get_total_flops() / 2


def train_cost(model_fn, loss_fn):
    m = model_fn()
    return per_image(lambda b: loss_fn(m, b), True)


def unet_fwd(unet, shape):
    y = torch.tensor([1, 2])
    return per_image(lambda b: unet(torch.randn(b, *shape), torch.tensor([5, 9]), y[:b]).sum(), False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tflops", type=float, default=100.0, help="assumed sustained TFLOP/s")
    ap.add_argument("--step-ms", type=float, default=3.0, help="assumed overhead per training step")
    ap.add_argument("--sample-ms", type=float, default=1.5, help="assumed overhead per sampling step")
    a, _ = ap.parse_known_args()
    p = get_preset("gpu", device="cpu")
    torch.manual_seed(0)
    img = lambda b: torch.rand(b, 1, 28, 28) * 2 - 1
    rows = []   # (lesson, part, training steps, train FLOPs, sampler steps, sample FLOPs)

    # lesson 01: AE (main + latent-size sweep)
    ae_cost = train_cost(lambda: Autoencoder(p.ae.latent_dim, p.ae.hidden),
                         lambda m, b: (m.decode(m.encode(img(b))) - img(b)).pow(2).mean())
    n = p.ae.steps + len(p.ae.sweep_dims) * p.ae.sweep_steps
    rows.append(("01", "AE + sweep", n, ae_cost * p.ae.batch_size * n, 0, 0.0))

    # lesson 02: 32-d VAE, 2-D VAE, β study, importance-weighted bound
    vae = VAE(p.vae.latent_dim, p.vae.hidden)
    vae_cost = per_image(lambda b: vae.decode(vae.encode(img(b))[0]).sum(), True)
    n = p.vae.steps + p.vae.steps_2d + len(p.vae.betas) * p.vae.beta_steps
    fwd = vae_cost / 3
    rows.append(("02", "VAEs + β study + IW bound", n, vae_cost * p.vae.batch_size * n, 0,
                 fwd * p.vae.iw_samples * p.vae.n_eval_iw))

    # lesson 03: three VQ-VAE variants + extra steps, then the token prior
    q = p.vq
    vq = VQVAE(num_codes=q.num_codes, code_dim=q.code_dim, ch=q.ch, ch_mult=q.ch_mult, num_res=q.num_res)
    vq_cost = per_image(lambda b: vq(torch.rand(b, 1, 28, 28))["recon"], True)
    n = 3 * q.steps + q.extra_steps
    prior = TokenPrior(q.num_codes, (7, 7), q.prior_dim, q.prior_depth, q.prior_heads, num_classes=10)
    pr_cost = per_image(lambda b: prior.loss(torch.randint(0, q.num_codes, (b, 7, 7)), torch.tensor([1, 2])[:b]), True)
    rows.append(("03", "VQ-VAE ×3 variants", n, vq_cost * q.batch_size * n, 0, 0.0))
    rows.append(("03", "token prior (+ 49-step sampling)", q.prior_steps, pr_cost * q.prior_batch_size * q.prior_steps,
                 49, pr_cost / 3 * 49 * 40))

    # lessons 04-05: the pixel UNet; sampling counted with classifier-free guidance (2 passes)
    d = p.diffusion
    unet = build_unet(d)
    u_train = train_cost(lambda: unet, lambda m, b: (m(img(b), torch.tensor([5, 9])[:b], torch.tensor([1, 2])[:b]) - img(b)).pow(2).mean())
    u_fwd = unet_fwd(unet, (1, 28, 28)) * 2
    evals = d.steps // d.eval_every
    s04 = evals * d.eval_steps + (d.final_steps if d.final_method == "ddim" else d.T) + d.T + len(d.guidance_values) * d.guidance_steps
    f04 = u_fwd * (evals * d.eval_steps * d.n_eval + (d.final_steps if d.final_method == "ddim" else d.T) * d.n_fid
                   + d.T * d.n_traj + len(d.guidance_values) * d.guidance_steps * 40)
    rows.append(("04", f"pixel UNet {sum(t.numel() for t in unet.parameters()) / 1e6:.1f}M", d.steps,
                 u_train * d.batch_size * d.steps, s04, f04))
    s05 = sum(d.ddim_steps_list) + sum(d.ddpm_steps_list) + sum(d.widget_steps) * len(d.widget_etas) + 2 * d.invert_steps
    f05 = u_fwd * ((sum(d.ddim_steps_list) + sum(d.ddpm_steps_list)) * d.n_fid_steps
                   + sum(d.widget_steps) * len(d.widget_etas) * d.n_widget + 2 * d.invert_steps * d.n_widget)
    rows.append(("05", "sampling only (steps table, widget, inversion)", 0, 0.0, s05, f05))

    # lesson 06: two first stages, pixel and latent UNets, two comparison LDMs, the f-study
    c = p.ldm
    fs = FirstStage(f=c.f, latent_ch=c.latent_ch, ch=c.ae_ch, kl_weight=c.kl_weight)
    pad = lambda b: torch.rand(b, 1, 28, 28) * 2 - 1
    fs_cost = per_image(lambda b: fs(pad(b))["loss"], True)
    h = 32 // c.f
    lu = UNet(in_ch=c.latent_ch, ch=c.unet_ch, ch_mult=c.unet_ch_mult, num_res=c.unet_num_res, num_classes=10, image_size=h)
    pu = UNet(in_ch=1, ch=c.unet_ch, ch_mult=c.unet_ch_mult, num_res=c.unet_num_res, num_classes=10, image_size=28)
    lz = lambda b: torch.randn(b, c.latent_ch, h, h)
    l_train = per_image(lambda b: lu(lz(b), torch.tensor([5, 9])[:b], torch.tensor([1, 2])[:b]).pow(2).mean(), True)
    p_train = per_image(lambda b: pu(img(b), torch.tensor([5, 9])[:b], torch.tensor([1, 2])[:b]).pow(2).mean(), True)
    l_fwd, p_fwd = unet_fwd(lu, (c.latent_ch, h, h)) * 2, unet_fwd(pu, (1, 28, 28)) * 2
    rows.append(("06", "first stages KL + VQ", 2 * c.ae_steps, 2 * fs_cost * c.ae_batch_size * c.ae_steps, 0, 0.0))
    rows.append(("06", "pixel baseline", c.pixel_steps, p_train * c.batch_size * c.pixel_steps,
                 c.sample_steps, p_fwd * c.sample_steps * (c.n_fid + c.n_time)))
    n_lat = c.steps + 2 * c.compare_steps
    rows.append(("06", "latent UNets (main, no-scale, VQ)", n_lat, l_train * c.batch_size * n_lat,
                 4 * c.sample_steps, l_fwd * c.sample_steps * (3 * c.n_fid + c.n_time + 10 * (1 + len(c.guidance_values)))))
    study_flops, study_steps, study_samp, study_sflops = 0.0, 0, 0, 0.0
    nets = []
    for f, lc in zip(c.study_fs, c.study_latent_ch):
        s = 32 // f
        sfs = FirstStage(f=f, latent_ch=lc, ch=c.study_ae_ch)
        su = UNet(in_ch=lc, ch=c.study_unet_ch, ch_mult=(1, 2), num_classes=10, image_size=s)
        a_cost = per_image(lambda b: sfs(pad(b))["loss"], True)
        u_cost = per_image(lambda b: su(torch.randn(b, lc, s, s), torch.tensor([5, 9])[:b], torch.tensor([1, 2])[:b]).pow(2).mean(), True)
        nets.append((f, lc, s, su, a_cost, u_cost))
    counts = study_step_counts([u for *_, u in nets], c.study_steps, c.study_budget, c.study_max_steps)
    for (f, lc, s, su, a_cost, u_cost), n in zip(nets, counts):
        study_flops += a_cost * 64 * c.study_ae_steps + u_cost * 64 * n       # compression_study's batch 64
        study_steps += c.study_ae_steps + n
        study_samp += c.study_evals * c.study_sample_steps
        study_sflops += unet_fwd(su, (lc, s, s)) * 2 * c.study_evals * c.study_sample_steps * c.study_n_fid
    rows.append(("06", f"f-study f = {c.study_fs}, steps {counts}", study_steps, study_flops, study_samp, study_sflops))

    R = a.tflops * 1e12
    print(f"gpu preset, counted on the CPU; estimate = FLOPs / {a.tflops:g} TFLOP/s + "
          f"{a.step_ms:g} ms per training step + {a.sample_ms:g} ms per sampling step (assumptions, not measured)\n")
    print("| lesson | part | train steps | train PFLOP | sampler steps | sampling PFLOP | estimate (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    totals = {}
    for les, part, n, fl, ns, sfl in rows:
        est = (fl + sfl) / R + n * a.step_ms / 1e3 + ns * a.sample_ms / 1e3
        totals[les] = totals.get(les, 0.0) + est
        print(f"| {les} | {part} | {n:,} | {fl / 1e15:.2f} | {ns:,} | {sfl / 1e15:.2f} | {est:.0f} |")
    print("\n| lesson | estimated total (s) |\n|---|---:|")
    for les, t in totals.items():
        print(f"| {les} | {t:.0f} |")


if __name__ == "__main__":
    main()
