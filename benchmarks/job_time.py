"""One whole job through the Engine, timed against the Engine's own estimate: the estimate's calibration check.

Builds SD-1.5-sized random components (no download; the compute is the real model's), writes a clip,
asks the engine for its estimate of tune + inversion + one edit, then runs them: upload -> tuned ->
inverted -> first edited mp4. Also measures this GPU's fp16 matrix throughput (what the cost model
scales by on GPUs it has no table for). Prints JSON; ``--out`` writes it.

    python benchmarks/job_time.py --frames 24 --size 512 --tune-steps 500 --out benchmarks/job_h200.json
    python benchmarks/job_time.py --tiny --device cpu --tune-steps 2 --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 20) -> float | None:
    """Dense fp16 matmul throughput of ``device`` in TFLOP/s (None on CPU)."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return round(2 * n**3 * repeats / (time.perf_counter() - start) / 1e12, 1)


def make_frames(frames: int, size: int) -> np.ndarray:
    """A moving random texture, uint8 (f, h, w, 3)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size // 16, size // 16, 3), dtype=np.uint8).repeat(16, 0).repeat(16, 1)
    return np.stack([np.roll(base, 8 * i, axis=1) for i in range(frames)])


def stub_video_io(frames: np.ndarray) -> str:
    """Without PyAV (the GPU image has none, and its wheel is too big to carry along), read the clip from memory
    and write outputs as .npy: only the video encoding is left out of the timings (about a second at 24 x 512²)."""
    try:
        import av  # noqa: F401

        return "pyav"
    except ImportError:
        pass
    from tuneavideo import video, workflow

    def write_npy(video_frames: Any, path: Any, *args: Any, **kwargs: Any) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".npy"), np.asarray(video_frames))
        path.write_bytes(b"")
        return path

    def read_clip(video_path: Any, spec: Any) -> Any:
        return workflow.Clip(frames=frames[: spec.num_frames], fps=8.0, spec=spec, path=str(video_path))

    video.write_mp4 = write_npy
    video.write_gif = write_npy
    workflow.read_clip = read_clip
    return "stubbed (no PyAV): clip from memory, outputs as .npy"


def stub_from_env() -> None:
    """Ray's worker set-up hook: the same stub in every worker (``BENCH_FRAMES``/``BENCH_SIZE`` give the clip)."""
    import os

    stub_video_io(make_frames(int(os.environ["BENCH_FRAMES"]), int(os.environ["BENCH_SIZE"])))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from speed import build_pipeline, host_info

    from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
    from tuneavideo.engine import Engine
    from tuneavideo.settings import Settings

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = build_pipeline(device, dtype, tiny=args.tiny)
    pipe.set_speed_mode(args.speed)
    kind = "tiny" if args.tiny else "sd"
    engine = Engine(pipe, settings=Settings(model=f"random-{kind}", device=str(device), model_kind=kind))
    spec = VideoSpec(num_frames=args.frames, width=args.size, height=args.size)
    tune = TuneConfig(max_train_steps=args.tune_steps, learning_rate=3e-5)
    sample = SampleConfig(num_inference_steps=args.steps, guidance_scale=12.5, seed=0)
    invert = InvertConfig(num_inference_steps=args.steps)
    estimate = engine.estimate(spec, tune, sample, invert, num_prompts=1, preview_steps=0)
    frames = make_frames(args.frames, args.size)
    video_io = stub_video_io(frames)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        if video_io == "pyav":
            from tuneavideo.video import write_mp4

            write_mp4(frames, clip, fps=8)
        else:
            clip.write_bytes(b"stub")
        started = time.perf_counter()
        tuned = engine.tune("bench", clip, "a textured pattern moving right", spec, tune, preview_steps=0)
        tuned_at = time.perf_counter()
        engine.invert("bench", tuned.tune_key, invert)
        inverted_at = time.perf_counter()
        edit = engine.edit("bench", tuned.tune_key, "a red pattern moving right", sample, invert_config=invert)
        done = time.perf_counter()
    measured = {
        "tune_seconds": round(tuned_at - started, 2),
        "invert_seconds": round(inverted_at - tuned_at, 2),
        "edit_seconds": round(done - inverted_at, 2),
        "total_seconds": round(done - started, 2),
        "edit_timings": edit.timings,
        "tune_timings": tuned.timings,
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None,
    }
    engine.release("bench")
    keys = ("tune_seconds", "invert_seconds", "edit_seconds", "total_seconds")
    return {
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        **host_info(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "speed_mode": pipe.speed_plan().mode,
        "frames": args.frames,
        "size": args.size,
        "tune_steps": args.tune_steps,
        "ddim_steps": args.steps,
        "video_io": video_io,
        "matmul_fp16_tflops": matmul_tflops(device),
        "estimate": {k: estimate.get(k) for k in (*keys, "source", "range")},
        "measured": measured,
        "measured_over_estimate": {k: round(measured[k] / max(estimate[k], 1e-9), 3) for k in keys},
    }


def job_parser(doc: str | None, frames: int, tune_steps: int) -> argparse.ArgumentParser:
    """The arguments every job benchmark takes (frames, size, tuning and DDIM steps, --out)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=frames)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tune-steps", type=int, default=tune_steps)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of the inversion and the edit")
    ap.add_argument("--out", help="write the JSON here")
    return ap


def emit(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def main() -> None:
    ap = job_parser(__doc__, frames=24, tune_steps=500)
    ap.add_argument("--speed", default="auto", choices=["auto", "plain", "fast", "low-vram"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (a smoke test of this script)")
    args = ap.parse_args()
    emit(run(args), args.out)


if __name__ == "__main__":
    main()
