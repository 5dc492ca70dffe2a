"""The pixel-DDPM recipe of lessons 04–05: its checkpoint branches (load, schedule mismatch → retrain,
retrain=True, another model's file refused), its sampler and evaluation, its cost model."""
from dataclasses import replace

import pytest
import torch

from ldm_edu.experiments.pixel_ddpm import (checkpoint_path, fid_eval_fn, make_schedule, pixel_sampler,
                                            train_or_load_ddpm, workload)
from ldm_edu.presets import get_preset
from ldm_edu.sampling import sample_images
from ldm_edu.train import EMA, load_checkpoint, save_checkpoint
from ldm_edu.unet import UNet, unet_from_config


def _preset(**changes):
    p = get_preset("tiny")
    return replace(p, diffusion=replace(p.diffusion, steps=3, warmup_steps=1, **changes))


def _run(preset, tmp_path, **kw):
    return train_or_load_ddpm(preset, checkpoint_dir=tmp_path, evaluate=False, progress=False, live_plot=False, **kw)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_then_load_the_same_weights(tmp_path, capsys):
    p = _preset()
    first = _run(p, tmp_path)
    assert not first.loaded and first.history is not None and first.path == checkpoint_path(p, tmp_path)
    assert first.path.exists()
    second = _run(p, tmp_path)
    assert second.loaded and "loaded" in capsys.readouterr().out
    assert _same_weights(first.model, second.model)
    assert second.history.last_step == first.history.last_step


def test_retrain_true_trains_even_when_the_file_fits(tmp_path):
    p = _preset()
    first = _run(p, tmp_path)
    again = _run(replace(p, seed=1), tmp_path, retrain=True)
    assert not again.loaded and not _same_weights(first.model, again.model)
    assert _same_weights(again.model, _run(p, tmp_path).model)          # the file now holds the new run


def test_schedule_mismatch_trains_again(tmp_path, capsys):
    p = _preset()
    _run(p, tmp_path)
    q = _preset(schedule="linear")
    run = _run(q, tmp_path)
    assert not run.loaded and "T=100, schedule 'cosine'" in capsys.readouterr().out
    assert load_checkpoint(run.path)["extra"]["schedule"] == "linear"


@pytest.mark.parametrize("other", [lambda: UNet(ch=4, ch_mult=(1, 2), num_classes=10),
                                   lambda: torch.nn.Linear(3, 2)], ids=["other UNet", "other class"])
def test_another_models_file_is_refused_and_replaced(tmp_path, capsys, other):
    p = _preset()
    stranger = other()
    save_checkpoint(checkpoint_path(p, tmp_path), stranger, extra={"T": p.diffusion.T, "schedule": p.diffusion.schedule})
    run = _run(p, tmp_path)
    assert not run.loaded and "not using" in capsys.readouterr().out
    assert run.model.config == unet_from_config(p.diffusion).config
    load_checkpoint(run.path, unet_from_config(p.diffusion))            # the file fits the preset now


def test_pixel_sampler_gives_seeded_balanced_digits():
    p = get_preset("tiny")
    torch.manual_seed(0)
    model, schedule = unet_from_config(p.diffusion).eval(), make_schedule(p.diffusion)
    fn = pixel_sampler(model, schedule, "ddpm", 3, clip_x0=1.0)
    a = sample_images(fn, 5, batch_size=2, seed=1)
    b = sample_images(fn, 5, batch_size=2, seed=1)
    c = sample_images(fn, 5, batch_size=2, seed=2)
    assert a.images.shape == (5, 1, 28, 28) and 0 <= a.images.min() and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_fid_eval_fn_reports_intervals():
    p = get_preset("tiny")
    d = replace(p.diffusion, n_eval=20, eval_steps=2)
    torch.manual_seed(0)
    model = unet_from_config(d)
    out = fid_eval_fn(EMA(model, 0.9), make_schedule(d), d)(model)
    assert out["fid_low"] <= out["fid"] <= out["fid_high"]
    assert out["real_fid_low"] <= out["real_fid"] <= out["real_fid_high"]
    assert out["fid"] > out["real_fid_high"]                 # an untrained model is far from real digits
    assert {"is", "precision", "recall"} <= set(out)
    for key in ("is", "precision", "recall"):               # and their intervals
        assert out[f"{key}_low"] <= out[key] <= out[f"{key}_high"]


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_workload_counts_every_part(name):
    rows = workload(get_preset(name, device="cpu"))
    assert {r[0] for r in rows} == {"04", "05"}
    assert all(r[2] >= 0 and r[3] >= 0 and r[4] > 0 and r[5] > 0 for r in rows if "training" not in r[1])
    train = [r for r in rows if "training" in r[1]][0]
    d = get_preset(name, device="cpu").diffusion
    assert train[2] == d.steps and train[3] > 0


