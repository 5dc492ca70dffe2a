"""Pretrained mode: fit() records each run once and replays it, verified, instead of training."""
import json

import pytest
import torch
from torch import nn

from ldm_edu import pretrained, pretrain
from ldm_edu.data import TensorBatches
from ldm_edu.presets import get_preset
from ldm_edu.train import EMA, History, fit


class Tiny(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.config = {"width": width}
        self.net = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 4))

    def forward(self, x):
        return self.net(x)


def counting_loss(calls):
    def loss_fn(model, batch):
        calls.append(1)
        (x,) = batch if isinstance(batch, (tuple, list)) else (batch,)
        return ((model(x) - x) ** 2).mean()
    return loss_fn


def batches(seed=0):
    return TensorBatches(torch.randn(64, 4, generator=torch.Generator().manual_seed(9)), batch_size=16, seed=seed)


@pytest.fixture
def modes(tmp_path, monkeypatch):
    """Switch between recording into tmp_path/record and replaying from tmp_path/weights."""
    for k in ("LDM_EDU_RECORD", "LDM_EDU_PRETRAINED", "LDM_EDU_PRESET"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LDM_EDU_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("LDM_EDU_LESSON", "99_test")

    def record():
        pretrained._reset_uses()
        monkeypatch.delenv("LDM_EDU_PRETRAINED", raising=False)
        monkeypatch.setenv("LDM_EDU_RECORD", str(tmp_path / "record"))

    def ship():
        monkeypatch.delenv("LDM_EDU_RECORD", raising=False)
        return pretrain.merge("99_test", tmp_path / "record", tmp_path / "weights", seconds=1.0)

    def replay():
        pretrained._reset_uses()
        monkeypatch.delenv("LDM_EDU_RECORD", raising=False)
        monkeypatch.setenv("LDM_EDU_PRETRAINED", "1")
    return record, ship, replay


def train(calls, init=0, steps=30, desc="tiny run", ema=True):
    torch.manual_seed(init)                                # the initial weights (not part of a run's key)
    model = Tiny()
    e = EMA(model, 0.9) if ema else None
    h = fit(model, counting_loss(calls), batches(), steps, lr=1e-2, ema=e, desc=desc, progress=False, live_plot=False)
    return model, e, h


def test_replay_gives_the_recorded_weights_ema_and_history_without_training(modes):
    record, ship, replay = modes
    record()
    calls = []
    model, ema, hist = train(calls)
    assert len(calls) == 30
    manifest = ship()
    assert len(manifest["runs"]) == 1
    replay()
    calls2 = []
    model2, ema2, hist2 = train(calls2, init=123)          # another initialisation: replay must overwrite it
    assert calls2 == []                                    # no training step ran
    assert hist2.steps == hist.steps and hist2.loss == pytest.approx(hist.loss)
    for a, b in zip(ema.model.state_dict().values(), ema2.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)    # stored as float16
    # a run with an EMA copy ships that copy only: the model is set to the EMA weights too
    for a, b in zip(ema.model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
    assert not torch.allclose(model.net[0].weight, ema.model.net[0].weight, atol=1e-2)   # they did differ
    assert ema2.updates == ema.updates == 30
    assert not model2.training


def test_a_run_without_ema_replays_its_own_weights(modes):
    record, ship, replay = modes
    record()
    model, _, hist = train([], ema=False)
    blob = torch.load(next((pretrained.record_dir()).glob("*.pt")), weights_only=True)
    assert pretrained.ship(blob)["state_dict"] is not None
    ship()
    replay()
    calls = []
    model2, _, hist2 = train(calls, init=7, ema=False)
    assert calls == [] and hist2.loss == pytest.approx(hist.loss)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


def test_ship_drops_the_raw_weights_only_where_an_ema_copy_ships():
    state = {"w": torch.randn(300, 300), "b": torch.randn(300)}
    with_ema = pretrained.ship({"state_dict": state, "ema": {k: v + 1 for k, v in state.items()}})
    assert with_ema["state_dict"] is None and set(with_ema["ema_int8"]) == {"w"}
    torch.testing.assert_close(pretrained.model_state(with_ema)["b"], state["b"] + 1)
    alone = pretrained.ship({"state_dict": state, "ema": None})
    torch.testing.assert_close(pretrained.model_state(alone)["b"], state["b"])


def test_runs_with_the_same_key_in_one_cell_get_their_own_weights(modes):
    record, ship, replay = modes
    record()
    _, e1, _ = train([], init=0, desc="chunk")
    _, e2, _ = train([], init=1, desc="chunk")             # same key: continued in chunks or repeated
    m1, m2 = e1.model, e2.model                            # what ships (see ship)
    assert not torch.equal(m1.net[0].weight, m2.net[0].weight)
    assert len(ship()["runs"]) == 2
    replay()
    r1, _, _ = train([], init=5, desc="chunk")
    r2, _, _ = train([], init=5, desc="chunk")
    torch.testing.assert_close(r1.net[0].weight, m1.net[0].weight, atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(r2.net[0].weight, m2.net[0].weight, atol=2e-3, rtol=1e-3)
    pretrained._reset_uses()                                # a re-run cell finds the first run again
    r3, _, _ = train([], init=5, desc="chunk")
    torch.testing.assert_close(r3.net[0].weight, m1.net[0].weight, atol=2e-3, rtol=1e-3)


def test_a_run_with_no_shipped_weights_trains_and_says_so(modes, capsys):
    record, ship, replay = modes
    record()
    train([], desc="recorded")
    ship()
    replay()
    calls = []
    train(calls, desc="never recorded")
    assert len(calls) == 30
    assert "no shipped weights for this run (never recorded): training it now" in capsys.readouterr().out
    calls = []
    train(calls, steps=31, desc="recorded")                # another step count is another run
    assert len(calls) == 31


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_file_is_refused_naming_it_and_the_rebuild_command(modes, damage):
    record, ship, replay = modes
    record()
    train([])
    manifest = ship()
    entry = next(iter(manifest["runs"].values()))
    path = pretrained.weights_dir() / entry["file"]
    data = bytearray(path.read_bytes())
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-9] + bytes([data[-9] ^ 1]) + data[-8:])
    replay()
    with pytest.raises(pretrained.PretrainedWeightsError) as err:
        train([])
    msg = str(err.value)
    assert entry["file"] in msg and "sha256" in msg and "python -m ldm_edu.pretrain 99_test" in msg


def test_a_missing_file_is_refused(modes):
    record, ship, replay = modes
    record()
    train([])
    entry = next(iter(ship()["runs"].values()))
    (pretrained.weights_dir() / entry["file"]).unlink()
    replay()
    with pytest.raises(pretrained.PretrainedWeightsError, match="missing"):
        train([])


def test_weights_of_another_model_are_refused(modes):
    record, ship, replay = modes
    record()
    train([])
    manifest = ship()
    # the manifest says this key, but the file holds another model's tensors
    key, entry = next(iter(manifest["runs"].items()))
    path = pretrained.weights_dir() / entry["file"]
    blob = pretrained.read_shipped(path.read_bytes())
    blob["ema"], blob["ema_int8"] = {"other.weight": torch.zeros(2, 2)}, {}   # the shipped (EMA) weights
    pretrained.write_shipped(blob, path)
    entry["sha256"], entry["bytes"] = pretrained.sha256_of(path), path.stat().st_size
    (pretrained.weights_dir() / pretrained.MANIFEST).write_text(json.dumps(manifest))
    replay()
    with pytest.raises(pretrained.PretrainedWeightsError, match="does not fit this Tiny"):
        train([])


def test_shipped_files_load_with_weights_only_and_store_float16():
    state = {"w": torch.randn(3, 3), "big": torch.full((2,), 1e5), "i": torch.arange(3)}
    out = pretrained._compact(state)
    assert out["w"].dtype == torch.float16 and out["big"].dtype == torch.float32 and out["i"].dtype == torch.int64


def test_pretrained_preset_is_cpu_models_trained_longer(monkeypatch):
    monkeypatch.delenv("LDM_EDU_PRESET", raising=False)
    monkeypatch.setenv("LDM_EDU_PRETRAINED", "1")
    p, cpu = get_preset(), get_preset("cpu")
    assert p.name == "pretrained" and p.device == "cpu"
    for sec in ("ae", "vae", "vq", "diffusion", "ldm", "compression"):
        a, b = getattr(p, sec), getattr(cpu, sec)
        for f in a.__dataclass_fields__:                  # same models: every width, depth, size knob equal
            if any(w in f for w in ("steps", "gflop", "batch_size", "eval_every", "disc_start", "n_fid", "n_guidance",
                                    "table_n", "widget_etas")):
                continue
            assert getattr(a, f) == getattr(b, f), (sec, f)
    assert p.diffusion.steps * p.diffusion.batch_size >= 2 * cpu.diffusion.steps * cpu.diffusion.batch_size
    assert p.ae.steps > cpu.ae.steps and p.vae.steps > cpu.vae.steps and p.ldm.steps > cpu.ldm.steps


def test_shipped_manifest_matches_its_files():
    """Every file in weights/ is listed with its right sha256 and the whole set is within 40 MB."""
    manifest = pretrained.load_manifest(pretrained.WEIGHTS_DIR)
    if not manifest["runs"]:
        pytest.skip("no weights shipped yet (python -m ldm_edu.pretrain builds them)")
    listed = {v["file"] for v in manifest["runs"].values()}
    assert listed == {p.name for p in pretrained.WEIGHTS_DIR.glob("*.pt*")}
    for v in manifest["runs"].values():
        assert pretrained.sha256_of(pretrained.WEIGHTS_DIR / v["file"]) == v["sha256"], v["file"]
    assert sum(v["bytes"] for v in manifest["runs"].values()) <= pretrain.MAX_MB * 1e6     # decimal MB


def test_model_card_lists_every_run_with_its_training(modes):
    record, ship, replay = modes
    record()
    train([], desc="card run")
    manifest = ship()
    card = pretrain.model_card(manifest, pretrained.weights_dir())
    row = next(line for line in card.splitlines() if "card run" in line)
    assert "| 99_test | card run | Tiny |" in row and "| 30 |" in row      # lesson, desc, kind, steps
    assert "1 runs" in card and "budget 40 MB" in card


def test_lessons_are_named_by_number_or_stem():
    assert [p.stem for p in pretrain.lesson_paths(["4", "05_ddim"])] == ["04_ddpm", "05_ddim"]
    assert len(pretrain.lesson_paths([])) >= 7
    with pytest.raises(SystemExit, match="no lesson '99'"):
        pretrain.lesson_paths(["99"])


def test_the_model_card_measures_a_shipped_autoencoder(modes):
    from ldm_edu.autoencoders import Autoencoder, ae_loss
    from ldm_edu.data import mnist_tensors
    record, ship, replay = modes
    record()
    x, _ = mnist_tensors("train", limit=256)
    torch.manual_seed(0)
    ae = Autoencoder(latent_dim=2, hidden=16)
    fit(ae, ae_loss, TensorBatches(x, batch_size=32, seed=0), 5, desc="card AE", progress=False, live_plot=False)
    entry = next(iter(ship()["runs"].values()))
    assert entry["quality"].startswith("test PSNR ") and entry["quality"].endswith(" dB")
    db = float(entry["quality"].split()[2])
    assert 5 < db < 30                                     # a barely trained AE: above noise, far from perfect


def test_large_matrices_ship_as_int8_rows_within_half_a_step_of_each_row_max():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 256, generator=g) * torch.linspace(0.01, 3, 300)[:, None]   # rows of very different size
    state = {"big": w, "small": torch.randn(4, 4, generator=g), "bias": torch.randn(300, generator=g)}
    rest, int8 = pretrained.pack(state)
    assert set(int8) == {"big"} and set(rest) == {"small", "bias"} and int8["big"]["q"].dtype == torch.int8
    back = pretrained.unpack(rest, int8)
    step = w.abs().amax(1, keepdim=True) / 127                   # one quantisation step per row
    assert ((back["big"] - w).abs() <= step / 2 + 1e-7).all()
    assert ((back["big"] - w).abs() > step / 4).any()            # it is lossy: the check above is not vacuous
    assert torch.equal(back["small"], state["small"])
    # a hand case: row max 127 → scale 1, values round to the nearest integer
    hand = torch.tensor([[127.0, 0.4, -0.6] + [0.0] * (pretrained.QUANTIZE_MIN - 3)])
    r, q = pretrained.pack({"h": hand})
    assert q["h"]["q"][0, :3].tolist() == [127, 0, -1]


