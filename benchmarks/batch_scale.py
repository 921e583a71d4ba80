"""Batch throughput on 1 and on N GPUs: the same jobs through ``tuneavideo.batch`` (Ray), timed.

Writes an SD-1.5-sized pipeline folder with random weights (no download; the compute is the real model's),
makes ``--jobs`` clips, and runs them as a batch on 1 GPU and then on all GPUs Ray sees (one worker per GPU,
each keeping the base loaded). An untimed batch of one short job per GPU runs first (``--no-warmup`` skips it): a
fresh machine's one-time warm-up of each GPU (~15 s of the first tune measured on an H200 host) would otherwise
fall on whichever leg first uses that GPU. Each cold leg still starts its own Ray, workers and models; each
warm-pool leg (``--no-pool`` skips them) first starts a :class:`tuneavideo.batch.BatchWorkers` pool and loads the
base on every worker, untimed (reported as ``pool_start_s``), then times the same jobs on it. Per leg it
reports each worker's busy seconds, when each worker began its first job (its start-up: process, imports, Ray),
and the wall time beyond the busiest worker's. Prints JSON with jobs per hour and the speed-up; ``--out`` writes it.

    python benchmarks/batch_scale.py --jobs 4 --frames 8 --size 512 --tune-steps 100 --out benchmarks/batch_h200x2.json
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_random_sd(folder: Path) -> Path:
    """An SD-1.5-sized pipeline folder with random weights (fp16 files)."""
    from speed import build_pipeline

    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    pipe.to(torch.float16).save_pretrained(folder)
    return folder


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from job_time import make_frames, stub_video_io
    from speed import host_info

    from tuneavideo.batch import BatchWorkers, Job, run_batch
    from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec

    frames = make_frames(args.frames, args.size)
    video_io = stub_video_io(frames)
    with tempfile.TemporaryDirectory() as tmp:
        model = str(write_random_sd(Path(tmp) / "sd15-random"))
        clips = []
        for i in range(args.jobs):
            clip = Path(tmp) / f"clip{i}.mp4"
            clip.write_bytes(f"clip {i}".encode())  # distinct content keys; frames come from memory when stubbed
            if video_io == "pyav":
                from tuneavideo.video import write_mp4

                write_mp4(np.roll(frames, i, axis=2), clip, fps=8)
            clips.append(clip)
        spec = VideoSpec(num_frames=args.frames, width=args.size, height=args.size)
        jobs = [Job(f"job{i}", str(c), "a textured pattern moving right", ("a red pattern moving right",), model,
                    spec, TuneConfig(max_train_steps=args.tune_steps), InvertConfig(args.steps),
                    SampleConfig(args.steps, 12.5, seed=i)) for i, c in enumerate(clips)]  # fmt: skip
        gpus = torch.cuda.device_count()
        os.environ.update(BENCH_FRAMES=str(args.frames), BENCH_SIZE=str(args.size))
        here = str(Path(__file__).resolve().parent)
        env = {"env_vars": {"PYTHONPATH": f"{here}:{Path(here).parent}:{os.environ.get('PYTHONPATH', '')}"}}
        if video_io != "pyav":  # the workers need the same stub as this process
            env["worker_process_setup_hook"] = "job_time.stub_from_env"

        def leg(n: int, todo: list, out: Path, pooled: bool = False) -> tuple[float, float, dict, dict | None]:
            """One batch on ``n`` GPUs; ``pooled``: on a warm pool (workers started and the base loaded untimed)."""
            ray.init(num_gpus=n, include_dashboard=False, log_to_driver=True, runtime_env=env)
            pool, preload = None, None
            if pooled:  # untimed: the pool's start-up (processes, imports, the base loaded on each worker)
                begun = time.perf_counter()
                pool = BatchWorkers()
                loads = pool.preload(model)
                preload = {"wall_s": round(time.perf_counter() - begun, 1), "load_s": loads}
            wall, started = time.time(), time.perf_counter()
            summary = run_batch(todo, out, gpus_per_job=1.0, pool=pool)
            seconds = time.perf_counter() - started
            if pool:
                pool.close()
            ray.shutdown()
            return seconds, wall, summary, preload

        warmup = None
        if args.warmup:  # untimed: every GPU's one-time warm-up happens here, so it favours neither leg
            short = [
                replace(job, name=f"warm{i}", tune=TuneConfig(max_train_steps=5))
                for i, job in enumerate(jobs[: max(gpus, 1)])
            ]
            seconds, _, summary, _ = leg(gpus, short, Path(tmp) / "warmup")
            warmup = {"seconds": round(seconds, 1), "job_timings": [j.get("timings") for j in summary["jobs"]]}
        results: dict[str, dict[int, Any]] = {"cold": {}, "warm_pool": {}}
        for n in sorted({1, gpus}):
            for kind in [k for k, on in (("cold", args.cold), ("warm_pool", args.pool)) if on]:
                pooled = kind == "warm_pool"
                seconds, wall, summary, preload = leg(n, jobs, Path(tmp) / f"{kind}{n}", pooled)
                results[kind][n] = {"seconds": round(seconds, 1), "done": summary["done"], "failed": summary["failed"],
                              "jobs_per_gpu_hour": round(args.jobs / seconds * 3600 / max(n, 1), 1),
                              "job_seconds": [j["seconds"] for j in summary["jobs"]],
                              "job_timings": [j.get("timings") for j in summary["jobs"]],
                              **worker_split(summary["jobs"], seconds, wall),
                              "errors": [j.get("error") for j in summary["jobs"] if j.get("error")]}  # fmt: skip
                if pooled:
                    results[kind][n]["pool_start_s"] = preload
    cold, warm = results["cold"], results["warm_pool"]
    speedup = cold[1]["seconds"] / cold[gpus]["seconds"] if gpus > 1 and cold else None
    warm_speedup = warm[1]["seconds"] / warm[gpus]["seconds"] if gpus > 1 and warm else None
    return {
        "gpu": torch.cuda.get_device_name(0), "gpus": gpus, **host_info(), "date": datetime.date.today().isoformat(),
        "torch": torch.__version__, "video_io": video_io, "jobs": args.jobs, "frames": args.frames,
        "size": args.size, "tune_steps": args.tune_steps, "ddim_steps": args.steps, "warmup": warmup,
        "runs": cold or None, "throughput_speedup": None if speedup is None else round(speedup, 2), "warm_pool_runs": warm or None,
        "warm_pool_speedup": None if warm_speedup is None else round(warm_speedup, 2),
    }  # fmt: skip


def worker_split(reports: list[dict[str, Any]], seconds: float, wall: float) -> dict[str, Any]:
    """Seconds each worker spent in jobs; when each began its first job, counted from the batch's start (``wall``,
    Unix seconds): its process, imports and Ray's scheduling; and the batch's wall time beyond the busiest
    worker's (start-up and the summary: what no job's own time shows)."""
    busy: dict[str, float] = {}
    first: dict[str, float] = {}
    for report in reports:
        worker = report.get("worker", "?")
        busy[worker] = busy.get(worker, 0.0) + report["seconds"]
        if "started" in report:
            first[worker] = min(first.get(worker, report["started"]), report["started"])
    return {
        "worker_busy_s": sorted(round(b, 1) for b in busy.values()),
        "worker_first_job_at_s": sorted(round(t - wall, 1) for t in first.values()),
        "overhead_s": round(seconds - max(busy.values(), default=0.0), 1),
    }


def main() -> None:
    from job_time import emit, job_parser

    ap = job_parser(__doc__, frames=8, tune_steps=100)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--no-cold", dest="cold", action="store_false", help="skip the cold legs")
    ap.add_argument("--no-pool", dest="pool", action="store_false", help="skip the warm-pool legs")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed one-job warm-up")
    args = ap.parse_args()
    emit(run(args), args.out)


if __name__ == "__main__":
    main()
