"""Base profiles: everything that depends on *which* base model is loaded, resolved once.

A profile holds the knobs' defaults (frames, size, steps, learning rate, guidance) for one kind of
base on one kind of device, the sliders' limits, the cost-table row, the control models and hint
backends that fit the base, and plain words about what it can draw. The CLI, the app and the engine
take their defaults from here; no other module knows that the toy world is special.

Kinds: ``sd`` (Stable Diffusion 1.x), ``toy-world`` (the embedded 128 px model), ``tiny`` (random test
models), ``custom`` (any other SD-layout folder, treated like SD at its native size). More kinds
(SD-2.x, ...) are one :func:`register_profile` away.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import DEFAULT_BASE_MODEL, InvertConfig, SampleConfig, TuneConfig, VideoSpec
from .errors import InputError

if TYPE_CHECKING:  # hints.py imports numpy/cv2 machinery: not needed to read a profile
    from .hints import HintConfig

PACKAGE_DIR = Path(__file__).resolve().parent
MODELS_DIR = PACKAGE_DIR / "models"
TOY_WORLD_DIR = MODELS_DIR / "toy-world"
MODEL_ALIASES = {"toy-world": TOY_WORLD_DIR, "sd15": DEFAULT_BASE_MODEL}

CONTROL_TYPES = ("controlnet", "t2i_adapter")
CONTROL_LABELS = {"controlnet": "ControlNet", "t2i_adapter": "T2I-Adapter"}
HINTS = ("pose", "depth", "canny")

# The standard SD-1.x control models for each hint kind.
SD_CONTROL_MODELS: dict[str, dict[str, str]] = {
    "controlnet": {
        "pose": "lllyasviel/control_v11p_sd15_openpose",
        "depth": "lllyasviel/control_v11f1p_sd15_depth",
        "canny": "lllyasviel/control_v11p_sd15_canny",
    },
    "t2i_adapter": {
        "pose": "TencentARC/t2iadapter_openpose_sd14v1",
        "depth": "TencentARC/t2iadapter_depth_sd15v2",
        "canny": "TencentARC/t2iadapter_canny_sd15v2",
    },
}
# The toy world's own control models: folders beside the base (see their model cards).
TOY_WORLD_CONTROL_FOLDERS: dict[str, dict[str, str]] = {
    "controlnet": {"canny": "toy-world-controlnet-canny"},
    "t2i_adapter": {"depth": "toy-world-t2i-adapter-depth"},
}


@dataclass(frozen=True)
class BaseProfile:
    """Defaults and facts for one kind of base model on one kind of device."""

    kind: str
    title: str
    about: str  # plain words for the UI card: what it can draw
    video: VideoSpec
    tune: TuneConfig
    invert: InvertConfig
    sample: SampleConfig
    preview_steps: int  # DDIM steps of the quick sample shown after tuning (0: none)
    max_frames: int  # slider limits
    max_size: int
    size_step: int
    cost_kind: str  # row of tuneavideo.costs.COSTS
    control_models: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # type -> hint -> id/folder
    only_listed_controls: bool = False  # True: a hint/type not listed cannot work on this base
    depth_backend: str = "transformers"  # how default depth hints are computed
    depth_note: str = ""  # said with results when that backend replaced the default depth estimator
    source_prompt: str = "a man is skiing"  # placeholder of the tune prompt
    example_prompts: tuple[str, ...] = ()

    @property
    def native_size(self) -> int:
        return max(self.video.width, self.video.height)

    def control_for(self, hint: str, control_type: str | None = None) -> tuple[str, str]:
        """``(control_type, model)`` to use when the user names no control model for ``hint``."""
        if hint not in HINTS:
            raise InputError(f"control hint must be one of {HINTS}, got {hint!r}")
        if control_type is not None and control_type not in CONTROL_TYPES:
            raise InputError(f"control kind must be one of {CONTROL_TYPES}, got {control_type!r}")
        for kind in [control_type] if control_type else list(CONTROL_TYPES):
            model = self.control_models.get(kind, {}).get(hint)
            if model:
                return kind, model
        have = ", ".join(f"{CONTROL_LABELS[k]} for {h}" for k, by in self.control_models.items() for h in by)
        wanted = CONTROL_LABELS[control_type] if control_type else "control model"
        raise InputError(
            f"the {self.title} base has no {wanted} for '{hint}' hints (it has: {have or 'none'}); the standard "
            "SD-1.x control models do not fit it. Pick one of those, or pass a control model trained for this base."
        )

    def supports(self, hint: str, control_type: str | None = None) -> bool:
        """Whether a default control model exists for ``hint`` (and ``control_type``) on this base."""
        try:
            self.control_for(hint, control_type)
        except InputError:
            return False
        return True

    def hint_config(self, config: HintConfig) -> HintConfig:
        """``config`` with this base's depth backend when it asks for the default depth estimator."""
        from .hints import DEFAULT_DEPTH_MODEL

        if (
            config.kind == "depth"
            and config.depth_backend == "transformers"
            and config.depth_model == DEFAULT_DEPTH_MODEL
            and self.depth_backend != "transformers"
        ):
            return dataclasses.replace(config, depth_backend=self.depth_backend)
        return config


