"""Frozen configs for every stage, and YAML presets validated against them.

Architecture constants live in code; everything a user may change per run lives here, so a config
can be hashed into a cache key and saved next to every artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .errors import InputError

PRESET_DIR = Path(__file__).resolve().parent / "presets"  # package data
DEFAULT_BASE_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")


@dataclass(frozen=True)
class VideoSpec:
    """Which frames of a source video to use, and at what size (paper defaults: 24 frames, 512², stride 2)."""

    num_frames: int = 24
    width: int = 512
    height: int = 512
    stride: int = 1  # keep every `stride`-th frame (the official `sample_frame_rate`)
    start_time: float = 0.0  # seconds into the source
    resize: Literal["crop", "squash"] = "crop"  # "squash" = the official behaviour (no crop)

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")
        if self.start_time < 0:
            raise InputError(f"start_time must be >= 0, got {self.start_time}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v < 8 or v % 8:
                raise InputError(f"{name} must be a positive multiple of 8, got {v}")
        if self.resize not in ("crop", "squash"):
            raise InputError(f"resize must be 'crop' or 'squash', got {self.resize!r}")


@dataclass(frozen=True)
class TuneConfig:
    """One-shot tuning (paper §4.2; official defaults)."""

    max_train_steps: int = 500
    learning_rate: float = 3e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    trainable_modules: tuple[str, ...] = DEFAULT_TRAINABLE
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = False
    seed: int = 33

    def __post_init__(self) -> None:
        object.__setattr__(self, "trainable_modules", tuple(self.trainable_modules))
        if self.max_train_steps < 0:
            raise InputError(f"max_train_steps must be >= 0, got {self.max_train_steps}")
        if not self.learning_rate > 0:
            raise InputError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.trainable_modules:
            raise InputError("trainable_modules must name at least one module suffix")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise InputError(f"mixed_precision must be auto/no/fp16/bf16, got {self.mixed_precision!r}")


@dataclass(frozen=True)
class InvertConfig:
    """DDIM inversion as the official code runs it: empty prompt, no CFG, 50 steps."""

    num_inference_steps: int = 50
    prompt: str = ""

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")


@dataclass(frozen=True)
class SampleConfig:
    """DDIM sampling (official validation settings: 50 steps, CFG 12.5, eta 0)."""

    num_inference_steps: int = 50
    guidance_scale: float = 12.5
    negative_prompt: str | None = None
    eta: float = 0.0
    seed: int | None = 33
    use_inversion: bool = True  # start from the DDIM-inverted source latents (editing) or from noise

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.guidance_scale < 0:
            raise InputError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0.0 <= self.eta <= 1.0:
            raise InputError(f"eta must be in [0, 1], got {self.eta}")


@dataclass(frozen=True)
class Preset:
    """A named demo: source video, tuning prompt and settings, and the edit prompts to try."""

    name: str
    prompt: str
    edit_prompts: tuple[str, ...] = ()
    video_path: str | None = None  # relative paths resolve against the preset file; the user may supply their own
    base_model: str = DEFAULT_BASE_MODEL
    video: VideoSpec = field(default_factory=VideoSpec)
    tune: TuneConfig = field(default_factory=TuneConfig)
    invert: InvertConfig = field(default_factory=InvertConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    description: str = ""


_NESTED = {"video": VideoSpec, "tune": TuneConfig, "invert": InvertConfig, "sample": SampleConfig}


def build_config(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a helpful message."""
    data = dict(data or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where or cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    for key, sub in _NESTED.items():
        if key in data and cls is Preset:
            if not isinstance(data[key], dict):
                raise InputError(f"{where}: '{key}' must be a mapping, got {type(data[key]).__name__}")
            data[key] = build_config(sub, data[key], f"{where}.{key}" if where else key)
    for f in fields(cls):
        if f.name in data and isinstance(data[f.name], list):
            data[f.name] = tuple(data[f.name])
    try:
        return cls(**data)
    except TypeError as exc:
        raise InputError(f"{where or cls.__name__}: {exc}") from exc


def replace(config: Any, **overrides: Any) -> Any:
    """``dataclasses.replace`` that ignores ``None`` overrides (unset CLI flags) and validates again."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(config, **changes) if changes else config


def list_presets(preset_dir: str | Path = PRESET_DIR) -> list[str]:
    """Names of the presets shipped in ``presets/``."""
    return sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))


def load_preset(name_or_path: str | Path, preset_dir: str | Path = PRESET_DIR) -> Preset:
    """Load a preset by name (``presets/<name>.yaml``) or by path; unknown keys are an error."""
    import yaml

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        name = str(name_or_path)
        if not name.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"invalid preset name {name!r}: use letters, digits, '-' and '_' only")
        path = Path(preset_dir) / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"preset {name_or_path!r} not found; available: {', '.join(list_presets(preset_dir))}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a preset must be a YAML mapping")
    data.setdefault("name", path.stem)
    preset = build_config(Preset, data, where=path.name)
    if preset.video_path and not Path(preset.video_path).is_absolute():
        preset = dataclasses.replace(preset, video_path=str((path.parent / preset.video_path).resolve()))
    local_base = path.parent / preset.base_model
    if preset.base_model.startswith(".") and local_base.exists():  # e.g. ../models/toy-world
        preset = dataclasses.replace(preset, base_model=str(local_base.resolve()))
    return preset


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=list))


def config_hash(*parts: Any) -> str:
    """A stable short hash of configs and plain values, used in cache keys and artifact names."""
    payload = json.dumps(
        [config_to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
