"""Video IO: read a clip of a source video at a fixed size, write mp4/GIF/frame grids.

Reading and writing go through PyAV (``av``: FFmpeg's libraries, with wheels for Linux, macOS and
Windows that include libx264); no ffmpeg binary and no command line are involved.

* :func:`probe_video` reads the container's stream metadata and demuxes the video packets (nothing
  is decoded but the first frame, for its rotation), which gives the exact frame count and, for
  variable-frame-rate files too, the time of every frame.
* :func:`read_video` maps ``start_time`` to the nearest frame, seeks a second before it, drops the
  frames before it by timestamp, keeps every ``stride``-th frame and stops after ``num_frames``,
  so a 10-minute HD file is never decoded whole. Display-rotation metadata is applied as ffmpeg's
  autorotate does, and frames are resized one by one with OpenCV (area when shrinking, cubic when
  enlarging), so memory holds only the output clip.
* :func:`write_mp4` encodes libx264/yuv420p at the exact frame size (odd sizes are padded by one
  pixel, never rescaled) and can mux the source's audio for the clip's time window as AAC.

Frames are ``uint8`` arrays of shape ``(f, h, w, 3)``, RGB, throughout.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .config import VideoSpec
from .errors import InputError, MissingDependencyError, VideoError

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "probe_video",
    "read_video",
    "resize_frame",
    "to_uint8",
    "write_mp4",
    "write_gif",
    "make_grid",
    "write_frame_grid",
]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".webm", ".avi", ".mkv", ".gif")
_DEFAULT_FPS = 25.0  # FFmpeg's own assumption when a stream carries no rate
_MIN_AV = (17, 1)  # oldest PyAV this module is tested with (17.1 is the newest with a Python 3.10 wheel)
_INSTALL_AV = "'av>=17.1' (wheels for Linux, macOS and Windows; they include libx264)"


@dataclass(frozen=True)
class VideoInfo:
    """What a source video holds, and which of its frames a clip uses.

    ``fps`` is the playback rate of the selected clip (``source_fps / stride``); ``frame_indices``
    are 0-based indices into the source's decoded frames. :func:`probe_video` returns an info with
    no selected frames (``frame_indices == ()``, ``stride == 1``).
    """

    path: str
    source_fps: float
    frame_count: int | None  # frames in the source, if known
    source_width: int
    source_height: int
    duration: float | None  # seconds, if known
    has_audio: bool
    frame_indices: tuple[int, ...] = ()
    start_time: float = 0.0  # requested start, seconds
    stride: int = 1
    fps: float = 0.0  # playback fps of the selected clip
    codec: str | None = None
    clip_start: float = 0.0  # time (s) of the first selected frame, from the source's first frame
    # (where an edited clip's audio starts: pass it as write_mp4(audio_start=...))

    @property
    def source_size(self) -> tuple[int, int]:
        """``(width, height)`` of the source frames, after any rotation metadata is applied."""
        return (self.source_width, self.source_height)

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)

    @property
    def clip_duration(self) -> float:
        """Duration (s) of the selected clip when played at ``fps``."""
        return self.num_frames / self.fps if self.fps else 0.0


# ------------------------------------------------------------------------------------------ PyAV


@lru_cache(maxsize=1)
def _av() -> Any:
    """The ``av`` module, once checked to be recent enough (a clear error if it is missing or old)."""
    try:
        import av
    except ImportError as exc:
        raise MissingDependencyError("video reading and writing", _INSTALL_AV) from exc
    found = tuple(int(p) for p in av.__version__.split(".")[:2] if p.isdigit())
    if found < _MIN_AV:
        raise MissingDependencyError(f"video reading and writing (PyAV {av.__version__} is too old)", _INSTALL_AV)
    return av


@lru_cache(maxsize=1)
def _check_libx264() -> None:
    """Raise a clear error if this PyAV build has no libx264 encoder (the PyPI wheels have it)."""
    av = _av()
    try:
        av.Codec("libx264", "w")
    except (av.error.FFmpegError, ValueError) as exc:  # UnknownCodecError is a ValueError
        raise VideoError(
            "writing mp4 needs the libx264 encoder, which this PyAV build lacks (built against an FFmpeg "
            f"without x264?); install PyAV's own wheel: pip install --force-reinstall --only-binary av {_INSTALL_AV}"
        ) from exc


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise VideoError(f"file not found: {p}")
    if p.is_dir():
        raise VideoError(f"expected a video file but got a folder: {p}")
    if p.stat().st_size == 0:
        raise VideoError(f"the video file is empty (0 bytes): {p}")
    return p


def _reason(exc: BaseException) -> str:
    """A short reason from an FFmpeg error, for a message (never a traceback)."""
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)[:300]


def _open(p: Path, what: str = "a video") -> Any:
    av = _av()
    try:
        return av.open(str(p), metadata_errors="replace")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise VideoError(
            f"{p.name} could not be decoded as {what} ({_reason(exc)}); "
            f"supported formats include {', '.join(VIDEO_EXTENSIONS)}"
        ) from exc


# --------------------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class _Probe:
    info: VideoInfo
    stream: int  # index of the video stream used
    format_start: float  # container start time (s); seeking is relative to it
    pts: np.ndarray | None  # sorted presentation times (s, raw container clock) of every frame, if known
    orient: tuple[bool, bool, bool]  # the display matrix as an _orientation


def _orientation(matrix: tuple[int, ...] | None) -> tuple[bool, bool, bool]:
    """``(transpose, flip left-right, flip up-down)``, applied in that order, for a display matrix.

    Mirrors ffmpeg's autorotate: the angle is ``-round(av_display_rotation_get)`` in [0, 360); 90
    turns clockwise (a plain transpose if mirrored), 270 counter-clockwise (clockwise and flipped
    if mirrored), 180 flips each axis whose scale is negative, 0 flips vertically if mirrored.
    Other angles (ffmpeg's ``rotate`` filter) are left as they are.
    """
    m = [v / 65536.0 for v in matrix] if matrix else [1.0, 0.0, 0.0, 0.0, 1.0]
    sx, sy = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if sx == 0 or sy == 0:
        return (False, False, False)
    theta = -round(-math.degrees(math.atan2(m[1] / sy, m[0] / sx)))
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (True, m[3] <= 0, False)
    if abs(theta - 180) < 1:
        return (False, m[0] < 0, m[4] < 0)
    if abs(theta - 270) < 1:
        return (True, m[3] < 0, True)
    return (False, False, abs(theta) < 1 and m[4] < 0)


def _orient(img: np.ndarray, ops: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply an :func:`_orientation` to one ``(h, w, 3)`` image."""
    img = img.transpose(1, 0, 2) if ops[0] else img
    img = img[:, ::-1] if ops[1] else img
    return img[::-1] if ops[2] else img


def _display_matrix(frame: Any) -> tuple[int, ...] | None:
    for sd in frame.side_data:
        if "DISPLAYMATRIX" in str(sd.type).upper():
            return tuple(int(v) for v in np.frombuffer(bytes(sd), dtype="<i4")[:9])
    return None


def _video_stream(container: Any, name: str) -> Any:
    """The first real video stream (not cover art), or a VideoError saying what the file holds."""
    av = _av()
    streams = list(container.streams.video)
    has_audio = bool(container.streams.audio)
    if not streams and not has_audio:
        raise VideoError(f"{name} holds no audio or video streams (an empty or zero-length video?)")
    real = [s for s in streams if not s.disposition & av.stream.Disposition.attached_pic]
    if not real:
        raise VideoError(f"{name} has no video stream" + (" (it holds only audio)" if has_audio else ""))
    return real[0]


def _scan(container: Any, stream: Any, count_frames: bool, deadline: float, name: str) -> tuple[list, Any]:
    """Demux the video packets: ``(their pts in stream ticks, display matrix of the first frame)``.

    Only the packets before the first decoded frame are decoded (for the rotation metadata); with
    ``count_frames=False`` the scan stops there.
    """
    av = _av()
    ticks: list[int | None] = []
    matrix, decoded = None, False
    try:
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise VideoError(f"probing {name} took too long; is it a regular video file?")
            if packet.size == 0:
                continue
            ticks.append(packet.pts)
            if not decoded:
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    frames = []
                if frames:
                    decoded, matrix = True, _display_matrix(frames[0])
                    if not count_frames:
                        break
        if not decoded and ticks:  # a decoder with delay and few packets: flush it for the first frame
            frames = stream.decode(None)
            matrix = _display_matrix(frames[0]) if frames else None
    except av.error.FFmpegError as exc:
        raise VideoError(f"{name} could not be decoded as a video ({_reason(exc)})") from exc
    return ticks, matrix


def _probe(path: str | os.PathLike, count_frames: bool = True, timeout: float = 120.0) -> _Probe:
    p = _check_file(path)
    with _open(p) as container:
        stream = _video_stream(container, p.name)
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError(f"{p.name}: could not determine the frame size of its video stream")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else _DEFAULT_FPS
        ticks, matrix = _scan(container, stream, count_frames, time.monotonic() + timeout, p.name)
        orient = _orientation(matrix)
        if orient[0]:
            width, height = height, width
        pts = None
        if ticks and None not in ticks:  # without them, start times fall back to fps arithmetic
            pts = np.array(sorted(ticks), dtype=np.float64) * float(stream.time_base)
        info = VideoInfo(
            path=str(p),
            source_fps=fps,
            frame_count=len(ticks) if count_frames else None,
            source_width=width,
            source_height=height,
            duration=container.duration / 1e6 if container.duration else None,
            has_audio=bool(container.streams.audio),
            fps=fps,
            codec=cc.name,
        )
        start = container.start_time / 1e6 if container.start_time is not None else 0.0
        return _Probe(info=info, stream=stream.index, format_start=start, pts=pts, orient=orient)


def probe_video(path: str | os.PathLike, count_frames: bool = True, timeout: float = 120.0) -> VideoInfo:
    """Read a video's metadata: fps, frame count, duration, size, audio.

    The frame count comes from demuxing the video packets (only the first frame is decoded, for
    its rotation metadata); with ``count_frames=False`` the scan stops at the first frame and
    ``frame_count`` is ``None``. ``source_size`` is the displayed size (rotation metadata applied,
    as the reader does). Raises :class:`VideoError` if the file is missing, is not a video, or has
    no video stream.
    """
    return _probe(path, count_frames=count_frames, timeout=timeout).info


# ----------------------------------------------------------------------------------------- reading


def resize_frame(frame: np.ndarray, width: int, height: int, mode: str = "crop") -> np.ndarray:
    """Resize one ``(h, w, 3)`` uint8 frame to ``width x height``.

    ``"squash"`` ignores the aspect ratio (the official Tune-A-Video behaviour); ``"crop"`` keeps it,
    cutting the centre region with the target aspect out of the source before resizing (the same
    result as scale-to-cover then centre-crop). Area interpolation when shrinking, cubic otherwise.
    """
    import cv2

    h, w = frame.shape[:2]
    if mode == "crop":
        if w * height > h * width:  # source is wider than the target: cut the sides
            cw = max(1, min(w, int(round(h * width / height))))
            x0 = (w - cw) // 2
            frame = frame[:, x0 : x0 + cw]
        elif w * height < h * width:  # source is taller: cut top and bottom
            ch = max(1, min(h, int(round(w * height / width))))
            y0 = (h - ch) // 2
            frame = frame[y0 : y0 + ch]
        h, w = frame.shape[:2]
    elif mode != "squash":
        raise InputError(f"resize must be 'crop' or 'squash', got {mode!r}")
    if (w, h) == (width, height):
        return np.ascontiguousarray(frame)
    interp = cv2.INTER_AREA if (width <= w and height <= h) else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(frame), (width, height), interpolation=interp)


