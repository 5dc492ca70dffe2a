"""Shipped, verified weights: every ``fit()`` of a lesson recorded once, replayed in class.

A lecture cannot wait 10 minutes for a model to train. Run a lesson with ``LDM_EDU_PRETRAINED=1``
(or ``LDM_EDU_PRESET=pretrained``) and every ``fit()`` call in it loads the weights, EMA and
training history that ``python -m ldm_edu.pretrain`` recorded for that very call, instead of
training; everything after it (checks, plots, widgets, metrics) runs as usual on those weights.

How a call is recognised: its *run key* — the progress-bar title ``desc``, the model's kind and
configuration, the number of steps, and the batches' size, seed and data-set size — plus how many
times that key has already been used in the current notebook cell (a sweep over seeds or a run
trained in chunks fits several times with the same key). Re-running a cell finds the same keys.

Files: ``weights/MANIFEST.json`` lists every run with its file and sha256; each file is a plain
dict (``torch.save``, gzip-compressed) loaded with ``weights_only=True`` after its checksum is checked. Tensors ship as float16, and
weight matrices of ≥ 65 536 numbers as int8 rows with a scale each (``pack``); a run trained with an
EMA copy ships that copy only, since every cell after training uses it (``ship``). That keeps the
whole set small; the model card's quality figures are measured on these shipped weights. A file that is missing,
truncated or changed is refused with a message naming it and the command that rebuilds it. A
run with no shipped weights trains as usual, and says so.

Recording (``LDM_EDU_RECORD=<folder>``, set by ``ldm_edu.pretrain``) writes one file per fit call.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from pathlib import Path

import torch
from torch import nn

PRESET = "pretrained"                       # the preset the shipped weights were trained with
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
MANIFEST = "MANIFEST.json"
REBUILD = "python -m ldm_edu.pretrain"      # the command that rebuilds the shipped weights


class PretrainedWeightsError(RuntimeError):
    """A shipped weight file is missing, truncated, changed, or does not fit its model."""


# ----------------------------------------------------------------------------- which mode
def requested() -> bool:
    """``$LDM_EDU_PRETRAINED`` is set to 1 (true, yes): the user asked for pretrained mode."""
    return os.environ.get("LDM_EDU_PRETRAINED", "").strip().lower() in ("1", "true", "yes")


def replaying() -> bool:
    """True when fit() should load shipped weights instead of training (pretrained mode, not recording)."""
    if os.environ.get("LDM_EDU_RECORD"):
        return False
    return requested() or os.environ.get("LDM_EDU_PRESET", "").strip().lower() == PRESET


def record_dir() -> Path | None:
    """Where fit() writes what it trained (``$LDM_EDU_RECORD``), or None."""
    d = os.environ.get("LDM_EDU_RECORD")
    return Path(d) if d else None


def weights_dir() -> Path:
    return Path(os.environ.get("LDM_EDU_WEIGHTS", WEIGHTS_DIR))


# ----------------------------------------------------------------------------- run keys
_uses: dict[str, int] = {}          # run key -> times used in this notebook cell (or process)
_hooked = False


def _reset_uses(*_args) -> None:
    _uses.clear()


def _hook_cells() -> None:
    """Count key uses per notebook cell: re-running a cell must find the same runs again."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except Exception:
        shell = None
    if shell is not None:
        shell.events.register("pre_run_cell", _reset_uses)


def run_key(model: nn.Module, desc: str, steps: int, batches) -> str:
    """The name of one fit() call: what it trains, how long, on which batches, and its use count."""
    _hook_cells()
    config = json.dumps(getattr(model, "config", {}) or {}, sort_keys=True, default=str)
    data = (len(batches.tensors[0]), batches.batch_size, getattr(batches, "seed", None)) \
        if hasattr(batches, "tensors") else None
    base = f"{desc} | {type(model).__name__} {config} | {steps} steps | batches {data}"
    n = _uses.get(base, 0)
    _uses[base] = n + 1
    return f"{base} | #{n}"


def run_desc(key: str) -> str:
    """The ``desc`` a run key starts with (its progress-bar title)."""
    return key.split(" | ")[0]


def run_config(key: str) -> dict:
    """The model configuration a run key holds (the constructor arguments of its model)."""
    return json.loads(key.split(" | ")[1].split(" ", 1)[1])


