"""Engine: content-keyed caches shared by sessions, byte budget, bit-exact base restore, cancel, re-edits.

CPU, offline, tiny random SD (4 frames of 32x32 -> 16x16 latents, 2 tuning steps, 2-3 sampling steps).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tuneavideo.cache import ArtifactCache, nbytes_of
from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
from tuneavideo.errors import Cancelled, InputError, ModelLoadError, VideoError
from tuneavideo.video import probe_video

SPEC = VideoSpec(num_frames=4, width=32, height=32)
TUNE = TuneConfig(max_train_steps=2, learning_rate=1e-3)
SAMPLE = SampleConfig(num_inference_steps=2, guidance_scale=7.5, seed=5)
FAST = SampleConfig(num_inference_steps=1, guidance_scale=1.0, seed=5)  # one UNet pass per step, no CFG
INVERT = InvertConfig(num_inference_steps=2)


def _state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


def _assert_identical(unet: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    now = unet.state_dict()
    assert now.keys() == state.keys()
    changed = [k for k, v in state.items() if not torch.equal(now[k], v)]
    assert not changed, f"base UNet changed: {changed[:5]}"


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine()


@pytest.fixture(scope="module")
def base_state(engine):
    return _state(engine.pipe.unet)


@pytest.fixture(scope="module")
def audio_clip(tiny_clip: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny clip with a 440 Hz tone muxed in (10 frames at 8 fps = 1.25 s)."""
    from video_clips import write_clip

    from tuneavideo.video import read_video

    frames, _ = read_video(tiny_clip, VideoSpec(num_frames=10, width=64, height=48, resize="squash"))
    out = write_clip(tmp_path_factory.mktemp("audio") / "clip-audio.mp4", frames, fps=8, tone=(440.0, None))
    return str(out)


# ------------------------------------------------------------------------------------------ the cache
def test_artifact_cache_budget_lru_pins_and_spill(tmp_path: Path):
    cache = ArtifactCache(max_bytes=1000, spill_dir=tmp_path / "spill")
    blob = lambda: np.zeros(400, np.uint8)  # noqa: E731
    cache.put("a", blob(), session="s1")
    cache.put("b", blob(), session="s1")
    assert cache.get("a", "s1") is not None  # a is now the most recent
    cache.put("c", blob(), session="s1")  # 1200 > 1000: evicts the LRU entry, b
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.nbytes <= 1000
    with cache.pin("a", "c"):
        cache.put("d", blob(), session="s1")  # a, c pinned; d is new: over budget until the pins go
        assert {"a", "c", "d"} <= set(cache.keys())
    assert cache.nbytes <= 1000

    # spill: a "tuned"-like kind goes to disk and comes back equal
    cache.register_spill("arr", lambda v, folder: (folder.mkdir(parents=True), np.save(folder / "v.npy", v)),
                         lambda folder: np.load(folder / "v.npy"))  # fmt: skip
    cache.clear()
    cache.put("x", np.arange(200, dtype=np.int32), kind="arr", session="s1")  # 800 bytes
    cache.put("y", np.zeros(500, np.uint8), session="s1")
    st = cache.stats()
    assert st["spilled_entries"] == 1 and st["bytes"] <= 1000
    assert np.array_equal(cache.get("x", "s1"), np.arange(200, dtype=np.int32))
    assert cache.stats()["reloads"] == 1 and cache.nbytes <= 1000
    assert nbytes_of({"t": torch.zeros(4, dtype=torch.float16), "n": [np.zeros(3, np.uint8)]}) == 11


def test_cache_release_keeps_shared_entries_until_last_session():
    cache = ArtifactCache(max_bytes=10**6)
    cache.put("shared", np.zeros(10, np.uint8), session="s1")
    assert cache.get("shared", "s2") is not None
    cache.put("own", np.zeros(10, np.uint8), session="s1")
    assert cache.release("s1") == 10
    assert "shared" in cache and "own" not in cache
    assert cache.release("s2") == 10
    assert len(cache) == 0 and cache.nbytes == 0