def _select_start(pr: _Probe, start_time: float) -> tuple[int, float | None, float]:
    """Map ``start_time`` to ``(frame index, pts threshold in s or None, seek position in s)``.

    With the per-frame timestamps from the probe the start frame is the one nearest to
    ``start_time`` (measured from the first frame), exact for variable frame rates too; the
    threshold lies halfway between it and the frame before, so float rounding cannot pick a
    neighbour. Without timestamps it falls back to ``round(start_time * fps)``.
    """
    fps = pr.info.source_fps
    if start_time <= 0:
        return 0, None, 0.0
    if pr.pts is not None and len(pr.pts) > 0:
        rel = pr.pts - pr.pts[0]
        mids = (rel[1:] + rel[:-1]) / 2
        start = int(np.searchsorted(mids, start_time + 1e-9, side="left"))
        if start_time > rel[-1] + 0.5 / fps:  # past the last frame (the caller reports it)
            return len(rel), None, 0.0
        if start == 0:
            return 0, None, 0.0
        threshold = float((pr.pts[start - 1] + pr.pts[start]) / 2)
    else:
        start = int(math.floor(start_time * fps + 0.5 + 1e-6))
        if start == 0:
            return 0, None, 0.0
        threshold = pr.format_start + (start - 0.5) / fps
    # Seek a second early: the demuxer lands on a keyframe before it, and frames before the
    # threshold are dropped by timestamp.
    return start, threshold, max(0.0, threshold - pr.format_start - 1.0)


