"""One training loop for every model of the course, plus seeding and checkpoints.

``fit(model, loss_fn, batches, steps)`` runs Adam on ``loss_fn(model, batch)`` (a scalar loss, or
``(loss, {"name": value, ...})``), with a tqdm progress bar, an optional live loss plot in
notebooks, a NaN/Inf guard, clean Ctrl-C / "stop kernel" handling (the model and the history so
far are kept), bf16 autocast and ``torch.compile`` on CUDA when asked, an optional EMA of the
weights, and optional periodic evaluation and checkpoints.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from . import pretrained
from .progress import progress_bar


# ----------------------------------------------------------------------------- seeding
def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- history
@dataclass
class History:
    """What happened during training: the loss (and any metric) every ``log_every`` steps."""

    steps: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)      # name -> list aligned with steps
    evals: dict = field(default_factory=dict)        # name -> list of (step, value)
    seconds: float = 0.0                             # wall-clock time in fit(), evaluations included
    eval_seconds: float = 0.0                        # of which spent in evaluations
    interrupted: bool = False
    stop_reason: str | None = None
    replayed: bool = False                           # loaded with shipped weights (pretrained mode): the
                                                     # seconds are the recording run's, not this machine's

    @property
    def where(self) -> str:
        """Where its seconds were measured, for a sentence: "here" or "when the shipped weights were made"."""
        return "when the shipped weights were made (pretrained mode)" if self.replayed else "here"

    @property
    def last_step(self) -> int:
        return self.steps[-1] if self.steps else 0

    def log(self, step: int, loss: float, **metrics: float) -> None:
        self.steps.append(int(step))
        self.loss.append(float(loss))
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append(float(v))

    def log_eval(self, step: int, **values: float) -> None:
        for k, v in values.items():
            self.evals.setdefault(k, []).append((int(step), float(v)))

    def smoothed(self, name: str = "loss", window: int = 10) -> np.ndarray:
        y = np.asarray(self.loss if name == "loss" else self.metrics[name], dtype=float)
        if len(y) < window or window <= 1:
            return y
        kernel = np.ones(window) / window
        return np.concatenate([y[: window - 1], np.convolve(y, kernel, mode="valid")])

    def to_dict(self) -> dict:
        return {"steps": list(self.steps), "loss": list(self.loss), "metrics": dict(self.metrics),
                "evals": {k: [list(p) for p in v] for k, v in self.evals.items()},
                "seconds": self.seconds, "eval_seconds": self.eval_seconds, "interrupted": self.interrupted, "stop_reason": self.stop_reason,
                "replayed": self.replayed}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        h = cls(steps=list(d["steps"]), loss=list(d["loss"]), metrics=dict(d.get("metrics", {})),
                seconds=float(d.get("seconds", 0.0)), eval_seconds=float(d.get("eval_seconds", 0.0)),
                interrupted=bool(d.get("interrupted", False)),
                stop_reason=d.get("stop_reason"), replayed=bool(d.get("replayed", False)))
        h.evals = {k: [tuple(p) for p in v] for k, v in d.get("evals", {}).items()}
        return h


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or Inf. ``.history`` holds everything logged before it."""

    def __init__(self, message: str, history: History):
        super().__init__(message)
        self.history = history


# ----------------------------------------------------------------------------- EMA of weights
class EMA:
    """Exponential moving average of a model's weights (used for diffusion sampling).

    θ_ema ← decay · θ_ema + (1 − decay) · θ after each step; ``ema.model`` is the averaged copy.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # warm-up (as in timm / diffusers): early averages forget the random initialisation fast
        d = min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


# ----------------------------------------------------------------------------- live plot
def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False


class LiveLossPlot:
    """A loss curve that redraws in place in a notebook (a display handle, no ipympl needed): the
    loss of every step, faint, and from step ``window`` on the trailing mean of the last ``window``
    steps (drawn only where a full window exists, so it does not jump where the averaging starts)."""

    def __init__(self, title: str = "training loss", min_interval: float = 2.0, window: int = 10):
        from IPython.display import display
        import matplotlib.pyplot as plt

        self.fig, self.ax = plt.subplots(figsize=(6, 2.6))
        plt.close(self.fig)                      # we display it ourselves; no duplicate at cell end
        self.title, self.min_interval, self.last, self.window = title, min_interval, 0.0, int(window)
        self.handle = display(self.fig, display_id=True)

    def update(self, history: History, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.min_interval:
            return
        self.last = now
        ax = self.ax
        ax.clear()
        ax.plot(history.steps, history.loss, alpha=0.3, color="C0", label="loss per step")
        w = self.window
        if len(history.loss) >= w:                # a trailing mean of w steps exists from step w on
            ax.plot(history.steps[w - 1:], history.smoothed("loss", w)[w - 1:], color="C0",
                    label=f"mean of the last {w} steps")
            ax.legend(fontsize=8, loc="upper right")
        finite = [v for v in history.loss if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("step"), ax.set_ylabel("loss")
        ax.set_title(self.title)
        self.fig.tight_layout()
        self.handle.update(self.fig)


# ----------------------------------------------------------------------------- the loop
def _as_loss_and_metrics(out):
    if isinstance(out, tuple):
        loss, metrics = out
        return loss, dict(metrics)
    return out, {}


def _synced_time(device: torch.device) -> float:
    """A wall clock that waits for queued CUDA work first, so GPU timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def train_step(model: nn.Module, loss_fn: Callable, batch, optimizer: torch.optim.Optimizer, *,
               grad_clip: float | None = 1.0, ema: EMA | None = None, autocast=None):
    """One optimisation step — the body of ``fit``'s loop. Returns ``(loss, metrics, finite)``.

    When the loss or the gradient is not finite, nothing is updated (``finite`` is False): the
    weights, the optimiser's moments and the EMA stay at the last finite step.
    """
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # 1. forward pass and loss (bf16 autocast on CUDA when fit() asks for it)
    with autocast if autocast is not None else contextlib.nullcontext():
        loss, metrics = _as_loss_and_metrics(loss_fn(model, batch))
    # 2. backward pass
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # 3. gradient norm, clipped to grad_clip (measured only when grad_clip is None)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    # 4. a non-finite loss or gradient must not reach the weights
    if not bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        return loss.detach(), metrics, False
    # 5. Adam(W) update, then the moving average of the weights
    optimizer.step()
    if ema is not None:
        ema.update(model)
    return loss.detach(), metrics, True


