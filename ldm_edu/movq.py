"""MoVQ's spatially conditional normalisation (Zheng et al. 2022, "MoVQ: Modulating Quantized Vectors
for High-Fidelity Image Generation"; seed paper §2.1, the formula after eq. 25).

A VQ decoder sees the quantised latent z_q only at its input. Neighbouring positions whose encoder
vectors snapped to the same code hand the decoder identical vectors, and a plain decoder tends to
paint them identically (the repeated-pattern artifacts the seed paper mentions). MoVQ feeds z_q
into **every normalisation layer** of the decoder: the feature map F^{i−1} is normalised and then
scaled and shifted by functions of z_q, position by position (seed paper, §2.1):

    F^i = φ_γ(z_q) · (F^{i−1} − μ(F^{i−1})) / σ(F^{i−1}) + φ_β(z_q),

with μ, σ the mean and standard deviation of GroupNorm and φ_γ, φ_β learnt 1 × 1 convolutions
applied to z_q upsampled (nearest neighbour) to F's size. With constant φ_γ ≡ γ, φ_β ≡ β this is
exactly GroupNorm with affine weight γ and bias β — the starting point here: φ_γ starts as the
constant 1, φ_β as 0. (The reference implementation, ai-forever/MoVQGAN ``SpatialNorm``, also keeps
GroupNorm's own affine parameters and optionally a 3 × 3 conv on z_q; we follow the seed formula.)

``MoVQFirstStage(norm="spatial")`` is a VQ first stage (encoder → lesson-03 quantiser → decoder)
whose decoder uses SpatialNorm everywhere; ``norm="group"`` is the very same network with plain
GroupNorm, the baseline: built from the same seed, the two share every weight they have in common
(``shared_parameters`` lists them), because building a SpatialNorm draws no random numbers. Both offer what ``LatentDiffusion`` needs (``f``, ``latent_ch``,
``latent_shape``, ``encode``, ``decode``); like lesson 06's VQ first stage, the quantiser sits
inside ``decode``, so the diffusion model works on the continuous encoder output.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .latent import IMAGE_SIZE, LatentAutoencoder, check_factor, crop_images, pad_images
from .nn import ConvEncoder, Upsample, check_image_batch, group_norm

NORMS = ("spatial", "group")


class SpatialNorm(nn.Module):
    """F (B, C, H, W), z_q (B, c, h, w) → φ_γ(z_q) · GroupNorm(F) + φ_β(z_q) (seed §2.1, MoVQ).

    z_q is upsampled to (H, W) by nearest neighbour; φ_γ, φ_β are 1 × 1 convs c → C. Initialised
    as φ_γ ≡ 1, φ_β ≡ 0, i.e. as a plain GroupNorm."""

    def __init__(self, channels: int, zq_channels: int):
        super().__init__()
        groups = group_norm(channels).num_groups
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        # φ_γ, φ_β start at constants, so building them must not consume the global RNG: a decoder with
        # SpatialNorm then gets, from the same seed, the very same weights in every layer it shares with
        # the GroupNorm decoder (``_GroupNorm`` draws nothing either)
        with torch.random.fork_rng(devices=[]):
            self.gamma = nn.Conv2d(zq_channels, channels, 1)  # φ_γ
            self.beta = nn.Conv2d(zq_channels, channels, 1)   # φ_β
        for conv, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            nn.init.zeros_(conv.weight)
            nn.init.constant_(conv.bias, bias)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        # 1. bring z_q to F's resolution
        zq = F.interpolate(zq, size=f.shape[-2:], mode="nearest")
        # 2. normalise F per group: (F − μ) / σ
        n = self.norm(f)
        # 3. modulate position by position
        return self.gamma(zq) * n + self.beta(zq)


class _GroupNorm(nn.Module):
    """Plain GroupNorm with the same call signature as SpatialNorm (z_q is ignored)."""

    def __init__(self, channels: int, zq_channels: int):
        super().__init__()
        self.norm = group_norm(channels)

    def forward(self, f: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        return self.norm(f)


def make_norm(kind: str, channels: int, zq_channels: int) -> nn.Module:
    if kind not in NORMS:
        raise ValueError(f"norm must be 'spatial' (MoVQ's spatially conditional norm) or 'group' "
                         f"(plain GroupNorm), got {kind!r}")
    return (SpatialNorm if kind == "spatial" else _GroupNorm)(channels, zq_channels)


class CondResBlock(nn.Module):
    """norm(·, z_q) → SiLU → conv, twice, with a skip: lesson 06's ResBlock with a z_q-aware norm."""

    def __init__(self, in_ch: int, out_ch: int, zq_ch: int, norm: str):
        super().__init__()
        self.norm1, self.conv1 = make_norm(norm, in_ch, zq_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2, self.conv2 = make_norm(norm, out_ch, zq_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, zq)))
        h = self.conv2(F.silu(self.norm2(h, zq)))
        return h + self.skip(x)


