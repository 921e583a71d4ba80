"""One disk budget for what a long-running app writes: stored runs, session outputs and uploads.

The oldest go first, but never what is in use: the runs a live session holds or the cache keeps (also
those of the other engines on the same store, when ``held_elsewhere`` says which), a busy session's outputs, each session's newest output of every kind, a run or upload written in the last
minutes (it may belong to a job in flight). ``/stats`` reports the usage; a full budget refuses new work.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cache import ArtifactCache
from .errors import InputError
from .sessions import Sessions
from .store import RunStore

RECENT_RUN_SECONDS = 600  # a run written this recently may belong to a job in flight
RECENT_UPLOAD_SECONDS = 3600


def mtime_of(path: Path) -> float | None:
    """Modification time, or ``None`` for what vanished since it was listed (uploads and runs come and go)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (0 for what vanished meanwhile)."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    except OSError:
        return 0


class DiskBudget:
    """``budget()`` bytes (0: no limit) over the run store, the sessions' outputs and ``upload_dir``.

    The budget is read on every use (a callable), so a change of the engine's settings applies at once.
    """

    def __init__(self, budget: Callable[[], int], store: RunStore, sessions: Sessions, cache: ArtifactCache) -> None:
        self._budget = budget
        self.store, self.sessions, self.cache = store, sessions, cache
        self.upload_dir: Path | None = None  # where the app's uploads land (set by the UI)
        self.held_elsewhere: Callable[[], set[str]] | None = None  # runs other engines on the same store hold
        self.evictions = 0
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        return int(self._budget())

    def _items(self) -> list[tuple[float, int, Path, bool]]:
        """``(mtime, bytes, path, evictable)`` of every run folder, session output folder and upload."""
        items: list[tuple[float, int, Path, bool]] = []
        live = self.sessions.live()
        held = self.held() | (self.held_elsewhere() if self.held_elsewhere is not None else set())
        recent = time.time() - RECENT_RUN_SECONDS
        # Anything listed may vanish before it is looked at (a run replaced, a session released, an upload
        # moved by Gradio): such entries are skipped, never an error for the job that asked.
        for key in self.store.keys():
            path = self.store.path(key)
            if (mtime := mtime_of(path)) is not None:
                items.append((mtime, tree_bytes(path), path, key not in held and mtime < recent))
        for s in live:
            folders = sorted(p for p in s.dir.glob("*") if p.is_dir()) if s.dir.is_dir() else []
            newest: dict[str, Path] = {}
            for folder in folders:  # NNN-<kind>-<random>: the last of each kind is what the page shows
                newest[folder.name.split("-")[1] if "-" in folder.name else ""] = folder
            for folder in folders:
                keep = s.active > 0 or folder in newest.values()
                if (mtime := mtime_of(folder)) is not None:
                    items.append((mtime, tree_bytes(folder), folder, not keep))
        if self.upload_dir is not None and self.upload_dir.is_dir():
            for entry in self.upload_dir.iterdir():
                if (mtime := mtime_of(entry)) is not None:
                    items.append((mtime, tree_bytes(entry), entry, mtime < time.time() - RECENT_UPLOAD_SECONDS))
        return items

    def held(self) -> set[str]:
        """Keys of the stored runs this engine holds: its live sessions' models and what its cache keeps."""
        return {key for s in self.sessions.live() for key in s.models} | set(self.cache.keys())

    def usage(self) -> dict[str, Any]:
        items = self._items()
        store = self.store.root.resolve()
        runs = sum(n for _, n, p, _ in items if store in p.resolve().parents)
        uploads = sum(n for _, n, p, _ in items if self.upload_dir is not None and self.upload_dir in p.parents)
        used = sum(n for _, n, _, _ in items)
        return {"budget_bytes": self.budget, "used_bytes": used, "runs_bytes": runs, "uploads_bytes": uploads,
                "outputs_bytes": used - runs - uploads, "evictions": self.evictions}  # fmt: skip

    def enforce(self) -> int:
        """Delete the oldest evictable items until the budget holds; returns the bytes freed."""
        budget = self.budget
        if budget <= 0:
            return 0
        freed = 0
        with self._lock:
            items = sorted(self._items(), key=lambda item: item[0])
            used = sum(n for _, n, _, _ in items)
            for _, nbytes, path, evictable in items:
                if used <= budget:
                    break
                if not evictable:
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                used -= nbytes
                freed += nbytes
                self.evictions += 1
        return freed

    def check(self) -> None:
        """Refuse new work while the budget is exhausted by what live sessions and jobs hold."""
        if self.budget <= 0:
            return
        self.enforce()
        usage = self.usage()
        if usage["used_bytes"] > self.budget:
            from .costs import fmt_bytes

            raise InputError(
                f"The server's disk budget is full ({fmt_bytes(usage['used_bytes'])} of {fmt_bytes(self.budget)} "
                "used by tuned runs, uploads and outputs that are in use): try again later."
            )