# ------------------------------------------------------------------------------------------ the engine
def test_two_sessions_share_a_tuned_model_and_release_frees_it(engine, tiny_clip, base_state):
    before = engine.stats()
    r1 = engine.tune("alice", tiny_clip, "a red square moves right", SPEC, TUNE, preview_steps=1)
    assert not r1.cache_hit and len(r1.losses) == TUNE.max_train_steps
    assert Path(r1.preview_path).is_file() and Path(r1.download_path).suffix == ".zip"
    _assert_identical(engine.pipe.unet, base_state)  # tuning left the shared UNet as it was

    events = []
    r2 = engine.tune("bob", tiny_clip, "a red square moves right", SPEC, TUNE, progress=events.append, preview_steps=1)
    assert r2.cache_hit and r2.tune_key == r1.tune_key
    assert not [e for e in events if e.stage == "tune"]  # nothing was tuned again
    after = engine.stats()
    assert after["hits"] >= before["hits"] + 2  # the tuned delta and the decoded clip
    assert np.array_equal(r1.preview_frames, r2.preview_frames)

    # bob cannot see alice's other models, and alice's release keeps the shared entries for bob
    assert [m.tune_key for m in engine.models("bob")] == [r1.tune_key]
    engine.release("alice")
    assert r1.tune_key in engine.cache
    assert not Path(r1.preview_path).exists()  # alice's files are gone
    engine.release("bob")
    assert r1.tune_key not in engine.cache
    assert engine.cache.keys("alice") == [] and engine.cache.keys("bob") == []


def test_apply_and_remove_delta_is_bit_identical(engine, tuned, base_state):
    _assert_identical(engine.pipe.unet, base_state)  # after tuning
    delta = engine.cache.peek(tuned.tune_key).delta
    with delta.applied(engine.pipe.unet):
        now = engine.pipe.unet.state_dict()
        assert any(not torch.equal(now[k], base_state[k]) for k in delta.state_dict)
    _assert_identical(engine.pipe.unet, base_state)


def test_cancel_mid_tune_restores_the_base_and_engine_stays_usable(engine, tiny_clip, base_state):
    seen = []

    def progress(event):
        seen.append(event.step)
        if event.stage == "tune" and event.step == 1:
            assert engine.cancel("dave")  # a job is running

    with pytest.raises(Cancelled):
        engine.tune("dave", tiny_clip, "a square", SPEC, TuneConfig(max_train_steps=50), progress=progress)
    assert seen == [1]  # stopped at the end of the step it was cancelled in
    _assert_identical(engine.pipe.unet, base_state)
    assert engine.models("dave") == []
    # the next job of the same session is not cancelled by the old flag
    res = engine.tune("dave", tiny_clip, "a square", SPEC, TuneConfig(max_train_steps=1), preview_steps=0)
    assert len(res.losses) == 1
    _assert_identical(engine.pipe.unet, base_state)
    engine.release("dave")


@pytest.fixture(scope="module")
def tuned(engine, audio_clip):
    """One tuned model (session "erin") shared by the tests below."""
    return engine.tune("erin", audio_clip, "a red square moves right", SPEC, TUNE, preview_steps=0)


def test_reedit_reuses_tuning_and_inversion_and_keeps_audio(engine, tuned, base_state):
    res = tuned
    first = engine.edit("erin", res.tune_key, ["a blue square moves right"], SAMPLE, invert_config=INVERT)
    assert first.tuning_cached and first.inversion_cached is False
    assert "tuning: cached" in first.status and "inversion: done" in first.status

    events = []
    again = engine.edit("erin", res.tune_key, "a green square", SAMPLE, progress=events.append, invert_config=INVERT)
    assert again.tuning_cached and again.inversion_cached
    assert "tuning: cached · inversion: cached" in again.status
    assert {e.stage for e in events} == {"sample"}  # no tuning, no inversion steps
    _assert_identical(engine.pipe.unet, base_state)

    # outputs: mp4 with the source's audio (stride 1), a GIF, a source|edit side by side
    assert again.has_audio and probe_video(again.video_path).has_audio
    side = probe_video(again.side_by_side_path)
    assert side.source_size == (64, 32) and side.has_audio
    assert Path(again.gif_path).suffix == ".gif" and again.frames.shape == (1, 4, 32, 32, 3)

    inv = engine.invert("erin", res.tune_key, INVERT)
    assert inv.cached
    gen = engine.generate("erin", res.tune_key, ["a square"], FAST)
    assert gen.inversion_cached is None and Path(gen.video_path).is_file()


def test_stride_two_drops_audio(engine, audio_clip):
    spec = VideoSpec(num_frames=4, width=32, height=32, stride=2)
    res = engine.tune("fay", audio_clip, "a red square", spec, TuneConfig(max_train_steps=1), preview_steps=0)
    out = engine.generate("fay", res.tune_key, "a square", FAST)
    assert not out.has_audio and not probe_video(out.video_path).has_audio
    engine.release("fay")


