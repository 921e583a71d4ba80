"""``Engine``: one base pipeline, a model lock, and content-keyed caches shared by every session.

The UI (and the CLI, and tests) call the engine; the engine never imports Gradio. Every artifact is
cached under a key made of the *content* that produced it::

    video    V = sha256(file bytes) + VideoSpec + base model     -> frames uint8 (f, h, w, 3) + VideoInfo
    latents  V                                                   -> x0 (1, 4, f, h/8, w/8), VAE posterior mean
    tuned    T = V + prompt + TuneConfig                         -> TunedDelta (+ losses, preview frames)
    inverted I = T + InvertConfig                                -> xT (1, 4, f, h/8, w/8)
    hints    H = hint_cache_key(V, HintConfig) + size            -> hint frames uint8 (f, h, w, 3)

so two sessions that tune the same clip with the same settings share one tuned delta, and re-editing
never re-tunes or re-inverts. Sessions only *reference* entries: :meth:`Engine.release` drops a
session's references, and entries no session holds are freed. The cache is byte-bounded (LRU;
entries pinned by a running job are never evicted; tuned deltas spill to disk when a cache dir is
set). Tuning modifies the shared UNet in place, so the engine snapshots the trainable parameters
first and restores them bit for bit afterwards, also after a cancel or an error; edits apply a delta
with ``delta.applied(unet)``, which restores the base on exit.

Long jobs take one ``progress`` callback (:class:`~tuneavideo.progress.ProgressEvent`);
:meth:`Engine.cancel` makes the next callback raise :class:`~tuneavideo.errors.Cancelled`, so a job
stops at the end of its current step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import ArtifactCache
from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec, config_hash
from .errors import Cancelled, InputError, ModelLoadError, TuneAVideoError, VideoError
from .progress import ProgressCallback, ProgressEvent
from .settings import Settings, detect_model_kind, torch_dtype
from .tuning import DELTA_FILE, RECORD_FILE, TunedDelta, base_fingerprint, select_trainable, tune
from .video import VIDEO_EXTENSIONS, VideoInfo, make_grid, read_video, to_uint8, write_gif, write_mp4

logger = logging.getLogger(__name__)

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_DELTA_BYTES = 8 * 1024**3  # refuse bigger uploads (and zip members): an SD delta is ~150-300 MB
DEFAULT_FPS = 8.0  # output rate when there is no source clip (the official GIFs play at 8 fps)


# ============================================================================================ profiles
@dataclass(frozen=True)
class Profile:
    """Default knobs for a kind of model on a kind of device (the UI's starting values)."""

    video: VideoSpec
    tune: TuneConfig
    invert: InvertConfig
    sample: SampleConfig
    preview_steps: int  # DDIM steps of the quick sample shown after tuning (0: none)
    max_frames: int  # slider limits
    max_size: int
    size_step: int


def _profile(kind: str, device: str, native: int) -> Profile:
    if kind == "tiny":
        return Profile(
            VideoSpec(num_frames=4, width=32, height=32),
            TuneConfig(max_train_steps=2, learning_rate=1e-4),
            InvertConfig(num_inference_steps=3),
            SampleConfig(num_inference_steps=3, guidance_scale=7.5),
            preview_steps=2, max_frames=16, max_size=128, size_step=16,
        )  # fmt: skip
    if kind == "toy-world":
        return Profile(
            VideoSpec(num_frames=8, width=128, height=128),
            TuneConfig(max_train_steps=100, learning_rate=1e-4),
            InvertConfig(num_inference_steps=25),
            SampleConfig(num_inference_steps=25, guidance_scale=7.5),
            preview_steps=10, max_frames=24, max_size=256, size_step=32,
        )  # fmt: skip
    # Stable Diffusion 1.x (and custom SD-layout folders at their native size)
    gpu = device.startswith("cuda")
    return Profile(
        VideoSpec(num_frames=8, width=native, height=native, stride=2),
        TuneConfig(max_train_steps=300 if gpu else 20, learning_rate=3e-5, gradient_checkpointing=gpu),
        InvertConfig(num_inference_steps=50 if gpu else 10),
        SampleConfig(num_inference_steps=50 if gpu else 10, guidance_scale=12.5),
        preview_steps=20 if gpu else 5, max_frames=32, max_size=768, size_step=64,
    )  # fmt: skip


# ============================================================================================ cost model
# One UNet call on ``u`` units (frames x latent pixels x batch rows) costs ``a + b*u`` seconds:
# "train" is one tuning step (forward + backward + AdamW on one video), "forward" one sampling or
# inversion step (CFG doubles the rows). "act_*" are activation bytes per unit.
# * cpu/tiny and cpu/toy-world: measured on this project's 2-core CPU box (fp32, torch 2.13, 2 threads;
#   tiny: 4f x 16x16 -> 0.053 s fwd / 0.153 s train per row, 8f x 32x32 -> 0.53 / 1.85 s; a toy-world-sized
#   UNet (64, 96, 128 channels, 2 layers): 4f x 16x16 -> 0.10 / 0.32 s, 8f x 16x16 -> 0.19 / 0.54 s,
#   8f x 32x32 -> 0.88 / 2.7 s).
# * cpu/sd: offline-stack.md §6 (full-size SD UNet: 5.5 s per 64x64 forward; 13.3 s per 4-frame 32x32 step).
# * cuda/sd: measured with benchmarks/speed.py on one H100 80GB (SD-1.5-sized UNet, fp16 autocast, SDPA, torch
#   2.11): 24f x 64x64 tuning step 0.54 s with gradient checkpointing (peak 9.1 GiB), 8f 0.17 s without (12.8 GiB);
#   50 inversion steps on 24f 10.7 s, 50 CFG edit steps 12.8 s (peak 7.7 GiB). Other GPUs: an A100 is ~1.5-2x
#   slower, a T4 ~8x. cuda/tiny and cuda/toy-world are launch-bound guesses.
# The engine multiplies these by the ratio of measured to predicted time of its own runs (``_correction``).
COSTS: dict[tuple[str, str], dict[str, Any]] = {
    ("cpu", "tiny"): {"train": (0.0, 2.0e-4), "forward": (0.0, 6.5e-5), "act_train": 6.0e4, "act_forward": 1.0e4},
    ("cpu", "toy-world"): {"train": (0.04, 3.0e-4), "forward": (0.01, 1.0e-4), "act_train": 2.0e5, "act_forward": 2.0e4},
    ("cpu", "sd"): {"train": (0.0, 3.2e-3), "forward": (0.0, 1.3e-3), "act_train": 4.0e5, "act_forward": 6.0e4},
    ("cuda", "tiny"): {"train": (0.02, 2.0e-7), "forward": (0.008, 5.0e-8), "act_train": 6.0e4, "act_forward": 1.0e4},
    ("cuda", "toy-world"): {"train": (0.03, 1.0e-6), "forward": (0.01, 2.0e-7), "act_train": 2.0e5, "act_forward": 2.0e4},
    ("cuda", "sd"): {"train": (0.0, 5.5e-6), "forward": (0.02, 1.6e-6), "act_train": 6.5e4, "act_forward": 2.8e4},
}  # fmt: skip


def _cost_row(device: str, kind: str) -> dict[str, Any]:
    dev = "cuda" if device.startswith("cuda") else "cpu"
    return COSTS.get((dev, kind)) or COSTS[(dev, "sd")]


def step_seconds(row: dict[str, Any], what: str, units: float) -> float:
    """Predicted seconds of one ``what`` ("train" / "forward") step on ``units`` units."""
    a, b = row[what]
    return a + b * units


# ============================================================================================ results
@dataclass(frozen=True)
class TunedModel:
    """What a session knows about one tuned model (small; the tensors live in the cache)."""

    tune_key: str
    label: str
    prompt: str
    video_key: str | None = None  # None: uploaded without its source video (no inversion)
    video_path: str | None = None
    video_spec: VideoSpec | None = None
    tune_config: TuneConfig | None = None
    delta_file: str | None = None  # uploaded models: a private copy, reloaded if evicted
    source: str = "tuned"  # "tuned" | "uploaded"

    @property
    def handle(self) -> dict[str, str | None]:
        return {"tune_key": self.tune_key, "video_key": self.video_key, "label": self.label}


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


# ============================================================================================ artifacts
@dataclass
class VideoClip:
    frames: np.ndarray  # uint8 (f, h, w, 3)
    info: VideoInfo
    path: str


@dataclass
class TunedArtifact:
    delta: TunedDelta
    losses: tuple[float, ...] = ()
    preview: np.ndarray | None = None  # uint8 (f, h, w, 3) quick sample with the tune prompt


def _save_tuned(art: TunedArtifact, folder: Path) -> None:
    art.delta.save(folder, dtype=None)  # exact dtype: a spilled delta reloads bit for bit
    (folder / "losses.json").write_text(json.dumps(list(art.losses)))
    if art.preview is not None:
        np.save(folder / "preview.npy", art.preview)


def _load_tuned(folder: Path) -> TunedArtifact:
    losses = tuple(json.loads((folder / "losses.json").read_text())) if (folder / "losses.json").is_file() else ()
    preview = np.load(folder / "preview.npy") if (folder / "preview.npy").is_file() else None
    return TunedArtifact(TunedDelta.load(folder), losses, preview)


# ============================================================================================ sessions
@dataclass
class _Session:
    id: str
    dir: Path
    cancel: threading.Event = field(default_factory=threading.Event)
    models: dict[str, TunedModel] = field(default_factory=dict)  # insertion order = tuning order
    counter: int = 0
    active: int = 0
    released: bool = False
    last_used: float = field(default_factory=time.time)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _clean_prompts(prompts: str | Sequence[str], what: str = "edit prompt") -> list[str]:
    if isinstance(prompts, str):
        prompts = [prompts]
    cleaned = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if not cleaned:
        raise InputError(f"Please enter at least one {what}.")
    return cleaned


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ============================================================================================ engine
class Engine:
    """Tune-A-Video as a service: ``tune`` / ``invert`` / ``edit`` / ``generate`` / ``control`` per session.

    Build it from :class:`~tuneavideo.settings.Settings` (the model is loaded once) or from an
    already loaded :class:`~tuneavideo.TuneAVideoPipeline` (``Engine(pipe)``, e.g. in tests).
    Thread-safe: jobs of several sessions run one at a time on the model lock.
    """

    def __init__(
        self, source: Settings | Any | None = None, *, settings: Settings | None = None, pipe: Any | None = None
    ) -> None:
        if isinstance(source, Settings):
            settings = source
        elif source is not None:
            pipe = source
        if pipe is None:
            settings = (settings or Settings.from_env()).resolve()
            from .loading import load_pipeline

            started = time.perf_counter()
            pipe = load_pipeline(settings.model, torch_dtype=torch_dtype(settings.dtype), device=settings.device)
            self.load_seconds = time.perf_counter() - started
        else:
            self.load_seconds = 0.0
            model = str(getattr(pipe, "base_model", None) or "custom")
            device = str(pipe.device)
            dtype = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(pipe.unet.dtype, "fp32")
            if settings is None:
                settings = Settings(
                    model=model,
                    device=device,
                    dtype=dtype,
                    model_kind=detect_model_kind(model),
                    model_reason=f"Using the pipeline passed in ({model}).",
                )
            else:
                settings = dataclasses.replace(
                    settings,
                    model=settings.model or model,
                    device=device,
                    dtype=dtype,
                    model_kind=settings.model_kind or detect_model_kind(model),
                    model_reason=settings.model_reason or f"Using the pipeline passed in ({model}).",
                )
        self.settings: Settings = settings
        self.pipe = pipe
        pipe.set_progress_bar_config(disable=True)
        pipe.unet.requires_grad_(False)
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        self.device = torch.device(pipe._execution_device)
        self.vae_scale_factor = int(pipe.vae_scale_factor)
        self.fingerprint = base_fingerprint(pipe.unet)
        self.base_id = f"{settings.model}@{self.fingerprint}"
        native = int(pipe.unet.config.sample_size) * self.vae_scale_factor
        self.profile = _profile(settings.model_kind or "custom", str(self.device), native)

        self._model_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._sha_memo: dict[tuple[str, int, int], str] = {}
        self._control_models: OrderedDict[tuple[str, str], torch.nn.Module] = OrderedDict()
        self._correction: dict[str, float] = {}  # measured / predicted time of this engine's own runs

        self._own_output = not settings.output_dir
        self.output_root = Path(settings.output_dir or tempfile.mkdtemp(prefix="tuneavideo-out-")).resolve()
        self.output_root.mkdir(parents=True, exist_ok=True)
        spill = Path(settings.cache_dir) / "spill" / uuid.uuid4().hex[:12] if settings.cache_dir else None
        self.cache = ArtifactCache(settings.cache_bytes, spill_dir=spill)
        self.cache.register_spill("tuned", _save_tuned, _load_tuned)

    # ------------------------------------------------------------------ info
    @property
    def model_name(self) -> str:
        return self.settings.model

    def describe(self) -> dict[str, Any]:
        """Model, device, dtype and why: what the UI banner shows."""
        params = sum(p.numel() for p in self.pipe.unet.parameters())
        return {
            "model": self.settings.model,
            "kind": self.settings.model_kind,
            "reason": self.settings.model_reason,
            "device": str(self.device),
            "dtype": self.settings.dtype,
            "unet_parameters": params,
            "native_size": int(self.pipe.unet.config.sample_size) * self.vae_scale_factor,
            "vae_scale_factor": self.vae_scale_factor,
        }

    def stats(self) -> dict[str, Any]:
        """Cache counters (hits, misses, bytes, entries, evictions, spills) plus session count."""
        out = self.cache.stats()
        with self._state_lock:
            out["sessions"] = len(self._sessions)
        out["control_models"] = len(self._control_models)
        return out

    # ------------------------------------------------------------------ sessions
    def _session(self, session_id: str) -> _Session:
        if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
            raise InputError(f"invalid session id {session_id!r}: use 1-64 letters, digits, '-' or '_'")
        with self._state_lock:
            s = self._sessions.get(session_id)
            if s is None or s.released:
                s = _Session(session_id, self.output_root / session_id)
                self._sessions[session_id] = s
            s.last_used = time.time()
            return s

    def sessions(self) -> list[str]:
        with self._state_lock:
            return list(self._sessions)

    def models(self, session_id: str) -> list[TunedModel]:
        """The tuned (or uploaded) models this session may use, oldest first."""
        return list(self._session(session_id).models.values())

    def model_choices(self, session_id: str) -> list[tuple[str, str]]:
        """``(label, tune_key)`` pairs for a dropdown, newest first."""
        return [(m.label, m.tune_key) for m in reversed(self.models(session_id))]

    def cancel(self, session_id: str) -> bool:
        """Ask this session's running job to stop at the end of its current step; True if one was running."""
        s = self._session(session_id)
        s.cancel.set()
        return s.active > 0

    def release(self, session_id: str) -> int:
        """Forget a session: drop its cache references (shared entries stay for other sessions) and its files.

        Returns the bytes freed from the cache. A running job of the session is cancelled first.
        """
        if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
            return 0
        with self._state_lock:
            s = self._sessions.get(session_id)
            if s is None:
                return 0
            s.released = True
            s.cancel.set()
            busy = s.active > 0
            if not busy:
                del self._sessions[session_id]
        freed = self.cache.release(session_id)
        if not busy:
            shutil.rmtree(s.dir, ignore_errors=True)
        return freed

    def close(self) -> None:
        """Release every session and free the cache (and the temp output dir if the engine made it)."""
        for sid in self.sessions():
            self.release(sid)
        self.cache.clear()
        self._control_models.clear()
        if self._own_output:
            shutil.rmtree(self.output_root, ignore_errors=True)
        if self.cache.spill_dir is not None:
            shutil.rmtree(self.cache.spill_dir, ignore_errors=True)

    @contextmanager
    def _job(self, session_id: str, progress: ProgressCallback | None) -> Iterator[tuple[_Session, ProgressCallback]]:
        s = self._session(session_id)
        s.cancel.clear()
        with self._state_lock:
            s.active += 1

        def callback(event: ProgressEvent) -> None:
            if s.cancel.is_set():
                raise Cancelled(f"cancelled after {event.stage} step {event.step}/{event.total}")
            if progress is not None:
                progress(event)

        try:
            yield s, callback
        finally:
            with self._state_lock:
                s.active -= 1
                cleanup = s.released and s.active == 0
                if cleanup and self._sessions.get(s.id) is s:
                    del self._sessions[s.id]
            if cleanup:
                self.cache.release(s.id)
                shutil.rmtree(s.dir, ignore_errors=True)

    def _job_dir(self, s: _Session, kind: str) -> Path:
        with self._state_lock:
            s.counter += 1
            n = s.counter
        folder = s.dir / f"{n:03d}-{kind}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _model(self, s: _Session, tune_key: str | None) -> TunedModel:
        if not tune_key:
            raise InputError("No tuned model selected: tune one in the Tune tab first (or upload saved tuned weights).")
        model = s.models.get(str(tune_key))
        if model is None:
            raise InputError(
                f"Tuned model {str(tune_key)[:8]!r} is not known in this session (sessions cannot use each other's "
                "models, and a page reload starts a new session): tune again or upload the saved weights."
            )
        return model

    # ------------------------------------------------------------------ keys
    def video_key(self, video_path: str | os.PathLike, video_spec: VideoSpec) -> str:
        """Content key of a clip: sha256 of the file bytes + the VideoSpec + the base model."""
        path = self._check_video_path(video_path)
        st = path.stat()
        memo = (str(path), st.st_size, st.st_mtime_ns)
        sha = self._sha_memo.get(memo)
        if sha is None:
            sha = _sha256_file(path)
            if len(self._sha_memo) > 4096:  # a long-running app sees many uploads; the memo only saves re-hashing
                self._sha_memo.clear()
            self._sha_memo[memo] = sha
        return config_hash("video", sha, video_spec, self.base_id)

    @staticmethod
    def tune_key(video_key: str, prompt: str, tune_config: TuneConfig) -> str:
        return config_hash("tune", video_key, prompt, tune_config)

    @staticmethod
    def inversion_key(tune_key: str, invert_config: InvertConfig) -> str:
        return config_hash("invert", tune_key, invert_config)

    @staticmethod
    def _check_video_path(video_path: str | os.PathLike | None) -> Path:
        if video_path is None or str(video_path).strip() == "":
            raise InputError("Please upload a video (mp4, mov, webm, avi, mkv or gif), or pick an example.")
        path = Path(video_path)
        if not path.is_file():
            raise VideoError(f"video file not found: {path.name}")
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise VideoError(f"{path.name}: not a video file; expected one of {', '.join(VIDEO_EXTENSIONS)}")
        return path

    # ------------------------------------------------------------------ cached artifacts
    def _clip(self, s: _Session, video_key: str, video_path: str, video_spec: VideoSpec) -> VideoClip:
        clip = self.cache.get(video_key, s.id)
        if clip is None:
            path = self._check_video_path(video_path)
            frames, info = read_video(path, video_spec)
            clip = self.cache.put(video_key, VideoClip(frames, info, str(path)), kind="video", session=s.id)
        return clip

    def _latents(self, s: _Session, video_key: str, clip: VideoClip) -> torch.Tensor:
        key = "x0:" + video_key
        x0 = self.cache.get(key, s.id)
        if x0 is None:
            with self._model_lock:
                x0 = self.pipe.encode_video(clip.frames)  # (1, 4, f, h/8, w/8), posterior mean
            self.cache.put(key, x0, kind="latents", session=s.id)
        return x0

    def _tuned(self, s: _Session, model: TunedModel, callback: ProgressCallback) -> tuple[TunedArtifact, bool, float]:
        """The tuned artifact of ``model``: from the cache, or reloaded / re-tuned if it was evicted."""
        art = self.cache.get(model.tune_key, s.id)
        if art is not None:
            return art, True, 0.0
        started = time.perf_counter()
        if model.delta_file and Path(model.delta_file).is_file():
            art = TunedArtifact(self._read_delta_file(Path(model.delta_file)))
        elif model.video_key and model.video_path and model.video_spec and model.tune_config:
            clip = self._clip(s, model.video_key, model.video_path, model.video_spec)
            art = self._run_tune(clip, model.prompt, model.video_spec, model.tune_config, callback)
        else:
            raise InputError("The tuned weights were dropped from the cache and cannot be rebuilt: tune again.")
        self.cache.put(model.tune_key, art, kind="tuned", session=s.id)
        return art, False, time.perf_counter() - started

    def _inverted(
        self,
        s: _Session,
        model: TunedModel,
        art: TunedArtifact,
        invert_config: InvertConfig,
        callback: ProgressCallback,
    ) -> tuple[torch.Tensor, bool, float, str]:
        if not (model.video_key and model.video_path and model.video_spec):
            raise InputError(
                "This tuned model was uploaded without its source video, so there is nothing to invert: upload the "
                "source clip with it, or turn off 'use inversion' to generate from noise."
            )
        key = self.inversion_key(model.tune_key, invert_config)
        xT = self.cache.get(key, s.id)
        if xT is not None:
            return xT, True, 0.0, key
        clip = self._clip(s, model.video_key, model.video_path, model.video_spec)
        x0 = self._latents(s, model.video_key, clip)
        started = time.perf_counter()
        with self._model_lock, self.cache.pin(model.tune_key), art.delta.applied(self.pipe.unet):
            xT = self.pipe.invert(x0, invert_config.num_inference_steps, prompt=invert_config.prompt, callback=callback)
        seconds = time.perf_counter() - started
        self._measured("forward", seconds, invert_config.num_inference_steps, self._units(model.video_spec))
        self.cache.put(key, xT, kind="inverted", session=s.id)
        return xT, False, seconds, key

    # ------------------------------------------------------------------ tuning
    def _snapshot(self, trainable_modules: Sequence[str]) -> dict[str, torch.Tensor]:
        params = select_trainable(self.pipe.unet, tuple(trainable_modules))
        return {name: p.detach().clone() for name, p in params.items()}

    def _restore(self, snapshot: dict[str, torch.Tensor]) -> None:
        params = dict(self.pipe.unet.named_parameters())
        with torch.no_grad():
            for name, value in snapshot.items():
                p = params[name]
                if p.dtype == value.dtype and p.device == value.device:
                    p.copy_(value)
                else:
                    p.data = value
                p.requires_grad_(False)
                p.grad = None

    def _run_tune(
        self,
        clip: VideoClip,
        prompt: str,
        video_spec: VideoSpec,
        tune_config: TuneConfig,
        callback: ProgressCallback,
    ) -> TunedArtifact:
        """Tune a copy of the trainable weights: the shared UNet is restored bit for bit afterwards."""
        with self._model_lock:
            snapshot = self._snapshot(tune_config.trainable_modules)
            started = time.perf_counter()
            try:
                delta = tune(
                    self.pipe,
                    clip.frames,
                    prompt,
                    tune_config,
                    callback=callback,
                    video_spec=video_spec,
                    extra_record={"base_model": self.settings.model, "source_video": Path(clip.path).name},
                )
            finally:
                self._restore(snapshot)
        seconds = time.perf_counter() - started
        self._measured("train", seconds, len(getattr(delta, "losses", ())), self._units(video_spec))
        return TunedArtifact(delta, tuple(getattr(delta, "losses", ())))

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
        """Tune the base model on one clip (one-shot tuning, paper §4.2) for this session.

        Same clip bytes + spec + prompt + config as any earlier run (of any session) is a cache hit:
        nothing is recomputed. Returns a preview (a quick sample with the source prompt from noise),
        a download of the tuned weights, the losses and timings.
        """
        video_spec = video_spec or self.profile.video
        tune_config = tune_config or self.profile.tune
        preview_steps = self.profile.preview_steps if preview_steps is None else int(preview_steps)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("Please describe the source video in the prompt (e.g. 'a man is skiing').")
        prompt = prompt.strip()
        timings: dict[str, float] = {}
        with self._job(session_id, progress) as (s, callback):
            started = time.perf_counter()
            path = self._check_video_path(video_path)
            video_key = self.video_key(path, video_spec)
            key = self.tune_key(video_key, prompt, tune_config)
            timings["hash"] = time.perf_counter() - started
            art = self.cache.get(key, s.id)
            cache_hit = art is not None
            t0 = time.perf_counter()
            clip = self._clip(s, video_key, str(path), video_spec)
            timings["read"] = time.perf_counter() - t0
            if art is None:
                t0 = time.perf_counter()
                art = self._run_tune(clip, prompt, video_spec, tune_config, callback)
                timings["tune"] = time.perf_counter() - t0
                self.cache.put(key, art, kind="tuned", session=s.id)
            with self.cache.pin(key, video_key):
                if art.preview is None and preview_steps > 0:
                    t0 = time.perf_counter()
                    sample = dataclasses.replace(
                        self.profile.sample, num_inference_steps=preview_steps, seed=tune_config.seed
                    )
                    art.preview = self._sample(art.delta, [prompt], None, video_spec, sample, callback)[0]
                    timings["preview"] = time.perf_counter() - t0
                    self.cache.put(key, art, kind="tuned", session=s.id)  # re-count its bytes with the preview
                model = TunedModel(
                    tune_key=key,
                    label=self._label(prompt, video_spec, tune_config, key),
                    prompt=prompt,
                    video_key=video_key,
                    video_path=str(path),
                    video_spec=video_spec,
                    tune_config=tune_config,
                )
                folder = self._job_dir(s, "tune")
                t0 = time.perf_counter()
                preview_path = None
                if art.preview is not None:
                    preview_path = str(write_mp4(art.preview, folder / "preview.mp4", fps=clip.info.fps or DEFAULT_FPS))
                download = str(self._write_delta_zip(art.delta, folder / f"tuned-{key[:8]}.zip"))
                timings["write"] = time.perf_counter() - t0
            s.models[key] = model
        return TuneResult(
            session_id=s.id,
            tune_key=key,
            video_key=video_key,
            label=model.label,
            cache_hit=cache_hit,
            losses=art.losses,
            timings={k: round(v, 3) for k, v in timings.items()},
            preview_path=preview_path,
            download_path=download,
            record=dict(art.delta.record),
            preview_frames=art.preview,
        )

    @staticmethod
    def _label(prompt: str, spec: VideoSpec | None, config: TuneConfig | None, key: str) -> str:
        text = prompt if len(prompt) <= 40 else prompt[:39] + "…"
        bits = [f"“{text}”"]
        if spec is not None:
            bits.append(f"{spec.num_frames}f {spec.width}x{spec.height}")
        if config is not None:
            bits.append(f"{config.max_train_steps} steps")
        bits.append(key[:6])
        return " · ".join(bits)

    # ------------------------------------------------------------------ saved weights
    @staticmethod
    def _write_delta_zip(delta: TunedDelta, path: Path) -> Path:
        """One downloadable file: ``tuned.safetensors`` + ``tuned.json`` (stored, not compressed: floats)."""
        from safetensors.torch import save

        tensors = {k: v.detach().cpu().contiguous() for k, v in delta.state_dict.items()}
        data = save(tensors, metadata={"format": "tuneavideo-delta-v1"})
        tmp = path.with_name(f".{path.name}.tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(DELTA_FILE, data)
            zf.writestr(RECORD_FILE, json.dumps(delta.record, indent=2, default=str))
        os.replace(tmp, path)
        return path

    def _read_delta_file(self, path: Path) -> TunedDelta:
        from safetensors.torch import load_file

        record_file = path.with_name(RECORD_FILE)
        record = {}
        if record_file.is_file():
            try:
                record = json.loads(record_file.read_text())
            except (OSError, ValueError):
                record = {}
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise ModelLoadError(f"{path.name} is not a safetensors file of tuned weights ({exc})") from exc
        return TunedDelta(state, record)

    def _unpack_upload(self, upload: Path, dest: Path) -> Path:
        """Copy an uploaded zip / safetensors / folder into ``dest`` (fixed names); return the tensor file."""
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / DELTA_FILE
        if upload.is_dir():
            if not (upload / DELTA_FILE).is_file():
                raise ModelLoadError(f"{upload.name}: no {DELTA_FILE} in this folder")
            shutil.copyfile(upload / DELTA_FILE, target)
            if (upload / RECORD_FILE).is_file():
                shutil.copyfile(upload / RECORD_FILE, dest / RECORD_FILE)
            return target
        if not upload.is_file():
            raise InputError(f"uploaded file not found: {upload.name}")
        if upload.stat().st_size > MAX_DELTA_BYTES:
            raise InputError(f"{upload.name} is larger than {_fmt_bytes(MAX_DELTA_BYTES)}: not a tuned-weights file")
        if zipfile.is_zipfile(upload):
            with zipfile.ZipFile(upload) as zf:
                members = {Path(i.filename).name: i for i in zf.infolist() if not i.is_dir()}
                info = members.get(DELTA_FILE) or next(
                    (i for n, i in members.items() if n.endswith(".safetensors")), None
                )
                if info is None:
                    raise ModelLoadError(
                        f"{upload.name}: the zip holds no {DELTA_FILE} (download it from the Tune tab)"
                    )
                for member, name in ((info, DELTA_FILE), (members.get(RECORD_FILE), RECORD_FILE)):
                    if member is None:
                        continue
                    if member.file_size > MAX_DELTA_BYTES:
                        raise InputError(f"{upload.name}: {member.filename} is too large")
                    with zf.open(member) as src, open(dest / name, "wb") as out:  # fixed names: no path traversal
                        shutil.copyfileobj(src, out, 1 << 20)
            return target
        if upload.suffix.lower() == ".safetensors":
            shutil.copyfile(upload, target)
            return target
        raise InputError(
            f"{upload.name}: upload the .zip downloaded from the Tune tab (or a tuned.safetensors file / folder)"
        )

    def load_tuned(
        self,
        session_id: str,
        folder_or_file: str | os.PathLike,
        video_path: str | os.PathLike | None = None,
        video_spec: VideoSpec | None = None,
    ) -> TuneResult:
        """Add saved tuned weights (the Tune tab's zip, a ``tuned.safetensors`` or its folder) to a session.

        With the source ``video_path`` (read with ``video_spec``, default: the spec recorded with the
        weights), edits can use DDIM inversion; without it they sample from noise.
        """
        with self._job(session_id, None) as (s, _):
            upload = Path(folder_or_file)
            folder = self._job_dir(s, "upload")
            tensor_file = self._unpack_upload(upload, folder)
            delta = self._read_delta_file(tensor_file)
            self._check_delta(delta, upload.name)
            key = config_hash("upload", _sha256_file(tensor_file), self.base_id)
            cache_hit = key in self.cache
            if not cache_hit:
                self.cache.put(key, TunedArtifact(delta), kind="tuned", session=s.id)
            else:
                self.cache.add_ref(key, s.id)
            record = delta.record
            prompt = str(record.get("prompt") or "uploaded tuned model")
            video_key = None
            if video_path is not None and str(video_path).strip():
                if video_spec is None and isinstance(record.get("video_spec"), dict):
                    from .config import build_config

                    video_spec = build_config(VideoSpec, record["video_spec"])
                video_spec = video_spec or self.profile.video
                video_key = self.video_key(video_path, video_spec)
                self._clip(s, video_key, str(video_path), video_spec)
            model = TunedModel(
                tune_key=key,
                label=self._label(prompt, video_spec, None, key) + " · uploaded",
                prompt=prompt,
                video_key=video_key,
                video_path=str(video_path) if video_key else None,
                video_spec=video_spec if video_key else None,
                delta_file=str(tensor_file),
                source="uploaded",
            )
            s.models[key] = model
        return TuneResult(
            session_id=s.id,
            tune_key=key,
            video_key=video_key,
            label=model.label,
            cache_hit=cache_hit,
            losses=(),
            timings={},
            preview_path=None,
            download_path=None,
            record=dict(record),
        )

    def _check_delta(self, delta: TunedDelta, name: str) -> None:
        fp = delta.record.get("base_fingerprint")
        if fp is not None and fp != self.fingerprint:
            raise ModelLoadError(
                f"{name} was tuned on the base model '{delta.record.get('base_model')}', whose weights differ from the "
                f"loaded base '{self.settings.model}': load it in an app started with that base model."
            )
        params = dict(self.pipe.unet.named_parameters())
        unknown = [k for k in delta.state_dict if k not in params]
        bad = [k for k, v in delta.state_dict.items() if k in params and tuple(v.shape) != tuple(params[k].shape)]
        if unknown or bad or not delta.state_dict:
            raise ModelLoadError(
                f"{name} does not fit this model's UNet ({len(unknown)} unknown and {len(bad)} mis-shaped tensors): "
                "it was tuned on a different base model."
            )

    # ------------------------------------------------------------------ inversion / sampling
    def invert(
        self,
        session_id: str,
        tune_key: str,
        invert_config: InvertConfig | None = None,
        progress: ProgressCallback | None = None,
    ) -> InvertResult:
        """DDIM-invert the source clip with the tuned model (paper §4.3); cached per tuned model + config."""
        invert_config = invert_config or self.profile.invert
        with self._job(session_id, progress) as (s, callback):
            model = self._model(s, tune_key)
            art, _, _ = self._tuned(s, model, callback)
            with self.cache.pin(model.tune_key):
                _, cached, seconds, key = self._inverted(s, model, art, invert_config, callback)
        return InvertResult(s.id, model.tune_key, key, cached, round(seconds, 3))

    def _units(self, spec: VideoSpec | None, rows: int = 1) -> float:
        if spec is None:
            return 0.0
        vf = self.vae_scale_factor
        return float(spec.num_frames * (spec.height // vf) * (spec.width // vf) * rows)

    def _measured(self, what: str, seconds: float, steps: int, units: float) -> None:
        """Fold a finished run into the correction of the cost model (EMA of measured / predicted)."""
        row = _cost_row(str(self.device), self.settings.model_kind or "sd")
        predicted = steps * step_seconds(row, what, units)
        if steps <= 0 or predicted <= 0 or seconds <= 0:
            return
        ratio = min(max(seconds / predicted, 0.05), 20.0)
        old = self._correction.get(what)
        self._correction[what] = ratio if old is None else 0.5 * old + 0.5 * ratio

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
        """Sample each prompt with the delta applied; uint8 ``(n, f, h, w, 3)``. One prompt at a time (memory)."""
        n, steps = len(prompts), sample.num_inference_steps
        seed = sample.seed if sample.seed is not None else 0
        out = np.empty((n, spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8)
        started = time.perf_counter()
        with self._model_lock, delta.applied(self.pipe.unet):
            for i, prompt in enumerate(prompts):

                def forward(event: ProgressEvent, i: int = i) -> None:
                    callback(
                        dataclasses.replace(
                            event,
                            step=i * steps + event.step,
                            total=n * steps,
                            elapsed=time.perf_counter() - started,
                            extra={**event.extra, "prompt": i + 1, "prompts": n},
                        )
                    )

                generator = torch.Generator(device=self.device).manual_seed(seed)
                video = self.pipe(
                    prompt,
                    num_frames=spec.num_frames,
                    height=spec.height,
                    width=spec.width,
                    num_inference_steps=steps,
                    guidance_scale=sample.guidance_scale,
                    negative_prompt=sample.negative_prompt,
                    eta=sample.eta,
                    generator=generator,
                    latents=latents,
                    output_type="np",
                    callback=forward,
                    unet_kwargs=unet_kwargs,
                ).videos  # (1, f, h, w, 3) float in [0, 1]
                out[i] = to_uint8(video[0])
        rows = 2 if sample.guidance_scale > 1.0 else 1
        self._measured("forward", time.perf_counter() - started, n * steps, self._units(spec, rows))
        return out

    def _resolve_seed(self, sample: SampleConfig) -> SampleConfig:
        if sample.seed is None:
            return dataclasses.replace(sample, seed=int(torch.randint(0, 2**31 - 1, (1,)).item()))
        return sample

    def _write_outputs(
        self,
        s: _Session,
        kind: str,
        frames: np.ndarray,
        fps: float,
        clip: VideoClip | None,
        hints: np.ndarray | None = None,
    ) -> tuple[tuple[str, ...], str, str | None, str | None, bool]:
        """mp4 per prompt (+ source audio when stride 1), GIF of all prompts, side-by-side mp4, hint mp4."""
        folder = self._job_dir(s, kind)
        audio = None
        if clip is not None and clip.info.stride == 1 and clip.info.has_audio and Path(clip.path).is_file():
            audio = clip.path
        start = clip.info.clip_start if clip is not None else 0.0
        videos = tuple(
            str(write_mp4(v, folder / f"{kind}-{i + 1}.mp4", fps=fps, audio_source=audio, audio_start=start))
            for i, v in enumerate(frames)
        )
        gif = str(write_gif(make_grid(list(frames), ncols=len(frames)) if len(frames) > 1 else frames[0],
                            folder / f"{kind}.gif", fps=fps))  # fmt: skip
        hint_path = str(write_mp4(hints, folder / "hints.mp4", fps=fps)) if hints is not None else None
        side = None
        tiles = ([clip.frames] if clip is not None else []) + ([hints] if hints is not None else []) + list(frames)
        if len(tiles) > 1:
            side = str(
                write_mp4(make_grid(tiles, ncols=len(tiles)), folder / "side-by-side.mp4", fps=fps,
                          audio_source=audio, audio_start=start)
            )  # fmt: skip
        return videos, gif, side, hint_path, audio is not None

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
        return self._generate(session_id, tune_key, prompts, sample_config, progress, invert_config, kind="edit")

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
        return self._generate(
            session_id, tune_key, prompts, sample_config, progress, None, kind="generate", num_frames=num_frames
        )

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
        prompts = _clean_prompts(prompts)
        sample = self._resolve_seed(sample_config or self.profile.sample)
        invert_config = invert_config or self.profile.invert
        timings: dict[str, float] = {}
        notes: list[str] = []
        with self._job(session_id, progress) as (s, callback):
            model, art, tuning_cached, spec = self._start(s, tune_key, callback, timings)
            with self.cache.pin(model.tune_key):
                clip = None
                if model.video_key and model.video_path and model.video_spec:
                    clip = self._clip(s, model.video_key, model.video_path, model.video_spec)
                latents, inversion_cached = None, None
                if sample.use_inversion and kind == "edit":
                    if clip is None:
                        notes.append(
                            "No source video for this uploaded model: sampled from noise instead of inverting."
                        )
                    else:
                        latents, inversion_cached, seconds, inv_key = self._inverted(
                            s, model, art, invert_config, callback
                        )
                        timings["invert"] = seconds
                if num_frames is not None and latents is None:
                    spec = dataclasses.replace(spec, num_frames=int(num_frames))
                t0 = time.perf_counter()
                frames = self._sample(art.delta, prompts, latents, spec, sample, callback)
                timings["sample"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                fps = clip.info.fps if clip is not None else DEFAULT_FPS
                same_clip = clip is not None and spec.num_frames == clip.frames.shape[0]
                videos, gif, side, _, audio = self._write_outputs(s, kind, frames, fps, clip if same_clip else None)
                timings["write"] = time.perf_counter() - t0
        if clip is not None and not audio:
            notes.append("Audio: the source has none." if not clip.info.has_audio else
                         "Audio: not kept (frame stride > 1 changes the clip's timing).")  # fmt: skip
        return self._result(s, model, prompts, (videos, gif, side, audio), frames, sample, timings, notes,
                            tuning_cached=tuning_cached, inversion_cached=inversion_cached)  # fmt: skip

    def _start(
        self, s: _Session, tune_key: str, callback: ProgressCallback, timings: dict[str, float]
    ) -> tuple[TunedModel, TunedArtifact, bool, VideoSpec]:
        """The tuned model of a job (tuned now unless cached) and the video spec its outputs use."""
        model = self._model(s, tune_key)
        art, tuning_cached, seconds = self._tuned(s, model, callback)
        if seconds:
            timings["tune"] = seconds
        return model, art, tuning_cached, model.video_spec or self._uploaded_spec(art.delta)

    @staticmethod
    def _result(
        s: _Session,
        model: TunedModel,
        prompts: Sequence[str],
        outputs: tuple[tuple[str, ...], str, str | None, bool],
        frames: Any,
        sample: SampleConfig,
        timings: dict[str, float],
        notes: list[str],
        **flags: Any,
    ) -> EditResult:
        """An :class:`EditResult` from a job's written ``(videos, gif, side_by_side, has_audio)`` and records."""
        videos, gif, side, audio = outputs
        return EditResult(
            session_id=s.id,
            tune_key=model.tune_key,
            prompts=tuple(prompts),
            video_paths=videos,
            gif_path=gif,
            side_by_side_path=side,
            has_audio=audio,
            seed=sample.seed,
            timings={k: round(v, 3) for k, v in timings.items()},
            notes=tuple(notes),
            frames=frames,
            **flags,
        )

    def _uploaded_spec(self, delta: TunedDelta) -> VideoSpec:
        rec = delta.record
        base = self.profile.video
        try:
            return dataclasses.replace(
                base,
                num_frames=int(rec.get("num_frames") or base.num_frames),
                height=int(rec.get("height") or base.height),
                width=int(rec.get("width") or base.width),
            )
        except (TypeError, ValueError, InputError):
            return base

    # ------------------------------------------------------------------ control
    def _control_model(self, spec: Any) -> torch.nn.Module:
        from .control import load_control_model

        key = (spec.kind, str(spec.model))
        model = self._control_models.get(key)
        if model is None:
            model = load_control_model(spec, torch_dtype=self.pipe.unet.dtype, device=self.device)
            self._control_models[key] = model
            while len(self._control_models) > 2:  # control models are large (~1.4 GB for SD): keep two
                self._control_models.popitem(last=False)
        else:
            self._control_models.move_to_end(key)
        return model

    def hints(
        self,
        session_id: str,
        video_key: str,
        clip: VideoClip,
        hint_config: Any,
        progress: ProgressCallback | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Control hints of a clip, cached by :func:`tuneavideo.hints.hint_cache_key`; ``(hints, cached)``."""
        from .hints import extract_hints, hint_cache_key

        key = "hints:" + hint_cache_key(video_key, hint_config)
        found = self.cache.get(key, session_id)
        if found is not None:
            return found, True
        hints = extract_hints(clip.frames, hint_config, progress)
        self.cache.put(key, hints, kind="hints", session=session_id)
        return hints, False

    def control(
        self,
        session_id: str,
        tune_key: str,
        prompts: str | Sequence[str],
        hint_config: Any,
        control_spec: Any,
        sample_config: SampleConfig | None = None,
        progress: ProgressCallback | None = None,
        video_path: str | os.PathLike | None = None,
        invert_config: InvertConfig | None = None,
    ) -> EditResult:
        """Controlled generation: per-frame pose / depth / canny hints steer a ControlNet or T2I-Adapter.

        Hints come from the tuned model's source clip, or from ``video_path`` (a driving video, read
        with the same spec). With ``sample_config.use_inversion`` and hints from the source clip, it
        starts from the (cached) inverted source noise; otherwise from noise.
        """
        from .control import ControlSpec, build_video_control, with_default_depth_backend
        from .hints import HintConfig

        if not isinstance(hint_config, HintConfig):
            raise InputError(f"hint_config must be a HintConfig, got {type(hint_config).__name__}")
        if not isinstance(control_spec, ControlSpec):
            raise InputError(f"control_spec must be a ControlSpec, got {type(control_spec).__name__}")
        if control_spec.hint != hint_config.kind:
            control_spec = dataclasses.replace(control_spec, hint=hint_config.kind)
        prompts = _clean_prompts(prompts)
        sample = self._resolve_seed(sample_config or self.profile.sample)
        invert_config = invert_config or self.profile.invert
        timings: dict[str, float] = {}
        notes: list[str] = []
        resolved = with_default_depth_backend(self.settings.model, hint_config)
        if resolved is not hint_config:
            hint_config = resolved
            notes.append("Depth hints on the toy-world base are the objects' silhouettes (toyworld backend).")
        with self._job(session_id, progress) as (s, callback):
            model, art, tuning_cached, spec = self._start(s, tune_key, callback, timings)
            with self.cache.pin(model.tune_key):
                source = None
                if model.video_key and model.video_path and model.video_spec:
                    source = self._clip(s, model.video_key, model.video_path, model.video_spec)
                if video_path is not None and str(video_path).strip():
                    driving_key = self.video_key(video_path, spec)
                    driving = self._clip(s, driving_key, str(video_path), spec)
                    from_source = False
                elif source is not None:
                    driving_key, driving, from_source = model.video_key, source, True
                else:
                    raise InputError(
                        "This uploaded model has no source video: upload a driving video to take the hints from."
                    )
                t0 = time.perf_counter()
                hints, hints_cached = self.hints(s.id, driving_key, driving, hint_config, callback)  # type: ignore[arg-type]
                timings["hints"] = time.perf_counter() - t0
                latents, inversion_cached = None, None
                if sample.use_inversion and from_source:
                    latents, inversion_cached, seconds, _ = self._inverted(s, model, art, invert_config, callback)
                    timings["invert"] = seconds
                t0 = time.perf_counter()
                with self._model_lock:
                    cnet = self._control_model(control_spec)
                    control = build_video_control(
                        [control_spec],
                        [hints],
                        models=[cnet],
                        height=spec.height,
                        width=spec.width,
                        unet=self.pipe.unet,
                        guidance_scale=sample.guidance_scale,
                    )
                timings["load_control"] = time.perf_counter() - t0
                shown = Path(control_spec.model).name if Path(control_spec.model).is_dir() else control_spec.model
                notes.insert(
                    0, f"Control: {dataclasses.replace(control_spec, model=shown).label}, scale {control_spec.scale:g}."
                )
                t0 = time.perf_counter()
                frames = self._sample(art.delta, prompts, latents, spec, sample, callback, control.unet_kwargs)
                timings["sample"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                fps = driving.info.fps or DEFAULT_FPS
                videos, gif, side, hint_path, audio = self._write_outputs(
                    s, "control", frames, fps, driving, hints=control.hints[0]
                )
                timings["write"] = time.perf_counter() - t0
        return self._result(
            s, model, prompts, (videos, gif, side, audio), frames, sample, timings, notes,
            tuning_cached=tuning_cached, inversion_cached=inversion_cached, hints_cached=hints_cached,
            hint_path=hint_path,
        )  # fmt: skip

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
        """Rough time and memory for tune + preview, inversion and an edit of ``num_prompts`` prompts.

        Per-step costs come from :data:`COSTS` (per device and model kind), scaled by how this engine's
        own runs compared with them once it has finished some.
        """
        spec = video_spec or self.profile.video
        tcfg = tune_config or self.profile.tune
        scfg = sample_config or self.profile.sample
        icfg = invert_config or self.profile.invert
        preview = self.profile.preview_steps if preview_steps is None else preview_steps
        row = _cost_row(str(self.device), self.settings.model_kind or "sd")
        train_k = self._correction.get("train", 1.0)
        fwd_k = self._correction.get("forward", 1.0)
        cfg_rows = 2 if scfg.guidance_scale > 1.0 else 1
        units = self._units(spec)
        tune_s = tcfg.max_train_steps * step_seconds(row, "train", units) * train_k
        preview_s = preview * step_seconds(row, "forward", units * cfg_rows) * fwd_k
        invert_s = icfg.num_inference_steps * step_seconds(row, "forward", units) * fwd_k if scfg.use_inversion else 0.0
        edit_s = num_prompts * scfg.num_inference_steps * step_seconds(row, "forward", units * cfg_rows) * fwd_k
        weights = sum(p.numel() * p.element_size() for m in (self.pipe.unet, self.pipe.vae, self.pipe.text_encoder)
                      for p in m.parameters())  # fmt: skip
        try:
            trainable = sum(p.numel() for p in select_trainable(self.pipe.unet, tcfg.trainable_modules).values())
        except InputError:
            trainable = 0
        optimizer = trainable * (4 + 4 + 8)  # fp32 master copy, gradient, two AdamW moments
        act_train = units * row["act_train"] * (0.4 if tcfg.gradient_checkpointing else 1.0)
        act_fwd = units * cfg_rows * row["act_forward"]
        measured = sorted(self._correction)
        device = "GPU" if self.device.type == "cuda" else self.device.type.upper()
        text = (
            f"≈ {_fmt_seconds(tune_s + preview_s)} to tune ({tcfg.max_train_steps} steps"
            f"{f' + {preview}-step preview' if preview else ''}), "
            + (f"≈ {_fmt_seconds(invert_s)} to invert once, " if invert_s else "")
            + f"≈ {_fmt_seconds(edit_s)} per edit of {num_prompts} prompt{'s' if num_prompts > 1 else ''}"
            f" on this {device}; peak memory ≈ {_fmt_bytes(weights + optimizer + act_train)} while tuning. "
            + ("(calibrated on this machine's runs)" if measured else "(rough, from per-step constants)")
        )
        return {
            "device": str(self.device),
            "model_kind": self.settings.model_kind,
            "tune_seconds": round(tune_s, 2),
            "preview_seconds": round(preview_s, 2),
            "invert_seconds": round(invert_s, 2),
            "edit_seconds": round(edit_s, 2),
            "total_seconds": round(tune_s + preview_s + invert_s + edit_s, 2),
            "weights_bytes": int(weights),
            "tune_peak_bytes": int(weights + optimizer + act_train),
            "edit_peak_bytes": int(weights + act_fwd),
            "delta_bytes": int(trainable * next(self.pipe.unet.parameters()).element_size()),
            "measured": measured,
            "text": text,
        }


__all__ = [
    "COSTS",
    "step_seconds",
    "EditResult",
    "Engine",
    "InvertResult",
    "Profile",
    "TuneResult",
    "TunedModel",
    "TuneAVideoError",
]
