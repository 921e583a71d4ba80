"""The cost model: predicted seconds and bytes of tuning, inversion and editing, calibrated by real runs.

One UNet call on ``u`` units (frames x latent pixels x batch rows) costs ``a + b*u`` seconds: "train"
is one tuning step (forward + backward + AdamW on one video), "forward" one sampling or inversion step
(CFG doubles the rows). ``act_*`` are activation bytes per unit.

* cpu/tiny and cpu/toy-world: measured on this project's 2-core CPU box (fp32, torch 2.13, 2 threads;
  tiny: 4f x 16x16 -> 0.053 s fwd / 0.153 s train per row, 8f x 32x32 -> 0.53 / 1.85 s; a toy-world-sized
  UNet (64, 96, 128 channels, 2 layers): 4f x 16x16 -> 0.10 / 0.32 s, 8f x 16x16 -> 0.19 / 0.54 s,
  8f x 32x32 -> 0.88 / 2.7 s).
* cpu/sd: offline-stack notes §6 (full-size SD UNet: 5.5 s per 64x64 forward; 13.3 s per 4-frame 32x32 step).
* cuda/sd: benchmarks/speed.py on one H100 80GB (SD-1.5-sized UNet, fp16 autocast, SDPA, torch 2.11): 24f x
  64x64 tuning step 0.54 s with gradient checkpointing (peak 9.1 GiB), 8f 0.17 s without (12.8 GiB); 50
  inversion steps on 24f 10.7 s, 50 CFG edit steps 12.8 s (peak 7.7 GiB). cuda/tiny and cuda/toy-world are
  launch-bound guesses.

:class:`CostModel` multiplies these by the ratio of measured to predicted time of its own runs.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec

COSTS: dict[tuple[str, str], dict[str, Any]] = {
    ("cpu", "tiny"): {"train": (0.0, 2.0e-4), "forward": (0.0, 6.5e-5), "act_train": 6.0e4, "act_forward": 1.0e4},
    ("cpu", "toy-world"): {"train": (0.04, 3.0e-4), "forward": (0.01, 1.0e-4), "act_train": 2.0e5, "act_forward": 2.0e4},
    ("cpu", "sd"): {"train": (0.0, 3.2e-3), "forward": (0.0, 1.3e-3), "act_train": 4.0e5, "act_forward": 6.0e4},
    ("cuda", "tiny"): {"train": (0.02, 2.0e-7), "forward": (0.008, 5.0e-8), "act_train": 6.0e4, "act_forward": 1.0e4},
    ("cuda", "toy-world"): {"train": (0.03, 1.0e-6), "forward": (0.01, 2.0e-7), "act_train": 2.0e5, "act_forward": 2.0e4},
    ("cuda", "sd"): {"train": (0.0, 5.5e-6), "forward": (0.02, 1.6e-6), "act_train": 6.5e4, "act_forward": 2.8e4},
}  # fmt: skip


def cost_row(device: str, kind: str) -> dict[str, Any]:
    """The per-step constants for a device (``cpu`` / ``cuda...``) and a profile's cost kind."""
    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    return COSTS.get((dev, kind)) or COSTS[(dev, "sd")]


def step_seconds(row: dict[str, Any], what: str, units: float) -> float:
    """Predicted seconds of one ``what`` ("train" / "forward") step on ``units`` units."""
    a, b = row[what]
    return a + b * units


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class CostModel:
    """Per-step costs of one device and base, corrected by the runs it is told about (thread-safe)."""

    def __init__(self, device: str, kind: str, vae_scale_factor: int = 8) -> None:
        self.device = str(device)
        self.row = cost_row(device, kind)
        self.vae_scale_factor = int(vae_scale_factor)
        self.correction: dict[str, float] = {}  # measured / predicted, per "train" / "forward"
        self._lock = threading.Lock()

    def units(self, spec: VideoSpec | None, rows: int = 1) -> float:
        if spec is None:
            return 0.0
        vf = self.vae_scale_factor
        return float(spec.num_frames * (spec.height // vf) * (spec.width // vf) * rows)

    def measured(self, what: str, seconds: float, steps: int, units: float) -> None:
        """Fold a finished run into the correction (EMA of measured / predicted time)."""
        predicted = steps * step_seconds(self.row, what, units)
        if steps <= 0 or predicted <= 0 or seconds <= 0:
            return
        ratio = min(max(seconds / predicted, 0.01), 100.0)  # wide: a loaded machine can be 30x slower
        with self._lock:
            old = self.correction.get(what)
            self.correction[what] = ratio if old is None else 0.5 * old + 0.5 * ratio

    def seconds(self, what: str, steps: int, units: float) -> float:
        """Predicted seconds of ``steps`` steps on ``units`` units, corrected."""
        return steps * step_seconds(self.row, what, units) * self.correction.get(what, 1.0)

    def estimate(
        self,
        spec: VideoSpec,
        tune: TuneConfig,
        sample: SampleConfig,
        invert: InvertConfig,
        num_prompts: int,
        preview_steps: int,
        weights_bytes: int,
        trainable_params: int,
        element_size: int,
    ) -> dict[str, Any]:
        """Time and memory of tune + preview, one inversion and an edit of ``num_prompts`` prompts."""
        cfg_rows = 2 if sample.guidance_scale > 1.0 else 1
        units = self.units(spec)
        tune_s = self.seconds("train", tune.max_train_steps, units)
        preview_s = self.seconds("forward", preview_steps, units * cfg_rows)
        invert_s = self.seconds("forward", invert.num_inference_steps, units) if sample.use_inversion else 0.0
        edit_s = num_prompts * self.seconds("forward", sample.num_inference_steps, units * cfg_rows)
        optimizer = trainable_params * (4 + 4 + 8)  # fp32 master copy, gradient, two AdamW moments
        act_train = units * self.row["act_train"] * (0.4 if tune.gradient_checkpointing else 1.0)
        act_fwd = units * cfg_rows * self.row["act_forward"]
        measured = sorted(self.correction)
        device = "GPU" if self.device.startswith("cuda") else self.device.upper()
        text = (
            f"≈ {fmt_seconds(tune_s + preview_s)} to tune ({tune.max_train_steps} steps"
            f"{f' + {preview_steps}-step preview' if preview_steps else ''}), "
            + (f"≈ {fmt_seconds(invert_s)} to invert once, " if invert_s else "")
            + f"≈ {fmt_seconds(edit_s)} per edit of {num_prompts} prompt{'s' if num_prompts > 1 else ''}"
            f" on this {device}; peak memory ≈ {fmt_bytes(weights_bytes + optimizer + act_train)} while tuning. "
            + ("(calibrated on this machine's runs)" if measured else "(rough, from per-step constants)")
        )
        return {
            "device": self.device,
            "tune_seconds": round(tune_s, 2),
            "preview_seconds": round(preview_s, 2),
            "invert_seconds": round(invert_s, 2),
            "edit_seconds": round(edit_s, 2),
            "total_seconds": round(tune_s + preview_s + invert_s + edit_s, 2),
            "weights_bytes": int(weights_bytes),
            "tune_peak_bytes": int(weights_bytes + optimizer + act_train),
            "edit_peak_bytes": int(weights_bytes + act_fwd),
            "delta_bytes": int(trainable_params * element_size),
            "measured": measured,
            "text": text,
        }
