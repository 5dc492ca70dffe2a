import dataclasses

import pytest
import torch

from ldm_edu.presets import NAMES, get_preset


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError) as e:
        get_preset("huge")
    assert all(n in str(e.value) for n in NAMES)


def test_env_override(monkeypatch):
    monkeypatch.setenv("LDM_EDU_PRESET", "tiny")
    assert get_preset().name == "tiny"
    monkeypatch.setenv("LDM_EDU_PRESET", "nope")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset()


def test_default_follows_device(monkeypatch):
    monkeypatch.delenv("LDM_EDU_PRESET", raising=False)
    assert get_preset().name == ("gpu" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_gpu_preset_without_cuda_says_what_to_do():
    with pytest.raises(ValueError, match="'cpu'"):
        get_preset("gpu")
    assert get_preset("gpu", device="cpu").device == "cpu"


def test_presets_grow_from_tiny_to_gpu():
    tiny, cpu, gpu = (get_preset(n, device="cpu") for n in ("tiny", "cpu", "gpu"))
    assert tiny.ae.steps < cpu.ae.steps <= gpu.ae.steps
    assert tiny.vae.steps < cpu.vae.steps <= gpu.vae.steps
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny.ae.steps = 5


@pytest.mark.parametrize("name", NAMES)
def test_lesson_06_ablation_and_study_line_up_with_the_main_run(name):
    c = get_preset(name, device="cpu").ldm
    # the unscaled run is read against the scaled run's evaluation at the same step
    assert c.unscaled_steps % c.eval_every == 0 and 0 < c.unscaled_steps <= c.steps
    # the f-study reuses §1's first stage for f = c.f, so that f must be in the study with §1's channels
    assert dict(zip(c.study_fs, c.study_latent_ch)).get(c.f) == c.latent_ch
