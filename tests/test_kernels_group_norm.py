"""The fused clip-GroupNorm (+ SiLU, + offset) Triton kernels and the ResNet blocks built on them.

On a machine without CUDA they run in Triton's CPU interpreter (conftest sets ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from tuneavideo.kernels import triton_usable
from tuneavideo.kernels.group_norm import clip_group_norm, clip_group_norm_supported

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _kernels_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the kernels take CPU tensors (Triton's interpreter) in these tests."""
    monkeypatch.setenv("TUNEAVIDEO_TRITON_CPU", "1")


def reference(x, f, groups, weight, bias, eps, silu=False, offset=None):
    """F.group_norm on the (clips, c, frames, h, w) view of ``x + offset``, then SiLU."""
    if offset is not None:
        x = x + offset[:, :, None, None]
    n, c, h, w = x.shape
    y = F.group_norm(x.view(n // f, f, c, h, w).transpose(1, 2), groups, weight, bias, eps)
    y = y.transpose(1, 2).reshape(n, c, h, w)
    return F.silu(y) if silu else y


CASES = [  # clips, frames, channels, groups, h, w, silu, offset, affine
    (1, 3, 8, 2, 5, 7, True, True, True),  # odd plane size, masked tiles
    (2, 4, 12, 4, 16, 16, False, False, True),
    (1, 24, 8, 4, 4, 4, True, False, False),
    (2, 1, 6, 3, 40, 40, True, True, True),  # one frame: a plain GroupNorm; planes of 1600 > one tile's 1024
    (1, 17, 4, 1, 3, 3, False, True, True),  # frames not a power of two
]


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("clips,f,c,groups,h,w,silu,use_offset,affine", CASES)
def test_matches_the_5d_group_norm_forward_and_backward(clips, f, c, groups, h, w, silu, use_offset, affine,
                                                        channels_last):  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(clips * f, c, h, w, generator=gen) * 3 + 5).to(DEVICE)  # a large mean
    if channels_last:  # NHWC memory: the output keeps it, a gradient in another layout is taken too
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(c, generator=gen).to(DEVICE).requires_grad_() if affine else None
    bias = torch.randn(c, generator=gen).to(DEVICE).requires_grad_() if affine else None
    offset = torch.randn(clips * f, c, generator=gen).to(DEVICE).requires_grad_() if use_offset else None
    assert clip_group_norm_supported(x, f, groups, weight, offset)
    got = clip_group_norm(x, f, groups, weight, bias, 1e-5, silu=silu, offset=offset)
    want = reference(x, f, groups, weight, bias, 1e-5, silu, offset)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    inputs = [t for t in (x, weight, bias, offset) if t is not None]
    grad_out = torch.randn(got.shape, generator=gen).to(DEVICE)
    got_grads = torch.autograd.grad(got, inputs, grad_out)
    want_grads = torch.autograd.grad(want, inputs, grad_out)
    for g, r in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


def test_half_precision_keeps_fp32_statistics():
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2 * 3, 16, 8, 8, generator=gen) * 0.05 + 30).to(DEVICE)  # tiny spread on a large mean
    weight, bias = torch.rand(16, generator=gen).to(DEVICE) + 0.5, torch.randn(16, generator=gen).to(DEVICE)
    want = reference(x, 3, 4, weight, bias, 1e-6, silu=True)
    half = torch.bfloat16
    got = clip_group_norm(x.to(half), 3, 4, weight.to(half), bias.to(half), 1e-6, silu=True)
    assert got.dtype == half
    # the input's rounding to bf16 (~0.1 at 30) dominates the error, not the statistics
    want_rounded = reference(x.to(half).float(), 3, 4, weight.to(half).float(), bias.to(half).float(), 1e-6, True)
    torch.testing.assert_close(got.float(), want_rounded, rtol=0.02, atol=0.02)
    assert (got.float() - want).abs().mean() < 1.0