def _file_name(key: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", run_desc(key)).strip("_")[:40] or "run"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


# ----------------------------------------------------------------------------- storage
def _compact(state: dict) -> dict:
    """Floating tensors stored as float16 where that loses nothing but precision (|x| < 6e4)."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point() and v.dtype == torch.float32 and v.numel() and v.abs().max() < 6e4:
            v = v.half()
        out[k] = v
    return out


QUANTIZE_MIN = 65536          # weight matrices this large ship as int8 with one scale per output row


def pack(state: dict) -> tuple[dict, dict]:
    """For shipping: large weight matrices as int8 rows, w ≈ q · scale with scale = max|w_row| / 127
    (a relative error below 0.4 % of each row's largest weight); everything else unchanged."""
    rest, int8 = {}, {}
    for k, v in state.items():
        if v.is_floating_point() and v.dim() >= 2 and v.numel() >= QUANTIZE_MIN:
            w = v.float().flatten(1)
            scale = w.abs().amax(1).clamp_min(1e-12) / 127
            int8[k] = {"q": torch.round(w / scale[:, None]).to(torch.int8).view(v.shape), "scale": scale}
        else:
            rest[k] = v
    return rest, int8


def unpack(rest: dict, int8: dict | None) -> dict:
    """The inverse of ``pack``: one state dict (int8 rows times their scales)."""
    full = dict(rest)
    for k, d in (int8 or {}).items():
        full[k] = (d["q"].float().flatten(1) * d["scale"][:, None]).view(d["q"].shape)
    return full


def ship(blob: dict) -> dict:
    """A recorded run made ready to ship (a new dict). Its tensors are packed (``pack``). A run trained
    with an EMA copy ships that copy only: every cell after training samples from, evaluates and saves
    the EMA weights, so the raw weights (a second copy as large) are dropped and replay sets the model
    to the EMA weights too."""
    blob = dict(blob)
    if blob["ema"] is not None:
        blob["ema"], blob["ema_int8"] = pack(blob["ema"])
        blob["state_dict"], blob["int8"] = None, None
    else:
        blob["state_dict"], blob["int8"] = pack(blob["state_dict"])
    return blob


def model_state(blob: dict) -> dict:
    """The model's weights in a shipped run: its own, or its EMA copy where only that ships."""
    if blob["state_dict"] is None:
        return unpack(blob["ema"], blob.get("ema_int8"))
    return unpack(blob["state_dict"], blob.get("int8"))


def _restore(model: nn.Module, state: dict, where: str) -> None:
    own = model.state_dict()
    if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
        raise PretrainedWeightsError(
            f"{where} does not fit this {type(model).__name__} (other tensor names or shapes): the shipped "
            f"weights were made for other code; rebuild them with `{REBUILD}`")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def write_shipped(blob: dict, path: Path) -> None:
    """Save a shipped run: ``torch.save`` bytes, gzip-compressed (level 9, no timestamp, so a rebuild of
    the same run gives the same file and sha256). ``gunzip -c FILE > run.pt`` gives a plain checkpoint."""
    buf = io.BytesIO()
    torch.save(blob, buf)
    Path(path).write_bytes(gzip.compress(buf.getvalue(), compresslevel=9, mtime=0))


def read_shipped(data: bytes) -> dict:
    """The inverse of ``write_shipped`` on a file's bytes, loaded with ``weights_only=True``."""
    return torch.load(io.BytesIO(gzip.decompress(data)), map_location="cpu", weights_only=True)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def record(key: str, model: nn.Module, history, ema=None) -> Path | None:
    """In recording mode, save what one fit() call trained under its run key; else do nothing."""
    folder = record_dir()
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    blob = {"key": key, "kind": type(model).__name__, "state_dict": _compact(model.state_dict()),
            "ema": _compact(ema.model.state_dict()) if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else 0,
            "history": history.to_dict(), "lesson": os.environ.get("LDM_EDU_LESSON", "")}
    path = folder / _file_name(key)
    torch.save(blob, path)
    return path


def load_manifest(folder: Path | None = None) -> dict:
    folder = Path(folder or weights_dir())
    path = folder / MANIFEST
    if not path.exists():
        return {"runs": {}}
    return json.loads(path.read_text())


def find(key: str, folder: Path | None = None) -> dict | None:
    """The verified blob shipped for ``key``, or None when no run has that key."""
    folder = Path(folder or weights_dir())
    entry = load_manifest(folder)["runs"].get(key)
    if entry is None:
        return None
    path = folder / entry["file"]
    rebuild = "`" + f"{REBUILD} {entry.get('lesson', '')}".strip() + "`"
    if not path.exists():
        raise PretrainedWeightsError(f"{path} is listed in {folder / MANIFEST} but missing: restore it "
                                     f"(git checkout -- {folder.name}/) or rebuild it with {rebuild}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise PretrainedWeightsError(
            f"{path} does not match its sha256 in {folder / MANIFEST} ({len(data):,} bytes, expected "
            f"{entry.get('bytes', '?')}): the file is truncated or changed. Restore it (git checkout -- "
            f"{folder.name}/) or rebuild it with {rebuild}")
    blob = read_shipped(data)
    if blob.get("key") != key:
        raise PretrainedWeightsError(f"{path} holds the run {blob.get('key')!r}, not {key!r}: rebuild with {rebuild}")
    return blob


def replay(key: str, model: nn.Module, history, ema=None) -> bool:
    """In pretrained mode, load the shipped run ``key`` into model, EMA and history (in place).

    Returns False (and prints why) when nothing is shipped for this call: fit() then trains."""
    if not replaying():
        return False
    blob = find(key)
    if blob is None:
        print(f"no shipped weights for this run ({run_desc(key)}): training it now")
        return False
    where = f"the shipped weights for '{run_desc(key)}'"
    if blob["kind"] != type(model).__name__:
        raise PretrainedWeightsError(f"{where} are a {blob['kind']}, not a {type(model).__name__}: rebuild with `{REBUILD}`")
    _restore(model, model_state(blob), where)
    if ema is not None:
        if blob["ema"] is None:
            raise PretrainedWeightsError(f"{where} have no EMA weights: rebuild with `{REBUILD}`")
        _restore(ema.model, unpack(blob["ema"], blob.get("ema_int8")), where + " (EMA)")
        ema.updates = int(blob["ema_updates"])
    stored = type(history).from_dict(blob["history"])
    for name in vars(stored):                      # in place: a continued history keeps its identity
        setattr(history, name, getattr(stored, name))
    history.replayed = True                        # its seconds are the recording run's (History.where)
    return True


__all__ = ["PRESET", "REBUILD", "PretrainedWeightsError", "requested", "replaying", "record_dir", "run_key",
           "run_desc", "run_config", "record",
           "find", "replay", "load_manifest", "sha256_of", "weights_dir", "pack", "unpack", "ship", "model_state",
           "write_shipped", "read_shipped"]
