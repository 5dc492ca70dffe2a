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


def test_nan_guard_raises_with_history(images):
    model = Autoencoder(latent_dim=2, hidden=32)
    calls = {"n": 0}

    def loss_fn(m, x):
        calls["n"] += 1
        loss = ae_loss(m, x)
        return loss * float("nan") if calls["n"] >= 5 else loss

    with pytest.raises(TrainingDiverged, match="learning rate") as e:
        fit(model, loss_fn, TensorBatches(images, batch_size=32), 50, log_every=1, progress=False)
    assert e.value.history.steps[:4] == [1, 2, 3, 4] and math.isnan(e.value.history.loss[-1])


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
