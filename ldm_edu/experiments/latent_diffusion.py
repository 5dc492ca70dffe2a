"""Lesson 06's recipes: the first stage, the latent DDPM trained with lesson 04's recipe, the
FID-against-wall-clock comparison with lesson 04's pixel DDPM, and the compression-factor study
(seed paper fig. 13 in miniature) at equal training compute, with its text written from the data.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch

from ..data import TensorBatches
from ..diffusion import NoiseSchedule, diffusion_batches_loss
from ..intervals import Interval
from ..latent import (PADDED_SIZE, FirstStage, LatentDiffusion, check_factor, encode_dataset, first_stage_loss,
                      latent_scale_factor, reconstruction_psnr)
from ..metrics import fid_interval, quality_report, reference_images
from ..nn import training_step_flops
from ..sampling import sample_images
from ..train import EMA, History, fit
from ..unet import UNet, unet_from_config

UNET_FIELDS = ("ch", "ch_mult", "num_res", "attn", "num_classes")


# ----------------------------------------------------------------------------- stage 1
def train_first_stage(x: torch.Tensor, f: int = 4, latent_ch: int = 4, ch: int = 16, reg: str = "kl",
                      steps: int = 1000, batch_size: int = 64, lr: float = 2e-3, kl_weight: float = 1e-6,
                      codebook_size: int = 128, seed: int = 0, desc: str | None = None, progress: bool = True,
                      live_plot: bool | None = False):
    """Build a FirstStage on x's device and fit it on images ``x`` in [−1, 1]; returns (ae, History)."""
    torch.manual_seed(seed)
    ae = FirstStage(f=f, latent_ch=latent_ch, ch=ch, reg=reg, kl_weight=kl_weight,
                    codebook_size=codebook_size).to(x.device)
    hist = fit(ae, first_stage_loss, TensorBatches(x, batch_size=batch_size, seed=seed), steps, lr=lr,
               cosine_decay=True, desc=desc or f"{reg.upper()}-f{f} autoencoder", progress=progress,
               live_plot=live_plot)
    return ae.eval(), hist


# ----------------------------------------------------------------------------- stage 2
def latent_unet(dcfg, latent_shape: tuple, device="cpu", seed: int | None = 0) -> UNet:
    """Lesson 04's UNet (``dcfg``: ch, ch_mult, num_res, attn, num_classes of a DiffusionConfig) for a
    c × h × w latent: in_ch = c, image_size = h, no patching (the latent is already small)."""
    if seed is not None:
        torch.manual_seed(seed)
    cfg = {k: getattr(dcfg, k) for k in UNET_FIELDS if hasattr(dcfg, k)}
    return unet_from_config({**cfg, "patch": 1}, in_ch=latent_shape[0], image_size=latent_shape[1], device=device)


def fid_eval_fn(ldm: LatentDiffusion, n: int, steps: int, method: str = "ddpm", seed: int = 123):
    """An eval_fn for fit(): FID-MNIST with its bootstrap interval, IS-MNIST, precision and recall
    (``quality_report``) of ``n`` class-balanced samples of ``ldm`` (``method``-``steps``, guidance 1)
    — lesson 04's evaluation (``pixel_ddpm.fid_eval_fn``: same sampler, n, seed, reference and keys),
    on latents, x̂₀ clipped to the training latents' range (``LatentDiffusion.clip_x0``)."""
    def eval_fn(_model) -> dict:
        imgs = sample_images(ldm.sampler(steps, method), n, seed=seed).images
        q = quality_report(imgs)
        record = {k: q[k] for k in ("is", "precision", "recall")}
        for k in ("fid", "real_fid"):                      # intervals as value, <name>_low, <name>_high
            record.update({k: q[k].value, f"{k}_low": q[k].low, f"{k}_high": q[k].high})
        return record
    return eval_fn


