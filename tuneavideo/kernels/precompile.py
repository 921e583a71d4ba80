"""A job's Triton kernels compiled side by side in worker processes, while the job starts on the PyTorch path.

Triton compiles each kernel variant (dtype, tile, flags) on its first launch in a process, one after another:
about 21 s inside the first tuning step of a 24-frame job on a machine that has never run one (then they sit
in Triton's on-disk cache). Here, before the first step:

1. a *dry run* (one forward and backward) records every launch the kernels would make — kernel, argument
   dtypes and alignments, integer arguments, constants — and skips it (:func:`recording`; the values it
   produces are garbage and thrown away);
2. if this machine has not compiled that set yet (a marker in the cache says so), worker processes compile
   it into the on-disk cache in parallel (``python -m tuneavideo.kernels.precompile``), without touching the
   GPU's memory;
3. meanwhile the kernels are held back (:func:`tuneavideo.kernels.triton_available` is False) and tuning
   runs on the PyTorch path, which computes the same maths; once the workers are done the kernels switch on
   (:func:`tuneavideo.kernels.generation` changes, so a tuning graph is captured again) and each one only
   loads from the cache.

``TUNEAVIDEO_PRECOMPILE=0`` turns this off: kernels then compile in-process on first use, as Triton does.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import _defer, interpreting, kernels_run_on, triton_available

logger = logging.getLogger(__name__)

_MAX_WORKERS = 12
_KERNEL_MODULES = ("group_norm", "temporal_attention", "geglu")


@dataclass(frozen=True)
class Pointer:
    """What Triton specialises a tensor argument on: its dtype and whether its address is 16-byte aligned."""

    dtype: str  # torch dtype name, e.g. "float16"
    aligned: bool


@dataclass(frozen=True)
class LaunchSpec:
    """One kernel launch as the compiler sees it (no data, no grid)."""

    module: str  # the module defining the kernel, e.g. "tuneavideo.kernels.group_norm"
    kernel: str  # its name there
    args: tuple[Any, ...]  # Pointer for a tensor; ints, floats, bools and None as passed
    meta: tuple[tuple[str, Any], ...]  # constexpr and launch options (num_warps...), sorted by name

    def to_json(self) -> dict[str, Any]:
        args = [{"ptr": asdict(a)} if isinstance(a, Pointer) else a for a in self.args]
        return {"module": self.module, "kernel": self.kernel, "args": args, "meta": [list(m) for m in self.meta]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LaunchSpec:
        args = tuple(Pointer(**a["ptr"]) if isinstance(a, dict) else a for a in data["args"])
        return cls(data["module"], data["kernel"], args, tuple((k, v) for k, v in data["meta"]))


# While a dry run records: (the device it runs on, the launches seen). Process-wide, because backward kernels
# launch from autograd's own threads; keyed by device, because the engine runs one job per device at a time.
_recording: tuple[torch.device, set[LaunchSpec]] | None = None


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    """``kernel[grid](*args, **meta)``; while :func:`recording` on the arguments' device, only noted."""
    if _recording is not None:
        device, seen = _recording
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if tensor is not None and tensor.device == device:
            seen.add(_spec(kernel, args, meta))
            return
    kernel[grid](*args, **meta)


