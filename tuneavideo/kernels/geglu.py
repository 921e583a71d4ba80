"""GEGLU's gate, ``x * gelu(gate)`` (exact, erf-based gelu), forward and backward in one pass each.

The feed-forward's inner activation is 4x the block's width (at 64² x 24 frames, 250 MB a tensor). PyTorch
runs the gate as gelu then a multiply (a temporary written and read back), and its backward as four
kernels; here the forward reads ``x`` and ``gate`` once and writes the product, and the backward reads
``grad``, ``x`` and ``gate`` once and writes both gradients. Maths in fp32, results in the input dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import interpreting, on_device, triton_usable
from .precompile import launch

_BLOCK = 2048


def _block() -> int:
    return 1 << 16 if interpreting() else _BLOCK  # the interpreter runs programs one by one: few, large ones


_SQRT_HALF = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _forward_kernel(x_ptr, gate_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    g = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    gelu = 0.5 * g * (1.0 + tl.math.erf(g * _SQRT_HALF))
    tl.store(out_ptr + offs, (x.to(tl.float32) * gelu).to(x.dtype), mask=mask)


@triton.jit
def _backward_kernel(grad_ptr, x_ptr, gate_ptr, grad_x_ptr, grad_gate_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    g = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    cdf = 0.5 * (1.0 + tl.math.erf(g * _SQRT_HALF))
    pdf = tl.exp(-0.5 * g * g) * _INV_SQRT_2PI
    tl.store(grad_x_ptr + offs, (dy * g * cdf).to(x.dtype), mask=mask)
    tl.store(grad_gate_ptr + offs, (dy * x.to(tl.float32) * (cdf + g * pdf)).to(x.dtype), mask=mask)


def gated_gelu_supported(*tensors: torch.Tensor) -> bool:
    """Same shape, dtype, contiguous, and on a device the kernels run on."""
    first = tensors[0]
    return (
        first.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and all(t.shape == first.shape and t.dtype == first.dtype and t.is_contiguous() for t in tensors)
        and triton_usable(*tensors)
    )


def gated_gelu(x: torch.Tensor, gate: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``x * gelu(gate)`` into ``out`` (may be ``x``); no autograd (callers own the backward)."""
    out = torch.empty_like(x) if out is None else out
    n = x.numel()
    block = _block()
    with on_device(x):
        launch(_forward_kernel, (triton.cdiv(n, block),), x, gate, out, n, BLOCK=block)
    return out


def gated_gelu_backward(grad: torch.Tensor, x: torch.Tensor, gate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``x * gelu(gate)`` with respect to ``x`` and ``gate``, given the output's ``grad``."""
    grad_x, grad_gate = torch.empty_like(x), torch.empty_like(gate)
    n = x.numel()
    block = _block()
    with on_device(x):
        launch(_backward_kernel, (triton.cdiv(n, block),), grad, x, gate, grad_x, grad_gate, n, BLOCK=block)
    return grad_x, grad_gate
