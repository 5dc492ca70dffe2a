"""Lesson 07 exercise checkers: accept the reference solutions, reject the plausible mistakes."""
from ldm_edu.exercises import lesson07 as ex


def test_solutions_agree_with_the_networks():
    """The reference answers are checked against the real networks, not only by the checkers."""
    from ldm_edu.vqgan import PatchDiscriminator, measured_receptive_field
    assert [ex.solution_patch_receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
    assert measured_receptive_field(PatchDiscriminator(ch=2, n_layers=2), size=96) == 34
    assert ex.solution_scn_extra_parameters(8, 4, 16) == ex._true_extra(8, 4, 16)


def test_patch_receptive_field_checker(capsys):
    assert ex.check_patch_receptive_field(ex.solution_patch_receptive_field)

    def no_strides(n):                      # 3 px per layer
        return 1 + 3 * (n + 2)

    def no_logit_conv(n):                   # the arithmetic without the last conv (the old docstring's 22 at n = 2)
        return ex.solution_patch_receptive_field(n) - 3 * 2 ** n

    def k_times_j(n):
        return 1 + 4 * (2 ** (n + 1) - 1 + 2 ** n)

    def output_size(n):                     # the logit map's size on 28 × 28 instead of the field
        return {1: 12, 2: 5, 3: 2}[n]

    for wrong, hint in ((no_strides, "(k − 1)·j"), (no_logit_conv, "last conv"), (k_times_j, "not k·j"),
                        (output_size, "r += 3·j")):
        capsys.readouterr()
        assert not ex.check_patch_receptive_field(wrong), wrong.__name__
        assert hint in capsys.readouterr().out, wrong.__name__


def test_adaptive_weight_closed_form_checker(capsys):
    assert ex.check_adaptive_weight_closed_form(ex.solution_adaptive_weight_closed_form)

    def inverted(r, h, a, w_d, delta):
        return w_d * float(a.norm() * h.norm() / (r.norm() * h.norm() + delta))

    def no_wd(r, h, a, w_d, delta):
        return ex.solution_adaptive_weight_closed_form(r, h, a, 1.0, delta)

    def h_cancelled(r, h, a, w_d, delta):
        return w_d * float(r.norm() / (a.norm() + delta))

    def with_autograd_on_a_wrong_layer(r, h, a, w_d, delta):     # any other number
        return 1.0

    for wrong, hint in ((inverted, "inverted"), (no_wd, "disc_weight"), (h_cancelled, "‖h‖ cancels only without δ"),
                        (with_autograd_on_a_wrong_layer, "outer products")):
        capsys.readouterr()
        assert not ex.check_adaptive_weight_closed_form(wrong), wrong.__name__
        assert hint in capsys.readouterr().out, wrong.__name__


def test_scn_extra_parameters_checker(capsys):
    assert ex.check_scn_extra_parameters(ex.solution_scn_extra_parameters)
    norms = ex._decoder_norm_channels

    def with_affine(f, c, ch):              # forgot that SCN drops GroupNorm's own γ, β
        return ex.solution_scn_extra_parameters(f, c, ch) + 2 * sum(norms(f, ch))

    def one_conv(f, c, ch):
        return ex.solution_scn_extra_parameters(f, c, ch) // 2

    def no_norm_out(f, c, ch):
        return ex.solution_scn_extra_parameters(f, c, ch) - 2 * c * norms(f, ch)[-1]

    def encoder_too(f, c, ch):
        return 3 * ex.solution_scn_extra_parameters(f, c, ch)

    for wrong, hint in ((with_affine, "affine"), (one_conv, "two modulation convs"), (no_norm_out, "every norm"),
                        (encoder_too, "2·latent_ch·C")):
        capsys.readouterr()
        assert not ex.check_scn_extra_parameters(wrong), wrong.__name__
        assert hint in capsys.readouterr().out, wrong.__name__
