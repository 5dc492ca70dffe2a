"""Lesson 06 exercises: the mistake catalogue (WRONG: checker, wrong answer, the hint it must print),
run by tests/test_exercises.py."""
from types import SimpleNamespace

import torch

from ldm_edu.exercises import lesson06 as L6


def _guided(w_map=lambda w: w, scale=lambda s: s, clip=True, stage=None):
    """The reference solution with one thing changed: the guidance weight (``w_map``), the scale it
    divides by (``scale``), no clip, or what it returns (``stage``: "latent" = the scaled latent before
    decoding, "raw" = the decoder's [−1, 1] output)."""
    def fn(ldm, z_T, y, w, steps):
        seen = {}

        class Capture:                                        # the decoder, recording what it is given
            def decode(self, z):
                seen["z"] = z
                return ldm.autoencoder.decode(z)
        view = SimpleNamespace(**vars(ldm))
        view.scale_factor, view.clip_x0 = scale(ldm.scale_factor), ldm.clip_x0 if clip else None
        view.autoencoder = Capture()
        out = L6.solution_guided_sample(view, z_T, y, w_map(w), steps)
        if stage == "latent":
            return seen["z"] * view.scale_factor
        if stage == "raw":
            return ldm.autoencoder.decode(seen["z"])
        return out
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
    (L6.check_guided_sample, _guided(scale=lambda s: 1.0), "divide by ldm.scale_factor"),
    (L6.check_guided_sample, _guided(scale=lambda s: 1 / s), "DIVIDING"),
    (L6.check_guided_sample, _guided(stage="raw"), "map it to [0, 1]"),
    (L6.check_guided_sample, _guided(w_map=lambda w: 1.0), "must change"),
    (L6.check_guided_sample, _guided(w_map=lambda w: 1 - w), "not the reverse"),
    (L6.check_guided_sample, _guided(stage="latent"), "that is a latent"),
    (L6.check_guided_sample, lambda ldm, z_T, y, w, steps: ldm.sample(len(z_T), y=y, guidance=w, steps=steps, z_T=z_T),
     "write the loop yourself"),
    (L6.check_guided_sample, _guided(clip=False), "clip_x0=ldm.clip_x0"),
    (L6.check_guided_sample, lambda ldm, z_T, y, w, steps: ldm.decode(z_T), "ldm.autoencoder.decode"),
]