def test_saved_weights_reload_in_another_session(engine, make_engine, tuned, audio_clip, tmp_path: Path):
    res = engine.tune("gus", audio_clip, "a red square moves right", SPEC, TUNE)  # same inputs: a cache hit
    assert res.cache_hit and Path(res.download_path).is_file()
    sample = SampleConfig(num_inference_steps=2, guidance_scale=1.0, seed=7, use_inversion=False)
    original = engine.generate("gus", res.tune_key, "a square", sample)
    loaded = engine.load_tuned("hal", res.download_path)
    assert loaded.video_key is None
    again = engine.generate("hal", loaded.tune_key, "a square", sample)
    assert np.array_equal(original.frames, again.frames)  # exact dtype round trip
    # the archive carries the exact source frames and the inversion: edits invert without the video
    edit = engine.edit("hal", loaded.tune_key, "a square", FAST, invert_config=INVERT)
    assert edit.inversion_cached is True and edit.frames.shape == (1, 4, 32, 32, 3)
    # a bare weights file has neither: with its source video beside it, edits invert (from scratch)
    with zipfile.ZipFile(res.download_path) as zf:
        bare = tmp_path / "tuned.safetensors"
        bare.write_bytes(zf.read("tuned.safetensors"))
    other = make_engine()  # an engine that has not seen these weights yet
    with_video = other.load_tuned("ida", bare, video_path=audio_clip)
    assert with_video.video_key == tuned.video_key  # the recorded VideoSpec was used
    assert other.edit("ida", with_video.tune_key, "a square", FAST, invert_config=INVERT).inversion_cached is False
    other.release("ida")
    # sessions cannot use each other's models
    with pytest.raises(InputError, match="not known in this session"):
        engine.edit("hal", res.tune_key, "a square", SAMPLE)
    for sid in ("gus", "hal", "ida"):
        engine.release(sid)
    assert tuned.tune_key in engine.cache  # erin still holds it


