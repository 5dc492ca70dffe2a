import math

import pytest
import torch
from torch import nn

from ldm_edu.autoencoders import VAE, Autoencoder, ae_loss
from ldm_edu.data import TensorBatches, mnist_tensors
from ldm_edu.train import (EMA, CheckpointMismatch, History, TrainingDiverged, fit, load_checkpoint,
                           load_history, save_checkpoint, seed_everything)


@pytest.fixture(scope="module")
def images():
    return mnist_tensors("test", limit=512)[0]


def small_run(images, steps=20, seed=0):
    seed_everything(seed)
    model = Autoencoder(latent_dim=2, hidden=32)
    h = fit(model, ae_loss, TensorBatches(images, batch_size=32, seed=seed), steps, log_every=1, progress=False)
    return model, h


def test_loss_goes_down(images):
    _, h = small_run(images, steps=150)
    assert h.loss[-1] < 0.7 * h.loss[0]
    assert h.steps == list(range(1, 151)) and not h.interrupted


def test_same_seed_same_losses(images):
    _, a = small_run(images, seed=1)
    _, b = small_run(images, seed=1)
    _, c = small_run(images, seed=2)
    assert a.loss == b.loss
    assert a.loss != c.loss


def test_keyboard_interrupt_keeps_model_and_history(images):
    seed_everything(0)
    model = Autoencoder(latent_dim=2, hidden=32)
    before = [p.clone() for p in model.parameters()]
    calls = {"n": 0}

    def loss_fn(m, x):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return ae_loss(m, x)

    h = fit(model, loss_fn, TensorBatches(images, batch_size=32), 100, log_every=1, progress=False)
    assert h.interrupted and "interrupted" in h.stop_reason
    assert h.steps == list(range(1, 8))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # continuing the same history keeps counting steps
    fit(model, ae_loss, TensorBatches(images, batch_size=32), 3, history=h, log_every=1, progress=False)
    assert h.steps[-3:] == [8, 9, 10]


def _nan_at(step):
    """A loss_fn that returns NaN from the ``step``-th call on (a diverging run, injected)."""
    calls = {"n": 0}

    def loss_fn(m, x):
        calls["n"] += 1
        loss = ae_loss(m, x)
        return loss * float("nan") if calls["n"] >= step else loss
    return loss_fn


def _run(images, loss_fn, steps, log_every=1):
    seed_everything(0)
    model = Autoencoder(latent_dim=2, hidden=32)
    ema = EMA(model, 0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    err = None
    try:
        h = fit(model, loss_fn, TensorBatches(images, batch_size=32, seed=0), steps, optimizer=opt, ema=ema,
                log_every=log_every, progress=False)
    except TrainingDiverged as e:
        err, h = e, e.history
    return model, ema, opt, h, err


@pytest.mark.parametrize("log_every", [1, 3])
def test_nan_keeps_last_finite_state_and_history(images, log_every):
    # NaN injected at step 6: model, EMA and optimiser must equal a clean run of 5 steps
    model, ema, opt, h, err = _run(images, _nan_at(6), 50, log_every)
    ref_model, ref_ema, ref_opt, ref_h, _ = _run(images, ae_loss, 5, log_every)
    assert err is not None and "learning rate" in str(err) and "step 6" in str(err)
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.isfinite(a).all() and torch.equal(a, b)
    for a, b in zip(ema.model.parameters(), ref_ema.model.parameters()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) and torch.equal(sa[k]["step"], sb[k]["step"]) for k in sb)
    # the history holds the five good steps and nothing non-finite
    assert h.last_step == 5 and all(math.isfinite(v) for v in h.loss)
    assert h.steps == ref_h.steps and h.loss == ref_h.loss
    assert "step 6" in h.stop_reason


def test_nan_model_can_continue_after_divergence(images):
    model, ema, opt, h, err = _run(images, _nan_at(4), 20)
    h2 = fit(model, ae_loss, TensorBatches(images, batch_size=32, seed=1), 3, history=h, log_every=1, progress=False)
    assert h2.steps[-3:] == [4, 5, 6] and all(math.isfinite(v) for v in h2.loss)


