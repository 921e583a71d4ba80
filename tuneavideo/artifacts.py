"""Content-keyed artifacts of one loaded base: clips, tuned runs, inversions, hints and control models.

In memory they live in an :class:`~tuneavideo.cache.ArtifactCache` (byte-bounded LRU with per-session
references); tuned runs (weights, exact source frames, inversions) also live on disk in a
:class:`~tuneavideo.store.RunStore`, so evicted weights reload and a restarted app finds earlier tunes.
Keys are made of content (see :mod:`tuneavideo.engine`); every getter reports whether it was cached.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import workflow as wf
from .cache import ArtifactCache
from .config import InvertConfig, VideoSpec, config_hash
from .control import ControlSpec
from .costs import CostModel
from .errors import InputError
from .hints import HintConfig, HintModels
from .progress import ProgressCallback
from .results import TunedModel
from .store import RunFolder, RunStore, TunedDelta

MODELS_HOLDER = "_engine"  # the cache "session" that holds loaded control models (LRU, freed by close())


def inversion_key(tune_key: str, invert_config: InvertConfig) -> str:
    return config_hash("invert", tune_key, invert_config)


@dataclass
class TunedArtifact:
    """A tuned model in memory: its delta, its run folder and the quick preview sample."""

    delta: TunedDelta
    run: RunFolder
    preview: np.ndarray | None = None  # uint8 (f, h, w, 3)

    @property
    def losses(self) -> tuple[float, ...]:
        return self.delta.losses


def _reload_tuned(folder: Path) -> TunedArtifact:
    run = RunFolder(folder)
    return TunedArtifact(run.load_delta(), run)


class Artifacts:
    """Getters of cached artifacts for the engine's jobs (thread-safe; the model lock guards the UNet)."""

    def __init__(self, pipe: Any, store: RunStore, cache_bytes: int, costs: CostModel, model_lock: threading.RLock):
        self.pipe, self.store, self.costs, self.model_lock = pipe, store, costs, model_lock
        self.cache = ArtifactCache(cache_bytes, spill_dir=store.root)
        # Over budget, a tuned delta leaves memory only: its run folder is already on disk.
        self.cache.register_spill("tuned", lambda art, folder: None, _reload_tuned, persistent=True)
        self.hint_models = HintModels()  # depth / pose detectors, loaded on first use

    def close(self) -> None:
        self.cache.clear()
        self.hint_models.close()

    def clip(self, session: str, video_key: str, video_path: str | Path, spec: VideoSpec) -> wf.Clip:
        clip = self.cache.get(video_key, session)
        if clip is None:
            clip = self.cache.put(video_key, wf.read_clip(wf.check_video_path(video_path), spec), "video", session)
        return clip

    def model_clip(self, session: str, model: TunedModel) -> wf.Clip | None:
        """The clip a model was tuned on: its run's exact frames, else the clip uploaded beside it."""
        key = "clip:" + model.tune_key
        clip = self.cache.get(key, session)
        if clip is None:
            run = RunFolder(model.run_path)
            if (run.path / "source.npz").is_file() or (run.path / "source.mp4").is_file():
                clip = wf.clip_of_run(run)
            elif model.video_path and model.video_spec:
                clip = wf.read_clip(wf.check_video_path(model.video_path), model.video_spec)
            else:
                return None
            self.cache.put(key, clip, "video", session)
        return clip

    def tuned(self, session: str, key: str, make: Any = None) -> tuple[TunedArtifact, bool]:
        """The tuned artifact ``key``: from memory, else from the run store, else ``make()`` (tunes and stores)."""
        art = self.cache.get(key, session)
        if art is not None:
            return art, True
        run = self.store.get(key)
        if run is not None:  # tuned before (maybe by an earlier start of the app): no need to tune again
            art, hit = TunedArtifact(run.load_delta(self.pipe.unet), run), True
        elif make is not None:
            art, hit = make(), False
        else:
            raise InputError("The tuned weights of this model are gone from the store: tune again.")
        return self.cache.put(key, art, kind="tuned", session=session), hit

    def inverted(
        self,
        session: str,
        model: TunedModel,
        art: TunedArtifact,
        clip: wf.Clip,
        config: InvertConfig,
        cb: ProgressCallback,
    ) -> tuple[torch.Tensor, bool, float]:
        key = inversion_key(model.tune_key, config)
        xT = self.cache.get(key, session)
        if xT is not None:
            return xT, True, 0.0
        started = time.perf_counter()
        with self.model_lock, self.cache.pin(model.tune_key):
            xT, stored = wf.cached_inversion(self.pipe, art.run, art.delta, clip, config, cb)
        seconds = time.perf_counter() - started
        if not stored:
            self.costs.measured("forward", seconds, config.num_inference_steps, self.costs.units(clip.spec))
        self.cache.put(key, xT, kind="inverted", session=session)
        return xT, stored, seconds

    def control_model(self, spec: ControlSpec) -> torch.nn.Module:
        """A loaded ControlNet / T2I-Adapter, kept in the cache's LRU (freed by :meth:`close`)."""
        from .control import load_control_model

        key = config_hash("control-model", spec.kind, str(spec.model), str(self.pipe.unet.dtype))
        model = self.cache.get(key, MODELS_HOLDER)
        if model is None:
            model = load_control_model(spec, torch_dtype=self.pipe.unet.dtype, device=self.pipe.device)
            size = sum(p.numel() * p.element_size() for p in model.parameters())
            self.cache.put(key, model, kind="control-model", session=MODELS_HOLDER, nbytes=size)
        return model

    def hints(
        self,
        session_id: str,
        video_key: str,
        clip: wf.Clip,
        hint_config: HintConfig,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Control hints of a clip, cached by :func:`tuneavideo.hints.hint_cache_key`; ``(hints, cached)``."""
        from .hints import hint_cache_key

        key = "hints:" + hint_cache_key(video_key, hint_config)
        found = self.cache.get(key, session_id)
        if found is not None:
            return found, True
        hints = wf.control_hints(clip.frames, hint_config, progress=progress, models=self.hint_models)
        return self.cache.put(key, hints, kind="hints", session=session_id), False
