"""The app on N GPUs: :class:`EnginePool`, one :class:`~tuneavideo.engine.Engine` per GPU in a Ray actor.

``open_engine(settings)`` is what ``app.py`` calls: with one worker (the default on a one-GPU or CPU
machine) it is the plain in-process :class:`Engine`, and Ray is never imported; with more (``--workers N``,
or ``auto`` on a machine with several GPUs) it is an :class:`EnginePool`, which answers every call the
UI makes of an engine:

* **Workers.** Each worker is a Ray actor holding one ``Engine`` on one device: ``num_gpus=1`` on CUDA,
  so Ray pins it to its own GPU through ``CUDA_VISIBLE_DEVICES`` (it sees it as ``cuda:0``);
  ``num_cpus=1`` on CPU. Every worker shares the run store under the cache dir (atomic writes), so a
  model tuned on one worker is found by the others; its outputs go to ``<output root>/worker-<i>``. Each
  worker lists the runs its sessions and cache hold in ``<store>/.held/``, so that no worker's disk budget
  deletes a run another worker's session still uses.
* **Routing.** A session lives on one worker (sticky): its tuned models, cached clips, inversions and
  outputs are there. A new session goes to the least busy worker (fewest jobs running, then fewest
  sessions). A session whose worker is busy with another session's job, when another worker is idle,
  moves there before its next job if every model it holds is in the shared store (it is adopted on the
  new worker and released on the old one); else it waits for its worker as before.
* **Progress and cancel.** Actors are threaded (``max_concurrency``): a job runs in one actor thread while
  the pool, in the caller's thread, polls the worker for the job's progress events every
  ``POLL_SECONDS`` and hands them to the caller's callback (the Gradio progress bar), and ``cancel``
  reaches the session's worker in another thread, so a job stops after its current step as in process.
  A callback that raises cancels the job and its exception is re-raised once the worker stopped.
* **Errors.** A worker returns failures as values; the pool raises the same exception class with the
  same message (``InputError``, ``VideoError``, ``Cancelled``, ``MissingDependencyError``, ...), the
  worker's traceback as its ``__cause__``. A worker that died is a :class:`WorkerLost` error; its
  sessions start over on the remaining workers, and a fresh worker is started in its place in the
  background (up to ``RESTARTS`` times per worker), joining the pool once its engine has loaded.
* **Files.** Results carry paths (outputs, downloads, run folders) on the filesystem of the machine the
  worker runs on: the pool is for the workers of **one host** (its GPUs), or a cluster whose nodes share
  the output and cache folders at the same paths.

Without Gradio, from several threads (one job per worker at a time)::

    from concurrent.futures import ThreadPoolExecutor
    from tuneavideo.settings import Settings
    from tuneavideo.workers import EnginePool

    with EnginePool(Settings(model="stable-diffusion-v1-5/stable-diffusion-v1-5"), workers=2) as pool:
        with ThreadPoolExecutor(2) as run:
            jobs = [run.submit(pool.tune, f"s{i}", clip, prompt, spec, config) for i, clip in enumerate(clips)]
            results = [j.result() for j in jobs]
        print(pool.stats()["workers"])  # per worker: device, jobs with start/end times, cache counters
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import logging
import os
import pickle
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .engine import Engine
from .errors import InputError, TuneAVideoError
from .progress import ProgressCallback, ProgressEvent
from .rayutil import cluster_cpus, cluster_gpus, connect, import_ray, ray_installed
from .sessions import check_session_id
from .settings import Settings
from .store import write_json

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a running job's progress is fetched from its worker
MAX_CALLS = 32  # concurrent calls per worker: its jobs (they queue on the model lock), polls, cancels, stats
RECENT_JOBS = 50  # jobs kept per worker for /stats
RESTARTS = 3  # times a dead worker is replaced; one that keeps dying (a failing GPU, say) then stays down
RESTART_TIMEOUT = 900  # seconds a replacement may take to load its engine
FEATURE = "the app on several engine workers (--workers)"


# ------------------------------------------------------------------------------------------ choosing
def gpu_count() -> int:
    """CUDA GPUs this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_count(settings: Settings) -> int:
    """Workers ``settings`` ask for: ``--workers N``, or ``auto`` (0): one per visible CUDA GPU when there are
    several and Ray is installed, else 1. Returns 0 for ``auto`` with ``--ray-address`` (the cluster's GPUs)."""
    if settings.workers > 0:
        return settings.workers
    if settings.ray_address:
        return 0
    if settings.device not in ("auto", "cuda"):  # cpu, mps, or one chosen GPU (cuda:N)
        return 1
    gpus = gpu_count()
    return gpus if gpus > 1 and ray_installed() else 1


