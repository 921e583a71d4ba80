"""What the engine's jobs return: small, JSON-able records (tensors stay in the engine's cache)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import TuneConfig, VideoSpec, config_to_dict


def model_label(prompt: str, spec: VideoSpec | None, config: TuneConfig | None, key: str) -> str:
    """A short readable name of a tuned model: prompt, frames and size, steps, key."""
    text = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    bits = [f"“{text}”"]
    if spec is not None:
        bits.append(f"{spec.num_frames}f {spec.width}x{spec.height}")
    if config is not None:
        bits.append(f"{config.max_train_steps} steps")
    bits.append(key[:6])
    return " · ".join(bits)


def _config_of(cls: type, data: Any) -> Any:
    """A frozen config from a record's dict (None when absent or unreadable)."""
    try:
        return (
            cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
            if isinstance(data, dict)
            else None
        )
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class TunedModel:
    """What a session knows about one tuned model."""

    tune_key: str
    label: str
    prompt: str
    run_path: str  # the run folder in the engine's store (weights, record, exact source frames)
    video_spec: VideoSpec | None = None
    tune_config: TuneConfig | None = None
    video_path: str | None = None  # uploads without frames: a source clip given beside them
    source: str = "tuned"  # "tuned" | "uploaded"
    made_by: str | None = None  # uploads: the key of the tune that made the weights (shown; stored under tune_key)

    @classmethod
    def from_record(cls, key: str, run_path: str, record: dict[str, Any]) -> TunedModel:
        """The model of a stored run folder, from its ``tuned.json`` record."""
        spec = _config_of(VideoSpec, record.get("video_spec"))
        tcfg = _config_of(TuneConfig, record.get("tune_config"))
        prompt = str(record.get("prompt") or "uploaded tuned model")
        origin = str(record.get("tune_key") or key)
        source = "tuned" if origin == key else "uploaded"
        label = model_label(prompt, spec, tcfg, origin) + (" · uploaded" if source == "uploaded" else "")
        return cls(key, label, prompt, run_path, spec, tcfg, None, source, origin)

    @property
    def origin_key(self) -> str:
        """The key shown to users: the tune that made the weights (an upload keeps its tune's key)."""
        return self.made_by or self.tune_key

    @property
    def handle(self) -> dict[str, str | None]:
        return {"tune_key": self.tune_key, "label": self.label}

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description (the app's ``/models``)."""
        return {
            "tune_key": self.tune_key,
            "made_by": self.origin_key,
            "label": self.label,
            "prompt": self.prompt,
            "source": self.source,
            "video_spec": dataclasses.asdict(self.video_spec) if self.video_spec else None,
            "tune_config": config_to_dict(self.tune_config) if self.tune_config else None,
        }


@dataclass(frozen=True)
class TuneResult:
    """What :meth:`Engine.tune` / :meth:`Engine.load_tuned` return."""

    session_id: str
    tune_key: str
    video_key: str | None
    label: str
    cache_hit: bool
    losses: tuple[float, ...]
    timings: dict[str, float]
    preview_path: str | None
    download_path: str | None
    record: dict[str, Any] = field(default_factory=dict, repr=False)
    preview_frames: np.ndarray | None = field(default=None, repr=False)  # uint8 (f, h, w, 3)

    @property
    def handle(self) -> dict[str, str | None]:
        """A small JSON-able handle for UI state (never tensors)."""
        return {"tune_key": self.tune_key, "video_key": self.video_key, "label": self.label}

    @property
    def status(self) -> str:
        if self.cache_hit:
            return f"Tuned model ready (cache hit: same clip, prompt and settings as before). Key {self.tune_key[:8]}."
        loss = f", final loss {self.losses[-1]:.4f}" if self.losses else ""
        took = sum(self.timings.values())
        return f"Tuned in {took:.1f} s ({len(self.losses)} steps{loss}). Key {self.tune_key[:8]}."


@dataclass(frozen=True)
class InvertResult:
    session_id: str
    tune_key: str
    inv_key: str
    cached: bool
    seconds: float

    @property
    def status(self) -> str:
        return "inversion: cached" if self.cached else f"inversion: done in {self.seconds:.1f} s"


@dataclass(frozen=True)
class EditResult:
    """Outputs of :meth:`Engine.edit`, :meth:`Engine.generate` and :meth:`Engine.control`."""

    session_id: str
    tune_key: str
    prompts: tuple[str, ...]
    video_paths: tuple[str, ...]  # one mp4 per prompt (with the source's audio when the timing allows)
    gif_path: str  # all prompts side by side
    side_by_side_path: str | None  # source | (hints |) edits, mp4
    tuning_cached: bool
    inversion_cached: bool | None  # None: sampled from noise
    hints_cached: bool | None = None  # control only
    hint_path: str | None = None  # control only: the hint video (mp4)
    has_audio: bool = False
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    frames: np.ndarray | None = field(default=None, repr=False)  # uint8 (n_prompts, f, h, w, 3)

    @property
    def video_path(self) -> str:
        return self.video_paths[0]

    @classmethod
    def of(
        cls, session_id: str, tune_key: str, prompts: Any, out: Any, frames: np.ndarray, seed: int | None,
        timings: dict[str, float], notes: list[str], **flags: Any,
    ) -> EditResult:  # fmt: skip
        """The result of a job that wrote ``out`` (:class:`tuneavideo.workflow.Outputs`)."""
        return cls(
            session_id=session_id,
            tune_key=tune_key,
            prompts=tuple(prompts),
            video_paths=tuple(str(p) for p in out.videos),
            gif_path=str(out.gif),
            side_by_side_path=str(out.side_by_side) if out.side_by_side else None,
            hint_path=str(out.hint_video) if out.hint_video else None,
            has_audio=out.has_audio,
            seed=seed,
            timings=timings,
            notes=tuple(notes),
            frames=frames,
            **flags,
        )

    @property
    def status(self) -> str:
        parts = [f"tuning: {'cached' if self.tuning_cached else 'done'}"]
        if self.inversion_cached is None:
            parts.append("inversion: off (from noise)")
        else:
            parts.append(f"inversion: {'cached' if self.inversion_cached else 'done'}")
        if self.hints_cached is not None:
            parts.append(f"hints: {'cached' if self.hints_cached else 'extracted'}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        parts.append(f"{sum(self.timings.values()):.1f} s")
        return " · ".join(parts) + "".join(f"\n\n{n}" for n in self.notes)


# ------------------------------------------------------------------------------------------ scores
def toy_world_target(prompt: str) -> dict[str, str | None]:
    """What a toy-world prompt asks for: the object's ``color`` and ``shape`` and the ``background`` name.

    Read from words: a colour right before a shape word ("a yellow circle"), and "on a <colour> [<texture>]
    background". Missing parts are None (not checked).
    """
    import re

    from .toyworld.render import ALL_SHAPES, COLOR_NAMES, TEXTURES

    words = re.findall(r"[a-z]+", prompt.lower())
    color = shape = background = None
    for i, word in enumerate(words):
        if word.rstrip("s") in ALL_SHAPES and shape is None:
            shape = word.rstrip("s")
            color = words[i - 1] if i > 0 and words[i - 1] in COLOR_NAMES else None
    bg = re.search(rf"on an? ({'|'.join(COLOR_NAMES)})(?: ({'|'.join(TEXTURES)}))? background", prompt.lower())
    if bg:
        background = bg.group(1) if bg.group(2) in (None, "plain") else f"{bg.group(1)} {bg.group(2)}"
    return {"color": color, "shape": shape, "background": background}


def toy_world_scores(frames: np.ndarray, prompt: str) -> dict[str, Any]:
    """The toy-world classifier's reading of every frame ``(f, h, w, 3)`` and whether it matches ``prompt``.

    Returns ``{"target", "frames": [{"color", "shape", "background", "hit"}...], "hit_rate"}``; a frame is a
    hit when every part the prompt names (colour, shape, background) is read back.
    """
    from .toyworld.classify import classify_image

    target = toy_world_target(prompt)
    rows = []
    for frame in np.asarray(frames, dtype=np.uint8):
        got = classify_image(np.ascontiguousarray(frame))
        reading = {"color": got.color, "shape": got.shape, "background": got.background_name}
        hit = all(want is None or reading[k] == want for k, want in target.items())
        rows.append({**reading, "hit": bool(hit)})
    rate = sum(r["hit"] for r in rows) / len(rows) if rows else 0.0
    return {"target": target, "frames": rows, "hit_rate": round(rate, 3)}
