"""tuneavideo: Tune-A-Video (Wu et al., ICCV 2023) on current diffusers.

Public API (imported lazily, so ``python -m tuneavideo presets`` starts fast)::

    from tuneavideo import TuneAVideoPipeline, load_pipeline, load_unet, tune, TuneConfig, VideoSpec
    from tuneavideo import Engine, RunFolder, read_clip, tune_clip, sample_videos   # the workflow the app runs
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "config": ["DEFAULT_BASE_MODEL", "InvertConfig", "Preset", "SampleConfig", "TuneConfig", "VideoSpec",
               "list_presets", "load_preset"],
    "errors": ["Cancelled", "InputError", "MissingDependencyError", "ModelLoadError", "TuneAVideoError", "VideoError"],
    "loading": ["export_official_pipeline", "export_official_unet", "load_pipeline", "load_unet"],
    "pipeline": ["TuneAVideoPipeline", "TuneAVideoPipelineOutput"],
    "progress": ["ProgressEvent"],
    "tuning": ["load_inverted", "save_inverted", "tune"],
    "unet": ["TuneAVideoUNet"],
    "video": ["read_video", "write_mp4", "write_gif", "probe_video"],
    "control": ["ControlSpec", "build_video_control", "load_control_model"],
    "hints": ["HintConfig", "extract_hints"],
    "engine": ["Engine"],
    "profiles": ["BaseProfile", "resolve_profile"],
    "settings": ["Settings"],
    "store": ["RunFolder", "RunStore", "TunedDelta"],
    "workflow": ["Clip", "read_clip", "tune_clip", "invert_clip", "sample_videos", "write_outputs"],
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tuneavideo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .config import DEFAULT_BASE_MODEL, InvertConfig, Preset, SampleConfig, TuneConfig, VideoSpec  # noqa: F401
    from .errors import Cancelled, InputError, ModelLoadError, TuneAVideoError, VideoError  # noqa: F401
    from .loading import export_official_pipeline, export_official_unet, load_pipeline, load_unet  # noqa: F401
    from .pipeline import TuneAVideoPipeline  # noqa: F401
    from .store import RunFolder, RunStore, TunedDelta  # noqa: F401
    from .tuning import tune  # noqa: F401
    from .unet import TuneAVideoUNet  # noqa: F401
    from .workflow import read_clip, sample_videos, tune_clip  # noqa: F401
