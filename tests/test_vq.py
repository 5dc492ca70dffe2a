"""VQ-VAE (lesson 03): quantiser, straight-through estimator, VQ losses, EMA, restarts, VQVAE."""
import math

import pytest
import torch

from ldm_edu.vq import VQVAE, VectorQuantizer, codebook_perplexity, squared_distances, vqvae_loss
from ldm_edu.presets import get_preset



def _vq(K=4, D=2, **kw):
    q = VectorQuantizer(num_codes=K, code_dim=D, **kw)
    return q


def test_distance_formula_equals_cdist():
    g = torch.Generator().manual_seed(0)
    z, e = torch.randn(300, 7, generator=g), torch.randn(50, 7, generator=g)
    d = squared_distances(z, e)
    assert d.shape == (300, 50)
    torch.testing.assert_close(d, torch.cdist(z, e).pow(2), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="same D"):
        squared_distances(z, e[:, :3])


def test_quantizer_shapes_and_nearest_code():
    torch.manual_seed(0)
    q = _vq(K=16, D=3).eval()
    z = torch.randn(2, 3, 5, 4)
    out = q(z)
    assert out["z_q"].shape == z.shape and out["indices"].shape == (2, 5, 4)
    assert out["counts"].shape == (16,) and out["counts"].sum() == 40
    # every index is the argmin of the brute-force distances (eq. 20)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 3)
    brute = ((flat[:, None] - q.codebook[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(out["indices"].flatten(), brute)
    # the forward value of z_q is the chosen code
    torch.testing.assert_close(out["z_q"], q.lookup(out["indices"]))


def test_wrong_channel_count_gives_clear_error():
    q = _vq(K=8, D=4)
    with pytest.raises(ValueError, match=r"\(batch, 4, H, W\)"):
        q(torch.randn(2, 3, 7, 7))
    with pytest.raises(ValueError, match="integer"):
        q.lookup(torch.zeros(2, 7, 7))
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        q.lookup(torch.full((1, 2, 2), 8))
    m = VQVAE(num_codes=8, code_dim=4, ch=8)
    with pytest.raises(ValueError, match="VQVAE input"):
        m(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="7, 7"):
        m.decode_tokens(torch.zeros(2, 4, 4, dtype=torch.long))


def test_straight_through_gradient_equals_gradient_at_quantised_vector():
    """d f(z_q)/d z_e (straight-through) = ∇f evaluated at e_k, checked by finite differences."""
    torch.manual_seed(1)
    q = _vq(K=5, D=3).eval()
    z = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    q.double()
    w = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    f = lambda v: (torch.sin(v) * w).sum() + v.pow(3).sum()
    z_e = z.clone().requires_grad_(True)
    f(q(z_e)["z_q"]).backward()
    e = q.lookup(q(z)["indices"]).detach()
    h, num = 1e-6, torch.zeros_like(e)
    for i in range(e.numel()):
        d = torch.zeros_like(e).view(-1)
        d[i] = h
        d = d.view_as(e)
        num.view(-1)[i] = (f(e + d) - f(e - d)) / (2 * h)
    torch.testing.assert_close(z_e.grad, num, atol=1e-6, rtol=1e-6)


def test_loss_terms_hand_computed_and_gradients_go_where_they_should():
    q = _vq(K=2, D=2, beta=0.25, ema=False, restart_dead=False)
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    # two vectors: (0.2, -0.1) → code 0, (0.8, 1.3) → code 1
    z = torch.tensor([[0.2, -0.1], [0.8, 1.3]]).T.reshape(1, 2, 1, 2).clone().requires_grad_(True)
    out = q.eval()(z)
    assert out["indices"].flatten().tolist() == [0, 1]
    sq = (0.2**2 + 0.1**2 + 0.2**2 + 0.3**2) / 4          # mean over the 4 elements
    assert out["codebook_loss"].item() == pytest.approx(sq)
    assert out["commitment_loss"].item() == pytest.approx(sq)
    assert out["loss"].item() == pytest.approx(sq * 1.25)
    # codebook term (eq. 23) moves only the codebook ...
    out["codebook_loss"].backward(retain_graph=True)
    assert z.grad is None or torch.all(z.grad == 0)
    assert q.codebook.grad is not None and q.codebook.grad.abs().sum() > 0
    # ... the commitment term (eq. 24) only the encoder output
    q.codebook.grad = None
    out["commitment_loss"].backward()
    assert q.codebook.grad is None or torch.all(q.codebook.grad == 0)
    torch.testing.assert_close(z.grad, 2 * (z - q.lookup(out["indices"])).detach() / 4)


def test_ema_loss_has_no_codebook_term():
    q = _vq(K=2, D=2, beta=0.25, ema=True).eval()
    out = q(torch.randn(1, 2, 3, 3))
    assert out["loss"].item() == pytest.approx(0.25 * out["commitment_loss"].item())
    assert not q.codebook.requires_grad


def test_ema_step_matches_hand_computation():
    q = _vq(K=3, D=2, ema=True, decay=0.9, eps=1e-5)
    e0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    with torch.no_grad():
        q.codebook.copy_(e0)
        q.ema_sum.copy_(e0)
    z = torch.tensor([[0.1, 0.1], [-0.1, 0.3], [1.2, 0.0]])
    idx = torch.tensor([0, 0, 1])
    q.ema_step(z, idx)
    N = 0.9 * torch.ones(3) + 0.1 * torch.tensor([2.0, 1.0, 0.0])
    m = 0.9 * e0 + 0.1 * torch.stack([z[0] + z[1], z[2], torch.zeros(2)])
    n = N.sum()
    Ns = (N + 1e-5) / (n + 3 * 1e-5) * n
    torch.testing.assert_close(q.ema_count, N)
    torch.testing.assert_close(q.ema_sum, m)
    torch.testing.assert_close(q.codebook.data, m / Ns[:, None])


def test_ema_with_zero_decay_is_a_kmeans_step_only_without_smoothing():
    torch.manual_seed(0)
    z = torch.randn(200, 2, dtype=torch.float64)
    for eps in (0.0, 0.5):
        q = _vq(K=6, D=2, ema=True, decay=0.0, eps=eps).double()
        idx = q.nearest(z)
        n_k = torch.bincount(idx, minlength=6).double()
        q.ema_step(z, idx)
        used = n_k > 0
        lloyd = torch.stack([z[idx == k].mean(0) if used[k] else torch.zeros(2, dtype=z.dtype) for k in range(6)])
        if eps == 0:
            torch.testing.assert_close(q.codebook[used], lloyd[used])
        else:   # Laplace smoothing shrinks each code by n_k / Ñ_k, Ñ_k = (n_k + ε) / (n + Kε) · n
            smoothed = (n_k + eps) / (200 + 6 * eps) * 200
            torch.testing.assert_close(q.codebook[used], (lloyd * (n_k / smoothed)[:, None])[used])
            assert (q.codebook[used] - lloyd[used]).abs().max() > 1e-4


def test_an_unused_code_decays_under_ema():
    """A code that wins no vector is not frozen: N_k and m_k shrink by γ per step, and
    e_k = m_k / Ñ_k slides towards 0 once N_k ≈ ε (Ñ_k ≈ N_k + ε when Σ N ≫ Kε)."""
    K, gamma, eps, steps = 3, 0.9, 1e-3, 120
    q = _vq(K=K, D=2, ema=True, decay=gamma, eps=eps, restart_dead=False).double()
    e0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [4.0, 4.0]], dtype=torch.float64)
    with torch.no_grad():
        q.codebook.copy_(e0)
        q.ema_sum.copy_(e0)
    z = torch.tensor([[0.1, 0.0], [-0.1, 0.0], [1.0, 0.1], [1.0, -0.1]], dtype=torch.float64)
    idx = torch.tensor([0, 0, 1, 1])                   # code 2 never gets a vector
    for _ in range(steps):
        q.ema_step(z, idx)
    assert q.ema_count[2].item() == pytest.approx(gamma ** steps, rel=1e-9)
    torch.testing.assert_close(q.ema_sum[2], gamma ** steps * e0[2])
    n = q.ema_count.sum()
    smoothed = (q.ema_count[2] + eps) / (n + K * eps) * n
    torch.testing.assert_close(q.codebook[2], q.ema_sum[2] / smoothed)
    assert q.codebook[2].norm() < 0.01 * e0[2].norm()       # it has moved almost to the origin


def test_bad_arguments_are_rejected_with_a_clear_message():
    for kw, msg in [(dict(decay=1.0), "decay"), (dict(usage_decay=-0.1), "usage_decay"), (dict(beta=-1), "beta"),
                    (dict(eps=-1e-5), "eps"), (dict(num_codes=0), "num_codes")]:
        with pytest.raises(ValueError, match=msg):
            VectorQuantizer(**kw)
    q = _vq(K=4, D=2)
    with pytest.raises(ValueError, match=r"rows \(N, 2\)"):
        q.ema_step(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer code indices"):
        q.ema_step(torch.randn(5, 2), torch.full((5,), 4))
    with pytest.raises(ValueError, match="VQVAE latent"):
        VQVAE(num_codes=8, code_dim=4, ch=8).decode(torch.randn(1, 3, 7, 7))


def test_quantizer_and_vqvae_agree_on_their_defaults():
    import inspect
    qd = {k: v.default for k, v in inspect.signature(VectorQuantizer).parameters.items()}
    md = {k: v.default for k, v in inspect.signature(VQVAE).parameters.items()}
    shared = set(qd) & set(md)
    assert {"ema", "restart_dead", "beta", "decay", "eps", "num_codes", "code_dim"} <= shared
    assert {k: qd[k] for k in shared} == {k: md[k] for k in shared}
    assert VectorQuantizer().ema is True and VQVAE().quantizer.ema is True


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    q = _vq(K=8, D=2, ema=True, restart_dead=True, dead_threshold=1.0, usage_decay=0.5)
    with torch.no_grad():   # codes 4..7 far away from the data: never chosen
        q.codebook[4:] = 100.0
        q.ema_sum.copy_(q.codebook)
    z = torch.randn(4, 2, 8, 8)
    q.train()
    for _ in range(8):      # usage starts at N/K = 32 and halves each step: < 1 after 6 steps
        out = q(z)
    assert q.restarts.item() >= 4
    assert q.codebook.abs().max() < 50          # the far codes now sit among the data
    assert (out["counts"][4:] > 0).any()
    # without restarts they stay dead
    q2 = _vq(K=8, D=2, ema=True, restart_dead=False)
    with torch.no_grad():
        q2.codebook[4:] = 100.0
        q2.ema_sum.copy_(q2.codebook)
    for _ in range(8):
        out2 = q2.train()(z)
    assert torch.all(out2["counts"][4:] == 0)


def test_perplexity_of_known_usage():
    assert codebook_perplexity(torch.tensor([5.0, 5, 5, 5, 0, 0])).item() == pytest.approx(4.0)
    assert codebook_perplexity(torch.tensor([0.0, 9, 0])).item() == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert codebook_perplexity(p * 8).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_kmeans_init_puts_codes_on_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z = (centers[torch.arange(300) % 3] + 0.1 * torch.randn(300, 2, generator=g))
    q = _vq(K=3, D=2)
    q.init_kmeans(z)
    got = sorted(map(tuple, q.codebook.detach().round().tolist()))
    assert got == sorted(map(tuple, centers.tolist()))
    with pytest.raises(ValueError, match="at least 3"):
        q.init_kmeans(z[:2])


def test_vqvae_shapes_loss_and_tokens():
    torch.manual_seed(0)
    m = VQVAE(num_codes=32, code_dim=8, ch=8)
    assert m.token_shape == (7, 7) and m.config["num_codes"] == 32
    x = torch.rand(4, 1, 28, 28)
    out = m(x)
    assert out["x_hat"].shape == x.shape and out["indices"].shape == (4, 7, 7)
    assert out["loss"].item() == pytest.approx(out["recon"].item() + out["vq_loss"].item())
    toks = m.eval().tokenize(x)
    assert torch.equal(toks, m(x)["indices"])
    img = m.decode_tokens(toks)
    assert img.shape == x.shape and img.min() >= 0 and img.max() <= 1


@pytest.mark.parametrize("code_dim", [4, 16, 32])
def test_vqvae_loss_is_eq25_per_image_over_the_pixel_count(code_dim):
    """loss = (‖x − x̂‖² + ‖sg[z_e] − e‖² + β‖z_e − sg[e]‖²) / (C·H·W), every norm summed over one
    image or its latent, averaged over the batch: the weight of β does not depend on D·h·w."""
    torch.manual_seed(0)
    m = VQVAE(num_codes=16, code_dim=code_dim, ch=8, beta=0.25, ema=False, restart_dead=False).eval()
    x = torch.rand(3, 1, 28, 28)
    out = m(x)
    with torch.no_grad():
        z_e = m.encoder(x)
        e = m.quantizer.codebook[out["indices"]].permute(0, 3, 1, 2)
        x_hat = m.decoder(e)
    per_image = ((x - x_hat) ** 2).sum((1, 2, 3)) + 1.25 * ((z_e - e) ** 2).sum((1, 2, 3))   # codebook + β·commit
    assert out["loss"].item() == pytest.approx(per_image.mean().item() / 784, rel=1e-5)
    assert out["recon"].item() == pytest.approx(((x - x_hat) ** 2).mean().item(), rel=1e-5)
    assert m.vq_weight == pytest.approx(code_dim * 49 / 784)


def test_vqvae_learns_a_little():
    """A few hundred steps on 256 images lower the reconstruction error clearly."""
    from ldm_edu.data import TensorBatches, mnist_tensors
    from ldm_edu.train import fit, seed_everything
    seed_everything(0)
    x, _ = mnist_tensors("train", limit=256)
    m = VQVAE(num_codes=32, code_dim=8, ch=8)
    before = m.eval()(x)["recon"].item()
    fit(m, vqvae_loss, TensorBatches(x, batch_size=32, seed=0), 60, lr=3e-3, progress=False)
    after = m.eval()(x)["recon"].item()
    assert after < 0.6 * before


@pytest.mark.parametrize("name", ["tiny", "cpu", "gpu"])
def test_presets_build_and_step_on_cpu(name):
    """Each preset's VQ-VAE and prior build and take one training step on the CPU."""
    from ldm_edu.token_prior import TokenPrior
    p = get_preset(name, device="cpu").vq
    m = VQVAE(num_codes=p.num_codes, code_dim=p.code_dim, ch=p.ch, ch_mult=p.ch_mult, num_res=p.num_res,
              beta=p.beta, decay=p.decay)
    assert m.token_shape == (7, 7)
    x = torch.rand(2, 1, 28, 28)
    loss, _ = vqvae_loss(m.train(), x)
    loss.backward()
    loss2, _ = vqvae_loss(m, (x, torch.tensor([3, 4])))        # (images, labels) batches work too
    assert torch.isfinite(loss2)
    prior = TokenPrior(p.num_codes, m.token_shape, p.prior_dim, p.prior_depth, p.prior_heads, num_classes=10)
    prior.loss(torch.randint(0, p.num_codes, (2, 7, 7)), torch.tensor([1, 2])).backward()


def test_token_editor_widget_headless():
    from ldm_edu.widgets import token_editor
    torch.manual_seed(0)
    m = VQVAE(num_codes=16, code_dim=4, ch=8)
    box = token_editor(m, torch.rand(1, 28, 28))
    c = box.controls
    box.state["calls"].clear()
    c["row"].value = 1
    assert c["code"].value == int(box.base_tokens[1, c["col"].value])     # the code slider follows the cell
    # every render after the move shows the new cell with the code that is there (never the old code
    # written at the new place)
    assert box.state["calls"] and all(k["code"] == int(box.base_tokens[k["row"], k["col"]])
                                      for k in box.state["calls"])
    c["code"].value = (c["code"].value + 1) % 16                          # an edit re-renders without error
    assert not any("Error" in str(o.get("text", "")) for o in box.output.outputs)
    fig = box.render(0, 0, 5)
    assert len(fig.axes) == 3


def test_codebook_gradient_is_bitwise_repeatable():
    """Same input ⇒ the very same codebook gradient, so a seeded lesson repeats its numbers. The
    gradient is a sum over every vector that chose a code; ``codebook[idx]`` summed them in thread
    order on the CPU (differences in the last bits, which training then amplified)."""
    vq = VectorQuantizer(num_codes=16, code_dim=16, ema=False, restart_dead=False)
    z = torch.randn(800, 16, 16, 16, generator=torch.Generator().manual_seed(0))   # 204 800 vectors, 16 codes
    grads = []
    for _ in range(4):
        vq.codebook.grad = None
        vq(z)["codebook_loss"].backward()
        grads.append(vq.codebook.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def test_evaluate_vqvae_reports_psnr_and_its_standard_error():
    from ldm_edu.metrics import psnr
    from ldm_edu.vq import evaluate_vqvae
    torch.manual_seed(0)
    m = VQVAE(num_codes=16, code_dim=4, ch=8)
    x = torch.rand(7, 1, 28, 28)
    r = evaluate_vqvae(m, x, batch_size=3)
    per_image = psnr(x, m.decode_tokens(m.tokenize(x)))
    assert r["psnr"] == pytest.approx(per_image.mean().item(), rel=1e-5)
    assert r["psnr_se"] == pytest.approx(per_image.std().item() / math.sqrt(7), rel=1e-4)
    assert r["counts"].sum() == 7 * 49 and r["tokens"].shape == (7, 7, 7)


def test_vq_training_figure_draws_every_run_on_shared_axes():
    from ldm_edu.train import History
    from ldm_edu.viz import vq_training_figure
    hs = {}
    for i, name in enumerate(["a", "b", "c"]):
        h = History()
        for s in range(1, 31):
            h.log(s, 1.0 / s + i, recon=0.5 / s, perplexity=10.0 + i * s)
        hs[name] = h
    fig = vq_training_figure(hs)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert len(ax.lines) == 2 * len(hs)                       # raw + smoothed per run
    assert [t.get_text() for t in fig.axes[2].get_legend().get_texts()] == ["a", "b", "c"]


def test_running_usage_starts_neutral_so_a_fairly_used_codebook_is_not_restarted_at_step_1():
    # an untrained codebook whose codes each win about N/K = 32 of the N = 512 vectors: with the
    # usage starting at 0 every code would read (1 − 0.99)·32 = 0.32 < 1 after step 1 and be restarted
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 2, 8, 8, generator=g)
    q = _vq(K=16, D=2, ema=True, restart_dead=True, dead_threshold=1.0).train()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    with torch.no_grad():
        q.codebook.copy_(flat[torch.randperm(len(flat), generator=g)[:16]])
        q.ema_sum.copy_(q.codebook)
    with torch.no_grad():                           # the assignment the usage update sees (forward assigns
        counts = torch.bincount(q.nearest(flat), minlength=16).float()   # again after the EMA step)
    assert (counts > 0).all()                       # fairly used: every code wins something
    q(z)
    assert q.restarts.item() == 0
    # the first batch sets every usage to N/K, then the usual running-mean update
    torch.testing.assert_close(q.usage, 0.99 * 512 / 16 + 0.01 * counts)


def test_a_code_that_never_wins_is_restarted_exactly_when_its_usage_falls_below_the_threshold():
    # N = 256 vectors, K = 8: usage of a never-used code is 32·0.9^t, < 1 first at t = ⌈ln 32 / −ln 0.9⌉ = 33
    torch.manual_seed(0)
    z = torch.randn(4, 2, 8, 8)
    q = _vq(K=8, D=2, ema=False, restart_dead=True, dead_threshold=1.0, usage_decay=0.9).train()
    with torch.no_grad():
        q.codebook[4:] = 100.0                      # codes 4..7 never win
    want = math.ceil(math.log(32) / -math.log(0.9))
    assert want == 33
    for step in range(1, want):
        q(z)
    assert q.restarts.item() == 0, step
    q(z)
    assert q.restarts.item() == 4


def test_vqvae_loss_logs_the_cumulative_restarts():
    torch.manual_seed(0)
    m = VQVAE(num_codes=16, code_dim=4, ch=8, restart_dead=True).train()
    _, metrics = vqvae_loss(m, torch.rand(2, 1, 28, 28))
    assert float(metrics["restarts"]) == m.quantizer.restarts.item()
    with torch.no_grad():
        m.quantizer.restarts += 5
    _, metrics = vqvae_loss(m, torch.rand(2, 1, 28, 28))
    assert float(metrics["restarts"]) == m.quantizer.restarts.item() >= 5


def test_init_kmeans_resets_the_running_usage():
    torch.manual_seed(0)
    q = _vq(K=4, D=2, ema=True, restart_dead=True).train()
    q(torch.randn(2, 2, 4, 4))
    assert q.usage.any()
    q.init_kmeans(torch.randn(100, 2), iters=5)
    assert not q.usage.any()


def test_tokenize_dataset_equals_one_pass_and_keeps_the_mode():
    torch.manual_seed(0)
    model = VQVAE(num_codes=16, code_dim=4, ch=8).train()
    x = torch.rand(10, 1, 28, 28)
    with torch.no_grad():
        whole = model.eval().tokenize(x)
    model.train()
    from ldm_edu.vq import tokenize_dataset
    assert torch.equal(tokenize_dataset(model, x, batch_size=3), whole) and model.training
