"""Clip-level GroupNorm (+ SiLU, + a per-channel offset) in two passes forward and two backward.

The ResNets of the inflated UNet normalise each group over all frames of a clip (official
``ResnetBlock3D``), then apply SiLU; the second norm also gets the time embedding added first. In
PyTorch that is a chain of memory-bound kernels: mean, variance, a multiply-add, SiLU, an add for the
embedding, and autograd's backward of each (about 18 passes over the activation per norm, and SiLU keeps
the normalised tensor alive for its backward). Here:

- forward: one kernel reads each ``(frame, channel)`` plane once for its moments (mean and M2 about a
  shift, so no catastrophic cancellation), one tiny kernel pools them per (clip, group) exactly (Chan's
  formula over equal counts) into a per-plane scale and shift, and one kernel writes
  ``silu(x * scale + shift)``. Only the input is kept for the backward.
- backward: one kernel recomputes the activation from the input and reduces the four per-plane sums that
  GroupNorm's gradient needs, one kernel writes the input gradient.

Layout: ``x`` is ``(n, c, h, w)`` with ``n = clips * frames``, NCHW or NHWC (channels-last) memory; a "plane"
(a row below) is one frame's channel: ``h * w`` contiguous values in NCHW, ``c`` apart in NHWC, where a program
takes 32 neighbouring channels so that its loads stay contiguous. With ``num_frames=1`` this is an ordinary
GroupNorm.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from . import channels_last_memory, interpreting, on_device, triton_usable
from .precompile import launch

# Row-block tiles: R planes x BHW values, about 4096 values a program (fp32 in registers).
_TILE = 4096
_INTERPRETER_TILE = 1 << 16
_MAX_PLANE_BLOCK = 256
_CHANNEL_BLOCK = 32  # NHWC: channels a program (64 contiguous bytes of fp16 per pixel)
_MAX_FRAMES = 64  # the pooling kernel holds frames x channels-per-group partials in one tile
_MAX_GROUP_CHANNELS = 256


def _tile(hw: int, c: int, channels_last: bool) -> tuple[int, int]:
    # R planes x BHW values a program. NCHW: one BHW for all planes of >= 256 values (64², 32², 16² latents at
    # 512²): each distinct tile is a compile of its own in a fresh process (~0.3 s), the speed is the same within
    # noise. NHWC: R channels side by side (the contiguous axis) of one frame. The interpreter (tests) runs
    # programs one by one in Python, so there one takes as much as it can.
    budget = _INTERPRETER_TILE if interpreting() else _TILE
    if channels_last:
        r = min(triton.next_power_of_2(c), _CHANNEL_BLOCK if not interpreting() else budget)
        return r, min(triton.next_power_of_2(hw), max(1, budget // r))
    bhw = min(triton.next_power_of_2(hw), _MAX_PLANE_BLOCK)
    return max(1, budget // bhw), bhw


def _tiling(x: torch.Tensor) -> tuple[bool, int, int, int]:
    """``(channels_last, R, BHW, programs)`` of the per-plane kernels over ``x`` (n, c, h, w)."""
    n, c, h, w = x.shape
    cl = channels_last_memory(x)
    r_block, bhw = _tile(h * w, c, cl)
    return cl, r_block, bhw, n * triton.cdiv(c, r_block) if cl else triton.cdiv(n * c, r_block)


def _pairs_per_program(n_groups: int, tile: int) -> int:
    # one (clip, group) a program on a GPU (n_groups programs run side by side); all of them in the interpreter
    return triton.next_power_of_2(n_groups) if interpreting() and n_groups * tile <= _INTERPRETER_TILE else 1


@triton.jit
def _planes(pid, rows, C, HW, CL: tl.constexpr, R: tl.constexpr):
    # The R planes (frame, channel) of program ``pid``: their indices n * C + c, a mask, and the offset of each
    # one's first value. NCHW: R consecutive planes. NHWC: R consecutive channels of one frame.
    if CL:
        blocks = tl.cdiv(C, R)
        n = pid // blocks
        c = (pid % blocks) * R + tl.arange(0, R)
        return n * C + c, c < C, n.to(tl.int64) * C * HW + c
    r = pid * R + tl.arange(0, R)
    return r, r < rows, r.to(tl.int64) * HW


@triton.jit
def _at(base, p, C, CL: tl.constexpr):
    # (R, P) offsets of positions ``p`` of the planes starting at ``base``: a plane's values are C apart in NHWC
    if CL:
        return base[:, None] + p[None, :] * C
    return base[:, None] + p[None, :]


@triton.jit
def _plane_moments_kernel(
    x_ptr, mean_ptr, m2_ptr, rows, C, HW, CL: tl.constexpr, R: tl.constexpr, BHW: tl.constexpr,
):  # fmt: skip
    # Per plane (frame, channel): mean and sum of squared deviations, accumulated about the first block's mean.
    r, rmask, base = _planes(tl.program_id(0), rows, C, HW, CL, R)  # (R,)
    cols = tl.arange(0, BHW)
    mask = rmask[:, None] & (cols[None, :] < HW)
    x = tl.load(x_ptr + _at(base, cols, C, CL), mask=mask, other=0.0).to(tl.float32)  # (R, BHW)
    shift = tl.sum(x, axis=1) / tl.minimum(HW, BHW)
    # tile-shaped accumulators, reduced once after the loop (a reduction inside the loop crashed Triton 3.6's
    # thread-locality pass for some fp32 tiles)
    d = tl.where(mask, x - shift[:, None], 0.0)
    acc1 = d
    acc2 = d * d
    for start in range(BHW, HW, BHW):
        c = start + cols
        mask = rmask[:, None] & (c[None, :] < HW)
        x = tl.load(x_ptr + _at(base, c, C, CL), mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - shift[:, None], 0.0)
        acc1 += d
        acc2 += d * d
    s1 = tl.sum(acc1, axis=1)
    s2 = tl.sum(acc2, axis=1)
    tl.store(mean_ptr + r, shift + s1 / HW, mask=rmask)
    tl.store(m2_ptr + r, s2 - s1 * s1 / HW, mask=rmask)


@triton.jit
def _pool_kernel(
    mean_ptr, m2_ptr, off_ptr, w_ptr, b_ptr, stats_ptr, F, C, G, CPG, HW, rows, n_groups, eps, inv_values,
    HAS_OFF: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, GB: tl.constexpr, FP: tl.constexpr,
    CP: tl.constexpr,
):  # fmt: skip
    # GB (clip, group) pairs a program: pool each one's frames x channels planes, and write four values per
    # plane: scale, shift (y = x * scale + shift), rstd and xshift (x_hat = x * rstd + xshift).
    pair = tl.program_id(0) * GB + tl.arange(0, GB)  # (GB,)
    clip = pair // G
    group = pair % G
    i = tl.arange(0, FP)
    j = tl.arange(0, CP)
    mask = (pair < n_groups)[:, None, None] & (i < F)[None, :, None] & (j < CPG)[None, None, :]  # (GB, FP, CP)
    channel = group[:, None, None] * CPG + j[None, None, :]
    row = (clip[:, None, None] * F + i[None, :, None]) * C + channel  # plane indices
    mu = tl.load(mean_ptr + row, mask=mask, other=0.0)
    off = tl.zeros((GB, FP, CP), dtype=tl.float32)
    if HAS_OFF:
        off = tl.load(off_ptr + row, mask=mask, other=0.0).to(tl.float32)
    mu = mu + off  # an offset constant over a plane moves its mean only
    count = F * CPG
    mean = tl.sum(tl.sum(mu, axis=2), axis=1) / count  # (GB,)
    dev = tl.where(mask, mu - mean[:, None, None], 0.0)
    m2 = tl.sum(tl.sum(tl.load(m2_ptr + row, mask=mask, other=0.0), axis=2), axis=1)
    m2 += HW * tl.sum(tl.sum(dev * dev, axis=2), axis=1)
    var = tl.maximum(m2 * inv_values, 0.0)  # 1 / (frames * channels * h * w) from the host: no int32 product
    rstd = (1.0 / tl.sqrt(var + eps))[:, None, None] + tl.zeros((GB, FP, CP), dtype=tl.float32)
    w = tl.full((GB, FP, CP), 1.0, tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + channel + 0 * row, mask=mask, other=0.0).to(tl.float32)
    b = tl.zeros((GB, FP, CP), dtype=tl.float32)
    if HAS_B:
        b = tl.load(b_ptr + channel + 0 * row, mask=mask, other=0.0).to(tl.float32)
    xshift = (off - mean[:, None, None]) * rstd
    tl.store(stats_ptr + row, rstd * w, mask=mask)  # scale
    tl.store(stats_ptr + rows + row, xshift * w + b, mask=mask)  # shift
    tl.store(stats_ptr + 2 * rows + row, rstd, mask=mask)
    tl.store(stats_ptr + 3 * rows + row, xshift, mask=mask)


@triton.jit
def _apply_kernel(
    x_ptr, y_ptr, stats_ptr, rows, C, HW, SILU: tl.constexpr, CL: tl.constexpr, R: tl.constexpr,
    BHW: tl.constexpr,
):  # fmt: skip
    r, rmask, base = _planes(tl.program_id(0), rows, C, HW, CL, R)
    c = tl.program_id(1) * BHW + tl.arange(0, BHW)
    mask = rmask[:, None] & (c[None, :] < HW)
    offs = _at(base, c, C, CL)
    scale = tl.load(stats_ptr + r, mask=rmask, other=0.0)
    shift = tl.load(stats_ptr + rows + r, mask=rmask, other=0.0)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    y = x.to(tl.float32) * scale[:, None] + shift[:, None]
    if SILU:
        y = y * tl.sigmoid(y)
    tl.store(y_ptr + offs, y.to(x.dtype), mask=mask)


@triton.jit
def _grad_a(x, dy, scale, shift, SILU: tl.constexpr):
    # d loss / d (x_hat * w + b), with SiLU's derivative when it follows the norm
    if SILU:
        a = x * scale[:, None] + shift[:, None]
        s = tl.sigmoid(a)
        dy = dy * s * (1.0 + a * (1.0 - s))
    return dy


@triton.jit
def _backward_sums_kernel(
    x_ptr, dy_ptr, stats_ptr, w_ptr, sums_ptr, rows, C, HW,
    SILU: tl.constexpr, HAS_W: tl.constexpr, CL: tl.constexpr, R: tl.constexpr, BHW: tl.constexpr,
):  # fmt: skip
    # Per plane: sum(g), sum(g * x_hat) with g = da * w (the input gradient's group terms), and
    # sum(da * x_hat), sum(da) (the weight's and bias's gradients).
    r, rmask, base = _planes(tl.program_id(0), rows, C, HW, CL, R)
    cols = tl.arange(0, BHW)
    scale = tl.load(stats_ptr + r, mask=rmask, other=0.0)
    shift = tl.load(stats_ptr + rows + r, mask=rmask, other=0.0)
    rstd = tl.load(stats_ptr + 2 * rows + r, mask=rmask, other=0.0)
    xshift = tl.load(stats_ptr + 3 * rows + r, mask=rmask, other=0.0)
    w = tl.full((R,), 1.0, tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + r % C, mask=rmask, other=0.0).to(tl.float32)
    acc_da = tl.zeros((R, BHW), dtype=tl.float32)  # reduced after the loop, as in _plane_moments_kernel
    acc_dax = tl.zeros((R, BHW), dtype=tl.float32)
    for start in range(0, HW, BHW):
        c = start + cols
        mask = rmask[:, None] & (c[None, :] < HW)
        offs = _at(base, c, C, CL)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        da = _grad_a(x, dy, scale, shift, SILU)  # zero where masked (dy is)
        acc_da += da
        acc_dax += da * (x * rstd[:, None] + xshift[:, None])
    s_da = tl.sum(acc_da, axis=1)
    s_dax = tl.sum(acc_dax, axis=1)
    tl.store(sums_ptr + r, s_da * w, mask=rmask)
    tl.store(sums_ptr + rows + r, s_dax * w, mask=rmask)
    tl.store(sums_ptr + 2 * rows + r, s_da, mask=rmask)
    tl.store(sums_ptr + 3 * rows + r, s_dax, mask=rmask)


@triton.jit
def _backward_apply_kernel(
    x_ptr, dy_ptr, dx_ptr, stats_ptr, w_ptr, group_ptr, rows, C, HW, F, G, CPG, n_groups, inv_count,
    SILU: tl.constexpr, HAS_W: tl.constexpr, CL: tl.constexpr, R: tl.constexpr, BHW: tl.constexpr,
):  # fmt: skip
    # dx = rstd * (g - mean_group(g) - x_hat * mean_group(g * x_hat)), g = da * w
    r, rmask, base = _planes(tl.program_id(0), rows, C, HW, CL, R)
    c = tl.program_id(1) * BHW + tl.arange(0, BHW)
    mask = rmask[:, None] & (c[None, :] < HW)
    scale = tl.load(stats_ptr + r, mask=rmask, other=0.0)
    shift = tl.load(stats_ptr + rows + r, mask=rmask, other=0.0)
    rstd = tl.load(stats_ptr + 2 * rows + r, mask=rmask, other=0.0)
    xshift = tl.load(stats_ptr + 3 * rows + r, mask=rmask, other=0.0)
    channel = r % C
    w = tl.full((R,), 1.0, tl.float32)
    if HAS_W:
        w = tl.load(w_ptr + channel, mask=rmask, other=0.0).to(tl.float32)
    group = (r // C // F) * G + channel // CPG  # (clip, group) of each plane
    c1 = tl.load(group_ptr + group, mask=rmask, other=0.0) * inv_count
    c2 = tl.load(group_ptr + n_groups + group, mask=rmask, other=0.0) * inv_count
    offs = _at(base, c, C, CL)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xf = x.to(tl.float32)
    g = _grad_a(xf, dy, scale, shift, SILU) * w[:, None]
    x_hat = xf * rstd[:, None] + xshift[:, None]
    dx = rstd[:, None] * (g - c1[:, None] - x_hat * c2[:, None])
    tl.store(dx_ptr + offs, dx.to(x.dtype), mask=mask)


def _forward(
    x: torch.Tensor, f: int, groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
    offset: torch.Tensor | None, silu: bool,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    n, c, h, w = x.shape
    hw, rows = h * w, n * c
    cl, r_block, bhw, programs = _tiling(x)
    moments = torch.empty(2, rows, device=x.device, dtype=torch.float32)
    launch(_plane_moments_kernel, (programs,), x, moments[0], moments[1], rows, c, hw, CL=cl, R=r_block, BHW=bhw)
    stats = torch.empty(4, rows, device=x.device, dtype=torch.float32)  # scale, shift, rstd, xshift per plane
    cpg = c // groups
    dummy = moments  # stands in for absent pointers (never read)
    # channel tile: at least 64 wide, so SD's widths (10 to 80 channels a group) need two compiles, not four
    n_groups, fp, cp = n // f * groups, triton.next_power_of_2(f), max(64, triton.next_power_of_2(cpg))
    gb = _pairs_per_program(n_groups, fp * cp)
    launch(
        _pool_kernel, (triton.cdiv(n_groups, gb),),
        moments[0], moments[1], offset if offset is not None else dummy, weight if weight is not None else dummy,
        bias if bias is not None else dummy, stats, f, c, groups, cpg, hw, rows, n_groups, eps, 1.0 / (f * cpg * hw),
        HAS_OFF=offset is not None, HAS_W=weight is not None, HAS_B=bias is not None, GB=gb, FP=fp, CP=cp,
    )  # fmt: skip
    y = torch.empty_like(x)  # the input's layout
    grid = (programs, triton.cdiv(hw, bhw))
    launch(_apply_kernel, grid, x, y, stats, rows, c, hw, SILU=silu, CL=cl, R=r_block, BHW=bhw)
    return y, stats


class _ClipGroupNorm(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, offset: torch.Tensor | None,
        f: int, groups: int, eps: float, silu: bool,
    ) -> torch.Tensor:  # fmt: skip
        with on_device(x):  # Triton launches on the current device
            y, stats = _forward(x, f, groups, weight, bias, eps, offset, silu)
        ctx.save_for_backward(x, stats, weight)
        ctx.config = (f, groups, silu, weight is not None)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        with on_device(dy):  # Triton launches on the current device
            return _ClipGroupNorm._backward(ctx, dy)

    @staticmethod
    def _backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, stats, weight = ctx.saved_tensors
        f, groups, silu, has_w = ctx.config
        n, c, h, w = x.shape
        hw, rows = h * w, n * c
        cl, r_block, bhw, programs = _tiling(x)
        dy = dy.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)  # x's layout
        w_ptr = weight if has_w else stats
        sums = torch.empty(4, rows, device=x.device, dtype=torch.float32)
        launch(
            _backward_sums_kernel, (programs,),
            x, dy, stats, w_ptr, sums, rows, c, hw, SILU=silu, HAS_W=has_w, CL=cl, R=r_block, BHW=bhw,
        )  # fmt: skip
        clips, cpg = n // f, c // groups
        per_group = sums[:2].view(2, clips, f, groups, cpg).sum(dim=(2, 4)).contiguous()  # (2, clips, groups)
        dx = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[3]:
            dx = torch.empty_like(x)
            grid = (programs, triton.cdiv(hw, bhw))
            launch(
                _backward_apply_kernel, grid,
                x, dy, dx, stats, w_ptr, per_group, rows, c, hw, f, groups, cpg, clips * groups,
                1.0 / (f * cpg * hw), SILU=silu, HAS_W=has_w, CL=cl, R=r_block, BHW=bhw,
            )  # fmt: skip
        d_weight = sums[3].view(n, c).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        d_bias = sums[2].view(n, c).sum(0).to(weight.dtype if has_w else x.dtype) if ctx.needs_input_grad[2] else None
        d_offset = dx.float().sum(dim=(2, 3)).to(x.dtype) if ctx.needs_input_grad[3] else None
        return (dx if ctx.needs_input_grad[0] else None), d_weight, d_bias, d_offset, None, None, None, None


def clip_group_norm_supported(
    x: torch.Tensor, num_frames: int, num_groups: int, weight: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
) -> bool:  # fmt: skip
    """Whether :func:`clip_group_norm` takes these inputs (else use the PyTorch path)."""
    layout_ok = x.dim() == 4 and (x.is_contiguous() or channels_last_memory(x))
    if not layout_ok or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return False
    n, c = x.shape[:2]
    if num_frames < 1 or n % num_frames or num_frames > _MAX_FRAMES or c % num_groups:
        return False
    if c // num_groups > _MAX_GROUP_CHANNELS or x.numel() == 0:
        return False
    if offset is not None and (offset.shape != (n, c) or not offset.is_contiguous()):
        return False
    if weight is not None and (weight.shape != (c,) or not weight.is_contiguous()):
        return False
    tensors = [t for t in (x, weight, offset) if t is not None]
    return triton_usable(*tensors)


def clip_group_norm(
    x: torch.Tensor, num_frames: int, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
    eps: float, *, silu: bool = False, offset: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """GroupNorm of ``x + offset`` whose statistics span each clip's ``num_frames`` frames, then SiLU if ``silu``.

    ``x``: ``(clips * frames, c, h, w)``, NCHW or NHWC (channels-last) memory, kept by the output; ``offset``: ``(clips * frames, c)`` or None (added to
    every value of its plane before normalising, e.g. a ResNet's time embedding). Equals
    ``F.group_norm`` of the ``(clips, c, frames, h, w)`` tensor (``silu``: followed by ``F.silu``), computed
    in fp32; gradients flow to ``x``, ``weight``, ``bias`` and ``offset``.
    """
    return _ClipGroupNorm.apply(x, weight, bias, offset, num_frames, num_groups, eps, silu)
