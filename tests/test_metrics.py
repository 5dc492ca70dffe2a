"""FID-MNIST, KID-MNIST, IS-MNIST, precision/recall and their intervals, on the shipped classifier."""
import numpy as np
import pytest
import torch

from ldm_edu.classifier import class_histogram, classifier_outputs
from ldm_edu.data import mnist_tensors
from ldm_edu.intervals import Interval
from ldm_edu.metrics import fid_mnist, frechet_distance, inception_score_mnist, real_data_fid, sqrt_psd


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    """For diagonal covariances FD = ‖μ1−μ2‖² + Σ (σ1 − σ2)² (an independent formula)."""
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1**2), mu2, np.diag(s2**2)) == pytest.approx(want, rel=1e-8)
    # a rotated (non-diagonal) pair: FD is invariant under a common rotation
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    got = frechet_distance(q @ mu1, q @ np.diag(s1**2) @ q.T, q @ mu2, q @ np.diag(s2**2) @ q.T)
    assert got == pytest.approx(want, rel=1e-6)
    # symmetric, and a given Σ1^{1/2} (two FIDs against one reference) changes nothing
    a, b = rng.normal(size=(50, 5)), rng.normal(size=(40, 5)) * 2
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    fd = frechet_distance(a.mean(0), ca, b.mean(0), cb)
    assert frechet_distance(b.mean(0), cb, a.mean(0), ca) == pytest.approx(fd, rel=1e-9)
    assert frechet_distance(a.mean(0), ca, b.mean(0), cb, sqrt_psd(ca)) == pytest.approx(fd, rel=1e-12)
    torch.testing.assert_close(torch.from_numpy(sqrt_psd(ca) @ sqrt_psd(ca)), torch.from_numpy(ca))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(test_images):
    x = test_images[0][:500]
    assert abs(fid_mnist(x, x)) < 1e-4
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    fids = [fid_mnist(x, (x + s * noise).clamp(0, 1)) for s in (0.05, 0.2, 0.5)]
    assert 0 < fids[0] < fids[1] < fids[2]
    # the real-data floor (train vs test, same n) is far below heavily noised images
    floor = real_data_fid(500)
    assert 0 < floor < fids[2]


def test_inception_score_bounds(test_images):
    x, y = test_images
    is_real = inception_score_mnist(x)
    assert 9.0 < is_real <= 10.0
    ones = x[y == 1][:200]
    assert inception_score_mnist(ones) < 1.5           # one class only ⇒ IS ≈ 1
    h = class_histogram(x)
    assert h.sum().item() == pytest.approx(1.0) and h.shape == (10,)
    assert (h > 0.07).all() and (h < 0.13).all()


def test_bad_input(test_images):
    x = test_images[0][:10]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fid_mnist(x * 2 - 1, x)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        fid_mnist(x[:, 0], x)
    with pytest.raises(ValueError, match="at least 2"):
        fid_mnist(x[:1], x)


def test_non_finite_images_get_a_clear_error():
    from ldm_edu.metrics import fid_mnist
    x = torch.rand(8, 1, 28, 28)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        fid_mnist(x, torch.rand(8, 1, 28, 28))


# ----------------------------------------------------------------------------- intervals (issue 11)
import torch.nn.functional as F  # noqa: E402

from ldm_edu import metrics as M  # noqa: E402

N = 500          # the smallest per-set n the presets use for a ranked comparison (see presets)


def _blur(x, sigma):
    """Separable Gaussian blur (replicate padding): a degraded copy of real digits."""
    r = int(3 * sigma) + 1
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = (k / k.sum()).float()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


