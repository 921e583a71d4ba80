"""The CLI end to end on real files: tune -> edit/generate/invert/export, presets, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tuneavideo.config import VideoSpec
from tuneavideo.video import probe_video, read_video

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "tuneavideo", "-q", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def tuned(tiny_sd: str, tiny_clip: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "run"
    proc = run_cli(
        "tune", "--model", tiny_sd, "--video", tiny_clip, "--prompt", "a red square moving right",
        "--frames", "4", "--width", "32", "--height", "32", "--stride", "2",
        "--max-train-steps", "2", "--invert-steps", "3", "-o", str(out),
    )  # fmt: skip
    printed = proc.stdout.strip().splitlines()
    assert str(out / "tuned.safetensors") in printed
    assert any(line.startswith(str(out / "inversions" / "steps3-")) for line in printed)
    return out


def test_tune_writes_a_delta_and_a_record(tuned: Path, tiny_clip: str):
    record = json.loads((tuned / "tuned.json").read_text())
    assert record["prompt"] == "a red square moving right"
    assert record["video_spec"]["stride"] == 2 and record["num_frames"] == 4
    assert record["video_path"] == str(Path(tiny_clip).resolve())
    assert record["steps"] == 2 and record["tune_config"]["learning_rate"] == 1e-4  # the tiny base profile's
    info = probe_video(tuned / "source.mp4")
    assert info.frame_count == 4 and info.source_size == (32, 32)


def test_edit_writes_playable_mp4_of_the_right_size(tuned: Path, tmp_path: Path):
    out = tmp_path / "edit.mp4"
    proc = run_cli(
        "edit",
        "--tuned",
        str(tuned),
        "--prompt",
        "a blue square",
        "--steps",
        "3",
        "-o",
        str(out),
        "--gif",
        "--side-by-side",
    )
    assert str(out) in proc.stdout
    frames, info = read_video(out, VideoSpec(num_frames=4, width=32, height=32, resize="squash"))
    assert info.frame_count == 4 and info.source_size == (32, 32) and info.codec.startswith("h264")
    assert frames.shape == (4, 32, 32, 3)
    assert out.with_suffix(".gif").is_file()
    assert probe_video(tmp_path / "edit-side-by-side.mp4").source_size == (64, 32)


def _inversion(run: Path) -> Path:
    (found,) = (run / "inversions").glob("steps3-*.safetensors")
    return found


def test_edit_reuses_the_saved_inversion(tuned: Path, tmp_path: Path):
    before = _inversion(tuned).stat().st_mtime_ns
    proc = run_cli("edit", "--tuned", str(tuned), "--prompt", "a cat", "--steps", "4", "-o", str(tmp_path / "a.mp4"))
    assert _inversion(tuned).stat().st_mtime_ns == before  # other sampling steps, same inversion settings
    assert (tmp_path / "a.mp4").is_file() and proc.returncode == 0
    run_cli("invert", "--tuned", str(tuned), "--invert-steps", "3")
    assert _inversion(tuned).stat().st_mtime_ns != before  # recomputed, replaced in place


def test_generate_and_export(tuned: Path, tmp_path: Path):
    run_cli(
        "generate",
        "--tuned",
        str(tuned),
        "--prompt",
        "a green circle",
        "--steps",
        "2",
        "--frames",
        "3",
        "-o",
        str(tmp_path / "g.mp4"),
    )
    assert probe_video(tmp_path / "g.mp4").frame_count == 3
    run_cli("export", "--tuned", str(tuned), "-o", str(tmp_path / "official"))
    cfg = json.loads((tmp_path / "official" / "unet" / "config.json").read_text())
    assert cfg["_class_name"] == "UNet3DConditionModel"
    import torch

    state = torch.load(tmp_path / "official" / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    assert any("attn_temp" in k for k in state) and any("norm_temp" in k for k in state)


def test_presets_list_and_validate():
    proc = run_cli("presets")
    assert "man-skiing" in proc.stdout and "rabbit-watermelon" in proc.stdout
    from tuneavideo import load_preset

    p = load_preset("man-skiing")
    assert p.video.num_frames == 24 and p.video.stride == 2 and p.sample.guidance_scale == 12.5
    assert p.tune.learning_rate == 3e-5 and p.tune.max_train_steps == 500


def test_unknown_preset_key_is_an_error(tmp_path: Path):
    from tuneavideo import InputError, load_preset

    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: x\ntune:\n  learning_rat: 1e-4\n")
    with pytest.raises(InputError, match="learning_rat"):
        load_preset(bad)


@pytest.mark.parametrize("case", ["missing", "text", "one_frame", "size"])
def test_bad_inputs_give_clear_errors(case: str, tiny_sd: str, tmp_path: Path):
    video = tmp_path / "in.mp4"
    extra: list[str] = []
    if case == "text":
        video.write_text("this is not a video\n")
    elif case == "one_frame":
        from tuneavideo.video import write_mp4

        write_mp4(np.zeros((1, 32, 32, 3), np.uint8), video, fps=8)
    elif case == "size":
        from tuneavideo.testing import write_test_video

        write_test_video(video, 4, (32, 32))
        extra = ["--width", "30"]
    proc = run_cli(
        "tune", "--model", tiny_sd, "--video", str(video), "--prompt", "x", "--frames", "4",
        "--max-train-steps", "1", "-o", str(tmp_path / "o"), *extra, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("error:")
    assert "Traceback" not in proc.stderr
    expected = {"missing": "not found", "text": "decoded", "one_frame": "frame", "size": "multiple of 8"}[case]
    assert expected in message, message


def test_control_with_a_tiny_controlnet(tuned: Path, tmp_path: Path):
    from tuneavideo.testing import write_tiny_controlnet

    cn = write_tiny_controlnet(tmp_path / "cn")
    out = tmp_path / "ctrl.mp4"
    proc = run_cli(
        "control", "--tuned", str(tuned), "--prompt", "a blue square", "--hint", "canny",
        "--control-model", str(cn), "--steps", "2", "--scale", "0.8", "-o", str(out),
    )  # fmt: skip
    assert str(out) in proc.stdout
    assert probe_video(out).frame_count == 4
    assert probe_video(tmp_path / "hint-canny.mp4").frame_count == 4
    assert probe_video(tmp_path / "ctrl-with-hint.mp4").source_size == (64, 32)
    # without -o: everything lands in <run>/control/, the result beside its hint video
    from tuneavideo.testing import write_tiny_t2i_adapter

    adapter = write_tiny_t2i_adapter(tmp_path / "adapter")
    proc = run_cli(
        "control", "--tuned", str(tuned), "--prompt", "a blue square", "--hint", "canny",
        "--control-type", "t2i_adapter", "--control-model", str(adapter), "--steps", "1",
    )  # fmt: skip
    assert str(tuned / "control" / "a-blue-square.mp4") in proc.stdout.splitlines()
    assert probe_video(tuned / "control" / "hint-canny.mp4").frame_count == 4


def test_clip_metrics_beside_outputs(tuned: Path, tmp_path: Path):
    from tuneavideo.testing import write_tiny_clip_model

    clip = write_tiny_clip_model(tmp_path / "clip")
    out = tmp_path / "m.mp4"
    run_cli("generate", "--tuned", str(tuned), "--prompt", "a red circle", "--steps", "2", "--frames", "3",
            "-o", str(out), "--clip-metrics", str(clip))  # fmt: skip
    scores = json.loads(out.with_suffix(".metrics.json").read_text())
    assert scores["prompt"] == "a red circle" and scores["num_frames"] == 3
    assert -1.0 <= scores["frame_consistency"] <= 1.0 and -100 <= scores["text_alignment"] <= 100
