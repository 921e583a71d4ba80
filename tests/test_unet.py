"""Inflation: equivalence with the stock 2D UNet, sparse-causal frame access, clip GroupNorm, names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from tuneavideo.attention import FrameContext, SparseCausalAttnProcessor, former_frame_index
from tuneavideo.testing import tiny_unet, tiny_unet2d
from tuneavideo.unet import ClipGroupNorm, TuneAVideoUNet, temporal_parameter_names


def _inflated_with_zero_temporal(unet2d):
    unet = TuneAVideoUNet.from_unet2d(unet2d)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "attn_temp.to_out" in name:
                p.zero_()
    return unet.eval()


def test_one_frame_equals_2d_unet():
    unet2d = tiny_unet2d(seed=1)
    unet = _inflated_with_zero_temporal(unet2d)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 1, 16, 16)
    t = torch.tensor([3, 700])
    text = torch.randn(2, 77, 32)
    with torch.no_grad():
        ours = unet(x, t, text).sample
        ref = unet2d(x[:, :, 0], t, text).sample
    assert ours.shape == x.shape
    torch.testing.assert_close(ours[:, :, 0], ref, atol=1e-5, rtol=1e-5)


def test_identical_frames_equal_2d_unet_per_frame():
    unet2d = tiny_unet2d(seed=2)
    unet = _inflated_with_zero_temporal(unet2d)
    torch.manual_seed(0)
    frame = torch.randn(1, 4, 1, 16, 16)
    x = frame.expand(1, 4, 5, 16, 16).contiguous()
    text = torch.randn(1, 77, 32)
    with torch.no_grad():
        ours = unet(x, 250, text).sample
        ref = unet2d(frame[:, :, 0], 250, text).sample
    for i in range(5):
        torch.testing.assert_close(ours[:, :, i], ref, atol=1e-5, rtol=1e-5)


def test_fresh_inflation_zero_inits_only_the_output_weight():
    unet = TuneAVideoUNet.from_unet2d(tiny_unet2d())
    names = temporal_parameter_names(unet)
    assert names and all("attn_temp" in n or "norm_temp" in n for n in names)
    state = unet.state_dict()
    for name in names:
        if name.endswith("attn_temp.to_out.0.weight"):
            assert torch.count_nonzero(state[name]) == 0
        if name.endswith("attn_temp.to_out.0.bias"):
            assert torch.count_nonzero(state[name]) > 0  # default Linear init, as the official code
    # Parameter names are the stock SD names plus the temporal ones: nothing renamed.
    assert set(state) - set(names) == set(tiny_unet2d().state_dict())


def _sc_attention(num_frames: int) -> tuple[Attention, FrameContext]:
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    ctx = FrameContext(num_frames)
    attn.set_processor(SparseCausalAttnProcessor(ctx))
    return attn.eval(), ctx


def test_sparse_causal_sees_exactly_first_and_previous_frame():
    f, n = 6, 5
    attn, _ = _sc_attention(f)
    torch.manual_seed(1)
    x = torch.randn(f, n, 16)  # (b f) n c with b = 1
    with torch.no_grad():
        base = attn(x)
    for i in range(f):
        seen = {0, max(i - 1, 0), i}  # queries come from frame i itself
        for j in range(f):
            y = x.clone()
            y[j] += torch.randn(n, 16)
            with torch.no_grad():
                out = attn(y)
            changed = not torch.allclose(out[i], base[i], atol=1e-6)
            assert changed == (j in seen), (i, j)


def test_sparse_causal_matches_explicit_reference():
    f, n = 4, 3
    attn, _ = _sc_attention(f)
    x = torch.randn(2 * f, n, 16)  # two videos
    with torch.no_grad():
        out = attn(x)
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        prev = former_frame_index(f)
        ref = torch.empty_like(out)
        for b in range(2):
            for i in range(f):
                keys = torch.cat([k[b * f], k[b * f + prev[i]]])  # [frame 0 | frame i-1] tokens
                vals = torch.cat([v[b * f], v[b * f + prev[i]]])
                qh = q[b * f + i].view(n, 2, 8).transpose(0, 1)
                kh, vh = keys.view(2 * n, 2, 8).transpose(0, 1), vals.view(2 * n, 2, 8).transpose(0, 1)
                w = torch.softmax(qh @ kh.transpose(1, 2) / 8**0.5, dim=-1)
                ref[b * f + i] = attn.to_out[0]((w @ vh).transpose(0, 1).reshape(n, 16))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert former_frame_index(5).tolist() == [0, 0, 1, 2, 3]


def test_clip_group_norm_pools_over_frames():
    ctx = FrameContext(3)
    norm = ClipGroupNorm(4, 8, 1e-5, True, ctx)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x5 = torch.randn(2, 8, 3, 5, 5)  # (b, c, f, h, w)
    ref = F.group_norm(x5, 4, norm.weight, norm.bias, 1e-5)  # the official 5-D GroupNorm
    folded = x5.permute(0, 2, 1, 3, 4).reshape(6, 8, 5, 5)
    out = norm(folded).view(2, 3, 8, 5, 5).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # per-frame statistics would differ: the norm really is over the clip
    assert not torch.allclose(
        out, F.group_norm(folded, 4, norm.weight, norm.bias, 1e-5).view(2, 3, 8, 5, 5).permute(0, 2, 1, 3, 4)
    )


def test_temporal_attention_mixes_frames_and_is_causal_free():
    unet = tiny_unet(seed=3)  # random temporal output weights
    x = torch.randn(1, 4, 4, 16, 16)
    text = torch.randn(1, 77, 32)
    with torch.no_grad():
        base = unet(x, 10, text).sample
        y = x.clone()
        y[:, :, 3] += 1.0  # change only the last frame
        out = unet(y, 10, text).sample
    # temporal attention is bidirectional: frame 0 must react to a change of frame 3
    assert not torch.allclose(out[:, :, 0], base[:, :, 0], atol=1e-5)


def test_rejects_non_5d_input_and_foreign_processors():
    unet = tiny_unet()
    with pytest.raises(ValueError, match=r"\(b, c, f, h, w\)"):
        unet(torch.randn(1, 4, 16, 16), 1, torch.randn(1, 77, 32))
    from diffusers.models.attention_processor import AttnProcessor2_0

    with pytest.raises(ValueError, match="SparseCausal"):
        unet.set_attn_processor(AttnProcessor2_0())
    unet.set_default_attn_processor()  # allowed: keeps sparse-causal
    procs = unet.attn_processors
    assert all(isinstance(p, SparseCausalAttnProcessor) for k, p in procs.items() if k.endswith("attn1.processor"))


def test_per_video_timesteps_and_batch_independence():
    unet = tiny_unet(seed=4)
    x = torch.randn(2, 4, 3, 16, 16)
    text = torch.randn(2, 77, 32)
    with torch.no_grad():
        both = unet(x, torch.tensor([5, 900]), text).sample
        first = unet(x[:1], 5, text[:1]).sample
        second = unet(x[1:], 900, text[1:]).sample
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_same_gradients():
    unet = tiny_unet(seed=5).train()
    x = torch.randn(1, 4, 3, 16, 16)
    text = torch.randn(1, 77, 32)
    unet(x, 10, text).sample.square().mean().backward()
    ref = {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}
    unet.zero_grad()
    unet.enable_gradient_checkpointing()
    unet(x, 10, text).sample.square().mean().backward()
    for name, g in ref.items():
        torch.testing.assert_close(dict(unet.named_parameters())[name].grad, g, atol=1e-5, rtol=1e-4)