def test_todays_lessons_still_find_their_shipped_runs(monkeypatch):
    """Key drift guard: the runs lessons 01–04, 06 and 07 make today (desc, model, steps, batches) are
    the ones shipped, and their weights load into today's models. A changed preset or desc fails here."""
    from types import SimpleNamespace
    from ldm_edu.autoencoders import VAE, Autoencoder
    from ldm_edu.dcae import DCAutoencoder
    from ldm_edu.latent import FirstStage
    from ldm_edu.unet import unet_from_config
    from ldm_edu.vq import VQVAE
    manifest = pretrained.load_manifest(pretrained.WEIGHTS_DIR)
    if not manifest["runs"]:
        pytest.skip("no weights shipped yet")
    monkeypatch.delenv("LDM_EDU_RECORD", raising=False)
    monkeypatch.setenv("LDM_EDU_PRETRAINED", "1")
    p = get_preset()
    data = lambda bs: SimpleNamespace(tensors=[torch.empty(60000)], batch_size=bs, seed=p.seed)
    runs = [(Autoencoder(latent_dim=p.ae.latent_dim, hidden=p.ae.hidden), f"AE d={p.ae.latent_dim}", p.ae.steps,
             data(p.ae.batch_size)),
            (VAE(latent_dim=p.vae.latent_dim, hidden=p.vae.hidden), f"VAE d={p.vae.latent_dim}: −ELBO (nats)",
             p.vae.steps, data(p.vae.batch_size)),
            (unet_from_config(p.diffusion), f"DDPM ({p.name})", p.diffusion.steps, data(p.diffusion.batch_size))]
    v, l = p.vq, p.ldm                                    # lesson 03's variant (c), lesson 06's first stage
    runs.append((VQVAE(num_codes=v.num_codes, code_dim=v.code_dim, ch=v.ch, ch_mult=v.ch_mult, num_res=v.num_res,
                       beta=v.beta, ema=True, decay=v.decay, eps=v.eps, restart_dead=True,
                       dead_threshold=v.dead_threshold), "(c) EMA + restart", v.steps, data(v.batch_size)))
    runs.append((FirstStage(f=l.f, latent_ch=l.latent_ch, ch=l.ae_ch, reg="kl", kl_weight=l.kl_weight,
                            codebook_size=l.codebook_size), f"KL-f{l.f} autoencoder", l.ae_steps,
                 SimpleNamespace(tensors=[torch.empty(l.n_train)], batch_size=l.ae_batch_size, seed=p.seed)))
    c = p.compression                                     # lesson 07's last DC-AE (compression.train_dcae_runs)
    runs.append((DCAutoencoder(f=c.dc_fs[-1], latent_ch=c.dc_latent_ch[-1], ch=c.ch, max_ch=c.dc_max_ch, residual=True),
                 f"f={c.dc_fs[-1]}: DC-AE (residual)", c.dc_steps,
                 SimpleNamespace(tensors=[torch.empty(c.n_train)], batch_size=c.batch_size, seed=p.seed)))
    for model, desc, steps, batches in runs:
        pretrained._reset_uses()
        key = pretrained.run_key(model, desc, steps, batches)
        assert key in manifest["runs"], f"no shipped run for {key}"
        before = [v.clone() for v in model.state_dict().values()]
        history = History()
        assert pretrained.replay(key, model, history)
        assert history.last_step == steps
        assert any(not torch.equal(a, b) for a, b in zip(before, model.state_dict().values()))
