"""The pixel-space DDPM of lessons 04-05, as one code path: build, train (or load), sample, evaluate.

Lesson 04 trains it and saves ``lessons/checkpoints/ddpm_<preset>.pt``; lesson 05 calls the same
``train_or_load_ddpm(preset)`` and gets the saved model back (or trains it, if lesson 04 was not
run). Images live in [-1, 1] for the network (``to_signed``) and in [0, 1] for the metrics;
many images come from ``sampling.sample_images(pixel_sampler(...), n)``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..classifier import classifier_accuracy
from ..data import TensorBatches, from_signed, mnist_tensors
from ..diffusion import NoiseSchedule, diffusion_batches_loss
from ..intervals import Interval, wilson_interval
from ..metrics import quality_report
from ..nn import training_step_flops
from ..sampling import sample, sample_images
from ..train import (EMA, CheckpointMismatch, History, fit, load_checkpoint, load_history, save_checkpoint,
                     seed_everything)
from ..unet import UNet, unet_from_config


def make_schedule(cfg, device="cpu") -> NoiseSchedule:
    """The NoiseSchedule a DiffusionConfig describes (T steps, linear or cosine)."""
    return NoiseSchedule(cfg.T, cfg.schedule, device=device)


def _autocast(device, amp: bool):
    dev = torch.device(device)
    if amp and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pixel_sampler(model, schedule: NoiseSchedule, method: str = "ddpm", steps: int | None = None,
                  amp: bool = False, **sample_kwargs):
    """A ``sample_fn(k, y, generator)`` for ``sample_images``: k digits in [0, 1] (k, 1, 28, 28) from
    ``sampling.sample(model, schedule, ..., method, steps, **sample_kwargs)`` (eta, guidance,
    clip_x0, variance, t_max, progress), under bf16 autocast on CUDA when ``amp``."""
    device = next(model.parameters()).device
    sample_kwargs.setdefault("progress", False)

    def sample_fn(k, y, generator):
        with _autocast(device, amp):
            x = sample(model, schedule, (k, 1, 28, 28), method=method, steps=steps, generator=generator,
                       y=None if y is None else y.to(device), **sample_kwargs)
        return from_signed(x.float())
    return sample_fn


def fid_eval_fn(ema: EMA, schedule: NoiseSchedule, cfg, amp: bool = False):
    """An eval_fn for fit(): FID-MNIST (with its 95 % bootstrap interval, and the real-vs-real
    reference at the same n), IS-MNIST, precision and recall of ``cfg.n_eval`` samples from the EMA
    weights (``cfg.eval_method``, ``cfg.eval_steps`` steps: strided ancestral DDPM in every preset)."""
    def eval_fn(_model):
        sampler = pixel_sampler(ema.model, schedule, cfg.eval_method, cfg.eval_steps, amp=amp, clip_x0=cfg.clip_x0)
        imgs = sample_images(sampler,
                             cfg.n_eval, seed=123).images
        q = quality_report(imgs)
        out = {"fid": q["fid"].value, "fid_low": q["fid"].low, "fid_high": q["fid"].high,
               "real_fid": q["real_fid"].value, "real_fid_low": q["real_fid"].low,
               "real_fid_high": q["real_fid"].high, "is": q["is"],
               "precision": q["precision"], "recall": q["recall"]}
        for key in ("is", "precision", "recall"):          # their intervals (quality_report)
            iv = q[f"{key}_interval"]
            out[f"{key}_low"], out[f"{key}_high"] = iv.low, iv.high
        return out
    return eval_fn


@dataclass
class DDPMRun:
    """What train_or_load_ddpm returns: the EMA model (for sampling), its schedule, the history."""
    model: UNet
    schedule: NoiseSchedule
    history: History | None
    cfg: object
    path: Path
    loaded: bool
    train_seconds: float


def checkpoint_path(preset, checkpoint_dir: str | Path = "checkpoints") -> Path:
    return Path(checkpoint_dir) / f"ddpm_{preset.name}.pt"


def train_or_load_ddpm(preset, checkpoint_dir: str | Path = "checkpoints", retrain: bool = False,
                       evaluate: bool = True, progress: bool = True, live_plot: bool | None = None) -> DDPMRun:
    """Load ``<checkpoint_dir>/ddpm_<preset>.pt`` if it exists and fits ``preset.diffusion``;
    otherwise train the class-conditional pixel DDPM (fit + EMA, FID-MNIST every ``eval_every``
    steps when ``evaluate``) and save the EMA weights there. Lessons 04 and 05 both call this.

    A file whose schedule (T, kind) differs, or that holds another model (another class, UNet
    configuration or tensor shapes: ``load_checkpoint`` refuses it), is not used: the model is
    trained again and the file replaced. ``retrain=True`` trains even when the file fits."""
    cfg, device = preset.diffusion, preset.device
    path = checkpoint_path(preset, checkpoint_dir)
    schedule = make_schedule(cfg, device)
    if path.exists() and not retrain:
        model = unet_from_config(cfg, device=device)
        try:
            blob = load_checkpoint(path, model)
        except CheckpointMismatch as e:
            print(f"not using {path}: {e}. Training again (the file will be replaced).")
        else:
            extra = blob.get("extra", {})
            if extra.get("T") == cfg.T and extra.get("schedule") == cfg.schedule:
                model.to(device).eval()
                hist = load_history(blob)
                own = f"; {hist.seconds - hist.eval_seconds:.0f} s of training" if hist is not None and hist.eval_seconds else ""
                print(f"loaded {path} (trained {extra.get('steps')} steps in {extra.get('train_seconds', 0):.0f} s"
                      f"{' including evaluations' if own else ''}{own})")
                return DDPMRun(model, schedule, hist, cfg, path, True,
                               float(extra.get("train_seconds", 0.0)))
            print(f"not using {path}: it was trained with T={extra.get('T')}, schedule {extra.get('schedule')!r}, "
                  f"the preset asks for T={cfg.T}, {cfg.schedule!r}. Training again.")
    seed_everything(preset.seed)
    model = unet_from_config(cfg, device=device)
    x, y = mnist_tensors("train", device=device, scale="signed")
    batches = TensorBatches(x, y, batch_size=cfg.batch_size, seed=preset.seed)
    ema = EMA(model, cfg.ema_decay)
    eval_fn = fid_eval_fn(ema, schedule, cfg, amp=preset.amp) if evaluate else None
    history = fit(model, diffusion_batches_loss(schedule, cfg.p_uncond), batches, cfg.steps, lr=cfg.lr,
                  warmup_steps=cfg.warmup_steps, cosine_decay=True, ema=ema, amp=preset.amp,
                  compile=preset.compile, eval_fn=eval_fn, eval_every=cfg.eval_every if evaluate else None,
                  desc=f"DDPM ({preset.name})", progress=progress, live_plot=live_plot)
    save_checkpoint(path, ema.model, history=history,
                    extra={"T": cfg.T, "schedule": cfg.schedule, "steps": history.last_step,
                           "train_seconds": history.seconds, "preset": preset.name})
    return DDPMRun(ema.model.eval(), schedule, history, cfg, path, False, history.seconds)


# ----------------------------------------------------------------------------- measured comparisons
@dataclass
class SamplerResult:
    """One sampler measured on n samples: its name, steps, the ``quality_report``, the wall seconds
    and the images (n, 1, 28, 28) in [0, 1]."""
    name: str
    method: str
    steps: int
    report: dict
    seconds: float
    images: torch.Tensor

    @property
    def fid(self):
        return self.report["fid"]


def measure_sampler(model, schedule: NoiseSchedule, name: str, n: int, method: str = "ddpm",
                    steps: int | None = None, seed: int = 0, batch_size: int = 500, progress: bool = True,
                    ref_seed: int = 0, **sample_kwargs) -> SamplerResult:
    """n class-balanced samples from ``pixel_sampler(model, schedule, method, steps, **sample_kwargs)``
    (``sample_images``, timed) and their ``quality_report`` (FID interval, real-vs-real reference …).
    The same seed gives every sampler the same x_T (common random numbers: fairer comparisons).
    ``ref_seed`` picks the reference test images and the real-vs-real training images, separately
    from the sampler's ``seed``: every table of the course at one n then shares one reference (the
    course default 0, which ``fid_eval_fn`` uses too). ``progress``: one bar over the batches."""
    steps = schedule.T if steps is None else int(steps)
    fn = pixel_sampler(model, schedule, method, steps, progress=False, **sample_kwargs)
    s = sample_images(fn, n, batch_size=batch_size, seed=seed, progress=progress)
    return SamplerResult(name, method, steps, quality_report(s.images, seed=ref_seed), s.seconds, s.images)


def _iv(q: dict, key: str) -> str:
    """``q[key + "_interval"]`` printed as an Interval when the report has it, else ``q[key]`` (2 decimals)."""
    iv = q.get(f"{key}_interval")
    return str(iv) if iv is not None else f"{q[key]:.2f}"


def quality_table(results: list[SamplerResult]) -> str:
    """A Markdown table of ``SamplerResult``s with FID-MNIST [95 % interval], KID [mean ∓ std over
    half-size subsets], precision, recall and IS-MNIST with their 95 % intervals, class shares and
    seconds, closed by the real-vs-real reference at the same n (with its intervals)."""
    head = ("| sampler | steps | n | FID-MNIST [95 %] | KID [± 1 std] | precision [95 %] | recall [95 %] "
            "| IS-MNIST [95 %] | classes (%) | seconds |\n|---|---:|---:|---|---|---|---|---|---|---:|\n")
    rows = []
    for r in results:
        q = r.report
        rows.append(f"| {r.name} | {r.steps} | {q['n']} | {q['fid']} | {q['kid']} | {_iv(q, 'precision')} "
                    f"| {_iv(q, 'recall')} | {_iv(q, 'is')} "
                    f"| {100 * q['class_min']:.1f}–{100 * q['class_max']:.1f} | {r.seconds:.1f} |")
    ns = sorted({r.report["n"] for r in results})
    for n in ns:
        q = next(r.report for r in results if r.report["n"] == n)
        real_is = str(q["real_is_interval"]) if "real_is_interval" in q else "–"
        rows.append(f"| *real vs real* (train vs test) | – | {n} | {q['real_fid']} | {q['real_kid']} "
                    f"| {_iv(q, 'real_precision')} | {_iv(q, 'real_recall')} | {real_is} | – | – |")
    return head + "\n".join(rows)


def describe_kid(results: list[SamplerResult]) -> str:
    """One sentence on the KID column, from the measured intervals: which rows it separates from
    the real-vs-real reference (mean ± 1 std over half-size subsets: a conservative bar)."""
    q0 = results[0].report
    real = q0["real_kid"]
    apart = [r.name for r in results if not r.report["kid"].overlaps(real)]
    close = [r.name for r in results if r.report["kid"].overlaps(real)]
    text = (f"KID (Bińkowski et al. 2018; unbiased, so it does not drift with n) is printed as mean ± 1 std over "
            f"half-size subsets — the spread of a KID measured on n/2 samples, a conservative bar for the mean; on "
            f"these 128 raw ReLU features with the cubic kernel it is of order 1 (real vs real: {real}). ")
    if apart:
        text += f"It separates from real data: {', '.join(apart)}. "
    if close:
        text += f"It does not separate from real data at n = {q0['n']}: {', '.join(close)}."
    return text


def fid_verdict(a: SamplerResult, b: SamplerResult) -> str:
    """One sentence comparing two FID intervals: which is lower, or that n does not separate them."""
    fa, fb = a.fid, b.fid
    if fa.overlaps(fb):
        return (f"{a.name} (FID {fa}) and {b.name} (FID {fb}) are not separated at n = {a.report['n']}: "
                f"their intervals overlap")
    lo, hi = (a, b) if fa.value < fb.value else (b, a)
    return f"{lo.name} (FID {lo.fid}) is better than {hi.name} (FID {hi.fid}); the intervals do not overlap"


def eps_error_gain(schedule: NoiseSchedule, t: int, t_prev: int) -> float:
    """How much an error of ε̂ moves x_{t'} in one (strided) unclipped ancestral step t → t_prev
    (code indices; t_prev = −1 is the clean image, ᾱ = 1).

    The mean of the step, Ho et al. eq. 11 on the respaced chain (α = ᾱ_t/ᾱ_{t'}, β = 1 − α), is
    μ = (x_t − β/√(1−ᾱ_t) ε̂)/√α, so ∂μ/∂ε̂ = −β/(√α √(1−ᾱ_t)): the gain β/(√α √(1−ᾱ_t)) ≈ 1/√α
    when α ≪ 1. Cosine schedule, T = 1000: one full step from t = T gives 0.999/√0.001 ≈ 31.6."""
    ab = float(schedule.alpha_bars[int(t)])
    ab_prev = 1.0 if int(t_prev) < 0 else float(schedule.alpha_bars[int(t_prev)])
    alpha = ab / ab_prev
    return (1 - alpha) / (alpha ** 0.5 * (1 - ab) ** 0.5)


def respaced_jumps(schedule: NoiseSchedule, steps: int | None = None, t_max: int | None = None) -> list[dict]:
    """The jumps t → t' of the ``steps``-step respaced chain (``schedule.timesteps``, then −1 = the
    clean image), each with α = ᾱ_t/ᾱ_{t'}, β = 1 − α, β̃ = (1−ᾱ_{t'})/(1−ᾱ_t) β (Ho et al. eq. 7) and
    the ε̂-error ``gain`` (``eps_error_gain``). Code indices; the last jump (t' = −1) adds no noise."""
    ts = schedule.timesteps(steps, t_max).tolist() + [-1]
    out = []
    for t, tp in zip(ts[:-1], ts[1:]):
        ab = float(schedule.alpha_bars[t])
        ab_prev = 1.0 if tp < 0 else float(schedule.alpha_bars[tp])
        alpha = ab / ab_prev
        out.append({"t": t, "t_prev": tp, "alpha": alpha, "beta": 1 - alpha,
                    "beta_tilde": (1 - ab_prev) / (1 - ab) * (1 - alpha), "gain": eps_error_gain(schedule, t, tp)})
    return out


def describe_variance(tilde: SamplerResult, beta: SamplerResult, schedule: NoiseSchedule, steps: int) -> str:
    """σ² = β̃ against σ² = β, written from the measured rows and the respaced chain's last noisy
    jump. Ho et al. (2020, sec. 3.2) found the two similar on the full chain; on a short respaced
    chain the last jumps differ (Nichol & Dhariwal 2021, sec. 4)."""
    jumps = respaced_jumps(schedule, steps)
    noisy = [j for j in jumps if j["t_prev"] >= 0]
    text = [f"Variance: {fid_verdict(tilde, beta)}. "]
    if not noisy:
        return text[0] + "With a single step there is no noisy jump, so the two choices give the same samples."
    last = noisy[-1]
    sb, sbt = last["beta"] ** 0.5, last["beta_tilde"] ** 0.5
    expect = (1 - float(schedule.alpha_bars[last["t_prev"]])) ** 0.5
    where = (f"the last noisy jump, t = {last['t'] + 1} → {last['t_prev'] + 1}, adds noise of std σ = √β = {sb:.3f} "
             f"with σ² = β but √β̃ = {sbt:.3f} with β̃, and at t = {last['t_prev'] + 1} the network expects noise of "
             f"std only √(1−ᾱ) = {expect:.3f}, so the one step left (to the clean image, z = 0) cannot remove the extra")
    full = steps >= schedule.T
    tilde_better = not tilde.fid.overlaps(beta.fid) and tilde.fid.value < beta.fid.value
    beta_better = not tilde.fid.overlaps(beta.fid) and beta.fid.value < tilde.fid.value
    rec = (f" Recall (coverage): {tilde.report.get('recall_interval', tilde.report.get('recall'))} with β̃, "
           f"{beta.report.get('recall_interval', beta.report.get('recall'))} with β.")
    if tilde_better and not full:
        text.append(f"Ho et al. found the two similar on the full {schedule.T}-step chain, where β_t ≈ β̃_t except "
                    f"near t = 1; on this {steps}-step respaced chain they are not: {where} — grainy digits, lower "
                    "recall (Nichol & Dhariwal 2021, sec. 4, make the same point about shortened chains).")
    elif tilde_better:
        text.append(f"On the full chain Ho et al. found the two similar; here β̃ is measurably better: {where}.")
    elif beta_better:
        text.append(f"Here σ² = β is the better one, although {where}: this model's last steps seem to profit from "
                    "the extra noise (it corrects errors of ε̂ made earlier, Karras et al. 2022 sec. 4).")
    else:
        text.append(f"As Ho et al. found on the full chain, the two are not separated here, although {where}: "
                    f"at n = {tilde.report['n']} that difference does not show.")
    return "".join(text) + rec


def describe_clipping(clipped: SamplerResult, unclipped: SamplerResult, late: SamplerResult,
                      schedule: NoiseSchedule, steps: int, late_t: int) -> str:
    """Lesson 04's clipping conclusion, written from three measured samplers — x̂_0 clipped, not
    clipped from t = T, not clipped from a later start ``late_t`` (papers' t) — and from the ε̂-error
    gains (``eps_error_gain``) of their first jumps on the ``steps``-step respaced chain, against one
    step of the full chain (which Algorithm 2 as printed takes, unclipped, and survives)."""
    T = schedule.T
    first = respaced_jumps(schedule, steps)[0]
    first_late = respaced_jumps(schedule, steps, t_max=late_t - 1)[0]
    g_full = eps_error_gain(schedule, T - 1, T - 2)
    ab_late = float(schedule.alpha_bars[late_t - 1])
    jump = (f"with {steps} strided steps the first jump t = {first['t'] + 1} → {first['t_prev'] + 1} has α = ᾱ_t/ᾱ_t′ "
            f"= {first['alpha']:.1e}, so an error of ε̂ reaches x_t′ multiplied by β/(√α √(1−ᾱ_t)) ≈ 1/√α = "
            f"{first['gain']:,.0f}")
    full = f"one step of the full chain from t = T multiplies it by only {g_full:.1f}"
    text = [f"Clipping: {fid_verdict(clipped, unclipped)}. "]
    worse = not clipped.fid.overlaps(unclipped.fid) and unclipped.fid.value > clipped.fid.value
    if worse and steps < T:
        text.append(f"The amplifier is the strided first jump: {jump} — a 1 % error of ε̂ moves x_t′ by "
                    f"≈ {0.01 * first['gain']:.0f}, far outside anything the network was trained on, and the "
                    f"remaining steps cannot bring it back. By contrast {full}, which is why Algorithm 2 as printed "
                    f"(all T steps, no clip, §6) survives. The clip bounds x̂_0 to the data range, and with it "
                    "the error that reaches x_t′. ")
    elif worse:
        text.append(f"On the full chain {full}; the clip bounds x̂_0, and with it the error that each step passes on. ")
    elif unclipped.fid.value < clipped.fid.value and not clipped.fid.overlaps(unclipped.fid):
        text.append(f"Here the unclipped sampler is the better one, although {jump}: the clip also cuts legitimate "
                    "x̂_0 guesses, and this model's ε̂ is accurate enough where the gain is large. Clipping is a "
                    "choice, not a rule. ")
    else:
        text.append(f"At this n clipping makes no measurable difference, although {jump} ({full}): this model's "
                    "ε̂ is accurate enough at t = T. ")
    text.append(f"Without the clip but starting the chain at t = {late_t}, where ᾱ = {ab_late:.1e} (x_T ~ N(0, I) "
                f"still fits: {100 * ab_late ** 0.5:.0f} % signal), the first jump has α = {first_late['alpha']:.2f} "
                f"and gain {first_late['gain']:.1f}: {fid_verdict(late, clipped)}")
    if worse and (late.fid.overlaps(clipped.fid) or late.fid.value < unclipped.fid.low):
        text.append(" — so what breaks the unclipped sampler is that one near-total first jump, not the absence "
                    "of the clip as such.")
    else:
        text.append(".")
    return "".join(text)


def training_table(evals: dict) -> str:
    """Lesson 04's table of the FID evaluations during training (``History.evals`` of ``fid_eval_fn``):
    FID-MNIST, precision, recall and IS-MNIST per step with their intervals (where the history has
    them: older checkpoints stored point values only), the real-vs-real reference once below."""
    def iv(v, key):
        return str(Interval(v[key], v[f"{key}_low"], v[f"{key}_high"])) if f"{key}_low" in v else f"{v[key]:.2f}"
    rows = ["| step | FID-MNIST [95 %] | precision [95 %] | recall [95 %] | IS-MNIST [95 %] |",
            "|---:|---|---|---|---|"]
    v = {}
    for k, (step, _) in enumerate(evals.get("fid", [])):
        v = {key: evals[key][k][1] for key in evals if len(evals[key]) > k}
        rows.append(f"| {step} | {iv(v, 'fid')} | {iv(v, 'precision')} | {iv(v, 'recall')} | {iv(v, 'is')} |")
    if v:
        rows.append(f"| *real vs real* | {iv(v, 'real_fid')} | | | |")
    return "\n".join(rows)


def describe_training(evals: dict, n: int) -> str:
    """What to notice in ``training_table``: from which step on FID at n is not separated from the
    real-vs-real reference (the reference is the same set at every step: seed 0)."""
    fid = evals.get("fid", [])
    if not fid:
        return "No FID was measured during training."
    ivs = [(step, Interval(f, evals["fid_low"][k][1], evals["fid_high"][k][1])) for k, (step, f) in enumerate(fid)]
    real = Interval(evals["real_fid"][-1][1], evals["real_fid_low"][-1][1], evals["real_fid_high"][-1][1])
    first = next((k for k in range(len(ivs)) if all(iv.overlaps(real) for _, iv in ivs[k:])), None)
    if first is None:
        return (f"No evaluated step is within the real-vs-real reference {real} at n = {n}: the last FID, "
                f"{ivs[-1][1]}, is still separated from real data.")
    step = ivs[first][0]
    text = (f"From step {step} on, FID at n = {n} is not separated from the real-vs-real reference {real}: "
            f"the later changes ({ivs[first][1].value:.1f} → {ivs[-1][1].value:.1f}) are below what n = {n} resolves")
    return text + (" (§7 measures the final model at a larger n)." if first < len(ivs) - 1 else ".")


def describe_loss_spike(history, warmup_steps: int, lr: float, window: int = 5, factor: float = 1.5) -> str:
    """A sentence on the largest rise of the (smoothed) training loss above its running minimum, if
    it exceeds ``factor``×: when it happened relative to the end of the learning-rate warm-up, and
    when the loss was back within 10 % of the minimum it had reached before."""
    import numpy as np
    if len(history.loss) < 2 * window:
        return ""
    steps = np.asarray(history.steps)[window - 1:]             # where a full trailing window exists
    y = history.smoothed("loss", window)[window - 1:]
    runmin = np.minimum.accumulate(y)
    ratio = y / runmin
    i = int(np.argmax(ratio))
    if ratio[i] < factor:
        return (f"The loss falls without a spike above {factor:g}× its running minimum (warm-up: {warmup_steps} "
                f"steps to lr = {lr:g}).")
    lo = runmin[i]
    back = next((j for j in range(i, len(y)) if y[j] <= 1.1 * lo), None)
    start = i                                  # where this rise began: walk back while the loss is ≥ 1.1× the minimum
    while start > 0 and ratio[start - 1] >= 1.1:
        start -= 1
    when = ((f"{steps[start] - warmup_steps} steps after" if steps[start] >= warmup_steps else "during")
            + f" the {warmup_steps}-step warm-up to lr = {lr:g}")
    text = (f"The loss jumps from {lo:.3f} to {y[i]:.3f} around step {steps[start]}–{steps[i]}, {when}: at the full "
            "learning rate a few updates overshoot (Adam's step is ≈ lr per weight, whatever the gradient's size)")
    if back is None:
        return text + "; it has not come back to its earlier minimum by the end of training."
    return text + f"; it is back within 10 % of {lo:.3f} by step {steps[back]}, {steps[back] - steps[i]} steps later."


def guidance_table(guided: dict, labels: torch.Tensor, num_classes: int = 10) -> tuple[str, dict]:
    """Lesson 04's guidance table from ``{w: SamplerResult}``: the classifier's agreement with the
    requested label (Wilson 95 % interval; for w = 0 the label is ignored, so it is not shown), FID,
    precision and recall with their intervals, and the real-vs-real reference. Returns (Markdown,
    {w: agreement Interval or None})."""
    lines = ["| w (code) | w′ (Ho & Salimans) | label agreement [95 %] | FID-MNIST [95 %] | precision [95 %] "
             "| recall [95 %] |", "|---:|---:|---|---|---|---|"]
    agree = {}
    for w, r in guided.items():
        if w == 0:
            agree[w], shown = None, f"— (unconditional; chance {100 / num_classes:.0f} %)"
        else:
            acc = classifier_accuracy(r.images, labels)
            iv = wilson_interval(round(acc * len(labels)), len(labels))
            agree[w] = iv
            shown = f"{100 * iv.value:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}] %"
        q = r.report
        lines.append(f"| {w:g} | {w - 1:g} | {shown} | {r.fid} | {_iv(q, 'precision')} | {_iv(q, 'recall')} |")
    q = next(iter(guided.values())).report
    lines.append(f"| *real vs real* | | | {q['real_fid']} | {_iv(q, 'real_precision')} | {_iv(q, 'real_recall')} |")
    return "\n".join(lines), agree


def _change(a: Interval, b: Interval, what: str) -> tuple[str, int]:
    """'precision 0.87 → 0.96 (up, separated)' and the sign of a separated change (0 if not separated)."""
    sep = not a.overlaps(b)
    sign = (1 if b.value > a.value else -1) if sep else 0
    word = {1: "up", -1: "down", 0: "not separated"}[sign]
    return f"{what} {a.value:.2f} → {b.value:.2f} ({word})", sign


def describe_guidance(guided: dict, agree: dict, p_uncond: float, train_steps: int) -> str:
    """The guidance conclusions, written from the measured rows: for each step up in w, how precision
    and recall change (their intervals decide: a trade only where precision rises and recall falls,
    both separated), which FIDs n separates, and why w = 0 (unconditional) is worse when it is."""
    ws = sorted(guided)
    n = guided[ws[0]].report["n"]
    pr = {w: (guided[w].report.get("precision_interval"), guided[w].report.get("recall_interval")) for w in ws}
    text = []
    for a, b in zip(ws[:-1], ws[1:]):
        if pr[a][0] is None or pr[b][0] is None:
            continue
        p_txt, p_s = _change(pr[a][0], pr[b][0], "precision")
        r_txt, r_s = _change(pr[a][1], pr[b][1], "recall")
        kind = ("a trade: fidelity up, diversity down" if (p_s, r_s) == (1, -1) else
                "no trade: both improve" if (p_s, r_s) == (1, 1) else
                "no trade: one improves, the other does not change measurably" if (p_s, r_s) in ((1, 0), (0, 1)) else
                "both get worse" if (p_s, r_s) == (-1, -1) else
                "no change that n resolves" if (p_s, r_s) == (0, 0) else "mixed")
        text.append(f"w = {a:g} → {b:g}: {p_txt}, {r_txt} — {kind}.")
    # which FIDs are separated
    pairs = [(a, b) for i, a in enumerate(ws) for b in ws[i + 1:]]
    tied = [(a, b) for a, b in pairs if guided[a].fid.overlaps(guided[b].fid)]
    if tied:
        text.append(f"FID at n = {n} does not separate " + ", ".join(f"w = {a:g} and {b:g}" for a, b in tied)
                    + " (their intervals overlap); the precision/recall intervals above are the finer measure.")
    else:
        text.append(f"FID at n = {n} separates every pair of w.")
    if 0 in guided and 1 in guided and not guided[0].fid.overlaps(guided[1].fid) \
            and guided[0].fid.value > guided[1].fid.value:
        text.append(f"Unconditional sampling (w = 0, FID {guided[0].fid}) is clearly worse than conditional "
                    f"(w = 1, {guided[1].fid}). A likely reason: the null label ∅ was drawn for only p_uncond = "
                    f"{100 * p_uncond:.0f} % of the training examples, ≈ {p_uncond * train_steps:.0f} of {train_steps} "
                    "steps' worth, so ε_θ(x_t, t, ∅) is the less trained of the two.")
    sure = [w for w in ws if agree.get(w) is not None and agree[w].low > 0.99]
    if sure:
        text.append(f"At w = {', '.join(f'{w:g}' for w in sure)} the classifier agrees with the requested label on "
                    "more than 99 % of the samples (Wilson interval).")
    return " ".join(text)


@dataclass
class StepsResult(SamplerResult):
    """One entry of lesson 05's steps table: a ``SamplerResult`` and the η it was sampled with
    (1 for the ancestral rows, which run ``ddpm_step``: the same step as ``ddim_step(eta=1)``)."""
    eta: float = 0.0


def _eta_name(eta: float) -> str:
    return {1.0: "η = 1 (ancestral, strided)", 0.0: "η = 0 (DDIM)"}.get(float(eta), f"η = {eta:g}")


def steps_table(model, schedule: NoiseSchedule, steps_list, n: int, seed: int = 0, clip_x0: float | None = 1.0,
                progress: bool = True, mid_eta: float | None = None, mid_steps: int | None = None
                ) -> list[StepsResult]:
    """Lesson 05's table: η = 1 and η = 0 on the same sub-sequence of timesteps at each number of steps,
    n samples each, the same seed (the same x_T) for every entry.

    η = 1 runs the ancestral ``ddpm_step`` on the respaced chain (β = 1 − ᾱ_t/ᾱ_{t'}, σ² = β̃): the
    member η = 1 of Song et al. 2021's family (eq. 12 and 16 on a sub-sequence, sec. 4.2); η = 0 is
    DDIM. ``mid_eta`` adds one entry at that η and ``mid_steps`` steps (DDIM family in between),
    placed after the pair with the same step count."""
    out = []
    for steps in steps_list:
        for method, eta in (("ddpm", 1.0), ("ddim", 0.0)):
            r = measure_sampler(model, schedule, _eta_name(eta), n, method, steps, seed=seed, clip_x0=clip_x0,
                                progress=progress)
            out.append(StepsResult(**r.__dict__, eta=eta))
    if mid_eta is not None:
        steps = int(mid_steps if mid_steps is not None else steps_list[len(steps_list) // 2])
        r = measure_sampler(model, schedule, _eta_name(mid_eta), n, "ddim", steps, seed=seed, clip_x0=clip_x0,
                            progress=progress, eta=mid_eta)
        at = max((i + 1 for i, x in enumerate(out) if x.steps <= steps), default=len(out))
        out.insert(at, StepsResult(**r.__dict__, eta=float(mid_eta)))
    return out


def _eta_of(r: SamplerResult) -> float:
    """η of a table entry: ``StepsResult.eta``, or 1 for a plain ``ddpm`` result and 0 for ``ddim``."""
    return float(getattr(r, "eta", 1.0 if r.method == "ddpm" else 0.0))


def _steps_to_reach(results: list[SamplerResult], target) -> SamplerResult | None:
    """The entry with the fewest steps that *reaches* the target quality: its FID point estimate lies
    inside (or below) the target's 95 % interval, FID ≤ target.high. ``target``: an ``Interval``
    (a bare number is an interval of width 0). None if no entry does."""
    high = getattr(target, "high", target)
    ok = [r for r in results if r.fid.value <= high]
    return min(ok, key=lambda r: r.steps) if ok else None


def _inside_from(rows: list[SamplerResult], ref) -> int | None:
    """The smallest step count k such that every entry with ≥ k steps has an FID interval that overlaps
    the real-vs-real interval ``ref`` (None if the entry with the most steps does not)."""
    k = None
    for r in sorted(rows, key=lambda r: r.steps, reverse=True):
        if not r.fid.overlaps(ref):
            break
        k = r.steps
    return k


def _split_by_eta(results):
    """(η = 1 entries, η = 0 entries, the others), each sorted by steps."""
    srt = lambda xs: sorted(xs, key=lambda r: r.steps)
    return (srt(r for r in results if _eta_of(r) == 1.0), srt(r for r in results if _eta_of(r) == 0.0),
            srt(r for r in results if _eta_of(r) not in (0.0, 1.0)))


def _wins(e1, e0):
    """Step counts where η = 1 is better (intervals apart), where η = 0 is, and where they overlap."""
    by_steps = {r.steps: r for r in e0}
    pairs = [(p, by_steps[p.steps]) for p in e1 if p.steps in by_steps]
    e1_wins = [p.steps for p, d in pairs if not p.fid.overlaps(d.fid) and p.fid.value < d.fid.value]
    e0_wins = [p.steps for p, d in pairs if not p.fid.overlaps(d.fid) and d.fid.value < p.fid.value]
    ties = [p.steps for p, d in pairs if p.fid.overlaps(d.fid)]
    return pairs, e1_wins, e0_wins, ties


def _fmt(xs) -> str:
    return ", ".join(str(x) for x in xs)


def _pr_sentence(a: SamplerResult, b: SamplerResult) -> str:
    """Which of precision / recall separates η = 0 (a) from η = 1 (b) at the same steps, when the
    report carries intervals for them ('' otherwise)."""
    qa, qb = a.report, b.report
    if "precision_interval" not in qa or "precision_interval" not in qb:
        return ""
    parts, apart = [], []
    for key, what in (("precision", "fidelity"), ("recall", "diversity")):
        ia, ib = qa[f"{key}_interval"], qb[f"{key}_interval"]
        parts.append(f"{key} {ia} against {ib}")
        if not ia.overlaps(ib):
            apart.append((key, what, ia.value < ib.value))
    text = f"At {a.steps} steps η = 0 has {parts[0]} and {parts[1]} (η = 1 second). "
    lost = [f"{what} ({key})" for key, what, lower in apart if lower]
    if lost:
        return text + f"What η = 0 loses is {' and '.join(lost)}; the other interval pair overlaps or favours η = 0. "
    if apart:
        return text + "Where the intervals are apart, η = 0 is the higher one. "
    return text + f"Neither pair is apart at n = {qa['n']}: these two numbers do not say what η = 0 loses. "


def describe_steps_table(results: list[SamplerResult], T: int) -> str:
    """The lesson-05 conclusions, written from the measured table: who wins at equal steps (intervals
    decide), whether the η in between orders as the error-correcting-noise reading predicts, which
    entries the real-vs-real reference cannot tell from data, the speed-up at equal FID ("reaches" =
    the point estimate lies inside the target's 95 % interval) and the full chain."""
    e1, e0, mid = _split_by_eta(results)
    pairs, e1_wins, e0_wins, ties = _wins(e1, e0)
    n = results[0].report["n"]
    ref = results[0].report.get("real_fid")
    text = ["**At equal steps.** "]
    if e1_wins:
        text.append(f"η = 1 (ancestral) has the lower FID at {_fmt(e1_wins)} steps, the intervals apart. ")
        if min(e1_wins) <= 100:
            text.append("On CIFAR10 and CelebA, Song et al. (2021, Table 1) found η = 0 better than η = 1 at 10–100 "
                        "steps; on this model it is the other way round. ")
    if e0_wins:
        text.append(f"η = 0 (DDIM) has the lower FID at {_fmt(e0_wins)} steps: with few large steps the noise η = 1 "
                    "injects is itself large and too few steps are left to remove it, while η = 0 follows the ODE "
                    "without adding any (Song et al. 2021, Table 1, found the same on CIFAR10 and CelebA). ")
    elif e1_wins:
        text.append("η = 0 does not win anywhere in this range of steps on this model. ")
    if ties:
        text.append(f"At {_fmt(ties)} steps the intervals overlap: n = {n} does not separate them. ")
    ratios = [p.seconds / d.seconds for p, d in pairs if d.seconds > 0]
    if ratios:
        text.append(f"At equal steps both make the same number of network calls, and the measured time ratio "
                    f"η = 1 / η = 0 is {min(ratios):.2f}–{max(ratios):.2f}"
                    + (": the step count, not η, sets the cost." if 0.8 <= min(ratios) and max(ratios) <= 1.25 else
                       ": a spread that the equal number of network calls does not explain, so it is the machine's "
                       "load while timing, not η."))

    if e1_wins:
        text.append("\n\n**Why?** ")
        by1, by0 = {r.steps: r for r in e1}, {r.steps: r for r in e0}
        m = next((r for r in mid if r.steps in by1 and r.steps in by0), None)
        karras = ("the fresh noise of each stochastic step, and the denoising after it, corrects errors that "
                  "earlier steps made, which pays off when the network is imperfect, as a small UNet trained for "
                  "minutes is (Karras et al. 2022, sec. 4)")
        if m is None:
            text.append(f"One explanation, a hypothesis that this table does not test: {karras}. ")
        else:
            a, c = by0[m.steps], by1[m.steps]
            lo, hi = sorted((a.fid.value, c.fid.value))
            if lo < m.fid.value < hi and c.fid.value < a.fid.value:
                sep = not m.fid.overlaps(a.fid) or not m.fid.overlaps(c.fid)
                text.append(f"At {m.steps} steps FID falls as η grows: η = 0 {a.fid}, η = {_eta_of(m):g} {m.fid}, "
                            f"η = 1 {c.fid}. More fresh noise per step gives better samples, as this explanation predicts: {karras}"
                            + (". " if sep else "; the middle interval overlaps both ends, so at this n the order "
                               "is suggested, not separated. "))
            else:
                text.append(f"At {m.steps} steps η = {_eta_of(m):g} gives {m.fid}, not between η = 0 {a.fid} and "
                            f"η = 1 {c.fid}: FID does not fall steadily with η here, so the explanation that {karras} "
                            "stays a hypothesis on this model. ")
        text.append("A second factor: both samplers clip x̂_0, and η = 0's result depends on how ε̂ is made "
                    "consistent with the clipped x̂_0 (here it is recomputed from it; lesson 04 measures the choice). ")
        common = [p.steps for p, _ in pairs]
        if common:
            s = max(common)
            text.append(_pr_sentence(by0[s], by1[s]))

    if ref is not None:
        rows = [f"η = {_eta_of(g[0]):g} at {_fmt(r.steps for r in g if r.fid.overlaps(ref))} steps"
                for g in (e1, e0, mid) if any(r.fid.overlaps(ref) for r in g)]
        text.append(f"\n\n**Against real data.** Entries whose interval overlaps the real-vs-real interval {ref} cannot "
                    f"be told from real data at n = {n}: " + ("; ".join(rows) + "." if rows else "none.")
                    + " The reference is not a floor: it is what two real sets of this size give.")

    if e1 and e0:
        best1, best0 = min(e1, key=lambda r: r.fid.value), min(e0, key=lambda r: r.fid.value)
        target = max(best1, best0, key=lambda r: r.fid.value)
        a, b = _steps_to_reach(e1, target.fid), _steps_to_reach(e0, target.fid)
        grid = sorted({r.steps for r in e1} | {r.steps for r in e0})
        text.append(f"\n\n**At equal FID.** The quality to reach is the worse sampler's best entry, "
                    f"{_eta_name(_eta_of(target))} at {target.steps} steps, FID {target.fid}. A sampler *reaches* it at "
                    f"the first step count whose FID lies inside that 95 % interval (≤ {target.fid.high:.1f}): nearby "
                    f"step counts inside it cannot be told apart, so the first one counts, not the minimum. "
                    f"η = 1 reaches it with {a.steps} steps ({a.seconds:.1f} s), η = 0 with {b.steps} steps "
                    f"({b.seconds:.1f} s). ")
        if a.steps == b.steps:
            text.append("Both reach it at the same step count: no speed-up can be resolved on this grid at this n.")
        else:
            fast, slow = (a, b) if a.seconds < b.seconds else (b, a)
            text.append(f"At this quality {'η = 1' if fast is a else 'η = 0 (DDIM)'} is "
                        f"{slow.seconds / fast.seconds:.1f}× faster")
            if fast.steps == grid[0]:
                text.append(f" — at least: it already reaches it at the grid's smallest step count ({grid[0]})")
            steps_ratio = max(grid[i + 1] / grid[i] for i in range(len(grid) - 1)) if len(grid) > 1 else 1.0
            text.append(f". The step grid ({_fmt(grid)}) resolves this ratio only to factors of ≈ {steps_ratio:.1f}.")
            if fast is a:
                text.append(" The speed-up of DDIM over the ancestral sampler is not a property of the sampler alone "
                            "but of the model and of the quality asked for.")

    full = next((r for r in e1 if r.steps == T), None)
    d50 = next((r for r in e0 if r.steps == 50), None)
    if full is not None and d50 is not None:
        text.append(f"\n\n**Against the full chain.** DDIM-50 is {full.seconds / d50.seconds:.1f}× faster than "
                    f"DDPM-{T} at {d50.fid.value / full.fid.value:.2f}× its FID ({d50.fid} vs {full.fid}).")
    elif full is None and results:
        per_step = sorted(r.seconds / r.steps for r in results)[len(results) // 2]
        text.append(f"\n\n**The full chain.** DDPM-{T} (all T steps, η = 1) is not in this preset's table: at the "
                    f"measured {per_step:.2f} s per step for {n} samples (median over the entries) it would take "
                    f"≈ {T * per_step:.0f} s. ")
        k = _inside_from(e1, ref) if ref is not None else None
        if k is not None:
            text.append(f"Strided η = 1 is already inside the real-vs-real interval from {k} steps on, so at n = {n} "
                        f"the full chain could not be measurably better. ")
        else:
            text.append(f"Whether {T} steps would do better is not measured here. ")
        text.append("The `gpu` preset's table includes it.")
    return "".join(text)


def summarize_steps_table(results: list[SamplerResult]) -> str:
    """Lesson 05's summary bullet, from the table: where each η reaches its plateau (the first step
    count whose FID lies inside the 95 % interval of that sampler's best entry), from where it cannot
    be told from real data, and who wins at equal steps."""
    e1, e0, _ = _split_by_eta(results)
    _, e1_wins, e0_wins, ties = _wins(e1, e0)
    n = results[0].report["n"]
    ref = results[0].report.get("real_fid")
    text = []
    for rows, name in ((e1, "η = 1 (ancestral, strided)"), (e0, "η = 0 (DDIM)")):
        if not rows:
            continue
        best = min(rows, key=lambda r: r.fid.value)
        p = _steps_to_reach(rows, best.fid)
        s = f"{name} reaches its plateau at {p.steps} steps ({p.fid})"
        k = _inside_from(rows, ref) if ref is not None else None
        if k is not None:
            s += (f", and from {k} steps on it lies inside the real-vs-real interval {ref}: n = {n} cannot tell it "
                  "from real data")
        elif ref is not None:
            s += f" and stays above the real-vs-real interval {ref}" if best.fid.low > ref.high else ""
        text.append(s + ". ")
    common = len(e1_wins) + len(e0_wins) + len(ties)
    if e1_wins and len(e1_wins) == common:
        text.append("On this model η = 1 wins at every measured step count. What DDIM gives here is determinism, "
                    "interpolation and inversion (§5), not quality per step.")
    elif e0_wins and len(e0_wins) == common:
        text.append("On this model η = 0 wins at every measured step count: fewer steps for the same quality, "
                    "and determinism, interpolation and inversion (§5) on top.")
    elif e0_wins:
        text.append(f"Which η to use depends on the step budget: η = 0 wins at {_fmt(e0_wins)} steps"
                    + (f", η = 1 at {_fmt(e1_wins)}" if e1_wins else "") + " (§4).")
    elif e1_wins:
        text.append(f"η = 1 wins at {_fmt(e1_wins)} steps and n = {n} does not separate them at {_fmt(ties)}. "
                    "What DDIM adds is determinism, interpolation and inversion (§5).")
    else:
        text.append(f"n = {n} separates the two at no measured step count.")
    return "".join(text)


# ----------------------------------------------------------------------------- cost model (bench/gpu_budget.py)
def workload(preset) -> list[tuple]:
    """What lessons 04 and 05 compute at ``preset``'s sizes, counted with ``training_step_flops`` on
    the CPU: rows (lesson, part, training steps, training FLOPs, sampler steps, sampling FLOPs).
    Sampler steps with guidance ≠ 1 cost two network passes (counted)."""
    d = preset.diffusion
    unet = unet_from_config(d)
    img, t2, y2 = torch.rand(2, 1, 28, 28) * 2 - 1, torch.tensor([10, 500]), torch.tensor([1, 2])
    step = training_step_flops(unet, img, t2, y2, batch_size=d.batch_size)
    fwd = training_step_flops(unet, img, t2, y2, batch_size=1, backward=False)
    evals = d.steps // d.eval_every if d.eval_every else 0
    guided = sum(2 if w != 1.0 else 1 for w in d.guidance_values)
    rows = [("04", f"pixel UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M, training + FID evals",
             d.steps, d.steps * step, evals * d.eval_steps, evals * d.eval_steps * d.n_eval * fwd),
            ("04", "Algorithm 2 by hand + library, trajectory (all T steps)", 0, 0.0, 3 * d.T, 3 * d.T * d.n_traj * fwd),
            ("04", "final samples: σ² = β̃, σ² = β, unclipped from T and later", 0, 0.0, 4 * d.final_steps,
             4 * d.final_steps * d.n_fid * fwd),
            *([("04", "final samples: the full unclipped chain (gpu preset only)", 0, 0.0, d.T, d.T * d.n_fid * fwd)]
              if preset.name == "gpu" and d.final_steps < d.T else []),
            ("04", "guidance grid", 0, 0.0, len(d.guidance_values) * d.final_steps,
             guided * d.final_steps * d.n_guidance * fwd)]
    table = sum(d.steps_list) * 2
    widget = sum(d.widget_steps) * len(d.widget_etas)
    rows += [("05", "DDIM loop by hand + library", 0, 0.0, 2 * d.invert_steps, 2 * d.invert_steps * d.n_widget * fwd),
             ("05", "steps table, DDPM and DDIM", 0, 0.0, table, table * d.n_fid_steps * fwd),
             ("05", "steps × η widget", 0, 0.0, widget, widget * d.n_widget * fwd),
             ("05", "determinism, slerp, inversion", 0, 0.0, 8 * d.invert_steps, 8 * d.invert_steps * d.n_widget * fwd)]
    return rows


__all__ = ["make_schedule", "pixel_sampler", "fid_eval_fn", "DDPMRun", "checkpoint_path", "train_or_load_ddpm",
           "SamplerResult", "measure_sampler", "quality_table", "describe_kid", "fid_verdict", "eps_error_gain",
           "respaced_jumps", "describe_variance", "describe_clipping", "training_table", "describe_training",
           "describe_loss_spike", "guidance_table", "describe_guidance", "steps_table", "StepsResult", "describe_steps_table",
           "summarize_steps_table", "workload"]
