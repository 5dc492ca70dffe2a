"""Build the shipped weights: ``python -m ldm_edu.pretrain [LESSON ...]`` (default: every lesson).

Each lesson notebook is executed in the ``pretrained`` preset (lesson models as in ``cpu``, trained
longer; see ``presets._pretrained``) with ``LDM_EDU_RECORD`` set, so every ``fit()`` call in it
saves what it trained (``ldm_edu.pretrained.record``). The files go to ``weights/`` with their
sha256 in ``weights/MANIFEST.json``; the lesson's earlier entries are replaced. The executed
notebooks are kept in ``build/pretrain/`` and ``docs/MODEL_CARD.md`` is written from the manifest.

Run the lessons in course order (later lessons load earlier lessons' checkpoints). A lesson takes
several times its ``cpu`` time on 2 cores; on a GPU machine set ``--device cuda`` for the same
models (the weights are stored on the CPU either way).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from . import pretrained

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
BUILD = ROOT / "build" / "pretrain"
MAX_MB = 40.0


def lesson_paths(names) -> list[Path]:
    """Lesson notebooks named by number or stem (``04``, ``04_ddpm``); all of them when none."""
    every = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return every
    out = []
    for name in names:
        hits = [p for p in every if p.stem == name or p.stem.split("_")[0] == name.zfill(2)]
        if not hits:
            raise SystemExit(f"no lesson {name!r}: choose from {', '.join(p.stem for p in every)}")
        out += hits
    return out


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}"


def execute(path: Path, record: Path, device: str | None) -> tuple[Path, float]:
    """Run one lesson notebook top to bottom in the pretrained preset, recording every fit()."""
    import nbformat
    from nbclient import NotebookClient

    env = {"LDM_EDU_PRESET": pretrained.PRESET, "LDM_EDU_RECORD": str(record), "LDM_EDU_LESSON": path.stem,
           "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    if device:
        env["LDM_EDU_DEVICE"] = device
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)                      # the kernel inherits this process's environment
    os.environ.pop("LDM_EDU_PRETRAINED", None)
    try:
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=None, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - t0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    BUILD.mkdir(parents=True, exist_ok=True)
    out = BUILD / path.name
    nbformat.write(nb, out)
    return out, seconds


def merge(lesson: str, record: Path, folder: Path, seconds: float) -> dict:
    """Replace ``lesson``'s runs in the manifest with those just recorded; drop orphaned files."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = pretrained.load_manifest(folder)
    runs = {k: v for k, v in manifest.get("runs", {}).items() if v.get("lesson") != lesson}
    for f in sorted(record.glob("*.pt")):
        blob = torch.load(f, map_location="cpu", weights_only=True)
        if blob["key"] in runs:                 # trained again by a later lesson: the first one stays
            continue
        blob = pretrained.ship(blob)
        name = f.name + ".gz"
        pretrained.write_shipped(blob, folder / name)
        h, path = blob["history"], folder / name
        runs[blob["key"]] = {
            "file": name, "sha256": pretrained.sha256_of(path), "bytes": path.stat().st_size,
            "lesson": lesson, "desc": pretrained.run_desc(blob["key"]), "kind": blob["kind"],
            "parameters": sum(v.numel() for v in pretrained.model_state(blob).values()),
            "steps": h["steps"][-1] if h["steps"] else 0,
            "train_seconds": round(h["seconds"] - h.get("eval_seconds", 0.0), 1),
            "final_loss": h["loss"][-1] if h["loss"] else None,
            "quality": measure(blob)}
    lessons = dict(manifest.get("lessons", {}))
    lessons[lesson] = {"seconds": round(seconds, 1), "machine": machine(),
                       "date": datetime.date.today().isoformat()}
    manifest = {"preset": pretrained.PRESET, "command": pretrained.REBUILD, "runs": dict(sorted(runs.items())),
                "lessons": dict(sorted(lessons.items()))}
    keep = {v["file"] for v in runs.values()}
    for f in [*folder.glob("*.pt"), *folder.glob("*.pt.gz")]:
        if f.name not in keep:
            f.unlink()
    (folder / pretrained.MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


@torch.no_grad()
def measure(blob: dict) -> str:
    """The quality of one shipped run on MNIST's test set, measured here: PSNR of an autoencoder, −ELBO
    of a VAE, PSNR of a VQ-VAE or of a latent first stage (lessons 06–07: 𝒟(ℰ(x)), images in [0, 1]),
    FID-MNIST [95 %] of the pixel DDPM (20 strided ancestral steps, EMA weights, x̂₀ clipped,
    n = 1 000). Other runs (latent UNets, the token prior) are measured in their lesson: "—"."""
    from .autoencoders import VAE, Autoencoder
    from .data import binarize, from_signed, mnist_tensors
    from .dcae import DCAutoencoder
    from .latent import FirstStage, reconstruction_psnr
    from .movq import MoVQFirstStage
    from .diffusion import NoiseSchedule
    from .metrics import psnr, quality_report
    from .presets import get_preset
    from .sampling import sample_images, sample
    from .unet import UNet
    from .vq import VQVAE, evaluate_vqvae
    from .analysis import evaluate_vae

    cfg = pretrained.run_config(blob["key"])
    kinds = {"Autoencoder": Autoencoder, "VAE": VAE, "VQVAE": VQVAE, "FirstStage": FirstStage,
             "MoVQFirstStage": MoVQFirstStage, "DCAutoencoder": DCAutoencoder, "UNet": UNet}
    kind = blob["kind"]
    pixel_ddpm = kind == "UNet" and cfg.get("in_ch") == 1 and cfg.get("image_size") == 28 and blob["ema"] is not None
    if kind not in kinds or (kind == "UNet" and not pixel_ddpm):
        return "— (measured in the lesson)"
    model = kinds[kind](**cfg)
    # a run with an EMA copy ships only that copy (pretrained.ship): the pixel DDPM is measured on its EMA weights
    model.load_state_dict({k: v.float() for k, v in pretrained.model_state(blob).items()})
    model.eval()
    x, _ = mnist_tensors("test", limit=10000)
    if kind == "Autoencoder":
        return f"test PSNR {psnr(x, model(x)[0].clamp(0, 1)).mean():.1f} dB"
    if kind == "VAE":
        xb = binarize(x, generator=torch.Generator().manual_seed(1234))   # lesson 02's binarised test set
        return f"test −ELBO {evaluate_vae(model, xb)['neg_elbo']:.1f} nats"
    if kind == "VQVAE":
        r = evaluate_vqvae(model, x)
        return f"test PSNR {r['psnr']:.2f} ± {r['psnr_se']:.2f} dB (± s.e.), {r['used']} codes used"
    if kind != "UNet":                                  # a latent first stage of lessons 06–07
        return f"test PSNR {reconstruction_psnr(model, x * 2 - 1):.1f} dB (latent {model.latent_shape})"
    d = get_preset(pretrained.PRESET, device="cpu").diffusion          # the pixel DDPM, from its EMA weights
    schedule = NoiseSchedule(d.T, d.schedule)

    def fn(k, y, generator):
        return from_signed(sample(model, schedule, (k, 1, 28, 28), method="ddpm", steps=20, y=y,
                                  generator=generator, progress=False, clip_x0=1.0)).clamp(0, 1)
    images = sample_images(fn, 1000, seed=0).images
    q = quality_report(images)
    return f"FID-MNIST {q['fid']} (n = 1 000, DDPM 20 steps; real vs real {q['real_fid']})"


def model_card(manifest: dict, folder: Path) -> str:
    """docs/MODEL_CARD.md: how every shipped run was trained, how long, and what it reached."""
    total = sum(v["bytes"] for v in manifest["runs"].values()) / 1e6          # MB = 10⁶ bytes
    lines = ["# Model card: the shipped weights (`weights/`)", "",
             f"Made by `{manifest['command']} LESSON` (written by it; do not edit by hand). Each lesson was run "
             f"top to bottom in the `{manifest['preset']}` preset (`ldm_edu/presets.py`: the `cpu` preset's models, "
             "trained longer) and every `fit()` call saved what it trained. `LDM_EDU_PRETRAINED=1` replays them: "
             "each call loads its weights, EMA and history, checked against the sha256 below, instead of training.",
             "", f"{len(manifest['runs'])} runs, {total:.1f} MB in all (budget {MAX_MB:g} MB); float32 tensors "
             "are stored as float16 (each file gzip-compressed), weight matrices of ≥ 65 536 numbers as int8 rows with a scale each, and a run "
             "trained with an EMA copy (the diffusion UNets) ships that copy only, which every later cell uses; "
             "the quality column is measured on these shipped weights.", "",
             "| lesson | recorded on | lesson run time |", "|---|---|---|"]
    for name, info in manifest["lessons"].items():
        lines.append(f"| {name} | {info['machine']}, {info['date']} | {info['seconds']:.0f} s |")
    lines += ["", "| lesson | run (`desc`) | model | numbers stored (parameters + buffers) | steps | training s | final loss | quality (test set) | MB |",
              "|---|---|---|---|---|---|---|---|---|"]
    for v in sorted(manifest["runs"].values(), key=lambda v: (v["lesson"], v["desc"], v["steps"])):
        shown = v.get("quality", "—")
        loss = f"{v['final_loss']:.4g}" if v["final_loss"] is not None else "—"
        lines.append(f"| {v['lesson']} | {v['desc']} | {v['kind']} | {v['parameters']:,} | {v['steps']:,} | "
                     f"{v['train_seconds']:.0f} | {loss} | {shown} | {v['bytes'] / 1e6:.2f} |")
    lines += ["", "Training seconds were measured while other jobs shared the machine: read them as upper bounds. The `cpu` "
              "preset's own figures, for comparison, are in docs/BENCHMARKS.md. "
              "Quality measured in the lessons themselves (FID-MNIST with its interval, −ELBO, PSNR) is printed "
              "by each lesson when run with `LDM_EDU_PRETRAINED=1`; docs/BENCHMARKS.md (\"Pretrained weights\") lists those of "
              "the runs marked \"measured in the lesson\" here.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all, in order)")
    ap.add_argument("--weights", default=str(pretrained.WEIGHTS_DIR), help="output folder (default weights/)")
    ap.add_argument("--device", default=None, help="run the models on this device (e.g. cuda)")
    args = ap.parse_args(argv)
    folder = Path(args.weights)
    for path in lesson_paths(args.lessons):
        record = BUILD / "record" / path.stem
        shutil.rmtree(record, ignore_errors=True)
        print(f"{path.stem}: running in the '{pretrained.PRESET}' preset, recording every fit() …", flush=True)
        executed, seconds = execute(path, record, args.device)
        manifest = merge(path.stem, record, folder, seconds)
        n = sum(v["lesson"] == path.stem for v in manifest["runs"].values())
        print(f"{path.stem}: {seconds:.0f} s, {n} runs recorded; executed notebook {executed}", flush=True)
    manifest = pretrained.load_manifest(folder)
    (ROOT / "docs" / "MODEL_CARD.md").write_text(model_card(manifest, folder))
    total = sum(v["bytes"] for v in manifest["runs"].values()) / 1e6          # MB = 10⁶ bytes
    print(f"weights/: {len(manifest['runs'])} runs, {total:.1f} MB; docs/MODEL_CARD.md written")
    if total > MAX_MB:
        print(f"WARNING: {total:.1f} MB is over the {MAX_MB:g} MB budget for shipped weights", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
