"""Lesson 07 exercises: questions the lesson's code does not answer by copy and paste.

1. ``patch_receptive_field(n_layers)``: how many pixels one PatchGAN logit sees (layer arithmetic);
2. ``adaptive_weight_closed_form(r, h, a, disc_weight, delta)``: VQGAN's λ for a linear last layer,
   by hand (no autograd);
3. ``scn_extra_parameters(f, latent_ch, ch)``: what MoVQ's spatially conditional norm costs.

Each checker takes only the student's function, compares it with the network or autograd itself on
several cases, and names the plausible mistake it sees."""
from __future__ import annotations

import math

import torch

from . import guarded


# ----------------------------------------------------------------------------- 1. PatchGAN receptive field
def solution_patch_receptive_field(n_layers: int) -> int:
    """Receptive field (px) of one logit of ``vqgan.PatchDiscriminator(n_layers=n_layers)``: layers of
    kernel 4 with strides 2 (first conv), 2 (n_layers − 1 times), 1, 1 (the logit conv); each layer adds
    (k − 1) · j pixels, j the product of the strides before it."""
    strides = [2] + [2] * (n_layers - 1) + [1, 1]
    r, j = 1, 1
    for s in strides:
        r += (4 - 1) * j
        j *= s
    return r


def _measured_rf(n_layers: int) -> int:
    from ..vqgan import PatchDiscriminator, measured_receptive_field
    torch.manual_seed(0)
    return measured_receptive_field(PatchDiscriminator(ch=2, n_layers=n_layers), size=160)


def check_patch_receptive_field(fn) -> bool:
    """``fn(n_layers)`` → the receptive field of one PatchGAN logit in pixels (an int), checked against
    the gradient of a real ``PatchDiscriminator`` for n_layers = 1, 2, 3."""
    def check():
        ns = (1, 2, 3)
        got = [int(fn(n)) for n in ns]
        want = [_measured_rf(n) for n in ns]
        if got == want:
            return True, ""
        rule = lambda per_layer, last=True: [1 + sum(per_layer(j) for j in [2 ** i for i in range(n + 1)] + ([2 ** n] if last else []))
                                             for n in ns]
        if got == rule(lambda j: 3):
            return False, ("you added k − 1 = 3 pixels per layer: a layer after a stride-2 layer steps 2 pixels at "
                           "a time, so it adds (k − 1)·j, j = the product of the earlier strides")
        if got == rule(lambda j: 3 * j, last=False):
            return False, "you left out the last conv (the one that outputs the logits): it widens the field too"
        if got == rule(lambda j: 4 * j):
            return False, "each layer adds (k − 1)·j pixels, not k·j: a 4-wide kernel reaches 3 pixels beyond its first"
        n, g, w = next((n, g, w) for n, g, w in zip(ns, got, want) if g != w)
        return False, (f"for n_layers = {n} one logit sees {w} pixels, you said {g}: start at r = 1, j = 1 and for "
                       f"each conv (kernel 4; strides 2, then 2 × (n_layers − 1), then 1 and 1) do r += 3·j, j *= stride")
    return guarded("PatchGAN receptive field", check)


# ----------------------------------------------------------------------------- 2. λ in closed form
def solution_adaptive_weight_closed_form(r: torch.Tensor, h: torch.Tensor, a: torch.Tensor, disc_weight: float,
                                         delta: float) -> float:
    """Last layer ŷ = W h; L_rec = ½‖ŷ − t‖², L_GAN = −aᵀŷ (one sample). Then ∇_W L_rec = r hᵀ (r = ŷ − t),
    ∇_W L_GAN = −a hᵀ, and ‖u vᵀ‖ = ‖u‖‖v‖ (Frobenius), so
    w_d·λ = w_d · ‖r‖‖h‖ / (‖a‖‖h‖ + δ) (Esser et al. 2021 eq. 7, times LDM's factor w_d)."""
    return float(disc_weight * r.norm() * h.norm() / (a.norm() * h.norm() + delta))


def _closed_form_cases():
    g = torch.Generator().manual_seed(70)
    for h_scale, delta, w_d in ((1.0, 1e-4, 0.5), (3.0, 2.0, 0.5), (0.2, 0.5, 1.0)):
        W = torch.randn(4, 6, generator=g, requires_grad=True)
        h, t, a = torch.randn(6, generator=g) * h_scale, torch.randn(4, generator=g), torch.randn(4, generator=g)
        y = W @ h
        rec, gan = 0.5 * (y - t).pow(2).sum(), -(a * y).sum()
        g_rec, = torch.autograd.grad(rec, W, retain_graph=True)
        g_gan, = torch.autograd.grad(gan, W)
        want = float(w_d * g_rec.norm() / (g_gan.norm() + delta))          # autograd: the definition itself
        yield (y - t).detach(), h, a, w_d, delta, want, rec.item(), gan.item()