def _result(method, steps, fid, seconds, half=1.0):
    from ldm_edu.experiments.pixel_ddpm import SamplerResult
    from ldm_edu.intervals import Interval
    report = {"fid": Interval(fid, fid - half, fid + half), "n": 1000}
    return SamplerResult(f"{method.upper()}", method, steps, report, seconds, torch.zeros(1, 1, 28, 28))


def test_describe_steps_table_follows_the_data():
    from ldm_edu.experiments.pixel_ddpm import describe_steps_table
    # η = 1 better at 20 and 50 steps, η = 0 better at 5, a tie at 10
    rows = [_result("ddpm", 5, 60, 1.0), _result("ddim", 5, 30, 1.0), _result("ddpm", 10, 20, 2.0),
            _result("ddim", 10, 20.5, 2.0), _result("ddpm", 20, 6, 4.0), _result("ddim", 20, 18, 4.0),
            _result("ddpm", 50, 7, 10.0), _result("ddim", 50, 17, 10.0)]
    text = describe_steps_table(rows, 1000)
    assert "η = 1 (ancestral) has the lower FID at 20, 50 steps" in text and "Karras" in text
    assert "Song et al. (2021, Table 1) found η = 0 better" in text
    assert "η = 0 (DDIM) has the lower FID at 5 steps" in text
    assert "At 10 steps the intervals overlap" in text
    # equal FID: the target is η = 0's best, 17 [16, 18]; η = 0's 18 at 20 steps lies inside it, as does
    # η = 1's 6: both reach it at 20 steps, so no speed-up can be resolved
    assert "η = 1 reaches it with 20 steps (4.0 s), η = 0 with 20 steps (4.0 s)" in text
    assert "no speed-up can be resolved" in text
    # the opposite data gives the opposite text
    rows = [_result("ddpm", 10, 30, 2.0), _result("ddim", 10, 12, 2.0), _result("ddpm", 1000, 10, 200.0),
            _result("ddim", 50, 11, 10.0), _result("ddpm", 50, 25, 10.0)]
    text = describe_steps_table(rows, 1000)
    assert "η = 0 (DDIM) has the lower FID at 10, 50 steps" in text and "Karras" not in text
    assert "Song et al. (2021, Table 1) found η = 0 better" not in text
    assert "η = 0 (DDIM) is 100.0× faster — at least" in text
    assert "DDIM-50 is 20.0× faster than DDPM-1000 at 1.10× its FID" in text


def test_describe_clipping_follows_the_data():
    from ldm_edu.diffusion import NoiseSchedule
    from ldm_edu.experiments.pixel_ddpm import describe_clipping
    sched = NoiseSchedule(1000, "cosine")
    clipped, bad, late = _result("ddpm", 20, 5, 1), _result("ddpm", 20, 80, 1), _result("ddpm", 20, 5.5, 1)
    text = describe_clipping(clipped, bad, late, sched, 20, 979)
    # the first strided jump 1000 → 947 (code 999 → 946): α = ᾱ_999/ᾱ_946 ≈ 3.6e-7, gain ≈ 1/√α ≈ 1.67e3
    assert "t = 1000 → 947" in text and "strided first jump" in text and "31.6" in text
    assert "near-total first jump" in text
    text = describe_clipping(clipped, _result("ddpm", 20, 5.3, 1), late, sched, 20, 979)
    assert "no measurable difference" in text and "near-total" not in text
    text = describe_clipping(clipped, _result("ddpm", 20, 2, 0.5), late, sched, 20, 979)
    assert "unclipped sampler is the better one" in text