def _decode(pr: _Probe, seek: float, deadline: float, errors: list[str]) -> Iterator[Any]:
    """Decoded frames of the probed stream from ``seek`` s (0: the start); bad packets are skipped.

    The reasons of decoding errors are appended to ``errors`` (the caller reports them if no frame
    comes out at all).
    """
    av = _av()
    p = Path(pr.info.path)
    with _open(p) as container:
        stream = container.streams[pr.stream]
        if seek > 0:
            target = (pr.format_start + seek) / float(stream.time_base)
            container.seek(int(math.floor(target)), stream=stream, backward=True)
        try:
            for packet in container.demux(stream):
                if time.monotonic() > deadline:
                    raise VideoError(f"reading {p.name} took too long")
                try:
                    frames = packet.decode()
                except (av.error.FFmpegError, ValueError) as exc:  # a corrupt packet: skip it, as ffmpeg does
                    errors.append(_reason(exc))
                    continue
                yield from frames
        except av.error.FFmpegError as exc:  # a corrupt container: stop here
            errors.append(_reason(exc))


def _clip_frames(pr: _Probe, start: int, threshold: float | None, seek: float, deadline: float, errors: list[str]):
    """Decoded frames from frame ``start`` on: a seek and a drop by timestamp, or a decode from the top.

    If the seek overshoots (the first frame after it is not before the threshold) or the frames
    carry no timestamps, it decodes from the beginning and drops by timestamp, or by count.
    """
    if threshold is None:
        yield from _decode(pr, 0.0, deadline, errors)
        return
    if seek > 0:
        frames = _decode(pr, seek, deadline, errors)
        first = next(frames, None)
        if first is not None and first.time is not None and first.time < threshold:
            for frame in frames:
                if frame.time is None or frame.time >= threshold:
                    yield frame
            return
        frames.close()
    for i, frame in enumerate(_decode(pr, 0.0, deadline, errors)):
        if (frame.time is not None and frame.time >= threshold) or (frame.time is None and i >= start):
            yield frame


