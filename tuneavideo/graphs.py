"""CUDA graphs for the fixed-shape loops: tuning steps, DDIM inversion and sampling (the "fast" mode).

A 50-step loop calls the UNet 50 times with the same shapes. Eagerly, every call launches ~1,000
kernels from Python; at 8 frames the GPU finishes them faster than the CPU can launch them, and at
24 frames the per-step synchronisations (the scheduler reads its timestep on the host) leave the GPU
waiting while the next call's first kernels are launched. A CUDA graph records one call's kernels
and replays them with a single launch.

:class:`GraphedUNet` wraps the UNet for one loop: the first call runs eagerly (its result is the
step's result, and it warms up every library handle), then the same call is captured; later calls
with the same shapes copy their inputs into the graph's buffers and replay it. The graph (and the
activation memory of one forward, in its private pool) is freed with the wrapper at the end of the
loop, so tuning, weight swaps and mode changes between loops can never meet a stale graph.

Calls that do not fit a fixed graph run eagerly: with gradients, extra UNet arguments (control
residuals change every step), on a non-CUDA device, with accelerate's CPU-offload hooks, or after a capture
failed once (a warning says why). ``TUNEAVIDEO_CUDA_GRAPHS=0`` turns graphs off everywhere.

:class:`GraphedTrainStep` does the same for a tuning step (forward, backward, clipping, optimizer) after two
eager steps; ``TUNEAVIDEO_TRAIN_GRAPHS=0`` keeps tuning eager while sampling still replays.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from . import kernels


def _switched_off(name: str) -> bool:
    """True when environment variable ``name`` says 0 / false / no / off (unset means on)."""
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def graphs_enabled() -> bool:
    """False when the environment says ``TUNEAVIDEO_CUDA_GRAPHS=0`` (a kill switch for odd drivers)."""
    return not _switched_off("TUNEAVIDEO_CUDA_GRAPHS")


_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The process's one capture stream on ``device``.

    cuBLAS keeps a workspace for every stream it has run on; a fresh stream for every loop or tuning run left
    one more behind each time (about 60 MB allocated per graphed tune, measured on an H200), which a long-lived
    app would pile up. Loops run one at a time on a device (the engine's lock), so they can share it.
    """
    device = torch.device(device)
    if device.index is None:
        device = torch.device(device.type, torch.cuda.current_device())
    if device not in _STREAMS:
        _STREAMS[device] = torch.cuda.Stream(device)
    return _STREAMS[device]


class _SideStream:
    """Eager warm-up calls and one graph capture, on one side stream (PyTorch's capture recipe): library
    handles, optimizer and scaler state are created by the eager calls, never while capturing."""

    def __init__(self, device: torch.device, error_mode: str = "global", free_cache: bool = False) -> None:
        self.device, self.error_mode, self.free_cache = device, error_mode, free_cache
        self.side = _capture_stream(device)

    def warm(self, fn: Any) -> Any:
        """``fn()`` run eagerly on the side stream; its tensors are then safe to use on the caller's stream."""
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            out = fn()
        current.wait_stream(self.side)
        for tensor in out if isinstance(out, tuple) else (out,):
            if torch.is_tensor(tensor):
                tensor.record_stream(current)  # used (and freed) on the caller's stream
        return out

    def capture(self, fn: Any) -> tuple[Any, Any]:
        """Record ``fn``'s kernels (nothing runs); returns its output tensors and the replay function."""
        if self.free_cache:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()  # the eager steps' cached blocks go back before the graph's own pool fills
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.side, capture_error_mode=self.error_mode):
            out = fn()
        return out, graph.replay  # the bound replay keeps the graph (and its memory pool) alive


def _copy_in_and_replay(replay: Any, buffers: Any, values: Any) -> None:
    """Copy a call's fresh inputs into the captured call's buffers (non-tensors are fixed), then replay it."""
    for buffer, value in zip(buffers, values, strict=True):
        if torch.is_tensor(buffer):
            buffer.copy_(value)  # a CPU value (inversion's timestep) is copied in outside the graph
    replay()


class GraphedUNet:
    """``unet(sample, t, encoder_hidden_states=...)`` for one loop, replayed from a CUDA graph when it can be."""

    def __init__(self, unet: torch.nn.Module, capture: Any = None) -> None:
        self.unet = unet
        self._stream = capture  # a _SideStream, made on the first capture (tests pass another)
        self._key: tuple | None = None
        self._static: tuple | None = None  # the captured call's (sample, timestep, embeds) input buffers
        self._out: torch.Tensor | None = None  # its output buffer, overwritten by every replay
        self._replay: Any = None
        self.failed: str | None = None  # why capture was given up (then every call is eager)
        self.replays = 0

    def __call__(
        self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **extra: Any
    ) -> UNet2DConditionOutput:
        eager = sample.device.type != "cuda" and self._stream is None
        if extra or self.failed or eager or torch.is_grad_enabled() or not graphs_enabled():
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **extra)
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        key = (sample.shape, sample.dtype, t.shape, t.dtype, encoder_hidden_states.shape, encoder_hidden_states.dtype,
               kernels.generation())  # fmt: skip
        if key != self._key:
            return self._capture(key, sample, t, encoder_hidden_states)
        _copy_in_and_replay(self._replay, self._static, (sample, t, encoder_hidden_states))
        self.replays += 1
        return UNet2DConditionOutput(sample=self._out.clone())  # the next replay overwrites the buffer

    def _capture(
        self, key: tuple, sample: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor
    ) -> UNet2DConditionOutput:
        self._key = self._static = self._out = self._replay = None  # a new shape: the old graph and its memory go
        static = (sample.clone(), t.to(sample.device).clone(), embeds.clone())

        def run() -> torch.Tensor:
            return self.unet(static[0], static[1], encoder_hidden_states=static[2]).sample

        if self._stream is None:
            # "thread_local": the app's other threads (status polls, another session's CPU work) may use CUDA
            # meanwhile without breaking the capture or erroring themselves
            self._stream = _SideStream(sample.device, error_mode="thread_local")
        result = self._stream.warm(run)  # this step's result, so the warm-up costs nothing
        try:
            self._out, self._replay = self._stream.capture(run)
        except Exception as exc:  # a kernel that cannot be captured here: stay eager for this loop
            self.failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"CUDA graph capture failed, the loop runs eagerly: {self.failed}", stacklevel=3)
            if sample.device.type == "cuda":
                torch.cuda.synchronize(sample.device)
            return UNet2DConditionOutput(sample=result)
        self._key, self._static = key, static
        return UNet2DConditionOutput(sample=result)


