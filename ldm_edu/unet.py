"""A small UNet that predicts the noise ε̂(x_t, t, y) — for pixels (1×28×28) and latents (4×7×7, …).

Readable in one file (nanoGPT-style), the layout of Ho et al. (2020) / ADM in miniature:

    x ─ conv_in ─┬─ [ResBlock × num_res, Downsample] per level ─ mid: ResBlock, Attention, ResBlock
                 └──────────── skips ───────────┐
    ε̂ ─ conv_out ─ [ResBlock × (num_res+1) on concat(h, skip), Upsample(size=skip)] per level ─┘

The timestep goes in through a sinusoidal embedding + MLP, the class (optional) through an
``nn.Embedding`` with ``num_classes + 1`` rows — the last row is the *null* label used for
classifier-free guidance. Both are added and fed to every ResBlock. Upsampling goes back to the
exact size of the matching skip, so odd sizes (7 → 4 → 7) work.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
import torch.nn.functional as F

from .nn import Downsample, ResBlock, SelfAttention2d, SinusoidalEmbedding, Upsample, check_image_batch, group_norm, mlp


class UNet(nn.Module):
    """ε-prediction UNet. ``forward(x, t, y=None)`` → ε̂ with x's shape.

    in_ch: image/latent channels; ch: base width; ch_mult: width multiplier per resolution level
    (len(ch_mult) − 1 downsamplings); num_res: ResBlocks per level; attn: one self-attention block
    at the lowest resolution; num_classes: None (unconditional) or the number of classes, and then
    ``y = num_classes`` (or y=None) means "no label". patch: 2 folds each 2×2 block of pixels
    into channels first (pixel_unshuffle, lossless: 1×28×28 ↔ 4×14×14) and unfolds at the end —
    4× less compute per layer, the cheap trick the cpu preset uses (as DiT's patches do).
    """

    def __init__(self, in_ch: int = 1, ch: int = 32, ch_mult: tuple = (1, 2), num_res: int = 1,
                 attn: bool = True, num_classes: int | None = None, image_size: int = 28,
                 dropout: float = 0.0, heads: int = 4, patch: int = 1):
        super().__init__()
        ch_mult = tuple(int(m) for m in ch_mult)
        if not ch_mult or ch < 1 or num_res < 1:
            raise ValueError("UNet needs ch ≥ 1, num_res ≥ 1 and a non-empty ch_mult")
        if patch < 1 or image_size % patch:
            raise ValueError(f"patch must be ≥ 1 and divide image_size={image_size}, got {patch}")
        self.config = dict(in_ch=in_ch, ch=ch, ch_mult=list(ch_mult), num_res=num_res, attn=attn,
                           num_classes=num_classes, image_size=image_size, dropout=dropout, heads=heads,
                           patch=patch)
        self.patch = patch
        self.in_ch, self.image_size, self.num_classes = in_ch, image_size, num_classes
        emb = 4 * ch
        self.time_emb = nn.Sequential(SinusoidalEmbedding(ch), mlp([ch, emb, emb]))
        self.class_emb = nn.Embedding(num_classes + 1, emb) if num_classes else None

        self.conv_in = nn.Conv2d(in_ch * patch**2, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skip_chs, c = [ch], ch
        for i, m in enumerate(ch_mult):
            for _ in range(num_res):
                self.down.append(ResBlock(c, ch * m, emb, dropout))
                c = ch * m
                skip_chs.append(c)
            if i < len(ch_mult) - 1:
                self.down.append(Downsample(c))
                skip_chs.append(c)
        self.mid1 = ResBlock(c, c, emb, dropout)
        self.mid_attn = SelfAttention2d(c, heads=_heads(c, heads)) if attn else nn.Identity()
        self.mid2 = ResBlock(c, c, emb, dropout)
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res + 1):
                self.up.append(ResBlock(c + skip_chs.pop(), ch * m, emb, dropout))
                c = ch * m
            if i > 0:
                self.up.append(Upsample(c))
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, in_ch * patch**2, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)          # start as "predict ε = 0": a calm first step
        nn.init.zeros_(self.conv_out.bias)

    def embed(self, t: torch.Tensor, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape (batch,)=({batch},), got {tuple(t.shape)}")
        e = self.time_emb(t.float())
        if self.class_emb is None:
            if y is not None:
                raise ValueError("this UNet is unconditional (num_classes=None): call it without y")
            return e
        if y is None:
            y = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        y = torch.as_tensor(y, device=device).long()
        if y.shape != (batch,):
            raise ValueError(f"y must have shape (batch,)=({batch},), got {tuple(y.shape)}")
        if int(y.min()) < 0 or int(y.max()) > self.num_classes:
            raise ValueError(f"class labels must be in 0..{self.num_classes} "
                             f"({self.num_classes} = null label), got {int(y.min())}..{int(y.max())}")
        return e + self.class_emb(y)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_image_batch(x, self.in_ch, name="UNet input x")
        emb = self.embed(t, y, x.shape[0], x.device)
        if self.patch > 1:
            if x.shape[-1] % self.patch or x.shape[-2] % self.patch:
                raise ValueError(f"with patch={self.patch} H and W must be multiples of {self.patch}, "
                                 f"got {tuple(x.shape[-2:])}")
            x = F.pixel_unshuffle(x, self.patch)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h, size=skips[-1].shape[-2:])
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out


def _heads(channels: int, wanted: int) -> int:
    return next(h for h in (wanted, 4, 2, 1) if channels % h == 0)


_CONFIG_FIELDS = ("ch", "ch_mult", "num_res", "attn", "num_classes", "patch", "dropout", "heads")


def unet_from_config(cfg, in_ch: int = 1, image_size: int = 28, device="cpu") -> UNet:
    """The one UNet factory, for pixel and latent UNets alike: ``UNet(in_ch, image_size, **cfg)``.

    ``cfg`` is any object (a preset's DiffusionConfig, a SimpleNamespace) or a mapping with some of
    ch, ch_mult, num_res, attn, num_classes, patch (dropout, heads); a missing one takes the UNet
    default. Returns the UNet on ``device``."""
    get = cfg.get if isinstance(cfg, Mapping) else (lambda k, d: getattr(cfg, k, d))
    missing = object()
    kwargs = {k: v for k in _CONFIG_FIELDS if (v := get(k, missing)) is not missing}
    if "ch_mult" in kwargs:
        kwargs["ch_mult"] = tuple(kwargs["ch_mult"])
    return UNet(in_ch=in_ch, image_size=image_size, **kwargs).to(device)


__all__ = ["UNet", "unet_from_config"]