@pytest.fixture(scope="module")
def sets():
    """Classifier outputs (computed once) of: the test reference (N), the report's real-vs-real
    set (N training images), a DISJOINT second real set, blurred / noised / half-class sets."""
    xtr, ytr = mnist_tensors("train")
    g = torch.Generator().manual_seed(0)
    real_idx = torch.randperm(len(xtr), generator=g)[:N]          # = reference_images(N, "train", 0)
    rest = torch.ones(len(xtr), dtype=torch.bool)
    rest[real_idx] = False
    other = torch.nonzero(rest).flatten()
    other = other[torch.randperm(len(other), generator=torch.Generator().manual_seed(1))]
    x2 = xtr[other[:N]]
    half = xtr[other[ytr[other] < 5][:N]]                          # digits 0-4 only: half the modes
    noise = torch.randn(x2.shape, generator=torch.Generator().manual_seed(2))
    out = {"ref": M.reference_outputs(N, "test", 0), "real": M.reference_outputs(N, "train", 0)}
    for name, x in [("real2", x2), ("half", half), ("blur07", _blur(x2, 0.7)),
                    ("blur10", _blur(x2, 1.0)), ("noise", (x2 + 0.1 * noise).clamp(0, 1))]:
        out[name] = classifier_outputs(x)
    return out


def _mmd2_double_loop(x, y):
    """Unbiased MMD² written term by term (Gretton et al. 2012, eq. 3) with k(a, b) = (a·b/d + 1)³."""
    d = len(x[0])
    k = lambda a, b: (sum(ai * bi for ai, bi in zip(a, b)) / d + 1) ** 3   # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_mmd2_unbiased_matches_a_double_loop_and_a_hand_case():
    # hand case: d = 1, x = {0, 1}, y = {2}∪{0}: k(a,b) = (ab + 1)³
    #   x pairs: k(0,1) = 1 → 1;  y pairs: k(2,0) = 1 → 1;  cross: k(0,2)=1, k(0,0)=1, k(1,2)=27, k(1,0)=1 → 30/4
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [0.0]])
    assert M.mmd2_unbiased(x, y) == pytest.approx(1 + 1 - 2 * 30 / 4)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(9, 5))
    assert M.mmd2_unbiased(x, y) == pytest.approx(_mmd2_double_loop(x.tolist(), y.tolist()), rel=1e-10)


def test_kid_is_unbiased_where_the_biased_estimator_is_not():
    """Two samples of ONE distribution: the mean of many tiny-subset KIDs is 0 within its standard
    error; the V-statistic (diagonal kept) is biased upward by many standard errors."""
    rng = np.random.default_rng(1)
    f = rng.gamma(2.0, size=(400, 8))                             # ReLU-like, positive features
    vals = M.kid_subset_values(f[:200], f[200:], m=5, n_subsets=4000, seed=0)
    se = vals.std(ddof=1) / np.sqrt(len(vals))
    assert abs(vals.mean()) < 4 * se
    kv = [(M.polynomial_kernel(a, a).mean() + M.polynomial_kernel(b, b).mean()
           - 2 * M.polynomial_kernel(a, b).mean())
          for a, b in ((f[i:i + 5], f[200 + i:205 + i]) for i in range(0, 200, 5))]
    assert np.mean(kv) > 10 * se


def test_kid_cached_kernels_equal_the_per_subset_path():
    rng = np.random.default_rng(2)
    fa, fb = rng.normal(size=(60, 6)), rng.normal(0.2, 1, size=(50, 6))
    fast = M.kid_subset_values(fa, fb, 20, 7, seed=3)
    slow = M.kid_subset_values(fa, fb, 20, 7, seed=3, max_cached=0)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)
    iv = M.kid_mnist(fa, fb, n_subsets=7, subset_size=20, seed=3)
    assert iv.value == pytest.approx(slow.mean()) and iv.high - iv.value == pytest.approx(slow.std(ddof=1))


def test_precision_recall_on_hand_made_feature_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 4))
    assert M.precision_recall_features(a, a) == {"precision": 1.0, "recall": 1.0}
    assert M.precision_recall_features(a + 100, a) == {"precision": 0.0, "recall": 0.0}
    # real = 0, 1, ..., 9 on a line: 3rd-nearest-OTHER-neighbour radii are 3 at the ends, 2 inside.
    real = np.c_[np.arange(10.0), np.zeros(10)]
    # 11.5 is 2.5 from 9 (radius 3: inside; a radius that counted the point itself would be 2),
    # -2.5 is inside 0's ball, 12.5 and 50 are outside every ball
    gen = np.c_[[4.5, 11.5, -2.5, 12.5, 50.0], np.zeros(5)]
    assert M.precision_recall_features(gen, real, k=3)["precision"] == pytest.approx(3 / 5)
    # gen = 0, 0.5, 1, 1.5: radii 1.5, 1, 1, 1.5 cover [-1.5, 3] → real 0-3 covered: recall 4/10
    # (radii counting the point itself, 1, .5, .5, 1, would cover only 0-2); all inside: precision 1
    gen = np.c_[[0.0, 0.5, 1.0, 1.5], np.zeros(4)]
    assert M.precision_recall_features(gen, real, k=3) == {"precision": 1.0, "recall": pytest.approx(0.4)}