def test_bad_inputs_give_helpful_errors(engine, tmp_path: Path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video")
    with pytest.raises(VideoError, match="could not be decoded|not a video|no video"):
        engine.tune("jo", str(fake), "a square", SPEC, TUNE)
    with pytest.raises(InputError, match="upload a video"):
        engine.tune("jo", None, "a square", SPEC, TUNE)
    with pytest.raises(InputError, match="describe"):
        engine.tune("jo", str(fake), "   ", SPEC, TUNE)
    with pytest.raises(InputError, match="session id"):
        engine.tune("../etc", str(fake), "a square", SPEC, TUNE)
    with pytest.raises(InputError, match="No tuned model"):
        engine.edit("jo", None, "a square")
    bad = tmp_path / "weights.zip"
    import zipfile

    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("readme.txt", "nothing here")
    with pytest.raises(ModelLoadError, match="no tuned.safetensors"):
        engine.load_tuned("jo", str(bad))
    engine.release("jo")


def test_byte_budget_is_respected_with_spill(make_engine, tiny_clip):
    small = make_engine(cache_bytes=20_000)  # smaller than one tuned delta (~170 KB): it must spill
    res = small.tune("kim", tiny_clip, "a red square", SPEC, TuneConfig(max_train_steps=1), preview_steps=0)
    st = small.stats()
    assert st["bytes"] <= 20_000 and st["spills"] >= 1
    out = small.edit("kim", res.tune_key, "a blue square", FAST, invert_config=InvertConfig(num_inference_steps=1))
    assert out.tuning_cached  # reloaded from the spill, not re-tuned
    assert small.stats()["bytes"] <= 20_000 and small.stats()["reloads"] >= 1
    small.release("kim")
    assert small.stats()["entries"] == 0


def test_estimate_is_calibrated_by_a_run(make_engine, tiny_clip):
    fresh = make_engine()
    before = fresh.estimate(SPEC, TUNE, SAMPLE, INVERT)
    assert before["measured"] == [] and "rough" in before["text"]
    res = fresh.tune("lea", tiny_clip, "a red square", SPEC, TUNE, preview_steps=0)
    after = fresh.estimate(SPEC, TUNE, SAMPLE, INVERT)
    assert after["measured"] == ["train"] and "calibrated" in after["text"]
    # One run sets the correction to measured / predicted, clamped to [0.01, 100] (costs.CostModel.measured),
    # so the calibrated estimate is the measured time unless a loaded machine was over 100x slower than the
    # table. Compare against that, with a margin for the rounding and a scheduler hiccup on 2 busy cores.
    expected = min(res.timings["tune"], 100 * before["tune_seconds"])
    assert after["tune_seconds"] == pytest.approx(expected, rel=0.5, abs=0.5)
    fresh.release("lea")


def test_estimate_reports_time_and_memory(engine):
    est = engine.estimate(SPEC, TUNE, SAMPLE, INVERT, num_prompts=2)
    for key in ("tune_seconds", "invert_seconds", "edit_seconds", "tune_peak_bytes", "edit_peak_bytes"):
        assert est[key] > 0, key
    assert "to tune" in est["text"] and "per edit of 2 prompts" in est["text"]
    bigger = engine.estimate(VideoSpec(num_frames=8, width=32, height=32), TUNE, SAMPLE, INVERT, num_prompts=2)
    # both are rounded to 0.01 s: allow that rounding on top of the 1 % proportionality
    assert bigger["tune_seconds"] == pytest.approx(2 * est["tune_seconds"], rel=0.01, abs=0.021)


def test_settings_from_env_flags_and_default_model(tmp_path: Path, monkeypatch):
    import tuneavideo.settings as settings_mod
    from tuneavideo.settings import Settings, parse_bytes

    assert parse_bytes("4GB") == 4 * 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes(7) == 7
    with pytest.raises(InputError):
        parse_bytes("lots")
    env = {
        "TUNEAVIDEO_CACHE_BYTES": "1GB",
        "TUNEAVIDEO_MAX_QUEUE": "3",
        "CACHE_EXAMPLES": "1",
        "GRADIO_SERVER_PORT": "7001",
    }
    s = Settings.from_env(env)
    assert (s.cache_bytes, s.max_queue, s.cache_examples, s.port) == (10**9, 3, True, 7001)
    s = Settings.from_args(["--port", "7002", "--share", "--cache-bytes", "2GB", "--device", "cpu"], env=env)
    assert (s.port, s.share, s.cache_bytes, s.max_queue, s.device) == (7002, True, 2 * 10**9, 3, "cpu")

    # no GPU, no toy-world: a clearly labelled tiny random model, without touching the network
    monkeypatch.setattr(settings_mod, "TOY_WORLD_DIR", tmp_path / "missing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = Settings(device="cpu", cache_dir=str(tmp_path / "cache")).resolve()
    assert resolved.model_kind == "tiny" and Path(resolved.model, "model_index.json").is_file()
    assert resolved.model_reason.startswith("No GPU found") and "TINY RANDOM" in resolved.model_reason
    assert resolved.dtype == "fp32" and resolved.device == "cpu"
    # with the toy-world folder present it is chosen
    toy = tmp_path / "toy-world"
    toy.mkdir()
    (toy / "model_index.json").write_text("{}")
    monkeypatch.setattr(settings_mod, "TOY_WORLD_DIR", toy)
    resolved = Settings(device="cpu", cache_dir=str(tmp_path / "cache")).resolve()
    assert resolved.model == str(toy) and resolved.model_kind == "toy-world"
    assert "embedded toy-world model" in resolved.model_reason


def test_default_model_on_a_gpu_box(tmp_path: Path, monkeypatch):
    """With CUDA: SD 1.5 in fp16 when the hub answers; the toy-world model (with the reason) when it does not."""
    import tuneavideo.hub as hub_mod
    import tuneavideo.settings as settings_mod
    from tuneavideo.config import DEFAULT_BASE_MODEL
    from tuneavideo.settings import resolve_default_model

    toy = tmp_path / "toy-world"
    toy.mkdir()
    (toy / "model_index.json").write_text("{}")
    monkeypatch.setattr(settings_mod, "TOY_WORLD_DIR", toy)
    monkeypatch.setattr(settings_mod, "cuda_available", lambda: True)
    monkeypatch.setattr(settings_mod, "_sd_cached", lambda model_id: False)
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the policy is decided by the (patched) probe
    monkeypatch.setattr(hub_mod, "hub_reachable", lambda timeout=2.0: True)
    model, dtype, kind, reason = resolve_default_model("auto", tmp_path)
    assert (model, dtype, kind) == (DEFAULT_BASE_MODEL, "fp16", "sd") and reason.startswith("GPU found")
    monkeypatch.setattr(hub_mod, "hub_reachable", lambda timeout=2.0: False)
    model, dtype, kind, reason = resolve_default_model("auto", tmp_path)
    assert model == str(toy) and "hub is unreachable" in reason
    assert os.environ["HF_HUB_OFFLINE"] == "1"