def check_adaptive_weight_closed_form(fn) -> bool:
    """``fn(r, h, a, disc_weight, delta)`` → w_d·λ (a float) for ŷ = W h, L_rec = ½‖ŷ − t‖², L_GAN = −aᵀŷ,
    r = ŷ − t; checked against autograd on three cases (different ‖h‖, δ and w_d)."""
    def check():
        for r, h, a, w_d, delta, want, rec, gan in _closed_form_cases():
            got = float(fn(r.clone(), h.clone(), a.clone(), w_d, delta))
            if math.isclose(got, want, rel_tol=1e-4):
                continue
            if math.isclose(got, w_d * float(a.norm() * h.norm() / (r.norm() * h.norm() + delta)), rel_tol=1e-4):
                return False, "you inverted the ratio: the reconstruction gradient's norm goes on top"
            if math.isclose(got, want / w_d, rel_tol=1e-4):
                return False, "you left out disc_weight: the recipe multiplies λ by w_d (0.5 in LDM's KL configs)"
            if math.isclose(got, w_d * float(r.norm() / (a.norm() + delta)), rel_tol=1e-4):
                return False, ("‖h‖ cancels only without δ: both gradients are outer products with h, so the "
                               "denominator is ‖a‖‖h‖ + δ, not (‖a‖ + δ)‖h‖")
            if math.isclose(got, w_d * rec / (abs(gan) + delta), rel_tol=1e-4):
                return False, "λ compares the gradients' norms at the last layer, not the loss values"
            return False, (f"got {got:.5g}, expected {want:.5g}: write ∇_W L_rec and ∇_W L_GAN as outer products "
                           "(r hᵀ and −a hᵀ) and use ‖u vᵀ‖ = ‖u‖‖v‖")
        return True, ""
    return guarded("adaptive weight in closed form", check)


# ----------------------------------------------------------------------------- 3. what SCN costs
def _decoder_norm_channels(f: int, ch: int) -> list[int]:
    """Channels of every norm in ``MoVQDecoder`` (num_res = 1): the mid block's two, two per level's
    block (its input and output width), and the output norm."""
    levels = int(math.log2(f)) + 1
    ch_mult = (1,) + (2,) * (levels - 1)
    c = ch * ch_mult[-1]
    out = [c, c]                                   # mid block: norm1, norm2
    for m in reversed(ch_mult):
        out += [c, ch * m]                         # CondResBlock(c, ch·m): norm1 on c, norm2 on ch·m
        c = ch * m
    return out + [c]                               # norm_out


def solution_scn_extra_parameters(f: int, latent_ch: int, ch: int) -> int:
    """Each of the decoder's norms on C channels: SCN has two 1 × 1 convs latent_ch → C (2·(latent_ch·C + C)
    parameters) and no affine of its own; GroupNorm has its affine γ, β (2C). Difference: 2·latent_ch·C."""
    return sum(2 * latent_ch * c for c in _decoder_norm_channels(f, ch))


def _true_extra(f: int, latent_ch: int, ch: int) -> int:
    from ..movq import MoVQFirstStage
    count = lambda m: sum(p.numel() for p in m.parameters())
    return (count(MoVQFirstStage(f=f, latent_ch=latent_ch, ch=ch, codebook_size=8, norm="spatial"))
            - count(MoVQFirstStage(f=f, latent_ch=latent_ch, ch=ch, codebook_size=8, norm="group")))


def check_scn_extra_parameters(fn) -> bool:
    """``fn(f, latent_ch, ch)`` → how many more parameters ``MoVQFirstStage(norm="spatial")`` has than
    ``norm="group"`` (an int), checked against the two networks for four configurations."""
    def check():
        for f, c, ch in ((8, 4, 16), (4, 3, 8), (16, 2, 8), (2, 4, 4)):
            got, want = int(fn(f, c, ch)), _true_extra(f, c, ch)
            if got == want:
                continue
            norms = _decoder_norm_channels(f, ch)
            if got == want + 2 * sum(norms):
                return False, ("SCN replaces GroupNorm's own affine γ, β (2C per norm): subtract them — the extra "
                               "cost is the 1 × 1 convs minus that affine")
            if got == want // 2 or got == want // 2 + sum(norms):
                return False, "there are two modulation convs per norm, φ_γ and φ_β"
            if got in (want - 2 * c * (norms[0] + norms[1]), want - 2 * c * norms[-1],
                       want - 2 * c * (norms[0] + norms[1] + norms[-1])):
                return False, ("count every norm of the decoder: the mid block's two, two per level's block, and the "
                               "output norm before conv_out")
            return False, (f"for f = {f}, latent_ch = {c}, ch = {ch} the difference is {want:,}, you said {got:,}: list the "
                           "decoder's norms and their channels C (MoVQDecoder), each costs 2·latent_ch·C extra")
        return True, ""
    return guarded("what spatially conditional normalisation costs", check)


__all__ = ["solution_patch_receptive_field", "check_patch_receptive_field", "solution_adaptive_weight_closed_form",
           "check_adaptive_weight_closed_form", "solution_scn_extra_parameters", "check_scn_extra_parameters"]
