"""The Tune-A-Video workflow as plain steps: read a clip, tune, invert, sample (with control), write outputs.

Every step takes explicit inputs (the pipeline, frames, frozen configs, a progress callback) and
returns plain values. Nothing here keeps state, takes locks, caches or imports Gradio: the
:class:`~tuneavideo.engine.Engine` (app), the CLI, batch jobs and the benchmarks all call these steps,
so a change to the workflow is made here once.

Randomness: each job draws its noise from :func:`job_generator` (a ``torch.Generator`` on the CPU,
seeded with the job's seed), so the same seed gives the same video on every device and through
every entry point; nothing touches PyTorch's global RNG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
from .errors import InputError, TuneAVideoError, VideoError
from .progress import ProgressCallback, ProgressEvent
from .store import RunFolder, TunedDelta

GENERATOR_DEVICE = "cpu"  # one device for every job's generator: same seed, same noise, on any hardware
DEFAULT_FPS = 8.0  # output rate when there is no source clip (the official GIFs play at 8 fps)
MAX_SEED = 2**63 - 1


def job_generator(seed: int) -> torch.Generator:
    """The generator of a job: on :data:`GENERATOR_DEVICE`, seeded with ``seed``."""
    return torch.Generator(device=GENERATOR_DEVICE).manual_seed(check_seed(seed))


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed must be a whole number from 0 to 2**63-1, got {seed!r}")
    return int(seed)


def fresh_seed() -> int:
    """A random seed for "no seed given" (from the OS, not from any global RNG a tune may have seeded)."""
    return secrets.randbelow(2**31 - 1)


def with_seed(config: SampleConfig) -> SampleConfig:
    """``config`` with a concrete seed (a fresh one when it has none), so the job can be repeated."""
    return config if config.seed is not None else dataclasses.replace(config, seed=fresh_seed())


def clean_prompts(prompts: str | Sequence[str], what: str = "edit prompt") -> list[str]:
    """Stripped, non-empty prompts; at least one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    cleaned = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if not cleaned:
        raise InputError(f"Please enter at least one {what}.")
    return cleaned


# ------------------------------------------------------------------------------------------ clips
def check_video_path(video_path: str | Path | None) -> Path:
    """``video_path`` as a Path, if it names an existing file with a video extension."""
    from .video import VIDEO_EXTENSIONS

    if video_path is None or str(video_path).strip() == "":
        raise InputError("Please upload a video (mp4, mov, webm, avi, mkv or gif), or pick an example.")
    path = Path(video_path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path.name}")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoError(f"{path.name}: not a video file; expected one of {', '.join(VIDEO_EXTENSIONS)}")
    return path


@dataclass(frozen=True)
class Clip:
    """A source clip ready to tune on: exact frames plus what outputs need (rate, audio)."""

    frames: np.ndarray  # uint8 (f, h, w, 3)
    fps: float
    spec: VideoSpec
    audio_source: str | None = None  # a file whose audio lines up with the frames (from audio_start)
    audio_start: float = 0.0
    path: str | None = None  # the file it was read from
    has_audio: bool = False  # the file has sound (kept only when the clip is contiguous)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def read_clip(video_path: str | Path, spec: VideoSpec) -> Clip:
    """Read, trim and resize a clip as ``spec`` says; its audio is kept when the frames are contiguous."""
    from .video import read_video

    frames, info = read_video(video_path, spec)
    contiguous = spec.stride == 1 and bool(info.has_audio)
    return Clip(
        frames=frames,
        fps=float(info.fps or DEFAULT_FPS),
        spec=spec,
        audio_source=str(video_path) if contiguous else None,
        audio_start=float(info.clip_start) if contiguous else 0.0,
        path=str(video_path),
        has_audio=bool(info.has_audio),
    )


