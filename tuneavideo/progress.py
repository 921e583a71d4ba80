"""One progress-callback signature shared by tuning, inversion and sampling.

Every long loop calls ``callback(ProgressEvent(...))`` once per step. A callback may raise
:class:`tuneavideo.errors.Cancelled` to stop the job at the end of the current step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressEvent:
    """One finished step of a long job."""

    stage: str  # "tune" | "invert" | "sample" | "encode" | "decode"
    step: int  # steps done so far, 1-based
    total: int
    elapsed: float  # seconds since the job started
    loss: float | None = None
    timestep: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def eta(self) -> float:
        """Seconds left, extrapolated from the mean step time so far."""
        if self.step <= 0:
            return float("nan")
        return self.elapsed / self.step * (self.total - self.step)

    @property
    def fraction(self) -> float:
        return self.step / max(self.total, 1)


ProgressCallback = Callable[[ProgressEvent], None]


class ProgressReporter:
    """Turns "step done" calls into :class:`ProgressEvent` s for an optional callback (and tqdm)."""

    def __init__(
        self, stage: str, total: int, callback: ProgressCallback | None = None, tqdm_bar: bool = False
    ) -> None:
        self.stage, self.total, self.callback = stage, total, callback
        self.start = time.perf_counter()
        self.bar = None
        if tqdm_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=stage, dynamic_ncols=True)

    def step(self, step: int, loss: float | None = None, timestep: int | None = None, **extra: object) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}")
        if self.callback is not None:
            event = ProgressEvent(
                self.stage, step, self.total, time.perf_counter() - self.start, loss, timestep, dict(extra)
            )
            self.callback(event)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