def test_eps_error_gain_hand_values_and_the_library_step():
    from ldm_edu.diffusion import NoiseSchedule
    from ldm_edu.sampling import ddpm_step
    from ldm_edu.experiments.pixel_ddpm import eps_error_gain, respaced_jumps
    s = NoiseSchedule(1000, "cosine")
    # one full step from t = T: β_T clipped at 0.999, so gain = 0.999/√0.001 /√(1 − ᾱ_T) ≈ 31.59
    assert abs(eps_error_gain(s, 999, 998) - 0.999 / 0.001 ** 0.5) < 0.01
    # the first of 20 strided jumps: ≈ 1/√α with α = ᾱ_999/ᾱ_946
    a = float(s.alpha_bars[999] / s.alpha_bars[946])
    assert abs(eps_error_gain(s, 999, 946) * a ** 0.5 - 1) < 1e-3 and 1500 < eps_error_gain(s, 999, 946) < 1800
    # = the change of the library's unclipped step per unit change of ε̂
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    step = lambda e: ddpm_step(s, x, torch.full_like(x, e), 500, 450, noise=torch.zeros_like(x))
    assert abs((step(0.0) - step(1e-3)).mean().item() / 1e-3 - eps_error_gain(s, 500, 450)) < 1e-4
    jumps = respaced_jumps(s, 20)
    assert [j["t"] for j in jumps][:2] == [999, 946] and jumps[-1]["t_prev"] == -1 and len(jumps) == 20
    last_noisy = jumps[-2]                  # 53 → 0: β ≈ 0.009, β̃ ≈ 0 (ᾱ_0 ≈ 1)
    assert last_noisy["t_prev"] == 0 and last_noisy["beta"] > 100 * last_noisy["beta_tilde"]


def test_describe_variance_follows_the_data():
    from ldm_edu.diffusion import NoiseSchedule
    from ldm_edu.experiments.pixel_ddpm import describe_variance
    s = NoiseSchedule(1000, "cosine")
    text = describe_variance(_result("ddpm", 20, 6, 1), _result("ddpm", 20, 30, 1), s, 20)
    assert "on this 20-step respaced chain they are not" in text and "Nichol & Dhariwal" in text
    text = describe_variance(_result("ddpm", 20, 6, 1), _result("ddpm", 20, 6.5, 1), s, 20)
    assert "not separated here" in text
    text = describe_variance(_result("ddpm", 20, 30, 1), _result("ddpm", 20, 6, 1), s, 20)
    assert "σ² = β is the better one" in text


def _evals(fids, half, real=(15.0, 5.0, 27.0)):
    ev = {k: [] for k in ("fid", "fid_low", "fid_high", "real_fid", "real_fid_low", "real_fid_high",
                          "precision", "recall", "is")}
    for i, f in enumerate(fids):
        step = 500 * (i + 1)
        for k, v in (("fid", f), ("fid_low", f - half), ("fid_high", f + half), ("real_fid", real[0]),
                     ("real_fid_low", real[1]), ("real_fid_high", real[2]), ("precision", .8), ("recall", .8),
                     ("is", 9.0)):
            ev[k].append((step, v))
    return ev


def test_training_table_and_what_to_notice():
    from ldm_edu.experiments.pixel_ddpm import describe_training, training_table
    ev = _evals([160, 60, 28, 20, 17], half=10)
    text = describe_training(ev, 200)
    assert text.startswith("From step 1500 on") and "20" in text
    assert describe_training(_evals([160, 60], half=5), 200).startswith("No evaluated step")
    table = training_table(ev)
    assert table.count("real vs real") == 1 and "| 2500 | 17.0 [7.0, 27.0] | 0.80 |" in table


def test_describe_loss_spike():
    from ldm_edu.experiments.pixel_ddpm import describe_loss_spike
    from ldm_edu.train import History
    h = History()
    loss = [1.0 / (1 + i) + 0.1 for i in range(20)] + [0.4] * 10 + [0.11] * 40
    for i, v in enumerate(loss):
        h.log(10 * (i + 1), v)
    text = describe_loss_spike(h, 100, 2e-3)
    assert "jumps" in text and "after the 100-step warm-up" in text and "back within 10 %" in text
    h2 = History()
    for i in range(60):
        h2.log(10 * (i + 1), 1.0 / (1 + i) + 0.1)
    assert "without a spike" in describe_loss_spike(h2, 100, 2e-3)