def clip_of_run(run: RunFolder) -> Clip:
    """The exact clip a stored run was tuned on (its audio, when kept, is in the run's source.mp4)."""
    from .store import SOURCE_FILE

    record = run.record
    frames = run.source_frames()
    spec_dict = record.get("video_spec") or {}
    spec = VideoSpec(**{k: v for k, v in spec_dict.items() if k in {f.name for f in dataclasses.fields(VideoSpec)}})
    audio = bool(record.get("audio")) and (run.path / SOURCE_FILE).is_file()
    return Clip(
        frames=frames,
        fps=float(record.get("clip_fps") or DEFAULT_FPS),
        spec=spec,
        audio_source=str(run.path / SOURCE_FILE) if audio else None,
        path=str(run.path / SOURCE_FILE),
        has_audio=audio,
    )


def audio_note(clip: Clip | None, kept: bool) -> str:
    """One sentence on whether the outputs have the source's sound, and why not."""
    if clip is None:
        return "Audio: none (generated from noise, no source clip)."
    if kept:
        return "Audio: kept from the source clip."
    if not clip.has_audio:
        return "Audio: the source clip has none."
    if clip.spec.stride > 1:
        return f"Audio: not kept (frame stride {clip.spec.stride} changes the clip's timing)."
    return "Audio: not kept (the output's frames do not line up with the source)."


# ------------------------------------------------------------------------------------------ tuning
def tune_clip(
    pipe: Any,
    clip: Clip,
    prompt: str,
    config: TuneConfig,
    progress: ProgressCallback | None = None,
    extra_record: dict[str, Any] | None = None,
) -> TunedDelta:
    """One-shot tuning (paper §4.2) on ``clip``; returns the delta and leaves ``pipe.unet`` bit-for-bit as it was.

    Raises :class:`~tuneavideo.errors.TuneAVideoError` when the loss diverges (non-finite).
    """
    from .tuning import select_trainable, tune

    prompt = prompt.strip() if isinstance(prompt, str) else ""
    if not prompt:
        raise InputError("Please describe the source video in the prompt (e.g. 'a man is skiing').")
    snapshot = {k: p.detach().clone() for k, p in select_trainable(pipe.unet, config.trainable_modules).items()}
    record = {
        "video_spec": dataclasses.asdict(clip.spec),
        "clip_fps": clip.fps,
        "audio": clip.audio_source is not None,
        "video_path": str(Path(clip.path).resolve()) if clip.path else None,
        **(extra_record or {}),
    }
    try:
        delta = tune(pipe, clip.frames, prompt, config, callback=progress, video_spec=clip.spec,
                     extra_record=record, generator=job_generator(config.seed))  # fmt: skip
    finally:
        _restore(pipe.unet, snapshot)
    losses = tuple(float(x) for x in getattr(delta, "losses", ()) or ())
    if not all(math.isfinite(x) for x in losses):
        first = next(i for i, x in enumerate(losses) if not math.isfinite(x))
        raise TuneAVideoError(
            f"tuning diverged: the loss became {losses[first]} at step {first + 1} with learning rate "
            f"{config.learning_rate:g}; lower the learning rate (the paper uses 3e-5) and tune again."
        )
    return TunedDelta(dict(delta.state_dict), dict(delta.record), losses)