def read_video(
    path: str | os.PathLike, spec: VideoSpec | None = None, timeout: float = 600.0
) -> tuple[np.ndarray, VideoInfo]:
    """Read ``spec.num_frames`` frames of a video as ``uint8 (f, spec.height, spec.width, 3)`` RGB.

    Selection follows the official Tune-A-Video loader, ``range(start, len, stride)[:num_frames]``,
    with ``start`` the frame nearest to ``spec.start_time``. Only the frames needed are decoded:
    it seeks close to the start, drops the frames between strides and stops after the last one.

    Raises :class:`VideoError` when the file is missing or not a video, or when it holds fewer than
    ``num_frames`` frames from ``start_time`` with that stride (the message says how many it has).
    """
    spec = VideoSpec() if spec is None else spec
    if not isinstance(spec, VideoSpec):
        raise InputError(f"spec must be a VideoSpec, got {type(spec).__name__}")
    pr = _probe(path)
    info, p = pr.info, Path(pr.info.path)
    fps = info.source_fps
    n, stride = spec.num_frames, spec.stride
    start, threshold, seek = _select_start(pr, spec.start_time)
    if info.frame_count is not None and len(range(start, info.frame_count, stride)) == 0:
        raise _too_few(info, spec, start, 0)

    out = np.empty((n, spec.height, spec.width, 3), dtype=np.uint8)  # (f, h, w, 3)
    errors: list[str] = []
    count = 0
    frames = _clip_frames(pr, start, threshold, seek, time.monotonic() + timeout, errors)
    for k, frame in enumerate(frames):
        if k % stride:
            continue
        rgb = frame.to_ndarray(format="rgb24", interpolation="BICUBIC")  # bicubic: as the ffmpeg command line
        rgb = _orient(rgb, pr.orient)  # (h, w, 3) uint8, displayed orientation
        out[count] = resize_frame(rgb, spec.width, spec.height, spec.resize)
        count += 1
        if count == n:
            break
    frames.close()
    if count < n:
        if errors and count == 0:
            raise VideoError(f"{p.name} could not be decoded ({errors[-1]})")
        raise _too_few(info, spec, start, count)
    indices = tuple(start + k * stride for k in range(n))
    if pr.pts is not None and indices[-1] < len(pr.pts):
        clip_start = float(pr.pts[start] - pr.pts[0])
    else:
        clip_start = start / fps
    info = dataclasses.replace(
        info,
        frame_indices=indices,
        start_time=float(spec.start_time),
        stride=stride,
        fps=fps / stride,
        clip_start=clip_start,
    )
    return out, info