def test_fid_interval_value_seed_and_reuse(sets):
    xa, xb = M.reference_images(200, "train", 5), M.reference_images(200, "test", 5)
    iv = M.fid_interval(xa, xb, n_boot=30, seed=0)                     # images in
    assert iv.value == pytest.approx(fid_mnist(xa, xb), rel=1e-9)       # the point estimate is FID
    assert iv.low < iv.value < iv.high
    # features in, same numbers out (the bootstrap never needs the classifier again)
    fa, fb = classifier_outputs(xa), classifier_outputs(xb)
    assert M.fid_interval(fa, fb.features, n_boot=30, seed=0) == iv
    assert M.fid_interval(fa, fb, n_boot=30, seed=1) != iv              # seeded by its seed
    # the bootstrap's upward bias is removed: the replicates' mean sits far above FID at n = 200,
    # the interval is centred on the replicates shifted down by that bias
    boot = M.fid_bootstrap(fa.features, fb.features, 30, seed=0)
    assert boot.mean() > iv.value + 0.5 * (iv.high - iv.low)
    lo, hi = np.quantile(boot, [0.025, 0.975]) - (boot.mean() - iv.value)
    assert (iv.low, iv.high) == pytest.approx((lo, hi))


def test_two_real_sets_overlap_the_real_vs_real_reference(sets):
    """A disjoint real set scored like samples lands inside the real-vs-real reference's range."""
    ref, real, real2 = sets["ref"], sets["real"], sets["real2"]
    fid_ref, fid_2 = M.fid_interval(real, ref), M.fid_interval(real2, ref)
    assert fid_2.overlaps(fid_ref) and fid_ref.contains(fid_2.value)
    kid_ref, kid_2 = M.kid_mnist(real, ref), M.kid_mnist(real2, ref)
    assert kid_2.overlaps(kid_ref) and kid_ref.low < 0 < kid_ref.high  # KID of equal distributions is 0
    pr_ref, pr_2 = M.precision_recall(real, ref), M.precision_recall(real2, ref)
    for key in ("precision", "recall"):
        se = np.sqrt(pr_ref[key] * (1 - pr_ref[key]) / N)            # binomial standard error
        assert abs(pr_2[key] - pr_ref[key]) < 4 * np.sqrt(2) * se


def test_degraded_sets_are_separated_from_real_data(sets):
    ref = sets["ref"]
    fid_ref, kid_ref = M.fid_interval(sets["real"], ref), M.kid_mnist(sets["real"], ref)
    for name in ("blur07", "noise"):
        fid, kid = M.fid_interval(sets[name], ref), M.kid_mnist(sets[name], ref)
        assert fid.low > fid_ref.high, (name, str(fid), str(fid_ref))
        assert kid.low > kid_ref.high, (name, str(kid), str(kid_ref))
    # noise is a fidelity failure: precision falls well below the real set's
    p_real = M.precision_recall(sets["real"], ref)["precision"]
    assert M.precision_recall(sets["noise"], ref)["precision"] < p_real - 0.15


