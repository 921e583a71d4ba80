"""End-to-end time on CPU with the embedded toy-world model: tune 100 steps + invert + one edit.

The budget for a laptop is 3 minutes in total on 2 cores (8 frames, 128 px). Prints one JSON object.

    python benchmarks/cpu_toyworld.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing


def main() -> None:
    from tuneavideo import TuneAVideoPipeline, TuneConfig, tune
    from tuneavideo.toyworld.render import MotionSpec, ObjectSpec, SceneSpec, VideoSceneSpec, caption, render_video

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(REPO / "models" / "toy-world"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--tune-steps", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and the edit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    pipe = TuneAVideoPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    scene = SceneSpec(objects=(ObjectSpec("circle", "red", 0.35, 0.3, 0.5),), background="blue")
    spec = VideoSceneSpec(scene=scene, motion=MotionSpec("right"), num_frames=args.frames, size=128)
    frames, _ = render_video(spec)
    prompt = caption(scene, spec.motion)

    timings = {"load_s": load_s}
    t0 = time.perf_counter()
    delta = tune(pipe, frames, prompt, TuneConfig(max_train_steps=args.tune_steps, learning_rate=1e-4))
    timings["tune_s"] = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        inverted = pipe.invert(pipe.encode_video(frames), num_inference_steps=args.steps)
        timings["invert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        video = pipe(
            prompt.replace("red", "green"), latents=inverted, num_inference_steps=args.steps, guidance_scale=7.5
        ).videos
        timings["edit_s"] = time.perf_counter() - t0
    total = timings["tune_s"] + timings["invert_s"] + timings["edit_s"]
    result = {
        "model": Path(args.model).name,
        "threads": args.threads,
        "frames": args.frames,
        "size": 128,
        "tune_steps": args.tune_steps,
        "ddim_steps": args.steps,
        **{k: round(v, 1) for k, v in timings.items()},
        "tune_plus_edit_s": round(total, 1),
        "within_3_min": total <= 180,
        "final_loss": round(delta.record["final_loss"], 4),
        "finite": bool(np.isfinite(video).all()),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
