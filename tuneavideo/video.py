"""Video IO: read a clip of a source video at a fixed size, write mp4/GIF/frame grids.

Everything goes through the ffmpeg binary bundled with ``imageio-ffmpeg`` (no system ffmpeg, no
PyAV, no torchvision), called as a subprocess:

* :func:`probe_video` parses ``ffmpeg -i`` and lists every video packet's timestamp with a stream
  copy (demux only, nothing decoded: about 0.25 s for 2 minutes of 1080p), which gives the exact
  frame count and, for variable-frame-rate files too, the time of every frame.
* :func:`read_video` maps ``start_time`` to the nearest frame, seeks a little before it (``-ss``
  before ``-i``), drops the frames before it by timestamp and keeps every ``stride``-th frame with
  ffmpeg's ``select`` filter (exact, whatever the container's clock resolution), and stops after
  ``num_frames`` frames (``-frames:v``), so a 10-minute HD file is never decoded whole. Frames
  stream out as PPM images (each carries its own size, so rotated phone videos need no special
  case) and are resized one by one with OpenCV (area when shrinking, cubic when enlarging), so
  memory holds only the output clip.
* :func:`write_mp4` pipes raw RGB into libx264/yuv420p at the exact frame size (odd sizes are
  padded by one pixel, never rescaled) and can mux the source's audio for the clip's time window.

Frames are ``uint8`` arrays of shape ``(f, h, w, 3)``, RGB, throughout.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
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
    "ffmpeg_exe",
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
_DEFAULT_FPS = 25.0  # ffmpeg's own assumption when a stream carries no rate


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

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for logs and artifact metadata)."""
        d = dataclasses.asdict(self)
        d["frame_indices"] = list(self.frame_indices)
        return d


