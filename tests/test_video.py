"""Video IO: synthetic clips written in several containers, read back with stride/start/resize."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from tuneavideo.config import VideoSpec
from tuneavideo.errors import InputError, VideoError
from tuneavideo.video import (
    VideoInfo,
    ffmpeg_exe,
    make_grid,
    probe_video,
    read_video,
    resize_frame,
    to_uint8,
    write_frame_grid,
    write_gif,
    write_mp4,
)

W, H, N, FPS = 64, 48, 12, 12
GREY = 128
RED = (255, 0, 0)


def square_clip(n: int = N, w: int = W, h: int = H) -> np.ndarray:
    """A grey clip with an 8x8 red square moving 4 px right per frame (x = 2 + 4 i)."""
    frames = np.full((n, h, w, 3), GREY, np.uint8)
    for i in range(n):
        frames[i, 20:28, 2 + 4 * i : 10 + 4 * i] = RED
    return frames


def square_positions(frames: np.ndarray) -> list[float]:
    """The source frame index each frame shows, recovered from the red square's centroid."""
    red = (frames[..., 0] > 150) & (frames[..., 1] < 100) & (frames[..., 2] < 100)
    out = []
    for mask in red:
        xs = np.nonzero(mask)[1]
        out.append(round((xs.mean() * W / frames.shape[2] - 5.5) / 4, 1))
    return out


def ffmpeg_encode(frames: np.ndarray, path: Path, codec_args: list[str], fps: float = FPS, extra_in: list[str] = ()):
    f, h, w, _ = frames.shape
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
    cmd += ["-framerate", str(fps), "-i", "-", *extra_in, *codec_args, str(path)]
    res = subprocess.run(cmd, input=frames.tobytes(), capture_output=True)
    assert res.returncode == 0, res.stderr.decode()[-500:]
    return path


def ffmpeg_streams(path: Path) -> str:
    """``ffmpeg -i`` stream description (our ffprobe stand-in)."""
    res = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True)
    return res.stderr.decode("utf-8", "replace")


ENCODERS = {
    "mp4": None,  # write_mp4
    "gif": None,  # write_gif
    "avi": ["-c:v", "mpeg4", "-q:v", "2"],
    "webm": ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "30", "-deadline", "realtime", "-cpu-used", "8"],
    "mkv": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "mov": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    frames = square_clip()
    out = {}
    for ext, args in ENCODERS.items():
        path = d / f"square.{ext}"
        if ext == "mp4":
            write_mp4(frames, path, fps=FPS)
        elif ext == "gif":
            write_gif(frames, path, fps=FPS)
        else:
            ffmpeg_encode(frames, path, args)
        out[ext] = path
    return out


