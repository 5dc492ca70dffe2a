"""Small building blocks shared by the autoencoders and the UNet (lucidrains-style, compact)."""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def mlp(sizes: list[int], act=nn.SiLU, last_act: bool = False) -> nn.Sequential:
    """Linear → act → … → Linear (``sizes`` = [in, hidden…, out])."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(act())
    return nn.Sequential(*layers)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with as many groups (≤ 8) as divide ``channels``."""
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style position embedding of a (float or int) timestep t, shape (B,) → (B, dim)."""

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.dim, self.max_period = dim, max_period

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([args.sin(), args.cos()], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → Conv, twice, with a skip; an optional embedding (time, class) is added
    as a per-channel shift after the first conv (Ho et al. 2020)."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch) if emb_dim else None
        self.norm2, self.conv2 = group_norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            if emb is None:
                raise ValueError("this ResBlock was built with an embedding: pass emb")
            h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map, with a skip."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = group_norm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x).flatten(2).transpose(1, 2)          # (B, HW, C)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 conv (odd sizes round up: 7 → 4)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to ``size`` (or ×2), then a conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest") if size else F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_image_batch(x: torch.Tensor, channels: int, size: tuple[int, int] | None = None,
                      name: str = "input") -> None:
    """Raise a ValueError that says what was expected when ``x`` is not (B, C, H, W) as required."""
    want = f"(batch, {channels}, {size[0]}, {size[1]})" if size else f"(batch, {channels}, H, W)"
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels or (
            size is not None and tuple(x.shape[-2:]) != tuple(size)):
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        hint = " (add a channel axis with x.unsqueeze(1))" if isinstance(x, torch.Tensor) and x.dim() == 3 else ""
        raise ValueError(f"{name} must have shape {want}, got {got}{hint}")