def test_mode_dropping_shows_in_recall_not_in_precision(sets):
    """Issue 11's example, measured: a set of digits 0-4 only keeps the real set's precision and
    covers about half the real digits (recall ≈ ½ · real recall). FID scores it better than a
    blurred full set (σ = 1) — as the issue found (144 vs 180) — yet the blur does worse on recall
    still: blur shrinks this classifier's features into a compact region (trace of the covariance
    444 → 136), so in its feature space blur reads as a loss of diversity too. With a milder blur
    (σ = 0.7) FID ranks blur first and recall ranks it last: the two numbers disagree."""
    ref = sets["ref"]
    pr = {k: M.precision_recall(sets[k], ref) for k in ("real", "half", "blur07", "blur10")}
    fid = {k: M.fid_interval(sets[k], ref).value for k in ("half", "blur07", "blur10")}
    se = np.sqrt(0.25 / N)
    assert abs(pr["half"]["precision"] - pr["real"]["precision"]) < 4 * np.sqrt(2) * se
    assert 0.35 < pr["half"]["recall"] / pr["real"]["recall"] < 0.7
    assert fid["half"] < fid["blur10"] and pr["blur10"]["recall"] < pr["half"]["recall"]
    assert fid["blur07"] < fid["half"] and pr["blur07"]["recall"] < pr["half"]["recall"]
    # the class histogram names the dropped digits directly
    hist = np.bincount(sets["half"].probs.argmax(1), minlength=10) / N
    assert hist[5:].max() < 0.02 and hist[:5].min() > 0.15


def test_quality_report(sets, monkeypatch):
    from ldm_edu import classifier
    x = M.reference_images(N, "train", 7)
    q = M.quality_report(x, n_boot=20)
    assert set(q) >= {"fid", "kid", "is", "precision", "recall", "real_fid", "hist", "class_min",
                      "class_max", "n"}
    assert q["n"] == N and isinstance(q["fid"], Interval) and isinstance(q["real_fid"], Interval)
    out = classifier_outputs(x)
    assert q["fid"] == M.fid_interval(out, sets["ref"], n_boot=20) and q["kid"] == M.kid_mnist(out, sets["ref"])
    assert q["real_fid"] == M.fid_interval(sets["real"], sets["ref"], n_boot=20)  # N train vs the N test
    assert q["precision"] == M.precision_recall(out, sets["ref"])["precision"]
    assert q["is"] == pytest.approx(inception_score_mnist(x), rel=1e-9)
    assert q["hist"].sum().item() == pytest.approx(1.0) and q["class_min"] == q["hist"].min().item()
    assert q["fid"].overlaps(q["real_fid"]) and q["kid"].overlaps(q["real_kid"])
    # the classifier runs once on the samples (references are cached)
    calls = []
    real_load = classifier.load_classifier
    monkeypatch.setattr(classifier, "load_classifier", lambda *a, **k: calls.append(1) or real_load(*a, **k))
    M.quality_report(x, n_boot=20)
    assert len(calls) == 1


def test_interval_metrics_refuse_nan_images():
    x = M.reference_images(20, "test", 0).clone()
    x[3, 0, 5, 5] = float("nan")
    ok = M.reference_images(20, "test", 1)
    for fn in (lambda: M.quality_report(x), lambda: M.fid_interval(x, ok), lambda: M.kid_mnist(ok, x),
               lambda: M.precision_recall(x, ok)):
        with pytest.raises(ValueError, match="NaN or inf"):
            fn()
    with pytest.raises(ValueError, match="NaN or inf"):
        M.fid_interval(np.full((10, 4), np.nan), np.zeros((10, 4)))
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        M.kid_mnist(ok[:, 0], ok)
    with pytest.raises(ValueError, match="test set's size"):
        M.quality_report(ok, n_ref=20_000)


def test_inception_score_interval_hand_cases():
    from ldm_edu.metrics import inception_score_interval
    # one class for every sample: IS = 1 exactly, and every bootstrap replicate too
    one = np.tile(np.eye(10)[3], (200, 1))
    iv = inception_score_interval(one)
    assert abs(iv.value - 1) < 1e-9 and abs(iv.low - 1) < 1e-9 and abs(iv.high - 1) < 1e-9
    # confident, classes unbalanced (p(y) ∝ 1 … 10, away from the uniform maximum of H(p(y)), where the
    # first-order term vanishes and the width would shrink like 1/n): the interval narrows like 1/√n
    def width(n):
        p = np.full((n, 10), 1e-6)
        p[np.arange(n), np.random.default_rng(0).choice(10, n, p=np.arange(1, 11) / 55)] = 1
        iv = inception_score_interval(p / p.sum(1, keepdims=True))
        assert iv.low <= iv.value <= iv.high and 7 < iv.value < 10
        return iv.width
    assert 2 < width(200) / width(3200) < 8            # √16 = 4 expected


