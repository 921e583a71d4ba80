"""The temporal (over-frames) attention Triton kernel, forward and backward, against SDPA.

Without CUDA the kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1``, set here before
``tuneavideo.kernels`` is imported). References are computed in float64 from the same inputs.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

import tuneavideo.kernels.temporal_attention as tk
from tuneavideo.kernels import interpreting
from tuneavideo.kernels.temporal_attention import temporal_attention, temporal_attention_supported

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fp32 tolerance: the interpreter's dots are numpy fp32; on a GPU fp32 dots run as 3xTF32 (~fp32, not exact).
TOL32 = 5e-5 if DEVICE == "cuda" else 1e-5


@pytest.fixture(autouse=True)
def _kernels_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the kernels take CPU tensors (Triton's interpreter) in these tests."""
    monkeypatch.setenv("TUNEAVIDEO_TRITON_CPU", "1")


def reference(q, k, v, f, heads):
    """SDPA on the strided ``(b, d*heads, f, dh)`` views, as the model's temporal attention computes it."""
    bf, d, c = q.shape
    b = bf // f
    dh = c // heads

    def split(t):  # (b f, d, c) -> (b, d*heads, f, dh)
        return t.view(b, f, d * heads, dh).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # scale dh**-0.5, no mask
    return out.transpose(1, 2).reshape(bf, d, c)


def _inputs(b, f, d, heads, dh, dtype=torch.float32, seed=0, requires_grad=(True, True, True)):
    gen = torch.Generator().manual_seed(seed)
    shape = (b * f, d, heads * dh)
    # scale 2: logits of a few units, so softmax rows are far from uniform and errors in P show up
    tensors = [(torch.randn(shape, generator=gen) * 2).to(DEVICE, dtype) for _ in range(3)]
    return [t.requires_grad_(r) for t, r in zip(tensors, requires_grad)]


def _reference64(q, k, v, f, heads, grad_out=None):
    """float64 reference output (and grads of the inputs that require them, for ``grad_out``)."""
    q64, k64, v64 = (t.detach().double().requires_grad_(t.requires_grad) for t in (q, k, v))
    out = reference(q64, k64, v64, f, heads)
    if grad_out is None:
        return out, None
    wanted = [t for t in (q64, k64, v64) if t.requires_grad]
    return out, torch.autograd.grad(out, wanted, grad_out.double())


def _close(got, want, tol):
    """Absolute tolerance relative to the reference's magnitude (grads of random dO can be large)."""
    scale = max(want.abs().max().item(), 1.0)
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * scale)


CASES = [  # clips, frames, tokens, heads, head_dim
    (1, 1, 7, 2, 8),  # one frame: the output is V itself
    (2, 3, 5, 2, 20),  # tokens < one block; head_dim not a power of two
    (1, 8, 64, 2, 40),
    (1, 24, 33, 2, 8),  # 24 frames pad to 32; 33 tokens leave a partial last block
    (2, 17, 19, 2, 40),  # frames not a power of two, two clips
    (1, 5, 9, 2, 36),  # the head dim in three chunks of 16, the last one padded (forward and backward)
]


def _check_gradients(out, q, k, v, f, heads, seed):
    """``out`` and the grads of q, k, v under a random dO equal the fp64 reference's (fp32 tolerance); the grads."""
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    want, want_grads = _reference64(q, k, v, f, heads, grad_out)
    _close(out, want, TOL32)
    for g, w in zip(grads, want_grads, strict=True):
        _close(g, w, TOL32)
    return grads


@pytest.mark.parametrize("b,f,d,heads,dh", CASES)
def test_forward_and_backward_match_sdpa_fp32(b, f, d, heads, dh):
    q, k, v = _inputs(b, f, d, heads, dh)
    assert temporal_attention_supported(q, k, v, f, heads)
    out = temporal_attention(q, k, v, f, heads)
    assert out.shape == q.shape and out.dtype == q.dtype and out.is_contiguous()
    grads = _check_gradients(out, q, k, v, f, heads, seed=5)
    if f == 1:  # softmax over one key is 1: out = v, dq = dk = 0
        torch.testing.assert_close(out, v.detach())
        assert grads[0].abs().max() == 0 and grads[1].abs().max() == 0


