"""Speed, memory and exactness of the speed modes (plain / fast / low-vram) at SD-1.5 size.

No weights are downloaded: the components are built from SD-1.5's configs with random weights, so
the figures are those of the real model's compute. For each frame count and mode it measures, on
one pipeline (the trained parameters are restored between modes):

- tuning: seconds per step (median of warm steps), peak memory, the loss curve;
- DDIM inversion (50 steps, no CFG) and edit sampling (50 steps, CFG 12.5), warm, plus decode;
- compile time: what the first calls cost over warm ones;
- exactness against the plain mode: PSNR of the decoded edit, relative error of the latents and
  the largest difference of the tuning losses.

Prints JSON and a markdown table; ``--out`` also writes them to files.

    python benchmarks/speed.py --frames 24 8 --modes plain fast low-vram --out benchmarks/speed_h200
    python benchmarks/speed.py --tiny --device cpu   # a smoke test of this script, seconds on a CPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

SD15_UNET = {
    "sample_size": 64,
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE = {
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 512,
}
SD15_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
EDIT_PROMPT = "spider man is skiing on the beach"
TUNE_PROMPT = "a man is skiing"


def build_pipeline(device: torch.device, dtype: torch.dtype, tiny: bool = False) -> Any:
    """SD-1.5-sized (or tiny) random components on ``device``; no download."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from tuneavideo import testing
    from tuneavideo.pipeline import TuneAVideoPipeline
    from tuneavideo.tokenizer import clip_tokenizer
    from tuneavideo.unet import TuneAVideoUNet

    unet_cfg, vae_cfg = (testing.TINY_UNET_CONFIG, testing.TINY_VAE_CONFIG) if tiny else (SD15_UNET, SD15_VAE)
    text_cfg = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    with torch.device(device):
        unet = TuneAVideoUNet(**unet_cfg).to(dtype)
        vae = AutoencoderKL(**vae_cfg).to(dtype)
        text = CLIPTextModel(CLIPTextConfig(**(text_cfg if tiny else SD15_TEXT), projection_dim=768)).to(dtype)
    pipe = TuneAVideoPipeline(vae, text, clip_tokenizer(), unet, DDIMScheduler(**testing.SD_SCHEDULER_CONFIG))
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Clock:
    """Wall time with the GPU drained first, and the peak of allocated GPU memory."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None


def host_info() -> dict[str, Any]:
    """The host CPU (model, cores): at 8 frames the CPU's kernel launch rate sets the pace, so cells move
    between hosts of one GPU kind; this says which host a figure came from."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import platform

    return {"host_cpu": model or platform.processor() or platform.machine(), "host_cores": os.cpu_count()}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [0, 1] (inf when equal)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else round(10 * np.log10(1.0 / mse), 2)


def measure_tuning(pipe: Any, frames: np.ndarray, mode: str, steps: int, clock: Clock) -> dict[str, Any]:
    """Tune ``steps`` steps in ``mode``; step times come from the progress callback."""
    from tuneavideo import TuneConfig, tune

    stamps: list[float] = []
    clock.reset_peak()
    start = clock.now()
    delta = tune(
        pipe,
        frames,
        TUNE_PROMPT,
        TuneConfig(max_train_steps=steps, seed=33),
        callback=lambda event: stamps.append(clock.now()),
        speed=mode,
    )
    times = np.diff([start, *stamps])  # the first includes VAE encode and any compile
    warm = times[3:] if len(times) > 4 else times[1:]
    step = float(np.median(warm))
    return {
        "tune_step_s": round(step, 4),
        "tune_first_step_s": round(float(times[0]), 2),
        "tune_compile_s": round(float(times[:3].sum() - 3 * step), 1) if len(times) > 4 else None,
        "tune_peak_gib": clock.peak_gib(),
        "losses": [round(x, 6) for x in delta.losses],
        "skipped_steps": delta.record.get("skipped_steps"),
        "cuda_graph_steps": delta.record.get("cuda_graph_steps"),
    }


