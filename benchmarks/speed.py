"""Speed and memory of tuning, inversion and sampling at SD-1.5 size (random weights, same compute).

No weights are downloaded: the components are built from SD-1.5's configs with random weights, so
the figures are those of the real model's compute. Prints one JSON object.

    python benchmarks/speed.py --frames 24 --size 512 --tune-steps 20 --steps 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def build_sd15_pipeline(device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from tuneavideo.pipeline import TuneAVideoPipeline
    from tuneavideo.testing import SD_SCHEDULER_CONFIG
    from tuneavideo.tokenizer import clip_tokenizer
    from tuneavideo.unet import TuneAVideoUNet

    with torch.device(device):
        unet = TuneAVideoUNet(**SD15_UNET).to(dtype)
        vae = AutoencoderKL(**SD15_VAE).to(dtype)
        text = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                projection_dim=768,
            )
        ).to(dtype)
    pipe = TuneAVideoPipeline(vae, text, clip_tokenizer(), unet, DDIMScheduler(**SD_SCHEDULER_CONFIG))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None


def main() -> None:
    from tuneavideo import TuneConfig, tune

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tune-steps", type=int, default=10)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and sampling")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "xformers"])
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    result: dict = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "frames": args.frames,
        "size": args.size,
        "dtype": str(dtype),
        "torch": torch.__version__,
        "attention": args.attention,
    }

    t0 = time.perf_counter()
    pipe = build_sd15_pipeline(device, dtype)
    pipe.unet.set_attention_backend(args.attention)
    result["build_s"] = round(time.perf_counter() - t0, 1)
    result["unet_params_m"] = round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1)
    frames = (np.random.default_rng(0).random((args.frames, args.size, args.size, 3)) * 255).astype(np.uint8)

    # tuning: first step separately (warm-up, kernels), then the steady rate
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg = TuneConfig(max_train_steps=args.tune_steps, gradient_checkpointing=args.gradient_checkpointing)
    times: list[float] = []

    def cb(event) -> None:
        _sync(device)
        times.append(time.perf_counter())

    t0 = time.perf_counter()
    delta = tune(pipe, frames, "a man is skiing", cfg, callback=cb)
    steady = np.diff(times[1:]) if len(times) > 2 else np.array([times[-1] - t0])
    result.update(
        tune_total_s=round(time.perf_counter() - t0, 2),
        tune_s_per_step=round(float(np.median(steady)), 3),
        tune_500_steps_min=round(float(np.median(steady)) * 500 / 60, 1),
        tune_peak_gib=_peak_gib(device),
        trainable_params_m=round(delta.record["trainable_parameters"] / 1e6, 2),
        delta_fp16_mb=round(delta.nbytes / 2 / 2**20, 1)
        if delta.state_dict and next(iter(delta.state_dict.values())).dtype == torch.float32
        else round(delta.nbytes / 2**20, 1),
    )

    with torch.no_grad():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        t0 = time.perf_counter()
        latents = pipe.encode_video(frames)
        _sync(device)
        result["encode_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        inv = pipe.invert(latents, num_inference_steps=args.steps)
        _sync(device)
        result["invert_s"] = round(time.perf_counter() - t0, 2)
        result["invert_peak_gib"] = _peak_gib(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = pipe(
            "spider man is skiing on the beach", latents=inv, num_inference_steps=args.steps, guidance_scale=12.5
        )
        _sync(device)
        result["edit_s"] = round(time.perf_counter() - t0, 2)
        result["edit_peak_gib"] = _peak_gib(device)
        result["finite"] = bool(np.isfinite(out.videos).all())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
