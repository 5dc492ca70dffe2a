"""Lesson 07, MoVQ: spatially conditional normalisation against a hand computation and GroupNorm,
the MoVQ first stage's shapes, parameters and bad input."""
import pytest
import torch
import torch.nn.functional as F

from ldm_edu.movq import MoVQFirstStage, SpatialNorm, make_norm, movq_loss
from ldm_edu.nn import count_parameters


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g) * 2 - 1


def test_scn_starts_as_plain_groupnorm():
    g = torch.Generator().manual_seed(0)
    f, zq = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    scn = SpatialNorm(16, 4)
    torch.testing.assert_close(scn(f, zq), F.group_norm(f, scn.norm.num_groups))


def test_scn_with_constant_scale_and_shift_is_groupnorm_with_that_affine():
    g = torch.Generator().manual_seed(1)
    f, zq = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    gamma, beta = torch.randn(16, generator=g), torch.randn(16, generator=g)
    scn = SpatialNorm(16, 4)
    with torch.no_grad():                       # φ_γ ≡ γ, φ_β ≡ β: zero weights, constant biases
        scn.gamma.weight.zero_(), scn.beta.weight.zero_()
        scn.gamma.bias.copy_(gamma), scn.beta.bias.copy_(beta)
    torch.testing.assert_close(scn(f, zq), F.group_norm(f, scn.norm.num_groups, gamma, beta))


def test_scn_matches_the_seed_formula_by_hand():
    """F^i = φ_γ(z_q) (F − μ)/σ + φ_β(z_q), μ, σ per (sample, group), z_q nearest-upsampled."""
    g = torch.Generator().manual_seed(2)
    B, C, G, H, c, h = 2, 16, 8, 8, 3, 2
    f, zq = torch.randn(B, C, H, H, generator=g), torch.randn(B, c, h, h, generator=g)
    scn = SpatialNorm(C, c)
    with torch.no_grad():
        for conv in (scn.gamma, scn.beta):
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    assert scn.norm.num_groups == G
    # by hand: group statistics (biased variance, eps = 1e-5 as GroupNorm)
    fg = f.view(B, G, -1)
    mu, var = fg.mean(-1, keepdim=True), fg.var(-1, unbiased=False, keepdim=True)
    normed = ((fg - mu) / torch.sqrt(var + 1e-5)).view(B, C, H, H)
    up = zq.repeat_interleave(H // h, dim=2).repeat_interleave(H // h, dim=3)       # nearest neighbour
    gamma = torch.einsum("oc,bchw->bohw", scn.gamma.weight[:, :, 0, 0], up) + scn.gamma.bias[:, None, None]
    beta = torch.einsum("oc,bchw->bohw", scn.beta.weight[:, :, 0, 0], up) + scn.beta.bias[:, None, None]
    torch.testing.assert_close(scn(f, zq), gamma * normed + beta, rtol=1e-4, atol=1e-5)
    # spatial: identical feature vectors at two positions under different codes come out different
    f = f.clone()
    f[:, :, 6, 6] = f[:, :, 1, 1]                   # (1, 1) lies in code cell (0, 0), (6, 6) in cell (1, 1)
    plain = F.group_norm(f, G)
    torch.testing.assert_close(plain[:, :, 1, 1], plain[:, :, 6, 6])
    out = scn(f, zq)
    assert (out[:, :, 1, 1] - out[:, :, 6, 6]).abs().max() > 1e-2


@pytest.mark.parametrize("f", [2, 4, 8])
@pytest.mark.parametrize("norm", ["spatial", "group"])
def test_first_stage_shapes(f, norm):
    ae = MoVQFirstStage(f=f, latent_ch=3, ch=8, codebook_size=16, norm=norm)
    x = _images(2)
    z = ae.encode(x)
    assert z.shape == (2, 3, 32 // f, 32 // f) == (2, *ae.latent_shape)
    assert ae.decode(z).shape == (2, 1, 28, 28)
    loss, logs = movq_loss(ae, x)
    assert loss.dim() == 0 and torch.isfinite(loss) and set(logs) == {"rec", "vq"}


def test_parameter_difference_is_exactly_the_modulation_convs():
    spatial = MoVQFirstStage(f=4, latent_ch=4, ch=8, codebook_size=16, norm="spatial")
    group = MoVQFirstStage(f=4, latent_ch=4, ch=8, codebook_size=16, norm="group")
    norms = [m for m in spatial.decoder.modules() if isinstance(m, SpatialNorm)]
    # each SpatialNorm: two 1×1 convs 4 → C (weights + biases); each GroupNorm instead: weight + bias (2C)
    expected = sum(2 * (4 * m.norm.num_channels + m.norm.num_channels) - 2 * m.norm.num_channels for m in norms)
    assert count_parameters(spatial) - count_parameters(group) == expected
    assert len(norms) == 2 * 3 + 1 + 2          # 3 levels × 1 block × 2 norms + norm_out + mid block


def test_modulation_receives_gradients():
    torch.manual_seed(0)
    ae = MoVQFirstStage(f=4, latent_ch=4, ch=8, codebook_size=16, norm="spatial")
    loss, _ = movq_loss(ae, _images(4))
    loss.backward()
    grads = [m.gamma.weight.grad for m in ae.decoder.modules() if isinstance(m, SpatialNorm)]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_bad_input():
    with pytest.raises(ValueError, match="norm must be"):
        MoVQFirstStage(norm="batch")
    with pytest.raises(ValueError, match="norm must be"):
        make_norm("layer", 8, 4)
    with pytest.raises(ValueError, match="compression factor"):
        MoVQFirstStage(f=3)
    ae = MoVQFirstStage(f=4, latent_ch=4, ch=8, codebook_size=16)
    with pytest.raises(ValueError, match=r"\(batch, 4, 8, 8\)"):
        ae.decode(torch.zeros(2, 4, 4, 4))
