"""``ArtifactCache``: a byte-bounded LRU of engine artifacts, keyed by content, with per-session references.

Keys are content hashes (file bytes + frozen configs + base model), so two sessions that ask for the
same thing share one entry. Each entry records which sessions hold it; :meth:`ArtifactCache.release`
drops a session's references and frees every entry no session holds any more. When the bytes in
memory exceed the budget, least-recently-used entries that no running job has pinned are evicted;
kinds with a registered spill function (tuned weights) go to disk instead and come back on the next
``get``. Thread-safe.
"""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch


def nbytes_of(value: Any) -> int:
    """Bytes held by tensors/arrays inside ``value`` (dataclasses, dicts, lists, tuples are walked)."""
    if value is None:
        return 0
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if hasattr(value, "nbytes") and not isinstance(value, (bytes, bytearray)) and not is_dataclass(value):
        return int(value.nbytes)
    if is_dataclass(value):
        return sum(nbytes_of(getattr(value, f.name)) for f in fields(value))
    if isinstance(value, dict):
        return sum(nbytes_of(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes_of(v) for v in value)
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 0


@dataclass
class _Entry:
    key: str
    kind: str
    value: Any  # None while spilled to disk
    nbytes: int
    sessions: set[str] = field(default_factory=set)
    pins: int = 0
    spill_path: Path | None = None

    @property
    def in_memory(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class Spiller:
    """How to move one kind of artifact to disk and back."""

    save: Callable[[Any, Path], None]  # (value, folder)
    load: Callable[[Path], Any]  # (folder) -> value
    persistent: bool = False  # the folder outlives the entry (e.g. a run store): never deleted here


class ArtifactCache:
    """Byte-bounded LRU keyed by content hashes, with session references and pinning."""

    def __init__(self, max_bytes: int, spill_dir: str | Path | None = None) -> None:
        self.max_bytes = int(max_bytes)
        self.spill_dir = Path(spill_dir) if spill_dir else None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._spillers: dict[str, Spiller] = {}
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.spills = 0
        self.reloads = 0

    # ------------------------------------------------------------------ configuration
    def register_spill(
        self, kind: str, save: Callable[[Any, Path], None], load: Callable[[Path], Any], persistent: bool = False
    ) -> None:
        """Spill ``kind`` to ``spill_dir / key`` instead of dropping it when over budget.

        ``persistent``: the folder is kept when the entry goes (its owner, e.g. a run store, manages it).
        """
        self._spillers[kind] = Spiller(save, load, persistent)

    # ------------------------------------------------------------------ lookups
    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: str, session: str | None = None) -> Any | None:
        """The value for ``key`` (reloaded from disk if spilled) or None; counts a hit or a miss.

        A hit also adds ``session``'s reference, so the entry lives until that session releases it.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            if session is not None:
                entry.sessions.add(session)
            if not entry.in_memory:
                entry.value = self._spillers[entry.kind].load(entry.spill_path)  # type: ignore[arg-type]
                self.reloads += 1
                entry.pins += 1  # keep it in memory while making room for it
                try:
                    self._enforce()
                finally:
                    entry.pins -= 1
            return entry.value

    def peek(self, key: str) -> Any | None:
        """The in-memory value for ``key`` without counting, reloading or touching the LRU order."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.value if entry is not None else None

    def put(
        self, key: str, value: Any, kind: str = "artifact", session: str | None = None, nbytes: int | None = None
    ) -> Any:
        """Store ``value`` (replacing any old value), referenced by ``session``; evicts to stay in budget."""
        if value is None:
            raise ValueError("cannot cache None")
        with self._lock:
            size = nbytes_of(value) if nbytes is None else int(nbytes)
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry(key, kind, value, size)
            else:  # update in place: pins and references held on this entry stay valid
                self._remove_spill(entry)
                entry.kind, entry.value, entry.nbytes = kind, value, size
                self._entries.move_to_end(key)
            if session is not None:
                entry.sessions.add(session)
            entry.pins += 1  # a just-made artifact is not evicted by its own insertion
            try:
                self._enforce()
            finally:
                entry.pins -= 1
            return value

    def add_ref(self, key: str, session: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                entry.sessions.add(session)
            return entry is not None

    def keys(self, session: str | None = None) -> list[str]:
        with self._lock:
            return [k for k, e in self._entries.items() if session is None or session in e.sessions]

    # ------------------------------------------------------------------ pinning, release
    @contextmanager
    def pin(self, *keys: str) -> Iterator[None]:
        """Keep ``keys`` from being evicted while a job uses them (missing keys are ignored)."""
        with self._lock:
            pinned = [self._entries[k] for k in keys if k in self._entries]
            for entry in pinned:
                entry.pins += 1
        try:
            yield
        finally:
            with self._lock:
                for entry in pinned:
                    entry.pins -= 1
                for entry in pinned:
                    if not entry.sessions and entry.pins == 0 and self._entries.get(entry.key) is entry:
                        self._delete(entry)
                self._enforce()

    def release(self, session: str) -> int:
        """Drop ``session``'s references; free entries that no session holds any more. Returns bytes freed."""
        freed = 0
        with self._lock:
            for entry in list(self._entries.values()):
                if session in entry.sessions:
                    entry.sessions.discard(session)
                    if not entry.sessions and entry.pins == 0:
                        freed += entry.nbytes if entry.in_memory else 0
                        self._delete(entry)
        return freed

    def discard(self, key: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._delete(entry)

    def clear(self) -> None:
        with self._lock:
            for entry in list(self._entries.values()):
                self._delete(entry)

    # ------------------------------------------------------------------ accounting
    @property
    def nbytes(self) -> int:
        """Bytes held in memory (spilled entries are not counted)."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values() if e.in_memory)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            kinds: dict[str, int] = {}
            for e in self._entries.values():
                kinds[e.kind] = kinds.get(e.kind, 0) + 1
            return {
                "hits": self.hits,
                "misses": self.misses,
                "bytes": self.nbytes,
                "max_bytes": self.max_bytes,
                "entries": len(self._entries),
                "spilled_entries": sum(1 for e in self._entries.values() if not e.in_memory),
                "spilled_bytes": sum(e.nbytes for e in self._entries.values() if not e.in_memory),
                "evictions": self.evictions,
                "spills": self.spills,
                "reloads": self.reloads,
                "kinds": kinds,
            }

    # ------------------------------------------------------------------ internals (lock held)
    def _enforce(self) -> None:
        total = sum(e.nbytes for e in self._entries.values() if e.in_memory)
        if total <= self.max_bytes:
            return
        for entry in list(self._entries.values()):  # oldest first
            if total <= self.max_bytes:
                break
            if entry.pins or not entry.in_memory:
                continue
            total -= entry.nbytes
            if self.spill_dir is not None and entry.kind in self._spillers:
                if entry.spill_path is None:  # a reloaded entry keeps its disk copy: no second write
                    folder = self.spill_dir / entry.key
                    self._spillers[entry.kind].save(entry.value, folder)
                    entry.spill_path = folder
                entry.value = None
                self.spills += 1
            else:
                self._delete(entry)
                self.evictions += 1

    def _delete(self, entry: _Entry) -> None:
        self._entries.pop(entry.key, None)
        self._remove_spill(entry)
        entry.value = None

    def _remove_spill(self, entry: _Entry) -> None:
        if entry.spill_path is not None:
            spiller = self._spillers.get(entry.kind)
            if spiller is None or not spiller.persistent:
                shutil.rmtree(entry.spill_path, ignore_errors=True)
            entry.spill_path = None
