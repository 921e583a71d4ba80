"""Hand-written Triton kernels for the ``fast`` / ``low-vram`` paths (issue 15).

Each kernel replaces a chain of memory-bound PyTorch ops with one or two passes over the activation,
computes the same maths in fp32, and has a PyTorch fallback that the caller keeps using wherever
:func:`triton_usable` says no (CPU, no Triton, odd layouts). Tests run them on the CPU through
Triton's interpreter (``TRITON_INTERPRET=1``, set before this package is imported, and
``TUNEAVIDEO_TRITON_CPU=1``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import shutil
import threading
from types import ModuleType

import torch


def triton_installed() -> bool:
    """Triton can be imported (it ships with CUDA builds of torch; CPU CI installs it for the interpreter) and
    ``TUNEAVIDEO_TRITON`` is not ``0`` (the switch to the PyTorch kernels, e.g. to compare the two)."""
    return os.environ.get("TUNEAVIDEO_TRITON", "1") != "0" and _triton_importable()


def triton_available() -> bool:
    """:func:`triton_installed`, and the kernels are not held back while worker processes compile them
    (:mod:`tuneavideo.kernels.precompile`: meanwhile the PyTorch path runs)."""
    return triton_installed() and not _deferred


# Background compiles in flight (each holds the kernels back until it is done), and how many times the kernels
# have switched on after one: a CUDA graph captured before a switch replays the PyTorch path, so it is re-captured.
_deferred = 0
_generation = 0


def generation() -> int:
    """Changes whenever held-back kernels switch on (see :func:`triton_available`)."""
    return _generation


_lock = threading.Lock()


def _defer(on: bool) -> None:
    global _deferred, _generation
    with _lock:
        _deferred += 1 if on else -1
        if not on:
            _generation += 1


@functools.cache
def _triton_importable() -> bool:
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:  # an odd or partial install: stay on the PyTorch path
        return False
    return True


def kernel_module(name: str) -> ModuleType | None:
    """The kernel module ``name`` (``group_norm``, ``temporal_attention``, ``geglu``; each imports Triton) when
    :func:`triton_available`, else None. Callers then ask its ``*_supported`` predicate about their tensors."""
    return importlib.import_module(f"{__name__}.{name}") if triton_available() else None


def kernels_run_on(device: torch.device | str) -> bool:
    """Whether the kernels run on CUDA ``device`` at all (Triton installed and switched on, a GPU it supports, a
    C compiler), whether or not a compile in flight holds them back for now."""
    device = torch.device(device)
    return device.type == "cuda" and triton_installed() and _gpu_ok(device.index) and _c_compiler()


def interpreting() -> bool:
    """Triton kernels run in its CPU interpreter (tests): ``TRITON_INTERPRET=1``."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_usable(*tensors: torch.Tensor) -> bool:
    """Whether the Triton kernels may take these tensors: all on CUDA (a GPU Triton supports, with a C compiler
    for its launchers), or all on the CPU under the interpreter with ``TUNEAVIDEO_TRITON_CPU=1`` (the kernel
    tests; whole-model CPU runs keep the quicker PyTorch ops). Never inside ``torch.compile`` (``--compile``
    fuses those regions itself)."""
    if not triton_available() or _compiling():
        return False
    devices = {t.device for t in tensors}
    if {d.type for d in devices} == {"cpu"}:
        return interpreting() and os.environ.get("TUNEAVIDEO_TRITON_CPU") == "1"
    return all(kernels_run_on(d) for d in devices)


def channels_last_memory(x: torch.Tensor) -> bool:
    """A 4-D tensor in NHWC memory (and not also NCHW, as a 1x1 image is): ``SpeedPlan.channels_last``."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensors' one (they may live on another GPU)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _compiling() -> bool:
    try:
        return bool(torch.compiler.is_compiling())
    except AttributeError:  # an older torch
        return False


@functools.cache
def _gpu_ok(index: int | None) -> bool:
    # Triton compiles for compute capability 7.0 and newer; older GPUs keep the PyTorch path
    return torch.cuda.get_device_capability(index) >= (7, 0)


@functools.cache
def _c_compiler() -> bool:
    # Triton builds a small C launcher for each kernel on first use; a runtime-only image may have no compiler
    names = [os.environ.get("CC"), "cc", "gcc", "clang"]
    return any(name and shutil.which(name) for name in names)
