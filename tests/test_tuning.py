"""One-shot tuning: it learns, trains only what it should, is reproducible, and its delta reloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from tuneavideo import Cancelled, InputError, ModelLoadError, TuneConfig, TunedDelta, tune
from tuneavideo.tuning import denoising_loss, load_inverted, save_inverted, select_trainable


def _clip(num_frames: int = 4, size: int = 32) -> np.ndarray:
    """A red square moving right on grey."""
    frames = np.full((num_frames, size, size, 3), 120, np.uint8)
    for i in range(num_frames):
        frames[i, 10:20, 2 + 4 * i : 12 + 4 * i] = (220, 30, 30)
    return frames


def _fixed_batch_loss(pipe, latents, embeds) -> float:
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(latents.shape, generator=g)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        losses = [
            denoising_loss(pipe.unet, sched, latents, embeds, noise, torch.tensor([t])).item() for t in (100, 400, 700)
        ]
    return float(np.mean(losses))


def test_tuning_learns_and_touches_only_trainable_parameters(tiny_pipe):
    pipe = tiny_pipe
    frames = _clip()
    latents = pipe.encode_video(frames)
    embeds = pipe.encode_prompt("a red square moving right")
    before_state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    vae_before = {k: v.clone() for k, v in pipe.vae.state_dict().items()}
    loss_before = _fixed_batch_loss(pipe, latents, embeds)

    events = []
    delta = tune(
        pipe,
        frames,
        "a red square moving right",
        TuneConfig(max_train_steps=20, learning_rate=2e-3),
        callback=events.append,
    )
    loss_after = _fixed_batch_loss(pipe, latents, embeds)
    # untouched weights would give exactly the same loss; a clear drop means it learned
    assert loss_after < 0.95 * loss_before, (loss_before, loss_after)

    trainable = set(select_trainable(pipe.unet, TuneConfig().trainable_modules))
    assert set(delta.state_dict) == trainable
    assert delta.record["skipped_steps"] == 0  # no loss scaling on a CPU: every step applied
    assert not any("norm_temp" in k for k in trainable)  # frozen, as in the official code
    assert all(k.endswith((".weight", ".bias")) for k in trainable)
    after_state = pipe.unet.state_dict()
    for key, value in before_state.items():
        if key in trainable:
            continue
        assert torch.equal(after_state[key], value), f"{key} changed but is not trainable"
    assert any(not torch.equal(after_state[k], before_state[k]) for k in trainable)
    for key, value in pipe.vae.state_dict().items():
        assert torch.equal(vae_before[key], value)
    assert not any(p.requires_grad for p in pipe.unet.parameters())
    # progress: one event per step with loss and ETA
    assert [e.step for e in events] == list(range(1, 21)) and all(e.loss is not None for e in events)
    assert events[-1].eta == 0


def test_tuning_is_reproducible_with_a_seed(tiny_sd):
    from tuneavideo import TuneAVideoPipeline

    deltas = []
    for _ in range(2):
        pipe = TuneAVideoPipeline.from_pretrained(tiny_sd)
        deltas.append(tune(pipe, _clip(3), "x", TuneConfig(max_train_steps=3, learning_rate=1e-3, seed=5)))
    for key in deltas[0].state_dict:
        assert torch.equal(deltas[0].state_dict[key], deltas[1].state_dict[key])
    assert deltas[0].losses == deltas[1].losses


def test_saved_delta_reloads_to_identical_outputs(tiny_sd, tmp_path: Path):
    from tuneavideo import TuneAVideoPipeline

    pipe = TuneAVideoPipeline.from_pretrained(tiny_sd)
    delta = tune(pipe, _clip(3), "a red square", TuneConfig(max_train_steps=3, learning_rate=1e-3))
    delta.save(tmp_path / "tuned", dtype=None)
    x, text = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 77, 32)
    with torch.no_grad():
        tuned_out = pipe.unet(x, 300, text).sample

    fresh = TuneAVideoPipeline.from_pretrained(tiny_sd)
    base_state = {k: v.clone() for k, v in fresh.unet.state_dict().items()}
    loaded = TunedDelta.load(tmp_path / "tuned")
    assert loaded.record["prompt"] == "a red square" and loaded.record["seed"] == 33
    assert {"torch", "diffusers", "transformers"} <= set(loaded.record["versions"])
    with loaded.applied(fresh.unet), torch.no_grad():
        torch.testing.assert_close(fresh.unet(x, 300, text).sample, tuned_out, rtol=0, atol=0)
    for key, value in fresh.unet.state_dict().items():  # removed again: base bit-identical
        assert torch.equal(value, base_state[key])
    # the default (fp16) file is about half the size
    delta.save(tmp_path / "fp16")
    assert (tmp_path / "fp16" / "tuned.safetensors").stat().st_size < 0.6 * (
        tmp_path / "tuned" / "tuned.safetensors"
    ).stat().st_size


def test_delta_refuses_another_base(tiny_sd):
    from tuneavideo import TuneAVideoPipeline

    pipe = TuneAVideoPipeline.from_pretrained(tiny_sd)
    delta = tune(pipe, _clip(2), "x", TuneConfig(max_train_steps=1))
    other = TuneAVideoPipeline.from_pretrained(tiny_sd)
    with torch.no_grad():
        other.unet.conv_in.weight.add_(1.0)
    with pytest.raises(ModelLoadError, match="base"):
        delta.apply(other.unet)


def test_cancel_stops_within_a_step(tiny_pipe):
    seen = []

    def cb(event):
        seen.append(event.step)
        if event.step == 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        tune(tiny_pipe, _clip(2), "x", TuneConfig(max_train_steps=50), callback=cb)
    assert seen == [1, 2]
    assert not any(p.requires_grad for p in tiny_pipe.unet.parameters())


def test_bad_tune_configs():
    with pytest.raises(InputError):
        TuneConfig(learning_rate=0)
    with pytest.raises(InputError):
        TuneConfig(mixed_precision="fp8")


def test_mixed_precision_needs_gpu(tiny_pipe):
    if torch.cuda.is_available():
        pytest.skip("GPU present")
    with pytest.raises(InputError, match="CUDA"):
        tune(tiny_pipe, _clip(2), "x", TuneConfig(max_train_steps=1, mixed_precision="fp16"))


def test_inverted_latents_round_trip(tmp_path: Path):
    lat = torch.randn(1, 4, 3, 8, 8)
    save_inverted(lat, tmp_path, {"num_inference_steps": 50})
    back, meta = load_inverted(tmp_path)
    assert meta["num_inference_steps"] == 50
    torch.testing.assert_close(back.float(), lat, atol=2e-3, rtol=2e-3)
