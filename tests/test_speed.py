"""Speed modes (tuneavideo/speed.py) on CPU, the tuning generator, attention-kernel names, import direction."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tuneavideo import InputError, TuneConfig, tune
from tuneavideo.speed import SPEED_MODES, resolve_speed_mode, speed_plan

FRAMES = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)


def test_modes_resolve_and_plain_is_the_cpu_default():
    assert SPEED_MODES == ("auto", "plain", "fast", "low-vram")
    assert resolve_speed_mode("auto", "cpu") == "plain"
    assert resolve_speed_mode("auto", "cuda") == "fast"
    assert speed_plan("low-vram", "cpu").gradient_checkpointing is True
    assert not speed_plan("fast", "cpu", compile=True).compile_blocks  # compile only on CUDA
    with pytest.raises(InputError):
        resolve_speed_mode("turbo", "cpu")


def test_low_vram_sampling_matches_plain(tiny_pipe):
    inv = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    outs = {}
    for mode in ("plain", "low-vram"):
        tiny_pipe.set_speed_mode(mode)
        outs[mode] = tiny_pipe("a cat", latents=inv, num_inference_steps=3, output_type="latent").videos
    torch.testing.assert_close(
        outs["low-vram"], outs["plain"], rtol=1e-3, atol=1e-4
    )  # batch size changes fp32 rounding


def test_tune_takes_a_generator_and_leaves_the_global_rng_alone(tiny_pipe):
    base = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    state = torch.random.get_rng_state()
    a = tune(tiny_pipe, FRAMES, "a square", TuneConfig(max_train_steps=3, seed=5))
    assert torch.equal(torch.random.get_rng_state(), state)
    with torch.no_grad():
        for n, p in tiny_pipe.unet.named_parameters():
            p.copy_(base[n])
    b = tune(tiny_pipe, FRAMES, "a square", TuneConfig(max_train_steps=3), generator=torch.Generator().manual_seed(5))
    assert a.losses == b.losses
    assert a.record["speed_mode"] == "plain"


def test_attention_kernel_names(tiny_pipe):
    unet = tiny_pipe.unet
    assert unet.attention_kernel == "sdpa"
    with pytest.warns(DeprecationWarning):
        unet.set_attention_backend("sdpa")
    with pytest.raises(ValueError):
        unet.set_attention_kernel("flash")


def test_imports_run_one_way():
    pkg = Path(__file__).resolve().parent.parent / "tuneavideo"
    for name in ("unet.py", "pipeline.py", "weights.py", "attention.py", "speed.py", "inversion.py"):
        assert not re.search(r"from \.loading|import loading", (pkg / name).read_text()), name
    for name in ("attention.py", "unet.py", "pipeline.py", "inversion.py", "tuning.py", "loading.py", "weights.py"):
        text = (pkg / name).read_text()
        assert "torch.manual_seed" not in text and "_reset_state" not in text, name