@pytest.fixture(scope="module")
def av_source(tmp_path_factory) -> Path:
    """A 3 s, 10 fps testsrc video with a 440 Hz audio track."""
    path = tmp_path_factory.mktemp("av") / "av.mp4"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=3"]
    cmd += ["-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    cmd += ["-c:a", "aac", "-shortest", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    return path


# ------------------------------------------------------------------------------------------ reading


@pytest.mark.parametrize("ext", list(ENCODERS))
def test_probe(clips, ext):
    info = probe_video(clips[ext])
    assert isinstance(info, VideoInfo)
    assert info.frame_count == N
    assert info.source_size == (W, H)
    assert info.has_audio is False
    assert info.source_fps == pytest.approx(FPS, rel=0.05)  # GIF delays are whole centiseconds: 12.5
    assert info.duration == pytest.approx(N / FPS, abs=0.06)


@pytest.mark.parametrize("ext", list(ENCODERS))
def test_read_all_frames_in_order(clips, ext):
    frames, info = read_video(clips[ext], VideoSpec(num_frames=N, width=W, height=H))
    assert frames.shape == (N, H, W, 3) and frames.dtype == np.uint8
    assert square_positions(frames) == [float(i) for i in range(N)]
    assert info.frame_indices == tuple(range(N))
    assert info.fps == pytest.approx(info.source_fps)
    if ext == "gif":  # palette-exact
        np.testing.assert_array_equal(frames, square_clip())
    else:
        assert np.abs(frames.astype(int) - square_clip()).mean() < 3


@pytest.mark.parametrize("ext", list(ENCODERS))
def test_stride_and_start_time(clips, ext):
    frames, info = read_video(clips[ext], VideoSpec(num_frames=4, width=W, height=H, stride=3))
    assert info.frame_indices == (0, 3, 6, 9)
    assert square_positions(frames) == [0.0, 3.0, 6.0, 9.0]
    assert info.fps == pytest.approx(info.source_fps / 3)
    assert info.stride == 3

    fps = probe_video(clips[ext]).source_fps
    start = 2 / fps  # frame 2
    frames, info = read_video(clips[ext], VideoSpec(num_frames=3, width=W, height=H, stride=4, start_time=start))
    assert info.frame_indices == (2, 6, 10)
    assert square_positions(frames) == [2.0, 6.0, 10.0]
    assert info.clip_start == pytest.approx(start, abs=2e-3)  # mkv/webm clocks tick in ms
    assert info.clip_duration == pytest.approx(3 / (fps / 4))


def test_exactly_enough_frames(clips):
    # range(5, 12, 2) = 5, 7, 9, 11: four frames available, four requested
    frames, info = read_video(clips["mp4"], VideoSpec(num_frames=4, width=W, height=H, stride=2, start_time=5 / FPS))
    assert info.frame_indices == (5, 7, 9, 11)
    assert square_positions(frames) == [5.0, 7.0, 9.0, 11.0]


@pytest.mark.parametrize("ext", ["avi", "mp4", "webm"])
def test_every_start_and_stride_matches_full_decode(clips, ext):
    """Seeking must land on exactly the frame a full decode has at that index (no off-by-one)."""
    full, _ = read_video(clips[ext], VideoSpec(num_frames=N, width=W, height=H))
    fps = probe_video(clips[ext]).source_fps
    for k in range(N - 1):
        for t in (k / fps, (k + 0.3) / fps):
            frames, info = read_video(clips[ext], VideoSpec(num_frames=2, width=W, height=H, start_time=t))
            assert info.frame_indices == (k, k + 1), (t, info.frame_indices)
            np.testing.assert_array_equal(frames, full[k : k + 2])


@pytest.mark.parametrize("ext", ["avi", "mkv"])
def test_start_without_packet_timestamps(clips, ext, monkeypatch):
    """If the probe finds no per-frame timestamps, start_time falls back to round(t * fps), still exact."""
    import dataclasses

    import tuneavideo.video as video

    full, _ = read_video(clips[ext], VideoSpec(num_frames=N, width=W, height=H))
    real = video._probe
    monkeypatch.setattr(video, "_probe", lambda *a, **k: dataclasses.replace(real(*a, **k), pts=None))
    for k in (1, 5, 10):
        frames, info = read_video(clips[ext], VideoSpec(num_frames=2, width=W, height=H, start_time=k / FPS))
        assert info.frame_indices == (k, k + 1)
        np.testing.assert_array_equal(frames, full[k : k + 2])
    with pytest.raises(VideoError, match="past the end"):
        read_video(clips[ext], VideoSpec(num_frames=1, width=W, height=H, start_time=5.0))


def test_nonzero_container_start(clips, tmp_path):
    ts = tmp_path / "square.ts"  # MPEG-TS clocks start at 1.4 s, not 0
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(clips["mkv"]), "-c", "copy", str(ts)]
    subprocess.run(cmd, check=True)
    frames, info = read_video(ts, VideoSpec(num_frames=3, width=W, height=H, stride=2, start_time=5 / FPS))
    assert info.frame_indices == (5, 7, 9)
    assert square_positions(frames) == [5.0, 7.0, 9.0]


def test_variable_frame_rate(tmp_path):
    # frames 0-5 at 12 fps, then a 1 s pause, then frames 6-11: start_time is matched to real timestamps
    setpts = "setpts='(N+if(gte(N\\,6)\\,12\\,0))/(12*TB)'"
    path = ffmpeg_encode(square_clip(), tmp_path / "vfr.mkv", ["-vf", setpts, "-fps_mode", "vfr", "-c:v", "libx264"])
    assert probe_video(path).frame_count == N
    frames, info = read_video(path, VideoSpec(num_frames=2, width=W, height=H, start_time=1.5))
    assert info.frame_indices == (6, 7) and info.clip_start == pytest.approx(18 / 12, abs=2e-3)
    assert square_positions(frames) == [6.0, 7.0]
    frames, info = read_video(path, VideoSpec(num_frames=3, width=W, height=H, start_time=0.3, stride=2))
    assert info.frame_indices == (4, 6, 8) and square_positions(frames) == [4.0, 6.0, 8.0]


