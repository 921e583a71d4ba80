"""Speed modes: how tuning, inversion and sampling use the GPU (issue 15).

One small switch, applied to a pipeline (``pipe.set_speed_mode(mode)``) or to one tuning run
(``tune(..., speed=mode)``):

- ``"plain"``: the reference path, exactly the code the official-parity tests check: eager
  PyTorch, fp16 autocast over fp32 master weights for the tuned parameters, batched CFG.
- ``"fast"``: the same maths, faster from the first step (each measured on its own in
  ``benchmarks/profile_step.py``): SDPA prefers cuDNN attention on CUDA (1.8x faster than flash for
  the 8192-key sparse-causal attention on an H200); the clip-level GroupNorm of the ResNets is computed
  from per-frame statistics (no layout copies, one row per frame and group instead of per clip and
  group); tuning runs the UNet in its own half dtype (no autocast) with fp32 master copies of the
  trained parameters in a fused AdamW; GEGLU's gelu is recomputed in the backward pass instead of kept
  (1.6 GiB less at 24 frames); no whole-activation copies only to change a layout (temporal attention in the
  block's own layout through strided views, the transformers' 1x1 projections as GEMMs on NCHW, GEGLU as two
  GEMMs: 24 frames on an H200, step 0.258 -> 0.233 s, inversion 4.82 -> 4.32 s, edit 9.33 -> 8.36 s);
  Triton kernels where Triton is installed (:mod:`tuneavideo.kernels`: clip GroupNorm + SiLU with the time
  embedding folded in, run by fused ResNet blocks; temporal attention many sequences a program; GEGLU's gate
  in one pass each way: 24 frames, step 0.235 -> 0.199 s, inversion 4.38 -> 3.96 s, edit 8.32 -> 7.55 s;
  compiled once per machine, ahead of a job's first steps, and cached on disk; ``TUNEAVIDEO_TRITON=0`` switches
  them off); channels-last activations where those kernels run (no cuDNN layout conversions: step 0.196 ->
  0.187 s, inversion 3.90 -> 3.67 s, edit 7.50 -> 7.14 s);
  tuning steps and inversion / sampling steps replay from CUDA graphs
  (:mod:`tuneavideo.graphs`: one launch instead of ~1,000). (cuDNN's benchmark mode was measured and left off: no gain per
  step, ~28 s of autotuning in a fresh process's first job.) Results match the plain path to fp16 noise (other kernels round in another order).
- ``"low-vram"``: for 12 GB cards (24 frames at 512² tune in 6.80 GiB at 0.273 s a step on an H200). ``"fast"``
  plus gradient checkpointing (mid block included; each ``Transformer2DModel`` one checkpoint, not each block
  inside it), the feed-forwards recomputed inside the checkpointed blocks, the VAE and text encoder on the CPU
  while tuning, VAE encode/decode one frame at a time and CFG as two half batches (half the sampling
  activations). Its tuning steps replay from a CUDA graph too; its sampling loops stay eager.
- ``"auto"`` (the default): ``"fast"`` on CUDA, ``"plain"`` on CPU.

``compile=True`` adds regional ``torch.compile`` (each ``BasicTransformerBlock``, temporal attention
and ``ResnetBlock2D`` on its own) to ``"fast"`` / ``"low-vram"``. It is off by default because its
cold compile is minutes long: on an H200 at 24 frames, 182 s for the tuning shapes alone, for a step of
0.212 s against the eager fast path's 0.234 s (graphed steps added nothing on top of it, so compiled runs
stay ungraphed): worth it only in a long-lived process that runs many jobs.

The mode is resolved against the pipeline's device when it is used, so ``pipe.to("cuda")`` after
``set_speed_mode("auto")`` still gets the fast path.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError
from .kernels import channels_last_memory, kernels_run_on

SpeedMode = Literal["auto", "plain", "fast", "low-vram"]
SPEED_MODES: tuple[str, ...] = get_args(SpeedMode)
# Below this much GPU memory the app should default to "low-vram" (24 frames at 512² need ~25 GiB fast).
LOW_VRAM_THRESHOLD_GIB = 20.0
_CUDNN_FIRST = ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


@dataclass(frozen=True)
class SpeedPlan:
    """What a resolved speed mode switches on (``mode`` is never ``"auto"`` here)."""

    mode: str
    compile_blocks: bool  # regional torch.compile of transformer, temporal and resnet blocks
    fused_adamw: bool  # torch.optim.AdamW(fused=True)
    gradient_checkpointing: bool | None  # True: forced on; None: as TuneConfig says
    vae_chunk: int  # frames per VAE encode/decode call
    cfg_one_batch: bool  # CFG's uncond and cond in one UNet batch (False: two calls, half the memory)
    sdpa_priority: tuple[str, ...] | None = None  # SDPBackend names, most preferred first
    ff_chunk: int | None = None  # feed-forward this many frames at a time (None: all at once; 1 measured 2.5x slower)
    fast_kernels: bool = False  # kernels that only round differently (ClipGroupNorm from per-frame statistics)
    # cuDNN times its convolution algorithms once per shape. Off in every mode: on an H200 it gained nothing per
    # step (0.276 vs 0.278 s) and cost ~28 s of autotuning in a fresh process's first job (benchmarks/worker_start.py).
    cudnn_benchmark: bool = False
    checkpoint_ff: bool = False  # tuning: the feed-forwards recompute inside the checkpointed blocks (low-vram)
    # GEGLU keeps only its projection (as x and gate, two GEMMs on the weight's halves when it is frozen) for the
    # backward pass and recomputes gelu(gate) there. Fast only: 24 frames 25.53 -> 23.91 GiB on an H200 (the one-GEMM
    # version); in low-vram that version's recompute temporary fell on its peak (6.86 -> 7.10 GiB), so it is off there
    lean_geglu: bool = False
    # tuning with checkpointing: each Transformer2DModel (norm, projections, blocks) is one checkpoint, not each
    # inner block, so its norm's and projections' activations are not kept (low-vram)
    checkpoint_transformers: bool = False
    offload_frozen: bool = False  # tuning: the VAE and text encoder wait on the CPU once the clip is encoded
    half_compute: bool = False  # tuning runs the UNet in its own half dtype, fp32 master copies in the optimizer
    cuda_graphs: bool = False  # inversion / sampling loops replay CUDA graphs (tuneavideo.graphs)
    train_graphs: bool = False  # tuning steps replay a CUDA graph (checkpointed ones too: the recompute is captured)
    # NHWC conv weights, so activations stay NHWC from conv_in on: cuDNN converts no layouts, the GroupNorm kernels
    # read and write NHWC, a transformer's tokens are its memory as it is. Only where the Triton kernels run.
    channels_last: bool = False

    @contextmanager
    def attention_context(self) -> Iterator[None]:
        """Within: SDPA tries ``sdpa_priority`` in order (a kernel that can't take a shape passes it on),
        and cuDNN benchmarks its convolution algorithms when ``cudnn_benchmark`` (restored on exit)."""
        with ExitStack() as stack:
            if self.cudnn_benchmark:
                stack.enter_context(_cudnn_benchmark())
            if self.sdpa_priority:
                stack.enter_context(sdpa_priority(self.sdpa_priority))
            yield


def sdpa_priority(names: tuple[str, ...]) -> AbstractContextManager:
    """Within: SDPA tries the ``SDPBackend`` kernels ``names`` in this order (restored on exit)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name) for name in names], set_priority=True)


