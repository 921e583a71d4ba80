"""App/engine settings from environment variables and command-line flags, and the default-model choice.

Environment variables (command-line flags of ``app.py`` override them):

==========================  ===============================  =========================================
variable                    flag                             meaning
==========================  ===============================  =========================================
``BASE_MODEL_ID``           ``--model``                      hub id or local SD-1.x folder (default: see
                                                             :func:`resolve_default_model`)
``TUNEAVIDEO_DEVICE``       ``--device``                     ``auto`` (cuda if present), ``cpu``, ``cuda``, ``cuda:1``, ``mps``
``TUNEAVIDEO_DTYPE``        ``--dtype``                      ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp32``, ``fp16``, ``bf16``
``TUNEAVIDEO_CACHE_BYTES``  ``--cache-bytes``                RAM/VRAM budget of the artifact cache, e.g. ``4GB``, ``512MiB``
``TUNEAVIDEO_MAX_QUEUE``    ``--max-queue``                  longest Gradio queue before new jobs are refused
``TUNEAVIDEO_CACHE_DIR``    ``--cache-dir``                  disk folder for spilled tuned weights and the tiny fallback model
``TUNEAVIDEO_OUTPUT_DIR``   ``--output-dir``                 where per-session outputs go (default: a temp dir)
``GRADIO_SHARE``            ``--share``                      create a public gradio.live link
``GRADIO_SERVER_NAME``      ``--host``                       bind address (default 127.0.0.1)
``GRADIO_SERVER_PORT``      ``--port``                       port (default 7860)
``CACHE_EXAMPLES``          ``--cache-examples``             ``1`` pre-computes the examples (off by default)
``TUNEAVIDEO_DISK_BYTES``   ``--disk-bytes``                 one disk budget for stored runs, uploads and outputs
                                                             (default 20GB; 0 = no limit), oldest first
``TUNEAVIDEO_MAX_UPLOAD``   ``--max-upload``                 largest accepted upload (default 512MB)
``TUNEAVIDEO_MODEL_DIRS``   ``--allow-model-dir`` (repeat)   folders (``:``-separated in the variable) whose
                                                             models the app may load by name, besides
                                                             ``tuneavideo/models/`` and hub ids
``TUNEAVIDEO_WORKERS``      ``--workers``                    engine workers: ``auto`` (one per GPU when there
                                                             are several and Ray is installed, else 1) or N;
                                                             over 1 they are Ray actors (tuneavideo/workers.py)
``TUNEAVIDEO_RAY_ADDRESS``  ``--ray-address``                a running Ray to put the workers on (default:
                                                             start a local one when workers > 1)
==========================  ===============================  =========================================
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hub
from .config import DEFAULT_BASE_MODEL
from .errors import InputError, ModelLoadError
from .profiles import TOY_WORLD_DIR, detect_kind, expand_model, profile_kinds

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "fp32", "fp16", "bf16")
SPEEDS = ("auto", "plain", "fast", "low-vram")
DEFAULT_CACHE_BYTES = 4 * 1024**3
DEFAULT_DISK_BYTES = 20 * 1000**3  # runs + uploads + outputs of a public app; a run of SD-1.x is ~0.2-0.3 GB
DEFAULT_MAX_UPLOAD = 512 * 1000**2  # an SD-1.x run archive is ~150-300 MB; clips are much smaller
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}  # fmt: skip

# What kind of model is loaded decides the defaults (sizes, steps) and the cost constants: see profiles.py.
MODEL_KINDS = profile_kinds()
detect_model_kind = detect_kind  # the name of the first release


def parse_bytes(value: str | int | float) -> int:
    """``"4GB"``, ``"512MiB"``, ``"1e9"`` or a number -> bytes."""
    if isinstance(value, (int, float)):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _UNITS:
            raise InputError(f"cannot read a byte size from {value!r}; use e.g. 4GB, 512MiB or 1000000")
        n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if n < 0:
        raise InputError(f"byte size must be >= 0, got {value!r}")
    return n


def parse_workers(value: str | int | None) -> int:
    """``"auto"`` (or empty) -> 0, meaning one worker per GPU when there are several; else a count >= 1."""
    text = str(value if value is not None else "").strip().lower()
    if text in ("", "auto", "0"):
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise InputError(f"workers must be 'auto' or a number >= 1, got {value!r}")
    return n


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; other values are checked and kept."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    base = device.split(":", 1)[0]
    if base not in DEVICES:
        raise InputError(f"device must be one of {DEVICES} (or cuda:N), got {device!r}")
    if base == "cuda" and not cuda_available():
        raise InputError(f"device {device!r} was asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto`` -> ``fp16`` on CUDA, ``fp32`` elsewhere (CPU half precision is slow and tuning needs fp32)."""
    dtype = (dtype or "auto").strip().lower()
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return dtype


