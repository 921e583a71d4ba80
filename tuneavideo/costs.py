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

On GPUs, SD-size bases take their rows from ``tuneavideo/data/gpu_costs.json``: per GPU and speed mode,
lines fitted to ``benchmarks/speed.py``'s JSON (written by ``benchmarks/cost_table.py``; a test checks they
match). A GPU that is not in the table is scaled from the nearest one by measured fp16 matrix throughput.
:class:`CostModel` then multiplies by the ratio of measured to predicted time of its own runs, and every
estimate carries a range and its source.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from pathlib import Path
from typing import Any

from .config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
from .kernels import triton_installed

COSTS: dict[tuple[str, str], dict[str, Any]] = {
    ("cpu", "tiny"): {"train": (0.0, 2.0e-4), "forward": (0.0, 6.5e-5), "act_train": 6.0e4, "act_forward": 1.0e4},
    ("cpu", "toy-world"): {"train": (0.04, 3.0e-4), "forward": (0.01, 1.0e-4), "act_train": 2.0e5, "act_forward": 2.0e4},
    ("cpu", "sd"): {"train": (0.0, 3.2e-3), "forward": (0.0, 1.3e-3), "act_train": 4.0e5, "act_forward": 6.0e4},
    ("cuda", "tiny"): {"train": (0.02, 2.0e-7), "forward": (0.008, 5.0e-8), "act_train": 6.0e4, "act_forward": 1.0e4},
    ("cuda", "toy-world"): {"train": (0.03, 1.0e-6), "forward": (0.01, 2.0e-7), "act_train": 2.0e5, "act_forward": 2.0e4},
    ("cuda", "sd"): {"train": (0.0, 5.5e-6), "forward": (0.02, 1.6e-6), "act_train": 6.5e4, "act_forward": 2.8e4},
}  # fmt: skip


TABLE_FILE = Path(__file__).resolve().parent / "data" / "gpu_costs.json"
GPU_KINDS = ("sd", "custom")  # bases with SD-1.x's UNet: the GPU table applies to them
REFERENCE_GPU = "NVIDIA H200"  # what unknown GPUs are scaled from
# A table without low-vram rows (an older benchmark) estimates it from fast's: checkpointing recomputes the
# forward pass, measured 0.457 s against 0.319 s per 24-frame step on an H200 (shared/notes/gpu-speed.md).
LOW_VRAM_TRAIN_FACTOR = 1.43
TABLE_MODES = ("plain", "fast", "low-vram")


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b*x`` (a horizontal line through one point)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0
    return round(my - b * mx, 6), float(f"{b:.6g}")