def train_latent_ddpm(z: torch.Tensor, y: torch.Tensor, ae: FirstStage, scale: float, dcfg, steps: int, *,
                      eval_every: int | None = None, n_eval: int | None = None, eval_steps: int | None = None,
                      seed: int = 0, amp: bool = False, compile: bool = False,
                      desc: str = "latent DDPM", progress: bool = True, live_plot: bool | None = None):
    """Lesson 04's recipe on latents: its UNet (``latent_unet``), cosine schedule and T, AdamW with
    warm-up and cosine decay, batch, label dropout and EMA (all from the DiffusionConfig ``dcfg``),
    trained ``steps`` steps on the *scaled* latents ``z`` (already multiplied by ``scale``) with labels
    ``y``. With ``eval_every``, FID-MNIST of the EMA model is logged with lesson 04's evaluation
    (``fid_eval_fn``: ``dcfg.eval_method``, ``eval_steps``, ``n_eval`` samples) and the training
    training seconds so far (fit() logs them with every evaluation).
    Returns (LatentDiffusion with the EMA UNet, History)."""
    schedule = NoiseSchedule(dcfg.T, dcfg.schedule, device=z.device)
    unet = latent_unet(dcfg, tuple(z.shape[1:]), z.device, seed)
    ema = EMA(unet, dcfg.ema_decay)
    ldm = LatentDiffusion(ae, ema.model, schedule, scale, clip_x0=float(z.abs().max()))   # z is already scaled
    eval_fn = None
    if eval_every:
        eval_fn = fid_eval_fn(ldm, n_eval or dcfg.n_eval, eval_steps or dcfg.eval_steps,
                              getattr(dcfg, "eval_method", "ddpm"))
    batches = TensorBatches(z, y, batch_size=dcfg.batch_size, seed=seed)
    history = fit(unet, diffusion_batches_loss(schedule, dcfg.p_uncond), batches, steps, lr=dcfg.lr,
                  warmup_steps=dcfg.warmup_steps, cosine_decay=True, ema=ema, amp=amp, compile=compile,
                  eval_fn=eval_fn, eval_every=eval_every, desc=desc, progress=progress, live_plot=live_plot)
    return ldm, history


# ----------------------------------------------------------------------------- FID against wall-clock time
@dataclass
class Curve:
    """FID along training: per evaluation the step, the training seconds, FID and its interval.
    ``estimated_seconds``: the history logged no seconds, so they were spread over the steps."""
    steps: list
    seconds: list
    value: list
    low: list
    high: list
    estimated_seconds: bool = False

    def intervals(self) -> list:
        return [Interval(v, lo, hi) for v, lo, hi in zip(self.value, self.low, self.high)]


def eval_curve(history: History, key: str = "fid", offset: float = 0.0) -> Curve:
    """The ``key`` evaluations of a History as a Curve. Seconds come from the logged ``seconds``
    evaluations (fit() logs them); a history without them (an older checkpoint) gets
    seconds = step / last step × its total training seconds, marked ``estimated_seconds``.
    Intervals from ``<key>_low`` / ``<key>_high`` when logged, else low = high = value."""
    if history is None or key not in history.evals or not history.evals[key]:
        raise ValueError(f"the history holds no {key!r} evaluations: train with eval_fn / eval_every "
                         "(lesson 04 does: train_or_load_ddpm(..., evaluate=True))")
    pts = history.evals[key]
    steps = [int(s) for s, _ in pts]
    value = [float(v) for _, v in pts]
    lows = dict(history.evals.get(f"{key}_low", []))
    highs = dict(history.evals.get(f"{key}_high", []))
    low = [float(lows.get(s, v)) for s, v in zip(steps, value)]
    high = [float(highs.get(s, v)) for s, v in zip(steps, value)]
    logged = dict(history.evals.get("seconds", []))
    if all(s in logged for s in steps):
        return Curve(steps, [offset + float(logged[s]) for s in steps], value, low, high)
    last = max(history.last_step, max(steps))
    seconds = [offset + history.seconds * s / last for s in steps]
    return Curve(steps, seconds, value, low, high, estimated_seconds=True)


