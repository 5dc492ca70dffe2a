"""Lesson 07 exercises: VQGAN's adaptive weight, DC-AE's space-to-channel shortcut, MoVQ's
spatially conditional normalisation. Each checker builds its own cases, compares with the reference
solution and names the plausible mistake it sees."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import guarded


# ----------------------------------------------------------------------------- 1. adaptive weight
def solution_adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                             delta: float = 1e-4) -> torch.Tensor:
    """λ = ‖∇_{G_L} L_rec‖ / (‖∇_{G_L} L_GAN‖ + δ), detached (Esser et al. 2021, eq. 7)."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_gan.norm() + delta)).detach()


def _adaptive_cases():
    g = torch.Generator().manual_seed(70)
    for scale in (1.0, 40.0, 0.02):
        W = torch.randn(4, 6, generator=g, requires_grad=True)
        x, t, a = torch.randn(6, generator=g), torch.randn(4, generator=g), torch.randn(4, generator=g)
        yield W, (lambda W=W, x=x, t=t: ((W @ x - t) ** 2).sum()), (lambda W=W, x=x, a=a, s=scale: s * (a * (W @ x)).sum())


def check_adaptive_weight(fn) -> bool:
    """``fn(rec_loss, gan_loss, last_layer, delta=1e-4)`` → λ, a detached scalar tensor."""
    def check():
        for W, rec, gan in _adaptive_cases():
            want = solution_adaptive_weight(rec(), gan(), W)
            got = fn(rec(), gan(), W)
            if not isinstance(got, torch.Tensor):
                got = torch.tensor(float(got))
            if got.requires_grad:
                return False, ("λ still carries a gradient: it is a weight, not a path for gradients — "
                               "return it .detach()ed")
            got = got.detach().float().reshape(())
            if torch.isclose(got, 1 / want, rtol=1e-3):
                return False, "you inverted the ratio: the reconstruction gradient's norm goes on top"
            g_rec = torch.autograd.grad(rec(), W)[0]
            g_gan = torch.autograd.grad(gan(), W)[0]
            if torch.isclose(got, (g_rec.sum() / (g_gan.sum() + 1e-4)).abs(), rtol=1e-3) and not torch.isclose(got, want, rtol=1e-3):
                return False, "compare gradient *norms* (‖·‖, tensor.norm()), not sums of gradient entries"
            if torch.isclose(got, rec().detach() / (gan().detach().abs() + 1e-4), rtol=1e-3):
                return False, "λ compares the gradients of the losses at the last layer, not the loss values"
            if not torch.isclose(got, want, rtol=1e-3):
                return False, (f"got λ = {float(got):.5g}, expected {float(want):.5g}: take torch.autograd.grad of "
                               "each loss with respect to last_layer (retain_graph=True), then the ratio of norms + δ")
        return True, ""
    return guarded("adaptive weight λ", check)


