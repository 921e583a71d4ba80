"""Ray for batch jobs and the app's engine workers: imported on demand only, started locally or joined.

Ray is optional (``pip install "tuneavideo[ray]"``): nothing imports it until a feature that needs it
starts, and a missing Ray is a :class:`~tuneavideo.errors.MissingDependencyError` naming the feature.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from .errors import MissingDependencyError

INSTALL = '"ray>=2.40" (or: pip install "tuneavideo[ray]")'


def ray_installed() -> bool:
    """Whether Ray can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def import_ray(feature: str) -> Any:
    """The ``ray`` module, or a :class:`MissingDependencyError` saying that ``feature`` needs it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError(feature, INSTALL) from exc
    return ray


def connect(ray: Any, address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` or start a local one; True when this call started it.

    A caller that started Ray shuts it down when done (``ray.shutdown()``); one that found it running leaves
    it. ``num_cpus`` applies to a local start only (a cluster has its own), whose workers run at the driver's
    priority (Ray's default is nice 15). Worker logs stay out of the
    driver's output: failures come back as values (see :mod:`tuneavideo.workers`) or per-job reports.
    """
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if not address and not os.environ.get("RAY_ADDRESS"):  # a local start
        if num_cpus:
            kwargs["num_cpus"] = int(num_cpus)
        # Ray runs its workers at nice 15 by default: here they do the work (the driver mostly waits), and a
        # busy machine would starve them (minutes to start two engines on two busy cores instead of seconds)
        kwargs["_system_config"] = {"worker_niceness": 0}
    ray.init(address=address or None, **kwargs)
    return True


def cluster_cpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))


def cluster_gpus(ray: Any) -> int:
    return int(ray.cluster_resources().get("GPU", 0))


__all__ = ["cluster_cpus", "cluster_gpus", "connect", "import_ray", "ray_installed"]
