"""One validation layer for the CLI, the engine and the app: checked before any model is loaded.

Every rule raises :class:`~tuneavideo.errors.InputError` with the same words wherever the job came
from (``tuneavideo edit ...``, ``Engine.edit(...)`` or the app's ``/edit``), so a bad request costs
milliseconds and never a model load or a half-written output.

Rules:

* **Prompts**: at least one non-blank prompt. A prompt longer than CLIP's 77 tokens is *not* refused
  (every SD-1.x pipeline cuts it there); :func:`check_prompts` returns a warning that says so and shows
  where it is cut.
* **Sizes**: frames, width and height up to the base profile's limits (the app's slider limits:
  SD 32 frames / 768 px, toy-world 24 / 256, tiny 16 / 128), never above :data:`ABS_MAX_FRAMES` /
  :data:`ABS_MAX_SIZE`; steps up to :data:`MAX_TRAIN_STEPS` (tuning) and :data:`MAX_SAMPLE_STEPS`
  (sampling, inversion: the scheduler has 1000 timesteps); finite guidance up to :data:`MAX_GUIDANCE`; a
  finite, positive learning rate (a diverging one is stopped by the tuning loop, with its value named).
* **Seeds**: whole numbers from 0 to 2**63-1.
* **Paths**: an output that is a file where a folder is needed (or the reverse), or that cannot be written.
* **Memory**: a job whose estimated peak (:mod:`tuneavideo.costs`) exceeds what this device has free is
  refused with both numbers (``TUNEAVIDEO_MEMORY_CHECK=0`` turns the check off).
* **Model names from the network**: a hub id (``owner/name``) or a folder under the allow-list (the models
  shipped in ``tuneavideo/models/`` plus the operator's ``--allow-model-dir``); everything else gets one
  message that does not depend on what exists on the server.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
from .errors import InputError

ABS_MAX_FRAMES = 128  # absolute caps, whatever a profile says: beyond them no SD-1.x job fits one GPU
ABS_MAX_SIZE = 1024
MAX_TRAIN_STEPS = 5000  # the paper tunes for 500
MAX_SAMPLE_STEPS = 1000  # DDIM cannot take more steps than the scheduler's 1000 training timesteps
MAX_GUIDANCE = 50.0
MAX_PROMPTS = 16  # prompts per edit request
CLIP_MAX_TOKENS = 77  # SD-1.x text encoder context, start and end tokens included
MAX_SEED = 2**63 - 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


# ------------------------------------------------------------------------------------------ prompts
@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    """The real CLIP tokenizer (every SD-1.x base uses it), built once per process from the bundled BPE."""
    import shutil
    import tempfile

    from .tokenizer import clip_tokenizer

    folder = tempfile.mkdtemp(prefix="tav-validate-tok-")
    try:
        tok = clip_tokenizer(folder)  # the slow tokenizer reads its files now: the folder can go
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    tok.model_max_length = 10**9  # counting, not encoding: no "sequence too long" log line
    return tok


def count_tokens(prompt: str) -> int:
    """CLIP tokens of ``prompt``, start and end tokens included (what the 77-token limit counts)."""
    return len(_tokenizer()(prompt, truncation=False).input_ids)


def prompt_warning(prompt: str, what: str = "prompt") -> str | None:
    """A warning when ``prompt`` is longer than CLIP's 77 tokens (it is cut there), else None."""
    if len(prompt) < CLIP_MAX_TOKENS:  # a token is at least one character: skip the tokenizer
        return None
    n = count_tokens(prompt)
    if n <= CLIP_MAX_TOKENS:
        return None
    ids = _tokenizer()(prompt).input_ids[: CLIP_MAX_TOKENS - 1]  # what the encoder sees, before its end token
    kept = _tokenizer().decode(ids, skip_special_tokens=True)
    return (
        f"the {what} is {n} CLIP tokens long; only the first {CLIP_MAX_TOKENS} are used, so it is cut after "
        f"'...{kept[-40:]}'"
    )


def check_prompts(prompts: str | Sequence[str] | None, what: str = "edit prompt") -> tuple[list[str], list[str]]:
    """``(cleaned prompts, warnings)``: at least one non-blank prompt, at most :data:`MAX_PROMPTS`."""
    if prompts is None:
        prompts = []
    if isinstance(prompts, str):
        prompts = [prompts]
    if not all(isinstance(p, str) for p in prompts):
        raise InputError(f"every {what} must be text")
    cleaned = [p.strip() for p in prompts if p.strip()]
    if not cleaned:
        raise InputError(f"Please enter at least one {what}.")
    if len(cleaned) > MAX_PROMPTS:
        raise InputError(f"{len(cleaned)} {what}s in one request; at most {MAX_PROMPTS}")
    warnings = [w for p in cleaned if (w := prompt_warning(p, what))]
    return cleaned, warnings