def recost_curve(curve: Curve, seconds_per_step: float, offset: float = 0.0) -> Curve:
    """The curve on one shared clock: seconds = ``offset`` + step × ``seconds_per_step``.

    Why: two runs' logged seconds come from different processes (lesson 04's run and this one),
    and a machine's load can change its speed 2–4× between them. Timing one training step of each
    model interleaved in one process (``time_per_step``) and re-costing both curves with it makes the
    comparison independent of when each run happened. ``offset``: seconds spent before the first step
    (the LDM's first stage and encoding)."""
    if not (seconds_per_step > 0 and math.isfinite(seconds_per_step)) or offset < 0:
        raise ValueError(f"seconds_per_step must be > 0 and offset ≥ 0, got {seconds_per_step} and {offset}")
    return Curve(list(curve.steps), [offset + s * seconds_per_step for s in curve.steps], list(curve.value),
                 list(curve.low), list(curve.high))


def learned_to_sample(curve: Curve, floor: float, factor: float = 5.0) -> bool:
    """Did the run learn to sample? Its best evaluation's interval reaches within ``factor`` × ``floor``
    (floor: the FID it cannot beat — the real-vs-real reference at that n, or a first stage's rFID).
    A run far above it (e.g. FID ≈ 400 against an rFID of 20) makes noise, and no comparison with it
    means anything."""
    return _best_low_within(curve.low, floor, factor)


def _best_low_within(lows, floor: float, factor: float) -> bool:
    """``learned_to_sample``'s rule on bare lower bounds (one curve's, or a study's per-seed ones):
    the best (smallest) lower bound is ≤ ``factor`` × ``floor``."""
    if floor <= 0 or factor <= 1:
        raise ValueError(f"floor must be > 0 and factor > 1, got {floor} and {factor}")
    return min(lows) <= factor * floor


def time_to_quality(curve: Curve, target: float) -> float | None:
    """Training seconds at which the curve first reaches FID ≤ ``target``, linearly interpolated
    between the two evaluations around the crossing; None if it never does. When the first evaluation
    already reaches it, its time is only an upper bound (``reached_at_first`` says so)."""
    prev = None
    for t, v in zip(curve.seconds, curve.value):
        if v <= target:
            if prev is None or prev[1] == v:
                return float(t)
            t0, v0 = prev
            return float(t0 + (t - t0) * (v0 - target) / (v0 - v))
        prev = (t, v)
    return None


def time_to_quality_interval(curve: Curve, target: float) -> tuple:
    """(earliest, point, latest) seconds at which the curve reaches FID ≤ ``target``: the crossings of
    its band's lower edge, of the FID itself and of its upper edge (``time_to_quality`` of each). The
    earliest is when the 95 % interval first admits the target, the latest when it is surely below it;
    None where that edge never gets there. Two runs are ranked only when one's latest is before the
    other's earliest."""
    edge = lambda v: Curve(curve.steps, curve.seconds, list(v), list(v), list(v))
    return (time_to_quality(edge(curve.low), target), time_to_quality(curve, target),
            time_to_quality(edge(curve.high), target))


def reached_at_first(curve: Curve, target: float) -> bool:
    """True when the curve's first evaluation is already at FID ≤ ``target``: the crossing happened
    somewhere before it, and ``time_to_quality`` is an upper bound."""
    return bool(curve.value) and curve.value[0] <= target


def value_at(curve: Curve, seconds: float) -> float | None:
    """FID of the curve at ``seconds`` (linear between evaluations); None outside the evaluated range."""
    pts = list(zip(curve.seconds, curve.value))
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t0 <= seconds <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (seconds - t0) / (t1 - t0)
    return pts[-1][1] if pts and math.isclose(seconds, pts[-1][0]) else None