# ----------------------------------------------------------------------------- 2. DC-AE shortcut
def solution_space_to_channel(x: torch.Tensor, out_ch: int) -> torch.Tensor:
    """DC-AE's encoder shortcut: pixel_unshuffle by 2, then average groups of consecutive channels."""
    x = F.pixel_unshuffle(x, 2)
    b, c, h, w = x.shape
    return x.view(b, out_ch, c // out_ch, h, w).mean(2)


def check_space_to_channel(fn) -> bool:
    """``fn(x, out_ch)``: (B, C, H, W) → (B, out_ch, H/2, W/2), for out_ch = C, 2C and 4C."""
    def check():
        g = torch.Generator().manual_seed(71)
        x = torch.randn(2, 3, 6, 6, generator=g)
        for out_ch in (12, 6, 3):
            want = solution_space_to_channel(x, out_ch)
            got = fn(x.clone(), out_ch)
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                pool = (" — average pooling keeps C channels; the shortcut moves space into channels first"
                        if isinstance(got, torch.Tensor) and got.shape == F.avg_pool2d(x, 2).shape else "")
                return False, f"for out_ch={out_ch} the result must have shape {tuple(want.shape)}, got {shape}{pool}"
            if torch.allclose(got, want, atol=1e-6):
                continue
            u = F.pixel_unshuffle(x, 2)
            halves = u.view(2, u.shape[1] // out_ch, out_ch, 3, 3).mean(1)
            if torch.allclose(got, halves, atol=1e-6):
                return False, ("you averaged channels that lie C·4/out_ch apart (e.g. the first and second half); "
                               "DC-AE averages runs of consecutive channels: view(B, out_ch, group, h, w).mean(2)")
            if out_ch == 12 and torch.allclose(torch.sort(got.flatten()).values, torch.sort(want.flatten()).values):
                return False, ("the values are right but in the wrong channels: use F.pixel_unshuffle (a reshape "
                               "alone does not move each 2×2 block into channels)")
            return False, (f"for out_ch={out_ch} the values differ: first pixel_unshuffle(x, 2) (space → 4C channels), "
                           "then average groups of 4C/out_ch consecutive channels")
        return True, ""
    return guarded("DC-AE space-to-channel shortcut", check)


# ----------------------------------------------------------------------------- 3. spatially conditional norm
def solution_spatial_norm(f: torch.Tensor, zq: torch.Tensor, gamma_conv, beta_conv, groups: int,
                          eps: float = 1e-5) -> torch.Tensor:
    """MoVQ's SCN (seed paper §2.1): φ_γ(z_q↑) · (F − μ) / σ + φ_β(z_q↑), μ, σ per group, z_q↑ nearest."""
    zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
    b, c, h, w = f.shape
    fg = f.view(b, groups, -1)
    mu, var = fg.mean(-1, keepdim=True), fg.var(-1, unbiased=False, keepdim=True)
    normed = ((fg - mu) / torch.sqrt(var + eps)).view(b, c, h, w)
    return gamma_conv(zq) * normed + beta_conv(zq)


def _scn_case(seed: int, C: int = 8, c: int = 3, H: int = 8, h: int = 2):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(2, C, H, H, generator=g) * 3 + 1
    zq = torch.randn(2, c, h, h, generator=g)
    convs = []
    for _ in range(2):
        conv = torch.nn.Conv2d(c, C, 1)
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
        convs.append(conv)
    return f, zq, convs[0], convs[1]


def check_spatial_norm(fn) -> bool:
    """``fn(f, zq, gamma_conv, beta_conv, groups)`` → the normalised, modulated feature map (B, C, H, W)."""
    def check():
        for seed, groups in ((72, 4), (73, 2)):
            f, zq, gconv, bconv = _scn_case(seed)
            with torch.no_grad():
                want = solution_spatial_norm(f, zq, gconv, bconv, groups)
                got = fn(f.clone(), zq.clone(), gconv, bconv, groups)
                if not isinstance(got, torch.Tensor) or got.shape != want.shape:
                    shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                    return False, f"the output must have F's shape {tuple(want.shape)}, got {shape}"
                if torch.allclose(got, want, atol=1e-4):
                    continue
                zq_up = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
                gn = F.group_norm(f, groups)
                if torch.allclose(got, gconv(zq_up) * F.group_norm(f, 1) + bconv(zq_up), atol=1e-4):
                    return False, "you normalised over all channels at once (LayerNorm): μ and σ are per group"
                if torch.allclose(got, bconv(zq_up) * gn + gconv(zq_up), atol=1e-4):
                    return False, "scale and shift are swapped: φ_γ multiplies, φ_β is added"
                if torch.allclose(got, gconv(zq_up) + gn + bconv(zq_up), atol=1e-4):
                    return False, "φ_γ(z_q) multiplies the normalised features, it is not added"
                bil = F.interpolate(zq, size=f.shape[-2:], mode="bilinear", align_corners=False)
                if torch.allclose(got, gconv(bil) * gn + bconv(bil), atol=1e-4):
                    return False, "upsample z_q with mode='nearest' (each code covers its block), not bilinear"
                fg = f.view(2, groups, -1)
                unb = ((fg - fg.mean(-1, keepdim=True)) / fg.std(-1, keepdim=True)).view_as(f)
                if torch.allclose(got, gconv(zq_up) * unb + bconv(zq_up), atol=1e-3):
                    return False, "use the biased variance (unbiased=False) and add eps inside the square root, as GroupNorm"
                if torch.allclose(got, gconv(zq_up) * f + bconv(zq_up), atol=1e-4):
                    return False, "you forgot to normalise F: subtract the group mean μ and divide by σ first"
                return False, ("the values differ: upsample z_q to F's size (nearest), normalise F per group "
                               "((F − μ)/√(σ² + eps)), then φ_γ(z_q) · that + φ_β(z_q)")
        return True, ""
    return guarded("spatially conditional normalisation", check)


__all__ = ["solution_adaptive_weight", "check_adaptive_weight", "solution_space_to_channel",
           "check_space_to_channel", "solution_spatial_norm", "check_spatial_norm"]