def check_prompt(prompt: Any, what: str = "prompt") -> tuple[str, list[str]]:
    """One non-blank prompt (e.g. the tuning caption) and its warnings."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("Please describe the source video in the prompt (e.g. 'a man is skiing').")
    cleaned, warnings = check_prompts([prompt], what)
    return cleaned[0], warnings


# ------------------------------------------------------------------------------------------ numbers
def check_seed(seed: Any) -> int | None:
    """``None`` (pick one) or a whole number from 0 to 2**63-1."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be a whole number from 0 to 2**63-1, got {seed!r}")
    return seed


def size_limits(profile: Any | None) -> tuple[int, int]:
    """``(max frames, max width/height)``: the profile's slider limits, never above the absolute caps."""
    frames = min(int(getattr(profile, "max_frames", ABS_MAX_FRAMES)), ABS_MAX_FRAMES)
    size = min(int(getattr(profile, "max_size", ABS_MAX_SIZE)), ABS_MAX_SIZE)
    return frames, size


def check_shape(num_frames: int, height: int, width: int, profile: Any | None) -> None:
    """Frames and size within this base's limits (see :func:`size_limits`)."""
    max_frames, max_size = size_limits(profile)
    title = getattr(profile, "title", "this")
    if not 1 <= int(num_frames) <= max_frames:
        raise InputError(f"frames must be from 1 to {max_frames} on the {title} base, got {num_frames}")
    for name, value in (("width", width), ("height", height)):
        if not 8 <= int(value) <= max_size:
            raise InputError(f"{name} must be from 8 to {max_size} pixels on the {title} base, got {value}")


def check_video_spec(spec: VideoSpec, profile: Any | None) -> VideoSpec:
    check_shape(spec.num_frames, spec.height, spec.width, profile)
    if spec.stride > 64:
        raise InputError(f"frame stride must be from 1 to 64, got {spec.stride}")
    if not math.isfinite(spec.start_time):
        raise InputError(f"start time must be a finite number of seconds, got {spec.start_time}")
    return spec


