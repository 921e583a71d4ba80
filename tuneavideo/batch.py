"""Batch jobs on Ray: a folder of clips, each tuned, inverted and edited by the same workflow as the CLI.

A jobs file (YAML) lists jobs; each is one clip with its prompt, edit prompts and optional preset or
overrides::

    defaults:                # optional: merged into every job
      model: toy-world
      tune: {max_train_steps: 100}
    jobs:
      - name: red-circle
        video: clips/red-circle.mp4
        prompt: a red circle moving right on a blue background
        edits: [a green circle moving right on a blue background]
      - name: skiing
        preset: man-skiing   # the preset's settings; the keys below override it
        video: clips/man-skiing.mp4
        video_spec: {num_frames: 8}

Each job runs on a long-lived Ray actor (one per GPU, or per CPU slot) that keeps its base model loaded,
and writes its own run folder under the output folder (``<name>-<key>``: weights, record, inversion,
``edits/``). A job that fails is reported and the others go on; a job whose run folder is already complete
(same content key: clip bytes, prompt, configs, edits, base) is skipped. ``summary.json`` lists every
job's outputs, time and error.

A batch starts its workers and stops them at its end. :class:`BatchWorkers` (``tuneavideo batch --watch
INBOX``) keeps a pool up across batches, so only the first pays each worker's start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec, build_config, config_hash, config_to_dict
from .errors import InputError, TuneAVideoError
from .rayutil import cluster_cpus, cluster_gpus, connect, import_ray

JOB_FILE = "job.json"
SUMMARY_FILE = "summary.json"
REPLACEMENT_WAIT = 600.0  # seconds a replacement worker may wait for resources before the waiting jobs fail
_SECTIONS = {"video_spec": VideoSpec, "tune": TuneConfig, "invert": InvertConfig, "sample": SampleConfig}
_KEYS = {"name", "video", "prompt", "edits", "preset", "model", *_SECTIONS}


@dataclass(frozen=True)
class Job:
    """One clip's work: tune on ``video`` with ``prompt``, invert, then one edit per prompt of ``edits``."""

    name: str
    video: str
    prompt: str
    edits: tuple[str, ...]
    model: str | None
    video_spec: VideoSpec
    tune: TuneConfig
    invert: InvertConfig
    sample: SampleConfig
    error: str | None = None  # a job that could not even be read: reported as failed, never run

    def key(self) -> str:
        """Content key: the clip's bytes, the prompt, edits, configs and base (what makes the outputs)."""
        from .store import sha256_file

        return config_hash("batch-job", sha256_file(self.video), self.prompt, self.edits, self.model,
                           self.video_spec, self.tune, self.invert, self.sample)  # fmt: skip

    def folder(self, out: Path) -> Path:
        return out / f"{_slug(self.name)}-{self.key()[:10]}"


def _slug(text: str) -> str:
    from .workflow import slug

    return slug(text, 40)


def _job(raw: Any, index: int, defaults: dict[str, Any], root: Path) -> Job:
    """A :class:`Job` from one YAML entry (defaults and its preset merged in), or one that carries its error."""
    from .config import load_preset
    from .profiles import expand_model, resolve_profile

    name = f"job-{index + 1}"
    try:
        if not isinstance(raw, dict):
            raise InputError(f"job {index + 1} must be a mapping, got {type(raw).__name__}")
        data = {**defaults, **raw}
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise InputError(f"unknown key(s) {unknown}; valid keys are {sorted(_KEYS)}")
        name = str(data.get("name") or name)
        preset = load_preset(data["preset"]) if data.get("preset") else None
        model = data.get("model") or (preset.base_model if preset else None)
        model = expand_model(model) if model else None
        profile = resolve_profile(model or "toy-world")
        base = {"video_spec": profile.video, "tune": profile.tune, "invert": profile.invert, "sample": profile.sample}
        if preset is not None:
            base = {"video_spec": preset.video, "tune": preset.tune, "invert": preset.invert, "sample": preset.sample}
        configs = {k: _merged(cls, base[k], data.get(k), f"{name}.{k}") for k, cls in _SECTIONS.items()}
        video = data.get("video") or (preset.video_path if preset else None)
        prompt = str(data.get("prompt") or (preset.prompt if preset else "")).strip()
        if not video or not prompt:
            raise InputError("every job needs a 'video' and a 'prompt'")
        video_path = Path(str(video)).expanduser()
        video_path = video_path if video_path.is_absolute() else root / video_path
        edits = data.get("edits", list(preset.edit_prompts) if preset else [])
        if isinstance(edits, str) or not all(isinstance(e, str) for e in edits):
            raise InputError("'edits' must be a list of prompts")
        return Job(name, str(video_path), prompt, tuple(e.strip() for e in edits if e.strip()), model, **configs)
    except (TuneAVideoError, TypeError, ValueError) as exc:
        return Job(name, "", "", (), None, VideoSpec(), TuneConfig(), InvertConfig(), SampleConfig(), error=str(exc))