def _too_few(info: VideoInfo, spec: VideoSpec, start: int, available: int) -> VideoError:
    """The error for a clip that holds fewer frames than requested (saying how many it has)."""
    name, fps, stride = Path(info.path).name, info.source_fps, spec.stride
    total = info.frame_count if info.frame_count is not None else "?"
    dur = f", {info.duration:.2f} s" if info.duration is not None else ""
    if available == 0 and start == 0:
        return VideoError(f"{name} contains no video frames (zero-length video)")
    if available == 0:
        return VideoError(
            f"{name}: start_time {spec.start_time:g} s (frame {start}) is past the end of the video "
            f"({total} frames at {fps:g} fps{dur}); use an earlier start_time"
        )
    return VideoError(
        f"{name}: only {available} frame(s) are available from start_time {spec.start_time:g} s "
        f"with stride {stride}, but {spec.num_frames} were requested (the video has {total} frames at {fps:g} fps{dur}). "
        f"Use a smaller stride, an earlier start_time, or fewer frames."
    )


# ----------------------------------------------------------------------------------------- writing


def to_uint8(frames: Any) -> np.ndarray:
    """Convert a clip to ``uint8 (f, h, w, 3)``.

    Accepts numpy arrays or torch tensors, ``uint8`` (returned as is) or float in ``[0, 1]``
    (clipped, scaled, rounded), laid out ``(f, h, w, 3)``, ``(3, f, h, w)`` (the pipeline's
    per-video layout), ``(1, 3, f, h, w)``, or a single ``(h, w, 3)`` image.
    """
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):  # torch.Tensor without importing torch
        t = frames.detach().cpu()
        if t.dtype.is_floating_point:
            t = t.float()
        frames = t.numpy()
    arr = np.asarray(frames)
    if arr.ndim == 5:
        if arr.shape[0] != 1:
            raise InputError(f"expected a single video, got a batch of {arr.shape[0]} (shape {arr.shape})")
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(f"expected frames shaped (f, h, w, 3) or (3, f, h, w), got shape {arr.shape}")
    if arr.shape[-1] != 3:
        if arr.shape[0] == 3:
            arr = np.moveaxis(arr, 0, -1)  # (3, f, h, w) -> (f, h, w, 3)
        else:
            raise InputError(f"expected 3 colour channels, got frames of shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32), nan=0.0)
        return np.ascontiguousarray(np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))
    if np.issubdtype(arr.dtype, np.integer):
        return np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8))
    raise InputError(f"unsupported frame dtype {arr.dtype}")


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one edge-replicated pixel (yuv420p needs even sizes)."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames


def _tmp_sibling(path: Path) -> Path:
    """A hidden temp name next to ``path``: written first, then renamed, so readers never see half a file."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def _check_fps(fps: Any) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    return value


def _check_frames(frames: Any) -> np.ndarray:
    arr = to_uint8(frames)
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(f"cannot write an empty clip (frames of shape {arr.shape})")
    return arr


def _audio_window(source: str | os.PathLike, start: float, duration: float) -> tuple[np.ndarray, int, str] | None:
    """The first audio track of ``source`` from ``start`` s for ``duration`` s, or None if it has none.

    Returns ``(samples, rate, layout)`` with samples ``(channels, n)`` float32; ``start`` is measured
    from the container's start (as ``ffmpeg -ss`` is), the cut is sample-exact, and a gap before
    the track's first sample stays silent so the audio keeps its place against the video.
    """
    av = _av()
    p = _check_file(source)
    with _open(p, "an audio source") as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate, layout = int(stream.codec_context.sample_rate), stream.codec_context.layout.name
        origin = (container.start_time / 1e6 if container.start_time is not None else 0.0) + start
        if start > 0.5:
            container.seek(int(math.floor((origin - 0.5) / float(stream.time_base))), stream=stream)
        total = int(round(duration * rate))
        buf = np.zeros((len(stream.codec_context.layout.channels), total), np.float32)  # (channels, n)
        end = 0
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                at = int(round((frame.time - origin) * rate))  # first sample's place in the window
                if at >= total:
                    break
                for chunk in resampler.resample(frame):
                    data = chunk.to_ndarray().reshape(buf.shape[0], -1)  # (channels, samples)
                    lo, hi = max(0, -at), min(data.shape[1], total - at)
                    if hi > lo:
                        buf[:, at + lo : at + hi] = data[:, lo:hi]
                        end = max(end, at + hi)
                    at += data.shape[1]
        except av.error.FFmpegError as exc:
            raise VideoError(f"audio source {p.name} could not be decoded ({_reason(exc)})") from exc
    return buf[:, :end], rate, layout


def _encode_audio(container: Any, stream: Any, samples: np.ndarray) -> None:
    """Encode ``(channels, n)`` float32 samples into an audio ``stream`` of ``container``."""
    av = _av()
    rate, layout = stream.codec_context.sample_rate, stream.codec_context.layout.name
    for k in range(0, samples.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k : k + 1024]), format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, k, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_mp4(
    frames: Any,
    path: str | os.PathLike,
    fps: float,
    audio_source: str | os.PathLike | None = None,
    audio_start: float = 0.0,
    quality: int = 18,
    preset: str = "medium",
) -> Path:
    """Write an H.264 (libx264, yuv420p) mp4 and return its path.

    ``frames``: anything :func:`to_uint8` accepts. Odd sizes are padded by one pixel to even (never
    rescaled). ``quality`` is the x264 CRF (0 = lossless ... 51 = worst; 18 is visually lossless).
    If ``audio_source`` has an audio track, its audio from ``audio_start`` seconds, for the clip's
    duration, is muxed in as AAC (a source without audio is fine: the mp4 is then silent). The
    caller decides whether the timing matches (it does for stride 1).
    """
    arr = _even(_check_frames(frames))  # (f, h, w, 3) uint8, even h and w
    fps = _check_fps(fps)
    try:
        crf = operator.index(quality)
    except TypeError:
        crf = -1
    if not 0 <= crf <= 51:
        raise InputError(f"quality is the x264 CRF and must be an integer in 0..51, got {quality!r}")
    if not audio_start >= 0:
        raise InputError(f"audio_start must be >= 0, got {audio_start}")
    av = _av()
    _check_libx264()
    f, h, w, _ = arr.shape
    audio = _audio_window(audio_source, audio_start, f / fps) if audio_source is not None else None
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out)
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(tmp), "w", format="mp4", container_options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            audio_stream = None
            if audio is not None and audio[0].shape[1] > 0:  # every stream is added before the first packet
                audio_stream = container.add_stream("aac", rate=audio[1], layout=audio[2])
                audio_stream.codec_context.bit_rate = 192_000
            for i, img in enumerate(arr):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
                    format="yuv420p", interpolation="BICUBIC"
                )
                frame.pts, frame.time_base = i, 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
            if audio_stream is not None:
                _encode_audio(container, audio_stream, audio[0])
        os.replace(tmp, out)
    except av.error.FFmpegError as exc:
        raise VideoError(f"could not write {out.name}: {_reason(exc)}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def write_gif(frames: Any, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """Write an animated GIF that loops forever (adaptive palette per frame) and return its path.

    GIF delays are whole 1/100 s, so the rate is rounded to that (12 fps plays at 12.5). Pillow
    merges consecutive identical frames into one longer frame.
    """
    from PIL import Image

    arr = _check_frames(frames)
    fps = _check_fps(fps)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in arr]
    tmp = _tmp_sibling(out)
    try:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(20, int(round(1000.0 / fps))),
            loop=0,
        )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _tile(images: np.ndarray, ncols: int, padding: int, pad_value: int) -> np.ndarray:
    """Tile ``(n, h, w, 3)`` images into one ``(H, W, 3)`` image, row by row."""
    n, h, w, c = images.shape
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding, c), pad_value, dtype=images.dtype)
    for i in range(n):
        r, col = divmod(i, cols)
        y = padding + r * (h + padding)
        x = padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def make_grid(videos: Sequence[Any], ncols: int = 4, padding: int = 0, pad_value: int = 0) -> np.ndarray:
    """Tile several clips frame by frame (e.g. source | edit side by side) into one ``(f, H, W, 3)`` clip.

    Every clip must have the same frame count and size. ``ncols`` clips per row; ``padding`` pixels
    of ``pad_value`` between and around tiles (0 by default).
    """
    if ncols < 1:
        raise InputError(f"ncols must be >= 1, got {ncols}")
    if padding < 0:
        raise InputError(f"padding must be >= 0, got {padding}")
    clips = [to_uint8(v) for v in videos]
    if not clips:
        raise InputError("make_grid needs at least one video")
    shape = clips[0].shape
    for i, c in enumerate(clips[1:], 1):
        if c.shape != shape:
            raise InputError(
                f"all videos must share one shape (f, h, w, 3): video 0 is {shape}, video {i} is {c.shape}"
            )
    stack = np.stack(clips, axis=1)  # (f, n, h, w, 3)
    return np.stack([_tile(stack[t], ncols, padding, pad_value) for t in range(shape[0])])


def write_frame_grid(
    frames: Any, path: str | os.PathLike, ncols: int = 4, padding: int = 0, pad_value: int = 0
) -> Path:
    """Save every frame of one clip tiled into a single PNG (``ncols`` frames per row); return its path."""
    from PIL import Image

    if ncols < 1:
        raise InputError(f"ncols must be >= 1, got {ncols}")
    arr = to_uint8(frames)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(out)
    try:
        Image.fromarray(_tile(arr, ncols, padding, pad_value)).save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