def test_guidance_text_follows_the_intervals():
    from ldm_edu.experiments.pixel_ddpm import SamplerResult, describe_guidance
    from ldm_edu.intervals import Interval

    def res(fid, p, r):
        rep = {"fid": Interval(fid, fid - 8, fid + 8), "n": 200, "precision_interval": Interval(p, p - .04, p + .04),
               "recall_interval": Interval(r, r - .04, r + .04)}
        return SamplerResult("w", "ddpm", 20, rep, 1.0, torch.zeros(1, 1, 28, 28))
    guided = {0.0: res(79, .59, .80), 1.0: res(16, .87, .89), 2.0: res(24, .96, .73), 4.0: res(46, .95, .54)}
    agree = {0.0: None, 1.0: Interval(.94, .9, .96), 2.0: Interval(.995, .97, 1), 4.0: Interval(1, .995, 1)}
    text = describe_guidance(guided, agree, 0.1, 4000)
    assert "w = 0 → 1: precision 0.59 → 0.87 (up), recall 0.80 → 0.89 (up) — no trade: both improve" in text
    assert "w = 1 → 2: precision 0.87 → 0.96 (up), recall 0.89 → 0.73 (down) — a trade" in text
    assert "does not separate w = 1 and 2" in text and "p_uncond = 10 %" in text and "w = 4 the classifier" in text


def _row(eta, steps, fid, low, high, seconds, ref=(4.5, 1.7, 8.5), **extra):
    from ldm_edu.experiments.pixel_ddpm import StepsResult
    from ldm_edu.intervals import Interval
    report = {"fid": Interval(fid, low, high), "n": 1000, "real_fid": Interval(*ref), **extra}
    return StepsResult(f"η = {eta}", "ddpm" if eta == 1 else "ddim", steps, report, seconds,
                       torch.zeros(1, 1, 28, 28), eta=float(eta))


def _cpu_run():
    """lesson 05's cpu run (review of 2026-11-25), without its 100-step entries."""
    return [_row(1, 5, 26.9, 22.3, 31.5, 5.0), _row(0, 5, 68.4, 60.5, 79.1, 4.7),
            _row(1, 10, 6.0, 3.4, 9.4, 9.3), _row(0, 10, 28.3, 24.2, 34.0, 9.6),
            _row(1, 20, 6.1, 4.1, 9.5, 19.2), _row(0, 20, 21.1, 17.8, 25.6, 20.1),
            _row(1, 50, 5.4, 2.8, 8.1, 53.4), _row(0, 50, 20.7, 17.3, 25.0, 52.1)]


def test_steps_to_reach_uses_the_target_interval():
    from ldm_edu.experiments.pixel_ddpm import _inside_from, _steps_to_reach
    from ldm_edu.intervals import Interval
    rows = [_row(0, 10, 28.3, 24.2, 34.0, 9.6), _row(0, 20, 21.1, 17.8, 25.6, 20.1), _row(0, 50, 20.7, 17.3, 25.0, 52.1)]
    # the target 20.7 [17.3, 25.0]: 21.1 lies inside it, so 20 steps reach it (a point rule would need 50)
    assert _steps_to_reach(rows, Interval(20.7, 17.3, 25.0)).steps == 20
    assert _steps_to_reach(rows, 20.7).steps == 50                         # a bare number: width 0
    assert _steps_to_reach(rows, Interval(10.0, 8.0, 12.0)) is None
    ref = Interval(4.5, 1.7, 8.5)
    e1 = [_row(1, 5, 26.9, 22.3, 31.5, 5.0), _row(1, 10, 6.0, 3.4, 9.4, 9.3), _row(1, 20, 9.6, 8.6, 11.0, 19.2),
          _row(1, 50, 5.4, 2.8, 8.1, 53.4)]
    assert _inside_from(e1, ref) == 50                 # 20 steps is outside, so "from 10 on" would be false
    assert _inside_from(e1[:2], ref) == 10 and _inside_from(e1[:1], ref) is None


def test_describe_steps_table_on_the_cpu_run():
    from ldm_edu.experiments.pixel_ddpm import describe_steps_table
    text = describe_steps_table(_cpu_run(), 1000)
    assert "η = 1 (ancestral) has the lower FID at 5, 10, 20, 50 steps" in text
    assert "on this model it is the other way round" in text and "η = 0 does not win anywhere" in text
    assert "a hypothesis that this table does not test" in text               # no η in between measured
    assert "cannot be told from real data at n = 1000: η = 1 at 10, 20, 50 steps." in text
    # equal FID: target η = 0 at 50 steps, 20.7 [17.3, 25.0]; η = 1 reaches it at 10 steps, η = 0 at 20
    assert "η = 1 reaches it with 10 steps (9.3 s), η = 0 with 20 steps (20.1 s)" in text
    assert "η = 1 is 2.2× faster" in text and "at least" not in text and "factors of ≈ 2.5" in text
    # the full chain is not measured: median 1.0 s/step (rounded) → ≈ 1000 s, and the reason it cannot win
    assert "DDPM-1000 (all T steps, η = 1) is not in this preset's table" in text
    assert "inside the real-vs-real interval from 10 steps on" in text