ProfileFactory = Callable[[bool, int, Path | None], BaseProfile]  # (gpu, native size, model folder)
_REGISTRY: dict[str, ProfileFactory] = {}


def register_profile(kind: str) -> Callable[[ProfileFactory], ProfileFactory]:
    """Register the profile factory of a kind of base (decorator)."""

    def wrap(factory: ProfileFactory) -> ProfileFactory:
        _REGISTRY[kind] = factory
        return factory

    return wrap


def profile_kinds() -> tuple[str, ...]:
    return tuple(_REGISTRY)


@register_profile("sd")
def _sd_profile(gpu: bool, native: int, folder: Path | None) -> BaseProfile:
    # CPU: a full SD UNet takes ~5 s per 512² forward (offline-stack.md §6), so keep jobs tiny there.
    return BaseProfile(
        kind="sd",
        title="Stable Diffusion 1.x",
        about="Stable Diffusion 1.x: photos, art and illustrations of almost anything, best at its native "
        f"{native} px. Describe the source clip in plain words, then change what you want in the edit prompt.",
        video=VideoSpec(num_frames=8, width=native, height=native, stride=2),
        # checkpointing comes with the low-vram speed mode (picked on small GPUs), not from the profile
        tune=TuneConfig(max_train_steps=300 if gpu else 20, learning_rate=3e-5),
        invert=InvertConfig(num_inference_steps=50 if gpu else 10),
        sample=SampleConfig(num_inference_steps=50 if gpu else 10, guidance_scale=12.5),
        preview_steps=20 if gpu else 5,
        max_frames=32,
        max_size=768,
        size_step=64,
        cost_kind="sd",
        control_models=SD_CONTROL_MODELS,
        source_prompt="a man is skiing",
        example_prompts=("spider man is skiing on the beach, cartoon style", "a panda is skiing in the snow"),
    )


@register_profile("custom")
def _custom_profile(gpu: bool, native: int, folder: Path | None) -> BaseProfile:
    sd = _sd_profile(gpu, native, folder)
    return dataclasses.replace(sd, kind="custom", title="custom SD-layout model", about=f"A custom SD-layout model "
                               f"({folder.name if folder else 'unknown'}), used at its native {native} px.")  # fmt: skip