def _restore(unet: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    """Put the trainable parameters back exactly as they were (values, dtype, device, frozen)."""
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for name, value in snapshot.items():
            p = params[name]
            if p.dtype == value.dtype and p.device == value.device:
                p.copy_(value)
            else:
                p.data = value
            p.requires_grad_(False)
            p.grad = None


# ------------------------------------------------------------------------------------------ inversion
def encode_clip(pipe: Any, frames: np.ndarray) -> torch.Tensor:
    """VAE posterior means of the frames: ``x0`` (1, 4, f, h/8, w/8)."""
    with torch.no_grad():
        return pipe.encode_video(frames)


def invert_clip(
    pipe: Any,
    delta: TunedDelta | None,
    x0: torch.Tensor,
    config: InvertConfig,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """DDIM inversion (paper §4.3) of ``x0`` with the tuned weights applied: ``xT`` (1, 4, f, h/8, w/8)."""
    with _applied(pipe, delta), torch.no_grad():
        xT = pipe.invert(x0, config.num_inference_steps, prompt=config.prompt, callback=progress)
    # Contiguous, as when read back from a run folder: convolutions on another memory layout round differently,
    # and a fresh inversion must sample exactly like a stored one.
    return xT.contiguous()


def cached_inversion(
    pipe: Any,
    run: RunFolder,
    delta: TunedDelta,
    clip: Clip,
    config: InvertConfig,
    progress: ProgressCallback | None = None,
) -> tuple[torch.Tensor, bool]:
    """The run's inversion for ``config``: loaded when stored (and still valid), else computed and stored."""
    vf = int(pipe.vae_scale_factor)
    f, h, w = clip.frames.shape[:3]
    shape = (1, int(pipe.unet.config.in_channels), f, h // vf, w // vf)
    latents = run.load_inversion(config, shape)
    if latents is not None:
        return latents, True
    latents = invert_clip(pipe, delta, encode_clip(pipe, clip.frames), config, progress)
    run.save_inversion(config, latents)
    return latents, False


# ------------------------------------------------------------------------------------------ sampling
def sample_videos(
    pipe: Any,
    delta: TunedDelta | None,
    prompts: Sequence[str],
    size: tuple[int, int, int],
    config: SampleConfig,
    latents: torch.Tensor | None = None,
    progress: ProgressCallback | None = None,
    unet_kwargs: Any = None,
) -> np.ndarray:
    """One video per prompt with the tuned weights applied; uint8 ``(n, f, h, w, 3)``.

    ``size`` is ``(frames, height, width)``; ``latents`` (inverted source noise) fix it instead. Each
    prompt starts from the same noise (``job_generator(config.seed)``), one prompt at a time (memory).
    """
    from .video import to_uint8

    config = with_seed(config)
    num_frames, height, width = size
    n, steps = len(prompts), config.num_inference_steps
    out = np.empty((n, num_frames, height, width, 3), dtype=np.uint8)
    started = time.perf_counter()
    with _applied(pipe, delta):
        for i, prompt in enumerate(prompts):
            video = pipe(
                prompt,
                num_frames=num_frames,
                height=height,
                width=width,
                num_inference_steps=steps,
                guidance_scale=config.guidance_scale,
                negative_prompt=config.negative_prompt,
                eta=config.eta,
                generator=job_generator(config.seed),
                latents=latents,
                output_type="np",
                callback=_prompt_progress(progress, i, n, steps, started),
                unet_kwargs=unet_kwargs,
            ).videos  # (1, f, h, w, 3) float in [0, 1]
            out[i] = to_uint8(video[0])
    return out


def _prompt_progress(
    progress: ProgressCallback | None, index: int, count: int, steps: int, started: float
) -> ProgressCallback | None:
    """Map one prompt's sampling events onto the whole job's ``count * steps`` steps."""
    if progress is None:
        return None

    def forward(event: ProgressEvent) -> None:
        progress(
            dataclasses.replace(
                event,
                step=index * steps + event.step,
                total=count * steps,
                elapsed=time.perf_counter() - started,
                extra={**event.extra, "prompt": index + 1, "prompts": count},
            )
        )

    return forward


def _applied(pipe: Any, delta: TunedDelta | None) -> Any:
    return delta.applied(pipe.unet) if delta is not None else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------ control
def control_hints(
    frames: np.ndarray,
    hint_config: Any,
    hint_video: str | Path | None = None,
    progress: ProgressCallback | None = None,
    models: Any = None,
) -> np.ndarray:
    """Per-frame hints uint8 ``(f, h, w, 3)``: read from ``hint_video``, else extracted from ``frames``.

    ``models`` is the caller's :class:`~tuneavideo.hints.HintModels` (loaded detectors kept between jobs).
    """
    from .hints import extract_hints, load_hint_video

    f, h, w = frames.shape[:3]
    if hint_video is not None and str(hint_video).strip():
        return load_hint_video(hint_video, (h, w), kind=hint_config.kind, num_frames=f)
    return extract_hints(frames, hint_config, progress, models=models)


def make_control(pipe: Any, control_spec: Any, hints: np.ndarray, guidance_scale: float, model: Any = None) -> Any:
    """A :class:`~tuneavideo.control.VideoControl` of one ControlNet / T2I-Adapter over ``hints``."""
    from .control import build_video_control

    f, h, w = hints.shape[:3]
    return build_video_control(
        [control_spec],
        [hints],
        models=[model] if model is not None else None,
        height=h,
        width=w,
        device=pipe.device,
        dtype=pipe.unet.dtype,
        unet=pipe.unet,
        guidance_scale=guidance_scale,
    )


# ------------------------------------------------------------------------------------------ outputs
@dataclass(frozen=True)
class Outputs:
    """Files one job wrote."""

    videos: tuple[Path, ...]  # one mp4 per prompt
    extras: tuple[Path, ...] = ()  # per-prompt GIFs, PNG grids, side by sides
    gif: Path | None = None  # all prompts side by side
    side_by_side: Path | None = None  # source | (hints |) every edit, mp4
    hint_video: Path | None = None
    has_audio: bool = False

    @property
    def all(self) -> list[Path]:
        found = [*self.videos, *self.extras, self.gif, self.side_by_side, self.hint_video]
        return [p for p in found if p is not None]


def slug(text: str, limit: int = 60) -> str:
    """A filesystem-safe name from user text (never used as a path by itself)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:limit] or "video"


def output_names(prompts: Sequence[str], folder: Path, fresh: bool = True) -> list[Path]:
    """One distinct ``<slug>.mp4`` per prompt in ``folder``; with ``fresh``, never a file that exists already."""
    names: list[Path] = []
    for prompt in prompts:
        base, n = slug(prompt), 1
        path = folder / f"{base}.mp4"
        while path in names or (fresh and path.exists()):
            n += 1
            path = folder / f"{base}-{n}.mp4"
        names.append(path)
    return names


def write_outputs(
    paths: Sequence[Path],
    frames: np.ndarray,
    fps: float,
    source: Clip | None = None,
    hints: np.ndarray | None = None,
    *,
    gifs: bool = False,
    grids: bool = False,
    pairs: bool = False,
    pair_suffix: str = "-side-by-side",
    combined: Path | None = None,
) -> Outputs:
    """Write ``frames`` (n, f, h, w, 3) as one mp4 per path (with the source's audio when it lines up).

    ``gifs`` / ``grids`` / ``pairs`` add per-prompt GIFs, PNG frame grids and ``<name><pair_suffix>.mp4``
    (source | hints | edit); ``combined`` (a folder) adds one GIF of all prompts and one side by side of
    source | hints | every edit there, and the hint video.
    """
    from .video import make_grid, write_frame_grid, write_gif, write_mp4

    audio = source.audio_source if source is not None and source.num_frames == frames.shape[1] else None
    start = source.audio_start if source is not None else 0.0
    context = ([source.frames] if source is not None and source.num_frames == frames.shape[1] else []) + (
        [hints] if hints is not None else []
    )
    videos, extras = [], []
    for path, video in zip(paths, frames):
        videos.append(write_mp4(video, path, fps=fps, audio_source=audio, audio_start=start))
        if gifs:
            extras.append(write_gif(video, path.with_suffix(".gif"), fps=fps))
        if grids:
            extras.append(write_frame_grid(video, path.with_suffix(".png")))
        if pairs and context:
            tiles = make_grid([*context, video], ncols=len(context) + 1)
            pair = path.with_name(f"{path.stem}{pair_suffix}.mp4")
            extras.append(write_mp4(tiles, pair, fps=fps, audio_source=audio, audio_start=start))
    gif = side = hint_path = None
    if combined is not None:
        grid = make_grid(list(frames), ncols=len(frames)) if len(frames) > 1 else frames[0]
        gif = write_gif(grid, combined / "all-prompts.gif", fps=fps)
        if context:
            tiles = make_grid([*context, *frames], ncols=len(context) + len(frames))
            side = write_mp4(tiles, combined / "side-by-side.mp4", fps=fps, audio_source=audio, audio_start=start)
        if hints is not None:
            hint_path = write_mp4(hints, combined / "hints.mp4", fps=fps)
    return Outputs(tuple(videos), tuple(extras), gif, side, hint_path, audio is not None)