def test_long_hd_video_seeks_and_stops_early(tmp_path):
    path = tmp_path / "long.mp4"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=40"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)
    info = probe_video(path)
    assert (info.frame_count, info.source_size, info.source_fps) == (1200, (640, 360), 30.0)
    import time

    t0 = time.perf_counter()
    frames, info = read_video(path, VideoSpec(num_frames=8, width=128, height=128, stride=2, start_time=35.0))
    elapsed = time.perf_counter() - t0
    assert frames.shape == (8, 128, 128, 3)
    assert info.frame_indices == tuple(range(1050, 1066, 2))
    assert elapsed < 3.0  # seeking, not decoding 35 s of video


def test_crop_vs_squash_geometry(tmp_path):
    # 128x64 source: red marker in the top-left corner, green marker in the centre
    src = np.full((4, 64, 128, 3), GREY, np.uint8)
    src[:, :16, :16] = RED
    src[:, 24:40, 56:72] = (0, 255, 0)
    path = write_mp4(src, tmp_path / "wide.mp4", fps=8, quality=10)

    sq, _ = read_video(path, VideoSpec(num_frames=4, width=64, height=64, resize="squash"))
    cr, _ = read_video(path, VideoSpec(num_frames=4, width=64, height=64, resize="crop"))
    assert sq.shape == cr.shape == (4, 64, 64, 3)
    # squash keeps the whole frame: the corner marker is now 8 wide x 16 tall
    assert sq[0, 2:14, 1:7, 0].min() > 200 and sq[0, 2:14, 1:7, 1].max() < 60
    assert sq[0, 2:14, 10:20].mean() == pytest.approx(GREY, abs=10)
    # crop cuts 32 px from each side: no red left, and the centre marker keeps its square shape (16x16)
    red = (cr[..., 0] > 150) & (cr[..., 1] < 100)
    assert not red.any()
    green = (cr[0, ..., 1] > 150) & (cr[0, ..., 0] < 100)
    ys, xs = np.nonzero(green)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (24, 39, 24, 39)
    # squash makes it 8 wide x 16 tall
    green = (sq[0, ..., 1] > 150) & (sq[0, ..., 0] < 100)
    ys, xs = np.nonzero(green)
    assert ys.max() - ys.min() + 1 == 16 and xs.max() - xs.min() + 1 in (8, 9)

    # portrait target from a landscape source, and upscaling
    tall, _ = read_video(path, VideoSpec(num_frames=2, width=32, height=64))
    assert tall.shape == (2, 64, 32, 3)
    big, _ = read_video(path, VideoSpec(num_frames=2, width=256, height=192))
    assert big.shape == (2, 192, 256, 3)


def test_resize_frame_unit():
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, :20] = 255  # white left strip, cut away by a centre crop to 60x60
    assert resize_frame(img, 60, 60, "crop").max() == 0
    assert resize_frame(img, 50, 30, "squash")[:, :10].min() == 255
    np.testing.assert_array_equal(resize_frame(img, 100, 60, "crop"), img)  # same size and aspect: unchanged
    assert resize_frame(img, 200, 120, "squash").shape == (120, 200, 3)  # upscaling (cubic)
    with pytest.raises(InputError):
        resize_frame(img, 8, 8, "stretch")


def test_rotated_video_is_upright(clips, tmp_path):
    rot = tmp_path / "rot.mp4"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-display_rotation", "90", "-i", str(clips["mp4"])]
    subprocess.run([*cmd, "-c", "copy", str(rot)], check=True)
    assert probe_video(rot).source_size == (H, W)
    frames, _ = read_video(rot, VideoSpec(num_frames=N, width=H, height=W))
    assert frames.shape == (N, W, H, 3)


# ------------------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="file not found"):
        read_video(tmp_path / "nope.mp4", VideoSpec())
    with pytest.raises(VideoError, match="file not found"):
        probe_video(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 10)
    with pytest.raises(VideoError, match="could not be decoded") as exc:
        read_video(fake, VideoSpec())
    assert "Traceback" not in str(exc.value) and len(str(exc.value)) < 400
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        read_video(empty, VideoSpec())
    with pytest.raises(VideoError):
        read_video(tmp_path, VideoSpec())  # a folder


