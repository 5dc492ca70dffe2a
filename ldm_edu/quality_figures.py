"""Figures of sample quality: what the classifier sees in a set of images (class shares), FID along
training with its interval band, and lesson 06's f-study (FID against stage-2 compute per f).

They draw what ``ldm_edu.metrics`` and the lesson recipes measure; like ``ldm_edu.viz``, every
function returns the Figure, closed from pyplot's state.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .viz import _finish


def class_histogram_figure(reports: dict, title: str = "what the classifier sees in decoded samples"):
    """Grouped bars: the share of each digit 0–9 among several image sets, as labelled by the shipped
    classifier. ``reports``: name → a ``analysis.class_coverage`` / ``sampler_report`` dict (``hist``,
    ``effective_classes``) or a (10,) histogram. The legend gives each set's effective number of classes."""
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    n = len(reports)
    width = 0.8 / max(1, n)
    for i, (name, rep) in enumerate(reports.items()):
        hist = rep["hist"] if isinstance(rep, dict) else rep
        hist = hist.detach().cpu().numpy() if torch.is_tensor(hist) else np.asarray(hist, float)
        label = name if not isinstance(rep, dict) else f"{name}: {rep['effective_classes']:.1f} effective classes"
        ax.bar(np.arange(10) + (i - (n - 1) / 2) * width, hist, width=width, label=label, color=f"C{i}")
    ax.axhline(0.1, color="gray", lw=0.8, ls="--", label="all digits equally often (0.1)")
    ax.set_xticks(range(10))
    ax.set_xlabel("digit (classifier's label)"), ax.set_ylabel("share of images")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _finish(fig)


def quality_curves_figure(curves: dict, x: str = "seconds", shade: dict | None = None, hlines: dict | None = None,
                          title: str | None = None, xlabel: str | None = None, ax=None):
    """FID (log scale) with its interval band along training, several runs on one axis.

    ``curves``: name → an object with ``steps``, ``seconds``, ``value``, ``low``, ``high`` (an
    ``experiments.latent_diffusion.Curve``); ``x``: "seconds" or "steps". ``shade``: label → (x0, x1)
    spans drawn behind (e.g. the first stage's training time); ``hlines``: label → (y, low, high) or
    y, horizontal references (e.g. real-vs-real FID with its interval, a first stage's rFID)."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7.2, 4.0))
    for i, (label, (x0, x1)) in enumerate((shade or {}).items()):
        ax.axvspan(x0, x1, color=f"C{i + 1}", alpha=0.12, label=label)
    for i, (name, c) in enumerate(curves.items()):
        xs = np.asarray(c.seconds if x == "seconds" else c.steps, float)
        v, lo, hi = (np.asarray(a, float) for a in (c.value, c.low, c.high))
        ax.fill_between(xs, np.minimum(lo, v), np.maximum(hi, v), color=f"C{i}", alpha=0.2, lw=0)
        ax.plot(xs, v, marker="o", ms=3.5, color=f"C{i}", label=name)
    for j, (label, ref) in enumerate((hlines or {}).items()):
        y, lo, hi = ref if isinstance(ref, (tuple, list)) else (ref, ref, ref)
        ax.axhline(y, color="gray" if j == 0 else f"C{5 + j}", ls="--" if j == 0 else ":", lw=1, label=label)
        if hi > lo:
            ax.axhspan(lo, hi, color="gray", alpha=0.1, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel or ("training wall-clock seconds" if x == "seconds" else "training step"))
    ax.set_ylabel("FID-MNIST (95 % bootstrap band)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if own:
        ax.figure.tight_layout()
    return _finish(ax.figure) if own else ax.figure


def compression_study_figure(results: list, title: str | None = None):
    """The f-study (``experiments.latent_diffusion.compression_study``): left, each first stage's PSNR
    and rFID; right, FID against stage-2 compute per f — every seed (thin) and their mean (thick),
    each f's rFID as a dashed line of the same colour (the floor its samples cannot get under)."""
    fs = sorted({r.f for r in results})
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 2]})
    first = {r.f: r for r in results}
    ax = axes[0]
    ax.bar([f"f={f}" for f in fs], [first[f].psnr for f in fs], color="C2")
    ax.set_ylabel("first-stage PSNR (dB)", color="C2")
    ax2 = ax.twinx()
    ax2.plot([f"f={f}" for f in fs], [first[f].rfid for f in fs], "s--", color="C3")
    ax2.set_ylabel("rFID (reconstructions)", color="C3")
    ax.set_title("first stage", fontsize=10)
    ax = axes[1]
    for i, f in enumerate(fs):
        runs = [r for r in results if r.f == f]
        for r in runs:
            ax.plot(r.gflops, r.fid, color=f"C{i}", alpha=0.35, lw=1)
            ax.fill_between(r.gflops, np.minimum(r.fid_low, r.fid), np.maximum(r.fid_high, r.fid),
                            color=f"C{i}", alpha=0.08, lw=0)
        mean = np.mean([r.fid for r in runs], axis=0)
        ax.plot(runs[0].gflops, mean, "o-", color=f"C{i}", lw=2,
                label=f"LDM-{f} ({'×'.join(map(str, runs[0].latent_shape))}), {runs[0].steps[-1]:,} steps")
        ax.axhline(runs[0].rfid, color=f"C{i}", ls="--", lw=1, label=f"f = {f}: first-stage rFID (floor)")
    ax.set_yscale("log")
    ax.set_xlabel("stage-2 training compute (GFLOP, equal for every f at the end)")
    ax.set_ylabel("FID-MNIST")
    ax.set_title(title or "second stage: FID vs compute (thin: seeds; dashed: rFID floor)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig)