def _spec(kernel: Any, args: tuple[Any, ...], meta: dict[str, Any]) -> LaunchSpec:
    described: list[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            described.append(Pointer(str(a.dtype).removeprefix("torch."), a.data_ptr() % 16 == 0))
        elif a is None or isinstance(a, bool):
            described.append(a)
        elif isinstance(a, int):
            described.append(_compiled_int(a))
        elif isinstance(a, float):
            described.append(1.0)  # an fp32 argument: its value never reaches the compiler
        else:
            raise TypeError(f"cannot record a {type(a).__name__} argument of {kernel.fn.__name__}")
    return LaunchSpec(kernel.fn.__module__, kernel.fn.__name__, tuple(described), tuple(sorted(meta.items())))


def _compiled_int(value: int) -> int:
    """An int argument as the compiler sees it: Triton specialises on 1 (a constant), on divisibility by 16
    and on the type (i32 / i64); launches that agree on those share one compiled kernel."""
    if value == 1 or not -(2**31) <= value < 2**31:
        return value
    return 16 if value % 16 == 0 else 17


@contextlib.contextmanager
def recording(device: torch.device) -> Iterator[set[LaunchSpec]]:
    """Inside: kernel launches on ``device`` are recorded and skipped (their outputs stay uninitialised)."""
    global _recording
    if _recording is not None:
        raise RuntimeError("a dry run is already recording kernel launches")
    seen: set[LaunchSpec] = set()
    _recording = (_indexed(torch.device(device)), seen)
    try:
        yield seen
    finally:
        _recording = None


def _indexed(device: torch.device) -> torch.device:
    """``cuda`` as the GPU it means now (tensors always name theirs: ``cuda:0``); other devices as they are."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def wanted(device: torch.device) -> bool:
    """Whether a job on ``device`` should compile its kernels ahead (CUDA with usable Triton kernels, not the
    interpreter, not switched off with ``TUNEAVIDEO_PRECOMPILE=0``)."""
    if os.environ.get("TUNEAVIDEO_PRECOMPILE", "1") == "0" or interpreting():
        return False
    return triton_available() and kernels_run_on(device)


def cache_dir() -> Path:
    """Triton's on-disk kernel cache (``TRITON_CACHE_DIR``, else its default under the home folder)."""
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def _marker(specs: set[LaunchSpec], device: torch.device) -> Path:
    """A file in the kernel cache saying this set was compiled on this kind of GPU with these versions."""
    import triton

    digest = hashlib.sha256()
    for name in _KERNEL_MODULES:  # the kernels' own source: an edit makes every variant new
        digest.update(Path(__file__).with_name(f"{name}.py").read_bytes())
    versions = [triton.__version__, torch.__version__, str(torch.version.cuda), torch.cuda.get_device_name(device),
                list(torch.cuda.get_device_capability(device))]  # fmt: skip
    digest.update(json.dumps(versions).encode())
    for spec in sorted(json.dumps(s.to_json(), sort_keys=True) for s in specs):
        digest.update(spec.encode())
    return cache_dir() / "tuneavideo-precompiled" / digest.hexdigest()[:32]


class BackgroundCompile:
    """Worker processes compiling ``specs`` into the kernel cache; the kernels stay held back until
    :meth:`poll` (or :meth:`wait`) sees them all finish."""

    def __init__(
        self, specs: set[LaunchSpec], marker: Path, workers: int | None = None, device: torch.device | None = None
    ) -> None:
        self.marker, self.started = marker, time.perf_counter()
        self.errors: list[str] = []
        self.seconds: float | None = None
        ordered = sorted(specs, key=lambda s: (s.module, s.kernel, repr(s.args), repr(s.meta)))
        n = max(1, min(workers or _default_workers(), len(ordered)))
        self._folder = tempfile.TemporaryDirectory(prefix="tuneavideo-precompile-")
        self._procs: list[tuple[subprocess.Popen, Any]] = []
        # the workers compile for the job's GPU: it is their only (so current) device
        env = {**os.environ, "TRITON_CACHE_DIR": str(cache_dir()), **_visible_device(device)}
        try:
            for i in range(n):
                share = ordered[i::n]  # round robin: each worker gets some of every kernel
                path = Path(self._folder.name) / f"specs{i}.json"
                path.write_text(json.dumps([s.to_json() for s in share]))
                out = open(Path(self._folder.name) / f"out{i}.txt", "w+")  # closed in _finish
                cmd = [sys.executable, "-m", "tuneavideo.kernels.precompile", str(path)]
                try:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
                except BaseException:
                    out.close()
                    raise
                self._procs.append((proc, out))
        except BaseException:  # no half-started compile: stop the workers already running
            self._stop()
            raise
        _defer(True)
        self._open = True
        logger.info("compiling %d Triton kernel variants in %d worker processes", len(ordered), n)

    def poll(self) -> bool:
        """True once every worker has finished (the kernels are then switched on); never blocks."""
        if self._open and all(p.poll() is not None for p, _ in self._procs):
            self._finish()
        return not self._open

    def wait(self, timeout: float | None = None) -> None:
        """Block until the workers finish (killing them after ``timeout`` seconds); the kernels switch on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for proc, _ in self._procs:
            try:
                proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self.errors.append(f"worker {proc.pid} killed after {timeout} s")
        if self._open:
            self._finish()

    def cancel(self) -> None:
        """Stop the workers now (a cancelled or failed job); the kernels switch on, no marker is written (what
        compiled is in the cache all the same; the rest compiles on first use)."""
        if self._open:
            self._stop()
            self.errors.append("cancelled")
            self._finish(cancelled=True)

    def _stop(self) -> None:
        for proc, _ in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def _finish(self, cancelled: bool = False) -> None:
        self._open = False
        self.seconds = time.perf_counter() - self.started
        try:
            for proc, out in self._procs:
                out.seek(0)
                text = out.read()
                out.close()
                if cancelled:  # killed: what they printed is moot
                    continue
                if proc.returncode != 0:
                    self.errors.append(f"worker exited with {proc.returncode}: {text.strip()[-2000:]}")
                else:
                    self.errors.extend(line for line in text.splitlines() if line.startswith("error "))
            self._folder.cleanup()
            if not self.errors:
                self.marker.parent.mkdir(parents=True, exist_ok=True)
                self.marker.write_text(json.dumps({"seconds": round(self.seconds, 2)}))
        except OSError as exc:  # a read-only cache, say: the kernels compiled all the same
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            _defer(False)  # whatever happened, the kernels are no longer held back
        if self.errors:  # whatever failed compiles in-process on first use, as without this module
            logger.warning("ahead-of-time kernel compile: %d problem(s): %s", len(self.errors), self.errors[:3])
        logger.info("Triton kernels compiled ahead in %.1f s", self.seconds)


def _default_workers() -> int:
    # the cores this process may use (a container's or Ray worker's share, not the host's); the job keeps a core
    # or two for itself (its launches, autograd's thread)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(_MAX_WORKERS, cores - 2))


def _visible_device(device: torch.device | None) -> dict[str, str]:
    """``CUDA_VISIBLE_DEVICES`` naming only ``device``'s GPU (workers compile for their current device)."""
    if device is None or device.type != "cuda":
        return {}
    index = _indexed(device).index
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(index + 1)]
    return {"CUDA_VISIBLE_DEVICES": ids[index]} if index < len(ids) else {}