def test_audio_only_file(tmp_path):
    path = tmp_path / "tone.m4a"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path)]
    subprocess.run(cmd, check=True)
    with pytest.raises(VideoError, match="no video stream"):
        read_video(path, VideoSpec(num_frames=1, width=8, height=8))


def test_too_few_frames(tmp_path):
    one = write_mp4(square_clip(1), tmp_path / "one.mp4", fps=8)
    with pytest.raises(VideoError) as exc:
        read_video(one, VideoSpec(num_frames=8, width=W, height=H))
    msg = str(exc.value)
    assert "only 1 frame" in msg and "8 were requested" in msg and "stride" in msg and "fewer frames" in msg


def test_too_few_frames_with_stride_and_start(clips):
    with pytest.raises(VideoError, match=r"only 3 frame\(s\).*start_time 0\.5 s with stride 2.*5 were requested"):
        read_video(clips["mp4"], VideoSpec(num_frames=5, width=W, height=H, stride=2, start_time=0.5))
    with pytest.raises(VideoError, match="past the end"):
        read_video(clips["mp4"], VideoSpec(num_frames=1, width=W, height=H, start_time=10.0))


def test_zero_length_video(tmp_path):
    path = tmp_path / "zero.avi"
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=8"]
    subprocess.run([*cmd, "-frames:v", "0", "-c:v", "mpeg4", str(path)], check=True)
    with pytest.raises(VideoError, match="zero-length|no audio or video"):
        read_video(path, VideoSpec(num_frames=1, width=8, height=8))


def test_invalid_spec():
    bads = (dict(width=30), dict(height=0), dict(stride=0), dict(num_frames=0), dict(start_time=-1), dict(resize="fit"))
    for bad in bads:
        with pytest.raises(InputError):
            VideoSpec(**bad)
    with pytest.raises(InputError):
        read_video("whatever.mp4", spec={"num_frames": 8})  # not a VideoSpec


# ------------------------------------------------------------------------------------------ writing


def test_write_mp4_h264_yuv420p_even_size(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (5, 25, 33, 3), dtype=np.uint8)
    out = write_mp4(frames, tmp_path / "sub" / "odd.mp4", fps=7.5)
    assert out == tmp_path / "sub" / "odd.mp4" and out.is_file()
    desc = ffmpeg_streams(out)
    assert re.search(r"Video: h264 .*yuv420p.*, 34x26[ ,]", desc), desc
    info = probe_video(out)
    assert info.frame_count == 5 and info.source_fps == pytest.approx(7.5) and not info.has_audio
    assert not list(out.parent.glob(".*tmp*"))  # no temp file left behind

    # sizes that are even but not multiples of 16 are kept as they are
    out = write_mp4(square_clip(3, 40, 24), tmp_path / "even.mp4", fps=8)
    assert probe_video(out).source_size == (40, 24)


def test_write_mp4_roundtrip_float_and_torch(tmp_path):
    torch = pytest.importorskip("torch")
    clip = square_clip()
    x = torch.from_numpy(clip).float().div(255).permute(3, 0, 1, 2)  # (3, f, h, w) in [0, 1]
    out = write_mp4(x, tmp_path / "t.mp4", fps=FPS, quality=12)
    back, info = read_video(out, VideoSpec(num_frames=N, width=W, height=H))
    assert np.abs(back.astype(int) - clip).mean() < 3
    assert square_positions(back) == [float(i) for i in range(N)]
    out = write_mp4(clip.astype(np.float32) / 255, tmp_path / "f.mp4", fps=FPS)
    assert probe_video(out).frame_count == N


def test_write_mp4_bad_args(tmp_path):
    with pytest.raises(InputError):
        write_mp4(square_clip(2), tmp_path / "x.mp4", fps=0)
    with pytest.raises(InputError):
        write_mp4(square_clip(2), tmp_path / "x.mp4", fps=8, quality=99)
    with pytest.raises(InputError):
        write_mp4(np.zeros((2, 8, 8, 4), np.uint8), tmp_path / "x.mp4", fps=8)


