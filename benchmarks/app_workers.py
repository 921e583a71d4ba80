"""Two clients tuning at once on the app's engine workers (one Ray actor per GPU): does each keep its speed?

Writes an SD-1.5-sized pipeline folder with random weights (no download), starts the app's engine
(:class:`tuneavideo.workers.EnginePool`, the object ``python app.py`` serves on several GPUs) with one
worker per GPU, and times, after a short warm-up tune on every worker:

- ``alone``: one session tuning one clip while the other workers are idle;
- ``together``: two sessions, from two threads (as two browser clients through the Gradio queue),
  tuning two other clips at the same time. Each should finish within 1.15x of ``alone``.

The Gradio HTTP layer is not in the loop (the GPU machines have no Gradio); the queue calls exactly
these methods. Prints JSON; ``--out`` writes it.

    python benchmarks/app_workers.py --frames 8 --size 512 --tune-steps 100 --out benchmarks/app_workers_h200x2.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed_tune(pool: Any, session: str, clip: Path, prompt: str, spec: Any, tune: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = pool.tune(session, clip, prompt, spec, tune, preview_steps=0)
    ended = time.perf_counter()
    return {"session": session, "worker": pool.where(session), "start": started, "end": ended,
            "seconds": round(ended - started, 2), "tune_key": result.tune_key}  # fmt: skip


def together(pool: Any, jobs: list[tuple[str, Path, str]], spec: Any, tune: Any) -> list[dict[str, Any]]:
    """Run ``jobs`` from one thread each, started together; returns their timings (errors re-raised)."""
    results: list[Any] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def client(i: int) -> None:
        session, clip, prompt = jobs[i]
        barrier.wait()
        try:
            results[i] = timed_tune(pool, session, clip, prompt, spec, tune)
        except BaseException as exc:  # re-raised in the caller's thread
            results[i] = exc

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import ray
    from batch_scale import write_random_sd
    from job_time import make_frames, stub_video_io

    from tuneavideo.config import TuneConfig, VideoSpec
    from tuneavideo.settings import Settings
    from tuneavideo.workers import EnginePool

    gpus = torch.cuda.device_count()
    frames = make_frames(args.frames, args.size)
    video_io = stub_video_io(frames)
    spec = VideoSpec(num_frames=args.frames, width=args.size, height=args.size)
    tune = TuneConfig(max_train_steps=args.tune_steps)
    warm = TuneConfig(max_train_steps=5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = write_random_sd(tmp_path / "sd15-random")
        clips = []
        for i in range(2 * gpus + 2):
            clip = tmp_path / f"clip{i}.mp4"
            if video_io == "pyav":
                from tuneavideo.video import write_mp4

                write_mp4(np.roll(frames, i, axis=2), clip, fps=8)
            else:
                clip.write_bytes(f"clip {i}".encode())  # distinct keys; the stub serves the frames
            clips.append(clip)
        os.environ.update(BENCH_FRAMES=str(args.frames), BENCH_SIZE=str(args.size))
        here = str(Path(__file__).resolve().parent)
        env: dict[str, Any] = {
            "env_vars": {"PYTHONPATH": f"{here}:{Path(here).parent}:{os.environ.get('PYTHONPATH', '')}"}
        }
        if video_io != "pyav":  # the workers need the same stub as this process
            env["worker_process_setup_hook"] = "job_time.stub_from_env"
        ray.init(num_gpus=gpus, include_dashboard=False, log_to_driver=False, runtime_env=env)
        settings = Settings(model=str(model), device="cuda", cache_dir=str(tmp_path / "cache"),
                            output_dir=str(tmp_path / "out"), allow_model_dirs=(str(tmp_path),))  # fmt: skip
        started = time.perf_counter()
        pool = EnginePool(settings, workers=gpus)
        load_s = time.perf_counter() - started
        try:
            # warm-up: every worker tunes a few steps (cuDNN autotuning, allocator), all at once
            together(pool, [(f"warm{i}", clips[i], f"warm-up {i}") for i in range(gpus)], spec, warm)
            alone = timed_tune(pool, "alone", clips[gpus], "a textured pattern moving right", spec, tune)
            pair = together(
                pool,
                [
                    ("client-a", clips[gpus + 1], "a pattern moving right"),
                    ("client-b", clips[gpus + 2], "a pattern moving"),
                ],
                spec,
                tune,
            )
            stats = pool.stats()
        finally:
            pool.close()
            ray.shutdown()
    overlap = min(p["end"] for p in pair) - max(p["start"] for p in pair)
    for p in (alone, *pair):
        p.pop("start"), p.pop("end")
    return {
        "gpu": torch.cuda.get_device_name(0), "gpus": gpus, "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "video_io": video_io, "frames": args.frames, "size": args.size,
        "tune_steps": args.tune_steps, "workers": gpus, "workers_load_seconds": round(load_s, 1),
        "alone": alone, "together": pair, "overlap_seconds": round(overlap, 2),
        "slowdown": [round(p["seconds"] / alone["seconds"], 3) for p in pair],
        "distinct_workers": len({p["worker"] for p in pair}) == len(pair),
        "stats_total": stats.get("total"),
    }  # fmt: skip


def main() -> None:
    from job_time import emit, job_parser

    ap = job_parser(__doc__, frames=8, tune_steps=100)
    args = ap.parse_args()
    emit(run(args), args.out)


if __name__ == "__main__":
    main()