def test_partial_token_blocks_and_chunks_are_covered():
    """The cases above include token counts that are not a multiple of the kernel's BLOCK_T, and head dims
    walked in several chunks with a padded last one."""
    for backward in (False, True):
        assert 33 % tk.launch_config(tk._pad(24), 8, backward)[0] != 0
        assert 19 % tk.launch_config(tk._pad(17), 40, backward)[0] != 0
        assert 5 % tk.launch_config(tk._pad(3), 20, backward)[0] != 0
        # some case walks the head dim in several chunks with a padded last one
        chunks = [tk.launch_config(tk._pad(f), dh, backward)[1] for _, f, _, _, dh in CASES]
        assert any(dh // c >= 2 and dh % c for c, (*_, dh) in zip(chunks, CASES, strict=True))


def test_fp16_forward_and_backward():
    f, heads = 24, 2
    q, k, v = _inputs(1, f, 20, heads, 40, dtype=torch.float16, seed=1)
    out = temporal_attention(q, k, v, f, heads)
    assert out.dtype == torch.float16
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(6)).to(DEVICE, torch.float16)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    want, want_grads = _reference64(q, k, v, f, heads, grad_out)
    _close(out, want, 2e-3)
    for g, w in zip(grads, want_grads, strict=True):
        assert g.dtype == torch.float16
        _close(g, w, 4e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the interpreter's bf16 tl.dot multiplies raw bits")
def test_bf16_forward_and_backward():
    f, heads = 8, 2
    q, k, v = _inputs(2, f, 30, heads, 20, dtype=torch.bfloat16, seed=2)
    out = temporal_attention(q, k, v, f, heads)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(DEVICE, torch.bfloat16)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    want, want_grads = _reference64(q, k, v, f, heads, grad_out)
    _close(out, want, 2e-2)
    for g, w in zip(grads, want_grads, strict=True):
        _close(g, w, 3e-2)


def test_only_k_and_v_require_grad():
    f, heads = 8, 2
    q, k, v = _inputs(1, f, 12, heads, 20, seed=3, requires_grad=(False, True, True))
    out = temporal_attention(q, k, v, f, heads)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(8)).to(DEVICE)
    out.backward(grad_out)
    assert q.grad is None
    _, (want_dk, want_dv) = _reference64(q, k, v, f, heads, grad_out)
    _close(k.grad, want_dk, TOL32)
    _close(v.grad, want_dv, TOL32)


def test_only_q_requires_grad():
    f, heads = 3, 2
    q, k, v = _inputs(2, f, 9, heads, 8, seed=4, requires_grad=(True, False, False))
    out = temporal_attention(q, k, v, f, heads)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    (dq,) = torch.autograd.grad(out, (q,), grad_out)
    _, (want_dq,) = _reference64(q, k, v, f, heads, grad_out)
    _close(dq, want_dq, TOL32)


def test_strided_inputs_from_a_fused_projection():
    """q, k, v as channel slices of one (b f, d, 3c) tensor: row and token strides are 3c, read in place."""
    f, heads, dh, d = 8, 2, 20, 11
    gen = torch.Generator().manual_seed(10)
    qkv = (torch.randn(2 * f, d, 3 * heads * dh, generator=gen) * 2).to(DEVICE).requires_grad_()
    q, k, v = qkv.chunk(3, dim=-1)
    assert not q.is_contiguous() and temporal_attention_supported(q, k, v, f, heads)
    out = temporal_attention(q, k, v, f, heads)
    grad_out = torch.randn(out.shape, generator=gen).to(DEVICE)
    (got,) = torch.autograd.grad(out, (qkv,), grad_out)
    qkv64 = qkv.detach().double().requires_grad_()
    want = reference(*(t.contiguous() for t in qkv64.chunk(3, dim=-1)), f, heads)  # view() needs contiguous
    (want_grad,) = torch.autograd.grad(want, (qkv64,), grad_out.double())
    _close(out, want, TOL32)
    _close(got, want_grad, TOL32)


def _grad_out_layouts(shape, gen):
    bf, d, c = shape
    base = torch.randn(shape, generator=gen).to(DEVICE)
    yield "channels strided", torch.randn(bf, c, d, generator=gen).to(DEVICE).transpose(1, 2)
    yield "sliced", torch.randn(bf, d, 2 * c, generator=gen).to(DEVICE)[..., c:]
    yield "broadcast over rows", base[:1].expand(bf, d, c)
    yield "transposed back", base.transpose(0, 1).contiguous().transpose(0, 1)


