"""Sessions of a long-running engine: ids, their tuned models, running jobs, cancel and release.

A session is one browser tab (or one script). It owns an output folder and a list of tuned models;
its jobs run inside :meth:`Sessions.job`, whose progress callback raises
:class:`~tuneavideo.errors.Cancelled` once :meth:`Sessions.cancel` was called, so a job stops at the
end of its current step. Releasing a session while a job runs defers the clean-up to that job's end.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Cancelled, InputError
from .progress import ProgressCallback, ProgressEvent
from .results import TunedModel

SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_session_id(session_id: object) -> str:
    """``session_id`` if it is a valid session id (1-64 letters, digits, '-' or '_'), else an :class:`InputError`."""
    if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
        raise InputError(f"invalid session id {session_id!r}: use 1-64 letters, digits, '-' or '_'")
    return session_id


@dataclass
class Session:
    id: str
    dir: Path  # its outputs; deleted when the session is released
    cancel: threading.Event = field(default_factory=threading.Event)
    models: dict[str, TunedModel] = field(default_factory=dict)  # insertion order = tuning order
    counter: int = 0
    active: int = 0
    released: bool = False

    def model(self, tune_key: str | None) -> TunedModel:
        """One of this session's models, or an :class:`InputError` that says why not."""
        if not tune_key:
            raise InputError("No tuned model selected: tune one first (or load saved tuned weights).")
        model = self.models.get(str(tune_key))
        if model is None:
            raise InputError(
                f"Tuned model {str(tune_key)[:8]!r} is not known in this session (sessions cannot use each other's "
                "models, and a page reload starts a new session): tune again or load the saved weights."
            )
        return model


class Sessions:
    """Thread-safe registry of sessions; ``forget(session_id)`` frees what others hold for a released one."""

    def __init__(self, root: Path, forget: Callable[[str], int]) -> None:
        self.root = root
        self._forget = forget
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def get(self, session_id: str) -> Session:
        """The session ``session_id`` (a new one when unknown or released)."""
        check_session_id(session_id)
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or s.released:
                s = self._sessions[session_id] = Session(session_id, self.root / session_id)
            return s

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def live(self) -> list[Session]:
        """A snapshot of the live sessions."""
        with self._lock:
            return list(self._sessions.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def cancel(self, session_id: str) -> bool:
        """Ask the session's running job to stop after its current step; True if one was running."""
        s = self.get(session_id)
        s.cancel.set()
        return s.active > 0

    def wait_idle(self, session_id: str, timeout: float = 60.0) -> bool:
        """Wait until the session runs no job (or ``timeout`` seconds pass); True when it is idle."""
        deadline = time.monotonic() + max(0.0, float(timeout))
        while True:
            with self._lock:
                s = self._sessions.get(session_id)
                if s is None or s.active == 0:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def release(self, session_id: str) -> int:
        """Forget a session (cancelling its job first); returns what ``forget`` freed. Unknown ids are ignored."""
        if not isinstance(session_id, str) or not SESSION_ID.match(session_id):
            return 0
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return 0
            s.released, busy = True, s.active > 0
            s.cancel.set()
            if not busy:
                del self._sessions[session_id]
        freed = self._forget(session_id)
        if not busy:  # else the running job cleans up when it ends
            shutil.rmtree(s.dir, ignore_errors=True)
        return freed

    @contextmanager
    def job(self, session_id: str, progress: ProgressCallback | None) -> Iterator[tuple[Session, ProgressCallback]]:
        """Run one job of a session: yields the session and the job's cancel-aware progress callback."""
        s = self.get(session_id)
        s.cancel.clear()
        with self._lock:
            s.active += 1

        def callback(event: ProgressEvent) -> None:
            if s.cancel.is_set():
                raise Cancelled(f"cancelled after {event.stage} step {event.step}/{event.total}")
            if progress is not None:
                progress(event)

        try:
            yield s, callback
        finally:
            with self._lock:
                s.active -= 1
                cleanup = s.released and s.active == 0
                if cleanup and self._sessions.get(s.id) is s:
                    del self._sessions[s.id]
            if cleanup:
                self._forget(s.id)
                shutil.rmtree(s.dir, ignore_errors=True)

    def job_dir(self, s: Session, kind: str) -> Path:
        """A fresh output folder of the session: ``NNN-<kind>-<random>``."""
        with self._lock:
            s.counter += 1
            n = s.counter
        folder = s.dir / f"{n:03d}-{kind}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
