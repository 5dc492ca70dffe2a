"""Lesson 07 exercise checkers: accept the reference solutions, reject the plausible mistakes."""
import torch
import torch.nn.functional as F

from ldm_edu.exercises import lesson07 as ex


def test_adaptive_weight_checker(capsys):
    assert ex.check_adaptive_weight(ex.solution_adaptive_weight)

    def undetached(rec, gan, w, delta=1e-4):
        g1 = torch.autograd.grad(rec, w, retain_graph=True, create_graph=True)[0]
        g2 = torch.autograd.grad(gan, w, retain_graph=True, create_graph=True)[0]
        return g1.norm() / (g2.norm() + delta)

    def inverted(rec, gan, w, delta=1e-4):
        return ex.solution_adaptive_weight(gan, rec, w, delta)

    def sums(rec, gan, w, delta=1e-4):
        g1 = torch.autograd.grad(rec, w, retain_graph=True)[0]
        g2 = torch.autograd.grad(gan, w, retain_graph=True)[0]
        return (g1.sum() / (g2.sum() + delta)).abs().detach()

    def values(rec, gan, w, delta=1e-4):
        return (rec / (gan.abs() + delta)).detach()

    def unimplemented(rec, gan, w, delta=1e-4):
        raise NotImplementedError

    for wrong, hint in ((undetached, "detach"), (inverted, "inverted"), (sums, "norms"), (values, "loss values"),
                        (unimplemented, "NotImplementedError")):
        capsys.readouterr()
        assert not ex.check_adaptive_weight(wrong), wrong.__name__
        assert hint in capsys.readouterr().out, wrong.__name__


def test_space_to_channel_checker(capsys):
    assert ex.check_space_to_channel(ex.solution_space_to_channel)

    def halves(x, out_ch):
        u = F.pixel_unshuffle(x, 2)
        return u.view(u.shape[0], u.shape[1] // out_ch, out_ch, *u.shape[-2:]).mean(1)

    def reshaped(x, out_ch):
        b, c, h, w = x.shape
        u = x.reshape(b, 4 * c, h // 2, w // 2)
        return u.view(b, out_ch, 4 * c // out_ch, h // 2, w // 2).mean(2)

    def pooled(x, out_ch):
        return F.avg_pool2d(x, 2)

    for wrong, hint in ((halves, "consecutive"), (reshaped, "pixel_unshuffle"), (pooled, "average pooling")):
        capsys.readouterr()
        assert not ex.check_space_to_channel(wrong), wrong.__name__
        assert hint in capsys.readouterr().out, wrong.__name__


def test_spatial_norm_checker(capsys):
    assert ex.check_spatial_norm(ex.solution_spatial_norm)

    def up(zq, f, mode="nearest"):
        return F.interpolate(zq, size=f.shape[-2:], mode=mode)

    def layer_norm(f, zq, g, b, groups):
        return g(up(zq, f)) * F.group_norm(f, 1) + b(up(zq, f))

    def swapped(f, zq, g, b, groups):
        return b(up(zq, f)) * F.group_norm(f, groups) + g(up(zq, f))

    def added(f, zq, g, b, groups):
        return g(up(zq, f)) + F.group_norm(f, groups) + b(up(zq, f))

    def bilinear(f, zq, g, b, groups):
        z = up(zq, f, "bilinear")
        return g(z) * F.group_norm(f, groups) + b(z)

    def unnormalised(f, zq, g, b, groups):
        return g(up(zq, f)) * f + b(up(zq, f))

    for wrong, hint in ((layer_norm, "per group"), (swapped, "swapped"), (added, "multiplies"),
                        (bilinear, "nearest"), (unnormalised, "normalise F")):
        capsys.readouterr()
        assert not ex.check_spatial_norm(wrong), wrong.__name__
        assert hint in capsys.readouterr().out, wrong.__name__