def torch_dtype(name: str) -> Any:
    """``"fp16"`` -> ``torch.float16`` (and bf16, fp32)."""
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def _sd_cached(model_id: str) -> bool:
    """Whether the hub's cache already holds ``model_id`` (so it loads with the hub unreachable)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "model_index.json")
        return isinstance(found, str) and Path(found).is_file()
    except Exception:  # an odd cache layout just means "not cached"
        return False


def tiny_model_dir(cache_dir: str | os.PathLike) -> Path:
    """Write (once) the tiny random SD-1.x pipeline used when nothing better is available."""
    from .testing import write_tiny_sd

    folder = Path(cache_dir) / "tiny-sd-random"
    if not (folder / "model_index.json").is_file():
        write_tiny_sd(folder)
    return folder


def resolve_default_model(
    device: str = "auto", cache_dir: str | os.PathLike | None = None
) -> tuple[str, str, str, str]:
    """Pick the base model: ``(model, dtype, kind, reason)``; ``reason`` is the sentence for the banner.

    * a CUDA GPU and the hub reachable (or SD 1.5 already cached) -> Stable Diffusion 1.5 in fp16;
    * otherwise the embedded toy-world model, if present;
    * otherwise a tiny *random* model written with :func:`tuneavideo.testing.write_tiny_sd` (outputs are noise).

    Never blocks on an unreachable hub: the hub policy is decided first (one 2-second TCP probe at most).
    """
    device = resolve_device(device)
    gpu = device.startswith("cuda")
    offline = hub.decide_offline(DEFAULT_BASE_MODEL) if gpu else hub.decide_offline(None)
    if gpu and (not offline or _sd_cached(DEFAULT_BASE_MODEL)):
        how = "downloaded on first use" if not _sd_cached(DEFAULT_BASE_MODEL) else "from the local cache"
        return (
            DEFAULT_BASE_MODEL,
            "fp16",
            "sd",
            f"GPU found: using Stable Diffusion 1.5 ({DEFAULT_BASE_MODEL}, fp16, {how}).",
        )
    if gpu:
        why = "GPU found, but the Hugging Face hub is unreachable and Stable Diffusion 1.5 is not cached"
    else:
        why = "No GPU found"
    if (TOY_WORLD_DIR / "model_index.json").is_file():
        return (
            str(TOY_WORLD_DIR),
            "auto",
            "toy-world",
            f"{why}: using the embedded toy-world model (128 px coloured shapes, runs on CPU in minutes). "
            "Start with a GPU and network access (or --model) for Stable Diffusion 1.5.",
        )
    folder = tiny_model_dir(cache_dir or default_cache_dir())
    return (
        str(folder),
        "auto",
        "tiny",
        f"{why} and the embedded toy-world model is missing: using a TINY RANDOM test model (outputs are noise; for "
        "trying the app only). Pass --model with a local SD-1.x folder for real results.",
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuneavideo"


@dataclass(frozen=True)
class Settings:
    """Everything the app and engine need to start; build with :meth:`from_env` / :meth:`from_args`."""

    model: str = ""  # hub id or folder; "" = resolve_default_model()
    device: str = "auto"
    dtype: str = "auto"
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_queue: int = 8
    cache_dir: str = ""  # "" = ~/.cache/tuneavideo
    output_dir: str = ""  # "" = a fresh temp dir
    share: bool = False
    host: str = "127.0.0.1"
    port: int = 7860
    cache_examples: bool = False
    speed: str = "auto"  # auto | plain | fast | low-vram (tuneavideo.speed); auto picks low-vram on small GPUs
    compile: bool = False  # regional torch.compile on CUDA (minutes of compiling, faster after)
    disk_bytes: int = DEFAULT_DISK_BYTES  # 0 = no limit
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    allow_model_dirs: tuple[str, ...] = ()  # besides tuneavideo/models/: folders the app may load models from
    workers: int = 0  # engine workers (Ray actors when > 1); 0 = auto: one per GPU when there are several
    ray_address: str = ""  # a running Ray cluster for the workers ("" = start a local one when needed)
    model_kind: str = ""  # filled by resolve(); one of MODEL_KINDS
    model_reason: str = ""  # banner text: which model and why

    def __post_init__(self) -> None:
        if self.device.split(":", 1)[0] not in DEVICES:
            raise InputError(f"device must be one of {DEVICES} (or cuda:N), got {self.device!r}")
        if self.dtype not in DTYPES:
            raise InputError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.cache_bytes < 0:
            raise InputError(f"cache_bytes must be >= 0, got {self.cache_bytes}")
        object.__setattr__(self, "allow_model_dirs", tuple(str(d) for d in self.allow_model_dirs if str(d).strip()))
        if self.disk_bytes < 0 or self.max_upload_bytes < 1:
            raise InputError(f"disk_bytes must be >= 0 and max_upload_bytes >= 1, got {self.disk_bytes}, "
                             f"{self.max_upload_bytes}")  # fmt: skip
        if not isinstance(self.workers, int) or self.workers < 0:
            raise InputError(f"workers must be 0 (auto) or a number >= 1, got {self.workers!r}")
        if self.max_queue < 1:
            raise InputError(f"max_queue must be >= 1, got {self.max_queue}")
        if not 0 <= self.port < 65536:
            raise InputError(f"port must be in 0..65535, got {self.port}")
        if self.speed not in SPEEDS:
            raise InputError(f"speed must be one of {SPEEDS}, got {self.speed!r}")
        if self.model_kind and self.model_kind not in profile_kinds():
            raise InputError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read the environment variables in the module docstring; ``overrides`` (not None) win."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "model": env.get("BASE_MODEL_ID", env.get("TUNEAVIDEO_MODEL", "")),
            "device": env.get("TUNEAVIDEO_DEVICE", "auto"),
            "dtype": env.get("TUNEAVIDEO_DTYPE", "auto"),
            "cache_bytes": parse_bytes(env.get("TUNEAVIDEO_CACHE_BYTES", DEFAULT_CACHE_BYTES)),
            "max_queue": int(env.get("TUNEAVIDEO_MAX_QUEUE", 8)),
            "cache_dir": env.get("TUNEAVIDEO_CACHE_DIR", ""),
            "output_dir": env.get("TUNEAVIDEO_OUTPUT_DIR", ""),
            "share": _truthy(env.get("GRADIO_SHARE")),
            "host": env.get("GRADIO_SERVER_NAME", "127.0.0.1"),
            "port": int(env.get("GRADIO_SERVER_PORT", 7860)),
            "cache_examples": _truthy(env.get("CACHE_EXAMPLES")),
            "speed": env.get("TUNEAVIDEO_SPEED", "auto"),
            "compile": _truthy(env.get("TUNEAVIDEO_COMPILE")),
            "disk_bytes": env.get("TUNEAVIDEO_DISK_BYTES", DEFAULT_DISK_BYTES),
            "max_upload_bytes": env.get("TUNEAVIDEO_MAX_UPLOAD", DEFAULT_MAX_UPLOAD),
            "allow_model_dirs": tuple(d for d in env.get("TUNEAVIDEO_MODEL_DIRS", "").split(os.pathsep) if d),
            "workers": env.get("TUNEAVIDEO_WORKERS", "auto"),
            "ray_address": env.get("TUNEAVIDEO_RAY_ADDRESS", ""),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["workers"] = parse_workers(values["workers"])  # type: ignore[arg-type]
        for name in ("cache_bytes", "disk_bytes", "max_upload_bytes"):
            values[name] = parse_bytes(values[name])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """The app's flags; each defaults to None so the environment (then the built-in default) applies."""
        parser.add_argument("--model", help="hub id or local SD-1.x folder (default: SD 1.5 on GPU, toy-world on CPU)")
        parser.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
        parser.add_argument("--dtype", choices=DTYPES, help="weights dtype (auto: fp16 on CUDA, fp32 elsewhere)")
        parser.add_argument("--cache-bytes", help="memory budget of cached artifacts, e.g. 4GB")
        parser.add_argument("--max-queue", type=int, help="queue length before new jobs are refused")
        parser.add_argument("--cache-dir", help="disk folder for spilled tuned weights")
        parser.add_argument("--output-dir", help="folder for per-session outputs (default: a temp dir)")
        parser.add_argument("--share", action="store_true", default=None, help="create a public share link")
        parser.add_argument("--host", help="bind address (0.0.0.0 for all interfaces)")
        parser.add_argument("--port", type=int, help="port to listen on")
        parser.add_argument("--cache-examples", action="store_true", default=None, help="pre-compute the examples")
        parser.add_argument(
            "--speed", choices=SPEEDS, help="auto (fast on GPU; low-vram under 20 GiB), plain, fast, low-vram"
        )
        parser.add_argument("--compile", action="store_true", default=None, help="regional torch.compile (CUDA)")
        parser.add_argument("--disk-bytes", help="disk budget of stored runs + uploads + outputs, e.g. 20GB (0: none)")
        parser.add_argument("--max-upload", dest="max_upload_bytes", help="largest accepted upload, e.g. 512MB")
        parser.add_argument("--allow-model-dir", dest="allow_model_dirs", action="append",
                            help="a folder whose models the app may load by name (repeat; besides tuneavideo/models)")  # fmt: skip
        parser.add_argument("--workers", help="engine workers: auto (one per GPU when there are several) or N; "
                            "over 1 they run on Ray (N CPU workers on a machine without a GPU)")  # fmt: skip
        parser.add_argument("--ray-address", help="a running Ray cluster for the workers (default: a local one)")
        return parser

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
        """Parse ``argv`` (flags of :meth:`add_arguments`) over the environment; not yet resolved."""
        args = cls.add_arguments(argparse.ArgumentParser(description="Tune-A-Video web app")).parse_args(argv)
        return cls.from_env(env, **{k: v for k, v in vars(args).items()})

    # ------------------------------------------------------------------ resolving
    @property
    def resolved(self) -> bool:
        return bool(self.model and self.model_kind and self.model_reason and "auto" not in (self.device, self.dtype))

    def resolve(self) -> Settings:
        """Fill in ``model``/``device``/``dtype``/``model_kind``/``model_reason`` once (may probe the hub for 2 s).

        The hub policy is decided here, before any model code imports ``huggingface_hub``; resolving an
        already resolved ``Settings`` returns it unchanged (so the banner keeps the first reason).
        """
        if self.resolved:
            return self
        device = resolve_device(self.device)
        cache_dir = self.cache_dir or str(default_cache_dir())
        if not self.model:
            model, dtype, kind, reason = resolve_default_model(device, cache_dir)
            if self.dtype != "auto":
                dtype = self.dtype
        else:
            model, dtype = expand_model(self.model), self.dtype
            kind = self.model_kind or detect_kind(model)
            reason = self.model_reason or f"Using the model given with --model / BASE_MODEL_ID: {self.model}."
            if hub.decide_offline(model) and hub.is_hub_id(model):
                reason += " The hub is unreachable, so it must already be in the local cache."
        return dataclasses.replace(
            self,
            model=model,
            device=device,
            dtype=resolve_dtype(dtype, device),
            cache_dir=cache_dir,
            model_kind=kind,
            model_reason=reason,
        )