class MoVQDecoder(nn.Module):
    """z_q (B, c, h, w) → image (B, 1, 32, 32): conv_in → ResBlock → per level [ResBlocks, Upsample]
    → norm → SiLU → conv_out, every norm a SpatialNorm (``norm="spatial"``) or a GroupNorm."""

    def __init__(self, latent_ch: int, ch: int, ch_mult: tuple, num_res: int = 1, norm: str = "spatial"):
        super().__init__()
        make_norm(norm, 4, 4)                                  # validates ``norm``
        self.latent_ch = latent_ch
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(latent_ch, c, 3, padding=1)
        self.mid = CondResBlock(c, c, latent_ch, norm)
        self.levels, self.ups = nn.ModuleList(), nn.ModuleList()
        for i, m in enumerate(reversed(ch_mult)):
            blocks = []
            for _ in range(num_res):
                blocks.append(CondResBlock(c, ch * m, latent_ch, norm))
                c = ch * m
            self.levels.append(nn.ModuleList(blocks))
            self.ups.append(Upsample(c) if i < len(ch_mult) - 1 else nn.Identity())
        self.norm_out = make_norm(norm, c, latent_ch)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, zq: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(zq), zq)
        for i, (blocks, up) in enumerate(zip(self.levels, self.ups)):
            for block in blocks:
                h = block(h, zq)
            if i < len(self.levels) - 1:
                h = up(h)
        return self.conv_out(F.silu(self.norm_out(h, zq)))


class MoVQFirstStage(LatentAutoencoder):
    """VQ first stage x (B, 1, 28, 28) in [−1, 1] ↔ z (B, c, 32/f, 32/f) with a MoVQ or plain decoder.

    ``encode`` → the continuous encoder output z_e; ``decode`` quantises it (lesson-03 quantiser,
    EMA codebook with dead-code restarts, eq. 20–25) and decodes with z_q in every norm.
    """

    def __init__(self, f: int = 4, latent_ch: int = 4, ch: int = 16, num_res: int = 1, codebook_size: int = 128,
                 commitment: float = 0.25, norm: str = "spatial"):
        super().__init__()
        check_factor(f)
        make_norm(norm, 4, 4)
        self.config = {"f": f, "latent_ch": latent_ch, "ch": ch, "num_res": num_res,
                       "codebook_size": codebook_size, "commitment": commitment, "norm": norm}
        self.f, self.latent_ch, self.norm, self.reg = f, latent_ch, norm, "vq"
        levels = int(math.log2(f)) + 1
        ch_mult = (1,) + (2,) * (levels - 1)
        self.encoder = ConvEncoder(1, latent_ch, ch, ch_mult, num_res)
        from .vq import VectorQuantizer
        self.quantizer = VectorQuantizer(num_codes=codebook_size, code_dim=latent_ch, beta=commitment, ema=True,
                                         restart_dead=True)
        self.decoder = MoVQDecoder(latent_ch, ch, ch_mult, num_res, norm)

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """x (B, 1, 28, 28) in [−1, 1] → continuous z_e (B, c, 32/f, 32/f). ``sample`` is ignored."""
        check_image_batch(x, 1, (IMAGE_SIZE, IMAGE_SIZE), "MoVQFirstStage input")
        return self.encoder(pad_images(x))

    def quantize(self, z: torch.Tensor) -> dict:
        return self.quantizer(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, c, 32/f, 32/f), continuous or already quantised → x̂ (B, 1, 28, 28) roughly in [−1, 1]."""
        check_image_batch(z, self.latent_ch, self.latent_shape[1:], f"MoVQFirstStage(f={self.f}) latent")
        return crop_images(self.decoder(self.quantize(z)["z_q"]))

    def forward(self, x: torch.Tensor) -> dict:
        """Losses per batch: ‖x − x̂‖² summed over pixels (mean over batch) + the VQ loss scaled alike."""
        z_e = self.encode(x)
        q = self.quantize(z_e)
        x_hat = crop_images(self.decoder(q["z_q"]))
        rec = (x_hat - x).pow(2).flatten(1).sum(1).mean()
        return {"loss": rec + q["loss"] * z_e[0].numel(), "rec": rec, "vq": q["loss"], "codes": q["indices"],
                "x_hat": x_hat}


def shared_parameters(a: nn.Module, b: nn.Module) -> list[str]:
    """Names of the parameters two models have in common (same name and shape)."""
    pb = dict(b.named_parameters())
    return [k for k, v in a.named_parameters() if k in pb and pb[k].shape == v.shape]


def movq_loss(model: MoVQFirstStage, batch):
    """A loss_fn for fit(): batch = images in [−1, 1] (or (images, labels))."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = model(x)
    return out["loss"], {"rec": out["rec"], "vq": out["vq"]}


__all__ = ["SpatialNorm", "make_norm", "CondResBlock", "MoVQDecoder", "MoVQFirstStage", "shared_parameters", "movq_loss",
           "NORMS"]