@contextmanager
def _cudnn_benchmark() -> Iterator[None]:
    # torch.backends.cudnn.flags() would also reset the other cuDNN flags; touch only this one.
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def resolve_speed_mode(mode: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"fast"`` on CUDA, ``"plain"`` elsewhere; other modes are checked and returned."""
    if mode not in SPEED_MODES:
        raise InputError(f"speed mode must be one of {SPEED_MODES}, got {mode!r}")
    if mode == "auto":
        return "fast" if torch.device(device).type == "cuda" else "plain"
    return mode


def speed_plan(mode: str, device: torch.device | str, compile: bool = False) -> SpeedPlan:
    """The concrete settings of ``mode`` on ``device`` (``compile`` only counts on CUDA, with Triton)."""
    mode = resolve_speed_mode(mode, device)
    cuda = torch.device(device).type == "cuda"
    compiled = bool(compile and cuda and compile_available())
    attention = _CUDNN_FIRST if cuda else None
    if mode == "plain":
        return SpeedPlan(mode, False, False, None, 8, True)
    fast = {"fast_kernels": True, "half_compute": cuda, "channels_last": cuda and not compiled}
    if mode == "fast":  # split CFG measured slower; graphs hold one forward's activations: not in low-vram
        graphs = cuda and not compiled  # compiled + graphed tuning steps: 0.2113 / 0.2100 s against 0.2116 s, no gain
        return SpeedPlan(
            mode, compiled, True, None, 8, True, attention, **fast, cuda_graphs=graphs, train_graphs=graphs,
            lean_geglu=True,
        )  # fmt: skip
    # low-vram: sampling stays eager (a sampling graph keeps one forward's activations); a checkpointed tuning step
    # is replayed like the fast one, its recompute included
    low = {
        "checkpoint_ff": True,
        "checkpoint_transformers": True,
        "offload_frozen": cuda,
        "train_graphs": cuda and not compiled,
    }
    return SpeedPlan(mode, compiled, True, True, 1, False, attention, **fast, **low)  # low-vram


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


def persistent_compile_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where Inductor keeps compiled graphs and kernels: ``TORCHINDUCTOR_CACHE_DIR`` when set, else (and set to)
    ``<cache dir>/inductor`` (``cache_dir``, ``TUNEAVIDEO_CACHE_DIR`` or ``~/.cache/tuneavideo``).

    Inductor's own default is under ``/tmp``, which a restarted container (a Space) loses; beside the tuned
    weights (``/data`` with persistent storage) a restarted app finds the compiles of its previous life.
    """
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    folder = _cache_root(cache_dir) / "inductor"
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # read by Inductor whenever it compiles
    return folder


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is None:
        home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache_dir = os.environ.get("TUNEAVIDEO_CACHE_DIR") or str(Path(home) / "tuneavideo")
    return Path(cache_dir)


def persistent_kernel_cache(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where Triton keeps the compiled fast-path kernels (:mod:`tuneavideo.kernels`): ``TRITON_CACHE_DIR`` when
    set, else (and set to) ``<cache dir>/triton`` beside the Inductor cache, so a restarted container with
    persistent storage does not compile them again (:mod:`tuneavideo.kernels.precompile`)."""
    if os.environ.get("TRITON_CACHE_DIR"):
        return Path(os.environ["TRITON_CACHE_DIR"])
    folder = _cache_root(cache_dir) / "triton"
    os.environ["TRITON_CACHE_DIR"] = str(folder)  # read by Triton whenever it compiles or looks a kernel up
    return folder


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


def apply_speed_mode(pipe: Any, mode: str, compile: bool = False) -> SpeedPlan:
    """Resolve ``mode`` against ``pipe``'s device and set the UNet up for it; returns the plan.

    Idempotent and cheap when nothing changes (compiling itself happens lazily, on the first call).
    """
    plan = speed_plan(mode, pipe._execution_device, compile)
    unet = pipe.unet
    if plan.fast_kernels and torch.device(pipe._execution_device).type == "cuda":
        persistent_kernel_cache()
    if plan.compile_blocks:
        persistent_compile_cache()
        compile_unet_blocks(unet)
    else:
        uncompile_unet_blocks(unet)
    unet.speed_plan = plan  # read by TuneAVideoUNet.forward for the attention kernels
    unet.frame_context.fast_kernels = plan.fast_kernels
    # NHWC activations need the GroupNorm kernels (PyTorch's GroupNorm would copy them back to NCHW); a compile in
    # flight holding them back does not count: it ends within the job
    _set_conv_layout(unet, plan.channels_last and kernels_run_on(pipe._execution_device))
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from .fused_blocks import set_fused_resnet

    for block in unet.modules():
        if isinstance(block, ResnetBlock2D):  # compiled blocks fuse on their own
            set_fused_resnet(block, plan.fast_kernels and not plan.compile_blocks)
        if isinstance(block, Transformer2DModel):
            _set_token_projections(block, plan.fast_kernels)
        if isinstance(block, BasicTransformerBlock):
            # chunks along dim 0, the (b f) axis: any frame count divides into 1-frame chunks
            block.set_chunk_feed_forward(plan.ff_chunk, 0)
            if plan.checkpoint_ff:
                block.ff.forward = functools.partial(_checkpointed_forward, block.ff)
            else:
                block.ff.__dict__.pop("forward", None)
            _set_lean_geglu(block.ff, plan.lean_geglu)
    return plan


def _set_conv_layout(unet: nn.Module, channels_last: bool) -> None:
    """Conv weights NHWC or NCHW in place (the same Parameters; cuDNN follows the weight's layout)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        for conv in unet.modules():
            if isinstance(conv, nn.Conv2d) and not conv.weight.is_contiguous(memory_format=layout):
                conv.weight.data = conv.weight.data.contiguous(memory_format=layout)


def _set_token_projections(transformer: nn.Module, on: bool) -> None:
    """Fast kernels: a transformer's 1x1-conv ``proj_in`` / ``proj_out`` as matmuls on the NCHW layout."""
    pointwise = all(
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.padding == (0, 0)
        for conv in (getattr(transformer, "proj_in", None), getattr(transformer, "proj_out", None))
    )
    names = ("_operate_on_continuous_inputs", "_get_output_for_continuous_inputs")
    if (
        on
        and pointwise
        and getattr(transformer, "is_input_continuous", False)
        and not transformer.use_linear_projection
    ):
        transformer._operate_on_continuous_inputs = functools.partial(_tokens_in, transformer)
        transformer._get_output_for_continuous_inputs = functools.partial(_tokens_out, transformer)
    else:
        for name in names:
            transformer.__dict__.pop(name, None)


def _tokens_in(transformer: nn.Module, hidden_states: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``norm -> proj_in (1x1 conv) -> (n, h·w, c)`` tokens, without the layout copies.

    diffusers runs the 1x1 conv on NCHW (cuDNN converts to NHWC and back) and then copies the result into
    token order. A 1x1 conv is a matmul per frame, and the token matrix is the NCHW matrix transposed,
    which cuBLAS reads as it is: one GEMM writes the tokens. Only rounding differs.
    """
    conv = transformer.proj_in
    if channels_last_memory(hidden_states):  # NHWC activations: the token matrix is their memory as it is
        x = _frame_group_norm(transformer.norm, hidden_states)
        n, c, height, width = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(n, height * width, c)  # a view of NHWC memory
        return F.linear(tokens, conv.weight.view(conv.out_channels, c), conv.bias), conv.out_channels
    if not _frozen_plain_input(conv, hidden_states):
        return type(transformer)._operate_on_continuous_inputs(transformer, hidden_states)  # trained: stock path
    x = _frame_group_norm(transformer.norm, hidden_states).contiguous()  # GroupNorm's output is: a no-op
    n, c, height, width = x.shape
    weight = conv.weight.view(conv.out_channels, c)
    return _TokensFromPlanes.apply(x.view(n, c, height * width), weight, conv.bias), conv.out_channels


def _frame_group_norm(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` (per-frame statistics, as the official Transformer3DModel), through the clip GroupNorm kernel
    with one-frame clips where it takes ``x`` (two passes instead of PyTorch's GroupNorm and its backward)."""
    from .kernels import kernel_module

    gn = kernel_module("group_norm") if type(norm) is nn.GroupNorm else None
    if gn is not None and gn.clip_group_norm_supported(x, 1, norm.num_groups, norm.weight):
        return gn.clip_group_norm(x, 1, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return norm(x)


def _tokens_out(
    transformer: nn.Module, hidden_states: torch.Tensor, residual: torch.Tensor, batch_size: int, height: int,
    width: int, inner_dim: int,
) -> torch.Tensor:  # fmt: skip
    """Tokens ``(n, h·w, c) -> proj_out (1x1 conv) + residual`` in NCHW, one GEMM and no layout copies."""
    conv = transformer.proj_out
    if channels_last_memory(residual):  # NHWC: the linear layer writes the result's memory as it is
        out = F.linear(hidden_states, conv.weight.view(conv.out_channels, inner_dim), conv.bias)  # (n, h·w, c)
        return out.view(batch_size, height, width, -1).permute(0, 3, 1, 2) + residual
    if not (_frozen_plain_input(conv, hidden_states) and _frozen_plain_input(conv, residual)):
        stock = type(transformer)._get_output_for_continuous_inputs
        return stock(transformer, hidden_states, residual, batch_size, height, width, inner_dim)
    weight = conv.weight.view(conv.out_channels, inner_dim)
    n, c = residual.shape[:2]
    out = _PlanesFromTokens.apply(hidden_states, weight, conv.bias, residual.view(n, c, height * width))
    return out.view(residual.shape)


def _frozen_plain_input(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether the hand-written forward/backward of ``layer`` (a conv or linear) may take ``x``: frozen weights
    (only the input gets a gradient), one dtype, a contiguous input, no autocast (it would not cast them)."""
    trained = layer.weight.requires_grad or (layer.bias is not None and layer.bias.requires_grad)
    frozen = not (trained and torch.is_grad_enabled())
    same = x.dtype == layer.weight.dtype and x.is_contiguous()
    return frozen and same and not torch.is_autocast_enabled(x.device.type)


class _TokensFromPlanes(torch.autograd.Function):
    """``(n, c, l) -> (n, l, c_out)`` with a frozen ``(c_out, c)`` weight: ``x[i]ᵀ Wᵀ + b``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        n = x.shape[0]
        tokens = torch.bmm(x.transpose(1, 2), weight.t().expand(n, -1, -1))  # (n, l, c_out); no copy of x
        return tokens.add_(bias) if bias is not None else tokens

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # grad: (n, l, c_out)
        (weight,) = ctx.saved_tensors
        n = grad.shape[0]
        return torch.bmm(weight.t().expand(n, -1, -1), grad.transpose(1, 2)), None, None  # (n, c, l)


class _PlanesFromTokens(torch.autograd.Function):
    """``(n, l, c) -> (n, c_out, l)`` with a frozen ``(c_out, c)`` weight: ``residual + b + W tokens[i]ᵀ``."""

    @staticmethod
    def forward(
        ctx: Any, tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(weight)
        n = tokens.shape[0]
        out = residual + bias.view(1, -1, 1) if bias is not None else residual.clone()
        return out.baddbmm_(weight.expand(n, -1, -1), tokens.transpose(1, 2))  # (n, c_out, l)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, torch.Tensor]:  # (n, c_out, l)
        (weight,) = ctx.saved_tensors
        n = grad.shape[0]
        return torch.bmm(grad.transpose(1, 2), weight.expand(n, -1, -1)), None, None, grad  # (n, l, c)


def _set_lean_geglu(ff: nn.Module, on: bool) -> None:
    from diffusers.models.activations import GEGLU

    for act in ff.modules():
        if isinstance(act, GEGLU):
            if on:
                act.forward = functools.partial(_lean_geglu_forward, act)
            else:
                act.__dict__.pop("forward", None)


def _lean_geglu_forward(act: nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """GEGLU (``x * gelu(gate)`` with ``(x | gate) = proj(h)``) keeping only ``x`` and ``gate`` for the backward.

    With a frozen projection (tuning trains no feed-forward), ``x`` and ``gate`` come from two GEMMs on the
    weight's two halves (contiguous views), so the gelu and the product run as vectorized kernels on
    contiguous tensors instead of strided ones, and the backward needs no concatenation.
    """
    proj = act.proj
    if not _frozen_plain_input(proj, hidden_states):
        return _GatedGelu.apply(proj(hidden_states))
    half = proj.out_features // 2
    weight, bias = proj.weight, proj.bias
    bias_x, bias_gate = (None, None) if bias is None else (bias[:half], bias[half:])
    return _SplitGatedGelu.apply(hidden_states, weight[:half], bias_x, weight[half:], bias_gate)


class _SplitGatedGelu(torch.autograd.Function):
    """``x * gelu(gate)`` with ``x = h Wxᵀ + bx``, ``gate = h Wgᵀ + bg`` and frozen weights; gelu recomputed."""

    @staticmethod
    def forward(
        ctx: Any, h: torch.Tensor, weight_x: torch.Tensor, bias_x: torch.Tensor | None, weight_gate: torch.Tensor,
        bias_gate: torch.Tensor | None,
    ) -> torch.Tensor:  # fmt: skip
        x, gate = F.linear(h, weight_x, bias_x), F.linear(h, weight_gate, bias_gate)
        fused = _fused_gate(x, gate)  # the Triton kernels: one pass each way
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, gate, weight_x, weight_gate)
            return fused.gated_gelu(x, gate) if fused else x * F.gelu(gate)
        return fused.gated_gelu(x, gate, out=x) if fused else x.mul_(F.gelu(gate))  # nothing kept: reuse x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, gate, weight_x, weight_gate = ctx.saved_tensors
        fused = _fused_gate(grad, x, gate)
        if fused:
            grad_x, grad_gate = (g.flatten(0, -2) for g in fused.gated_gelu_backward(grad, x, gate))
        else:
            grad_x = (grad * F.gelu(gate)).flatten(0, -2)
            grad_gate = torch.ops.aten.gelu_backward(grad * x, gate).flatten(0, -2)
        grad_h = torch.mm(grad_x, weight_x).addmm_(grad_gate, weight_gate)  # (tokens, c)
        return grad_h.view(*grad.shape[:-1], -1), None, None, None, None


def _fused_gate(*tensors: torch.Tensor) -> Any:
    """The GEGLU gate kernels' module when they take ``tensors``, else None (PyTorch ops)."""
    from .kernels import kernel_module

    geglu = kernel_module("geglu")
    return geglu if geglu is not None and geglu.gated_gelu_supported(*tensors) else None


class _GatedGelu(torch.autograd.Function):
    """``x * gelu(gate)`` for ``(x | gate)``, the last axis split in two halves.

    Autograd's own graph keeps ``gelu(gate)`` besides the projection (half as big again). Here the backward
    recomputes it (one elementwise pass, the same bits), so the gradients are exactly those of ``diffusers``'
    GEGLU: the fast 24-frame tuning step's peak went 25.53 -> 23.91 GiB on an H200, its time within noise.
    """

    @staticmethod
    def forward(ctx: Any, proj: torch.Tensor) -> torch.Tensor:
        x, gate = proj.chunk(2, dim=-1)
        ctx.save_for_backward(proj)
        return x * F.gelu(gate)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (proj,) = ctx.saved_tensors
        x, gate = proj.chunk(2, dim=-1)
        grad_x = grad * F.gelu(gate)
        grad_gate = torch.ops.aten.gelu_backward(grad * x, gate)
        return torch.cat([grad_x, grad_gate], dim=-1)


def _checkpointed_forward(module: nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``module``'s own forward, recomputed in the backward pass instead of keeping its activations.

    For the feed-forward (GEGLU: 8x the block's width) this keeps only its input: at 24 frames x 64²
    that is ~1 GB less at the peak of a checkpointed block's recompute, for one more feed-forward pass.
    """
    forward = type(module).forward
    if torch.is_grad_enabled() and hidden_states.requires_grad:
        from torch.utils.checkpoint import checkpoint

        # RNG states are saved only for a live dropout (SD's is p=0): a CUDA graph capture cannot read them
        random = any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())
        return checkpoint(forward, module, hidden_states, *args, use_reentrant=False, preserve_rng_state=random,
                          **kwargs)  # fmt: skip
    return forward(module, hidden_states, *args, **kwargs)