# The first call runs eagerly and is then captured (about one call of CPU time); every later call replays it.
MIN_GRAPHED_STEPS = 3


def loop_unet(unet: torch.nn.Module, use_graphs: bool, steps: int) -> Any:
    """What a ``steps``-call sampling / inversion loop should call: a :class:`GraphedUNet` when ``use_graphs``
    (and the loop is long enough to replay a graph), else ``unet`` itself."""
    # accelerate's offload hooks move weights inside forward: a replay would skip them (and capture refuses the
    # host copies), so an offloaded UNet stays eager
    offloaded = getattr(unet, "_hf_hook", None) is not None
    graphed = use_graphs and steps >= MIN_GRAPHED_STEPS and not offloaded and graphs_enabled()
    return GraphedUNet(unet) if graphed else unet


# ------------------------------------------------------------------------------------------ tuning
def train_graphs_enabled() -> bool:
    """Whether fast-path tuning steps may be replayed from a CUDA graph (on unless ``TUNEAVIDEO_TRAIN_GRAPHS=0``
    or ``TUNEAVIDEO_CUDA_GRAPHS=0``).

    Measured on an H200 in one process against eager steps: 8 frames 0.135-0.161 -> 0.105 s a step, 24 frames
    0.265 -> 0.258 s, losses within 2e-5 (the eager path's own run-to-run spread)."""
    return graphs_enabled() and not _switched_off("TUNEAVIDEO_TRAIN_GRAPHS")  # the kill switch turns these off too


class GraphedTrainStep:
    """A tuning step (forward, backward, clipping, optimizer, master copy) replayed from one CUDA graph.

    Wraps :class:`tuneavideo.tuning._MixedPrecisionStep` (its ``ops`` never synchronise with the host). The
    first ``warmup`` steps run eagerly and create the optimizer and scaler state; the next step is captured
    and then replayed, as is every later one, with its fresh inputs (latents, noise, timesteps) copied into
    the graph's buffers. The fp16 scaler's skips and the step counter stay on the GPU. A capture that
    fails leaves the step's bookkeeping reset and the run eager, with a warning.
    """

    def __init__(self, step: Any, warmup: int = 2, capture: Any = None) -> None:
        self.step, self.warmup = step, warmup
        self._capture = capture  # a _SideStream, made on the first CUDA call (tests pass another)
        self._static: list | None = None  # the captured step's arguments (tensors are its input buffers)
        self._out: Any = None  # the captured step's (loss, skipped) output buffers
        self._replay: Any = None
        self.calls = 0
        self.replays = 0
        self.failed: str | None = None
        self._kernels = kernels.generation()

    @property
    def skipped(self) -> int:
        return self.step.skipped

    def __call__(self, loss_fn: Any, *args: Any) -> float:
        if self.failed:
            return self.step(loss_fn, *args)
        if self._capture is None:
            tensors = [a for a in args if torch.is_tensor(a)]
            if not tensors or tensors[0].device.type != "cuda":
                return self.step(loss_fn, *args)
            # The default "global" error mode, unlike sampling's: the backward runs on autograd's own device
            # threads, and an unsafe call there must fail the capture rather than be left out of the graph.
            self._capture = _SideStream(tensors[0].device, free_cache=True)
        if kernels.generation() != self._kernels:
            # held-back Triton kernels switched on (tuneavideo.kernels.precompile): the graph replays the PyTorch
            # path; warm the kernels up eagerly (their first launch loads them) and capture again
            self._kernels = kernels.generation()
            self._static = self._out = self._replay = None
            self.calls = 0
        self.calls += 1
        if self._replay is None:
            if self.calls <= self.warmup:
                return self.step.finish(*self._capture.warm(lambda: self.step.ops(loss_fn, *args)))
            static = [a.clone() if torch.is_tensor(a) else a for a in args]
            try:
                self._out, self._replay = self._capture.capture(lambda: self.step.ops(loss_fn, *static))
            except Exception as exc:  # something in the step cannot be captured here: tune eagerly
                self.failed = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"CUDA graph capture of the tuning step failed, tuning eagerly: {self.failed}", stacklevel=2
                )
                self.step.reset()
                return self.step(loss_fn, *args)
            self._static = static
        _copy_in_and_replay(self._replay, self._static, args)
        self.replays += 1
        return self.step.finish(*self._out)


__all__ = ["GraphedTrainStep", "GraphedUNet", "graphs_enabled", "loop_unet", "train_graphs_enabled"]
