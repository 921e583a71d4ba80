"""Deterministic test clips written with PyAV (no ffmpeg command line).

``write_clip`` encodes frames with any codec/container PyAV's wheel has, with optional explicit
timestamps (variable frame rate), display-rotation metadata and a tone track. ``make_pinned_inputs``
writes the small clips under ``tests/data/video/`` whose decoded frames ``make_video_refs.py``
pinned; they are committed, so the tests never depend on an encoder's version.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).parent / "data" / "video"


def pattern_clip(n: int, w: int, h: int, seed: int = 0) -> np.ndarray:
    """A colourful moving clip, ``(n, h, w, 3)`` uint8: gradients, a moving block and index bars."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), np.full_like(x, 96)], -1)
    frames = np.repeat(base[None].astype(np.uint8), n, 0)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    for i in range(n):
        x0 = (3 * i) % max(1, w - 8)
        frames[i, h // 3 : h // 3 + 8, x0 : x0 + 8] = colour
        for b in range(8):  # frame index in binary, 2-px bars along the bottom
            if i >> b & 1:
                frames[i, h - 4 :, 2 * b : 2 * b + 2] = 255
    return frames


def _tone(rate: int, seconds: float, freq: float, onset: float | None) -> np.ndarray:
    """A ``(1, samples)`` float32 tone; with ``onset`` silent before it (a marker for sync tests)."""
    t = np.arange(int(round(rate * seconds))) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    if onset is not None:
        wave[t < onset] = 0.0
    return wave.astype(np.float32)[None]


def write_clip(
    path: Path,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float = 12,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int = 0,
    tone: tuple[float, float | None] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode ``frames`` (f, h, w, 3) uint8 (or an iterable of (h, w, 3) frames) to ``path``.

    ``pts`` (in ``time_base``) give every frame's timestamp for a VFR clip; ``rotation`` sets the
    display matrix (degrees, as ``ffmpeg -display_rotation``); ``tone=(freq, onset)`` adds a mono
    AAC/Vorbis track as long as the video, silent before ``onset`` s.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    if isinstance(frames, np.ndarray):
        (h, w), frames = frames.shape[1:3], iter(frames)
    else:
        first = next(iter(frames))
        (h, w), frames = first.shape[:2], itertools.chain([first], frames)
    n = 0
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.options = {"threads": "1", **(options or {})}
        vs.codec_context.time_base = time_base or 1 / rate
        if rotation:
            vs.set_display_rotation(rotation)
        aus = None
        if tone is not None:
            acodec = "libvorbis" if path.suffix in (".webm", ".mkv") else "aac"
            aus = out.add_stream(acodec, rate=16000, layout="mono")
        out.start_encoding()  # writes the header even for a clip without frames
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts = i if pts is None else int(pts[i])
            frame.time_base = vs.codec_context.time_base
            out.mux(vs.encode(frame))
            n += 1
        out.mux(vs.encode(None))
        if aus is not None:
            seconds = n / fps if pts is None else float((int(pts[-1]) + 1) * vs.codec_context.time_base)
            wave = _tone(16000, seconds, tone[0], tone[1])
            for k in range(0, wave.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(wave[:, k : k + 1024]), format="fltp", layout="mono"
                )
                af.sample_rate, af.pts = 16000, k
                out.mux(aus.encode(af))
            out.mux(aus.encode(None))
    return path


def write_tone(path: Path, seconds: float = 1.0, freq: float = 440.0) -> Path:
    """An audio-only file (AAC in the container ``path``'s suffix names, e.g. ``.m4a``)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        wave = _tone(16000, seconds, freq, None)
        for k in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wave[:, k : k + 1024]), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# The pinned inputs: name -> how it is made. Small on purpose (each a few kB).
_VFR_PTS = [0, 83, 167, 250, 333, 417, 1417, 1500, 1583, 1667, 1750, 1833, 2250, 2292, 2333, 2375]  # ms


def make_pinned_inputs(folder: Path = DATA) -> dict[str, Path]:
    """Write the generated clips the frame-pinning references were made from; return name -> path."""
    f = folder
    clips = {
        "rot90.mp4": lambda p: write_clip(p, pattern_clip(12, 48, 32, 1), rotation=90),
        "rot270.mp4": lambda p: write_clip(p, pattern_clip(12, 48, 32, 2), rotation=-90),
        "vfr.mkv": lambda p: write_clip(p, pattern_clip(16, 40, 32, 3), pts=_VFR_PTS, time_base=Fraction(1, 1000)),
        "audio.mp4": lambda p: write_clip(p, pattern_clip(30, 32, 24, 4), fps=10, tone=(440.0, 1.5)),
        "odd444.mp4": lambda p: write_clip(p, pattern_clip(10, 37, 29, 5), pix_fmt="yuv444p"),
        "odd.webm": lambda p: write_clip(
            p, pattern_clip(10, 35, 27, 6), codec="libvpx-vp9", options={"crf": "30", "b": "0", "cpu-used": "8"}
        ),
        "mpeg4.avi": lambda p: write_clip(p, pattern_clip(12, 32, 24, 7), codec="mpeg4", options={"qscale": "3"}),
        "gop.mp4": lambda p: write_clip(
            p, pattern_clip(96, 32, 24, 8), options={"g": "12", "bf": "2", "crf": "23", "preset": "veryfast"}
        ),
    }
    return {name: make(f / name) for name, make in clips.items()}