def check_tune_config(config: TuneConfig) -> TuneConfig:
    if not 1 <= config.max_train_steps <= MAX_TRAIN_STEPS:
        raise InputError(f"tuning steps must be from 1 to {MAX_TRAIN_STEPS}, got {config.max_train_steps}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise InputError(f"learning rate must be a finite number above 0 (paper: 3e-5), got {config.learning_rate}")
    check_seed(config.seed)
    return config


def check_steps(steps: int, what: str = "sampling steps") -> int:
    if not 1 <= int(steps) <= MAX_SAMPLE_STEPS:
        raise InputError(f"{what} must be from 1 to {MAX_SAMPLE_STEPS}, got {steps}")
    return int(steps)


def check_sample_config(config: SampleConfig) -> SampleConfig:
    """Steps, guidance and seed within limits; a blank negative prompt means none."""
    if config.negative_prompt is not None and not str(config.negative_prompt).strip():
        config = dataclasses.replace(config, negative_prompt=None)
    check_steps(config.num_inference_steps)
    if not (math.isfinite(config.guidance_scale) and 0 <= config.guidance_scale <= MAX_GUIDANCE):
        raise InputError(f"guidance must be from 0 to {MAX_GUIDANCE:g}, got {config.guidance_scale}")
    if config.negative_prompt:
        check_prompts([config.negative_prompt], "negative prompt")
    check_seed(config.seed)
    return config


def check_invert_config(config: InvertConfig) -> InvertConfig:
    check_steps(config.num_inference_steps, "inversion steps")
    return config


# ------------------------------------------------------------------------------------------ paths
def _writable_parent(path: Path) -> Path:
    """The nearest existing folder at or above ``path``'s parent (what must be writable to create it)."""
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output_file(path: str | os.PathLike) -> Path:
    """An output file path that is not a folder and whose folder exists (or can be made) and is writable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output {path} is a folder, not a file path: choose another -o")
    return _check_writable(path)


def check_output_dir(path: str | os.PathLike) -> Path:
    """An output folder that is not a file and can be created or written to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output {path} is a file, not a folder: choose another -o")
    return _check_writable(path if path.is_dir() else path, folder=path.is_dir())


def _check_writable(path: Path, folder: bool = False) -> Path:
    probe = path if folder else _writable_parent(path)
    if not probe.is_dir():
        raise InputError(f"cannot write {path}: {probe} is a file, not a folder: choose another -o")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to {probe} (permission denied): choose another -o")
    return path


def make_dir(path: Path) -> Path:
    """``mkdir -p``, with a refusal the user can act on instead of an OSError (read-only or virtual file systems)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {path}: {exc.strerror or exc}: choose another -o") from exc
    return path


# ------------------------------------------------------------------------------------------ memory
def available_memory(device: str) -> tuple[int, str] | None:
    """``(bytes free for a job, what was measured)`` on ``device``, or None when it cannot be told."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free), "free GPU memory"
    try:  # MemAvailable counts reclaimable page cache; sysconf's free pages would undercount
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "free RAM"
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: int, device: str, what: str, already_loaded: int = 0) -> None:
    """Refuse a job whose estimated peak ``need`` bytes cannot fit ``device``.

    ``already_loaded``: bytes of that peak the process holds already (the engine's loaded weights), which
    count as available.
    """
    if os.environ.get("TUNEAVIDEO_MEMORY_CHECK", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    found = available_memory(device)
    if found is None:
        return
    free, label = found
    have = free + max(0, int(already_loaded))
    if need > have:
        from .costs import fmt_bytes

        raise InputError(
            f"{what} needs about {fmt_bytes(need)} of memory, but this device ({device}) has {fmt_bytes(have)} "
            f"({label}{' plus the loaded model' if already_loaded else ''}): use fewer frames, a smaller size or "
            "fewer prompts"
        )


# ------------------------------------------------------------------------------------------ model names
def _shipped_models() -> Path:
    from .profiles import MODELS_DIR

    return MODELS_DIR


def allowed_model_dirs(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """The folders a model name from the network may point into: the shipped models plus ``extra``."""
    roots = [_shipped_models(), *(Path(p).expanduser() for p in extra if str(p).strip())]
    return [r.resolve() for r in roots]


def model_not_allowed(name: str) -> InputError:
    """The one message for a model name that is neither a hub id nor under the allow-list.

    It names neither the path nor why: whether the path exists or holds a model must not show.
    """
    shown = name if _HUB_ID.match(name) else "that name"
    return InputError(
        f"control model {shown!r} is not available: use a hub id like 'lllyasviel/control_v11p_sd15_canny' that "
        "this server can load, or one of the listed models"
    )


def check_model_name(name: Any, allowed: Sequence[Path]) -> str:
    """A model name sent over the network: an allowed folder (returned resolved) or a hub id (returned as is).

    Hub ids are returned unchanged; :func:`is_network_hub_id` tells the caller to load them from the hub only.
    Anything else raises :func:`model_not_allowed`, whatever exists on the server.
    """
    text = str(name or "").strip()
    if not text or "\x00" in text or len(text) > 512:
        raise model_not_allowed("")
    if _HUB_ID.match(text) and ".." not in text:
        return text
    if text.startswith("~") or not os.path.isabs(text):
        raise model_not_allowed(text)
    resolved = Path(os.path.realpath(text))  # symlinks followed: a link out of the allow-list is refused
    for root in allowed:
        if resolved == root or root in resolved.parents:
            return str(resolved)
    raise model_not_allowed(text)


def is_network_hub_id(name: str) -> bool:
    """Whether a name that passed :func:`check_model_name` is a hub id (not a folder)."""
    return bool(_HUB_ID.match(name)) and not os.path.isabs(name)


__all__ = [
    "ABS_MAX_FRAMES", "ABS_MAX_SIZE", "CLIP_MAX_TOKENS", "MAX_SAMPLE_STEPS", "MAX_TRAIN_STEPS",
    "allowed_model_dirs", "available_memory", "check_invert_config", "check_memory", "check_model_name",
    "check_output_dir", "check_output_file", "make_dir", "check_prompt", "check_prompts", "check_sample_config",
    "check_seed", "check_shape", "check_steps", "check_tune_config", "check_video_spec", "count_tokens",
    "is_network_hub_id", "model_not_allowed", "prompt_warning", "size_limits",
]  # fmt: skip
