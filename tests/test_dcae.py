"""Lesson 07, DC-AE: the residual shortcuts are exact rearrangements (+ averaging / duplication),
shapes per f up to a 1 × 1 latent, equal parameters with and without shortcuts, bad input."""
import pytest
import torch
import torch.nn.functional as F

from ldm_edu.dcae import (DCAutoencoder, DownBlock, UpBlock, channel_to_space_duplicate, check_dc_factor,
                          dcae_loss, space_to_channel_average, stage_widths)
from ldm_edu.diffusion import NoiseSchedule
from ldm_edu.latent import LatentDiffusion
from ldm_edu.nn import count_parameters
from ldm_edu.unet import unet_from_config


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


def _unshuffle_by_loops(x, r=2):
    """An independent space-to-channel: out[b, c·r² + i·r + j, y, x] = in[b, c, r·y + i, r·x + j]."""
    b, c, h, w = x.shape
    out = torch.empty(b, c * r * r, h // r, w // r)
    for ci in range(c):
        for i in range(r):
            for j in range(r):
                out[:, ci * r * r + i * r + j] = x[:, ci, i::r, j::r]
    return out


def test_space_to_channel_is_an_exact_invertible_rearrangement():
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    # group size 1 (out_ch = 4C): no averaging, just the rearrangement
    y = space_to_channel_average(x, out_ch=12)
    assert torch.equal(y, _unshuffle_by_loops(x))
    assert torch.equal(F.pixel_shuffle(y, 2), x)                        # invertible: shuffle undoes it
    # every value appears exactly once
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    # with out_ch = C·r² the duplicating shortcut (repeat 1) is the exact inverse too
    assert torch.equal(channel_to_space_duplicate(y, out_ch=3), x)


def test_channel_averaging_hand_computed():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    # pixel_unshuffle → channels [1, 2, 3, 4] (sub-pixels (0,0), (0,1), (1,0), (1,1))
    assert space_to_channel_average(x, 4).flatten().tolist() == [1.0, 2.0, 3.0, 4.0]
    assert space_to_channel_average(x, 2).flatten().tolist() == [1.5, 3.5]      # groups (1, 2), (3, 4)
    assert space_to_channel_average(x, 1).flatten().tolist() == [2.5]
    # two input channels → 4 output channels: each averages two neighbouring sub-pixels of one channel
    x2 = torch.cat([x, 10 * x], dim=1)
    assert space_to_channel_average(x2, 4).flatten().tolist() == [1.5, 3.5, 15.0, 35.0]


def test_channel_duplication_hand_computed():
    z = torch.tensor([5.0, 7.0]).view(1, 2, 1, 1)
    # 2 → 1 channel at 2 × 2: repeat each channel twice → [5, 5, 7, 7] → pixel_shuffle rows (5 5), (7 7)
    assert channel_to_space_duplicate(z, out_ch=1).view(2, 2).tolist() == [[5.0, 5.0], [7.0, 7.0]]
    # 2 → 2 channels: each channel fills its own 2 × 2 block
    out = channel_to_space_duplicate(z, out_ch=2)
    assert out.shape == (1, 2, 2, 2) and (out[0, 0] == 5).all() and (out[0, 1] == 7).all()
    # factor 1 (the latent shortcut): channel c goes to channels c·r … c·r + r − 1
    assert channel_to_space_duplicate(z, out_ch=4, factor=1).flatten().tolist() == [5.0, 5.0, 7.0, 7.0]


def test_duplication_is_the_adjoint_of_averaging_up_to_the_group_size():
    """⟨avg(x), y⟩ = ⟨x, dup(y)⟩ / g: the decoder's shortcut mirrors the encoder's (g = group size)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2, 8, 8, 8, generator=g), torch.randn(2, 16, 4, 4, generator=g)
    group = 8 * 4 // 16
    lhs = (space_to_channel_average(x, 16) * y).sum()
    rhs = (x * channel_to_space_duplicate(y, 8)).sum() / group
    torch.testing.assert_close(lhs, rhs)


def test_blocks_add_the_shortcut_only_when_residual():
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 8)
    down, plain = DownBlock(8, 16, residual=True), DownBlock(8, 16, residual=False)
    plain.load_state_dict(down.state_dict())
    torch.testing.assert_close(down(x) - plain(x), space_to_channel_average(x, 16))
    nn_zero = DownBlock(8, 16)
    torch.nn.init.zeros_(nn_zero.conv.weight), torch.nn.init.zeros_(nn_zero.conv.bias)
    torch.testing.assert_close(nn_zero(x), space_to_channel_average(x, 16))   # main path off: shortcut only
    up = UpBlock(16, 8)
    torch.nn.init.zeros_(up.conv.weight), torch.nn.init.zeros_(up.conv.bias)
    z = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(up(z), channel_to_space_duplicate(z, 8))
    assert up(z).shape == (2, 8, 8, 8)


@pytest.mark.parametrize("f,latent_ch", [(1, 4), (2, 4), (4, 4), (8, 8), (16, 16), (32, 32)])
def test_shapes_per_f_and_equal_parameters(f, latent_ch):
    x = _images(2)
    res = DCAutoencoder(f=f, latent_ch=latent_ch, ch=8, max_ch=32, residual=True)
    plain = DCAutoencoder(f=f, latent_ch=latent_ch, ch=8, max_ch=32, residual=False)
    side = 32 // f
    for ae in (res, plain):
        z = ae.encode(x)
        assert z.shape == (2, latent_ch, side, side) == (2, *ae.latent_shape)
        assert ae.decode(z).shape == (2, 1, 28, 28)
        loss, logs = dcae_loss(ae, x)
        assert loss.dim() == 0 and torch.isfinite(loss) and "rec" in logs
    assert count_parameters(res) == count_parameters(plain)          # the shortcuts have no parameters
    assert len(res.widths) == {1: 1, 2: 2, 4: 3, 8: 4, 16: 5, 32: 6}[f]


def test_stage_widths():
    assert stage_widths(32, 16, 64) == [16, 32, 64, 64, 64, 64]
    assert stage_widths(4, 8, 64) == [8, 16, 32]


@pytest.mark.parametrize("bad", [3, 6, 0, -4, 64, 2.0, "16", True])
def test_bad_factor_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="compression factor"):
        check_dc_factor(bad)
    with pytest.raises(ValueError, match="compression factor"):
        DCAutoencoder(f=bad)


def test_bad_widths_and_inputs():
    with pytest.raises(ValueError, match="latent_ch"):
        DCAutoencoder(f=16, latent_ch=48, ch=16, max_ch=64)           # 48 does not divide 64
    with pytest.raises(ValueError, match="multiple of 4"):
        DownBlock(8, 6)
    with pytest.raises(ValueError, match="channel averaging"):
        DownBlock(4, 64)                                              # 4·4 = 16 channels cannot average into 64
    with pytest.raises(ValueError, match="channel duplication"):
        UpBlock(12, 4)                                                # 12 does not divide 4·4
    ae = DCAutoencoder(f=16, latent_ch=16, ch=8, max_ch=32)
    with pytest.raises(ValueError, match=r"\(batch, 16, 2, 2\)"):
        ae.decode(torch.zeros(2, 16, 4, 4))
    with pytest.raises(ValueError, match=r"\(batch, 1, 28, 28\)"):
        ae.encode(torch.zeros(2, 28, 28))


def test_residual_autoencoder_trains_and_plugs_into_latent_diffusion():
    """A 1 × 1 latent (f = 32) works through lesson 06's LatentDiffusion and the shared UNet factory."""
    torch.manual_seed(0)
    x = _images(16)
    ae = DCAutoencoder(f=32, latent_ch=32, ch=8, max_ch=32)
    opt = torch.optim.Adam(ae.parameters(), 1e-3)
    first = dcae_loss(ae, x)[0].item()
    for _ in range(15):
        loss = dcae_loss(ae, x)[0]
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < first
    unet = unet_from_config({"ch": 8, "ch_mult": (1, 2), "num_classes": 10}, in_ch=32, image_size=1)
    ldm = LatentDiffusion(ae, unet, NoiseSchedule(50), scale_factor=2.0)
    imgs = ldm.sample(3, y=torch.tensor([1, 2, 3]), steps=3, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (3, 1, 28, 28) and imgs.min() >= 0 and imgs.max() <= 1
