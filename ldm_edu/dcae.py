"""DC-AE's residual autoencoding (Chen et al. 2024, "Deep Compression Autoencoder"; seed paper §2.1).

An autoencoder with a high compression factor f stacks many stride-2 stages, and the deeper it is
the harder it is to optimise: at f = 32 every one of the five stages has to *learn* to move
information from space into channels before it can do anything useful. DC-AE gives each stage a
parameter-free shortcut that already does this move, so the stage's layers only learn a residual
(seed paper §2.1, the scheme after fig. 11):

- encoder, downsampling block  C × H × W → C' × H/2 × W/2:
  1. space-to-channel: every 2 × 2 block of pixels becomes 4 channels (``pixel_unshuffle``),
     C × H × W → 4C × H/2 × W/2 — an exact rearrangement, nothing is lost;
  2. channel averaging: the 4C channels are split into C' groups of g = 4C/C' consecutive
     channels and each group is averaged → C' × H/2 × W/2;
  3. output = main(x) + shortcut(x), main = conv → pixel_unshuffle (the learnt part).
- decoder, upsampling block  C' × h × w → C × 2h × 2w: the mirror image —
  1. channel duplication: each of the C' channels is repeated r = 4C/C' times → 4C × h × w;
  2. channel-to-space (``pixel_shuffle``) → C × 2h × 2w;
  3. output = main(x) + shortcut(x), main = conv → pixel_shuffle.
- the latent itself gets the same shortcuts (``project_out`` averages the last feature map's
  channels down to the latent channels; ``project_in`` duplicates them back).

With ``residual=False`` the very same layers run without the shortcuts: the "plain" autoencoder
with exactly the same parameters, DC-AE's own ablation. The grouping of step 2 (consecutive
channels, i.e. neighbouring sub-pixels of one input channel) and the order of step 1 are those of
the reference implementation (mit-han-lab/efficientvit, ``PixelUnshuffleChannelAveraging…`` and
``ChannelDuplicatingPixelUnshuffle…`` layers); this module is written independently.

MNIST's 28 × 28 is padded to 32 × 32 (as in ``latent.py``), so f ∈ {1, 2, 4, 8, 16, 32}: f = 16
gives a 2 × 2 latent and f = 32 a 1 × 1 latent. DC-AE is a plain (unregularised) autoencoder;
``encode`` returns the latent the diffusion model will see (before its scale factor).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .latent import IMAGE_SIZE, PADDED_SIZE, LatentAutoencoder, crop_images, pad_images
from .nn import ResBlock, check_image_batch, group_norm


# ----------------------------------------------------------------------------- the two shortcuts
def space_to_channel_average(x: torch.Tensor, out_ch: int, factor: int = 2) -> torch.Tensor:
    """DC-AE's encoder shortcut: (B, C, H, W) → (B, out_ch, H/factor, W/factor), no parameters.

    1. space-to-channel: ``pixel_unshuffle`` (B, C·factor², H/factor, W/factor); channel
       c·factor² + i·factor + j holds pixel (factor·y + i, factor·x + j) of input channel c;
    2. average each run of g = C·factor² / out_ch consecutive channels.
    """
    # 1. space to channel (exact, invertible)
    x = F.pixel_unshuffle(x, factor)
    b, c, h, w = x.shape
    # 2. channel averaging over groups of g consecutive channels
    return x.view(b, out_ch, c // out_ch, h, w).mean(dim=2)


def channel_to_space_duplicate(x: torch.Tensor, out_ch: int, factor: int = 2) -> torch.Tensor:
    """DC-AE's decoder shortcut: (B, C, h, w) → (B, out_ch, h·factor, w·factor), no parameters.

    1. channel duplication: repeat every channel r = out_ch·factor² / C times in place
       (``repeat_interleave``) → (B, out_ch·factor², h, w);
    2. channel-to-space: ``pixel_shuffle`` → (B, out_ch, h·factor, w·factor).
    """
    # 1. duplicate channels
    x = x.repeat_interleave(out_ch * factor * factor // x.shape[1], dim=1)
    # 2. channel to space (the inverse of pixel_unshuffle)
    return F.pixel_shuffle(x, factor)


def _check_groups(in_ch: int, out_ch: int, factor: int, what: str) -> None:
    """Both shortcuts need in_ch·factor² and out_ch to divide one another the right way round."""
    if what == "down" and (in_ch * factor ** 2) % out_ch:
        raise ValueError(f"channel averaging needs out_ch to divide in_ch·{factor}² = {in_ch * factor ** 2}, "
                         f"got in_ch={in_ch}, out_ch={out_ch}: choose widths so each stage at most "
                         f"multiplies channels by {factor ** 2}")
    if what == "up" and (out_ch * factor ** 2) % in_ch:
        raise ValueError(f"channel duplication needs in_ch to divide out_ch·{factor}² = {out_ch * factor ** 2}, "
                         f"got in_ch={in_ch}, out_ch={out_ch}")


# ----------------------------------------------------------------------------- blocks
class DownBlock(nn.Module):
    """C × H × W → C' × H/2 × W/2: conv → pixel_unshuffle (+ the averaging shortcut if residual)."""

    def __init__(self, in_ch: int, out_ch: int, residual: bool = True):
        super().__init__()
        if out_ch % 4:
            raise ValueError(f"a DownBlock's out_ch must be a multiple of 4 (pixel_unshuffle makes 4 channels "
                             f"of each conv channel), got {out_ch}")
        _check_groups(in_ch, out_ch, 2, "down")
        self.out_ch, self.residual = out_ch, residual
        self.conv = nn.Conv2d(in_ch, out_ch // 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pixel_unshuffle(self.conv(x), 2)
        return h + space_to_channel_average(x, self.out_ch) if self.residual else h


class UpBlock(nn.Module):
    """C' × h × w → C × 2h × 2w: conv → pixel_shuffle (+ the duplicating shortcut if residual)."""

    def __init__(self, in_ch: int, out_ch: int, residual: bool = True):
        super().__init__()
        _check_groups(in_ch, out_ch, 2, "up")
        self.out_ch, self.residual = out_ch, residual
        self.conv = nn.Conv2d(in_ch, out_ch * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.pixel_shuffle(self.conv(x), 2)
        return h + channel_to_space_duplicate(x, self.out_ch) if self.residual else h


def check_dc_factor(f, size: int = PADDED_SIZE) -> int:
    """Return ``f`` if it is a power of two that divides ``size`` (the latent may be 1 × 1); else ValueError."""
    if not isinstance(f, int) or isinstance(f, bool) or f < 1 or (f & (f - 1)) or size % f:
        allowed = [2 ** k for k in range(int(math.log2(size)) + 1) if size % 2 ** k == 0]
        raise ValueError(f"compression factor f={f!r} does not fit a {size}×{size} image: every downsampling "
                         f"block halves H and W, so f must be a power of two dividing {size}; use one of "
                         f"{allowed} (f={size} gives a 1×1 latent)")
    return f


def stage_widths(f: int, ch: int, max_ch: int) -> list[int]:
    """Channel width per resolution level: ch, 2ch, 4ch, … capped at max_ch (log2 f + 1 levels)."""
    return [min(ch * 2 ** i, max_ch) for i in range(int(math.log2(f)) + 1)]


# ----------------------------------------------------------------------------- the autoencoder
class DCAutoencoder(LatentAutoencoder):
    """x (B, 1, 28, 28) in [−1, 1] ↔ z (B, latent_ch, 32/f, 32/f), with or without DC-AE's shortcuts.

    Encoder: conv_in → per level [ResBlock × num_res, DownBlock] → ResBlock → project_out.
    Decoder: project_in → ResBlock → per level [UpBlock, ResBlock × num_res] → norm, SiLU, conv_out.
    ``residual`` switches every shortcut (down, up, latent) on or off; the parameters are the same.
    Offers what ``LatentDiffusion`` needs: ``f``, ``latent_ch``, ``latent_shape``, ``encode``, ``decode``.
    """

    def __init__(self, f: int = 16, latent_ch: int = 16, ch: int = 16, max_ch: int = 64, num_res: int = 1,
                 residual: bool = True):
        super().__init__()
        check_dc_factor(f)
        widths = stage_widths(f, ch, max_ch)
        if widths[-1] % latent_ch:
            raise ValueError(f"latent_ch={latent_ch} must divide the last width {widths[-1]} (the latent shortcut "
                             f"averages groups of channels); pick latent_ch among the divisors of {widths[-1]}")
        self.config = {"f": f, "latent_ch": latent_ch, "ch": ch, "max_ch": max_ch, "num_res": num_res,
                       "residual": residual}
        self.f, self.latent_ch, self.residual, self.widths = f, latent_ch, residual, widths
        self.reg = "none"                                      # a plain autoencoder, as DC-AE
        # encoder
        self.conv_in = nn.Conv2d(1, widths[0], 3, padding=1)
        enc = []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += [ResBlock(a, a) for _ in range(num_res)] + [DownBlock(a, b, residual)]
        self.enc_blocks = nn.Sequential(*enc, ResBlock(widths[-1], widths[-1]))
        self.enc_norm = group_norm(widths[-1])
        self.project_out = nn.Conv2d(widths[-1], latent_ch, 3, padding=1)
        # decoder
        self.project_in = nn.Conv2d(latent_ch, widths[-1], 3, padding=1)
        dec = [ResBlock(widths[-1], widths[-1])]
        for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):
            dec += [UpBlock(a, b, residual)] + [ResBlock(b, b) for _ in range(num_res)]
        self.dec_blocks = nn.Sequential(*dec)
        self.dec_norm = group_norm(widths[0])
        self.conv_out = nn.Conv2d(widths[0], 1, 3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight G_L (its conv_out sits on the model itself, not in a .decoder)."""
        return self.conv_out.weight

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """x (B, 1, 28, 28) in [−1, 1] → z (B, latent_ch, 32/f, 32/f). ``sample`` is ignored (no posterior)."""
        check_image_batch(x, 1, (IMAGE_SIZE, IMAGE_SIZE), "DCAutoencoder input")
        h = self.enc_blocks(self.conv_in(pad_images(x)))
        z = self.project_out(F.silu(self.enc_norm(h)))
        return z + space_to_channel_average(h, self.latent_ch, factor=1) if self.residual else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_ch, 32/f, 32/f) → x̂ (B, 1, 28, 28), roughly in [−1, 1]."""
        check_image_batch(z, self.latent_ch, self.latent_shape[1:], f"DCAutoencoder(f={self.f}) latent")
        h = self.project_in(z)
        if self.residual:
            h = h + channel_to_space_duplicate(z, self.widths[-1], factor=1)
        return crop_images(self.conv_out(F.silu(self.dec_norm(self.dec_blocks(h)))))

    def forward(self, x: torch.Tensor) -> dict:
        """Reconstruction loss ‖x − x̂‖² summed over pixels, mean over the batch (as lesson 06's first stage)."""
        x_hat = self.decode(self.encode(x))
        rec = (x_hat - x).pow(2).flatten(1).sum(1).mean()
        return {"loss": rec, "rec": rec, "x_hat": x_hat}


def dcae_loss(model: DCAutoencoder, batch):
    """A loss_fn for fit(): batch = images in [−1, 1] (or (images, labels))."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = model(x)
    return out["loss"], {"rec": out["rec"]}


__all__ = ["space_to_channel_average", "channel_to_space_duplicate", "DownBlock", "UpBlock", "check_dc_factor",
           "stage_widths", "DCAutoencoder", "dcae_loss"]