def time_per_step(step_fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``step_fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step_fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step_fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- the compression-factor study
@dataclass
class StudyResult:
    """One (f, seed) of the f-study: the first stage's PSNR and rFID (its reconstructions' FID, the
    floor its samples cannot get under), and the LDM's FID (with interval) at each evaluation."""

    f: int
    seed: int
    latent_shape: tuple
    psnr: float
    rfid: float
    flops_per_step: float = 0.0                     # one training step of the latent UNet (fwd + bwd)
    batch_size: int = 0                             # its batch (study_batch_sizes)
    steps: list = field(default_factory=list)
    fid: list = field(default_factory=list)
    fid_low: list = field(default_factory=list)
    fid_high: list = field(default_factory=list)
    seconds: list = field(default_factory=list)     # cumulative stage-2 training seconds at each evaluation
    replayed: bool = False                          # shipped weights (pretrained mode): seconds are the recording's

    @property
    def gflops(self) -> list:
        """Cumulative stage-2 training compute (GFLOP) at each evaluation."""
        return [n * self.flops_per_step / 1e9 for n in self.steps]


def study_step_counts(flops_per_step: list, compute: float) -> list:
    """Training steps per f that all cost the same ``compute`` (FLOPs): round(compute / FLOPs per step)."""
    if compute <= 0 or any(fl <= 0 for fl in flops_per_step):
        raise ValueError(f"compute and every FLOPs per step must be positive, got {compute} and {flops_per_step}")
    return [max(1, int(round(compute / fl))) for fl in flops_per_step]


def study_unet(f: int, latent_ch: int, unet_ch: int, seed: int = 0, device="cpu") -> UNet:
    """The f-study's latent UNet: lesson 04's family (ch_mult (1, 2), attention, 10 classes) at width
    ``unet_ch`` for the latent_ch × 32/f × 32/f latent."""
    torch.manual_seed(seed)
    return unet_from_config({"ch": unet_ch, "ch_mult": (1, 2), "num_res": 1, "attn": True, "num_classes": 10,
                             "patch": 1}, in_ch=latent_ch, image_size=PADDED_SIZE // f, device=device)


def unet_step_flops(unet: UNet, batch_size: int) -> float:
    """FLOPs of one training step of a class-conditional UNet at ``batch_size`` (``training_step_flops``)."""
    p = next(unet.parameters())
    x = torch.randn(2, unet.in_ch, unet.image_size, unet.image_size, device=p.device)
    t, y = torch.tensor([10, 500], device=p.device), torch.tensor([1, 2], device=p.device)
    return training_step_flops(unet, x, t, y if unet.num_classes else None, batch_size=batch_size)


def study_batch_sizes(fs, batch_at_f4: int) -> list[int]:
    """Stage-2 batch per f with the same number of latent positions per batch: b_f = b_4 · (f/4)².
    Every step then costs about the same FLOPs (and, on a CPU, about the same seconds — at a fixed batch
    the f = 8 UNet's 4 × 4 latent is so small that per-step overhead, not FLOPs, sets its time)."""
    if int(batch_at_f4) < 1:
        raise ValueError(f"batch_at_f4 must be ≥ 1, got {batch_at_f4}")
    return [max(1, int(round(batch_at_f4 * (f / 4) ** 2))) for f in fs]


def compression_study(x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, fs=(2, 4, 8),
                      latent_chs=(2, 4, 4), *, ae_ch: int = 16, ae_steps: int = 250, unet_ch: int = 16,
                      gflop: float = 2000.0, evals: int = 2, batch_size: int = 64, lr: float = 2e-3,
                      ema_decay: float = 0.995, n_fid: int = 200, sample_steps: int = 20, T: int = 1000,
                      schedule: str = "cosine", seeds=(0, 1), p_uncond: float = 0.1,
                      sample_method: str = "ddpm", ae_batch_size: int | None = None, ae_lr: float | None = None,
                      first_stages: dict | None = None, progress: bool = True) -> list[StudyResult]:
    """The small analogue of the seed paper's fig. 13, at **equal stage-2 training compute**: for each
    f a KL first stage (``ae_steps`` steps of ``ae_batch_size`` images at ``ae_lr`` — defaults
    ``batch_size`` and ``lr`` — seed 0; or the trained one given in ``first_stages[f]``; PSNR on ``x_test``, rFID of its reconstructions of n_fid training images)
    and, for every seed in ``seeds``, a class-conditional latent UNet (``study_unet``) trained ``gflop``
    GFLOP — as many steps as that buys at its latent size, no cap — with batch ``study_batch_sizes``
    (``batch_size`` at f = 4, the same latent positions per batch for every f), and FID-MNIST (bootstrap
    interval, ``sample_method``-``sample_steps``: strided ancestral DDPM as lesson 04 evaluates, n_fid samples against n_fid test images) at ``evals`` equally
    spaced fractions of that compute. Constant learning rate (no warm-up, no decay) so that each
    evaluation is a fair "stop here". Images in [−1, 1]."""
    if len(fs) != len(latent_chs):
        raise ValueError(f"fs {fs} and latent_chs {latent_chs} must have the same length")
    for f in fs:
        check_factor(f)
    if not seeds:
        raise ValueError("give at least one seed (two or more to see the spread)")
    first_stages = dict(first_stages or {})
    for f, c in zip(fs, latent_chs):
        if f in first_stages and tuple(first_stages[f].latent_shape) != (c, PADDED_SIZE // f, PADDED_SIZE // f):
            raise ValueError(f"first_stages[{f}] has latent {tuple(first_stages[f].latent_shape)}, the study "
                             f"needs {(c, PADDED_SIZE // f, PADDED_SIZE // f)} for f = {f}: give a matching one")
    device = x.device
    sched = NoiseSchedule(T, schedule, device=device)
    reference = reference_images(n_fid)
    batches_f = study_batch_sizes(fs, batch_size)
    flops = [unet_step_flops(study_unet(f, c, unet_ch, device=device), b) for f, c, b in zip(fs, latent_chs, batches_f)]
    counts = study_step_counts(flops, gflop * 1e9)
    results = []
    for f, c, fl, n_steps, batch_f in zip(fs, latent_chs, flops, counts, batches_f):
        if f in first_stages:
            ae = first_stages[f].eval()
        else:
            ae, _ = train_first_stage(x, f=f, latent_ch=c, ch=ae_ch, steps=ae_steps,
                                      batch_size=ae_batch_size or batch_size, lr=ae_lr or lr, seed=0,
                                      progress=progress)
        psnr = reconstruction_psnr(ae, x_test)
        with torch.no_grad():
            rec = ((ae.decode(ae.encode(x[:n_fid])) + 1) / 2).clamp(0, 1).cpu()
        rfid = fid_interval(rec, reference).value
        z = encode_dataset(ae, x, sample=True, generator=torch.Generator().manual_seed(0))   # z ~ q(z|x)
        s = latent_scale_factor(z)
        z = z * s
        for seed in seeds:
            res = StudyResult(f=f, seed=seed, latent_shape=ae.latent_shape, psnr=psnr, rfid=rfid, flops_per_step=fl,
                              batch_size=batch_f)
            unet = study_unet(f, c, unet_ch, seed, device)
            ema = EMA(unet, ema_decay)
            opt = torch.optim.AdamW(unet.parameters(), lr=lr)
            batches = TensorBatches(z, y, batch_size=batch_f, seed=seed)
            ldm = LatentDiffusion(ae, ema.model, sched, s, clip_x0=float(z.abs().max()))
            hist, done = None, 0
            for k in range(1, evals + 1):
                chunk = round(n_steps * k / evals) - done
                hist = fit(unet, diffusion_batches_loss(sched, p_uncond), batches, chunk, optimizer=opt, ema=ema,
                           history=hist, desc=f"LDM-{f} seed {seed} ({c}×{ae.latent_shape[1]}²)",
                           progress=progress, live_plot=False)
                done += chunk
                imgs = sample_images(ldm.sampler(sample_steps, sample_method), n_fid, seed=1000 + seed).images
                iv = fid_interval(imgs, reference)
                res.steps.append(done)
                res.fid.append(iv.value)
                res.fid_low.append(iv.low)
                res.fid_high.append(iv.high)
                res.seconds.append(hist.seconds)
                res.replayed = hist.replayed
            results.append(res)
    return results


def _by_f(results: list) -> dict:
    out: dict = {}
    for r in results:
        out.setdefault(r.f, []).append(r)
    return out


def study_summary(results: list) -> list[dict]:
    """Per f, at the last evaluation (equal compute): mean FID over seeds, the seeds' min and max,
    each seed's bootstrap interval, PSNR, rFID; sorted best (lowest mean FID) first."""
    rows = []
    for f, rs in _by_f(results).items():
        last = [r.fid[-1] for r in rs]
        rows.append({"f": f, "mean": statistics.fmean(last), "min": min(last), "max": max(last),
                     "low": min(r.fid_low[-1] for r in rs), "high": max(r.fid_high[-1] for r in rs),
                     "psnr": rs[0].psnr, "rfid": rs[0].rfid, "steps": rs[0].steps[-1], "seeds": len(rs),
                     "gflop": rs[0].gflops[-1]})
    return sorted(rows, key=lambda r: r["mean"])


def _separated(a: dict, b: dict) -> bool:
    """a beats b in every seed, and the bootstrap intervals do not overlap."""
    return a["max"] < b["min"] and a["high"] < b["low"]


def _why_not_separated(a: dict, b: dict) -> str:
    """Which of the two criteria of ``_separated`` fails, in words (a: the better mean)."""
    seeds_apart, ivs_apart = a["max"] < b["min"], a["high"] < b["low"]
    spans = (f"seeds {a['min']:.0f}–{a['max']:.0f} vs {b['min']:.0f}–{b['max']:.0f}, intervals "
             f"[{a['low']:.0f}, {a['high']:.0f}] vs [{b['low']:.0f}, {b['high']:.0f}]")
    if seeds_apart:
        return f"every seed of f = {a['f']} is ahead, but the bootstrap intervals overlap ({spans})"
    if ivs_apart:
        return f"the bootstrap intervals are apart, but the seeds overlap ({spans})"
    return f"both the seeds and the bootstrap intervals overlap ({spans})"


def _relation(fid: float, floor: float) -> str:
    if fid > 1.5 * floor:
        return "still far above that floor"
    if fid >= floor:
        return "close to that floor"
    return "already at or below it (rFID is itself measured on a finite sample)"


def describe_study(results: list, small: int = 4, large: int = 8, learned_factor: float = 5.0) -> str:
    """Markdown that states what the f-study measured, worded from the data: first whether any f
    learned to sample at all (best FID interval within ``learned_factor`` × its rFID), then the ranking
    at equal compute with the seeds' spread, whether f = ``small`` has passed f = ``large`` (the seed
    paper's "moderate f is best") — and, if not, what in the data says why — and what equal FLOPs
    cost in seconds."""
    rows = study_summary(results)
    if not rows:
        raise ValueError("no study results to describe")
    by = {r["f"]: r for r in rows}
    seeds = rows[0]["seeds"]
    fs = sorted(by)
    learned = [r for r in rows if _best_low_within([r["low"]], r["rfid"], learned_factor)]     # last evaluation
    head = (f"**What the study measured.** f = {', '.join(map(str, fs))}, each at the same stage-2 compute "
            f"({rows[0]['gflop']:,.0f} GFLOP), {seeds} seed{'s' if seeds > 1 else ''}.")
    if not learned:
        return (f"{head} **At this budget no f learned to sample**: the best FIDs "
                f"({min(r['min'] for r in rows):.0f}–{max(r['max'] for r in rows):.0f}) stay far above the first "
                f"stages' rFIDs ({min(r['rfid'] for r in rows):.0f}–{max(r['rfid'] for r in rows):.0f}), more than "
                f"{learned_factor:g}× — the samples are not digits, so the study ranks nothing.")
    order = " < ".join(f"f = {r['f']} ({r['mean']:.0f})" for r in rows)
    text = [f"{head} Mean FID-MNIST over the seeds ranks {order}."]
    unlearned = [r["f"] for r in rows if r not in learned]
    if unlearned:
        text.append(f"f = {', '.join(map(str, unlearned))} did not learn to sample (best FID more than "
                    f"{learned_factor:g}× its rFID).")
    stuck = [r for r in results if r.f not in unlearned and not _best_low_within(r.fid_low, r.rfid, learned_factor)]
    if stuck:
        text.append("Some seeds did not learn where others did: " + ", ".join(
            f"f = {r.f} seed {r.seed} (FID {r.fid[-1]:.0f}, more than {learned_factor:g}× its rFID {r.rfid:.0f})"
            for r in stuck) + " — the spread between seeds is part of what this budget measures.")
    best, runner = rows[0], rows[1] if len(rows) > 1 else None
    pair_is_the_question = runner is not None and {best["f"], runner["f"]} == {small, large}
    if runner is not None and not pair_is_the_question:
        if _separated(best, runner):
            text.append(f"f = {best['f']} is ahead of f = {runner['f']} in every seed and beyond the bootstrap "
                        f"intervals ([{best['low']:.0f}, {best['high']:.0f}] vs [{runner['low']:.0f}, {runner['high']:.0f}]).")
        else:
            text.append(f"f = {best['f']} and f = {runner['f']} are not separated: {_why_not_separated(best, runner)}.")
    if small in by and large in by:
        s, l = by[small], by[large]
        fr = {r.f: r for r in results if r.seed == results[0].seed}
        gaps = [a - b for a, b in zip(fr[small].fid, fr[large].fid)] if small in fr and large in fr else []
        trend = (f" Along training (seed {results[0].seed}) FID(f = {small}) − FID(f = {large}) went "
                 + " → ".join(f"{g:+.0f}" for g in gaps) + ".") if len(gaps) > 1 else ""
        if _separated(s, l):
            text.append(f"**f = {small} has passed f = {large}** at this compute: the paper's \"moderate f is best\" "
                        f"(seed paper fig. 13) appears in the data.{trend}")
        elif _separated(l, s):
            text.append(
                f"**f = {large} is still ahead of f = {small}**: at this budget the smaller latent's easier task wins. "
                f"f = {large}'s first stage caps it at rFID {l['rfid']:.0f} (PSNR {l['psnr']:.1f} dB) and its samples "
                f"are at {l['mean']:.0f}, {_relation(l['mean'], l['rfid'])}; f = {small} "
                f"(rFID {s['rfid']:.0f}, PSNR {s['psnr']:.1f} dB) can pass it only once f = {large} nears its floor."
                f"{trend} So this budget does **not** reach the regime where f = {small} passes f = {large}; "
                "the `gpu` preset trains long enough to test it.")
        else:
            a, b = (s, l) if s["mean"] <= l["mean"] else (l, s)
            text.append(f"f = {small} and f = {large} are **not separated** at this budget: "
                        f"{_why_not_separated(a, b)} — so this run cannot tell which is ahead.{trend}")
            if l["mean"] < s["mean"]:
                text.append(
                    f"On the means f = {large} leads: its samples ({l['mean']:.0f}) are "
                    f"{_relation(l['mean'], l['rfid'])} (rFID {l['rfid']:.0f}), while f = {small} "
                    f"({s['mean']:.0f}) is {s['mean'] / s['rfid']:.0f}× above its own (rFID {s['rfid']:.0f}) — only "
                    f"f = {small} has much room left. This budget does **not** reach the regime where f = {small} "
                    "could pass f = {large}; the `gpu` preset trains long enough to test it.".replace("{large}", str(large)))
    secs = {}
    for r in results:
        secs.setdefault(r.f, []).append(r.seconds[-1])
    mean_s = {f: statistics.fmean(v) for f, v in secs.items()}
    where = ("on the machine that made the shipped weights (pretrained mode; it ran other jobs too)"
             if any(r.replayed for r in results) else "on this machine")
    if len(mean_s) > 1 and min(mean_s.values()) > 0:
        slow, fast = max(mean_s, key=mean_s.get), min(mean_s, key=mean_s.get)
        if mean_s[slow] / mean_s[fast] < 1.25:
            text.append(f"Equal FLOPs took about equal seconds {where} ({mean_s[fast]:.0f}–{mean_s[slow]:.0f} s of "
                        "stage-2 training per run).")
        else:
            text.append(f"Equal FLOPs is not equal seconds: stage 2 took {mean_s[fast]:.0f} s at f = {fast} and "
                        f"{mean_s[slow]:.0f} s at f = {slow} ({mean_s[slow] / mean_s[fast]:.1f}×) {where}.")
    return " ".join(text)


# ----------------------------------------------------------------------------- cost model (bench/gpu_budget.py)
def workload(preset) -> list[tuple]:
    """What lesson 06 computes at ``preset``'s sizes, counted with ``training_step_flops`` on the CPU:
    rows ("06", part, training steps, training FLOPs, sampler steps, sampling FLOPs). The pixel baseline's
    training is lesson 04's (reused from its checkpoint) and is not counted here."""
    c, d = preset.ldm, preset.diffusion
    img = torch.rand(2, 1, 28, 28) * 2 - 1
    t2, y2 = torch.tensor([10, 500]), torch.tensor([1, 2])
    rows = []
    ae = FirstStage(f=c.f, latent_ch=c.latent_ch, ch=c.ae_ch, kl_weight=c.kl_weight)
    rows.append(("06", "first stage (KL)", c.ae_steps, training_step_flops(ae, img, batch_size=c.ae_batch_size) * c.ae_steps, 0, 0.0))
    shape = ae.latent_shape
    lu = latent_unet(d, shape)
    z2 = torch.randn(2, *shape)
    lat_step = training_step_flops(lu, z2, t2, y2, batch_size=d.batch_size)
    lat_fwd = training_step_flops(lu, z2, t2, y2, batch_size=1, backward=False)
    n_evals = -(-c.steps // c.eval_every) if c.eval_every else 0
    runs = 2                                                   # scaled and unscaled latent DDPMs
    rows.append(("06", f"latent DDPMs (scaled + unscaled) {sum(p.numel() for p in lu.parameters()) / 1e6:.2f}M",
                 runs * c.steps, runs * c.steps * lat_step, runs * n_evals * d.eval_steps,
                 runs * n_evals * d.eval_steps * d.n_eval * lat_fwd))
    pu = unet_from_config(d)
    pix_fwd = training_step_flops(pu, img, t2, y2, batch_size=1, backward=False)
    sampler_steps = sum(k for _, k in c.samplers)
    rows.append(("06", "final samplers, pixel + latent", 0, 0.0, 2 * sampler_steps,
                 sampler_steps * c.n_fid * (pix_fwd + lat_fwd)))
    study_train, study_steps, study_samp, study_sflops = 0.0, 0, 0, 0.0
    for f, lc, b in zip(c.study_fs, c.study_latent_ch, study_batch_sizes(c.study_fs, c.study_batch_size)):
        sae = FirstStage(f=f, latent_ch=lc, ch=c.ae_ch)
        su = study_unet(f, lc, c.study_unet_ch)
        step = unet_step_flops(su, b)
        n = study_step_counts([step], c.study_gflop * 1e9)[0]
        ae_steps = 0 if f == c.f and lc == c.latent_ch else c.ae_steps     # §1's first stage is reused
        study_train += training_step_flops(sae, img, batch_size=c.ae_batch_size) * ae_steps
        study_train += len(c.study_seeds) * n * step
        study_steps += ae_steps + len(c.study_seeds) * n
        fwd = training_step_flops(su, torch.randn(2, lc, 32 // f, 32 // f), t2, y2, batch_size=1, backward=False)
        study_samp += len(c.study_seeds) * c.study_evals * c.study_sample_steps
        study_sflops += len(c.study_seeds) * c.study_evals * c.study_sample_steps * c.study_n_fid * fwd
    rows.append(("06", f"f-study f = {tuple(c.study_fs)}, {len(c.study_seeds)} seeds, {c.study_gflop:,.0f} GFLOP each",
                 study_steps, study_train, study_samp, study_sflops))
    return rows


__all__ = ["train_first_stage", "latent_unet", "fid_eval_fn", "train_latent_ddpm", "Curve",
           "eval_curve", "recost_curve", "learned_to_sample", "time_to_quality", "time_to_quality_interval",
           "reached_at_first", "value_at", "time_per_step", "StudyResult", "study_step_counts",
           "study_unet", "study_batch_sizes", "unet_step_flops", "compression_study", "study_summary", "describe_study", "workload"]