def measure_sampling(pipe: Any, frames: np.ndarray, steps: int, clock: Clock) -> tuple[dict[str, Any], torch.Tensor]:
    """Encode, invert (no CFG) and edit (CFG 12.5) warm; 2-step calls first absorb compiling."""
    out: dict[str, Any] = {}
    with torch.no_grad():
        latents = pipe.encode_video(frames)
        t0 = clock.now()
        pipe.invert(latents, num_inference_steps=2)
        warm_invert = clock.now() - t0
        clock.reset_peak()
        t0 = clock.now()
        inv = pipe.invert(latents, num_inference_steps=steps)
        out["invert_s"] = round(clock.now() - t0, 3)
        out["invert_peak_gib"] = clock.peak_gib()
        t0 = clock.now()
        pipe(EDIT_PROMPT, latents=inv, num_inference_steps=2, guidance_scale=12.5, output_type="latent")
        warm_edit = clock.now() - t0
        clock.reset_peak()
        t0 = clock.now()
        edited = pipe(EDIT_PROMPT, latents=inv, num_inference_steps=steps, guidance_scale=12.5, output_type="latent")
        out["edit_s"] = round(clock.now() - t0, 3)
        out["edit_peak_gib"] = clock.peak_gib()
        t0 = clock.now()
        video = pipe.decode_latents(edited.videos)  # (1, 3, f, H, W) in [0, 1], CPU
        out["decode_s"] = round(clock.now() - t0, 3)
    out["invert_forward_s"] = round(out["invert_s"] / steps, 4)
    out["cfg_forward_s"] = round(out["edit_s"] / steps, 4)
    # what the 2-step warm-up calls cost over two warm steps: compiling for these shapes
    out["sampling_compile_s"] = round(
        max(0.0, warm_invert - 2 * out["invert_forward_s"]) + max(0.0, warm_edit - 2 * out["cfg_forward_s"]), 1
    )
    out["_latents"] = edited.videos.float().cpu()
    return out, video


def attention_kernels(device: torch.device, frames: int) -> dict[str, Any]:
    """Sparse-causal attention at 64² latents (4096 queries, 8192 keys, 8 heads of 40): SDPA kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(frames, 8, 4096, 40, device=device, dtype=torch.float16, requires_grad=True)
    k = torch.randn(frames, 8, 8192, 40, device=device, dtype=torch.float16, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    result = {}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                for _ in range(2):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(5):
                    torch.nn.functional.scaled_dot_product_attention(q, k, v).sum().backward()
                torch.cuda.synchronize()
                result[name.lower() + "_fwd_bwd_ms"] = round((time.perf_counter() - t0) / 5 * 1000, 2)
        except Exception as exc:  # a kernel this GPU / build lacks
            result[name.lower()] = f"unavailable: {type(exc).__name__}"
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every (frames, mode) cell; the plain mode first, as the reference of the others."""
    import diffusers

    from tuneavideo.tuning import select_trainable

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    clock = Clock(device)
    if not args.train_graphs:
        os.environ["TUNEAVIDEO_TRAIN_GRAPHS"] = "0"
    # The kernels compile in-process on first use, so the timed steps are theirs from the start (a job compiles
    # them in worker processes while it runs its first steps on the PyTorch path: job_time.py measures that).
    os.environ.setdefault("TUNEAVIDEO_PRECOMPILE", "0")
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        **host_info(),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "size": args.size,
        "dtype": str(dtype),
        "tune_steps_timed": args.tune_steps,
        "ddim_steps": args.steps,
        "train_graphs": bool(args.train_graphs),
        "cells": [],
    }
    t0 = time.perf_counter()
    torch.manual_seed(0)  # the same random weights every run: edit PSNR against plain moved 44-56 dB with them
    pipe = build_pipeline(device, dtype, tiny=args.tiny)
    result["build_s"] = round(time.perf_counter() - t0, 1)
    base = {
        k: v.detach().clone() for k, v in select_trainable(pipe.unet, ("attn1.to_q", "attn2.to_q", "attn_temp")).items()
    }
    if device.type == "cuda" and not args.tiny:
        result["sc_attention_kernels_24f"] = attention_kernels(device, 24)
    for f in args.frames:
        rng = np.random.default_rng(0)
        frames = (rng.random((f, args.size, args.size, 3)) * 255).astype(np.uint8)
        reference: dict[str, Any] = {}
        for mode in args.modes:
            cell: dict[str, Any] = {"frames": f, "mode": mode}
            try:
                started = time.perf_counter()
                cell.update(measure_tuning(pipe, frames, mode, args.tune_steps, clock))
                with torch.no_grad():  # back to the untuned base, so every mode starts alike
                    params = dict(pipe.unet.named_parameters())
                    for name, value in base.items():
                        params[name].copy_(value)
                with warnings.catch_warnings(record=True) as caught:  # e.g. a CUDA graph that could not be captured
                    warnings.simplefilter("always")
                    sampling, video = measure_sampling(pipe, frames, args.steps, clock)
                cell["cuda_graphs"] = pipe.speed_plan().cuda_graphs
                if caught:
                    cell["warnings"] = sorted({str(w.message)[:300] for w in caught})
                latents = sampling.pop("_latents")
                cell.update(sampling)
                cell["compile_s"] = round((cell.get("tune_compile_s") or 0) + cell["sampling_compile_s"], 1)
                cell["cell_wall_s"] = round(time.perf_counter() - started, 1)
                if mode == args.modes[0]:
                    reference = {"video": video, "latents": latents, "losses": cell["losses"]}
                else:
                    cell["edit_psnr_vs_" + args.modes[0]] = psnr(video, reference["video"])
                    err = (latents - reference["latents"]).norm() / reference["latents"].norm()
                    cell["latent_rel_err_vs_" + args.modes[0]] = float(f"{float(err):.3g}")
                    diffs = np.abs(np.array(cell["losses"]) - np.array(reference["losses"]))
                    cell["loss_max_abs_diff_vs_" + args.modes[0]] = float(f"{float(diffs.max()):.3g}")
            except Exception as exc:  # keep the other cells' figures
                cell["error"] = f"{type(exc).__name__}: {exc}"[:800]
            # projected end-to-end job: 500 tuning steps + inversion + edit + decode, compile included
            if "tune_step_s" in cell and "edit_s" in cell:
                cell["projected_job_s"] = round(
                    500 * cell["tune_step_s"]
                    + cell["invert_s"]
                    + cell["edit_s"]
                    + cell["decode_s"]
                    + cell["compile_s"],
                    1,
                )
            result["cells"].append(cell)
            print(json.dumps(cell), file=sys.stderr, flush=True)
            if args.out:
                write(result, args.out)
    return result