@register_profile("toy-world")
def _toy_world_profile(gpu: bool, native: int, folder: Path | None) -> BaseProfile:
    controls: dict[str, dict[str, str]] = {}
    for kind, by_hint in TOY_WORLD_CONTROL_FOLDERS.items():
        for hint, name in by_hint.items():
            sibling = (folder or TOY_WORLD_DIR).parent / name
            if (sibling / "config.json").is_file():
                controls.setdefault(kind, {})[hint] = str(sibling)
    return BaseProfile(
        kind="toy-world",
        title="toy-world",
        about="The embedded toy-world model draws one or two flat coloured shapes (circle, square, triangle, star, "
        "...; red, green, blue, yellow, white, ...) on a plain or striped background at 128 px. Real footage comes "
        "out as stripes: use the example clips, or your own clips of simple shapes.",
        video=VideoSpec(num_frames=8, width=128, height=128, stride=2),
        tune=TuneConfig(max_train_steps=100, learning_rate=1e-4),
        invert=InvertConfig(num_inference_steps=25),
        sample=SampleConfig(num_inference_steps=25, guidance_scale=7.5),
        preview_steps=10,
        max_frames=24,
        max_size=256,
        size_step=32,
        cost_kind="toy-world",
        control_models=controls,
        only_listed_controls=True,
        depth_backend="toyworld",  # its T2I-Adapter reads object silhouettes, drawn from the frames
        depth_note="Depth hints on the toy-world base are the objects' silhouettes (toyworld backend).",
        source_prompt="a red circle moving right on a blue background",
        example_prompts=(
            "a green circle moving right on a blue background",
            "a red square moving right on a yellow background",
        ),
    )


@register_profile("tiny")
def _tiny_profile(gpu: bool, native: int, folder: Path | None) -> BaseProfile:
    return BaseProfile(
        kind="tiny",
        title="tiny random test model",
        about="A tiny RANDOM test model: outputs are noise. It exists to try the app and to run tests.",
        video=VideoSpec(num_frames=4, width=32, height=32),
        tune=TuneConfig(max_train_steps=2, learning_rate=1e-4),
        invert=InvertConfig(num_inference_steps=3),
        sample=SampleConfig(num_inference_steps=3, guidance_scale=7.5),
        preview_steps=2,
        max_frames=16,
        max_size=128,
        size_step=16,
        cost_kind="tiny",
        source_prompt="a red square moves right",
    )


# ------------------------------------------------------------------------------------------ resolving
def expand_model(model: str) -> str:
    """A model argument with aliases expanded (``toy-world`` -> the embedded folder) and ``~`` resolved."""
    text = str(model).strip()
    if text in MODEL_ALIASES and not Path(text).exists():
        return str(MODEL_ALIASES[text])
    path = Path(text).expanduser()
    return str(path) if path.exists() else text


def _unet_config(folder: Path) -> dict:
    cfg = folder / "unet" / "config.json"
    try:
        return json.loads(cfg.read_text()) if cfg.is_file() else {}
    except (OSError, ValueError):
        return {}


def detect_kind(model: str) -> str:
    """Which profile fits ``model`` (a folder or hub id): ``sd``, ``toy-world``, ``tiny`` or ``custom``."""
    path = Path(expand_model(model))
    if not path.exists():
        return "sd"  # hub ids and single files: SD-1.x
    if path.is_file():
        return "sd"
    if path.resolve() == TOY_WORLD_DIR.resolve() or (
        path.name == "toy-world" and (path / "model_index.json").is_file()
    ):
        return "toy-world"
    channels = _unet_config(path).get("block_out_channels", [])
    if channels and max(channels) <= 64:
        return "tiny"
    if channels and max(channels) >= 1280:
        return "sd"
    return "custom"


def native_size(model: str, default: int = 512) -> int:
    """The base's native frame size in pixels, read from its UNet config (``sample_size`` x 8)."""
    path = Path(expand_model(model))
    sample = _unet_config(path).get("sample_size") if path.is_dir() else None
    return int(sample) * 8 if isinstance(sample, int) else default


def resolve_profile(model: str, device: str = "cpu", kind: str | None = None, native: int | None = None) -> BaseProfile:
    """The profile of base ``model`` on ``device`` (``kind`` and ``native`` size are detected when not given)."""
    kind = kind or detect_kind(model)
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise InputError(f"unknown model kind {kind!r}; known: {', '.join(_REGISTRY)}")
    path = Path(expand_model(model))
    folder = path if path.is_dir() else None
    return factory(str(device).startswith("cuda"), native or native_size(model), folder)
