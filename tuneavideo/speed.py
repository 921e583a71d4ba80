"""Speed modes: how tuning, inversion and sampling use the GPU (issue 15).

One small switch, applied to a pipeline (``pipe.set_speed_mode(mode)``) or to one tuning run
(``tune(..., speed=mode)``):

- ``"plain"``: the reference path, exactly the code the official-parity tests check: eager
  PyTorch, fp16 autocast over fp32 master weights for the tuned parameters, batched CFG.
- ``"fast"``: the same maths, faster. Each ``BasicTransformerBlock``, its temporal attention and
  each ``ResnetBlock2D`` is compiled on its own (regional ``torch.compile``: short compiles, re-used
  by every block of a kind, cached on disk by inductor), and AdamW runs fused. Results match the
  plain path to fp16 noise (fused kernels round in another order), not bit for bit.
- ``"low-vram"``: for 12 GB cards. Gradient checkpointing (mid block included), VAE encode/decode
  one frame at a time, CFG as two half batches; compiled like ``"fast"`` where that is available.
- ``"auto"`` (the default): ``"fast"`` on CUDA, ``"plain"`` on CPU (compiling on CPU costs more than
  it saves for the small models that run there).

The mode is resolved against the pipeline's device when it is used, so ``pipe.to("cuda")`` after
``set_speed_mode("auto")`` still gets the fast path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from torch import nn

from .errors import InputError

SpeedMode = Literal["auto", "plain", "fast", "low-vram"]
SPEED_MODES: tuple[str, ...] = get_args(SpeedMode)
# Below this much GPU memory the app should default to "low-vram" (24 frames at 512² need ~25 GiB fast).
LOW_VRAM_THRESHOLD_GIB = 20.0


@dataclass(frozen=True)
class SpeedPlan:
    """What a resolved speed mode switches on (``mode`` is never ``"auto"`` here)."""

    mode: str
    compile_blocks: bool  # regional torch.compile of transformer, temporal and resnet blocks
    fused_adamw: bool  # torch.optim.AdamW(fused=True)
    gradient_checkpointing: bool | None  # True: forced on; None: as TuneConfig says
    vae_chunk: int  # frames per VAE encode/decode call
    cfg_one_batch: bool  # CFG's uncond and cond in one UNet batch (False: two calls, half the memory)


def resolve_speed_mode(mode: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"fast"`` on CUDA, ``"plain"`` elsewhere; other modes are checked and returned."""
    if mode not in SPEED_MODES:
        raise InputError(f"speed mode must be one of {SPEED_MODES}, got {mode!r}")
    if mode == "auto":
        return "fast" if torch.device(device).type == "cuda" else "plain"
    return mode


def speed_plan(mode: str, device: torch.device | str) -> SpeedPlan:
    """The concrete settings of ``mode`` on ``device``."""
    mode = resolve_speed_mode(mode, device)
    can_compile = torch.device(device).type == "cuda" and compile_available()
    if mode == "plain":
        return SpeedPlan(mode, False, False, None, 8, True)
    if mode == "fast":
        return SpeedPlan(mode, can_compile, True, None, 8, True)
    return SpeedPlan(mode, can_compile, True, True, 1, False)  # low-vram


def recommended_speed_mode(device: torch.device | str | None = None) -> SpeedMode:
    """What an app should pick: ``"low-vram"`` on a GPU under 20 GiB, else ``"auto"``."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        if total < LOW_VRAM_THRESHOLD_GIB:
            return "low-vram"
    return "auto"


def compile_available() -> bool:
    """True when ``torch.compile`` can build GPU kernels here (dynamo supported and Triton installed)."""
    try:
        from torch._dynamo import is_dynamo_supported
        from torch.utils._triton import has_triton

        return bool(is_dynamo_supported() and has_triton())
    except Exception:  # an odd build: stay on the eager path rather than fail
        return False


def _compilable_blocks(unet: nn.Module) -> list[nn.Module]:
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    return [m for m in unet.modules() if isinstance(m, (BasicTransformerBlock, ResnetBlock2D))]


def compile_unet_blocks(unet: nn.Module, backend: str = "inductor") -> None:
    """Regional compile: each transformer / resnet block's ``forward`` and each temporal hook.

    Blocks of one class share one code object, so dynamo compiles a handful of graphs (per shape and
    grad mode, with automatic dynamic shapes after the first change) rather than the whole UNet. The
    compiled ``forward`` is an instance attribute, so :func:`uncompile_unet_blocks` just deletes it.
    """
    if getattr(unet, "_blocks_compiled", None) == backend:
        return
    uncompile_unet_blocks(unet)
    import torch._dynamo

    cfg = torch._dynamo.config
    # Up to ~12 shapes x grad modes per code object over a job (train, invert, CFG; 3 widths): keep them all.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 64))
    if hasattr(cfg, "accumulated_recompile_limit"):
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 1024)
    for block in _compilable_blocks(unet):
        block.forward = torch.compile(block.forward, backend=backend)
    for hook in getattr(unet, "_temporal_hook_fns", []):
        hook.compile(backend)
    unet._blocks_compiled = backend


def uncompile_unet_blocks(unet: nn.Module) -> None:
    """Back to eager blocks (the plain path)."""
    for block in _compilable_blocks(unet):
        block.__dict__.pop("forward", None)
    for hook in getattr(unet, "_temporal_hook_fns", []):
        hook.compile(None)
    unet._blocks_compiled = None


def apply_speed_mode(pipe: Any, mode: str) -> SpeedPlan:
    """Resolve ``mode`` against ``pipe``'s device and set the UNet up for it; returns the plan.

    Idempotent and cheap when nothing changes (compiling itself happens lazily, on the first call).
    """
    plan = speed_plan(mode, pipe._execution_device)
    if plan.compile_blocks:
        compile_unet_blocks(pipe.unet)
    else:
        uncompile_unet_blocks(pipe.unet)
    return plan
