"""``Engine``: Tune-A-Video as a service: sessions, a model lock, cancel, and content-keyed caches.

The engine holds one base pipeline and calls the steps of :mod:`tuneavideo.workflow` for every job;
it never imports Gradio and holds no wording of the UI. Artifacts are cached under keys made of the
*content* that produced them::

    video    V = sha256(file bytes) + VideoSpec + base model      -> Clip (exact frames, fps, audio)
    tuned    T = V + prompt + TuneConfig                          -> run folder in the store + delta in memory
    inverted I = T + InvertConfig                                 -> xT (1, 4, f, h/8, w/8), also in the run folder
    hints    H = hint_cache_key(V, HintConfig) + size              -> hint frames uint8 (f, h, w, 3)

so sessions with identical inputs share one tuned delta, re-editing never re-tunes or re-inverts, and a
restarted app with the same cache dir finds earlier tunes in its :class:`~tuneavideo.store.RunStore`.
Sessions only *reference* cache entries; :meth:`Engine.release` drops them. Tuning restores the shared
UNet bit for bit; edits apply a delta with ``delta.applied(unet)``. :meth:`Engine.cancel` makes the next
progress callback raise :class:`~tuneavideo.errors.Cancelled`, so a job stops after its current step.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import validation as v
from . import workflow as wf
from .artifacts import MODELS_HOLDER, Artifacts, TunedArtifact, inversion_key
from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec, config_hash
from .control import ControlSpec
from .costs import CostModel, footprint
from .disk import DiskBudget
from .errors import InputError, TuneAVideoError
from .hints import HintConfig
from .profiles import BaseProfile, resolve_profile
from .progress import ProgressCallback
from .results import EditResult, InvertResult, TunedModel, TuneResult, model_label
from .scores import Scorer
from .sessions import Session, Sessions
from .settings import Settings, open_base
from .store import MAX_ARCHIVE_BYTES, FileHashes, RunFolder, RunStore, TunedDelta, base_fingerprint, sha256_file
from .video import write_mp4


class Engine:
    """Tune-A-Video per session: ``tune`` / ``invert`` / ``edit`` / ``generate`` / ``control``.

    Build it from :class:`~tuneavideo.settings.Settings` (the model is loaded once) or from a loaded
    :class:`~tuneavideo.TuneAVideoPipeline` (``Engine(pipe)``). Thread-safe: jobs run one at a time on the
    model lock.
    """

    def __init__(self, source: Settings | Any | None = None, *, settings: Settings | None = None, pipe: Any = None):
        if isinstance(source, Settings):
            settings = source
        elif source is not None:
            pipe = source
        started = time.perf_counter()
        self.settings, self.pipe = open_base(settings, pipe)
        self.load_seconds = time.perf_counter() - started
        for module in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder):
            module.requires_grad_(False)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = torch.device(self.pipe._execution_device)
        self.vae_scale_factor = int(self.pipe.vae_scale_factor)
        self.fingerprint = base_fingerprint(self.pipe.unet)
        self.base_id = f"{self.settings.model}@{self.fingerprint}"
        native = int(self.pipe.unet.config.sample_size) * self.vae_scale_factor
        self.profile: BaseProfile = resolve_profile(
            self.settings.model, str(self.device), self.settings.model_kind, native
        )
        self.costs = CostModel.for_device(
            str(self.device), self.profile.cost_kind, self.vae_scale_factor, self.pipe.speed_plan().mode
        )

        self._model_lock = threading.RLock()  # one job on the model at a time
        self._hashes = FileHashes()
        self._own_output = not self.settings.output_dir
        self.output_root = Path(self.settings.output_dir or tempfile.mkdtemp(prefix="tuneavideo-out-")).resolve()
        self.output_root.mkdir(parents=True, exist_ok=True)
        # Tuned runs persist under the cache dir (a restart finds them); without one, they live with the outputs.
        self._own_store = not self.settings.cache_dir
        self.store = RunStore(
            Path(self.settings.cache_dir) / "runs" if self.settings.cache_dir else self.output_root / ".runs"
        )
        self.artifacts = Artifacts(self.pipe, self.store, self.settings.cache_bytes, self.costs, self._model_lock)
        self.cache = self.artifacts.cache
        self._sessions = Sessions(self.output_root, self.cache.release)
        self._scorer = Scorer(self.profile.kind, str(self.device))
        self.disk = DiskBudget(lambda: self.settings.disk_bytes, self.store, self._sessions, self.cache)
        self._footprints: dict[tuple[str, ...], tuple[int, int, int]] = {}

    # ------------------------------------------------------------------ info
    def describe(self) -> dict[str, Any]:
        """Model, device, dtype and why (the UI banner), plus the loaded base's profile."""
        return {
            "model": self.settings.model,
            "kind": self.profile.kind,
            "reason": self.settings.model_reason,
            "device": str(self.device),
            "dtype": self.settings.dtype,
            "unet_parameters": sum(p.numel() for p in self.pipe.unet.parameters()),
            "native_size": int(self.pipe.unet.config.sample_size) * self.vae_scale_factor,
            "vae_scale_factor": self.vae_scale_factor,
            "about": self.profile.about,
        }

    def stats(self) -> dict[str, Any]:
        """Cache counters (hits, misses, bytes, entries, evictions, spills), sessions and stored runs."""
        out = self.cache.stats()
        out["sessions"] = len(self._sessions)
        out["control_models"] = len(self.cache.keys(MODELS_HOLDER))
        out["stored_runs"] = len(self.store.keys())
        out["disk"] = self.disk_usage()
        return out

    # ------------------------------------------------------------------ sessions
    def sessions(self) -> list[str]:
        return self._sessions.ids()

    def models(self, session_id: str) -> list[TunedModel]:
        """The tuned (or uploaded) models this session may use, oldest first."""
        return list(self._sessions.get(session_id).models.values())

    def model_choices(self, session_id: str) -> list[tuple[str, str]]:
        """``(label, tune_key)`` pairs for a dropdown, newest first."""
        return [(m.label, m.tune_key) for m in reversed(self.models(session_id))]

    def stored_models(self, keys: Sequence[str] | None = None) -> list[TunedModel]:
        """Models in the run store that fit the loaded base, newest first (only ``keys`` when given).

        Survives restarts: the store is on disk under the cache dir. Damaged runs are skipped.
        """
        wanted = None if keys is None else {str(k) for k in keys}
        found = []
        for key in self.store.keys():
            if wanted is not None and key not in wanted:
                continue
            model = self._stored_model(key)
            if model is not None:
                found.append(model)
        return found

    def _stored_model(self, key: str) -> TunedModel | None:
        """A :class:`TunedModel` of the stored run ``key`` (None: missing, damaged or made on another base)."""
        try:
            run = self.store.get(key)
            record = run.record if run is not None else None
        except (InputError, TuneAVideoError):
            return None
        if record is None or record.get("base_fingerprint", self.fingerprint) != self.fingerprint:
            return None
        return TunedModel.from_record(key, str(run.path), record)

    def adopt(self, session_id: str, tune_key: str) -> TunedModel:
        """Add a stored model (an earlier tune, maybe of an earlier start of the app) to a session."""
        if not isinstance(tune_key, str) or not tune_key.strip():
            raise InputError("No model chosen: pick one of your models first.")
        model = self._stored_model(tune_key.strip())
        if model is None:
            raise InputError(
                f"Model {tune_key.strip()[:8]!r} is not in this server's store (deleted to keep within the disk "
                "budget, or made on another base model): tune again or upload its saved weights."
            )
        s = self._sessions.get(session_id)
        s.models.setdefault(model.tune_key, model)
        return s.models[model.tune_key]

    def pack_model(self, session_id: str, tune_key: str) -> Path:
        """A zip of one of the session's models (weights, record, source frames, inversions) to download."""
        s = self._sessions.get(session_id)
        model = s.model(tune_key)
        run = self.store.get(model.tune_key)
        if run is None:
            raise InputError("The tuned weights of this model are gone from the store: tune again.")
        return run.pack(self._sessions.job_dir(s, "download") / f"tuned-{model.origin_key[:8]}.zip")

    def cancel(self, session_id: str) -> bool:
        """Ask this session's running job to stop at the end of its current step; True if one was running."""
        return self._sessions.cancel(session_id)

    def wait_idle(self, session_id: str, timeout: float = 60.0) -> bool:
        """Wait until this session's job (a cancelled one, say) has ended; True when none runs."""
        return self._sessions.wait_idle(session_id, timeout)

    def release(self, session_id: str) -> int:
        """Forget a session: drop its cache references and delete its outputs (a running job is cancelled first).

        Returns the bytes freed from the cache. Stored runs stay (they are the persistent cache).
        """
        return self._sessions.release(session_id)

    def close(self) -> None:
        """Release every session, free the caches and loaded models, and delete what the engine made temporarily."""
        for sid in self.sessions():
            self.release(sid)
        self.artifacts.close()
        if self._own_output:
            shutil.rmtree(self.output_root, ignore_errors=True)
        elif self._own_store:
            shutil.rmtree(self.store.root, ignore_errors=True)

    # ------------------------------------------------------------------ keys
    def video_key(self, video_path: str | os.PathLike, video_spec: VideoSpec) -> str:
        """Content key of a clip: sha256 of the file bytes + the VideoSpec + the base model."""
        return config_hash("video", self._hashes.sha256(wf.check_video_path(video_path)), video_spec, self.base_id)

    @staticmethod
    def tune_key(video_key: str, prompt: str, tune_config: TuneConfig) -> str:
        return config_hash("tune", video_key, prompt, tune_config)

    inversion_key = staticmethod(inversion_key)

    # ------------------------------------------------------------------ tuning
    def tune(
        self,
        session_id: str,
        video_path: str | os.PathLike,
        prompt: str,
        video_spec: VideoSpec | None = None,
        tune_config: TuneConfig | None = None,
        progress: ProgressCallback | None = None,
        preview_steps: int | None = None,
    ) -> TuneResult:
        """Tune the base on one clip (paper §4.2) for this session; identical inputs are a cache hit.

        Returns a preview (a quick sample of the source prompt from noise), a download of the run, the
        losses and timings.
        """
        spec, config = video_spec or self.profile.video, tune_config or self.profile.tune
        preview_steps = self.profile.preview_steps if preview_steps is None else int(preview_steps)
        prompt, warnings = v.check_prompt(prompt, "source prompt")
        self.check_job("tune", spec, tune_config=config, preview_steps=preview_steps)
        timings: dict[str, float] = {}
        with self._sessions.job(session_id, progress) as (s, callback):
            t0 = time.perf_counter()
            video_key = self.video_key(video_path, spec)
            key = self.tune_key(video_key, prompt, config)
            clip = self.artifacts.clip(s.id, video_key, video_path, spec)
            timings["read"] = time.perf_counter() - t0

            def make() -> TunedArtifact:
                started = time.perf_counter()
                with self._model_lock:
                    delta = wf.tune_clip(self.pipe, clip, prompt, config, callback, self._record(key))
                seconds = timings["tune"] = time.perf_counter() - started
                self.costs.measured("train", seconds, len(delta.losses), self.costs.units(spec))
                audio = (clip.audio_source, clip.audio_start) if clip.audio_source else None
                return TunedArtifact(delta, RunFolder.write(self.store.path(key), delta, clip.frames, clip.fps, audio))

            art, cache_hit = self.artifacts.tuned(s.id, key, make)
            self.cache.put("clip:" + key, clip, "video", s.id)
            with self.cache.pin(key, video_key):
                if art.preview is None and preview_steps > 0:
                    t0 = time.perf_counter()
                    sample = dataclasses.replace(
                        self.profile.sample, num_inference_steps=preview_steps, seed=config.seed
                    )
                    art.preview = self._sample(art.delta, [prompt], None, spec, sample, callback)[0]
                    timings["preview"] = time.perf_counter() - t0
                    self.cache.put(key, art, kind="tuned", session=s.id)  # re-count its bytes with the preview
                model = TunedModel(key, model_label(prompt, spec, config, key), prompt, str(art.run.path), spec, config)
                folder = self._sessions.job_dir(s, "tune")
                preview_path = None
                if art.preview is not None:
                    preview_path = write_mp4(art.preview, folder / "preview.mp4", fps=clip.fps)
                download = art.run.pack(folder / f"tuned-{key[:8]}.zip")
            s.models[key] = model
        self.enforce_disk()
        record = {**art.delta.record, "warnings": warnings}  # a copy: the stored record stays as it was
        return TuneResult(s.id, key, video_key, model.label, cache_hit, art.losses, _rounded(timings),
                          str(preview_path) if preview_path else None, str(download), record, art.preview)  # fmt: skip

    def _record(self, tune_key: str) -> dict[str, Any]:
        return {"base_model": self.settings.model, "tune_key": tune_key}

    def load_tuned(
        self,
        session_id: str,
        folder_or_file: str | os.PathLike,
        video_path: str | os.PathLike | None = None,
        video_spec: VideoSpec | None = None,
    ) -> TuneResult:
        """Add a saved run (the app's zip, a run folder or a ``tuned.safetensors``) to a session.

        The archive carries the exact source frames, so edits can invert; for a bare weights file, give the
        source ``video_path`` (read with ``video_spec``, default: the spec recorded with the weights).
        """
        self.check_disk()
        # an archive holds its files stored, not compressed: it unpacks to about the upload's size
        limit = min(MAX_ARCHIVE_BYTES, 2 * self.settings.max_upload_bytes)
        with self._sessions.job(session_id, None) as (s, _):
            staging = self.store.root / f".upload-{uuid.uuid4().hex[:12]}"
            try:
                run = RunFolder.unpack(Path(folder_or_file), staging, max_bytes=limit)
                delta = run.load_delta(self.pipe.unet)
                key = config_hash("upload", sha256_file(run.path / "tuned.safetensors"), self.base_id)
                if self.store.get(key) is None:
                    os.replace(staging, self.store.path(key))
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            art, cache_hit = self.artifacts.tuned(s.id, key)
            record = dict(delta.record)
            spec = video_spec
            if spec is None and isinstance(record.get("video_spec"), dict):
                spec = VideoSpec(**record["video_spec"])
            prompt = str(record.get("prompt") or "uploaded tuned model")
            origin = str(record.get("tune_key") or key)  # shown: the tune that made them (stored under ``key``)
            label = model_label(prompt, spec, None, origin) + " · uploaded"
            given = str(video_path) if video_path is not None and str(video_path).strip() else None
            video_key = self.video_key(given, spec or self.profile.video) if given else None
            model = TunedModel(
                key, label, prompt, str(art.run.path), spec or self.profile.video, None, given, "uploaded", origin
            )
            s.models[key] = model
        self.enforce_disk()
        return TuneResult(s.id, key, video_key, label, cache_hit, (), {}, None, None, record)

    # ------------------------------------------------------------------ inversion / sampling
    def invert(
        self,
        session_id: str,
        tune_key: str,
        invert_config: InvertConfig | None = None,
        progress: ProgressCallback | None = None,
    ) -> InvertResult:
        """DDIM-invert the source clip with the tuned model (paper §4.3); cached per tuned model + config."""
        config = v.check_invert_config(invert_config or self.profile.invert)
        self.check_disk()
        with self._sessions.job(session_id, progress) as (s, callback):
            model = s.model(tune_key)
            art, _ = self.artifacts.tuned(s.id, model.tune_key)
            clip = self._require_clip(s, model)
            self.check_job("invert", clip.spec, invert_config=config)
            _, cached, seconds = self.artifacts.inverted(s.id, model, art, clip, config, callback)
        return InvertResult(s.id, model.tune_key, self.inversion_key(model.tune_key, config), cached, round(seconds, 3))

    def _require_clip(self, s: Session, model: TunedModel) -> wf.Clip:
        clip = self.artifacts.model_clip(s.id, model)
        if clip is None:
            raise InputError(
                "This tuned model was loaded without its source video, so there is nothing to invert: load it "
                "with the source clip, or sample from noise (no inversion)."
            )
        return clip

    def _sample(
        self,
        delta: TunedDelta,
        prompts: list[str],
        latents: torch.Tensor | None,
        spec: VideoSpec,
        sample: SampleConfig,
        callback: ProgressCallback,
        unet_kwargs: Any = None,
    ) -> np.ndarray:
        """uint8 ``(n, f, h, w, 3)``: each prompt sampled with the delta applied (see :func:`workflow.sample_videos`)."""
        started = time.perf_counter()
        with self._model_lock:
            frames = wf.sample_videos(self.pipe, delta, prompts, (spec.num_frames, spec.height, spec.width), sample,
                                      latents, callback, unet_kwargs)  # fmt: skip
        cfg = sample.guidance_scale > 1.0  # a CFG step runs two rows per frame
        steps = len(prompts) * sample.num_inference_steps
        spent = time.perf_counter() - started
        rows = 2 if cfg else 1
        self.costs.measured("sample" if cfg else "forward", spent, steps, self.costs.units(spec, rows), len(prompts))
        return frames

    def edit(
        self,
        session_id: str,
        tune_key: str,
        prompts: str | Sequence[str],
        sample_config: SampleConfig | None = None,
        progress: ProgressCallback | None = None,
        invert_config: InvertConfig | None = None,
    ) -> EditResult:
        """Edit the source clip with new prompt(s): DDIM-inverted source noise (or fresh noise) -> tuned model."""
        return self._generate(session_id, tune_key, prompts, sample_config, progress, invert_config, "edit")

    def generate(
        self,
        session_id: str,
        tune_key: str,
        prompts: str | Sequence[str],
        sample_config: SampleConfig | None = None,
        progress: ProgressCallback | None = None,
        num_frames: int | None = None,
    ) -> EditResult:
        """Text-to-video from noise with the tuned model (no inversion); ``num_frames`` defaults to the clip's."""
        sample_config = dataclasses.replace(sample_config or self.profile.sample, use_inversion=False)
        return self._generate(session_id, tune_key, prompts, sample_config, progress, None, "generate", num_frames)

    def _generate(
        self,
        session_id: str,
        tune_key: str,
        prompts: str | Sequence[str],
        sample_config: SampleConfig | None,
        progress: ProgressCallback | None,
        invert_config: InvertConfig | None,
        kind: str,
        num_frames: int | None = None,
    ) -> EditResult:
        prompts, sample, notes = self._checked(prompts, sample_config, invert_config)
        timings: dict[str, float] = {}
        with self._sessions.job(session_id, progress) as (s, callback):
            model, art, tuning_cached = self._start(s, tune_key, timings)
            shape = model.video_spec or self.profile.video
            if num_frames is not None:
                shape = dataclasses.replace(shape, num_frames=int(num_frames))
            self.check_job(kind, shape, sample_config=sample, num_prompts=len(prompts))
            with self.cache.pin(model.tune_key):
                clip = self.artifacts.model_clip(s.id, model)
                latents, inversion_cached = None, None
                if sample.use_inversion and kind == "edit":
                    if clip is None:
                        notes.append(
                            "No source video for this uploaded model: sampled from noise instead of inverting."
                        )
                    else:
                        config = invert_config or self.profile.invert
                        latents, inversion_cached, timings["invert"] = self.artifacts.inverted(
                            s.id, model, art, clip, config, callback
                        )
                spec = model.video_spec or self.profile.video
                if latents is None and num_frames is not None:
                    spec = dataclasses.replace(spec, num_frames=int(num_frames))
                t0 = time.perf_counter()
                frames = self._sample(art.delta, prompts, latents, spec, sample, callback)
                timings["sample"] = time.perf_counter() - t0
                outputs = self._write(s, kind, prompts, frames, clip)
        if clip is not None:
            notes.append(wf.audio_note(clip, outputs.has_audio))
        self.enforce_disk()
        return EditResult.of(s.id, model.tune_key, prompts, outputs, frames, sample.seed, _rounded(timings), notes,
                             tuning_cached=tuning_cached, inversion_cached=inversion_cached)  # fmt: skip

    def _checked(
        self, prompts: str | Sequence[str], sample_config: SampleConfig | None, invert_config: InvertConfig | None
    ) -> tuple[list[str], SampleConfig, list[str]]:
        """``(prompts, sample config with a seed, notes)`` of an edit-like job, checked before it starts."""
        prompts, warnings = v.check_prompts(prompts)
        sample = wf.with_seed(v.check_sample_config(sample_config or self.profile.sample))
        if invert_config is not None:
            v.check_invert_config(invert_config)
        return prompts, sample, [f"Warning: {w}." for w in warnings]

    def _start(self, s: Session, tune_key: str, timings: dict[str, float]) -> tuple[TunedModel, TunedArtifact, bool]:
        model = s.model(tune_key)
        t0 = time.perf_counter()
        art, cached = self.artifacts.tuned(s.id, model.tune_key)
        if not cached:
            timings["load"] = time.perf_counter() - t0
        return model, art, cached

    def _write(
        self, s: Session, kind: str, prompts: list[str], frames: np.ndarray, clip: wf.Clip | None, hints: Any = None
    ) -> wf.Outputs:
        folder = self._sessions.job_dir(s, kind)
        fps = clip.fps if clip is not None else wf.DEFAULT_FPS
        return wf.write_outputs(wf.output_names(prompts, folder), frames, fps, clip, hints, combined=folder)

    # ------------------------------------------------------------------ control
    def hints(
        self,
        session_id: str,
        video_key: str,
        clip: wf.Clip,
        hint_config: HintConfig,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Control hints of a clip, cached by :func:`tuneavideo.hints.hint_cache_key`; ``(hints, cached)``."""
        return self.artifacts.hints(session_id, video_key, clip, hint_config, progress)

    def control(
        self,
        session_id: str,
        tune_key: str,
        prompts: str | Sequence[str],
        hint_config: HintConfig,
        control_spec: ControlSpec,
        sample_config: SampleConfig | None = None,
        progress: ProgressCallback | None = None,
        video_path: str | os.PathLike | None = None,
        invert_config: InvertConfig | None = None,
    ) -> EditResult:
        """Pose / depth / canny hints per frame steer a ControlNet or T2I-Adapter.

        Hints come from the tuned model's source clip, or from ``video_path`` (a driving video, read with
        the same spec). With ``sample_config.use_inversion`` and hints from the source clip, sampling starts
        from the (cached) inverted source noise; otherwise from noise.
        """
        if not isinstance(hint_config, HintConfig):
            raise InputError(f"hint_config must be a HintConfig, got {type(hint_config).__name__}")
        if not isinstance(control_spec, ControlSpec):
            raise InputError(f"control_spec must be a ControlSpec, got {type(control_spec).__name__}")
        control_spec = dataclasses.replace(control_spec, hint=hint_config.kind)
        prompts, sample, notes = self._checked(prompts, sample_config, invert_config)
        timings: dict[str, float] = {}
        resolved = self.profile.hint_config(hint_config)
        if resolved is not hint_config:
            hint_config = resolved
            notes.append(self.profile.depth_note or f"Depth hints use the '{resolved.depth_backend}' backend.")
        with self._sessions.job(session_id, progress) as (s, callback):
            model, art, tuning_cached = self._start(s, tune_key, timings)
            self.check_job("control", model.video_spec or self.profile.video, sample_config=sample,
                           num_prompts=len(prompts))  # fmt: skip
            with self.cache.pin(model.tune_key):
                spec = model.video_spec or self.profile.video
                source, driving, driving_key = self._driving(s, model, spec, video_path)
                from_source = driving is source
                t0 = time.perf_counter()
                hints, hints_cached = self.artifacts.hints(s.id, driving_key, driving, hint_config, callback)
                timings["hints"] = time.perf_counter() - t0
                latents, inversion_cached = None, None
                if sample.use_inversion and from_source:
                    config = invert_config or self.profile.invert
                    latents, inversion_cached, timings["invert"] = self.artifacts.inverted(
                        s.id, model, art, source, config, callback
                    )
                t0 = time.perf_counter()
                with self._model_lock:
                    control = wf.make_control(self.pipe, control_spec, hints, sample.guidance_scale,
                                              self.artifacts.control_model(control_spec))  # fmt: skip
                timings["load_control"] = time.perf_counter() - t0
                notes.insert(0, _control_note(control_spec))
                t0 = time.perf_counter()
                frames = self._sample(art.delta, prompts, latents, spec, sample, callback, control.unet_kwargs)
                timings["sample"] = time.perf_counter() - t0
                outputs = self._write(s, "control", prompts, frames, driving, control.hints[0])
        self.enforce_disk()
        return EditResult.of(s.id, model.tune_key, prompts, outputs, frames, sample.seed, _rounded(timings), notes,
                             tuning_cached=tuning_cached, inversion_cached=inversion_cached,
                             hints_cached=hints_cached)  # fmt: skip

    def _driving(
        self, s: Session, model: TunedModel, spec: VideoSpec, video_path: str | os.PathLike | None
    ) -> tuple[wf.Clip | None, wf.Clip, str]:
        """``(source clip, clip the hints come from, its key)``: ``video_path`` when given, else the source."""
        source = self.artifacts.model_clip(s.id, model)
        if video_path is not None and str(video_path).strip():
            key = self.video_key(video_path, spec)
            return source, self.artifacts.clip(s.id, key, video_path, spec), key
        if source is None:
            raise InputError("This uploaded model has no source video: upload a driving video for the hints.")
        return source, source, "source:" + model.tune_key

    # ------------------------------------------------------------------ scores
    def scores(self, result: EditResult) -> list[dict[str, Any]]:
        """Per prompt of an edit-like result: toy-world classifier readings and CLIP scores (see :mod:`.scores`)."""
        with self._model_lock:
            return self._scorer.score(result)

    # ------------------------------------------------------------------ validation
    def check_job(
        self,
        kind: str,
        spec: VideoSpec,
        tune_config: TuneConfig | None = None,
        sample_config: SampleConfig | None = None,
        invert_config: InvertConfig | None = None,
        num_prompts: int = 1,
        preview_steps: int = 0,
    ) -> dict[str, Any]:
        """Refuse a job this base and device cannot run (see :mod:`tuneavideo.validation`); returns its estimate.

        Runs before the job touches the model: sizes and steps within limits, the estimated peak memory
        within what the device has free, and the disk budget not exhausted.
        """
        v.check_video_spec(spec, self.profile)
        tcfg = v.check_tune_config(tune_config) if tune_config is not None else self.profile.tune
        sample = v.check_sample_config(sample_config) if sample_config is not None else self.profile.sample
        icfg = v.check_invert_config(invert_config) if invert_config is not None else self.profile.invert
        if not 0 <= int(preview_steps) <= v.MAX_SAMPLE_STEPS:
            raise InputError(f"preview steps must be from 0 to {v.MAX_SAMPLE_STEPS}, got {preview_steps}")
        self.check_disk()
        weights, trainable, element = self._footprint(tcfg.trainable_modules)
        est = self.costs.estimate(spec, tcfg, sample, icfg, num_prompts, int(preview_steps), weights, trainable,
                                  element)  # fmt: skip
        need = est["tune_peak_bytes"] if kind == "tune" else est["edit_peak_bytes"]
        v.check_memory(need, str(self.device), f"this {kind} job", already_loaded=weights)
        return est

    def _footprint(self, trainable_modules: tuple[str, ...]) -> tuple[int, int, int]:
        found = self._footprints.get(trainable_modules)
        if found is None:
            found = self._footprints[trainable_modules] = footprint(self.pipe, trainable_modules)
        return found

    def allowed_model_dirs(self) -> list[Path]:
        """Folders a model named over the network may come from: the shipped models + the operator's."""
        return v.allowed_model_dirs(self.settings.allow_model_dirs)

    # ------------------------------------------------------------------ disk budget
    def disk_usage(self) -> dict[str, Any]:
        """Bytes of stored runs, session outputs and uploads against the one disk budget (``/stats``)."""
        return self.disk.usage()

    def enforce_disk(self) -> int:
        """Delete the oldest evictable runs, outputs and uploads until the budget holds; returns bytes freed."""
        return self.disk.enforce()

    def check_disk(self) -> None:
        """Refuse new work while the disk budget is exhausted by what live sessions and jobs hold."""
        self.disk.check()

    # ------------------------------------------------------------------ estimates
    def estimate(
        self,
        video_spec: VideoSpec | None = None,
        tune_config: TuneConfig | None = None,
        sample_config: SampleConfig | None = None,
        invert_config: InvertConfig | None = None,
        num_prompts: int = 1,
        preview_steps: int | None = None,
    ) -> dict[str, Any]:
        """Rough time and memory of tune + preview, one inversion and an edit (see :mod:`tuneavideo.costs`)."""
        tcfg = tune_config or self.profile.tune
        out = self.costs.estimate(
            video_spec or self.profile.video, tcfg, sample_config or self.profile.sample,
            invert_config or self.profile.invert, num_prompts,
            self.profile.preview_steps if preview_steps is None else preview_steps,
            *footprint(self.pipe, tcfg.trainable_modules),
        )  # fmt: skip
        return {**out, "model_kind": self.profile.kind}


def _control_note(spec: ControlSpec) -> str:
    shown = Path(spec.model).name if Path(spec.model).is_dir() else spec.model
    return f"Control: {dataclasses.replace(spec, model=shown).label}, scale {spec.scale:g}."


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in timings.items()}


__all__ = ["EditResult", "Engine", "InvertResult", "TuneResult", "TunedArtifact", "TunedModel"]
