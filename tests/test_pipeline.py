"""Sampling and DDIM inversion: official semantics, reconstruction, shapes, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from tuneavideo import InputError
from tuneavideo.inversion import ddim_inversion_step


def _smooth(pipe):
    """Shrink the random UNet's output so ε varies slowly, as a trained model's does (DDIM
    inversion is only approximately invertible, and a random net's ε jumps between steps)."""
    with torch.no_grad():
        pipe.unet.conv_out.weight.mul_(0.05)
        pipe.unet.conv_out.bias.mul_(0.05)
    return pipe


def test_sampling_shapes_and_output_types(tiny_pipe):
    g = torch.Generator().manual_seed(0)
    out = tiny_pipe("a red square", num_frames=3, height=32, width=32, num_inference_steps=2, generator=g)
    assert out.videos.shape == (1, 3, 32, 32, 3)
    assert out.videos.dtype == np.float32 and 0 <= out.videos.min() and out.videos.max() <= 1
    pt = tiny_pipe(["a", "b"], num_frames=2, height=32, width=32, num_inference_steps=2, output_type="pt").videos
    assert pt.shape == (2, 3, 2, 32, 32)
    lat = tiny_pipe("a", num_frames=2, height=32, width=48, num_inference_steps=2, output_type="latent").videos
    assert lat.shape == (1, 4, 2, 16, 24)


def test_same_seed_same_video_and_random_latents_are_one_randn(tiny_pipe):
    kw = dict(num_frames=3, height=32, width=32, num_inference_steps=2, output_type="latent", guidance_scale=1.0)
    a = tiny_pipe("x", generator=torch.Generator().manual_seed(3), **kw).videos
    b = tiny_pipe("x", generator=torch.Generator().manual_seed(3), **kw).videos
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # official: the starting noise is one randn(b, 4, f, h/8, w/8): passing it explicitly is identical
    noise = torch.randn((1, 4, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    c = tiny_pipe("x", latents=noise, **kw).videos
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_cfg_is_uncond_plus_scale_times_difference(tiny_pipe):
    """One step from the same latents: u + s(c - u) computed by hand equals the pipeline."""
    pipe = tiny_pipe
    noise = torch.randn(1, 4, 2, 16, 16)
    out = pipe("a cat", latents=noise, num_inference_steps=1, guidance_scale=7.0, output_type="latent").videos
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(1)
    t = sched.timesteps[0]
    with torch.no_grad():
        u = pipe.unet(noise, t, encoder_hidden_states=pipe.encode_prompt("")).sample
        c = pipe.unet(noise, t, encoder_hidden_states=pipe.encode_prompt("a cat")).sample
    expected = sched.step(u + 7.0 * (c - u), t, noise).prev_sample
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_inversion_step_matches_official_formula():
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
    )
    sched.set_timesteps(50)
    assert sched.timesteps[-1] == 1 and sched.timesteps[0] == 981
    x, eps = torch.randn(3), torch.randn(3)
    # first inversion step: t = 1 evaluated, moving from "t = -19" (alpha = final_alpha_cumprod) to 1
    a0, a1 = sched.final_alpha_cumprod, sched.alphas_cumprod[1]
    expected = a1.sqrt() * (x - (1 - a0).sqrt() * eps) / a0.sqrt() + (1 - a1).sqrt() * eps
    torch.testing.assert_close(ddim_inversion_step(eps, 1, x, sched), expected)
    a20, a21 = sched.alphas_cumprod[1], sched.alphas_cumprod[21]
    expected = a21.sqrt() * (x - (1 - a20).sqrt() * eps) / a20.sqrt() + (1 - a21).sqrt() * eps
    torch.testing.assert_close(ddim_inversion_step(eps, 21, x, sched), expected)


def test_invert_returns_all_intermediates(tiny_pipe):
    lat = torch.randn(1, 4, 2, 16, 16) * 0.5
    traj = tiny_pipe.invert(lat, num_inference_steps=5, return_all=True)
    assert len(traj) == 6 and torch.equal(traj[0], lat)
    last = tiny_pipe.invert(lat, num_inference_steps=5)
    torch.testing.assert_close(last, traj[-1], rtol=0, atol=0)


def test_inversion_then_sampling_reconstructs_the_source(tiny_pipe):
    """Invert with "" and sample back at guidance 1 with "": the source latents come back.

    Tolerance: max abs error < 0.05 for latents of std ~0.5 with 40 steps (DDIM inversion is exact
    only in the continuous limit; the residual shrinks with more steps, checked below).
    """
    pipe = _smooth(tiny_pipe)
    torch.manual_seed(0)
    x0 = torch.randn(1, 4, 2, 16, 16) * 0.5
    errors = {}
    for steps in (10, 40):
        xt = pipe.invert(x0, num_inference_steps=steps)
        assert (xt - x0).abs().mean() > 0.3  # it really moved far along the schedule
        rec = pipe("", latents=xt, num_inference_steps=steps, guidance_scale=1.0, output_type="latent").videos
        errors[steps] = (rec - x0).abs().max().item()
    assert errors[40] < 0.05, errors
    assert errors[40] < errors[10], errors


def test_encode_decode_video_shapes(tiny_pipe):
    frames = (np.random.default_rng(0).random((3, 32, 48, 3)) * 255).astype(np.uint8)
    lat = tiny_pipe.encode_video(frames)
    assert lat.shape == (1, 4, 3, 16, 24)
    video = tiny_pipe.decode_latents(lat)
    assert video.shape == (1, 3, 3, 32, 48)


def test_bad_sampling_inputs_are_clear(tiny_pipe):
    with pytest.raises(InputError, match="multiple of 2"):
        tiny_pipe("x", num_frames=2, height=33, width=32, num_inference_steps=1)
    with pytest.raises(InputError, match="latents have shape"):
        tiny_pipe(["a", "b", "c"], latents=torch.randn(2, 4, 2, 16, 16), num_inference_steps=1)
    with pytest.raises(InputError, match="output_type"):
        tiny_pipe("x", num_frames=1, height=32, width=32, num_inference_steps=1, output_type="gif")
    with pytest.raises(InputError, match="uint8"):
        tiny_pipe.encode_video(np.zeros((2, 32, 32, 3), dtype=np.float32))


def test_official_style_calls_work(tiny_pipe, tiny_sd):
    """The official names: video_length=, output_type="tensor", callback(i, t, latents), from_pretrained_2d."""
    seen = []
    out = tiny_pipe("x", video_length=2, height=32, width=32, num_inference_steps=2, output_type="tensor",
                    callback=lambda i, t, latents: seen.append((i, int(t), tuple(latents.shape))))  # fmt: skip
    assert out.videos.shape == (1, 3, 2, 32, 32)
    assert [s[0] for s in seen] == [0, 1] and seen[0][2] == (1, 4, 2, 16, 16)
    from tuneavideo import TuneAVideoUNet

    unet = TuneAVideoUNet.from_pretrained_2d(tiny_sd, subfolder="unet")
    assert unet(torch.randn(1, 4, 2, 16, 16), 1, encoder_hidden_states=torch.randn(1, 77, 32))["sample"].shape == (
        1,
        4,
        2,
        16,
        16,
    )
