"""The pixel-DDPM recipe of lessons 04–05: its checkpoint branches (load, schedule mismatch → retrain,
retrain=True, another model's file refused), its sampler and evaluation, its cost model."""
from dataclasses import replace

import pytest
import torch

from ldm_edu.diffusion import sample_images
from ldm_edu.experiments.pixel_ddpm import (checkpoint_path, fid_eval_fn, make_schedule, pixel_sampler,
                                            train_or_load_ddpm, workload)
from ldm_edu.presets import get_preset
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
    from ldm_edu.metrics import Interval
    report = {"fid": Interval(fid, fid - half, fid + half), "n": 1000}
    return SamplerResult(f"{method.upper()}", method, steps, report, seconds, torch.zeros(1, 1, 28, 28))


def test_describe_steps_table_follows_the_data():
    from ldm_edu.experiments.pixel_ddpm import describe_steps_table
    # DDPM better at 20 and 50 steps, DDIM better at 5, a tie at 10
    rows = [_result("ddpm", 5, 60, 1.0), _result("ddim", 5, 30, 1.0), _result("ddpm", 10, 20, 2.0),
            _result("ddim", 10, 20.5, 2.0), _result("ddpm", 20, 6, 4.0), _result("ddim", 20, 18, 4.0),
            _result("ddpm", 50, 7, 10.0), _result("ddim", 50, 17, 10.0)]
    text = describe_steps_table(rows, 1000)
    assert "DDPM (η = 1) has the lower FID at 20, 50 steps" in text and "Karras" in text
    assert "DDIM (η = 0) has the lower FID at 5 steps" in text
    assert "At 10 steps the intervals overlap" in text
    # equal FID: the worse best is DDIM's 17; DDPM reaches it with 20 steps (4 s), DDIM needs 50 (10 s)
    assert "DDPM first reaches it with 20 steps" in text and "DDPM is 2.5× faster" in text
    # the opposite data gives the opposite text
    rows = [_result("ddpm", 10, 30, 2.0), _result("ddim", 10, 12, 2.0), _result("ddpm", 1000, 10, 200.0),
            _result("ddim", 50, 11, 10.0), _result("ddpm", 50, 25, 10.0)]
    text = describe_steps_table(rows, 1000)
    assert "DDIM (η = 0) has the lower FID at 10, 50 steps" in text and "Karras" not in text
    assert "DDIM is" in text and "faster" in text
    assert "DDIM-50 is 20.0× faster than DDPM-1000 at 1.10× its FID" in text


def test_describe_clipping_follows_the_data():
    from ldm_edu.experiments.pixel_ddpm import describe_clipping
    clipped, bad, late = _result("ddpm", 20, 5, 1), _result("ddpm", 20, 80, 1), _result("ddpm", 20, 5.5, 1)
    text = describe_clipping(clipped, bad, late, 2.4e-9, 1e-3, 979)
    assert "1/√ᾱ = 20,412" in text and "damage is done in the very first steps" in text
    text = describe_clipping(clipped, _result("ddpm", 20, 5.3, 1), late, 2.4e-9, 1e-3, 979)
    assert "no measurable difference" in text and "damage" not in text
    text = describe_clipping(clipped, _result("ddpm", 20, 2, 0.5), late, 2.4e-9, 1e-3, 979)
    assert "unclipped sampler is the better one" in text
