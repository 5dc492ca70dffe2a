"""The pixel-space DDPM of lessons 04-05, as one code path: build, train (or load), sample, evaluate.

Lesson 04 trains it and saves ``lessons/checkpoints/ddpm_<preset>.pt``; lesson 05 calls the same
``train_or_load_ddpm(preset)`` and gets the saved model back (or trains it, if lesson 04 was not
run). Images live in [-1, 1] for the network (``to_signed``) and in [0, 1] for the metrics;
many images come from ``diffusion.sample_images(pixel_sampler(...), n)``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import TensorBatches, from_signed, mnist_tensors
from ..diffusion import NoiseSchedule, diffusion_batches_loss, sample, sample_images
from ..metrics import quality_report
from ..nn import training_step_flops
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
    ``diffusion.sample(model, schedule, ..., method, steps, **sample_kwargs)`` (eta, guidance,
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
        return {"fid": q["fid"].value, "fid_low": q["fid"].low, "fid_high": q["fid"].high,
                "real_fid": q["real_fid"].value, "real_fid_low": q["real_fid"].low,
                "real_fid_high": q["real_fid"].high, "is": q["is"],
                "precision": q["precision"], "recall": q["recall"]}
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
                print(f"loaded {path} (trained {extra.get('steps')} steps in {extra.get('train_seconds', 0):.0f} s)")
                return DDPMRun(model, schedule, load_history(blob), cfg, path, True,
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
                    **sample_kwargs) -> SamplerResult:
    """n class-balanced samples from ``pixel_sampler(model, schedule, method, steps, **sample_kwargs)``
    (``sample_images``, timed) and their ``quality_report`` (FID interval, real-vs-real reference …).
    The same seed gives every sampler the same x_T (common random numbers: fairer comparisons)."""
    steps = schedule.T if steps is None else int(steps)
    fn = pixel_sampler(model, schedule, method, steps, progress=progress, **sample_kwargs)
    s = sample_images(fn, n, batch_size=batch_size, seed=seed, progress=progress)
    return SamplerResult(name, method, steps, quality_report(s.images, seed=seed), s.seconds, s.images)


def quality_table(results: list[SamplerResult]) -> str:
    """A Markdown table of ``SamplerResult``s with FID-MNIST [95 % interval], KID, precision,
    recall, IS-MNIST, class shares and seconds, closed by the real-vs-real reference at the same n."""
    head = ("| sampler | steps | n | FID-MNIST [95 %] | KID ×10³ (± std) | precision | recall | IS-MNIST "
            "| classes (%) | seconds |\n|---|---:|---:|---|---|---:|---:|---:|---|---:|\n")
    rows = []
    for r in results:
        q = r.report
        kid = q["kid"]
        rows.append(f"| {r.name} | {r.steps} | {q['n']} | {q['fid']} | {1e3 * kid.value:.2f} ± {1e3 * (kid.high - kid.value):.2f} "
                    f"| {q['precision']:.2f} | {q['recall']:.2f} | {q['is']:.2f} "
                    f"| {100 * q['class_min']:.1f}–{100 * q['class_max']:.1f} | {r.seconds:.1f} |")
    ns = sorted({r.report["n"] for r in results})
    for n in ns:
        q = next(r.report for r in results if r.report["n"] == n)
        rkid = q["real_kid"]
        rows.append(f"| *real vs real* (train vs test) | – | {n} | {q['real_fid']} | {1e3 * rkid.value:.2f} ± "
                    f"{1e3 * (rkid.high - rkid.value):.2f} | {q['real_precision']:.2f} | {q['real_recall']:.2f} "
                    f"| – | – | – |")
    return head + "\n".join(rows)


def fid_verdict(a: SamplerResult, b: SamplerResult) -> str:
    """One sentence comparing two FID intervals: which is lower, or that n does not separate them."""
    fa, fb = a.fid, b.fid
    if fa.overlaps(fb):
        return (f"{a.name} (FID {fa}) and {b.name} (FID {fb}) are not separated at n = {a.report['n']}: "
                f"their intervals overlap")
    lo, hi = (a, b) if fa.value < fb.value else (b, a)
    return f"{lo.name} (FID {lo.fid}) is better than {hi.name} (FID {hi.fid}); the intervals do not overlap"


def describe_clipping(clipped: SamplerResult, unclipped: SamplerResult, late: SamplerResult,
                      alpha_bar_last: float, alpha_bar_late: float, late_t: int) -> str:
    """Lesson 04's clipping conclusion, written from three measured samplers: x̂_0 clipped, not clipped
    from t = T, and not clipped from a later start ``late_t`` (papers' t) where ᾱ = ``alpha_bar_late``."""
    text = [f"Clipping: {fid_verdict(clipped, unclipped)}. "]
    worse = not clipped.fid.overlaps(unclipped.fid) and unclipped.fid.value > clipped.fid.value
    if worse:
        text.append(f"The schedule explains it: at t = T, ᾱ = {alpha_bar_last:.1e}, so x̂_0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ "
                    f"multiplies every error of ε̂ by 1/√ᾱ = {alpha_bar_last ** -0.5:,.0f}; without the clip those first "
                    "steps write that error into the sample, and the remaining steps cannot remove it. ")
    elif unclipped.fid.value < clipped.fid.value and not clipped.fid.overlaps(unclipped.fid):
        text.append("Here the unclipped sampler is the better one: the clip also cuts legitimate x̂_0 guesses, and this "
                    "model's early errors are small enough not to matter. Clipping is a choice, not a rule. ")
    else:
        text.append(f"At this n clipping makes no measurable difference, even though ᾱ = {alpha_bar_last:.1e} at t = T "
                    f"amplifies errors of ε̂ by 1/√ᾱ = {alpha_bar_last ** -0.5:,.0f} in x̂_0: this model's ε̂ is accurate "
                    "enough there. ")
    text.append(f"Without the clip but starting the chain at t = {late_t}, where ᾱ = {alpha_bar_late:.1e} (x_T ~ N(0, I) still "
                f"fits: {100 * alpha_bar_late ** 0.5:.0f} % signal): {fid_verdict(late, clipped)}")
    if worse and (late.fid.overlaps(clipped.fid) or late.fid.value < unclipped.fid.low):
        text.append(" — so the damage is done in the very first steps, where ᾱ ≈ 0.")
    else:
        text.append(".")
    return "".join(text)


def steps_table(model, schedule: NoiseSchedule, steps_list, n: int, seed: int = 0, clip_x0: float | None = 1.0,
                progress: bool = True) -> list[SamplerResult]:
    """Lesson 05's table: strided ancestral DDPM (η = 1: fresh noise every step) and DDIM (η = 0)
    at each number of steps, n samples each, same seed (same x_T) for every entry."""
    out = []
    for steps in steps_list:
        for method, label in (("ddpm", "DDPM (η = 1)"), ("ddim", "DDIM (η = 0)")):
            out.append(measure_sampler(model, schedule, label, n, method, steps, seed=seed, clip_x0=clip_x0,
                                       progress=progress))
    return out


def _steps_to_reach(results: list[SamplerResult], target: float) -> SamplerResult | None:
    """The entry with the fewest steps whose FID point estimate is ≤ target (None if none is)."""
    ok = [r for r in results if r.fid.value <= target]
    return min(ok, key=lambda r: r.steps) if ok else None


def describe_steps_table(results: list[SamplerResult], T: int) -> str:
    """The lesson-05 conclusions, written from the measured table: who wins at equal steps (intervals
    decide), why, where DDIM wins, and the speed-ups at equal steps and at equal FID."""
    ddpm = sorted((r for r in results if r.method == "ddpm"), key=lambda r: r.steps)
    ddim = sorted((r for r in results if r.method == "ddim"), key=lambda r: r.steps)
    by_steps = {r.steps: r for r in ddim}
    pairs = [(p, by_steps[p.steps]) for p in ddpm if p.steps in by_steps]
    ddpm_wins = [p.steps for p, d in pairs if not p.fid.overlaps(d.fid) and p.fid.value < d.fid.value]
    ddim_wins = [p.steps for p, d in pairs if not p.fid.overlaps(d.fid) and d.fid.value < p.fid.value]
    ties = [p.steps for p, d in pairs if p.fid.overlaps(d.fid)]
    fmt = lambda xs: ", ".join(str(x) for x in xs)
    text = ["**At equal steps.** "]
    if ddpm_wins:
        text.append(f"DDPM (η = 1) has the lower FID at {fmt(ddpm_wins)} steps. That is the opposite of the usual "
                    "headline, and it is what this model does: the fresh noise of each ancestral step pulls the sample "
                    "back towards the distribution the network was trained on, so errors of ε̂ made early are partly "
                    "washed out later, while the deterministic DDIM path carries every error to the end (Karras et al. "
                    "2022, sec. 4: stochasticity corrects errors of earlier steps; it pays off when the network is "
                    "imperfect, as a small UNet trained for minutes is). ")
    if ddim_wins:
        text.append(f"DDIM (η = 0) has the lower FID at {fmt(ddim_wins)} steps: with few large steps, the noise "
                    "DDPM injects is itself large and there are too few steps left to remove it, while DDIM's "
                    "deterministic update follows the ODE without adding any. ")
    elif ddpm_wins:
        text.append("DDIM does not win anywhere in this range of steps on this model. ")
    if ties:
        text.append(f"At {fmt(ties)} steps the intervals overlap: n = {results[0].report['n']} does not separate them. ")
    ratios = [p.seconds / d.seconds for p, d in pairs if d.seconds > 0]
    if ratios:
        text.append(f"At equal steps both make the same number of network calls, and the measured time ratio "
                    f"DDPM/DDIM is {min(ratios):.2f}–{max(ratios):.2f}: the step count, not the sampler, sets the cost.")
    best_ddpm, best_ddim = min(ddpm, key=lambda r: r.fid.value), min(ddim, key=lambda r: r.fid.value)
    target = max(best_ddpm.fid.value, best_ddim.fid.value)
    a, b = _steps_to_reach(ddpm, target), _steps_to_reach(ddim, target)
    text.append(f"\n\n**At equal FID.** Take the worse of the two samplers' best FIDs, {target:.1f}, as the quality to "
                f"reach (point estimates): DDPM first reaches it with {a.steps} steps ({a.seconds:.1f} s), DDIM with "
                f"{b.steps} steps ({b.seconds:.1f} s). ")
    if b.seconds < a.seconds:
        text.append(f"At this quality DDIM is {a.seconds / b.seconds:.1f}× faster.")
    else:
        text.append(f"At this quality DDPM is {b.seconds / a.seconds:.1f}× faster — the speed-up of DDIM over "
                    "DDPM is not a property of the sampler alone but of the model and of the quality asked for.")
    full = next((r for r in ddpm if r.steps == T), None)
    d50 = by_steps.get(50)
    if full is not None and d50 is not None:
        text.append(f"\n\n**Against the full chain.** DDIM-50 is {full.seconds / d50.seconds:.1f}× faster than "
                    f"DDPM-{T} at {d50.fid.value / full.fid.value:.2f}× its FID ({d50.fid} vs {full.fid}).")
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
           "SamplerResult", "measure_sampler", "quality_table", "fid_verdict", "describe_clipping", "steps_table",
           "describe_steps_table",
           "workload"]
