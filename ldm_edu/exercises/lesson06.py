"""Lesson 06 exercises: latent shapes and cost, the scale factor, decoding scaled latents."""
from __future__ import annotations

import torch

from . import guarded


# ----------------------------------------------------------------------------- 1. latent shape
def latent_shape_solution(f: int, channels: int, size: int = 32) -> tuple[int, int, int]:
    """Shape (c, h, w) of the latent of a size×size image at compression factor f."""
    return (channels, size // f, size // f)


def check_latent_shape(fn) -> bool:
    """``fn(f, channels, size=32)`` → (c, h, w)."""
    def check():
        for f, c, size in ((1, 1, 32), (2, 2, 32), (4, 4, 32), (8, 4, 32), (4, 3, 256), (8, 4, 512)):
            got = tuple(fn(f, c, size))
            want = latent_shape_solution(f, c, size)
            if got != want:
                return False, (f"for f={f}, c={c}, a {size}×{size} image you returned {got}; "
                               f"the encoder halves H and W log2(f) times and outputs c channels")
        return True, ""
    return guarded("latent shape", check)


# ----------------------------------------------------------------------------- 2. cost per step
def pixel_to_latent_cost_ratio_solution(f: int, image_size: int = 28, padded_size: int = 32) -> float:
    """How many times fewer positions a conv layer visits in the latent than in pixel space:
    (28·28) / ((32/f)·(32/f)). A UNet's cost per step grows ∝ H·W at fixed width."""
    return image_size ** 2 / (padded_size // f) ** 2


def check_cost_ratio(fn) -> bool:
    """``fn(f)`` → positions in a 28×28 image ÷ positions in the 32/f × 32/f latent."""
    def check():
        for f in (1, 2, 4, 8):
            got, want = float(fn(f)), pixel_to_latent_cost_ratio_solution(f)
            if abs(got - want) > 1e-6 * want:
                return False, (f"for f={f} you returned {got:.3f}, expected {want:.3f}: count the "
                               "spatial positions (H·W) of a 28×28 image and of its 32/f × 32/f latent")
        return True, ""
    return guarded("pixel/latent cost ratio", check)


# ----------------------------------------------------------------------------- 3. scale factor
def scale_factor_solution(z: torch.Tensor) -> float:
    """s = 1 / std(z) over every element of a batch of latents."""
    return 1.0 / z.float().std().item()


def check_scale_factor(fn) -> bool:
    """``fn(z)`` → the float s with std(z · s) = 1."""
    def check():
        g = torch.Generator().manual_seed(6)
        for std, mean in ((5.0, 0.0), (0.2, 1.0), (13.0, -3.0)):
            z = torch.randn(256, 4, 8, 8, generator=g) * std + mean
            got = float(fn(z))
            want = scale_factor_solution(z)
            if abs(got - want) > 1e-4 * want:
                hint = ("you may have used the mean, or the std per channel; use one number for all elements"
                        if abs(got * std - 1) > 0.1 else "close: compute the std over all elements with z.std()")
                return False, f"for latents with std {std} you returned {got:.4g}, expected {want:.4g}; {hint}"
        return True, ""
    return guarded("latent scale factor", check)


# ----------------------------------------------------------------------------- 4. decode scaled
def decode_scaled_solution(autoencoder, z_scaled: torch.Tensor, scale_factor: float) -> torch.Tensor:
    """The diffusion samples z·s; the decoder was trained on z: undo the scaling first."""
    return autoencoder.decode(z_scaled / scale_factor)


def check_decode_scaled(fn, autoencoder, x: torch.Tensor) -> bool:
    """``fn(autoencoder, z_scaled, s)`` → images: must equal decoding the unscaled latents."""
    def check():
        with torch.no_grad():
            z = autoencoder.encode(x)
            want = autoencoder.decode(z)
            for s in (0.25, 3.0):
                got = fn(autoencoder, z * s, s)
                if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4):
                    return False, (f"with s={s} your images differ from decode(z); the UNet's latents are "
                                   "z·s, so divide by s before the decoder")
        return True, ""
    return guarded("decode scaled latents", check)


__all__ = ["check_latent_shape", "check_cost_ratio", "check_scale_factor", "check_decode_scaled",
           "latent_shape_solution", "pixel_to_latent_cost_ratio_solution", "scale_factor_solution",
           "decode_scaled_solution"]
