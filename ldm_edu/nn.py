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


def eval_batch_size(device) -> int:
    """Images per forward pass where a model only evaluates (encoding a data set, reconstructing,
    classifying): 64 on a CPU, 1000 on a GPU. On 2 CPU cores a convolutional autoencoder encodes and
    decodes MNIST 2–3× faster in batches of 64 than of 1 000, whose activations overflow the caches
    (bench/bench_eval_batch.py, docs/BENCHMARKS.md); a GPU wants large batches."""
    return 64 if torch.device(device).type == "cpu" else 1000


def eval_batches(fn, x: torch.Tensor, batch_size: int | None = None) -> list:
    """``fn`` applied to ``x`` in slices of ``batch_size`` rows (default ``eval_batch_size(x.device)``):
    the list of its results, in order. The one batching loop of every evaluation pass."""
    k = batch_size or eval_batch_size(x.device)
    return [fn(x[i:i + k]) for i in range(0, len(x), k)]


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


# ----------------------------------------------------------------------------- conv encoder / decoder stacks
def _down_sizes(size: int, n: int) -> list[int]:
    sizes = [size]
    for _ in range(n):
        sizes.append((sizes[-1] + 1) // 2)          # stride-2 conv with padding 1 rounds up
    return sizes


class ConvEncoder(nn.Module):
    """Conv encoder with a spatial latent: (B, in_ch, H, W) → (B, out_ch, H/f, W/f), f = 2^(levels−1).

    ``ch_mult`` gives the channel multiplier per resolution level; one ResBlock per level.
    """

    def __init__(self, in_ch: int = 1, out_ch: int = 4, ch: int = 32, ch_mult: tuple = (1, 2, 2),
                 num_res: int = 1):
        super().__init__()
        self.in_ch = in_ch
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        blocks, c = [], ch
        for i, m in enumerate(ch_mult):
            for _ in range(num_res):
                blocks.append(ResBlock(c, ch * m))
                c = ch * m
            if i < len(ch_mult) - 1:
                blocks.append(Downsample(c))
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResBlock(c, c)
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(x, self.in_ch, name="ConvEncoder input")
        return self.conv_out(F.silu(self.norm_out(self.mid(self.blocks(self.conv_in(x))))))


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: (B, in_ch, h, w) → (B, out_ch, out_size, out_size)."""

    def __init__(self, in_ch: int = 4, out_ch: int = 1, ch: int = 32, ch_mult: tuple = (1, 2, 2),
                 num_res: int = 1, out_size: int = 28):
        super().__init__()
        self.in_ch = in_ch
        self.sizes = _down_sizes(out_size, len(ch_mult) - 1)[::-1]   # e.g. [7, 14, 28]
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(in_ch, c, 3, padding=1)
        self.mid = ResBlock(c, c)
        self.levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, m in enumerate(reversed(ch_mult)):
            level = []
            for _ in range(num_res):
                level.append(ResBlock(c, ch * m))
                c = ch * m
            self.levels.append(nn.Sequential(*level))
            self.ups.append(Upsample(c) if i < len(ch_mult) - 1 else nn.Identity())
        self.norm_out, self.conv_out = group_norm(c), nn.Conv2d(c, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_image_batch(z, self.in_ch, (self.sizes[0], self.sizes[0]), "ConvDecoder input")
        h = self.mid(self.conv_in(z))
        for i, (level, up) in enumerate(zip(self.levels, self.ups)):
            h = level(h)
            if i < len(self.levels) - 1:
                h = up(h, size=(self.sizes[i + 1], self.sizes[i + 1]))
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------- the FLOP counter
def training_step_flops(model, *example_inputs, batch_size: int, loss=None, backward: bool = True) -> float:
    """FLOPs of one training step's forward + backward pass at ``batch_size``, counted with
    ``torch.utils.flop_counter`` on ``example_inputs`` (a small batch, e.g. two images) and scaled
    linearly to ``batch_size`` (every layer here costs the same per sample).

    ``model(*example_inputs)`` is reduced to a scalar by ``loss(output)`` if given, else: a dict's
    ``"loss"``, a tuple's first element, a scalar tensor as it is, any other tensor by ``pow(2).mean()``
    (the reduction itself costs nothing the counter sees: it counts matrix products and convolutions).
    ``model`` may be a bound method (``prior.loss``). ``backward=False`` counts the forward pass only
    (one step of a sampler). The optimiser step is not counted (O(parameters), not O(batch))."""
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
    if not tensors or tensors[0].dim() == 0:
        raise ValueError("pass at least one batched example input (e.g. two images) after the model")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = tensors[0].shape[0]
    owner = model if isinstance(model, nn.Module) else getattr(model, "__self__", None)
    with FlopCounterMode(display=False) as counter:
        if backward:
            out = model(*example_inputs)
            if loss is not None:
                value = loss(out)
            elif isinstance(out, dict):
                value = out["loss"]
            elif isinstance(out, (tuple, list)):
                value = out[0]
            else:
                value = out
            if value.dim():
                value = value.float().pow(2).mean()
            value.backward()
        else:
            with torch.no_grad():
                model(*example_inputs)
    if isinstance(owner, nn.Module):
        owner.zero_grad(set_to_none=True)
    return counter.get_total_flops() / n * batch_size