def prepare(dry_run: Callable[[], Any], device: torch.device, workers: int | None = None) -> BackgroundCompile | None:
    """Run ``dry_run`` (one forward and backward of the job's shapes) with kernel launches recorded and
    skipped; start compiling what this machine has not compiled yet. Returns the compile in flight (the kernels
    are held back until it is done: poll it), or None when there is nothing to compile."""
    started = time.perf_counter()
    with recording(device) as specs:
        dry_run()
    if not specs:
        return None
    marker = _marker(specs, device)
    logger.info("dry run: %d kernel variants in %.2f s", len(specs), time.perf_counter() - started)
    if marker.exists():
        return None
    return BackgroundCompile(specs, marker, workers, torch.device(device))


class _StandIn:
    """A tensor argument as Triton's compiler sees it: a dtype and an address (0: aligned; 8: not)."""

    def __init__(self, pointer: Pointer) -> None:
        self.dtype = getattr(torch, pointer.dtype)
        self._address = 0 if pointer.aligned else 8

    def data_ptr(self) -> int:
        return self._address


def compile_specs(specs: list[LaunchSpec]) -> list[str]:
    """Compile each launch into the on-disk cache (``JITFunction.warmup``: nothing runs); returns the errors."""
    errors = []
    for spec in specs:
        try:
            kernel = getattr(importlib.import_module(spec.module), spec.kernel)
            args = [_StandIn(a) if isinstance(a, Pointer) else a for a in spec.args]
            compiled = kernel.warmup(*args, grid=(1,), **dict(spec.meta))
            _build_launcher(compiled)
        except Exception as exc:  # reported; the job compiles this one itself on first use
            errors.append(f"error {spec.kernel}: {type(exc).__name__}: {exc}".replace("\n", " ")[:500])
    return errors


def _build_launcher(compiled: Any) -> None:
    # Triton versions that build a small C launcher per kernel signature (gcc, ~0.5 s each; cached on disk
    # beside the kernels) build it on first launch; build it here instead. Newer ones have a generic launcher.
    from triton.runtime.driver import driver

    if compiled is not None and hasattr(compiled, "src") and hasattr(compiled, "metadata"):
        driver.active.launcher_cls(compiled.src, compiled.metadata)


def _main(path: str) -> int:
    specs = [LaunchSpec.from_json(d) for d in json.loads(Path(path).read_text())]
    for line in compile_specs(specs):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1]))
