"""The ε-prediction UNet: shapes for pixel and latent inputs, conditioning, errors, checkpoints."""
import pytest
import torch

from ldm_edu.diffusion import NoiseSchedule, diffusion_loss
from ldm_edu.train import CheckpointMismatch, load_checkpoint, save_checkpoint
from ldm_edu.unet import UNet, unet_from_config


def test_unet_from_config_reads_objects_and_mappings_and_defaults_the_rest():
    from types import SimpleNamespace
    m = unet_from_config(SimpleNamespace(ch=8, ch_mult=[1, 2, 2], num_res=2, attn=False, num_classes=10, patch=1),
                         in_ch=4, image_size=8)
    assert m.config == UNet(in_ch=4, ch=8, ch_mult=(1, 2, 2), num_res=2, attn=False, num_classes=10,
                            image_size=8).config
    d = unet_from_config({"ch": 8})                   # everything else: the UNet defaults
    assert d.config == UNet(ch=8).config
    assert d(torch.randn(2, 1, 28, 28), torch.tensor([1, 2])).shape == (2, 1, 28, 28)
    with pytest.raises(ValueError, match="patch"):
        unet_from_config({"ch": 8, "patch": 3})


@pytest.mark.parametrize("in_ch,size,ch_mult", [(1, 28, (1, 2)), (1, 28, (1, 2, 2)), (4, 8, (1, 2)),
                                                (4, 7, (1, 2)), (4, 7, (1, 2, 2)), (8, 4, (1, 2)),
                                                (3, 5, (1, 1, 1))])
def test_output_has_input_shape(in_ch, size, ch_mult):
    torch.manual_seed(0)
    m = UNet(in_ch=in_ch, ch=16, ch_mult=ch_mult, image_size=size)
    x = torch.randn(3, in_ch, size, size)
    out = m(x, torch.tensor([0, 500, 999]))
    assert out.shape == x.shape
    # an int t works too
    assert m(x, 5).shape == x.shape


def test_zero_initialised_output_then_learns():
    """conv_out starts at 0 (ε̂ = 0); one Adam step moves it and the loss is finite."""
    torch.manual_seed(0)
    m = UNet(ch=8, ch_mult=(1, 2))
    x = torch.randn(4, 1, 28, 28)
    assert m(x, 10).abs().max().item() == 0.0
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    loss = diffusion_loss(m, NoiseSchedule(100), x)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and m(x, 10).abs().max().item() > 0


def test_time_and_class_conditioning_change_the_output():
    torch.manual_seed(0)
    m = UNet(ch=8, ch_mult=(1, 2), num_classes=10)
    torch.nn.init.normal_(m.conv_out.weight, std=0.1)     # undo the zero init to see differences
    x = torch.randn(2, 1, 28, 28)
    y = torch.tensor([3, 3])
    a, b = m(x, 10, y), m(x, 900, y)
    assert not torch.allclose(a, b)
    assert not torch.allclose(m(x, 10, y), m(x, 10, torch.tensor([4, 4])))
    # y=None means the null label (index num_classes)
    assert torch.allclose(m(x, 10), m(x, 10, torch.tensor([10, 10])))
    assert m.class_emb.num_embeddings == 11


def test_batch_items_are_independent():
    """GroupNorm, not BatchNorm: a sample's output does not depend on the others in the batch."""
    torch.manual_seed(0)
    m = UNet(ch=8, ch_mult=(1, 2))
    torch.nn.init.normal_(m.conv_out.weight, std=0.1)
    x = torch.randn(3, 1, 28, 28)
    full = m(x, torch.tensor([1, 2, 3]))
    assert torch.allclose(full[1:2], m(x[1:2], torch.tensor([2])), atol=1e-5)


def test_bad_input_errors():
    m = UNet(ch=8, ch_mult=(1, 2), num_classes=10)
    with pytest.raises(ValueError, match="shape"):
        m(torch.randn(2, 28, 28), 3)
    with pytest.raises(ValueError, match=r"\(batch, 1, H, W\)"):
        m(torch.randn(2, 3, 28, 28), 3)
    with pytest.raises(ValueError, match="t must"):
        m(torch.randn(2, 1, 28, 28), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="class labels"):
        m(torch.randn(2, 1, 28, 28), 3, torch.tensor([0, 11]))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(ch=8)(torch.randn(1, 1, 28, 28), 3, torch.tensor([1]))


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    m = UNet(ch=8, ch_mult=(1, 2), num_classes=10)
    p = save_checkpoint(tmp_path / "u.pt", m)
    m2 = UNet(ch=8, ch_mult=(1, 2), num_classes=10)
    load_checkpoint(p, m2)
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(CheckpointMismatch, match="ch"):
        load_checkpoint(p, UNet(ch=16, ch_mult=(1, 2), num_classes=10))


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_preset_unets_build_and_train_one_step_on_cpu(name):
    """Every preset's DDPM (the gpu one too, on the CPU) builds and takes one training step."""
    from ldm_edu.presets import get_preset
    from ldm_edu.diffusion import diffusion_batches_loss
    from ldm_edu.experiments.pixel_ddpm import make_schedule

    cfg = get_preset(name, device="cpu").diffusion
    torch.manual_seed(0)
    m = unet_from_config(cfg)
    opt = torch.optim.Adam(m.parameters(), 1e-4)
    x, y = torch.rand(2, 1, 28, 28) * 2 - 1, torch.tensor([1, 2])
    loss = diffusion_batches_loss(make_schedule(cfg), cfg.p_uncond)(m, (x, y))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