def markdown(result: dict[str, Any]) -> str:
    """One row per (frames, mode)."""
    head = (
        f"{result['gpu']}, torch {result['torch']}, diffusers {result['diffusers']}, {result['date']}, "
        f"{result['size']}², {result['dtype']}\n\n"
        "| frames | mode | tune step | tune peak | inversion 50 | edit 50 CFG 12.5 | sampling peak "
        "| compile | edit PSNR vs plain | projected job |\n|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for c in result["cells"]:
        if "error" in c and "tune_step_s" not in c:
            rows.append(f"| {c['frames']} | {c['mode']} | error: {c['error'][:80]} |||||||| ")
            continue
        p = next((v for k, v in c.items() if k.startswith("edit_psnr_vs_")), "—")
        rows.append(
            f"| {c['frames']} | {c['mode']} | {c.get('tune_step_s')} s | {c.get('tune_peak_gib')} GiB "
            f"| {c.get('invert_s')} s | {c.get('edit_s')} s | {c.get('edit_peak_gib')} GiB "
            f"| {c.get('compile_s')} s | {p} | {c.get('projected_job_s')} s |"
        )
    return head + "\n".join(rows) + "\n"


def write(result: dict[str, Any], out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps(result, indent=1, default=str))
    Path(out + ".md").write_text(markdown(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[24, 8])
    ap.add_argument("--modes", nargs="+", default=["plain", "fast", "low-vram"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tune-steps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and sampling")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (a smoke test of this script)")
    ap.add_argument("--out", help="write OUT.json and OUT.md")
    ap.add_argument("--no-train-graphs", dest="train_graphs", action="store_false",
                    help="tune eagerly (fast mode replays its tuning steps from a CUDA graph by default)")  # fmt: skip
    args = ap.parse_args()
    result = run(args)
    print(json.dumps(result))
    print(markdown(result))
    if args.out:
        write(result, args.out)


if __name__ == "__main__":
    main()