def test_only_what_needs_a_gradient_gets_one():
    x = torch.randn(4, 8, 4, 4, device=DEVICE, requires_grad=True)
    weight = torch.ones(8, device=DEVICE)  # frozen, like the ResNets' norms while tuning
    y = clip_group_norm(x, 2, 4, weight, torch.zeros(8, device=DEVICE), 1e-5, silu=True)
    (gx,) = torch.autograd.grad(y.sum(), [x])
    assert gx.shape == x.shape and torch.isfinite(gx).all()
    with torch.no_grad():
        assert not clip_group_norm(x, 2, 4, weight, None, 1e-5).requires_grad


def test_inputs_it_does_not_take_are_refused(monkeypatch):
    x = torch.randn(6, 8, 4, 4, device=DEVICE)
    assert clip_group_norm_supported(x, 3, 4)
    assert not clip_group_norm_supported(x, 4, 4)  # frames must divide the batch
    assert not clip_group_norm_supported(x, 3, 3)  # groups must divide the channels
    assert not clip_group_norm_supported(x.transpose(2, 3), 3, 4)  # contiguous NCHW or NHWC only
    assert clip_group_norm_supported(x.contiguous(memory_format=torch.channels_last), 3, 4)
    assert not clip_group_norm_supported(x.double(), 3, 4)
    assert not clip_group_norm_supported(torch.randn(66, 8, 2, 2, device=DEVICE), 66, 4)  # > 64 frames
    assert not clip_group_norm_supported(x, 3, 4, offset=torch.randn(6, 4, device=DEVICE))
    assert not clip_group_norm_supported(x, 3, 4, weight=torch.randn(4, device=DEVICE))
    import tuneavideo.kernels as kernels

    monkeypatch.delenv("TUNEAVIDEO_TRITON_CPU")
    assert triton_usable(x) == (DEVICE == "cuda")  # whole-model CPU runs keep PyTorch's ops
    monkeypatch.setenv("TUNEAVIDEO_TRITON_CPU", "1")
    monkeypatch.setattr(kernels, "interpreting", lambda: False)
    assert triton_usable(x) == (DEVICE == "cuda")  # CPU tensors only under the interpreter
    monkeypatch.setenv("TUNEAVIDEO_TRITON", "0")
    assert not triton_usable(x)  # the switch back to PyTorch's ops


def _resnet(in_channels: int, out_channels: int, f: int, **kwargs: object):
    from diffusers.models.resnet import ResnetBlock2D

    from tuneavideo.attention import FrameContext
    from tuneavideo.unet import ClipGroupNorm

    torch.manual_seed(0)
    block = ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=16, groups=4, **kwargs)
    context = FrameContext(num_frames=f, fast_kernels=True)
    for name in ("norm1", "norm2"):
        norm = ClipGroupNorm.from_group_norm(getattr(block, name), context)
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
        setattr(block, name, norm)
    return block.to(DEVICE), context


@pytest.mark.parametrize("in_channels,out_channels,scale", [(8, 8, 1.0), (8, 12, 1.0), (8, 8, 2.0)])
def test_the_fused_resnet_matches_the_stock_forward(in_channels, out_channels, scale):
    from tuneavideo.fused_blocks import fused_resnet_forward, set_fused_resnet

    f = 3
    block, context = _resnet(in_channels, out_channels, f, output_scale_factor=scale)
    block.requires_grad_(False)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2 * f, in_channels, 6, 6, generator=gen).to(DEVICE).requires_grad_()
    temb = torch.randn(2 * f, 16, generator=gen).to(DEVICE)
    context.fast_kernels = False
    want = block(x, temb)  # the stock forward over the reference ClipGroupNorm
    (want_grad,) = torch.autograd.grad(want.square().sum(), [x])
    context.fast_kernels = True
    set_fused_resnet(block, True)
    assert block.forward.func is fused_resnet_forward
    got = block(x, temb)
    (got_grad,) = torch.autograd.grad(got.square().sum(), [x])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-4)
    set_fused_resnet(block, False)
    assert "forward" not in block.__dict__