def fit(
    model: nn.Module,
    loss_fn: Callable,
    batches: Iterator,
    steps: int,
    *,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    warmup_steps: int = 0,
    cosine_decay: bool = False,
    history: History | None = None,
    log_every: int | None = None,
    live_plot: bool | None = None,
    amp: bool = False,
    compile: bool = False,
    ema: EMA | None = None,
    eval_fn: Callable[[nn.Module], dict] | None = None,
    eval_every: int | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int | None = None,
    desc: str = "training",
    progress: bool = True,
) -> History:
    """Train ``model`` for ``steps`` steps of ``loss_fn(model, next(batches))``; return the History.

    Pass the same ``history`` again to continue a run (steps keep counting). Ctrl-C (or the
    notebook's stop button) ends training cleanly: the model keeps its weights and the history
    is returned with ``interrupted=True``. A NaN/Inf loss or gradient stops training before it
    reaches the weights: the model, EMA and optimiser keep the last finite step, and
    ``TrainingDiverged`` is raised carrying the history up to that step. The loop body is
    ``train_step``. Each evaluation (``eval_fn`` every ``eval_every`` steps) is logged with
    ``seconds``: the training wall-clock time so far, the evaluations' own time left out.
    ``amp`` (bf16 autocast) and ``compile`` (torch.compile) only act on CUDA.
    """
    if steps < 0:
        raise ValueError(f"steps must be ≥ 0, got {steps}")
    history = history if history is not None else History()
    device = next(model.parameters()).device
    on_cuda = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        # fused AdamW on CUDA: one kernel for all parameters instead of several per tensor
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if on_cuda else {}))
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    def lr_factor(i: int) -> float:
        f = min(1.0, (i + 1) / warmup_steps) if warmup_steps else 1.0
        if cosine_decay and steps > 0:
            f *= 0.5 * (1 + math.cos(math.pi * i / steps))
        return f

    show_plot = (_in_notebook() if live_plot is None else live_plot) and steps > 0
    # pretrained mode (ldm_edu.pretrained): this call's shipped weights, EMA and history instead of training
    key = pretrained.run_key(model, desc, steps, batches) \
        if steps > 0 and (pretrained.replaying() or pretrained.record_dir()) else None
    if key is not None and pretrained.replay(key, model, history, ema):
        model.eval()
        print(f"{desc}: shipped weights loaded (pretrained mode): {history.last_step} steps, "
              f"{history.seconds - history.eval_seconds:.0f} s of training when they were made")
        if show_plot and history.steps:
            LiveLossPlot(desc).update(history, force=True)
        if checkpoint_path:
            save_checkpoint(checkpoint_path, model, history=history)
        return history
    step_model = torch.compile(model) if (compile and on_cuda) else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bool(amp and on_cuda))
    log_every = log_every or max(1, steps // 200)
    plot = LiveLossPlot(desc) if show_plot else None
    offset = history.last_step
    run_loss, run_metrics, n_run = 0.0, {}, 0
    diverged, last_good, eval_seconds = None, offset, 0.0
    train_seconds_before = history.seconds - history.eval_seconds
    model.train()
    start = _synced_time(device)
    bar = progress_bar(range(steps), progress, desc=desc, leave=True, file=sys.stdout)
    try:
        for i in bar:
            for g, base in zip(optimizer.param_groups, base_lrs):
                g["lr"] = base * lr_factor(i)
            loss, metrics, finite = train_step(step_model, loss_fn, next(batches), optimizer,
                                               grad_clip=grad_clip, ema=ema, autocast=autocast)
            step = offset + i + 1
            if not finite:
                diverged = (float(loss), step)
                break
            last_good = step
            run_loss = run_loss + loss.float()
            for k, v in metrics.items():
                run_metrics[k] = run_metrics.get(k, 0.0) + (v.detach().float() if torch.is_tensor(v) else v)
            n_run += 1
            if n_run == log_every or i == steps - 1:
                mean_loss = float(run_loss) / n_run
                history.log(step, mean_loss, **{k: float(v) / n_run for k, v in run_metrics.items()})
                run_loss, run_metrics, n_run = 0.0, {}, 0
                bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
                if plot is not None:
                    plot.update(history)
            if eval_fn is not None and eval_every and (step % eval_every == 0 or i == steps - 1):
                # `seconds`: training wall-clock time so far, the evaluations' own time left out
                t_eval = _synced_time(device)
                model.eval()
                values = eval_fn(model)
                model.train()
                history.log_eval(step, seconds=train_seconds_before + t_eval - start - eval_seconds, **values)
                eval_seconds += _synced_time(device) - t_eval
            if checkpoint_path and checkpoint_every and step % checkpoint_every == 0:
                save_checkpoint(checkpoint_path, model, history=history)
    except KeyboardInterrupt:
        history.interrupted = True
        history.stop_reason = f"interrupted at step {history.last_step}"
        print(f"\nTraining interrupted after step {history.last_step}: the model keeps its weights "
              "and the history so far is returned.")
    finally:
        bar.close()
        if n_run:                                   # the steps since the last log point
            history.log(last_good, float(run_loss) / n_run,
                        **{k: float(v) / n_run for k, v in run_metrics.items()})
        history.seconds += _synced_time(device) - start
        history.eval_seconds += eval_seconds
        model.eval()
        if plot is not None and history.steps:
            plot.update(history, force=True)
    if checkpoint_path:
        save_checkpoint(checkpoint_path, model, history=history)
    if key is not None and diverged is None and not history.interrupted:
        pretrained.record(key, model, history, ema)
    if diverged is not None:
        loss_value, step = diverged
        history.stop_reason = f"loss or gradient became non-finite at step {step} (loss {loss_value})"
        raise TrainingDiverged(
            f"training stopped at step {step}: the loss or its gradient became non-finite (loss {loss_value}). "
            f"The model, its EMA and the optimiser keep the state of step {step - 1}, the last finite one, "
            "and the history up to there is in .history. Lower the learning rate (lr=...), keep gradient "
            "clipping on (grad_clip=1.0), or check the inputs for NaN, then call fit again with "
            "history=err.history to continue.", history)
    return history


# ----------------------------------------------------------------------------- checkpoints
class CheckpointMismatch(ValueError):
    """A checkpoint belongs to another model (kind, configuration or tensor shapes differ)."""


def model_config(model: nn.Module) -> dict:
    """The constructor arguments a model recorded as ``model.config`` (plain types only)."""
    return dict(getattr(model, "config", {}) or {})


def save_checkpoint(path: str | Path, model: nn.Module, history: History | None = None,
                    extra: dict | None = None) -> Path:
    """Save weights + kind + config (+ history) as a plain dict, loadable with weights_only=True."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"kind": type(model).__name__, "config": model_config(model),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "history": history.to_dict() if history is not None else None,
            "extra": extra or {}}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)                 # atomic: an interrupted save never leaves half a file
    return path


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> dict:
    """Load a checkpoint (``weights_only=True``); with ``model``, check it matches and load into it.

    Raises FileNotFoundError for a missing file and CheckpointMismatch, saying what differs, when
    the checkpoint was saved from another kind of model or another configuration.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files, ...
        raise CheckpointMismatch(f"{path} is not a readable ldm_edu checkpoint ({e}); delete it and train again") from e
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise CheckpointMismatch(f"{path} is not an ldm_edu checkpoint (no 'state_dict')")
    if model is not None:
        kind = type(model).__name__
        if blob.get("kind") != kind:
            raise CheckpointMismatch(f"{path} holds a {blob.get('kind')}, not a {kind}: "
                                     f"build a {blob.get('kind')} to load it, or train a new {kind}")
        want, have = model_config(model), blob.get("config", {})
        diff = {k: (have.get(k), want.get(k)) for k in set(want) | set(have) if have.get(k) != want.get(k)}
        if diff:
            lines = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
            raise CheckpointMismatch(f"{path} was saved from a {kind} with another configuration ({lines})")
        state = model.state_dict()
        bad = [f"{k}: {tuple(v.shape)} vs {tuple(state[k].shape)}" for k, v in blob["state_dict"].items()
               if k in state and v.shape != state[k].shape]
        missing = sorted(set(state) - set(blob["state_dict"]))
        unexpected = sorted(set(blob["state_dict"]) - set(state))
        if bad or missing or unexpected:
            raise CheckpointMismatch(f"{path} does not fit this {kind}: shapes {bad[:5]}, "
                                     f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.load_state_dict(blob["state_dict"])
    return blob


def load_history(blob: dict) -> History | None:
    return History.from_dict(blob["history"]) if blob.get("history") else None
