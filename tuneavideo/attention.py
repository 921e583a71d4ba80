"""Sparse-causal self-attention and temporal attention (Tune-A-Video §4.1, Fig. 3).

Both are added to a stock diffusers ``UNet2DConditionModel`` without touching its block stack:
sparse-causal attention is an attention *processor* for every ``attn1``; temporal attention is a
pair of added modules (``norm_temp``, ``attn_temp``) on each ``BasicTransformerBlock`` run by a
forward hook right after the block's feed-forward, exactly where the official block runs it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from .kernels import kernel_module
from .speed import sdpa_priority


@dataclass
class FrameContext:
    """Mutable per-model state shared by every patched module: how many frames a clip has.

    The inflated UNet folds frames into the batch (``(b f) ...``); the patched modules need ``f``
    to unfold. It is set at the start of every forward and deliberately *not* reset afterwards,
    so gradient-checkpoint recomputation in the backward pass sees the same value.
    """

    num_frames: int = 1
    # Set by tuneavideo.speed for the "fast" / "low-vram" modes: kernels that round differently from
    # the reference path (still fp16-exact in spirit), e.g. ClipGroupNorm's frame-parallel statistics.
    fast_kernels: bool = False


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    # (n, tokens, heads * d) -> (n, heads, tokens, d)
    n, tokens, inner = x.shape
    return x.view(n, tokens, heads, inner // heads).transpose(1, 2)


def _output(attn: Attention, out: torch.Tensor, residual: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Merge heads ``(n, heads, l, d) -> (n, l, heads*d)``, then the output projection, as diffusers does."""
    out = out.transpose(1, 2).flatten(2).to(dtype)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    # SD's factor is 1: skip a pass over the output (and its backward) for an exact no-op
    return out if attn.rescale_output_factor == 1 else out / attn.rescale_output_factor