def open_engine(settings: Settings) -> Engine | EnginePool:
    """The app's engine: a plain :class:`Engine` for one worker (no Ray), else an :class:`EnginePool`."""
    settings = settings.resolve()
    count = worker_count(settings)
    if count == 1 and not settings.ray_address:
        return Engine(settings)
    return EnginePool(settings, workers=count or None)


def job_slots(engine: Any) -> int:
    """How many model jobs may run at once (the Gradio queue's concurrency): the number of workers."""
    return engine.size if isinstance(engine, EnginePool) else 1


# ------------------------------------------------------------------------------------------ errors
class WorkerLost(TuneAVideoError):
    """An engine worker stopped (its process died); its sessions start over on the other workers."""


class RemoteTraceback(Exception):
    """The worker's traceback of an error, attached as the re-raised error's ``__cause__``."""


@dataclasses.dataclass(frozen=True)
class Failure:
    """An exception as a picklable value: its class by name, ``args``, plain attributes and traceback."""

    module: str
    name: str
    args: tuple
    state: dict
    message: str
    trace: str

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        args = exc.args if _picklable(exc.args) else (str(exc),)
        state = {k: v for k, v in vars(exc).items() if _picklable(v)}
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__module__, type(exc).__qualname__, args, state, str(exc), trace)

    def exception(self) -> BaseException:
        """The same exception class with the same message (a :class:`TuneAVideoError` if it cannot be rebuilt)."""
        try:
            found: Any = importlib.import_module(self.module)
            for part in self.name.split("."):
                found = getattr(found, part)
            if not (isinstance(found, type) and issubclass(found, BaseException)):
                raise TypeError(self.name)
            exc = found.__new__(found)
            exc.args = self.args
            exc.__dict__.update(self.state)
        except Exception:
            exc = TuneAVideoError(f"{self.name}: {self.message}")
        exc.__cause__ = RemoteTraceback(self.trace)
        return exc


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


def session_tag(salt: str, session_id: str) -> str:
    """What ``/stats`` shows of a session: a salted digest (a session id is a key to that session's work)."""
    return hashlib.sha256(f"{salt}:{session_id}".encode()).hexdigest()[:12]


def held_folder(store_root: Path, salt: str) -> Path:
    """Where a pool's workers list the stored runs they hold (a dot folder: not a run, not in the budget)."""
    return Path(store_root) / ".held" / (salt or "default")


