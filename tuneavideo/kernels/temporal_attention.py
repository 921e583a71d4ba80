"""Temporal (over-frames) softmax attention as one Triton kernel forward and one backward.

Tune-A-Video's temporal attention runs, for every clip, spatial token and head, softmax attention whose
sequence is the clip's frames. Activations are stored frames-folded-into-batch, ``(b f, d, c)`` with
``c = heads * head_dim``, so the sequence of clip ``bi``, token ``t``, head ``hh`` is the vectors
``x[bi * f + i, t, hh * dh:(hh + 1) * dh]`` for frames ``i < f``.

Why a kernel of its own: there are ``b * d * heads`` sequences (tens of thousands) of only ``f`` frames (a
few dozen). PyTorch's fused SDPA kernels give each CTA one sequence (or one query block of one), so each
CTA moves a few kilobytes, does a tiny matmul and spends most of its life on launch, prologue and
epilogue; on an H200 they run ~6x slower than memory bandwidth allows. Here one program takes
``BLOCK_T`` tokens of one clip and one head at once: it computes all ``BLOCK_T`` score matrices
``[F_PAD, F_PAD]`` as one batched (3-D) ``tl.dot`` from ``[BLOCK_T, F_PAD, DH_CHUNK]`` tiles of Q and K
(accumulating over head-dim chunks), does the softmax in registers, then writes O chunk by chunk from P
and V, so every byte of q, k, v and out crosses DRAM once. Tensors are read and written through their
strides, so the strided views the projections produce are never copied.

The backward saves nothing but q, k, v: the score matrices are tiny, so one kernel recomputes P and
writes dQ, dK and dV of its tile (``delta = rowsum(P * dP)`` equals ``rowsum(dO * O)``, so O is not needed).

Padding: frames are padded to ``F_PAD = next_pow2(max(f, 16))`` and the head dim to a multiple of
``DH_CHUNK`` (16, 32 or 64) because ``tl.dot`` wants power-of-two dims of at least 16. Padded loads read
zeros and padded keys get ``-inf`` scores, so the padding never changes a result; it only adds
tensor-core work, of which there is plenty to spare (the kernel is memory-bound).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import on_device, triton_usable
from .precompile import launch

MAX_FRAMES = 64
MAX_HEAD_DIM = 256
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_LOG2E = 1.4426950408889634

# Layout facts behind the rule for shapes ``_MEASURED`` below lacks (untuned: no GPU when it was written). For a
# 3-D ``tl.dot`` Triton puts every warp on the batch dim (warpsPerCTA = [num_warps, 1, 1]), so each warp computes whole [F_PAD, F_PAD] score matrices of its own tokens: BLOCK_T
# must be a multiple of num_warps (fewer tokens than warps would make warps repeat each other's work), and
# a warp's registers grow with F_PAD**2 per token (S, P, and in the backward dP and dS). The head dim is
# walked in chunks of DH_CHUNK channels, so registers do not grow with head_dim (160 would otherwise need
# [32, 256] fp32 accumulators per warp and spill) and padding shrinks (80 = 5 x 16, 160 = 5 x 32).
# Offline sm_90 compile (Triton 3.6, ptxas -v, fp16, these defaults): forward 72-96 registers, backward
# 110-186, no spills for f <= 32; at f = 64 the backward spills ~0.5 KB per thread (rare clip length).
NUM_WARPS = 4
FWD_SCORE_ELEMENTS_PER_WARP = 1024  # F_PAD**2 x tokens per warp: 1 token at F_PAD 32, 4 at 16
BWD_SCORE_ELEMENTS_PER_WARP = 512  # the backward keeps P and dP (then dS) alive together


# (BLOCK_T, DH_CHUNK, num_warps) measured best on an H200 (fp16, 8 heads; scratch sweep of 3-6 settings a shape)
# for the shapes SD-1.x tunes at: 24 frames (F_PAD 32) at head dims 40 / 80 / 160, and 8 frames at 40. E.g. 24
# frames x 4096 tokens x 40: forward 0.182 ms against 0.252 ms for the rule below, forward + backward 0.576 against
# 0.878 ms (the memory-efficient SDPA: 0.43 / 1.27 ms).
_MEASURED = {
    (32, 40, False): (4, 32, 4),
    (32, 40, True): (4, 64, 4),
    (32, 80, False): (8, 32, 4),
    (32, 80, True): (4, 32, 4),
    (32, 160, False): (8, 32, 8),
    (32, 160, True): (4, 16, 4),
    (16, 40, False): (32, 16, 8),
    (16, 40, True): (8, 32, 4),
}


def launch_config(f_pad: int, head_dim: int, backward: bool) -> tuple[int, int, int]:
    """``(BLOCK_T, DH_CHUNK, num_warps)`` for one shape; looked up at every call, so it can be patched."""
    if (f_pad, head_dim, backward) in _MEASURED:
        return _MEASURED[(f_pad, head_dim, backward)]
    budget = BWD_SCORE_ELEMENTS_PER_WARP if backward else FWD_SCORE_ELEMENTS_PER_WARP
    tokens_per_warp = max(1, budget // (f_pad * f_pad))
    # Fewest padded channels, then the widest chunk (fewer loop steps, longer contiguous loads).
    dh_chunk = min((64, 32, 16), key=lambda ch: (-(-head_dim // ch) * ch, -ch))
    return NUM_WARPS * tokens_per_warp, dh_chunk, NUM_WARPS


def _pad(n: int) -> int:
    """Next power of two >= max(n, 16): the smallest dims ``tl.dot`` accepts."""
    return max(16, 1 << (max(n, 1) - 1).bit_length())


@triton.jit
def _rows(
    stride_frame,
    stride_token,
    t0,
    num_frames,
    num_tokens,
    BLOCK_T: tl.constexpr,
    F_PAD: tl.constexpr,
):
    """Offsets ``[BLOCK_T, F_PAD, 1]`` of (token ``t0 + i``, frame ``j``) rows of one clip, and their mask.

    Relative to (first frame of the clip, token 0, first channel of the head), which the caller adds to
    the pointer with int64 arithmetic; these in-clip offsets stay int32 (the wrapper checks a clip fits).
    """
    tok = t0 + tl.arange(0, BLOCK_T)[:, None, None]  # [BT, 1, 1]
    frame = tl.arange(0, F_PAD)[None, :, None]  # [1, F, 1]
    return tok * stride_token + frame * stride_frame, (tok < num_tokens) & (frame < num_frames)


@triton.jit
def _chunk(c, DH: tl.constexpr, DH_CHUNK: tl.constexpr):
    """Channels ``[1, 1, DH_CHUNK]`` of chunk ``c`` of the head dim, and their mask (< head_dim)."""
    chan = c * DH_CHUNK + tl.arange(0, DH_CHUNK)[None, None, :]
    return chan, chan < DH


@triton.jit
def _scores(
    q_base,
    k_base,
    q_rows,
    k_rows,
    row_mask,
    DH: tl.constexpr,
    DH_CHUNK: tl.constexpr,
    BLOCK_T: tl.constexpr,
    F_PAD: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """``Q K^T`` fp32 ``[BT, F, F]``, accumulated over head-dim chunks (padded channels load as 0)."""
    s = tl.zeros((BLOCK_T, F_PAD, F_PAD), dtype=tl.float32)
    for c in tl.static_range((DH + DH_CHUNK - 1) // DH_CHUNK):
        chan, chan_mask = _chunk(c, DH, DH_CHUNK)
        q = tl.load(q_base + q_rows + chan, mask=row_mask & chan_mask, other=0.0)  # [BT, F, CH]
        k = tl.load(k_base + k_rows + chan, mask=row_mask & chan_mask, other=0.0)
        s = tl.dot(q, tl.permute(k, (0, 2, 1)), acc=s, input_precision=PRECISION)
    return s


@triton.jit
def _softmax(s, num_frames, scale_log2, F_PAD: tl.constexpr):
    """``softmax(s * scale)`` over keys (axis 2), fp32; padded keys get probability 0."""
    s = s * scale_log2  # base-2 logits: exp2 is the native instruction
    key = tl.arange(0, F_PAD)[None, None, :]
    s = tl.where(key < num_frames, s, float("-inf"))
    # Every row has >= 1 real key (num_frames >= 1), so the max is finite and no row is all -inf.
    m = tl.max(s, axis=2)
    p = tl.exp2(s - m[:, :, None])
    denom = tl.sum(p, axis=2)
    # Normalised here, before P is cast for P @ V: a normalised P rounds better in fp16 / bf16, and
    # the backward recomputes exactly this P.
    return p * (1.0 / denom)[:, :, None]


@triton.jit
def _program_tile(heads, token_blocks, num_frames, DH: tl.constexpr, BLOCK_T: tl.constexpr):
    """This program's (first row of its clip in dim 0, first channel of its head, first token): 1-D grid, head
    fastest. The row is int64 (b f d c may pass 2**31); in-clip offsets stay int32."""
    pid = tl.program_id(0)
    rest = pid // heads
    frame0 = (rest // token_blocks).to(tl.int64) * num_frames
    return frame0, (pid % heads) * DH, (rest % token_blocks) * BLOCK_T


@triton.jit
def _temporal_attention_fwd(
    q_ptr, k_ptr, v_ptr, o_ptr, sq0, sq1, sk0, sk1, sv0, sv1, so0, so1, num_frames, num_tokens, heads,
    token_blocks, scale_log2,
    DH: tl.constexpr, DH_CHUNK: tl.constexpr, BLOCK_T: tl.constexpr, F_PAD: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One program: tokens ``[t0, t0 + BLOCK_T)`` of one clip, one head. 1-D grid, head fastest, so
    programs running side by side read neighbouring channels of the same token rows (shared sectors)."""
    frame0, hoff, t0 = _program_tile(heads, token_blocks, num_frames, DH, BLOCK_T)
    q_base = q_ptr + (frame0 * sq0 + hoff)  # scalar pointers, int64 offsets; in-clip offsets are int32
    k_base = k_ptr + (frame0 * sk0 + hoff)
    v_base = v_ptr + (frame0 * sv0 + hoff)
    o_base = o_ptr + (frame0 * so0 + hoff)
    q_rows, row_mask = _rows(sq0, sq1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    k_rows, _ = _rows(sk0, sk1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    v_rows, _ = _rows(sv0, sv1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    o_rows, _ = _rows(so0, so1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)

    s = _scores(q_base, k_base, q_rows, k_rows, row_mask, DH, DH_CHUNK, BLOCK_T, F_PAD, PRECISION)
    p = _softmax(s, num_frames, scale_log2, F_PAD).to(o_ptr.dtype.element_ty)  # [BT, Fq, Fk]
    for c in tl.static_range((DH + DH_CHUNK - 1) // DH_CHUNK):
        chan, chan_mask = _chunk(c, DH, DH_CHUNK)
        v = tl.load(v_base + v_rows + chan, mask=row_mask & chan_mask, other=0.0)  # [BT, Fk, CH]
        o = tl.dot(p, v, input_precision=PRECISION)  # [BT, Fq, CH] fp32
        tl.store(o_base + o_rows + chan, o.to(o_ptr.dtype.element_ty), mask=row_mask & chan_mask)


@triton.jit
def _temporal_attention_bwd(
    q_ptr, k_ptr, v_ptr, do_ptr, dq_ptr, dk_ptr, dv_ptr, sq0, sq1, sk0, sk1, sv0, sv1, sdo0, sdo1, sg0, sg1,
    num_frames, num_tokens, heads, token_blocks, scale, scale_log2,
    DH: tl.constexpr, DH_CHUNK: tl.constexpr, BLOCK_T: tl.constexpr, F_PAD: tl.constexpr,
    PRECISION: tl.constexpr, NEED_DQ: tl.constexpr, NEED_DK: tl.constexpr, NEED_DV: tl.constexpr,
):  # fmt: skip
    """Gradients of one tile (same tiling as the forward). dQ, dK, dV share the strides ``sg0, sg1``
    (the wrapper allocates them contiguous); a gradient that is not needed is neither computed nor stored.

    Three passes over the head-dim chunks: Q, K -> S; dO, V -> dP (and dV = P^T dO on the way);
    then dQ = dS K, dK = dS^T Q. Q and K are read twice; the second read is of data this program
    touched moments ago, so it comes from cache, not DRAM.
    """
    frame0, hoff, t0 = _program_tile(heads, token_blocks, num_frames, DH, BLOCK_T)
    q_base = q_ptr + (frame0 * sq0 + hoff)
    k_base = k_ptr + (frame0 * sk0 + hoff)
    v_base = v_ptr + (frame0 * sv0 + hoff)
    do_base = do_ptr + (frame0 * sdo0 + hoff)
    g_off = frame0 * sg0 + hoff  # the same for dQ, dK and dV
    q_rows, row_mask = _rows(sq0, sq1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    k_rows, _ = _rows(sk0, sk1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    v_rows, _ = _rows(sv0, sv1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    do_rows, _ = _rows(sdo0, sdo1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)
    g_rows, _ = _rows(sg0, sg1, t0, num_frames, num_tokens, BLOCK_T, F_PAD)

    s = _scores(q_base, k_base, q_rows, k_rows, row_mask, DH, DH_CHUNK, BLOCK_T, F_PAD, PRECISION)
    p = _softmax(s, num_frames, scale_log2, F_PAD)  # [BT, Fq, Fk] fp32, exactly the forward's P
    p_t = tl.permute(p.to(do_ptr.dtype.element_ty), (0, 2, 1))  # P^T [BT, Fk, Fq] for dV
    dp = tl.zeros((BLOCK_T, F_PAD, F_PAD), dtype=tl.float32)
    for c in tl.static_range((DH + DH_CHUNK - 1) // DH_CHUNK):
        chan, chan_mask = _chunk(c, DH, DH_CHUNK)
        mask = row_mask & chan_mask
        do = tl.load(do_base + do_rows + chan, mask=mask, other=0.0)  # [BT, Fq, CH]
        if NEED_DV:
            dv = tl.dot(p_t, do, input_precision=PRECISION)  # [BT, Fk, CH] fp32
            tl.store(dv_ptr + g_off + g_rows + chan, dv.to(dv_ptr.dtype.element_ty), mask=mask)
        if NEED_DQ or NEED_DK:
            v = tl.load(v_base + v_rows + chan, mask=mask, other=0.0)
            dp = tl.dot(do, tl.permute(v, (0, 2, 1)), acc=dp, input_precision=PRECISION)  # dO V^T

    if NEED_DQ or NEED_DK:
        # Padded query rows have dO = 0 and padded keys P = 0, so every padded entry of dS is 0.
        delta = tl.sum(p * dp, axis=2)  # [BT, Fq] = rowsum(dO * O): O need not be saved
        ds = (p * (dp - delta[:, :, None])).to(q_ptr.dtype.element_ty)  # grad of the scaled scores
        ds_t = tl.permute(ds, (0, 2, 1))
        for c in tl.static_range((DH + DH_CHUNK - 1) // DH_CHUNK):
            chan, chan_mask = _chunk(c, DH, DH_CHUNK)
            mask = row_mask & chan_mask
            if NEED_DQ:
                k = tl.load(k_base + k_rows + chan, mask=mask, other=0.0)  # [BT, Fk, CH]
                dq = tl.dot(ds, k, input_precision=PRECISION) * scale
                tl.store(dq_ptr + g_off + g_rows + chan, dq.to(dq_ptr.dtype.element_ty), mask=mask)
            if NEED_DK:
                q = tl.load(q_base + q_rows + chan, mask=mask, other=0.0)  # [BT, Fq, CH]
                dk = tl.dot(ds_t, q, input_precision=PRECISION) * scale
                tl.store(dk_ptr + g_off + g_rows + chan, dk.to(dk_ptr.dtype.element_ty), mask=mask)


def _clip_fits_int32(t: torch.Tensor, num_frames: int) -> bool:
    """The largest in-tile offset (frames of one clip x tokens x channels) stays below 2**31."""
    _, d, c = t.shape
    s0, s1, _ = t.stride()
    return (num_frames - 1) * s0 + (d - 1) * s1 + c < 2**31


def temporal_attention_supported(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_frames: int, heads: int
) -> bool:
    """Whether :func:`temporal_attention` takes these inputs; callers use SDPA where it says no. Never raises."""
    try:
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            return False
        if not triton_usable(q, k, v):
            return False
        if q.dim() != 3 or q.shape != k.shape or q.shape != v.shape:
            return False
        if q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
            return False
        if len({t.device for t in (q, k, v)}) != 1:
            return False
        bf, d, c = q.shape
        if num_frames < 1 or heads < 1 or num_frames > MAX_FRAMES or bf % num_frames or c % heads:
            return False
        if c // heads > MAX_HEAD_DIM or num_frames * d * c >= 2**31:  # the outputs are contiguous
            return False
        for t in (q, k, v):
            # channels contiguous (vector loads); other strides free but non-negative and int32 per clip
            if t.stride(2) != 1 or t.stride(0) < 0 or t.stride(1) < 0 or not _clip_fits_int32(t, num_frames):
                return False
        return True
    except Exception:  # an exotic tensor subclass or the like: let SDPA handle it
        return False


def _strides(t: torch.Tensor) -> tuple[int, int]:
    return t.stride(0), t.stride(1)


def _launch(q: torch.Tensor, num_frames: int, heads: int, backward: bool) -> tuple:
    """``(head_dim, F_PAD, BLOCK_T, DH_CHUNK, num_warps, token_blocks, grid)`` of a launch over ``q``'s shape."""
    bf, d, c = q.shape
    dh = c // heads
    f_pad = _pad(num_frames)
    block_t, dh_chunk, num_warps = launch_config(f_pad, dh, backward=backward)
    token_blocks = triton.cdiv(d, block_t)
    return dh, f_pad, block_t, dh_chunk, num_warps, token_blocks, (heads * (bf // num_frames) * token_blocks,)


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_frames: int, heads: int) -> torch.Tensor:
    bf, d, c = q.shape
    out = torch.empty((bf, d, c), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    dh, f_pad, block_t, dh_chunk, num_warps, token_blocks, grid = _launch(q, num_frames, heads, backward=False)
    scale = dh**-0.5
    with on_device(q):
        launch(
            _temporal_attention_fwd, grid,
            q, k, v, out,
            *_strides(q), *_strides(k), *_strides(v), *_strides(out),
            num_frames, d, heads, token_blocks, scale * _LOG2E,
            DH=dh, DH_CHUNK=dh_chunk, BLOCK_T=block_t, F_PAD=f_pad, PRECISION=_precision(q.dtype),
            num_warps=num_warps,
        )  # fmt: skip
    return out


def _backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grad_out: torch.Tensor,
    num_frames: int,
    heads: int,
    needs: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    bf, d, c = q.shape
    # dO usually arrives contiguous; odd layouts (channels strided, or a broadcast scalar grad with stride 0
    # everywhere) are copied once so the kernel can rely on unit channel stride. Row / token strides pass as is.
    if grad_out.dtype != q.dtype:
        grad_out = grad_out.to(q.dtype)
    if grad_out.stride(2) != 1 or grad_out.stride(0) < 0 or grad_out.stride(1) < 0:
        grad_out = grad_out.contiguous()
    if not _clip_fits_int32(grad_out, num_frames):
        grad_out = grad_out.contiguous()
    grads = [torch.empty((bf, d, c), dtype=q.dtype, device=q.device) if need else None for need in needs]
    if q.numel() == 0:
        return grads[0], grads[1], grads[2]
    dh, f_pad, block_t, dh_chunk, num_warps, token_blocks, grid = _launch(q, num_frames, heads, backward=True)
    scale = dh**-0.5
    # Gradients not needed get a stand-in pointer; the kernel neither computes nor stores them.
    dq, dk, dv = (g if g is not None else q for g in grads)
    with on_device(q):
        launch(
            _temporal_attention_bwd, grid,
            q, k, v, grad_out, dq, dk, dv,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), d * c, c,
            num_frames, d, heads, token_blocks, scale, scale * _LOG2E,
            DH=dh, DH_CHUNK=dh_chunk, BLOCK_T=block_t, F_PAD=f_pad, PRECISION=_precision(q.dtype),
            NEED_DQ=needs[0], NEED_DK=needs[1], NEED_DV=needs[2],
            num_warps=num_warps,
        )  # fmt: skip
    return grads[0], grads[1], grads[2]


def _precision(dtype: torch.dtype) -> str | None:
    """How ``tl.dot`` treats fp32 inputs; fp16 / bf16 take Triton's default (``None``: the option only concerns fp32).

    fp32 gets "tf32x3": three TF32 tensor-core products that recover ~fp32 accuracy (PyTorch's fp32 matmuls
    do not use plain TF32 by default, so neither do we). "ieee" would be exact but goes through FMA code
    that spills heavily for these 3-D dots on sm_90 (kilobytes per thread in an offline ptxas check).
    """
    return "tf32x3" if dtype == torch.float32 else None


class _TemporalAttention(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v only; the backward kernel recomputes the probabilities."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_frames: int, heads: int) -> torch.Tensor:
        ctx.save_for_backward(q, k, v)
        ctx.num_frames, ctx.heads = num_frames, heads
        return _forward(q, k, v, num_frames, heads)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v = ctx.saved_tensors
        needs = tuple(bool(n) for n in ctx.needs_input_grad[:3])
        if not any(needs):
            return None, None, None, None, None
        dq, dk, dv = _backward(q, k, v, grad_out, ctx.num_frames, ctx.heads, needs)
        return dq, dk, dv, None, None


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_frames: int, heads: int) -> torch.Tensor:
    """Softmax attention over frames for every (clip, token, head) of (b f, d, c) tensors; returns (b f, d, c).

    Same maths as ``F.scaled_dot_product_attention`` (scale ``head_dim**-0.5``, no mask) on the views
    ``(b, d*heads, f, head_dim)``; differentiable in q, k and v. Output contiguous, dtype of the inputs.
    Raises ``ValueError`` where :func:`temporal_attention_supported` says no.
    """
    if not temporal_attention_supported(q, k, v, num_frames, heads):
        raise ValueError(
            f"temporal_attention does not take q {tuple(q.shape)} {q.dtype} on {q.device} "
            f"with num_frames={num_frames}, heads={heads}; use scaled_dot_product_attention"
        )
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _TemporalAttention.apply(q, k, v, num_frames, heads)
    return _forward(q, k, v, num_frames, heads)


__all__ = ["launch_config", "temporal_attention", "temporal_attention_supported"]