def _xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # q, k, v: (n, heads, l, d); xformers wants (n, l, heads, d)
    import xformers.ops

    out = xformers.ops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def attention_core(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Scaled dot-product attention on ``(n, heads, l, d)`` tensors with scale ``d**-0.5``."""
    if backend == "xformers":
        return _xformers_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def former_frame_index(num_frames: int, device: torch.device | None = None) -> torch.Tensor:
    """Index of the previous frame for each frame, with frame 0 mapped to itself: ``[0, 0, 1, ..., f-2]``."""
    idx = torch.arange(num_frames, device=device) - 1
    idx[0] = 0
    return idx


class _SparseCausalGather(torch.autograd.Function):
    """``(b, f, n, c)`` -> ``(b, f, 2n, c)``: each frame's tokens are frame 0's, then the previous frame's.

    Forward writes every key once, straight from views (no index kernel, no concatenated temporary: a cat
    of [frame 0 | cat of previous frames] moved 1.5x the bytes). Backward is written out too, because
    autograd's own backward of slice writes copies the whole gradient once per write.
    """

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        b, f, n, c = x.shape
        out = x.new_empty(b, f, 2 * n, c)
        out[:, :, :n] = x[:, :1]  # frame 0 for every frame (a broadcast copy)
        out[:, :1, n:] = x[:, :1]  # frame 0's previous frame is itself
        if f > 1:
            out[:, 1:, n:] = x[:, :-1]  # frames [0, 1, ..., f-2]
        return out

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:  # grad: (b, f, 2n, c)
        n = grad.shape[2] // 2
        gx = torch.empty_like(grad[:, :, n:])  # (b, f, n, c)
        gx[:, :-1] = grad[:, 1:, n:]  # frame j was frame j+1's previous frame
        gx[:, -1:] = 0
        # frame 0 was also its own previous frame, and every frame's first frame
        gx[:, :1] += grad[:, :1, n:] + grad[:, :, :n].sum(dim=1, keepdim=True)
        return gx


class SparseCausalAttnProcessor:
    """Self-attention where frame ``i`` queries the keys/values of ``[frame 0 | frame i-1]``.

    The two frames' tokens are concatenated along the token axis (2·h·w keys), the current frame is
    not among them and there is no mask: the official SC-Attn, computed with PyTorch SDPA (or
    xformers). With one frame it reduces to ordinary self-attention over ``[x | x]``, which equals
    plain self-attention because duplicating every key/value leaves softmax weights unchanged.
    """

    def __init__(self, context: FrameContext, backend: str = "sdpa") -> None:
        self.context = context
        self.backend = backend

    def gather(self, x: torch.Tensor, b: int, f: int, n: int) -> torch.Tensor:
        """Keys or values ``(b f, n, c)`` -> what each frame attends to: ``(b f, 2n, c)``, frame 0 then frame i-1.

        The ablations (:mod:`tuneavideo.ablation`) override this method only.
        """
        return _SparseCausalGather.apply(x.view(b, f, n, -1)).view(b * f, 2 * n, -1)

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is self-attention only (no context, no mask)")
        f = self.context.num_frames
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        bf, n, _ = hidden_states.shape  # (b f) n c
        b = bf // f
        query = attn.to_q(hidden_states)
        key = self.gather(attn.to_k(hidden_states), b, f, n)
        value = self.gather(attn.to_v(hidden_states), b, f, n)
        q, k, v = (_split_heads(t, attn.heads) for t in (query, key, value))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = attention_core(q, k, v, self.backend)  # (b f, heads, n, d)
        return _output(attn, out, residual, query.dtype)


class XFormersAttnProcessor:
    """Plain (cross- or temporal) attention through xformers, for GPU installs that have it."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if attention_mask is not None:
            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(hidden_states)
        q, k, v = (_split_heads(t, attn.heads) for t in (query, attn.to_k(context), attn.to_v(context)))
        return _output(attn, _xformers_attention(q, k, v), hidden_states, query.dtype)


def make_temporal_layers(block: nn.Module, generator: torch.Generator) -> tuple[nn.LayerNorm, Attention]:
    """Fresh ``norm_temp`` / ``attn_temp`` sized like ``block.attn1`` (same heads and head dim).

    Only the output projection *weight* is zero-initialised; its bias keeps PyTorch's default init,
    as in the official code, so a freshly inflated model is close to (not exactly) the 2D model.
    The random init is drawn from ``generator`` (never the global RNG), in the order and with the
    distributions ``nn.Linear`` uses, so a CPU generator seeded like the global RNG gives its values.
    """
    attn1: Attention = block.attn1
    dim = attn1.query_dim
    heads = attn1.heads
    ref = attn1.to_q.weight
    with torch.device("meta"):  # built empty, so construction draws nothing from the global RNG
        attn_temp = Attention(
            query_dim=dim,
            heads=heads,
            dim_head=attn1.inner_dim // heads,
            dropout=0.0,
            bias=attn1.to_q.bias is not None,
            upcast_attention=attn1.upcast_attention,
        )
        norm_temp = nn.LayerNorm(dim)
    attn_temp.to_empty(device=ref.device)
    norm_temp.to_empty(device=ref.device)
    if not ref.is_meta:
        with torch.no_grad():
            for linear in (attn_temp.to_q, attn_temp.to_k, attn_temp.to_v, attn_temp.to_out[0]):
                _init_linear(linear, generator)
            nn.init.zeros_(attn_temp.to_out[0].weight)
            nn.init.ones_(norm_temp.weight)
            nn.init.zeros_(norm_temp.bias)
    return norm_temp.to(ref.dtype), attn_temp.to(ref.dtype)


def _init_linear(linear: nn.Linear, generator: torch.Generator) -> None:
    # nn.Linear.reset_parameters with an explicit generator: kaiming-uniform(a=√5) weight, U(±1/√fan_in) bias.
    # Drawn in fp32 on the generator's device, then copied, so CPU and CUDA models get the same values.
    weight = torch.empty(linear.weight.shape, dtype=torch.float32, device=generator.device)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    linear.weight.copy_(weight)
    if linear.bias is not None:
        bound = 1 / math.sqrt(linear.in_features)
        bias = torch.empty(linear.bias.shape, dtype=torch.float32, device=generator.device)
        linear.bias.copy_(nn.init.uniform_(bias, -bound, bound, generator=generator))


class TemporalAttentionHook:
    """Forward hook on a ``BasicTransformerBlock``: ``h = attn_temp(norm_temp(h)) + h`` over frames.

    The block output ``(b f) d c`` is regrouped so that each spatial token becomes a sequence of
    ``f`` frames ``(b d) f c``; there is no temporal positional encoding (as in the paper).
    """

    def __init__(self, context: FrameContext) -> None:
        self.context = context
        self._run = self.apply

    def compile(self, backend: str | None) -> None:
        """Run through ``torch.compile(backend=...)`` (one region for every block), or eagerly with ``None``."""
        self._run = self.apply if backend is None else torch.compile(self.apply, backend=backend)

    def __call__(self, block: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self._run(block.norm_temp, block.attn_temp, output)

    def apply(self, norm_temp: nn.LayerNorm, attn_temp: Attention, output: torch.Tensor) -> torch.Tensor:
        f = self.context.num_frames
        bf, d, c = output.shape
        b = bf // f
        if self.context.fast_kernels and _strided_ok(attn_temp, output):
            return _temporal_in_place_layout(norm_temp, attn_temp, output, b, f)
        h = output.view(b, f, d, c).transpose(1, 2).reshape(b * d, f, c)  # (b d) f c
        h = attn_temp(norm_temp(h)) + h
        return h.view(b, d, f, c).transpose(1, 2).reshape(bf, d, c)  # (b f) d c


# The layout-free path makes every (token, head) pair an SDPA head; fused CUDA kernels launch one grid row per
# head, and a grid dimension holds at most 65535 (PyTorch issue 142228: failed launches or wrong results). 512²
# latents give 32768 at the first level; 768² would give 73728, so such sizes take the reference layout.
_MAX_SDPA_HEADS = 65535


def _strided_ok(attn: Attention, x: torch.Tensor) -> bool:
    # the layout-free path below computes exactly what AttnProcessor2_0 does for a plain attention module
    plain = attn.group_norm is None and attn.spatial_norm is None and attn.norm_q is None and attn.norm_k is None
    fits = x.shape[1] * attn.heads <= _MAX_SDPA_HEADS  # x: (b f) d c
    return (
        plain
        and fits
        and type(attn.processor) is AttnProcessor2_0
        and x.is_contiguous()
        and not attn.residual_connection
    )


# For frames as the sequence (a few dozen keys, many thousand sequences) the memory-efficient kernel is the quickest
# on an H200: at 64² x 24 frames 0.4 ms forward and 1.3 ms forward + backward, against cuDNN's 0.6 / 1.9 ms and
# flash's 0.8 / 3.8 ms (strided or contiguous inputs alike).
_SHORT_SEQUENCE_ORDER = ("EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "FLASH_ATTENTION", "MATH")


def _short_sequence_kernels(q: torch.Tensor) -> contextlib.AbstractContextManager:
    return sdpa_priority(_SHORT_SEQUENCE_ORDER) if q.is_cuda else contextlib.nullcontext()


def _temporal_in_place_layout(
    norm_temp: nn.LayerNorm, attn: Attention, output: torch.Tensor, b: int, f: int
) -> torch.Tensor:
    """``attn(norm(h)) + h`` over frames, computed in the block's own ``(b f) d c`` layout.

    The norm and the projections act per token, so only the attention itself needs frames as its
    sequence: it reads ``q``, ``k``, ``v`` through strided views ``(b, d·heads, f, head_dim)``, and a fused
    kernel writes its output as ``(b, f, d·heads, head_dim)``, which is the token layout again. The
    reference path transposes ``(b f) d c -> (b d) f c`` and back instead: four full copies per layer with
    their backward. Same maths; only rounding differs.
    """
    bf, d, c = output.shape
    heads = attn.heads
    h = norm_temp(output)  # (b f) d c

    def split(t: torch.Tensor) -> torch.Tensor:  # (b f) d c -> (b, d heads, f, c/heads), a view
        return t.view(b, f, d * heads, c // heads).transpose(1, 2)

    q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)  # (b f) d c
    kernel = kernel_module("temporal_attention")
    if kernel is not None and kernel.temporal_attention_supported(q, k, v, f, heads):
        out = kernel.temporal_attention(q, k, v, f, heads)  # (b f) d c; many sequences a program
    else:
        q, k, v = split(q), split(k), split(v)
        with _short_sequence_kernels(q):
            out = F.scaled_dot_product_attention(q, k, v)  # (b, d heads, f, c/heads)
        out = out.transpose(1, 2).reshape(bf, d, c)  # a view when the kernel wrote (b, f, d heads, c/heads)
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.rescale_output_factor != 1:
        out = out / attn.rescale_output_factor
    return out + output