def test_precision_recall_intervals_match_the_binomial_for_precision():
    from ldm_edu.metrics import precision_recall_features, precision_recall_intervals
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 4))
    n = 600                                        # half the samples are far outliers: precision ≈ 0.5
    gen = np.concatenate([rng.normal(size=(n // 2, 4)), rng.normal(size=(n // 2, 4)) + 50])
    iv = precision_recall_intervals(gen, real)
    pr = precision_recall_features(gen, real)
    assert iv["precision"].value == pr["precision"] and iv["recall"].value == pr["recall"]
    half = iv["precision"].width / 2
    binom = 1.96 * (pr["precision"] * (1 - pr["precision"]) / n) ** 0.5
    assert 0.6 < half / binom < 1.5                # half-sampling ≈ the binomial SE for a mean of indicators
    assert 0 <= iv["recall"].low <= iv["recall"].value <= iv["recall"].high <= 1 and iv["recall"].width > 0


def test_quality_report_carries_the_new_intervals():
    from ldm_edu.metrics import quality_report, reference_images
    q = quality_report(reference_images(100, "train", seed=7))
    for key in ("is", "precision", "recall"):
        iv = q[f"{key}_interval"]
        assert iv.value == q[key] and iv.low <= iv.value <= iv.high
    assert q["real_is_interval"].value == q["real_is"] and "real_precision_interval" in q


def test_paired_fid_difference_hand_cases():
    """Hand cases: b = a shifted by c in one feature ⇒ FID(b, ref) − FID(a, ref) = c² (equal covariances),
    in EVERY paired replicate too (resampling keeps the shift), so the interval is the point; identical
    sets ⇒ exactly 0; and the sign says which set is worse."""
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 5))
    c = 0.7
    shifted = ref.copy()
    shifted[:, 2] += c
    iv = M.paired_fid_difference(ref, shifted, ref, n_boot=30, seed=0)
    assert iv.value == pytest.approx(c ** 2, abs=1e-6)
    assert iv.low == pytest.approx(c ** 2, abs=1e-5) and iv.high == pytest.approx(c ** 2, abs=1e-5)
    same = M.paired_fid_difference(shifted, shifted, ref, n_boot=20)
    assert same.value == 0 and same.low == 0 and same.high == 0
    flip = M.paired_fid_difference(shifted, ref, ref, n_boot=30, seed=0)
    assert flip.value == pytest.approx(-c ** 2, abs=1e-6) and flip.high < 0
    with pytest.raises(ValueError, match="paired=True"):
        M.paired_fid_difference(ref[:10], ref, ref)


def test_paired_fid_difference_resolves_what_overlapping_intervals_do_not(sets):
    """Two mildly degraded copies of the SAME real images (blur σ = 0.7 and 1.0): the paired interval of
    Δ lies strictly above 0, narrower than the two separate FID intervals; and the point estimate is
    the difference of the two FIDs."""
    ref = sets["real2"]
    a, b = sets["blur07"], sets["blur10"]
    iv = M.paired_fid_difference(a, b, ref, n_boot=60, seed=0)
    fa, fb = M.fid_interval(a, ref, n_boot=60), M.fid_interval(b, ref, n_boot=60)
    assert iv.value == pytest.approx(fb.value - fa.value, rel=1e-9)
    assert iv.low > 0, str(iv)
    assert iv.width < min(fa.width, fb.width)
    # independent sets on a shared reference: the point estimate is still the difference of the two FIDs
    un = M.paired_fid_difference(a, b, sets["ref"], n_boot=60, seed=0, paired=False)
    assert un.value == pytest.approx(M.fid_interval(b, sets["ref"], n_boot=10).value
                                     - M.fid_interval(a, sets["ref"], n_boot=10).value, rel=1e-9)