def test_describe_steps_table_tests_the_noise_explanation_with_a_middle_eta():
    from ldm_edu.experiments.pixel_ddpm import describe_steps_table
    between = _cpu_run() + [_row(0.5, 20, 12.0, 9.9, 14.5, 20.0)]
    text = describe_steps_table(between, 1000)
    assert "FID falls as η grows" in text and "Karras et al. 2022, sec. 4" in text and "overlaps both" not in text
    overlapping = _cpu_run() + [_row(0.5, 20, 12.0, 8.0, 19.0, 20.0)]
    assert "the order is suggested, not separated" in describe_steps_table(overlapping, 1000)
    outside = _cpu_run() + [_row(0.5, 20, 30.0, 26.0, 34.0, 20.0)]
    text = describe_steps_table(outside, 1000)
    assert "FID does not fall steadily with η" in text and "stays a hypothesis" in text


def test_describe_steps_table_names_what_eta_0_loses():
    from ldm_edu.experiments.pixel_ddpm import describe_steps_table
    from ldm_edu.intervals import Interval
    pr = lambda p, r: {"precision_interval": Interval(p, p - 0.02, p + 0.02),
                       "recall_interval": Interval(r, r - 0.02, r + 0.02)}
    rows = _cpu_run()[:-2] + [_row(1, 50, 5.4, 2.8, 8.1, 53.4, **pr(0.84, 0.88)),
                              _row(0, 50, 20.7, 17.3, 25.0, 52.1, **pr(0.74, 0.88))]
    assert "What η = 0 loses is fidelity (precision)" in describe_steps_table(rows, 1000)
    rows[-1] = _row(0, 50, 20.7, 17.3, 25.0, 52.1, **pr(0.83, 0.88))
    assert "Neither pair is apart" in describe_steps_table(rows, 1000)


def test_summarize_steps_table_follows_the_data():
    from ldm_edu.experiments.pixel_ddpm import summarize_steps_table
    text = summarize_steps_table(_cpu_run())
    assert "η = 1 (ancestral, strided) reaches its plateau at 10 steps (6.0 [3.4, 9.4])" in text
    assert "from 10 steps on it lies inside the real-vs-real interval 4.5 [1.7, 8.5]" in text
    assert "η = 0 (DDIM) reaches its plateau at 20 steps" in text and "stays above the real-vs-real" in text
    assert "η = 1 wins at every measured step count" in text and "depends on the step budget" not in text
    # η = 0 better at 5 steps only: now the choice depends on the budget
    rows = _cpu_run()
    rows[1] = _row(0, 5, 15.0, 12.0, 18.0, 4.7)
    text = summarize_steps_table(rows)
    assert "depends on the step budget: η = 0 wins at 5 steps, η = 1 at 10, 20, 50" in text


def test_steps_table_rows_and_the_middle_eta(monkeypatch):
    import ldm_edu.experiments.pixel_ddpm as P
    calls = []

    def fake(model, schedule, name, n, method, steps, seed=0, **kw):
        calls.append((method, steps, kw.get("eta"), seed))
        return P.SamplerResult(name, method, steps, {"n": n}, 0.0, torch.zeros(1))
    monkeypatch.setattr(P, "measure_sampler", fake)
    rows = P.steps_table(None, None, (5, 10, 20, 50), 8, seed=11, mid_eta=0.5, mid_steps=20)
    assert [(r.steps, r.eta) for r in rows] == [(5, 1.0), (5, 0.0), (10, 1.0), (10, 0.0), (20, 1.0), (20, 0.0),
                                               (20, 0.5), (50, 1.0), (50, 0.0)]
    assert ("ddim", 20, 0.5, 11) in calls and all(c[3] == 11 for c in calls)
    assert rows[0].name == "η = 1 (ancestral, strided)" and rows[1].name == "η = 0 (DDIM)" and rows[6].name == "η = 0.5"
    assert len(P.steps_table(None, None, (5, 10), 8)) == 4


def test_the_gpu_preset_measures_the_full_chain():
    # describe_steps_table says so when a preset leaves DDPM-T out
    d = get_preset("gpu", device="cpu").diffusion
    assert d.T in d.steps_list