def _merged(cls: type, base: Any, override: Any, where: str) -> Any:
    if override is None:
        return base
    if not isinstance(override, dict):
        raise InputError(f"{where} must be a mapping")
    return build_config(cls, {**config_to_dict(base), **override}, where)


def load_jobs(path: str | Path) -> list[Job]:
    """Read a jobs file; paths in it are relative to the file. A job that cannot be read carries its error."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"jobs file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path.name} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, or not text: a user's file, not a bug
        raise InputError(f"cannot read jobs file {path.name}: {exc}") from exc
    if isinstance(data, list):
        data = {"jobs": data}
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise InputError(f"{path.name}: expected a mapping with a non-empty 'jobs' list")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise InputError(f"{path.name}: 'defaults' must be a mapping")
    jobs = [_job(raw, i, defaults, path.parent.resolve()) for i, raw in enumerate(data["jobs"])]
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise InputError(f"{path.name}: job names must be distinct, got {names}")
    return jobs


# ------------------------------------------------------------------------------------------ one job
class JobRunner:
    """Runs jobs one after another in one process, keeping each base model loaded (a Ray actor wraps it)."""

    def __init__(self, device: str = "auto", dtype: str = "auto", speed: str = "auto") -> None:
        from .settings import resolve_device

        self.device = resolve_device(device)
        self.dtype, self.speed = dtype, speed
        self._pipes: dict[str, Any] = {}

    def _pipe(self, model: str | None) -> Any:
        from .settings import load_base, resolve_default_model, resolve_dtype, speed_for

        if model is None:
            model = resolve_default_model(self.device)[0]
        if model not in self._pipes:
            self._pipes.clear()  # one base in memory at a time: a worker is one GPU
            pipe = load_base(model, self.device, resolve_dtype(self.dtype, self.device))
            pipe.set_progress_bar_config(disable=True)
            pipe.set_speed_mode(speed_for(self.speed, self.device))
            self._pipes[model] = pipe
        return self._pipes[model]

    def preload(self, model: str | None = None) -> float:
        """Load ``model`` (None: the default base) now, ahead of the jobs that use it; returns the seconds."""
        started = time.perf_counter()
        self._pipe(model)
        return round(time.perf_counter() - started, 2)

    def run(self, job: Job, out: str) -> dict[str, Any]:
        """Run ``job`` into its folder under ``out``; never raises: failures come back as ``status: failed``."""
        started = time.perf_counter()
        report: dict[str, Any] = {"name": job.name, "video": job.video, "status": "failed", "outputs": []}
        report["worker"] = f"{socket.gethostname()}:{os.getpid()}"  # which process ran it (a worker's first job loads)
        report["started"] = round(time.time(), 2)  # wall clock (Unix seconds): when it began on its worker
        try:
            if job.error:
                raise InputError(job.error)
            from .workflow import check_video_path

            check_video_path(job.video)
            folder = job.folder(Path(out))
            report.update(key=job.key(), folder=str(folder))
            report.update(self._work(job, folder), status="done")
        except Exception as exc:  # a job's failure is its own: report it, keep the worker alive for the next
            report["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TuneAVideoError) else str(exc)
        report["seconds"] = round(time.perf_counter() - started, 2)
        if report.get("folder"):
            from .store import write_json

            write_json(Path(report["folder"]) / JOB_FILE, report)
        return report

    def _work(self, job: Job, folder: Path) -> dict[str, Any]:
        from . import workflow as wf
        from .store import RunFolder

        timings: dict[str, float] = {}  # seconds per stage: where a job's time went (a worker's first job loads)
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = round(now - clock, 2)
            clock = now

        clip = wf.read_clip(job.video, job.video_spec)
        lap("read")
        pipe = self._pipe(job.model)
        lap("load")
        extra = {"base_model": job.model, "batch_job": job.name, "sample_config": config_to_dict(job.sample),
                 "invert_config": config_to_dict(job.invert), "edit_prompts": list(job.edits)}  # fmt: skip
        delta = wf.tune_clip(pipe, clip, job.prompt, job.tune, extra_record=extra)
        audio = (clip.audio_source, clip.audio_start) if clip.audio_source else None
        run = RunFolder.write(folder, delta, clip.frames, clip.fps, audio)
        lap("tune")
        latents, _ = wf.cached_inversion(pipe, run, delta, clip, job.invert)
        lap("invert")
        outputs: list[str] = [str(folder / "tuned.safetensors")]
        if job.edits:
            sample = wf.with_seed(job.sample)
            frames = wf.sample_videos(pipe, delta, list(job.edits), clip.frames.shape[:3], sample, latents)
            paths = wf.output_names(job.edits, folder / "edits", fresh=False)
            written = wf.write_outputs(paths, frames, clip.fps, clip)
            outputs += [str(p) for p in written.all]
            lap("edits")
        return {"outputs": outputs, "final_loss": delta.record.get("final_loss"), "timings": timings}


# ------------------------------------------------------------------------------------------ the batch
def _done(job: Job, out: Path) -> dict[str, Any] | None:
    """The earlier report of ``job`` when its run folder is complete (same content key), else None."""
    if job.error:
        return None
    try:
        path = job.folder(out) / JOB_FILE
        report = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError, TuneAVideoError):
        return None
    ok = report and report.get("status") == "done" and all(Path(p).exists() for p in report.get("outputs", []))
    return {**report, "status": "skipped", "seconds": 0.0} if ok else None


ProgressFn = Callable[[dict[str, Any]], None]  # gets {"done", "failed", "skipped", "running", "total", "eta"}


@dataclass
class _Tally:
    total: int
    started: float = field(default_factory=time.perf_counter)
    reports: list[dict[str, Any]] = field(default_factory=list)

    def status(self, running: int) -> dict[str, Any]:
        counts = {s: sum(r["status"] == s for r in self.reports) for s in ("done", "failed", "skipped")}
        finished = counts["done"] + counts["failed"]
        left = self.total - len(self.reports)
        rate = (time.perf_counter() - self.started) / finished if finished else None
        eta = None if rate is None else round(rate * left / max(running, 1), 1)
        return {**counts, "running": running, "total": self.total, "eta": eta}


def run_batch(
    jobs: list[Job],
    out: str | Path,
    address: str | None = None,
    gpus_per_job: float = 1.0,
    workers: int | None = None,
    device: str = "auto",
    progress: ProgressFn | None = None,
    pool: BatchWorkers | None = None,
) -> dict[str, Any]:
    """Run ``jobs`` on Ray (a local one when ``address`` is None); returns and writes the summary.

    One actor per GPU (``gpus_per_job`` GPUs each) when Ray sees GPUs, else ``workers`` CPU actors
    (default: one per two CPUs), started for this batch and stopped after it; or the long-lived workers of
    ``pool`` (then ``address``, ``gpus_per_job``, ``workers`` and ``device`` are the pool's, not these).
    Jobs already complete in ``out`` are skipped.
    """
    if pool is not None and pool.closed:
        raise InputError("run_batch: the worker pool is closed")
    ray = import_ray("batch jobs")
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tally = _Tally(len(jobs))
    todo = []
    for job in jobs:
        earlier = _done(job, out)
        if earlier is not None:
            tally.reports.append(earlier)
        else:
            todo.append(job)
    if todo and pool is not None:
        pool.refill()
        _Dispatch(ray, pool, out, tally, progress, stop_idle=False).run(todo)
    elif todo:
        with BatchWorkers(address, gpus_per_job, workers, device, limit=len(todo)) as own:
            _Dispatch(ray, own, out, tally, progress, stop_idle=True).run(todo)
    summary = {"out": str(out), **tally.status(0), "seconds": round(time.perf_counter() - tally.started, 2),
               "jobs": sorted(tally.reports, key=lambda r: [j.name for j in jobs].index(r["name"]))}  # fmt: skip
    from .store import write_json

    write_json(out / SUMMARY_FILE, summary)
    return summary


class BatchWorkers:
    """Batch workers that outlive one batch: started once (a base optionally loaded), then given batch after batch.

    ``run_batch`` without a pool starts workers for one batch, and each pays its start-up before its first job:
    on an H200 host about 6 s for the process and ``import torch``, 12-14 s to load an SD-1.5 base (most of it
    diffusers' imports) and 4-5 s of first-job warm-up. A pool pays that once::

        with BatchWorkers(preload="runwayml/stable-diffusion-v1-5") as pool:
            run_batch(jobs_a, "out/a", pool=pool)
            run_batch(jobs_b, "out/b", pool=pool)

    One worker per ``gpus_per_job`` GPUs when Ray sees GPUs, else ``workers`` CPU workers (default: one per two
    CPUs); ``limit`` caps the count. Ray is joined at ``address`` or started locally, and shut down by
    :meth:`close` only when this pool started it. A pool runs one batch at a time.
    """

    def __init__(self, address: str | None = None, gpus_per_job: float = 1.0, workers: int | None = None,
                 device: str = "auto", preload: str | None = None, limit: int | None = None) -> None:  # fmt: skip
        if gpus_per_job <= 0:
            raise InputError(f"gpus_per_job must be positive, got {gpus_per_job}")
        if workers is not None and workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        self.ray = ray = import_ray("batch jobs")
        self.closed = False
        self._started_ray = connect(ray, address)
        self.runners: list[Any] = []
        self.size = 0
        try:
            gpus = cluster_gpus(ray)
            use_gpu = gpus > 0 and device != "cpu"
            if use_gpu and gpus_per_job > gpus:  # such a worker would wait for resources forever
                raise InputError(f"batch: {gpus_per_job:g} GPUs per job, but the Ray cluster has {gpus}")
            count = int(gpus // gpus_per_job) if use_gpu else (workers or cluster_cpus(ray) // 2)
            count = max(1, min(count, limit or count))
            self._actor = ray.remote(num_gpus=gpus_per_job if use_gpu else 0, num_cpus=1)(JobRunner)
            self._device = "cuda" if use_gpu else "cpu"
            self.size = count
            self.runners = [self.add() for _ in range(count)]
            if preload is not None:
                self.preload(preload)
        except BaseException:
            self.close()
            raise

    def add(self) -> Any:
        """Start one more worker (it joins the pool; it is ready once its ``__ray_ready__`` resolves)."""
        runner = self._actor.remote(self._device)
        self.runners.append(runner)
        return runner

    def refill(self, timeout: float = 2.0) -> None:
        """Drop workers found dead (an idle one answers at once; one still starting is kept) and start new ones
        in place of every worker lost since the pool began (died between batches or in one, could not start)."""
        checks = {runner.__ray_ready__.remote(): runner for runner in self.runners}
        ready, _ = self.ray.wait(list(checks), num_returns=len(checks), timeout=timeout) if checks else ([], [])
        for ref in ready:
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayError:
                self.discard(checks[ref])
        while len(self.runners) < self.size:
            self.add()

    def discard(self, runner: Any) -> None:
        """Stop ``runner`` (dead or not) and drop it from the pool."""
        with contextlib.suppress(Exception):
            self.ray.kill(runner, no_restart=True)
        with contextlib.suppress(ValueError):
            self.runners.remove(runner)

    def preload(self, model: str | None = None) -> list[float]:
        """Load ``model`` (None: the default base) on every worker now; the seconds each took.

        Raises a :class:`TuneAVideoError` naming the cause when a worker cannot start or load it.
        """
        try:
            return self.ray.get([runner.preload.remote(model) for runner in self.runners])
        except self.ray.exceptions.RayError as exc:
            raise TuneAVideoError(
                f"batch workers could not load {model or 'the default base'}: {_last_line(exc)}"
            ) from exc

    def close(self) -> None:
        """Stop every worker, and Ray when this pool started it. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for runner in list(self.runners):
            self.discard(runner)
        if self._started_ray:
            self.ray.shutdown()

    def __enter__(self) -> BatchWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Dispatch:
    """Jobs onto long-lived workers, one at a time each, through worker deaths.

    A worker that dies mid-job (killed, out of memory, a crashed driver) fails that job and is replaced (as
    many times in all as there are workers); a replacement gets jobs only once it has started, and jobs
    waiting only on replacements that cannot start (a lost node's resources) fail after ``REPLACEMENT_WAIT``.
    A worker that cannot start at all is not replaced: it would fail every job it got. With ``stop_idle``
    (workers started for this batch only), a worker with nothing left to do is stopped at once.
    """

    def __init__(self, ray: Any, pool: BatchWorkers, out: Path, tally: _Tally, progress: ProgressFn | None,
                 stop_idle: bool) -> None:  # fmt: skip
        self.ray, self.pool, self.out, self.tally, self.progress = ray, pool, out, tally, progress
        self.stop_idle = stop_idle
        self.free: list[Any] = []
        self.starting: dict[Any, Any] = {}  # a replacement's readiness -> the replacement
        self.pending: dict[Any, tuple[Any, Job, float]] = {}  # a job's result -> (worker, job, sent at)
        self.queue: list[Job] = []
        self.restarts = 0
        self.cause = "no worker could start"  # why jobs still queued at the end could not run

    def run(self, todo: list[Job]) -> None:
        ray = self.ray
        self.free, self.queue, self.restarts = list(self.pool.runners), list(todo), len(self.pool.runners)
        while self.queue or self.pending:
            while self.queue and self.free:
                runner, job = self.free.pop(0), self.queue.pop(0)
                self.pending[runner.run.remote(job, str(self.out))] = (runner, job, time.perf_counter())
            if self.progress:
                self.progress(self.tally.status(len(self.pending)))
            if not self.pending and not self.starting:  # no worker left
                break
            wait = None if self.pending else REPLACEMENT_WAIT  # only replacements left: wait for them so long
            ready, _ = ray.wait([*self.pending, *self.starting], num_returns=1, timeout=wait)
            if not ready:
                self.cause = f"no replacement worker could start within {REPLACEMENT_WAIT:.0f} s"
                break
            if ready[0] in self.starting:
                self._started(ready[0])
            else:
                self._finished(ready[0])
        while self.queue:  # what is left has no worker to run on
            self.tally.reports.append(_failed(self.queue.pop(0), f"not run: {self.cause}", 0.0))
        if self.progress:
            self.progress(self.tally.status(0))

    def _started(self, ref: Any) -> None:
        fresh = self.starting.pop(ref)
        try:
            self.ray.get(ref)
            self.free.append(fresh)
        except self.ray.exceptions.RayError as exc:  # it could not start: not replaced again
            self.cause = f"worker could not start: {_last_line(exc)}"
            self.pool.discard(fresh)

    def _finished(self, ref: Any) -> None:
        ray = self.ray
        runner, job, sent = self.pending.pop(ref)
        seconds = time.perf_counter() - sent
        try:
            self.tally.reports.append(ray.get(ref))
        except ray.exceptions.RayActorError as exc:  # the worker, not the job, failed: the job is reported failed
            self._died(runner, job, exc, seconds)
            return
        except ray.exceptions.RayError as exc:  # the job raised past its own handling: its worker is fine
            self.tally.reports.append(_failed(job, _last_line(exc), seconds))
        if self.queue or not self.stop_idle:
            self.free.append(runner)
        else:  # nothing left for it: give its GPU back now
            self.pool.discard(runner)

    def _died(self, runner: Any, job: Job, exc: BaseException, seconds: float) -> None:
        init_failed = getattr(exc, "actor_init_failed", False)
        self.cause = f"worker {'could not start' if init_failed else 'died'}: {_last_line(exc)}"
        self.tally.reports.append(_failed(job, self.cause, seconds))
        self.pool.discard(runner)
        if self.queue and not init_failed and self.restarts > 0:  # not one that could not even start
            self.restarts -= 1
            fresh = self.pool.add()
            self.starting[fresh.__ray_ready__.remote()] = fresh


def _last_line(exc: BaseException) -> str:
    """A Ray error's cause in one line: its text carries the worker's whole traceback (in the worker's log too)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _failed(job: Job, error: str, seconds: float) -> dict[str, Any]:
    """The report of a job that failed outside its worker's own handling (a dead worker, none to run it)."""
    return {"name": job.name, "video": job.video, "status": "failed", "outputs": [], "seconds": round(seconds, 2),
            "error": error}  # fmt: skip


# ------------------------------------------------------------------------------------------ command line
def add_parser(sub: Any) -> None:
    """``tuneavideo batch JOBS.yaml | --watch INBOX [--ray-address ADDR] [--gpus-per-job 1] [--workers N] [-o OUT]``."""
    p = sub.add_parser("batch", help="run a YAML file of jobs (tune, invert, edit each clip) on Ray")
    p.add_argument("jobs", nargs="?", help="jobs file (YAML): see `tuneavideo/batch.py` or the README")
    p.add_argument("--watch", metavar="INBOX", help="keep the workers up and run each jobs file put in this folder "
                   "(into OUT/<file name>/) until stopped (Ctrl-C, SIGTERM)")  # fmt: skip
    p.add_argument("--preload", metavar="MODEL", help="with --watch: load this base on every worker at start")
    p.add_argument("--ray-address", help="a running Ray cluster (default: start a local one)")
    p.add_argument("--gpus-per-job", type=float, default=1.0, help="GPUs per job (default 1)")
    p.add_argument("--workers", type=int, help="CPU-only: jobs at a time (default: one per two CPUs)")
    p.add_argument("--device", default="auto", help="cpu to ignore GPUs")
    p.add_argument("--output", "-o", default="outputs/batch", help="folder of the run folders and summary.json")


def _show(args: Any, label: str = "") -> ProgressFn:
    import sys

    def show(status: dict[str, Any]) -> None:
        if not args.quiet:
            eta = f", ETA {status['eta']:.0f} s" if status["eta"] is not None else ""
            print(f"[batch{label}] done {status['done']}/{status['total']}, running {status['running']}, failed "
                  f"{status['failed']}, skipped {status['skipped']}{eta}", file=sys.stderr)  # fmt: skip

    return show


def _report_failures(summary: dict[str, Any]) -> None:
    import sys

    for report in summary["jobs"]:
        if report["status"] == "failed":
            print(f"error: job {report['name']}: {report.get('error')}", file=sys.stderr)


def cmd_batch(args: Any) -> list[Path]:
    """Run the jobs file; a failed job makes the command exit 1 after the others ran (see summary.json)."""
    if (args.jobs is None) == (args.watch is None):
        raise InputError("batch: give a jobs file or --watch INBOX (one of the two)")
    if args.watch is not None:
        return watch(args)
    if args.preload:
        raise InputError("batch: --preload goes with --watch (a single batch loads each base when a job needs it)")
    jobs = load_jobs(args.jobs)
    summary = run_batch(jobs, args.output, args.ray_address, args.gpus_per_job, args.workers, args.device,
                        _show(args))  # fmt: skip
    _report_failures(summary)
    if summary["failed"]:
        raise BatchFailed(
            f"{summary['failed']} of {summary['total']} jobs failed: see {Path(args.output) / SUMMARY_FILE}"
        )
    return [Path(args.output) / SUMMARY_FILE]


WATCH_POLL = 2.0  # seconds between looks at the inbox
_JOB_SUFFIXES = (".yaml", ".yml")


def watch(args: Any) -> list[Path]:
    """``--watch INBOX``: one pool of workers serves every jobs file put in ``INBOX``, until stopped.

    Each new or changed ``*.yaml`` / ``*.yml`` (left alone for a second, so half-written files wait) runs as
    one batch into ``OUT/<its name>/``; a file that fails to parse is reported and skipped until it changes.
    Only the first batch pays the workers' start-up. Ctrl-C or SIGTERM stops the watch and the workers (jobs
    running then are lost; watching again re-runs the files, skipping their complete jobs); returns the
    summaries written.
    """
    import signal
    import sys
    import threading

    inbox = Path(args.watch)
    if not inbox.is_dir():
        raise InputError(f"batch --watch: no such folder: {inbox}")
    out = Path(args.output)
    written: list[Path] = []
    seen: dict[Path, int] = {}  # jobs file -> the mtime it ran at
    pool = BatchWorkers(args.ray_address, args.gpus_per_job, args.workers, args.device, preload=args.preload)
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None  # `docker stop`: Ctrl-C
    print(f"[batch] watching {inbox} with {len(pool.runners)} worker(s); Ctrl-C stops", file=sys.stderr)
    try:
        while True:
            for path in _ready_files(inbox, seen):
                summary = _run_file(path, out / _slug(path.stem), pool, args)
                if summary is not None:
                    written.append(summary)
            time.sleep(WATCH_POLL)
    except KeyboardInterrupt:
        print("[batch] stopped watching", file=sys.stderr)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        pool.close()
    return written


def _ready_files(inbox: Path, seen: dict[Path, int]) -> list[Path]:
    """Jobs files in ``inbox`` that are new or changed since they ran, and untouched for a second."""
    ready = []
    for path in sorted(p for p in inbox.iterdir() if p.suffix.lower() in _JOB_SUFFIXES and p.is_file()):
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:  # removed meanwhile
            continue
        if seen.get(path) != mtime and time.time() - mtime / 1e9 >= 1.0:
            seen[path] = mtime
            ready.append(path)
    return ready


def _run_file(path: Path, out: Path, pool: BatchWorkers, args: Any) -> Path | None:
    """One jobs file of the inbox as one batch on ``pool``; its summary's path (None when it did not parse)."""
    import sys

    try:
        jobs = load_jobs(path)
    except TuneAVideoError as exc:
        print(f"error: {path.name}: {exc}", file=sys.stderr)
        return None
    summary = run_batch(jobs, out, pool=pool, progress=_show(args, f" {path.name}"))
    _report_failures(summary)
    print(f"[batch] {path.name}: {summary['done']} done, {summary['failed']} failed, {summary['skipped']} skipped "
          f"in {summary['seconds']:.0f} s -> {out / SUMMARY_FILE}", file=sys.stderr)  # fmt: skip
    return out / SUMMARY_FILE


class BatchFailed(TuneAVideoError):
    """Some jobs of a batch failed (the others ran; the summary says which and why)."""


__all__ = ["BatchWorkers", "Job", "JobRunner", "load_jobs", "run_batch"]
