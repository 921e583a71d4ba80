"""Shared UI helpers: engine errors -> ``gr.Error``, progress events -> ``gr.Progress``, sessions, seeds."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr

from ..errors import Cancelled, InputError, MissingDependencyError, ModelLoadError, TuneAVideoError, VideoError
from ..progress import ProgressEvent
from ..workflow import fresh_seed

logger = logging.getLogger(__name__)

HEAVY = "gpu"  # concurrency_id shared by every event that runs the model (one model, one job at a time)
STAGES = {
    "tune": "Tuning",
    "invert": "DDIM inversion",
    "sample": "Sampling",
    "hints": "Extracting hints",
    "encode": "Encoding",
    "decode": "Decoding",
}
MAX_SEED = 2**31 - 1


def session_id(request: gr.Request | None) -> str:
    """The Gradio session hash (one per browser tab / API client); ``"local"`` outside a request."""
    sid = getattr(request, "session_hash", None) if request is not None else None
    return str(sid) if sid else "local"


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


class ProgressAdapter:
    """A :class:`~tuneavideo.progress.ProgressEvent` callback that drives a ``gr.Progress`` bar."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.last: ProgressEvent | None = None

    def __call__(self, event: ProgressEvent) -> None:
        self.last = event
        desc = f"{STAGES.get(event.stage, event.stage.title())} {event.step}/{event.total}"
        if event.extra.get("prompts", 1) > 1:
            desc += f" (prompt {event.extra['prompt']}/{event.extra['prompts']})"
        if event.loss is not None:
            desc += f" · loss {event.loss:.4f}"
        if 0 < event.step < event.total:
            desc += f" · ETA {fmt_seconds(event.eta)}"
        if self.progress is not None:
            self.progress((event.step, event.total), desc=desc, unit="steps")


@contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Re-raise engine errors as ``gr.Error`` with a message that says what to change.

    :class:`~tuneavideo.errors.Cancelled` passes through: callers turn it into a status line.
    """
    try:
        yield
    except (Cancelled, gr.Error):
        raise
    except VideoError as exc:
        raise gr.Error(f"{exc}", title="Video problem", print_exception=False) from exc
    except InputError as exc:
        raise gr.Error(str(exc), title="Please check the inputs", print_exception=False) from exc
    except MissingDependencyError as exc:
        raise gr.Error(str(exc), title="Missing package", print_exception=False) from exc
    except ModelLoadError as exc:
        raise gr.Error(str(exc), title="Model could not be loaded", print_exception=False) from exc
    except TuneAVideoError as exc:
        raise gr.Error(str(exc), title=f"Error while {action}") from exc
    except Exception as exc:
        import torch

        if isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower():
            raise gr.Error(
                f"Out of memory while {action}: use fewer frames or a smaller size, or turn on gradient "
                "checkpointing (Advanced).",
                title="Out of memory",
            ) from exc
        logger.exception("unexpected error while %s", action)
        raise gr.Error(f"Unexpected error while {action}: {type(exc).__name__}: {exc}", title="Error") from exc


def network_model(engine, name: str | None) -> str:
    """A control model named by an API caller: a hub id, or a folder under the engine's allow-list.

    Anything else, and a hub-id-shaped name that is also a path relative to the server's working folder,
    gets :func:`~tuneavideo.validation.model_not_allowed`'s one message (existence must not show).
    """
    from ..validation import check_model_name, is_network_hub_id, model_not_allowed

    checked = check_model_name(name, engine.allowed_model_dirs())
    if is_network_hub_id(checked) and Path(checked).exists():
        raise model_not_allowed(checked)
    return checked


def cancelled_text(exc: Cancelled, what: str) -> str:
    return f"**Cancelled** ({exc}). {what} The base model is unchanged; you can start again."


def resolve_seed(seed: float | int | None, randomize: bool = False) -> int:
    if randomize or seed is None or (isinstance(seed, float) and math.isnan(seed)) or int(seed) < 0:
        return fresh_seed() % (MAX_SEED + 1)
    return int(seed) % (MAX_SEED + 1)


def split_prompts(text: str | None) -> list[str]:
    """One prompt per line (blank lines ignored)."""
    return [line.strip() for line in str(text or "").splitlines() if line.strip()]
