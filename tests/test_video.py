"""Video IO: synthetic clips written in several containers, read back with stride/start/resize.

Clips are written with PyAV (``video_clips.py``); ``test_pinned_*`` compare the reader with the
frames the ffmpeg-command-line reader it replaced decoded from the same files (``tests/data/video``).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import av
import numpy as np
import pytest
from PIL import Image
from video_clips import DATA, write_clip, write_tone

from tuneavideo.config import VideoSpec
from tuneavideo.errors import InputError, VideoError
from tuneavideo.video import (
    VideoInfo,
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


def streams(path: Path) -> list[tuple[str, str, str | None, int, int]]:
    """``(type, codec, pix_fmt, width, height)`` of every stream of a file."""
    with av.open(str(path)) as c:
        out = []
        for s in c.streams:
            cc = s.codec_context
            fmt = cc.format.name if s.type == "video" and cc.format else None
            out.append((s.type, cc.name, fmt, getattr(cc, "width", 0), getattr(cc, "height", 0)))
        return out


# extension -> write_clip arguments (mp4 and gif are written by write_mp4 / write_gif)
ENCODERS = {
    "mp4": None,
    "gif": None,
    "avi": dict(codec="mpeg4", options={"b": "2M"}),
    "webm": dict(codec="libvpx-vp9", options={"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "mkv": dict(codec="libx264"),
    "mov": dict(codec="libx264"),
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
            write_clip(path, frames, fps=FPS, **args)
        out[ext] = path
    return out


@pytest.fixture(scope="module")
def av_source(tmp_path_factory) -> Path:
    """A 3 s, 10 fps testsrc video with a 440 Hz audio track."""
    from video_clips import pattern_clip

    path = tmp_path_factory.mktemp("av") / "av.mp4"
    return write_clip(path, pattern_clip(30, 64, 48), fps=10, tone=(440.0, None))


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


def test_nonzero_container_start(tmp_path):
    # an MPEG-TS whose clock starts at 1.42 s, not 0 (as ffmpeg's remuxes into TS do)
    ts = write_clip(tmp_path / "square.ts", square_clip(), pts=[i + 17 for i in range(N)], time_base=Fraction(1, 12))
    assert probe_video(ts).frame_count == N
    with av.open(str(ts)) as c:
        assert c.start_time > 1.0e6
    frames, info = read_video(ts, VideoSpec(num_frames=3, width=W, height=H, stride=2, start_time=5 / FPS))
    assert info.frame_indices == (5, 7, 9)
    assert square_positions(frames) == [5.0, 7.0, 9.0]


def test_variable_frame_rate(tmp_path):
    # frames 0-5 at 12 fps, then a 1 s pause, then frames 6-11: start_time is matched to real timestamps
    pts = [i + (12 if i >= 6 else 0) for i in range(N)]  # in 1/12 s
    path = write_clip(tmp_path / "vfr.mkv", square_clip(), pts=pts, time_base=Fraction(1, 12))
    assert probe_video(path).frame_count == N
    frames, info = read_video(path, VideoSpec(num_frames=2, width=W, height=H, start_time=1.5))
    assert info.frame_indices == (6, 7) and info.clip_start == pytest.approx(18 / 12, abs=2e-3)
    assert square_positions(frames) == [6.0, 7.0]
    frames, info = read_video(path, VideoSpec(num_frames=3, width=W, height=H, start_time=0.3, stride=2))
    assert info.frame_indices == (4, 6, 8) and square_positions(frames) == [4.0, 6.0, 8.0]


def test_long_hd_video_seeks_and_stops_early(tmp_path):
    y, x = np.mgrid[0:360, 0:640]

    def frames():  # 40 s at 30 fps, 640x360, a moving gradient
        for i in range(1200):
            yield np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, np.full_like(x, i % 256)], -1).astype(np.uint8)

    opts = {"preset": "ultrafast", "g": "60", "threads": "2"}
    path = write_clip(tmp_path / "long.mp4", frames(), fps=30, options=opts)
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
    rot = write_clip(tmp_path / "rot.mp4", square_clip(), rotation=90)
    assert probe_video(rot).source_size == (H, W)
    frames, _ = read_video(rot, VideoSpec(num_frames=N, width=H, height=W))
    assert frames.shape == (N, W, H, 3)


# ------------------------------------------------------------------------------------ frame pinning
# tests/data/video/refs.{npz,json}: what the ffmpeg-command-line reader (imageio-ffmpeg's ffmpeg,
# replaced by PyAV) decoded from the three assets and the committed generated clips (rotated 90 and
# -90, VFR, with audio, odd sizes in 4:4:4 h264 and 4:2:0 VP9, mpeg4 AVI, long-GOP h264 with
# B-frames), with several VideoSpecs; made by make_video_refs.py.
#
# Tolerance for reading: none. Every pinned frame is bit-identical (PyAV 17.1 and 18.1, FFmpeg 8.1). Two things
# make it so: h264/VP9/mpeg4 decoding is exact, and the YUV->RGB conversion uses bicubic
# swscale, the command line's default (bilinear differs by up to 15 levels on odd-size 4:2:0).
# Outside the pinned set the two differ: 4:2:2 and 10-bit sources convert differently (chroma
# interpolation and dithering; up to 37 and 93 levels at sharp synthetic colour edges, 1.8 and 4.2
# on average), and durations are no longer rounded to 1/100 s as `ffmpeg -i` printed them.
REFS = json.loads((DATA / "refs.json").read_text())
ASSETS = Path(__file__).parents[1] / "tuneavideo" / "assets"
PINNED = [(name, i) for name, entry in REFS.items() for i in range(len(entry["reads"]))]


def pinned_path(name: str) -> Path:
    return ASSETS / name.split("/", 1)[1] if name.startswith("assets/") else DATA / name


@pytest.fixture(scope="module")
def ref_frames():
    with np.load(DATA / "refs.npz") as refs:
        yield {k: refs[k] for k in refs.files}


@pytest.mark.parametrize("name", list(REFS))
def test_pinned_probe(name):
    info = probe_video(pinned_path(name))
    ref = REFS[name]["probe"]
    assert info.duration == pytest.approx(ref.pop("duration"), abs=0.006)  # ffmpeg -i printed 1/100 s
    assert {k: getattr(info, k) for k in ref} == ref


@pytest.mark.parametrize(("name", "i"), PINNED, ids=[f"{n}#{i}" for n, i in PINNED])
def test_pinned_frames(name, i, ref_frames):
    ref = REFS[name]["reads"][i]
    frames, info = read_video(pinned_path(name), VideoSpec(**ref["spec"]))
    np.testing.assert_array_equal(frames, ref_frames[ref["key"]])  # (f, h, w, 3) uint8, bit-identical
    assert list(info.frame_indices) == ref["frame_indices"]
    assert info.clip_start == pytest.approx(ref["clip_start"], abs=1e-9)
    assert info.fps == pytest.approx(ref["fps"])


@pytest.mark.parametrize("crf", [0, 18])
def test_pinned_write_mp4(crf, ref_frames, tmp_path):
    """write_mp4 then read_video gives what the command-line writer's file decoded to.

    CRF 0: identical (only the RGB -> YUV 4:2:0 conversion loses, bicubic as the command line's).
    CRF 18: x264's choices depend on its thread count, so on the machine: with 1 thread instead of
    auto this clip differs by up to 24 levels at single pixels, 1.9 on average; allowed: mean 3.
    """
    src = ref_frames["write_mp4#src"]  # (8, 24, 32, 3) uint8
    path = write_mp4(src, tmp_path / "w.mp4", fps=12, quality=crf)
    back, _ = read_video(path, VideoSpec(num_frames=len(src), width=32, height=24))
    ref = ref_frames[f"write_mp4#{crf}"]
    if crf == 0:
        np.testing.assert_array_equal(back, ref)
    else:
        assert np.abs(back.astype(int) - ref).mean() <= 3.0


def test_pinned_vfr_start_times_land_on_frames():
    """Every start time maps to the frame whose timestamp is nearest (gaps of 1 s and of 42 ms)."""
    pts = np.array([0, 83, 167, 250, 333, 417, 1417, 1500, 1583, 1667, 1750, 1833, 2250, 2292, 2333, 2375]) / 1000
    full, _ = read_video(DATA / "vfr.mkv", VideoSpec(num_frames=16, width=40, height=32))
    for t in (0.05, 0.9, 1.0, 1.45, 2.0, 2.27, 2.3):
        k = int(np.argmin(np.abs(pts - t)))
        frames, info = read_video(DATA / "vfr.mkv", VideoSpec(num_frames=1, width=40, height=32, start_time=t))
        assert info.frame_indices == (k,) and info.clip_start == pytest.approx(pts[k], abs=1e-3)
        np.testing.assert_array_equal(frames[0], full[k])


def test_audio_stays_in_sync(tmp_path):
    """A tone starting at 1.5 s in the source starts 0.5 s into a clip cut from 1.0 s."""
    frames, info = read_video(DATA / "audio.mp4", VideoSpec(num_frames=10, width=32, height=24, start_time=1.0))
    assert info.clip_start == pytest.approx(1.0)
    out = write_mp4(
        frames, tmp_path / "cut.mp4", fps=info.fps, audio_source=DATA / "audio.mp4", audio_start=info.clip_start
    )
    with av.open(str(out)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    onset = np.argmax(np.abs(samples) > 0.1) / rate
    assert onset == pytest.approx(0.5, abs=0.01)
    assert len(samples) / rate == pytest.approx(1.0, abs=0.07)  # cut to the clip (AAC frames are 64 ms)


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        (0, lambda a: a),
        (90, lambda a: np.rot90(a, 1)),
        (-90, lambda a: np.rot90(a, -1)),
        (180, lambda a: a[::-1, ::-1]),
    ],
)
def test_rotation_metadata(tmp_path, rotation, expected):
    src = np.repeat(np.kron(np.arange(12, dtype=np.uint8).reshape(3, 4), np.ones((8, 8), np.uint8))[..., None], 3, -1)
    src = src * 20  # (24, 32, 3): 12 flat blocks, each identifiable after a rotation
    path = write_clip(tmp_path / "r.mp4", np.repeat(src[None], 2, 0), options={"crf": "0"}, pix_fmt="yuv444p")
    if rotation:
        path = write_clip(
            tmp_path / f"r{rotation}.mp4",
            np.repeat(src[None], 2, 0),
            options={"crf": "0"},
            pix_fmt="yuv444p",
            rotation=rotation,
        )
    want = expected(src)
    info = probe_video(path)
    assert info.source_size == (want.shape[1], want.shape[0])
    frames, _ = read_video(path, VideoSpec(num_frames=1, width=want.shape[1], height=want.shape[0]))
    assert np.abs(frames[0].astype(int) - want).max() <= 2


def test_no_command_line(tmp_path, monkeypatch):
    """Reading, probing and writing (with audio) start no process."""
    import subprocess

    def refuse(*a, **k):
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    frames, _ = read_video(DATA / "audio.mp4", VideoSpec(num_frames=4, width=32, height=24, start_time=1.0))
    write_mp4(frames, tmp_path / "x.mp4", fps=10, audio_source=DATA / "audio.mp4", audio_start=1.0)
    assert probe_video(tmp_path / "x.mp4").has_audio


def test_missing_pyav_is_explained(monkeypatch):
    import sys

    import tuneavideo.video as video
    from tuneavideo.errors import MissingDependencyError

    video._av.cache_clear()
    monkeypatch.setitem(sys.modules, "av", None)
    try:
        with pytest.raises(MissingDependencyError, match=r"pip install 'av>=17\.1'"):
            probe_video(DATA / "vfr.mkv")
    finally:
        video._av.cache_clear()


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
    path = write_tone(tmp_path / "tone.m4a")
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
    path = write_clip(tmp_path / "zero.avi", np.zeros((0, 48, 64, 3), np.uint8), codec="mpeg4")
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
    assert streams(out) == [("video", "h264", "yuv420p", 34, 26)]
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
    kinds = {(t, codec) for t, codec, *_ in streams(out)}
    assert kinds == {("video", "h264"), ("audio", "aac")}
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
