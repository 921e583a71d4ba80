"""Compiling a job's Triton kernels ahead, in worker processes (tuneavideo.kernels.precompile).

On the CPU the launches are recorded through Triton's interpreter, whose workers resolve every kernel and
argument but compile nothing; on a CUDA machine the compile itself is checked: a fresh process then finds
every kernel in the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

import tuneavideo.kernels as kernels
from tuneavideo.kernels import precompile
from tuneavideo.kernels.geglu import gated_gelu
from tuneavideo.kernels.group_norm import clip_group_norm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _kernels_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEAVIDEO_TRITON_CPU", "1")


def _group_norm_step(x: torch.Tensor) -> torch.Tensor:
    w = torch.ones(x.shape[1], device=x.device, requires_grad=True)
    y = clip_group_norm(x, 2, 2, w, None, 1e-5, silu=True)
    y.backward(torch.ones_like(y))
    return y


def test_recording_notes_every_launch_and_runs_none():
    x, gate = torch.randn(64, device=DEVICE), torch.randn(64, device=DEVICE)
    out = torch.full_like(x, 7.0)
    with precompile.recording(torch.device(DEVICE)) as specs:
        gated_gelu(x, gate, out=out)
        _group_norm_step(torch.randn(4, 4, 3, 5, device=DEVICE, requires_grad=True))
    assert torch.equal(out, torch.full_like(x, 7.0))  # skipped: the output was never written
    names = {s.kernel for s in specs}
    assert names == {"_forward_kernel", "_plane_moments_kernel", "_pool_kernel", "_apply_kernel",
                     "_backward_sums_kernel", "_backward_apply_kernel"}  # fmt: skip
    geglu = next(s for s in specs if s.kernel == "_forward_kernel")
    assert geglu.module == "tuneavideo.kernels.geglu"
    assert (
        geglu.args[:3] == (precompile.Pointer("float32", True),) * 3 and geglu.args[3] == 16
    )  # 64 as compiled: divisible by 16
    assert all(precompile.LaunchSpec.from_json(json.loads(json.dumps(s.to_json()))) == s for s in specs)
    gated_gelu(x, gate, out=out)  # recording is over: it runs again
    assert not torch.equal(out, torch.full_like(x, 7.0))


def test_recording_leaves_other_devices_alone_and_does_not_nest():
    x, gate = torch.randn(16, device=DEVICE), torch.randn(16, device=DEVICE)
    out = torch.zeros_like(x)
    with precompile.recording(torch.device("meta")) as specs:
        gated_gelu(x, gate, out=out)  # another device's launch runs
        with pytest.raises(RuntimeError, match="already recording"), precompile.recording(torch.device(DEVICE)):
            pass
    assert not specs and out.abs().sum() > 0


def test_not_wanted_on_the_cpu_or_when_switched_off(monkeypatch):
    assert not precompile.wanted(torch.device("cpu"))
    monkeypatch.setenv("TUNEAVIDEO_PRECOMPILE", "0")
    assert not precompile.wanted(torch.device(DEVICE))


def test_the_kernels_are_held_back_while_workers_compile_and_switch_on_after(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))
    with precompile.recording(torch.device(DEVICE)) as specs:
        _group_norm_step(torch.randn(4, 4, 3, 5, device=DEVICE, requires_grad=True))
    # the interpreter's warmup compiles nothing, but the workers still resolve every kernel and argument
    marker = precompile._marker(specs, torch.device(DEVICE)) if DEVICE == "cuda" else tmp_path / "marker"
    before = kernels.generation()
    job = precompile.BackgroundCompile(specs, marker, workers=2)
    assert not kernels.triton_available() and kernels.kernel_module("group_norm") is None  # held back
    job.wait(timeout=300)
    assert job.poll() and kernels.triton_available() and kernels.generation() == before + 1
    assert not job.errors and marker.exists()


def test_a_failed_compile_is_reported_and_the_kernels_still_switch_on(tmp_path):
    bogus = precompile.LaunchSpec("tuneavideo.kernels.geglu", "_no_such_kernel", (1,), ())
    job = precompile.BackgroundCompile({bogus}, tmp_path / "marker", workers=1)
    while not job.poll():
        time.sleep(0.05)
    assert kernels.triton_available()
    assert len(job.errors) == 1 and "_no_such_kernel" in job.errors[0]
    assert not (tmp_path / "marker").exists()  # nothing claims this set is compiled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiles for a GPU")
def test_a_fresh_process_finds_the_precompiled_kernels_in_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "triton"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache))
    device = torch.device("cuda")
    job = precompile.prepare(lambda: _group_norm_step(torch.randn(4, 4, 3, 5, device=device, requires_grad=True)),
                             device, workers=3)  # fmt: skip
    assert job is not None
    job.wait(timeout=300)
    assert not job.errors, job.errors

    def compiled() -> set[Path]:
        return {p.parent for p in cache.rglob("*.cubin")}

    kernels_before = compiled()
    assert len(kernels_before) == 5  # the forward's three and the backward's two
    code = (
        "import torch; from tests.test_kernels_precompile import _group_norm_step as s; "
        "x = torch.randn(4, 8, 3, 5, device='cuda', requires_grad=True); y = s(x); torch.cuda.synchronize(); "
        "print(float(y.abs().sum()))"
    )
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache), "TUNEAVIDEO_TRITON_CPU": "1"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    # nothing new compiled: every launch was a cache hit, though 8 channels (not 4) change the integer arguments
    # (rows 16 -> 32, channels per group 2 -> 4): their divisibility by 16 is all that the compiler sees
    assert compiled() == kernels_before
    # the same set again: already compiled on this machine, so nothing to do
    again = precompile.prepare(lambda: _group_norm_step(torch.randn(4, 4, 3, 5, device=device, requires_grad=True)),
                               device)  # fmt: skip
    assert again is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny model tunes on the CPU: interpreter kernels only")
def test_tuning_compiles_ahead_without_touching_its_random_stream(tiny_pipe, tmp_path, monkeypatch):
    """The dry run records the step's and the sampling passes' launches and draws no random numbers; while the
    workers compile, the kernels are held back, so a short run matches the PyTorch path exactly."""
    from tuneavideo import TuneConfig, tune

    frames = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    base = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    jobs: list[precompile.BackgroundCompile] = []
    background = precompile.BackgroundCompile

    def start(specs, marker, workers=None, device=None):
        jobs.append(background(specs, marker, workers=1))
        return jobs[-1]

    monkeypatch.setattr(precompile, "wanted", lambda device: True)
    monkeypatch.setattr(precompile, "_marker", lambda specs, device: tmp_path / "marker")
    monkeypatch.setattr(precompile, "BackgroundCompile", start)
    ahead = tune(tiny_pipe, frames, "a cat", TuneConfig(max_train_steps=2, seed=1), speed="fast")
    assert len(jobs) == 1 and jobs[0].poll() and not jobs[0].errors and kernels.triton_available()
    with torch.no_grad():
        for n, p in tiny_pipe.unet.named_parameters():
            p.copy_(base[n])
    monkeypatch.setenv("TUNEAVIDEO_TRITON", "0")  # the PyTorch path throughout
    plain = tune(tiny_pipe, frames, "a cat", TuneConfig(max_train_steps=2, seed=1), speed="fast")
    assert ahead.losses == plain.losses


def test_a_cache_it_cannot_write_or_a_cancel_still_switches_the_kernels_on(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # the marker's folder cannot be made under a file: as a read-only cache would fail
    spec = precompile.LaunchSpec("tuneavideo.kernels.geglu", "_forward_kernel",
                                 (precompile.Pointer("float32", True),) * 3 + (16,), (("BLOCK", 16),))  # fmt: skip
    job = precompile.BackgroundCompile({spec}, blocked / "markers" / "m", workers=1)
    job.wait(timeout=300)  # no exception out of the job's loop
    assert kernels.triton_available() and len(job.errors) == 1 and "Error" in job.errors[0]
    slow = precompile.BackgroundCompile({spec}, tmp_path / "marker", workers=1)
    slow.cancel()  # a cancelled tune stops its workers at once
    assert kernels.triton_available() and slow.poll() and slow.errors == ["cancelled"]
    assert all(proc.poll() is not None for proc, _ in slow._procs) and not (tmp_path / "marker").exists()
    slow.wait()  # a no-op once finished
    assert kernels._deferred == 0


def test_workers_see_only_the_jobs_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert precompile._visible_device(torch.device("cuda", 1)) == {"CUDA_VISIBLE_DEVICES": "3"}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert precompile._visible_device(torch.device("cuda", 1)) == {"CUDA_VISIBLE_DEVICES": "1"}
    assert precompile._visible_device(torch.device("cpu")) == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the tiny model tunes on the CPU: interpreter kernels only")
def test_a_failed_dry_run_or_a_cancel_leaves_the_tuning_to_the_kernels_on_first_use(tiny_pipe, monkeypatch, caplog):
    from tuneavideo import TuneConfig, tune
    from tuneavideo.errors import Cancelled

    frames = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    monkeypatch.delenv("TUNEAVIDEO_TRITON_CPU")  # PyTorch's ops for the steps: quicker than the interpreter
    monkeypatch.setattr(precompile, "wanted", lambda device: True)

    def broken(dry_run, device):
        raise torch.cuda.OutOfMemoryError("out of memory in the dry run")

    monkeypatch.setattr(precompile, "prepare", broken)
    delta = tune(tiny_pipe, frames, "a cat", TuneConfig(max_train_steps=2, seed=1), speed="fast")
    assert len(delta.losses) == 2 and "compiling the kernels ahead was skipped" in caplog.text
    jobs = []

    def started(dry_run, device):
        jobs.append(precompile.BackgroundCompile({precompile.LaunchSpec("m", "k", (), ())}, Path("/nonexistent/m")))
        return jobs[-1]

    def cancel(event):
        raise Cancelled("stop")

    monkeypatch.setattr(precompile, "prepare", started)
    with pytest.raises(Cancelled):
        tune(tiny_pipe, frames, "a cat", TuneConfig(max_train_steps=5, seed=1), speed="fast", callback=cancel)
    assert jobs and jobs[0].errors[0] == "cancelled" and kernels.triton_available()