def open_base(settings: Settings | None, pipe: Any = None) -> tuple[Settings, Any]:
    """``(resolved settings, pipeline)``: load the base the settings name, or describe a pipeline passed in."""
    if pipe is None:
        settings = (settings or Settings.from_env()).resolve()
        pipe = load_base(settings.model, settings.device, settings.dtype)
        from .speed import persistent_compile_cache, persistent_kernel_cache

        # compiled kernels persist beside the tuned weights (--cache-dir), not in /tmp or the home folder
        if str(settings.device).startswith("cuda"):
            persistent_kernel_cache(settings.cache_dir)
        if settings.compile:
            persistent_compile_cache(settings.cache_dir)
        pipe.set_speed_mode(speed_for(settings.speed, settings.device), compile=settings.compile)
        return settings, pipe
    import torch

    model = str(getattr(pipe, "base_model", None) or (settings.model if settings else "") or "custom")
    dtype = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(pipe.unet.dtype, "fp32")
    settings = settings or Settings()
    return dataclasses.replace(
        settings,
        model=settings.model or model,
        device=str(pipe.device),
        dtype=dtype,
        model_kind=settings.model_kind or detect_kind(model),
        model_reason=settings.model_reason or f"Using the pipeline passed in ({model}).",
    ), pipe


def speed_for(speed: str, device: str) -> str:
    """The speed mode to use: ``auto`` becomes ``low-vram`` on a GPU under 20 GiB (12 GB cards fit the paper's
    24 frames at 512² that way), else stays ``auto`` (fast on CUDA, plain on CPU)."""
    from .speed import recommended_speed_mode

    return recommended_speed_mode(device) if speed == "auto" else speed


def load_base(model: str, device: str, dtype: str) -> Any:
    """Load a base pipeline under the process's hub policy; an unreachable hub id fails fast with the fix."""
    from .loading import load_pipeline

    offline = hub.decide_offline(model)
    try:
        return load_pipeline(model, torch_dtype=torch_dtype(dtype), device=device, local_files_only=offline or None)
    except ModelLoadError as exc:
        if offline and hub.is_hub_id(model):
            raise ModelLoadError(f"{exc}\n{hub.offline_hint(model)}") from exc
        raise