def test_the_kernels_need_a_c_compiler_on_a_gpu(monkeypatch):
    import shutil

    import tuneavideo.kernels as kernels

    kernels._c_compiler.cache_clear()
    monkeypatch.setattr(shutil, "which", lambda name: None)  # a runtime-only image: Triton could not build launchers
    try:
        assert not kernels._c_compiler()
    finally:
        kernels._c_compiler.cache_clear()


def test_a_fused_resnet_leaves_an_odd_time_embedding_to_diffusers():
    from tuneavideo.fused_blocks import set_fused_resnet

    block, _ = _resnet(8, 8, 2)
    set_fused_resnet(block, True)
    x = torch.randn(4, 8, 4, 4, device=DEVICE)
    with pytest.raises(TypeError):  # stock: a projection without an embedding fails the same way
        block(x, None)


def test_resnets_the_kernels_do_not_cover_keep_their_forward():
    from tuneavideo.fused_blocks import set_fused_resnet

    block, _ = _resnet(8, 8, 2, up=True)  # an upsampling ResNet: stock forward
    set_fused_resnet(block, True)
    assert "forward" not in block.__dict__
    block, _ = _resnet(8, 8, 2)
    compiled = block.forward
    block.forward = compiled  # e.g. a compiled forward: left alone both ways
    set_fused_resnet(block, True)
    assert block.__dict__["forward"] is compiled
    set_fused_resnet(block, False)
    assert block.__dict__["forward"] is compiled


def test_the_fast_mode_routes_resnets_through_the_kernels(tiny_pipe):
    from diffusers.models.resnet import ResnetBlock2D

    resnets = [m for m in tiny_pipe.unet.modules() if isinstance(m, ResnetBlock2D)]
    tiny_pipe.set_speed_mode("fast")
    assert all("forward" in m.__dict__ for m in resnets)
    tiny_pipe.set_speed_mode("plain")
    assert not any("forward" in m.__dict__ for m in resnets)


def test_a_channels_last_unet_matches_the_nchw_one_and_stays_nhwc(monkeypatch):
    """SpeedPlan.channels_last: NHWC conv weights keep every activation NHWC through the fused ResNets, the
    GroupNorm kernels and the transformers' token projections; outputs and gradients match the NCHW run."""
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from tuneavideo import speed, testing
    from tuneavideo.fused_blocks import set_fused_resnet
    from tuneavideo.kernels import channels_last_memory
    from tuneavideo.unet import TuneAVideoUNet

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convs in fp32 (NCHW / NHWC algorithms)
    torch.manual_seed(0)
    unet = TuneAVideoUNet(**testing.TINY_UNET_CONFIG).to(DEVICE)
    unet.requires_grad_(False)
    trained = [p for n, p in unet.named_parameters() if "to_q" in n or "_temp." in n]
    unet.frame_context.fast_kernels = True
    for block in unet.modules():
        if isinstance(block, ResnetBlock2D):
            set_fused_resnet(block, True)
        if isinstance(block, Transformer2DModel):
            speed._set_token_projections(block, True)
    x = torch.randn(2, 4, 3, 8, 8, device=DEVICE)
    text = torch.randn(2, 7, unet.config.cross_attention_dim, device=DEVICE)
    convs = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    results = {}
    for nhwc in (False, True):
        speed._set_conv_layout(unet, nhwc)
        layouts: list[bool] = []
        hooks = [c.register_forward_hook(lambda m, a, out, seen=layouts: seen.append(channels_last_memory(a[0])))
                 for c in convs]  # fmt: skip  # what reaches each conv: nothing went back to NCHW on the way
        for p in trained:
            p.requires_grad_(True)
            p.grad = None
        out = unet(x, 10, text).sample
        out.square().mean().backward()
        for hook in hooks:
            hook.remove()
        results[nhwc] = out.detach(), [p.grad for p in trained], layouts
    (ref, ref_grads, ref_layouts), (got, grads, layouts) = results[False], results[True]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-3, atol=1e-5 + 1e-3 * ref_grad.abs().max().item())
    assert len(layouts) > 10 and all(layouts[1:]) and not any(ref_layouts)  # conv_in's input: the NCHW video
    speed._set_conv_layout(unet, False)
    assert all(c.weight.is_contiguous() for c in convs)