def test_audio_mux(av_source, tmp_path):
    src = probe_video(av_source)
    assert src.has_audio and src.frame_count == 30
    frames, info = read_video(av_source, VideoSpec(num_frames=8, width=64, height=48, start_time=1.0))
    assert info.frame_indices == tuple(range(10, 18))
    edited = 255 - frames  # "edit": invert
    out = write_mp4(edited, tmp_path / "edit.mp4", fps=info.fps, audio_source=av_source, audio_start=info.clip_start)
    desc = ffmpeg_streams(out)
    assert re.search(r"Stream #0:\d+.*: Audio: aac", desc), desc
    assert re.search(r"Stream #0:\d+.*: Video: h264", desc)
    out_info = probe_video(out)
    assert out_info.has_audio and out_info.frame_count == 8
    assert out_info.duration == pytest.approx(0.8, abs=0.1)  # audio cut to the clip, not 3 s

    # a source without audio gives a silent mp4, not an error
    no_audio = write_mp4(frames, tmp_path / "na.mp4", fps=10)
    silent = write_mp4(edited, tmp_path / "silent.mp4", fps=info.fps, audio_source=no_audio)
    assert not probe_video(silent).has_audio
    with pytest.raises(VideoError, match="file not found"):
        write_mp4(edited, tmp_path / "x.mp4", fps=10, audio_source=tmp_path / "missing.mp4")
    with pytest.raises(InputError):
        write_mp4(edited, tmp_path / "x.mp4", fps=10, audio_source=av_source, audio_start=-1)


def test_write_gif_loops(tmp_path):
    out = write_gif(square_clip(), tmp_path / "a.gif", fps=10)
    with Image.open(out) as im:
        assert im.n_frames == N
        assert im.info.get("loop") == 0
        assert im.info.get("duration") == 100
    back, _ = read_video(out, VideoSpec(num_frames=N, width=W, height=H))
    np.testing.assert_array_equal(back, square_clip())


def test_to_uint8_layouts():
    torch = pytest.importorskip("torch")
    f = np.linspace(0, 1, 2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    u = to_uint8(f)
    assert u.dtype == np.uint8 and u.shape == (2, 4, 6, 3) and u.max() == 255 and u.min() == 0
    t = torch.from_numpy(f).permute(3, 0, 1, 2)  # (3, f, h, w)
    np.testing.assert_array_equal(to_uint8(t), u)
    np.testing.assert_array_equal(to_uint8(t[None]), u)  # (1, 3, f, h, w)
    np.testing.assert_array_equal(to_uint8(torch.from_numpy(f)), u)
    assert to_uint8(np.array([[[2.0, -1.0, 0.5]]])).tolist() == [[[[255, 0, 128]]]]  # single image, clipped
    clip = square_clip(2)
    assert to_uint8(clip) is not None and np.array_equal(to_uint8(clip), clip)
    with pytest.raises(InputError):
        to_uint8(np.zeros((2, 4, 5)))
    with pytest.raises(InputError):
        to_uint8(np.zeros((2, 3, 2, 4, 5)))


def test_make_grid():
    a, b = square_clip(3), 255 - square_clip(3)
    g = make_grid([a, b], ncols=4)
    assert g.shape == (3, H, 2 * W, 3)
    np.testing.assert_array_equal(g[:, :, :W], a)
    np.testing.assert_array_equal(g[:, :, W:], b)
    g = make_grid([a] * 5, ncols=4)
    assert g.shape == (3, 2 * H, 4 * W, 3)
    np.testing.assert_array_equal(g[:, H:, :W], a)
    assert g[:, H:, W:].max() == 0  # empty tiles are black
    g = make_grid([a, b], ncols=1, padding=2, pad_value=255)
    assert g.shape == (3, 2 * H + 6, W + 4, 3)
    with pytest.raises(InputError):
        make_grid([a, square_clip(2)])
    with pytest.raises(InputError):
        make_grid([])


def test_write_frame_grid(tmp_path):
    clip = square_clip(6)
    out = write_frame_grid(clip, tmp_path / "grid.png", ncols=4)
    back = np.asarray(Image.open(out).convert("RGB"))
    assert back.shape == (2 * H, 4 * W, 3)
    np.testing.assert_array_equal(back[H:, W : 2 * W], clip[5])
    assert back[H:, 2 * W :].max() == 0
