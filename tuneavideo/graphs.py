"""CUDA graphs for the fixed-shape loops: DDIM inversion and sampling (issue 15, the "fast" mode).

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
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput


def graphs_enabled() -> bool:
    """False when the environment says ``TUNEAVIDEO_CUDA_GRAPHS=0`` (a kill switch for odd drivers)."""
    return os.environ.get("TUNEAVIDEO_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    sample: torch.Tensor  # (b, 4, f, h, w) input buffer
    timestep: torch.Tensor  # 0-d or (b,) input buffer, on the GPU
    embeds: torch.Tensor  # (b, n, d) input buffer
    out: torch.Tensor  # (b, 4, f, h, w) output buffer, overwritten by every replay


class GraphedUNet:
    """``unet(sample, t, encoder_hidden_states=...)`` for one loop, replayed from a CUDA graph when it can be."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet
        self._key: tuple | None = None
        self._captured: _Captured | None = None
        self.failed: str | None = None  # why capture was given up (then every call is eager)
        self.replays = 0

    def __call__(
        self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, **extra: Any
    ) -> UNet2DConditionOutput:
        if extra or self.failed or torch.is_grad_enabled() or sample.device.type != "cuda" or not graphs_enabled():
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, **extra)
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        key = (sample.shape, sample.dtype, t.shape, t.dtype, encoder_hidden_states.shape, encoder_hidden_states.dtype)
        if key != self._key:
            return self._capture(key, sample, t, encoder_hidden_states)
        c = self._captured
        c.sample.copy_(sample)
        c.timestep.copy_(t)  # a CPU timestep (inversion's scheduler) is copied in outside the graph
        c.embeds.copy_(encoder_hidden_states)
        c.graph.replay()
        self.replays += 1
        return UNet2DConditionOutput(sample=c.out.clone())  # the next replay overwrites c.out

    def _capture(
        self, key: tuple, sample: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor
    ) -> UNet2DConditionOutput:
        self._key, self._captured = None, None  # a new shape: the old graph and its memory go first
        static = _Captured(torch.cuda.CUDAGraph(), sample.clone(), t.to(sample.device).clone(), embeds.clone(), sample)
        # Eager warm-up on a side stream (lazy library initialisation must not happen while capturing);
        # its output is this step's result, so the warm-up costs nothing.
        side = torch.cuda.Stream(sample.device)
        side.wait_stream(torch.cuda.current_stream(sample.device))
        with torch.cuda.stream(side):
            result = self.unet(static.sample, static.timestep, encoder_hidden_states=static.embeds).sample
        torch.cuda.current_stream(sample.device).wait_stream(side)
        result.record_stream(torch.cuda.current_stream(sample.device))  # used (and freed) on the caller's stream
        try:
            # captured on the stream that was warmed up; "thread_local": the app's other threads (status polls,
            # another session's CPU work) may use CUDA meanwhile without breaking the capture or erroring themselves
            with torch.cuda.graph(static.graph, stream=side, capture_error_mode="thread_local"):
                static.out = self.unet(static.sample, static.timestep, encoder_hidden_states=static.embeds).sample
        except Exception as exc:  # a kernel that cannot be captured here: stay eager for this loop
            self.failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"CUDA graph capture failed, the loop runs eagerly: {self.failed}", stacklevel=3)
            torch.cuda.synchronize(sample.device)
            return UNet2DConditionOutput(sample=result)
        self._key, self._captured = key, static
        return UNet2DConditionOutput(sample=result)


# A graph pays off from its second replay: the first call runs eagerly and the second is captured and replayed.
MIN_GRAPHED_STEPS = 3


def loop_unet(unet: torch.nn.Module, use_graphs: bool, steps: int) -> Any:
    """What a ``steps``-call sampling / inversion loop should call: a :class:`GraphedUNet` when ``use_graphs``
    (and the loop is long enough to replay a graph), else ``unet`` itself."""
    # accelerate's offload hooks move weights inside forward: a replay would skip them (and capture refuses the
    # host copies), so an offloaded UNet stays eager
    offloaded = getattr(unet, "_hf_hook", None) is not None
    graphed = use_graphs and steps >= MIN_GRAPHED_STEPS and not offloaded and graphs_enabled()
    return GraphedUNet(unet) if graphed else unet


__all__ = ["GraphedUNet", "graphs_enabled", "loop_unet"]