def gpu_rows(bench: dict[str, Any], source: str) -> dict[str, Any]:
    """Cost rows per speed mode from one ``benchmarks/speed.py`` JSON (an SD-1.5-size UNet on one GPU)."""
    latent = (int(bench["size"]) // 8) ** 2
    cells = {(c["mode"], int(c["frames"])): c for c in bench["cells"]}
    modes: dict[str, Any] = {}
    for mode in TABLE_MODES:
        mine = [(f * latent, c) for (m, f), c in sorted(cells.items()) if m == mode]
        if len(mine) < 2:
            continue
        modes[mode] = {
            "train": fit_line([(u, c["tune_step_s"]) for u, c in mine]),
            "forward": fit_line([(u, c["invert_forward_s"]) for u, c in mine]),
            "sample": fit_line([(2 * u, c["cfg_forward_s"]) for u, c in mine]),  # per CFG step, 2 rows
            "peak_train": fit_line([(u, c["tune_peak_gib"] * 2**30) for u, c in mine]),
            "peak_sample": fit_line([(2 * u, c["edit_peak_gib"] * 2**30) for u, c in mine]),
        }
    return {"gpu": bench["gpu"], "date": bench["date"], "torch": bench["torch"], "source": source, "modes": modes}


def fixed_seconds(entry: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds each phase of a whole job took beyond its steps (median over ``jobs``, ``benchmarks/job_time.py``).

    Encoding, decoding, writing and the first use of kernels and CUDA graphs in a fresh process: per-step lines
    fitted to warm loops miss them, which matters most for short jobs (an 8-frame 300-step job ran 1.37x its
    step-only estimate). Keyed like the step kinds: ``train`` (tuning), ``forward`` (inversion), ``sample`` (edit).
    """
    spent: dict[str, list[float]] = {"train": [], "forward": [], "sample": []}
    for job in jobs:
        lines = entry["modes"].get(job["speed_mode"] if job["speed_mode"] != "auto" else "fast")
        if lines is None:
            continue
        units = job["frames"] * (job["size"] // 8) ** 2
        measured = job["measured"]
        steps = {"train": (job["tune_steps"], units, measured["tune_seconds"]),
                 "forward": (job["ddim_steps"], units, measured["invert_seconds"]),
                 "sample": (job["ddim_steps"], 2 * units, measured["edit_seconds"])}  # fmt: skip
        for kind, (n, u, seconds) in steps.items():
            spent[kind].append(max(0.0, seconds - n * step_seconds(lines, kind, u)))
    return {kind: round(sorted(v)[len(v) // 2], 2) for kind, v in spent.items() if v}


def kernel_compile_seconds(bench: dict[str, Any], entry: dict[str, Any] | None = None,
                           cold_jobs: tuple[dict[str, Any], ...] = ()) -> float:  # fmt: skip
    """What a machine's first job adds (compiling the fast path's Triton kernels): the most any ``cold_jobs``
    (``benchmarks/job_time.py`` with an empty kernel cache) took beyond ``entry``'s estimate of the same job with
    the kernels compiled (its step lines and fixed seconds); without them, the largest ``tune_compile_s`` of
    ``benchmarks/speed.py``'s fast cells (an in-process compile). Paid once per machine (the compiled kernels are
    cached on disk, :func:`tuneavideo.speed.persistent_kernel_cache`)."""
    if entry is None or not cold_jobs:
        return max((c.get("tune_compile_s") or 0.0 for c in bench["cells"] if c["mode"] == "fast"), default=0.0)
    extra = 0.0
    for job in cold_jobs:
        lines = entry["modes"][job["speed_mode"] if job["speed_mode"] != "auto" else "fast"]
        units = job["frames"] * (job["size"] // 8) ** 2
        phases = {"train": (job["tune_steps"], units), "forward": (job["ddim_steps"], units),
                  "sample": (job["ddim_steps"], 2 * units)}  # fmt: skip
        warm = sum(
            n * step_seconds(lines, kind, u) + entry["fixed_s"].get(kind, 0.0) for kind, (n, u) in phases.items()
        )
        extra = max(extra, job["measured"]["total_seconds"] - warm)
    return round(extra, 1)


@functools.lru_cache(maxsize=1)  # a read-only file shipped with the package
def gpu_table() -> dict[str, Any]:
    """``{gpu name: {"matmul_fp16_tflops", "modes": {mode: rows}, "source", "date", ...}}``."""
    return json.loads(TABLE_FILE.read_text()) if TABLE_FILE.is_file() else {}


def matmul_tflops(device: str, n: int = 4096, repeats: int = 10) -> float | None:
    """Dense fp16 matmul throughput of a CUDA ``device`` in TFLOP/s (about 0.1 s on a small GPU)."""
    import torch

    if not str(device).startswith("cuda"):
        return None
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    a @ b
    torch.cuda.synchronize(device)
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize(device)
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1000) / 1e12


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


def footprint(pipe: Any, trainable_modules: tuple[str, ...]) -> tuple[int, int, int]:
    """``(weight bytes of UNet + VAE + text encoder, trained parameters, bytes per UNet element)``."""
    from .errors import InputError
    from .tuning import select_trainable

    weights = sum(
        p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()
    )
    try:
        trainable = sum(p.numel() for p in select_trainable(pipe.unet, trainable_modules).values())
    except InputError:
        trainable = 0
    return weights, trainable, next(pipe.unet.parameters()).element_size()


def _scaled(line: tuple[float, float], k: float) -> tuple[float, float]:
    return line[0] * k, line[1] * k


class CostModel:
    """Per-step costs of one device, base and speed mode, corrected by the runs it is told about (thread-safe).

    ``gpu_name`` picks the GPU table's row; a GPU not in the table is scaled from :data:`REFERENCE_GPU` by
    ``tflops`` (its measured fp16 matmul throughput). ``spread`` is the relative half-width of the range.
    """

    def __init__(
        self,
        device: str,
        kind: str,
        vae_scale_factor: int = 8,
        gpu_name: str | None = None,
        speed_mode: str = "plain",
        tflops: float | None = None,
    ) -> None:
        self.device = str(device)
        self.vae_scale_factor = int(vae_scale_factor)
        self.row, self.source, self.spread = self._pick(kind, gpu_name, speed_mode, tflops)
        self.fixed: dict[str, float] = self.row.get("fixed_s", {})  # seconds per phase beyond its steps
        self.correction: dict[str, float] = {}  # measured / predicted, per "train" / "forward"
        self.runs = 0
        self._lock = threading.Lock()

    @classmethod
    def for_device(cls, device: str, kind: str, vae_scale_factor: int, speed_mode: str) -> CostModel:
        """The cost model of a loaded base; measures the matmul rate only on a GPU the table lacks."""
        name, tflops = None, None
        if str(device).startswith("cuda"):
            import torch

            name = torch.cuda.get_device_name(device)
            if kind in GPU_KINDS and name not in gpu_table():
                tflops = matmul_tflops(device)
        return cls(device, kind, vae_scale_factor, name, speed_mode, tflops)

    def _pick(self, kind: str, gpu: str | None, mode: str, tflops: float | None) -> tuple[dict[str, Any], str, float]:
        base = cost_row(self.device, kind)
        if not self.device.startswith("cuda"):
            return base, f"per-step constants measured on a 2-core CPU ({kind} base)", 0.5
        table = gpu_table()
        if kind not in GPU_KINDS or REFERENCE_GPU not in table:
            return base, f"launch-bound guesses for a {kind} base on a GPU", 0.5
        entry, scale, spread, how = table.get(gpu or ""), 1.0, 0.25, ""
        if entry is None:
            entry, spread = table[REFERENCE_GPU], 0.5
            if tflops:
                scale = entry["matmul_fp16_tflops"] / tflops
                how = f", scaled to {gpu} by measured fp16 matmul throughput ({tflops:.0f} TFLOP/s, x{scale:.2f})"
            else:
                spread, how = 1.0, f", unscaled ({gpu or 'this GPU'} is not in the table)"
        modes = entry["modes"]
        use = mode if mode in modes else ("fast" if mode == "low-vram" and "fast" in modes else "plain")
        lines = modes[use]
        derived = mode == "low-vram" and use != mode  # an older table: low-vram from fast's rows
        train_k = scale * (LOW_VRAM_TRAIN_FACTOR if derived else 1.0)
        row = {**base, "train": _scaled(lines["train"], train_k), "forward": _scaled(lines["forward"], scale),
               "sample": _scaled(lines["sample"], scale),
               "fixed_s": entry.get("fixed_s", {}),  # host-bound in good part: not scaled
               "kernel_compile_s": entry.get("kernel_compile_s", 0.0) if mode in ("fast", "low-vram") else 0.0}  # fmt: skip
        if not derived:  # low-vram's peaks are far lower than fast's: keep the activation heuristic there
            row.update(peak_train=lines["peak_train"], peak_sample=lines["peak_sample"])
        extra = f", x{LOW_VRAM_TRAIN_FACTOR} tuning for low-vram's recompute" if derived else ""
        source = f"measured on {entry['gpu']} ({entry['source']}, {entry['date']}, {use} mode){how}{extra}"
        return row, source, spread

    def units(self, spec: VideoSpec | None, rows: int = 1) -> float:
        if spec is None:
            return 0.0
        vf = self.vae_scale_factor
        return float(spec.num_frames * (spec.height // vf) * (spec.width // vf) * rows)

    def _step(self, what: str, units: float) -> float:
        """Uncorrected seconds of one step: ``train``, ``forward`` (one row) or ``sample`` (a CFG step, 2 rows)."""
        return step_seconds(self.row, what if what in self.row else "forward", units)

    def measured(self, what: str, seconds: float, steps: int, units: float, calls: int = 1) -> None:
        """Fold a finished run of ``calls`` pipeline calls into the correction (EMA of measured / predicted time
        of its steps: each call's fixed part is taken out first)."""
        predicted = steps * self._step(what, units)
        seconds = max(seconds - calls * self.fixed.get(what, 0.0), 0.5 * seconds)  # the steps' share of the run
        if steps <= 0 or predicted <= 0 or seconds <= 0:
            return
        ratio = min(max(seconds / predicted, 0.01), 100.0)  # wide: a loaded machine can be 30x slower
        key = "train" if what == "train" else "forward"  # sampling and inversion share one correction
        with self._lock:
            old = self.correction.get(key)
            self.correction[key] = ratio if old is None else 0.5 * old + 0.5 * ratio
            self.runs += 1

    def seconds(self, what: str, steps: int, units: float) -> float:
        """Predicted seconds of a run of ``steps`` steps on ``units`` units, corrected, plus its phase's fixed part."""
        if steps <= 0:
            return 0.0
        key = "train" if what == "train" else "forward"
        return steps * self._step(what, units) * self.correction.get(key, 1.0) + self.fixed.get(what, 0.0)

    def _peaks(self, units: float, cfg_rows: int, tune: TuneConfig, weights: int, optimizer: int) -> tuple[int, int]:
        if "peak_train" in self.row and not tune.gradient_checkpointing:  # measured peaks (weights included)
            return int(step_seconds(self.row, "peak_train", units)), int(
                step_seconds(self.row, "peak_sample", 2 * units)
            )
        act_train = units * self.row["act_train"] * (0.4 if tune.gradient_checkpointing else 1.0)
        return int(weights + optimizer + act_train), int(weights + units * cfg_rows * self.row["act_forward"])

    # Over 60 lines: the estimate's numbers, its range and the one sentence the app and the CLI show.
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
        cfg = sample.guidance_scale > 1.0
        units = self.units(spec)
        step = ("sample", units * 2) if cfg else ("forward", units)
        tune_s = self.seconds("train", tune.max_train_steps, units)
        preview_s = self.seconds(step[0], preview_steps, step[1])
        invert_s = self.seconds("forward", invert.num_inference_steps, units) if sample.use_inversion else 0.0
        edit_s = num_prompts * self.seconds(step[0], sample.num_inference_steps, step[1])  # one pipeline call each
        optimizer = trainable_params * (4 + 4 + 8)  # fp32 master copy, gradient, two AdamW moments
        tune_peak, edit_peak = self._peaks(units, 2 if cfg else 1, tune, weights_bytes, optimizer)
        total = tune_s + preview_s + invert_s + edit_s
        calibrated = {"train", "forward"} <= set(self.correction)
        spread = min(self.spread, 0.2) if calibrated else self.spread
        low, high = total * (1 - spread), total * (1 + spread)
        # the first job of a machine (nothing run here yet) may compile the fast path's kernels first
        compile_s = 0.0 if self.runs or not triton_installed() else self.row.get("kernel_compile_s", 0.0)
        high += compile_s
        source = self.source + (f"; calibrated by {self.runs} runs here" if self.correction else "")
        device = "GPU" if self.device.startswith("cuda") else self.device.upper()
        text = (
            f"≈ {fmt_seconds(tune_s + preview_s)} to tune ({tune.max_train_steps} steps"
            f"{f' + {preview_steps}-step preview' if preview_steps else ''}), "
            + (f"≈ {fmt_seconds(invert_s)} to invert once, " if invert_s else "")
            + f"≈ {fmt_seconds(edit_s)} per edit of {num_prompts} prompt{'s' if num_prompts > 1 else ''}"
            f" on this {device} ({fmt_seconds(low)}–{fmt_seconds(high)} in all); peak memory ≈ "
            f"{fmt_bytes(tune_peak)} while tuning"
            + (f"; a machine's first job adds ≈ {fmt_seconds(compile_s)} compiling kernels. " if compile_s else ". ")
            + (
                "(calibrated on this machine's runs)"
                if self.correction
                else "(rough, from per-step constants)"
                if self.spread >= 0.5
                else "(from measured per-step times)"
            )
            + f" Source: {source}."
        )
        return {
            "device": self.device,
            "tune_seconds": round(tune_s, 2),
            "preview_seconds": round(preview_s, 2),
            "invert_seconds": round(invert_s, 2),
            "edit_seconds": round(edit_s, 2),
            "total_seconds": round(total, 2),
            "range": [round(low, 2), round(high, 2)],
            "source": source,
            "weights_bytes": int(weights_bytes),
            "tune_peak_bytes": tune_peak,
            "edit_peak_bytes": edit_peak,
            "delta_bytes": int(trainable_params * element_size),
            "measured": sorted(self.correction),
            "text": text,
        }