# --------------------------------------------------------------------------------------------- ffmpeg


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg`` (or ``$IMAGEIO_FFMPEG_EXE``)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a hard dependency of the package
        raise MissingDependencyError("video reading and writing", "imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: list[str], timeout: float | None = None, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    head = [ffmpeg_exe(), "-hide_banner", "-y"] + (["-nostdin"] if stdin is None else [])
    return subprocess.run(
        [*head, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def _last_error_line(stderr: str) -> str:
    """The most informative line of ffmpeg's stderr, for an error message (never the whole log)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        low = ln.lower()
        if any(k in low for k in ("invalid", "error", "not found", "unknown", "failed", "no such", "could not")):
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)[:300]
    return (lines[-1] if lines else "no output")[:300]


def _check_file(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise VideoError(f"file not found: {p}")
    if p.is_dir():
        raise VideoError(f"expected a video file but got a folder: {p}")
    if p.stat().st_size == 0:
        raise VideoError(f"the video file is empty (0 bytes): {p}")
    return p


_RE_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_RE_START = re.compile(r"Duration:[^\n]*?start:\s*(-?\d+(?:\.\d+)?)")
_RE_STREAM = re.compile(r"^\s*Stream #(\d+):(\d+)[^:]*:\s*(Video|Audio):\s*(.*)$", re.M)
_RE_SIZE = re.compile(r"(?:^|,\s)(\d+)x(\d+)(?=[\s,]|$)")
_RE_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?)\s+fps")
_RE_TBR = re.compile(r"(\d+(?:\.\d+)?)(k?)\s+tbr")
_RE_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees")
_RE_TB = re.compile(r"^#tb 0:\s*(\d+)/(\d+)", re.M)


def _parse_rate(m: re.Match | None) -> float | None:
    if not m:
        return None
    v = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    return v if v > 0 else None


@dataclass(frozen=True)
class _Probe:
    info: VideoInfo
    stream: int  # ffmpeg index of the video stream used
    format_start: float  # container start time (s); ffmpeg's -ss is relative to it
    pts: np.ndarray | None  # sorted presentation times (s, raw container clock) of every frame, if known


def _probe(path: str | os.PathLike, count_frames: bool = True, timeout: float = 120.0) -> _Probe:
    p = _check_file(path)
    args = ["-copyts", "-i", str(p)]
    if count_frames:
        # One line per video packet (stream copy: demux only, nothing is decoded) with its pts.
        args += ["-map", "0:V:0?", "-c", "copy", "-f", "framecrc", "-"]
    try:
        res = _run(args, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise VideoError(f"probing {p.name} took longer than {timeout:.0f} s; is it a regular video file?") from exc
    err = res.stderr.decode("utf-8", "replace")
    if "Input #0" not in err:
        raise VideoError(
            f"{p.name} could not be decoded as a video ({_last_error_line(err)}); "
            f"supported formats include {', '.join(VIDEO_EXTENSIONS)}"
        )
    header = err.split("Stream mapping:")[0].split("Output #0")[0]
    streams = _RE_STREAM.findall(header)
    video = [s for s in streams if s[2] == "Video"]
    has_audio = any(s[2] == "Audio" for s in streams)
    if not streams:
        raise VideoError(f"{p.name} holds no audio or video streams (an empty or zero-length video?)")
    real = [s for s in video if "attached pic" not in s[3]]  # skip cover art
    if not real:
        raise VideoError(f"{p.name} has no video stream" + (" (it holds only audio)" if has_audio else ""))
    stream, desc = int(real[0][1]), real[0][3]
    size = _RE_SIZE.search(desc)
    if not size:
        raise VideoError(f"{p.name}: could not determine the frame size of its video stream")
    width, height = int(size.group(1)), int(size.group(2))
    block = header[header.find(desc) :]
    nxt = _RE_STREAM.search(block, 1)
    block = block[: nxt.start()] if nxt else block
    rot = _RE_ROTATION.search(block)
    if rot and int(round(abs(float(rot.group(1))))) % 180 == 90:
        width, height = height, width  # ffmpeg auto-rotates on decode
    fps = _parse_rate(_RE_FPS.search(desc)) or _parse_rate(_RE_TBR.search(desc)) or _DEFAULT_FPS
    dm = _RE_DURATION.search(header)
    duration = int(dm.group(1)) * 3600 + int(dm.group(2)) * 60 + float(dm.group(3)) if dm else None
    sm = _RE_START.search(header)
    codec = desc.split()[0].rstrip(",") if desc.split() else None
    frame_count, pts = None, None
    if count_frames:
        if res.returncode != 0:
            raise VideoError(f"{p.name} could not be decoded as a video ({_last_error_line(err)})")
        out = res.stdout.decode("ascii", "replace")
        rows = [ln.split(",") for ln in out.splitlines() if ln and not ln.startswith("#")]
        frame_count = len(rows)
        tb = _RE_TB.search(out)
        try:
            if tb and rows:
                ticks = np.array(sorted(int(r[2]) for r in rows), dtype=np.float64)
                pts = ticks * int(tb.group(1)) / int(tb.group(2))
        except (ValueError, IndexError):  # NOPTS or an unexpected layout: fall back to fps arithmetic
            pts = None
    info = VideoInfo(
        path=str(p),
        source_fps=float(fps),
        frame_count=frame_count,
        source_width=width,
        source_height=height,
        duration=duration,
        has_audio=has_audio,
        fps=float(fps),
        codec=codec,
    )
    return _Probe(info=info, stream=stream, format_start=float(sm.group(1)) if sm else 0.0, pts=pts)


def probe_video(path: str | os.PathLike, count_frames: bool = True, timeout: float = 120.0) -> VideoInfo:
    """Read a video's metadata without decoding it: fps, frame count, duration, size, audio.

    The frame count comes from a stream copy of the video packets (``-c copy -f framecrc``), which
    demuxes the file but decodes nothing (about 0.25 s for 2 minutes of 1080p); with
    ``count_frames=False`` only the header is read and ``frame_count`` is ``None``. ``source_size``
    is the displayed size (rotation metadata applied, as the decoder does).
    Raises :class:`VideoError` if the file is missing, is not a video, or has no video stream.
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


def _read_ppm(stream) -> np.ndarray | None:
    """Read one binary PPM (P6, maxval 255) image from ``stream``; ``None`` at a clean EOF."""
    tokens: list[bytes] = []
    buf = b""
    while len(tokens) < 4:
        c = stream.read(1)
        if not c:
            if not tokens and not buf:
                return None
            raise VideoError("the decoder's output ended in the middle of a frame")
        if c == b"#" and not buf:  # comment line
            stream.readline()
            continue
        if c.isspace():
            if buf:
                tokens.append(buf)
                buf = b""
        else:
            buf += c
    magic, w, h, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic != b"P6" or maxval != 255:
        raise VideoError(f"unexpected decoder output (PPM header {magic!r}, maxval {maxval})")
    data = stream.read(w * h * 3)
    if len(data) != w * h * 3:
        raise VideoError("the decoder's output ended in the middle of a frame")
    return np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)


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
    # Seek a second early: the demuxer lands on a keyframe before it, and the select filter drops
    # the frames before the threshold exactly (no dependence on ffmpeg's timestamp rounding).
    return start, threshold, max(0.0, threshold - pr.format_start - 1.0)


def read_video(
    path: str | os.PathLike, spec: VideoSpec | None = None, timeout: float = 600.0
) -> tuple[np.ndarray, VideoInfo]:
    """Read ``spec.num_frames`` frames of a video as ``uint8 (f, spec.height, spec.width, 3)`` RGB.

    Selection follows the official Tune-A-Video loader, ``range(start, len, stride)[:num_frames]``,
    with ``start`` the frame nearest to ``spec.start_time``. Only the frames needed are decoded:
    ffmpeg seeks close to the start, drops the frames between strides and stops after the last one.

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

    def too_few(available: int) -> VideoError:
        total = info.frame_count if info.frame_count is not None else "?"
        dur = f", {info.duration:.2f} s" if info.duration is not None else ""
        if available == 0 and start == 0:
            return VideoError(f"{p.name} contains no video frames (zero-length video)")
        if available == 0:
            return VideoError(
                f"{p.name}: start_time {spec.start_time:g} s (frame {start}) is past the end of the video "
                f"({total} frames at {fps:g} fps{dur}); use an earlier start_time"
            )
        return VideoError(
            f"{p.name}: only {available} frame(s) are available from start_time {spec.start_time:g} s "
            f"with stride {stride}, but {n} were requested (the video has {total} frames at {fps:g} fps{dur}). "
            f"Use a smaller stride, an earlier start_time, or fewer frames."
        )

    if info.frame_count is not None:
        available = len(range(start, info.frame_count, stride))
        if available == 0:
            raise too_few(0)

    args = ["-nostdin", "-hide_banner", "-loglevel", "error"]
    filters = []
    if threshold is not None:
        args += ["-copyts", "-noaccurate_seek"]
        if seek > 0:
            args += ["-ss", f"{seek:.6f}"]
        filters.append(f"select=gte(t\\,{threshold:.9f})")
    if stride > 1:
        filters.append(f"select=not(mod(n\\,{stride}))")
    args += ["-i", str(p), "-map", f"0:{pr.stream}", "-an", "-sn", "-dn"]
    if filters:
        args += ["-vf", ",".join(filters)]
    args += ["-fps_mode", "passthrough", "-frames:v", str(n), "-pix_fmt", "rgb24", "-c:v", "ppm"]
    args += ["-f", "image2pipe", "-"]

    out = np.empty((n, spec.height, spec.width, 3), dtype=np.uint8)
    count = 0
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen([ffmpeg_exe(), *args], stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            while count < n:
                frame = _read_ppm(proc.stdout)
                if frame is None:
                    break
                out[count] = resize_frame(frame, spec.width, spec.height, spec.resize)
                count += 1
            proc.stdout.close()
            rc = proc.wait(timeout=timeout)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
    if count < n:
        if rc != 0 and count == 0:
            raise VideoError(f"{p.name} could not be decoded ({_last_error_line(err)})")
        raise too_few(count)
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


def _fps_arg(fps: float) -> str:
    frac = Fraction(float(fps)).limit_denominator(1001)
    return f"{frac.numerator}/{frac.denominator}"


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
    arr = _even(_check_frames(frames))
    fps = _check_fps(fps)
    try:
        crf = operator.index(quality)
    except TypeError:
        crf = -1
    if not 0 <= crf <= 51:
        raise InputError(f"quality is the x264 CRF and must be an integer in 0..51, got {quality!r}")
    if not audio_start >= 0:
        raise InputError(f"audio_start must be >= 0, got {audio_start}")
    f, h, w, _ = arr.shape
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}"]
    args += ["-framerate", _fps_arg(fps), "-i", "pipe:0"]
    mux_audio = audio_source is not None and _has_audio(audio_source)
    if mux_audio:
        args += ["-ss", f"{audio_start:.6f}", "-t", f"{f / fps:.6f}", "-i", str(Path(audio_source))]
    args += ["-map", "0:v:0"]
    if mux_audio:
        args += ["-map", "1:a:0?", "-c:a", "aac", "-b:a", "192k"]
    args += ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p"]
    args += ["-movflags", "+faststart", "-f", "mp4", str(tmp := _tmp_sibling(out))]
    try:
        res = _run(args, stdin=arr.tobytes())
        if res.returncode != 0 or not tmp.exists():
            raise VideoError(f"could not write {out.name}: {_last_error_line(res.stderr.decode('utf-8', 'replace'))}")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _has_audio(path: str | os.PathLike) -> bool:
    """Whether a media file (video or audio-only) has an audio stream; VideoError if unreadable."""
    p = _check_file(path)
    err = _run(["-i", str(p)]).stderr.decode("utf-8", "replace")
    if "Input #0" not in err:
        raise VideoError(f"audio source {p.name} could not be decoded ({_last_error_line(err)})")
    return any(kind == "Audio" for *_, kind, _desc in _RE_STREAM.findall(err))


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
