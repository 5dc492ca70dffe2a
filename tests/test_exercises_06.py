"""Lesson 06 exercises: the mistake catalogue (WRONG: checker, wrong answer, the hint it must print),
run by tests/test_exercises.py."""
import torch

from ldm_edu.diffusion import ddim_step
from ldm_edu.exercises import lesson06 as L6


def _guided(w_map=lambda w: w, unscale=lambda z, s: z / s, to_unit=True, decode=True, use_library=False, clip=True,
            decode_method=False):
    """The reference loop with one thing changed."""
    def fn(ldm, z_T, y, w, steps):
        if use_library:
            return ldm.sample(len(z_T), y=y, guidance=w, steps=steps, z_T=z_T)
        ts = ldm.schedule.timesteps(steps).tolist()
        null = torch.full_like(y, ldm.unet.num_classes)
        z = z_T
        for k, t in enumerate(ts):
            t_prev = ts[k + 1] if k + 1 < len(ts) else -1
            tt = torch.full((len(z),), t)
            eps_c, eps_u = ldm.unet(z, tt, y), ldm.unet(z, tt, null)
            z = ddim_step(ldm.schedule, z, eps_u + w_map(w) * (eps_c - eps_u), t, t_prev,
                          clip_x0=ldm.clip_x0 if clip else None)
        if not decode:
            return z
        if decode_method:
            return ldm.decode(z)
        x = ldm.autoencoder.decode(unscale(z, ldm.scale_factor))
        return ((x + 1) / 2).clamp(0, 1) if to_unit else x
    return fn


WRONG = [
    (L6.check_latent_shape, lambda f, c, size: (size // f, size // f, c), "channels first"),
    (L6.check_latent_shape, lambda f, c, size: (c, size // f ** 2, size // f ** 2), "total downsampling"),
    (L6.check_latent_shape, lambda f, c, size: (c, size // f, size), "halves H and W"),
    (L6.check_scale_factor, lambda z: z.std().item(), "its inverse"),
    (L6.check_scale_factor, lambda z: 1 / z.abs().mean().item(), "not mean |z|"),
    (L6.check_scale_factor, lambda z: 1 / z.pow(2).mean().sqrt().item(), "not mean |z| or the RMS"),
    (L6.check_scale_factor, lambda z: 1 / z.std(dim=(0, 2, 3)), "ONE number"),
    (L6.check_log_snr, lambda ab, s: s ** 2 * ab / (1 - ab), "logarithm"),
    (L6.check_log_snr, lambda ab, s: torch.log(s * ab / (1 - ab)), "square the standard deviation"),
    (L6.check_log_snr, lambda ab, s: torch.log(ab / (1 - ab)), "changes the signal"),
    (L6.check_log_snr, lambda ab, s: torch.log(s ** 2 * ab.sqrt() / (1 - ab).sqrt()), "variances"),
    (L6.check_log_snr, lambda ab, s: torch.log(s ** 2 * ab / (1 - ab))[:-1], "one value per timestep"),
    (L6.check_guided_sample, _guided(unscale=lambda z, s: z), "divide by ldm.scale_factor"),
    (L6.check_guided_sample, _guided(unscale=lambda z, s: z * s), "DIVIDING"),
    (L6.check_guided_sample, _guided(to_unit=False), "map it to [0, 1]"),
    (L6.check_guided_sample, _guided(w_map=lambda w: 1.0), "must change"),
    (L6.check_guided_sample, _guided(w_map=lambda w: 1 - w), "not the reverse"),
    (L6.check_guided_sample, _guided(decode=False), "that is a latent"),
    (L6.check_guided_sample, _guided(use_library=True), "write the loop yourself"),
    (L6.check_guided_sample, _guided(clip=False), "clip_x0=ldm.clip_x0"),
    (L6.check_guided_sample, _guided(decode_method=True), "ldm.autoencoder.decode"),
]