def test_non_contiguous_grad_out():
    f, heads = 4, 2
    q, k, v = _inputs(2, f, 10, heads, 8, seed=11)
    out = temporal_attention(q, k, v, f, heads)
    for name, grad_out in _grad_out_layouts(out.shape, torch.Generator().manual_seed(12)):
        assert not grad_out.is_contiguous(), name
        grads = torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True)
        _, want_grads = _reference64(q, k, v, f, heads, grad_out.contiguous())
        for g, w in zip(grads, want_grads, strict=True):
            _close(g, w, TOL32)


def test_sum_backward_gets_a_scalar_broadcast_grad():
    f, heads = 3, 2
    q, k, v = _inputs(1, f, 6, heads, 8, seed=13)
    grads = torch.autograd.grad(temporal_attention(q, k, v, f, heads).square().sum(), (q, k, v))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want_grads = torch.autograd.grad(reference(q64, k64, v64, f, heads).square().sum(), (q64, k64, v64))
    for g, w in zip(grads, want_grads, strict=True):
        _close(g, w, TOL32)


@pytest.mark.parametrize("block_t,dh_chunk,num_warps", [(1, 16, 1), (2, 64, 2), (8, 32, 4)])
def test_other_launch_configs(monkeypatch, block_t, dh_chunk, num_warps):
    """Same numbers with BLOCK_T / DH_CHUNK / num_warps overridden (how the GPU script tunes them):
    one token per program, one chunk wider than the head, and a partial second chunk."""
    monkeypatch.setattr(tk, "launch_config", lambda f_pad, head_dim, backward: (block_t, dh_chunk, num_warps))
    f, heads = 8, 2
    q, k, v = _inputs(1, f, 9, heads, 20, seed=14)
    out = temporal_attention(q, k, v, f, heads)
    _check_gradients(out, q, k, v, f, heads, seed=15)


def test_no_grad_forward():
    f, heads = 8, 2
    q, k, v = _inputs(2, f, 9, heads, 40, seed=16)
    want, _ = _reference64(q, k, v, f, heads)
    with torch.no_grad():
        out = temporal_attention(q, k, v, f, heads)
    assert out.grad_fn is None
    _close(out, want, TOL32)


def test_launch_config_shapes():
    for f in (1, 8, 16, 17, 24, 32, 64):
        for dh in (8, 20, 40, 64, 80, 160, 256):
            for backward in (False, True):
                block_t, chunk, num_warps = tk.launch_config(tk._pad(f), dh, backward)
                assert block_t & (block_t - 1) == 0 and chunk in (16, 32, 64)  # tl.arange wants powers of two
                assert block_t % num_warps == 0  # 3-D tl.dot puts every warp on the token (batch) dim
                if (tk._pad(f), dh, backward) not in tk._MEASURED:  # the rule; measured shapes may pad more
                    assert -(-dh // chunk) * chunk - dh < 16  # never pads more than 15 channels
    assert [tk.launch_config(32, dh, False)[1] for dh in (20, 40, 80, 160)] == [32, 32, 32, 32]  # measured from 40


def test_supported_says_no_without_raising(monkeypatch):
    def make(bf=8, d=4, c=16, dtype=torch.float32):
        return torch.randn(bf, d, c, dtype=dtype, device=DEVICE)

    q, k, v = make(), make(), make()
    assert temporal_attention_supported(q, k, v, 4, 2)
    assert not temporal_attention_supported(make(bf=65), make(bf=65), make(bf=65), 65, 2)  # > 64 frames
    assert not temporal_attention_supported(q, k.half(), v, 4, 2)  # mixed dtypes
    assert not temporal_attention_supported(q.double(), k.double(), v.double(), 4, 2)
    assert not temporal_attention_supported(q, k, v, 3, 2)  # 8 rows are not clips of 3 frames
    assert not temporal_attention_supported(q, k, v, 4, 3)  # 16 channels, 3 heads
    assert not temporal_attention_supported(q, k, v, 0, 2)
    assert not temporal_attention_supported(q, make(d=5), v, 4, 2)  # shapes differ
    assert not temporal_attention_supported(q[0], k[0], v[0], 4, 2)  # 2-D
    assert not temporal_attention_supported(make(c=600), make(c=600), make(c=600), 4, 2)  # head_dim 300
    assert not temporal_attention_supported(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), 4, 2)
    with pytest.raises(ValueError):
        temporal_attention(q, k, v, 3, 2)
    if DEVICE == "cpu":  # CPU tensors only go to Triton under its interpreter
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        assert not interpreting()
        assert not temporal_attention_supported(q, k, v, 4, 2)
    else:  # CPU tensors with a GPU around: not the kernel's
        assert not temporal_attention_supported(q.cpu(), k.cpu(), v.cpu(), 4, 2)
