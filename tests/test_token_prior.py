"""The autoregressive token prior (lesson 03): shapes, causality, likelihood, sampling."""
import math

import pytest
import torch

from ldm_edu.token_prior import TokenPrior, prior_loss



def _prior(**kw):
    torch.manual_seed(0)
    return TokenPrior(num_codes=11, token_shape=(3, 4), dim=16, depth=2, heads=2, **kw).eval()


def test_logits_shapes_and_partial_sequences():
    p = _prior()
    toks = torch.randint(0, 11, (5, 3, 4))
    assert p(toks).shape == (5, 12, 11)
    assert p(toks.flatten(1)[:, :4]).shape == (5, 5, 11)       # 4 tokens in → predictions for 5 positions
    assert p(torch.zeros(5, 0, dtype=torch.long)).shape == (5, 1, 11)


def test_causality_changing_a_later_token_leaves_earlier_logits_unchanged():
    for p in (_prior(), _prior(num_classes=3)):
        y = torch.tensor([0, 2]) if p.num_classes else None
        toks = torch.randint(0, 11, (2, 12))
        base = p(toks, y)
        for j in (0, 5, 11):
            changed = toks.clone()
            changed[:, j] = (changed[:, j] + 1) % 11
            out = p(changed, y)
            torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1])     # position i sees tokens < i
            if j < 11:
                assert not torch.allclose(out[:, j + 1:], base[:, j + 1:])


def test_class_label_changes_every_position():
    p = _prior(num_classes=3)
    toks = torch.randint(0, 11, (1, 12))
    a, b = p(toks, torch.tensor([0])), p(toks, torch.tensor([1]))
    assert not torch.allclose(a[:, 0], b[:, 0])


def test_loss_is_cross_entropy_and_untrained_is_near_log_k():
    p = _prior()
    toks = torch.randint(0, 11, (64, 12))
    loss = p.loss(toks)
    ref = torch.nn.functional.cross_entropy(p(toks).reshape(-1, 11), toks.reshape(-1))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert abs(loss.item() - math.log(11)) < 0.6


def test_sampling_shapes_range_and_seed():
    p = _prior(num_classes=3)
    s1 = p.sample(4, y=torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(0))
    s2 = p.sample(4, y=torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(0))
    assert s1.shape == (4, 3, 4) and s1.dtype == torch.long
    assert s1.min() >= 0 and s1.max() < 11
    assert torch.equal(s1, s2)
    assert p.sample(2, y=torch.tensor([1, 2]), guidance=2.0, top_k=3).shape == (2, 3, 4)


def test_sampling_follows_a_learnt_distribution():
    """Train on a deterministic pattern; greedy-ish samples (low temperature) reproduce it."""
    torch.manual_seed(0)
    p = TokenPrior(num_codes=5, token_shape=(2, 3), dim=32, depth=1, heads=2)
    pattern = torch.tensor([[0, 1, 2, 3, 4, 0]])
    opt = torch.optim.Adam(p.parameters(), 1e-2)
    for _ in range(80):
        loss = p.loss(pattern.repeat(8, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = p.sample(3, temperature=0.1)
    assert torch.equal(s.flatten(1), pattern.repeat(3, 1))


def test_bad_input():
    p = _prior()
    with pytest.raises(ValueError, match="unconditional"):
        p(torch.zeros(1, 12, dtype=torch.long), torch.tensor([0]))
    with pytest.raises(ValueError, match="3, 4"):
        p(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        p(torch.zeros(1, 12))
    with pytest.raises(ValueError, match="temperature"):
        p.sample(1, temperature=0)
    with pytest.raises(ValueError, match="divisible"):
        TokenPrior(5, dim=10, heads=3)


def test_prior_loss_fn_for_fit():
    p = _prior(num_classes=3)
    loss, metrics = prior_loss(p_uncond=0.1)(p, (torch.randint(0, 11, (4, 3, 4)), torch.tensor([0, 1, 2, 0])))
    assert metrics["bits_per_token"].item() == pytest.approx(loss.item() / math.log(2))


def test_bad_sampling_and_loss_arguments():
    p = _prior(num_classes=3)
    for kw, msg in [(dict(n=0), "n must be"), (dict(n=2, top_k=0), "top_k"), (dict(n=2, guidance=2.0), "pass class labels"),
                    (dict(n=2, y=torch.tensor([0, 1, 2])), r"shape \(2,\)")]:
        with pytest.raises(ValueError, match=msg):
            p.sample(**kw)
    with pytest.raises(ValueError, match="probability"):
        prior_loss(p_uncond=1.5)
    with pytest.raises(ValueError, match="probability"):
        p.loss(torch.zeros(1, 12, dtype=torch.long), torch.tensor([0]), p_uncond=-0.1)
    with pytest.raises(ValueError, match="num_classes"):
        TokenPrior(5, num_classes=0)


def test_guided_sampling_mixes_the_logits_as_documented():
    """With top_k=1 sampling is greedy: at each step the token is argmax of uncond + w (cond − uncond),
    recomputed here independently from the two forward passes."""
    p = _prior(num_classes=3)
    y = torch.tensor([0, 2])
    out = p.sample(2, y=y, top_k=1, guidance=3.0).flatten(1)
    with torch.no_grad():
        cond, uncond = p(out, y)[:, :12], p(out, None)[:, :12]     # position i sees tokens < i only
    want = (uncond + 3.0 * (cond - uncond)).argmax(-1)
    assert torch.equal(out, want)
