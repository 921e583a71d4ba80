"""What a fresh worker process pays before its first job runs at full speed (a batch's or the app's worker).

Times, in one new process: importing torch and initialising CUDA, importing the package (diffusers,
transformers), loading an SD-1.5-sized base from a local folder (random weights, written first), and a
short tune twice (the first pays for first-time kernels and cuDNN autotuning). Prints JSON.

    python benchmarks/worker_start.py --frames 8 --size 512 --steps 5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

T0 = time.perf_counter()
import torch  # noqa: E402 - timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    out: dict[str, float | str] = {}
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
    out["import_torch_and_cuda_init_s"] = round(time.perf_counter() - T0, 2)
    t = time.perf_counter()
    from batch_scale import write_random_sd
    from job_time import emit, make_frames

    from tuneavideo import TuneConfig, tune
    from tuneavideo.settings import load_base

    out["import_package_s"] = round(time.perf_counter() - t, 2)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder = write_random_sd(Path(tmp) / "sd15-random")
        out["write_random_base_s (setup, not a worker cost)"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        pipe = load_base(str(folder), device, "fp16" if cuda else "fp32")
        pipe.set_progress_bar_config(disable=True)
        if cuda:
            torch.cuda.synchronize()
        out["load_base_s"] = round(time.perf_counter() - t, 2)
    frames = make_frames(args.frames, args.size)
    for name in ("first_tune_s", "second_tune_s"):
        t = time.perf_counter()
        tune(pipe, frames, "a textured pattern moving right", TuneConfig(max_train_steps=args.steps))
        if cuda:
            torch.cuda.synchronize()
        out[name] = round(time.perf_counter() - t, 2)
    out["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    emit(out, None)


if __name__ == "__main__":
    main()