def _reply(fn: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", value)`` or ``("error", Failure)``: what a worker sends back instead of raising."""
    try:
        return "ok", fn()
    except Exception as exc:
        return "error", Failure.of(exc)


def _value(reply: tuple[str, Any]) -> Any:
    status, value = reply
    if status == "error":
        raise value.exception()
    return value


# ------------------------------------------------------------------------------------------ the worker
class EngineWorker:
    """The body of one Ray actor: an :class:`Engine`, its running jobs' progress events and a job log.

    Threaded (the pool creates it with ``max_concurrency``): jobs, polls, cancels and stats run at once;
    the engine is thread-safe (one job on the model at a time, on its model lock).
    """

    def __init__(self, index: int, settings: Settings, salt: str = "") -> None:
        self.index, self.salt = index, salt
        self.engine: Engine | None = None
        self.failure: Failure | None = None
        self._lock = threading.Lock()
        self._events: dict[str, deque[ProgressEvent]] = {}
        self._jobs: deque[dict[str, Any]] = deque(maxlen=RECENT_JOBS)
        self._running = 0
        self._done = 0
        try:
            self.engine = Engine(settings)
        except Exception as exc:  # reported by ready(): the pool raises it as the app's start-up error
            self.failure = Failure.of(exc)
            return
        self._held = held_folder(self.engine.store.root, salt)
        self.engine.disk.held_elsewhere = self._held_elsewhere

    def ready(self) -> tuple[str, Any]:
        """``("ok", {describe, profile, pid, gpus})`` once the engine is loaded, or its start-up error."""
        if self.failure is not None:
            return "error", self.failure
        engine = self.engine
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        return "ok", {"describe": engine.describe(), "profile": engine.profile, "pid": os.getpid(), "gpus": gpus}

    def call(self, name: str, kwargs: dict[str, Any]) -> tuple[str, Any]:
        """A quick engine call (no progress, not logged)."""
        reply = _reply(lambda: self._method(name)(**kwargs))
        if name in ("adopt", "release"):
            self._share_held()
        return reply

    def run(self, job: str, name: str, kwargs: dict[str, Any], with_progress: bool) -> tuple[str, Any]:
        """A model job: progress events are kept for :meth:`events`, its interval for :meth:`stats`."""
        tag = session_tag(self.salt, str(kwargs.get("session_id")))
        entry = {"job": job[:12], "kind": name, "session": tag, "started": time.time()}
        with self._lock:
            self._running += 1
            self._jobs.append(entry)
            if with_progress:
                events = self._events[job] = deque(maxlen=1000)  # the pool polls them every POLL_SECONDS
        if with_progress:
            kwargs = {**kwargs, "progress": events.append}
        reply = _reply(lambda: self._method(name)(**kwargs))
        with self._lock:
            self._running -= 1
            self._done += 1
            failure = reply[1] if reply[0] == "error" else None
            status = "done" if failure is None else "cancelled" if failure.name == "Cancelled" else "failed"
            entry.update(ended=time.time(), status=status)
        self._share_held()
        return reply

    def events(self, job: str, last: bool = False) -> list[ProgressEvent]:
        """The job's progress events since the previous poll (``last``: the final poll, which forgets the job)."""
        with self._lock:
            found = self._events.pop(job, None) if last else self._events.get(job)
            if found is None:
                return []
            events = list(found)
            found.clear()
            return events

    def set_upload_dir(self, path: str | None) -> None:
        self.engine.disk.upload_dir = Path(path) if path else None

    def stats(self) -> dict[str, Any]:
        """The engine's stats, plus this worker's device, process and recent jobs (kind, session tag, start and end
        times, status)."""
        with self._lock:
            jobs = [dict(j) for j in self._jobs]
            running, done = self._running, self._done
        return {"worker": self.index, "device": str(self.engine.device), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "pid": os.getpid(), "running": running, "jobs_done": done, "jobs": jobs,
                **self.engine.stats()}  # fmt: skip

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self._share_held()

    def _share_held(self) -> None:
        """Write the keys of the stored runs this worker holds where the other workers' disk budgets read them."""
        with contextlib.suppress(OSError, ValueError):
            write_json(self._held / f"worker-{self.index}.json", sorted(self.engine.disk.held()))

    def _held_elsewhere(self) -> set[str]:
        keys: set[str] = set()
        for path in self._held.glob("worker-*.json"):
            if path.name != f"worker-{self.index}.json":
                with contextlib.suppress(OSError, ValueError):
                    keys.update(str(k) for k in json.loads(path.read_text()))
        return keys

    def _method(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(Engine, name, None)):
            raise AttributeError(f"Engine has no method {name!r}")
        return getattr(self.engine, name)


# ------------------------------------------------------------------------------------------ the pool
def _session_method(name: str, job: bool = False) -> Callable[..., Any]:
    """A pool method with :class:`Engine`'s signature, run on the session's worker (``job``: a model job)."""

    @functools.wraps(getattr(Engine, name))
    def method(self: EnginePool, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(getattr(Engine, name)).bind(self, *args, **kwargs)
        call = {k: v for k, v in bound.arguments.items() if k != "self"}
        progress = call.pop("progress", None)
        session_id = check_session_id(call["session_id"])
        if job:
            return self._job(session_id, name, call, progress)
        return self._ask(self._home(session_id), name, call)

    return method


class EnginePool:
    """``workers`` :class:`Engine` s in Ray actors behind the interface the app uses (see the module docs).

    ``workers=None``: ``settings.workers``, or when that is ``auto`` one per GPU Ray sees (at least 1). On
    CUDA each worker takes one GPU; with ``settings.device == "cpu"`` each takes one CPU (a local Ray is
    started with at least ``workers`` CPUs).
    ``address`` (default ``settings.ray_address``) joins a running Ray instead of starting one.
    Close it (or use it as a context manager): :meth:`close` releases every session and stops the workers.
    """

    def __init__(self, settings: Settings, workers: int | None = None, *, address: str | None = None) -> None:
        ray = self._ray = import_ray(FEATURE)
        self.settings = settings.resolve()
        workers = workers or self.settings.workers or None
        self.size = 0
        self._actors: list[Any] = []
        self._started_ray = False
        self._own_output = not self.settings.output_dir
        self.output_root = Path(self.settings.output_dir or tempfile.mkdtemp(prefix="tuneavideo-out-")).resolve()
        self._lock = threading.Lock()
        self._moving: dict[str, threading.Lock] = {}
        self._homes: dict[str, int] = {}
        self._running: list[int] = []
        self._session_jobs: dict[str, int] = {}
        self._alive: set[int] = set()
        self._restarts: list[int] = []  # per worker: replacements started so far
        self._replacing: set[int] = set()  # workers whose replacement is loading
        self._loading: dict[int, Any] = {}  # those replacements' actors: close() stops them first
        self._restart_threads: list[threading.Thread] = []
        self._closing = False
        self._salt = uuid.uuid4().hex
        try:
            gpu = self.settings.device.startswith("cuda")
            if not gpu and self.settings.device != "cpu":
                raise InputError(f"engine workers run on CUDA GPUs or on CPUs, not on {self.settings.device!r}")
            cpus = max(workers or 1, os.cpu_count() or 1)  # a local Ray gets a slot for every CPU worker
            self._started_ray = connect(ray, address or self.settings.ray_address, cpus)
            count = self._count(workers, gpu)
            self._start(count, gpu)
        except BaseException:
            self.close()
            raise
        from .store import RunStore

        self.store = RunStore(Path(self.settings.cache_dir) / "runs")  # shared by every worker (and the UI's secret)
        self.disk = _PoolDisk(self)

    def _count(self, workers: int | None, gpu: bool) -> int:
        ray = self._ray
        have = cluster_gpus(ray) if gpu else cluster_cpus(ray)
        count = workers or (max(1, have) if gpu else 1)
        if count > have:
            unit = "GPU" if gpu else "CPU"
            raise TuneAVideoError(
                f"{count} engine workers need one {unit} each, but Ray sees {have}: use --workers {max(have, 1)}"
                + (" or --device cpu" if gpu else "")
            )
        return count

    def _new_actor(self, index: int) -> Any:
        """A worker actor (not yet loaded) for slot ``index``: its own GPU or CPU, its own output folder."""
        options = {"num_gpus": 1 if self._gpu else 0, "num_cpus": 1, "max_concurrency": MAX_CALLS}
        folder = self.output_root / f"worker-{index}"
        own = dataclasses.replace(self.settings, output_dir=str(folder), device="cuda" if self._gpu else "cpu")
        return self._ray.remote(EngineWorker).options(**options).remote(index, own, self._salt)

    def _start(self, count: int, gpu: bool) -> None:
        """Start ``count`` actors and wait until each has loaded its engine (in parallel)."""
        ray = self._ray
        self._gpu = gpu
        started = time.perf_counter()
        self._actors = [self._new_actor(i) for i in range(count)]
        self.size = count
        self._running = [0] * count
        self._restarts = [0] * count
        try:
            replies = ray.get([a.ready.remote() for a in self._actors])
        except ray.exceptions.RayError as exc:  # a worker process that could not even start
            raise TuneAVideoError(f"an engine worker could not start: {type(exc).__name__}: {exc}") from exc
        infos = [_value(reply) for reply in replies]
        self._alive = set(range(count))
        self._info = infos
        self.profile = infos[0]["profile"]
        self.load_seconds = time.perf_counter() - started
        where = ", ".join(f"{i}: pid {x['pid']}" + (f" GPU {x['gpus']}" if gpu else "") for i, x in enumerate(infos))
        logger.info("%d engine workers ready in %.1f s (%s)", count, self.load_seconds, where)

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ answered here
    def describe(self) -> dict[str, Any]:
        """The first worker's description (model, device, dtype, profile), with the number of workers."""
        info = self._info[0]["describe"]
        return {**info, "device": info["device"].split(":")[0], "workers": self.size}  # each has its own GPU

    def allowed_model_dirs(self) -> list[Path]:
        from . import validation as v

        return v.allowed_model_dirs(self.settings.allow_model_dirs)

    def sessions(self) -> list[str]:
        with self._lock:
            return list(self._homes)

    def where(self, session_id: str) -> int | None:
        """The worker a session lives on (None: none yet)."""
        with self._lock:
            return self._homes.get(session_id)

    def tag(self, session_id: str) -> str:
        """How ``stats()`` names the session in the workers' job lists."""
        return session_tag(self._salt, session_id)

    # ------------------------------------------------------------------ per session
    tune = _session_method("tune", job=True)
    invert = _session_method("invert", job=True)
    edit = _session_method("edit", job=True)
    generate = _session_method("generate", job=True)
    control = _session_method("control", job=True)
    hints = _session_method("hints", job=True)
    load_tuned = _session_method("load_tuned", job=True)
    adopt = _session_method("adopt")
    pack_model = _session_method("pack_model")

    def models(self, session_id: str) -> list[Any]:
        """The session's models (none for a session that has no worker yet: nothing is assigned by asking)."""
        home = self.where(check_session_id(session_id))
        return [] if home is None else self._ask(home, "models", {"session_id": session_id})

    def model_choices(self, session_id: str) -> list[tuple[str, str]]:
        """``(label, tune_key)`` pairs for a dropdown, newest first."""
        return [(m.label, m.tune_key) for m in reversed(self.models(session_id))]

    def cancel(self, session_id: str) -> bool:
        """Ask the session's running job to stop after its current step (on its worker); True if one was running."""
        home = self.where(session_id)
        return False if home is None else bool(self._ask(home, "cancel", {"session_id": session_id}))

    def wait_idle(self, session_id: str, timeout: float = 60.0) -> bool:
        """Wait until the session's job on its worker has ended (see :meth:`Engine.wait_idle`)."""
        home = self.where(session_id)
        if home is None or home not in self._alive:
            return True
        return bool(self._ask(home, "wait_idle", {"session_id": session_id, "timeout": timeout}))

    def release(self, session_id: str) -> int:
        """Forget a session on its worker (outputs deleted, cache references dropped); returns the bytes freed."""
        with self._lock:
            home = self._homes.pop(session_id, None)
            self._moving.pop(session_id, None)
        if home is None or home not in self._alive:
            return 0
        return int(self._ask(home, "release", {"session_id": session_id}))

    def scores(self, result: Any) -> list[dict[str, Any]]:
        """Scores of an edit-like result, on the worker of the session that made it."""
        home = self.where(getattr(result, "session_id", ""))
        return self._ask(home if home in self._alive else self._idlest(), "scores", {"result": result})

    # ------------------------------------------------------------------ any worker
    def estimate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Time and memory of a job (see :meth:`Engine.estimate`), from the least busy worker's cost model."""
        bound = inspect.signature(Engine.estimate).bind(self, *args, **kwargs)
        return self._ask(self._idlest(), "estimate", {k: v for k, v in bound.arguments.items() if k != "self"})

    def stored_models(self, keys: Any = None) -> list[Any]:
        """Models in the shared run store that fit the base, newest first (see :meth:`Engine.stored_models`)."""
        return self._ask(self._idlest(), "stored_models", {"keys": None if keys is None else list(keys)})

    def stats(self) -> dict[str, Any]:
        """``{"workers": [per worker: device, jobs (with start/end times), cache counters, ...], "total": ...}``."""
        replies = list(self._each("stats").values())
        with self._lock:
            routed = {i: sum(1 for h in self._homes.values() if h == i) for i in range(self.size)}
            restarts, replacing, alive = list(self._restarts), set(self._replacing), set(self._alive)
        answered = {reply["worker"] for reply in replies}
        # not answering: dead (and maybe restarting), or alive but stuck past the timeout
        workers = [{"alive": i in alive, "answering": False, "worker": i, "restarting": i in replacing,
                    "restarts": restarts[i]} for i in range(self.size) if i not in answered]  # fmt: skip
        for reply in replies:
            reply.update(
                alive=True, answering=True, routed_sessions=routed[reply["worker"]], restarts=restarts[reply["worker"]]
            )
            workers.append(reply)
        workers.sort(key=lambda w: w["worker"])
        return {"workers": workers, "total": _total(replies)}

    def disk_usage(self) -> dict[str, Any]:
        return self.stats()["total"]["disk"]

    # ------------------------------------------------------------------ shutting down
    def close(self) -> None:
        """Release every session on every worker, stop the workers (and the Ray this pool started)."""
        ray = self._ray
        self._closing = True
        with self._lock:
            loading, threads = list(self._loading.values()), list(self._restart_threads)
        for a in loading:  # its thread's wait for it ends at once, before Ray is shut down under it
            with contextlib.suppress(Exception):
                ray.kill(a)
        for thread in threads:
            with contextlib.suppress(RuntimeError):  # made but not started yet: it will see _closing
                thread.join(timeout=30)
        with contextlib.suppress(Exception):
            self._each("close", timeout=120)
        with self._lock:
            actors, self._actors, self._alive = self._actors, [], set()
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        if self._started_ray:
            self._started_ray = False
            with contextlib.suppress(Exception):
                ray.shutdown()
        shutil.rmtree(held_folder(Path(self.settings.cache_dir) / "runs", self._salt), ignore_errors=True)
        if self._own_output:
            shutil.rmtree(self.output_root, ignore_errors=True)

    # ------------------------------------------------------------------ internals
    def _each(self, method: str, *args: Any, timeout: float | None = 60) -> dict[int, Any]:
        """``method(*args)`` on every live worker at once: ``{worker: value}``, leaving out (and marking) dead ones,
        and leaving out those that do not answer within ``timeout`` seconds (a stuck process; None: wait)."""
        with self._lock:
            actors = {i: self._actors[i] for i in sorted(self._alive)}
        refs = {i: getattr(actor, method).remote(*args) for i, actor in actors.items()}
        values = {}
        for i, ref in refs.items():
            with contextlib.suppress(WorkerLost, self._ray.exceptions.GetTimeoutError), self._lost(i, actors[i]):
                values[i] = self._ray.get(ref, timeout=timeout)
        return values

    def _ask(self, index: int, name: str, kwargs: dict[str, Any]) -> Any:
        """A quick call on worker ``index``; its error is raised here as the same exception."""
        actor = self._actors[index]
        with self._lost(index, actor):
            return _value(self._ray.get(actor.call.remote(name, kwargs)))

    def _job(self, session_id: str, name: str, kwargs: dict[str, Any], progress: ProgressCallback | None) -> Any:
        """A model job on the session's worker, its progress relayed to ``progress`` while it runs."""
        index = self._enter(session_id)
        try:
            actor = self._actors[index]
            with self._lost(index, actor):
                return _value(self._follow(index, actor, session_id, name, kwargs, progress))
        finally:
            self._leave(session_id, index)

    def _follow(
        self, index: int, actor: Any, session_id: str, name: str, kwargs: dict[str, Any],
        progress: ProgressCallback | None,
    ) -> tuple[str, Any]:  # fmt: skip
        ray, job = self._ray, uuid.uuid4().hex
        ref = actor.run.remote(job, name, kwargs, progress is not None)
        raised: BaseException | None = None
        while True:
            done = bool(ray.wait([ref], timeout=POLL_SECONDS)[0])
            if progress is not None:
                for event in ray.get(actor.events.remote(job, done)):
                    if raised is not None:
                        break
                    try:
                        progress(event)
                    except BaseException as exc:  # as in process: the callback's error ends the job
                        raised = exc
                        self._ask(index, "cancel", {"session_id": session_id})
            if done:
                break
        reply = ray.get(ref)
        if raised is not None:
            raise raised
        return reply

    def _enter(self, session_id: str) -> int:
        """The worker for the session's next job (counted as running there); may move the session first."""
        with self._moving_lock(session_id):
            with self._lock:
                home = self._homes.get(session_id)
                if home is None or home not in self._alive:
                    home = self._homes[session_id] = self._idlest_locked()
                    target = home
                else:
                    target = self._move_target(session_id, home)
                self._running[target] += 1
                self._session_jobs[session_id] = self._session_jobs.get(session_id, 0) + 1
            try:
                moved = target == home or self._move(session_id, home, target)
            except BaseException:
                self._leave(session_id, target)
                raise
            if not moved:
                with self._lock:
                    self._running[target] -= 1
                    self._running[home] += 1
                target = home
            return target

    def _leave(self, session_id: str, index: int) -> None:
        with self._lock:
            self._running[index] -= 1
            self._session_jobs[session_id] -= 1
            if not self._session_jobs[session_id]:
                del self._session_jobs[session_id]

    def _move_target(self, session_id: str, home: int) -> int:
        """An idle worker to move the session to, when its own is busy with others' jobs (lock held)."""
        if self._session_jobs.get(session_id) or not self._running[home]:
            return home
        idle = [i for i in self._alive if i != home and not self._running[i]]
        return min(idle, key=self._load_locked) if idle else home

    def _move(self, session_id: str, old: int, new: int) -> bool:
        """Adopt the session's models from the shared store on ``new``, release it on ``old``; False if it cannot."""
        try:
            models = self._ask(old, "models", {"session_id": session_id})
            if any(m.video_path for m in models):  # an upload whose source clip was given beside it: stays
                return False
            for m in models:
                self._ask(new, "adopt", {"session_id": session_id, "tune_key": m.tune_key})
        except TuneAVideoError as exc:
            logger.info("session %s stays on worker %d: %s", session_id, old, exc)
            with contextlib.suppress(Exception):
                self._ask(new, "release", {"session_id": session_id})
            return False
        with self._lock:
            self._homes[session_id] = new
        with contextlib.suppress(TuneAVideoError):
            self._ask(old, "release", {"session_id": session_id})
        logger.info("session %s moved from busy worker %d to idle worker %d (%d models)", session_id, old, new,
                    len(models))  # fmt: skip
        return True

    def _home(self, session_id: str) -> int:
        """The session's worker, assigning the least busy one to a new session."""
        with self._lock:
            home = self._homes.get(session_id)
            if home is None or home not in self._alive:
                home = self._homes[session_id] = self._idlest_locked()
            return home

    def _idlest(self) -> int:
        with self._lock:
            return self._idlest_locked()

    def _idlest_locked(self) -> int:
        if not self._alive:
            raise WorkerLost("No engine worker is running: restart the app.")
        return min(self._alive, key=self._load_locked)

    def _load_locked(self, index: int) -> tuple[int, int, int]:
        return self._running[index], sum(1 for h in self._homes.values() if h == index), index

    def _moving_lock(self, session_id: str) -> threading.Lock:
        with self._lock:
            return self._moving.setdefault(session_id, threading.Lock())

    @contextlib.contextmanager
    def _lost(self, index: int, actor: Any) -> Iterator[None]:
        """Turn a dead worker into :class:`WorkerLost`; its sessions go to the other workers from then on.

        ``actor`` is the worker the call went to: a late error from a worker already replaced in slot ``index``
        fails only that call, and leaves the replacement (and its sessions) alone."""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            yield
        except RayTaskError as exc:  # not the engine's error (those come back as values): e.g. an unpicklable value
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else TuneAVideoError(str(exc))) from exc
        except RayActorError as exc:
            with self._lock:
                current = index < len(self._actors) and self._actors[index] is actor
                if current:
                    self._alive.discard(index)
                    for sid in [s for s, h in self._homes.items() if h == index]:
                        del self._homes[sid]
            if current:
                logger.error("engine worker %d stopped: %s", index, exc)
                self._replace(index)
            raise WorkerLost(
                f"The engine worker of this session stopped ({type(exc).__name__}); its models in memory are "
                "gone, stored ones can be picked again in My models. Please try again."
            ) from exc

    def _replace(self, index: int) -> None:
        """Start a fresh worker in slot ``index`` in the background (once at a time, ``RESTARTS`` in all)."""
        with self._lock:
            if self._closing or index in self._replacing or index in self._alive or self._restarts[index] >= RESTARTS:
                return
            self._restarts[index] += 1
            self._replacing.add(index)
            old = self._actors[index]
            name = f"tuneavideo-worker-{index}-restart"
            thread = threading.Thread(target=self._bring_back, args=(index, old), name=name, daemon=True)
            self._restart_threads = [t for t in self._restart_threads if t.is_alive()] + [thread]
        thread.start()

    def _bring_back(self, index: int, old: Any) -> None:
        ray = self._ray
        with contextlib.suppress(Exception):
            ray.kill(old, no_restart=True)  # it may still hold its GPU if only its engine broke
        actor = None
        try:
            with self._lock:  # close() either sees this actor in _loading and stops it, or this sees _closing
                if self._closing:
                    raise WorkerLost("the pool is closing")
                actor = self._loading[index] = self._new_actor(index)
            _value(ray.get(actor.ready.remote(), timeout=RESTART_TIMEOUT))
        except Exception as exc:  # it stays down; the other workers go on
            if not self._closing:
                logger.error("engine worker %d could not be restarted: %s: %s", index, type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                if actor is not None:
                    ray.kill(actor)
            with self._lock:
                self._replacing.discard(index)
                self._loading.pop(index, None)
            return
        with self._lock:
            self._replacing.discard(index)
            self._loading.pop(index, None)
            joined = not self._closing
            if joined:
                self._actors[index] = actor
                self._alive.add(index)
        if not joined:
            with contextlib.suppress(Exception):  # the pool closed while it loaded
                ray.kill(actor)
            return
        logger.info("engine worker %d restarted (%d of %d)", index, self._restarts[index], RESTARTS)
        upload = self.disk.upload_dir  # read after joining: a folder set meanwhile reached it, or is read here
        if upload is not None:
            with contextlib.suppress(WorkerLost), self._lost(index, actor):
                ray.get(actor.set_upload_dir.remote(str(upload)), timeout=60)


class _PoolDisk:
    """``pool.disk``: what the UI sets on an engine's disk budget (the upload folder), passed to every worker."""

    def __init__(self, pool: EnginePool) -> None:
        self._pool = pool
        self._upload_dir: Path | None = None

    @property
    def upload_dir(self) -> Path | None:
        return self._upload_dir

    @upload_dir.setter
    def upload_dir(self, path: Path | None) -> None:
        self._upload_dir = path
        # a worker found dead here is replaced, and gets the folder when it joins
        self._pool._each("set_upload_dir", str(path) if path else None, timeout=None)

    def usage(self) -> dict[str, Any]:
        return self._pool.disk_usage()


_SHARED = {"stored_runs"}  # the same on every worker (the shared store): not summed


def _total(workers: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of the workers' counters; the shared store and upload folder counted once in ``disk``."""
    total: dict[str, Any] = {"workers": len(workers)}
    for w in workers:
        for key, value in w.items():
            if key in ("worker", "pid", "jobs", "alive", "device", "gpus", "disk", "routed_sessions"):
                continue
            if key in _SHARED:
                total[key] = value
            elif isinstance(value, bool) or not isinstance(value, (int, float, dict)):
                continue
            elif isinstance(value, dict):
                into = total.setdefault(key, {})
                for k, n in value.items():
                    into[k] = into.get(k, 0) + n
            else:
                total[key] = total.get(key, 0) + value
    disks = [w["disk"] for w in workers if isinstance(w.get("disk"), dict)]
    if disks:
        first = disks[0]
        outputs = sum(d["outputs_bytes"] for d in disks)
        total["disk"] = {**first, "outputs_bytes": outputs, "evictions": sum(d["evictions"] for d in disks),
                         "used_bytes": first["runs_bytes"] + first["uploads_bytes"] + outputs}  # fmt: skip
    return total


__all__ = ["EnginePool", "EngineWorker", "WorkerLost", "job_slots", "open_engine", "worker_count"]
