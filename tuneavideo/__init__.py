"""tuneavideo: Tune-A-Video (Wu et al., ICCV 2023) on current diffusers.

Public API::

    from tuneavideo import TuneAVideoPipeline, load_pipeline, load_unet, tune, TuneConfig, VideoSpec
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import (  # noqa: E402
    DEFAULT_BASE_MODEL,
    InvertConfig,
    Preset,
    SampleConfig,
    TuneConfig,
    VideoSpec,
    list_presets,
    load_preset,
)
from .errors import Cancelled, InputError, MissingDependencyError, ModelLoadError, TuneAVideoError, VideoError  # noqa: E402
from .loading import export_official_unet, load_pipeline, load_unet  # noqa: E402
from .pipeline import TuneAVideoPipeline, TuneAVideoPipelineOutput  # noqa: E402
from .progress import ProgressEvent  # noqa: E402
from .tuning import TunedDelta, load_inverted, save_inverted, tune  # noqa: E402
from .unet import TuneAVideoUNet  # noqa: E402

__all__ = [
    "DEFAULT_BASE_MODEL",
    "Cancelled",
    "InputError",
    "InvertConfig",
    "MissingDependencyError",
    "ModelLoadError",
    "Preset",
    "ProgressEvent",
    "SampleConfig",
    "TuneAVideoError",
    "TuneAVideoPipeline",
    "TuneAVideoPipelineOutput",
    "TuneAVideoUNet",
    "TuneConfig",
    "TunedDelta",
    "VideoError",
    "VideoSpec",
    "__version__",
    "export_official_unet",
    "list_presets",
    "load_inverted",
    "load_pipeline",
    "load_preset",
    "load_unet",
    "save_inverted",
    "tune",
]