def test_nan_gradient_with_finite_loss_is_stopped(images):
    # a finite loss whose gradient is NaN (sqrt at 0) must not reach the weights either
    seed_everything(0)
    model = Autoencoder(latent_dim=2, hidden=32)
    before = [p.clone() for p in model.parameters()]

    def loss_fn(m, x):
        return ae_loss(m, x) + 0.0 * torch.sqrt(m.encode(x).sum() * 0.0)

    with pytest.raises(TrainingDiverged):
        fit(model, loss_fn, TensorBatches(images, batch_size=32), 5, log_every=1, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_train_step_is_the_loop_body(images):
    # fit() for 3 steps == three train_step calls with the same optimiser and data
    from ldm_edu.train import train_step
    seed_everything(0)
    a = Autoencoder(latent_dim=2, hidden=32)
    b = Autoencoder(latent_dim=2, hidden=32)
    b.load_state_dict(a.state_dict())
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-3)
    fit(a, ae_loss, TensorBatches(images, batch_size=32, seed=0), 3, optimizer=opt_a, progress=False)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-3)
    batches = TensorBatches(images, batch_size=32, seed=0)
    b.train()
    for _ in range(3):
        loss, _, finite = train_step(b, ae_loss, next(batches), opt_b, grad_clip=1.0)
        assert finite and loss.dim() == 0
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_eval_seconds_leave_the_evaluations_out(images, monkeypatch):
    # a fake clock: a training step "takes" 1 s, an evaluation 10 s; nothing else moves it
    import types
    import ldm_edu.train as train_module
    clock = {"now": 0.0}
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    model = Autoencoder(latent_dim=2, hidden=32)

    def loss_fn(m, x):
        clock["now"] += 1.0
        return ae_loss(m, x)

    def slow_eval(_):
        clock["now"] += 10.0
        return {"score": 1.0}
    h = fit(model, loss_fn, TensorBatches(images, batch_size=32), 10, eval_fn=slow_eval, eval_every=5,
            progress=False)
    assert h.evals["seconds"] == [(5, 5.0), (10, 10.0)] and h.seconds == 30.0   # the total includes evals
    # a second fit() on the same history keeps counting training time (evaluations still left out)
    h = fit(model, loss_fn, TensorBatches(images, batch_size=32), 5, history=h, eval_fn=slow_eval,
            eval_every=5, progress=False)
    assert h.evals["seconds"][-1] == (15, 15.0) and h.seconds == 45.0 and h.eval_seconds == 30.0
    assert History.from_dict(h.to_dict()).eval_seconds == 30.0


def test_metrics_and_eval_are_logged(images):
    model = Autoencoder(latent_dim=2, hidden=32)
    loss_fn = lambda m, x: (ae_loss(m, x), {"double": 2 * ae_loss(m, x)})
    h = fit(model, loss_fn, TensorBatches(images, batch_size=32), 10, log_every=5, progress=False,
            eval_fn=lambda m: {"score": 1.5}, eval_every=5)
    assert h.steps == [5, 10] and len(h.metrics["double"]) == 2
    assert pytest.approx(h.metrics["double"][0], rel=1e-5) == 2 * h.loss[0]
    assert h.evals["score"] == [(5, 1.5), (10, 1.5)]


def test_checkpoint_round_trip_and_mismatch(tmp_path, images):
    model, h = small_run(images, steps=5)
    path = save_checkpoint(tmp_path / "ae.pt", model, history=h)
    blob = torch.load(path, weights_only=True)            # a plain dict of tensors and config
    assert blob["kind"] == "Autoencoder"
    fresh = Autoencoder(latent_dim=2, hidden=32)
    blob = load_checkpoint(path, fresh)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert load_history(blob).loss == h.loss
    with pytest.raises(CheckpointMismatch, match="latent_dim"):
        load_checkpoint(path, Autoencoder(latent_dim=4, hidden=32))
    with pytest.raises(CheckpointMismatch, match="holds a Autoencoder, not a VAE"):
        load_checkpoint(path, VAE(latent_dim=2, hidden=32))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="not a readable"):
        load_checkpoint(tmp_path / "junk.pt", fresh)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt", fresh)


def test_ema_is_a_moving_average():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = EMA(lin, decay=0.9, warmup=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema.update(lin)
    ema.update(lin)
    assert ema.model.weight.item() == pytest.approx(1 - 0.9**2)


def test_history_round_trip():
    h = History()
    h.log(1, 2.0, kl=3.0)
    h.log_eval(1, fid=4.0)
    assert History.from_dict(h.to_dict()) == h


def test_live_loss_plot_labels_the_axis_and_averages_only_full_windows(monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import IPython.display
    from ldm_edu.train import LiveLossPlot

    class Handle:
        def update(self, fig):
            pass
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: Handle())
    h = History()
    for step, loss in enumerate([10.0, 8.0, 9.0, 7.0, 6.0, 6.5, 5.0, 5.5], start=1):
        h.log(step, loss)
    plot = LiveLossPlot("t", window=4)
    plot.update(h, force=True)
    raw, mean = plot.ax.get_lines()
    assert plot.ax.get_ylabel() == "loss" and plot.ax.get_xlabel() == "step"
    assert list(raw.get_xdata()) == h.steps
    # the trailing mean starts at step 4 with (10 + 8 + 9 + 7) / 4 = 8.5, not with raw losses
    assert list(mean.get_xdata()) == [4, 5, 6, 7, 8]
    assert list(mean.get_ydata()) == pytest.approx([8.5, 7.5, 7.125, 6.125, 5.75])
    short = History()
    short.log(1, 3.0)
    plot.update(short, force=True)
    assert len(plot.ax.get_lines()) == 1             # fewer steps than a window: only the raw loss
