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


_LAST_ERRORS: dict[str, str] = {}  # session -> message of its last failed request (shown next to the button)


@contextmanager
def engine_errors(action: str, request: gr.Request | None = None) -> Iterator[None]:
    """Re-raise engine errors as ``gr.Error`` with a message that says what to change.

    :class:`~tuneavideo.errors.Cancelled` passes through: callers turn it into a status line. With
    ``request``, the message is also kept for :func:`take_error` (the note beside the pressed button).
    """
    try:
        with _translated(action):
            yield
    except gr.Error as exc:
        if request is not None:
            _LAST_ERRORS[session_id(request)] = str(exc.message)
        raise


def take_error(request: gr.Request) -> dict[str, Any]:
    """An update showing the session's last error message beside the button (and forgetting it)."""
    message = _LAST_ERRORS.pop(session_id(request), "The request failed (see the message at the top right).")
    return gr.update(value=f"**Could not run:** {message}", visible=True)


def forget_errors(request: gr.Request | None) -> None:
    _LAST_ERRORS.pop(session_id(request), None)


@contextmanager
def _translated(action: str) -> Iterator[None]:
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


def model_dropdown(**kwargs: Any) -> gr.Dropdown:
    """The tuned-model dropdown: a plain string (a tune key) in the API, whose choices change per session.

    Gradio would list the choices at start-up (none yet) as ``Literal[]``; scripts get them from ``/models``.
    (An instance override, not a subclass: Gradio writes a ``.pyi`` stub beside every Component subclass.)
    """
    dropdown = gr.Dropdown(choices=[], value=None, allow_custom_value=True, **kwargs)
    dropdown.api_info = lambda: {  # type: ignore[method-assign]
        "type": "string",
        "description": "a tune_key from /models (empty: the session's latest model)",
    }
    return dropdown


def error_note(elem_id: str) -> gr.Markdown:
    """The hidden note beside a button that says why its last request failed."""
    return gr.Markdown(visible=False, elem_id=elem_id, elem_classes=["error-note"])


def progress_box(elem_id: str) -> gr.Markdown:
    """The one place of a tab where a running job shows its progress (above the results)."""
    return gr.Markdown("", elem_id=elem_id, label="Progress", min_height=40)


def wire_job(
    button: gr.Button,
    fn: Any,
    inputs: list[Any],
    outputs: list[Any],
    api_name: str,
    progress: gr.Markdown,
    note: gr.Markdown,
    cancels: list[gr.Button],
) -> Any:
    """``button`` runs ``fn`` on the model queue: the note is cleared, Cancel enabled while it runs, progress shown
    on ``progress`` only (the inputs and earlier results stay as they are), the error shown in ``note``.

    Returns the job's event (for ``cancels=`` and ``.success``).
    """

    def busy(request: gr.Request) -> tuple:
        forget_errors(request)
        return (gr.update(value="", visible=False), *[gr.update(interactive=True) for _ in cancels])

    def idle() -> Any:
        updates = tuple(gr.update(interactive=False) for _ in cancels)
        return updates[0] if len(updates) == 1 else updates  # one output takes a bare value

    start = button.click(busy, None, [note, *cancels], queue=False, api_visibility="private", show_progress="hidden")
    job = start.then(fn, inputs, outputs, api_name=api_name, concurrency_id=HEAVY, show_progress_on=[progress])
    job.then(idle, None, cancels, queue=False, api_visibility="private", show_progress="hidden")

    def failed(request: gr.Request) -> tuple:
        return (take_error(request), *[gr.update(interactive=False) for _ in cancels])

    # a failed job runs no .then() listeners in Gradio 6: the failure handler also greys Cancel out
    job.failure(failed, None, [note, *cancels], queue=False, api_visibility="private", show_progress="hidden")
    return job


def cancel_button(elem_id: str) -> gr.Button:
    """A Cancel button, enabled only while a job of this tab runs (see :func:`wire_job`)."""
    return gr.Button("Cancel", variant="stop", interactive=False, elem_id=elem_id)


CANCELLING = "Cancelling at the end of the current step…"


def wire_cancel(
    cancel: gr.Button, engine: Any, status: gr.Markdown, jobs: list[Any], stopped: str, **click: Any
) -> None:
    """Cancel stops this session's running job (or drops its queued one) and, once the job has ended, says so.

    Gradio's ``cancels=`` drops the cancelled event's own reply, so without the follow-up the status would stay
    at "Cancelling…": the follow-up waits for the engine to finish the job's current step, then shows ``stopped``.
    """

    def cancel_job(request: gr.Request) -> str:
        """Stop this session's running job at the end of its current step."""
        return CANCELLING if engine.cancel(session_id(request)) else "Nothing is running."

    def settle(text: str, request: gr.Request) -> Any:
        if text != CANCELLING:
            return gr.skip()
        idle = engine.wait_idle(session_id(request), timeout=120)
        return f"**Cancelled.** {stopped} The base model is unchanged; you can start again." if idle else gr.skip()

    disable_on_click(cancel)
    event = cancel.click(cancel_job, None, status, queue=False, cancels=jobs, **click)
    event.then(settle, status, status, queue=False, api_visibility="private", show_progress="hidden")


def disable_on_click(cancel: gr.Button) -> None:
    """Cancel greys itself out once pressed (the cancelled job's own follow-ups do not run)."""
    cancel.click(lambda: gr.update(interactive=False), None, cancel, queue=False, api_visibility="private",
                 show_progress="hidden")  # fmt: skip
