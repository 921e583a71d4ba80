"""Where a tuning step and a sampling forward spend their GPU time, and what each speed technique gives.

Builds SD-1.5-sized random components (as ``benchmarks/speed.py``) and times, warm, with CUDA events:

- ``train``: one forward + backward of the inflated UNet, 24 frames at 64² latents, only the tuned
  parameters requiring grad (the tuning step without the optimizer), per variant;
- ``infer`` / ``cfg``: one no-grad forward at batch 24 (inversion) and 48 (CFG), per variant;
- ``unet2d``: the stock 2D UNet on the same 24 images, the "no overhead from inflation" bar;
- a ``torch.profiler`` table of the heaviest kernels for the chosen variants.

Prints JSON (and the profiler tables on stderr). ``--tiny --device cpu`` is a smoke test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import SD15_UNET, build_pipeline

TRAINED = ("attn1.to_q", "attn2.to_q", "attn_temp")


def timed(fn: Any, device: torch.device, warm: int = 2, reps: int = 5) -> float:
    """Median seconds of ``fn()`` after ``warm`` calls, the GPU drained around each call."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return round(sorted(times)[len(times) // 2], 4)


def train_step_fn(unet: Any, frames: int, device: torch.device, autocast: bool) -> Any:
    """A closure running one loss forward + backward like ``tuning.tune`` (no optimizer step)."""
    gen = torch.Generator(device).manual_seed(0)
    size = unet.config.sample_size
    latents = torch.randn(1, 4, frames, size, size, device=device, generator=gen)
    noise = torch.randn_like(latents)
    embeds = torch.randn(1, 77, unet.config.cross_attention_dim, device=device, generator=gen)
    t = torch.tensor([500], device=device)
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16

    def step() -> None:
        x = latents + noise
        e = embeds
        if not autocast:
            x, e = x.to(unet.dtype), e.to(unet.dtype)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            pred = unet(x, t, encoder_hidden_states=e).sample
        loss = F.mse_loss(pred.float(), noise)
        (loss * 1024).backward()
        for p in unet.parameters():
            p.grad = None

    return step


def infer_fn(unet: Any, batch: int, frames: int, device: torch.device) -> Any:
    size = unet.config.sample_size
    x = torch.randn(batch, 4, frames, size, size, device=device, dtype=unet.dtype)
    e = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device, dtype=unet.dtype)
    t = torch.tensor([500], device=device)

    @torch.no_grad()
    def fwd() -> None:
        unet(x, t, encoder_hidden_states=e)

    return fwd


def set_trainable(unet: Any, fp32: bool, dtype: torch.dtype = torch.float16) -> None:
    from tuneavideo.tuning import select_trainable

    unet.requires_grad_(False)
    for p in select_trainable(unet, TRAINED).values():
        p.data = p.data.float() if fp32 else p.data.to(dtype)
        p.requires_grad_(True)


def profile_table(fn: Any, device: torch.device, rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--profile", nargs="*", default=["train", "cfg"], help="which to profile: train infer cfg")
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--checkpointing", action="store_true", help="also time and profile a checkpointed step")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    f = args.frames if not args.tiny else 2
    out: dict[str, Any] = _Results(gpu=torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    out["torch"] = torch.__version__
    pipe = build_pipeline(device, dtype, tiny=args.tiny)
    unet = pipe.unet
    plan = pipe.set_speed_mode("fast")

    def use(fast_kernels: bool, cudnn_benchmark: bool) -> None:
        unet.speed_plan = dataclasses.replace(plan, fast_kernels=fast_kernels, cudnn_benchmark=cudnn_benchmark)
        unet.frame_context.fast_kernels = fast_kernels

    def in_context(fn: Any) -> Any:
        def call() -> None:
            with unet.speed_plan.attention_context():  # backward too, as tuning.tune does
                fn()

        return call

    # Each technique added in turn (the sparse-causal gather from views is always on: it is exact).
    unet.train()
    steps = [
        ("train_reference_kernels_autocast", False, False, True),
        ("train_plus_frame_parallel_groupnorm", True, False, True),
        ("train_plus_half_compute", True, False, False),
        ("train_plus_cudnn_benchmark", True, True, False),
    ]
    for name, fast_kernels, bench, autocast in steps:
        use(fast_kernels, bench)
        set_trainable(unet, fp32=autocast, dtype=dtype)
        out[name] = timed(in_context(train_step_fn(unet, f, device, autocast)), device)
    if args.checkpointing:  # the low-vram mode's tuning step: the same, with gradient checkpointing
        unet.enable_gradient_checkpointing()
        out["train_checkpointing"] = timed(in_context(train_step_fn(unet, f, device, False)), device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            in_context(train_step_fn(unet, f, device, False))()
            out["train_checkpointing_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            print(
                profile_table(in_context(train_step_fn(unet, f, device, False)), device, args.rows),
                file=sys.stderr,
            )
        unet.disable_gradient_checkpointing()
    if device.type == "cuda" and "train" in args.profile:
        print(profile_table(in_context(train_step_fn(unet, f, device, False)), device, args.rows), file=sys.stderr)
    set_trainable(unet, fp32=False, dtype=dtype)
    unet.requires_grad_(False)
    unet.eval()
    for name, fast_kernels, bench in [("reference_kernels", False, False), ("plus_frame_parallel_groupnorm", True, False),
                                      ("plus_cudnn_benchmark", True, True)]:  # fmt: skip
        use(fast_kernels, bench)
        out[f"infer_b1_{name}"] = timed(in_context(infer_fn(unet, 1, f, device)), device)
        out[f"cfg_b2_{name}"] = timed(in_context(infer_fn(unet, 2, f, device)), device)
    if device.type == "cuda" and "cfg" in args.profile:
        print(profile_table(in_context(infer_fn(unet, 2, f, device)), device, args.rows), file=sys.stderr)
    # the 2D bar: the stock UNet on f images
    from diffusers import UNet2DConditionModel

    cfg = SD15_UNET if not args.tiny else dict(unet.config)
    pipe = unet = None  # free the inflated model before building the 2D one
    torch.cuda.empty_cache() if device.type == "cuda" else None
    with torch.device(device):
        u2 = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}).to(dtype)
    u2.requires_grad_(False)
    for name, p in u2.named_parameters():
        if name.endswith(("attn1.to_q.weight", "attn2.to_q.weight")):
            p.data = p.data.float()
            p.requires_grad_(True)
    u2.train()
    size, dim = cfg["sample_size"], cfg["cross_attention_dim"]
    x = torch.randn(f, 4, size, size, device=device)
    e = torch.randn(f, 77, dim, device=device)
    tt = torch.full((f,), 500, device=device)

    def step2d() -> None:
        with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16):
            pred = u2(x, tt, encoder_hidden_states=e).sample
        (F.mse_loss(pred.float(), x) * 1024).backward()
        for p in u2.parameters():
            p.grad = None

    with torch.nn.attention.sdpa_kernel(
        [torch.nn.attention.SDPBackend.CUDNN_ATTENTION, torch.nn.attention.SDPBackend.FLASH_ATTENTION,
         torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION, torch.nn.attention.SDPBackend.MATH],
        set_priority=True,
    ):  # fmt: skip
        out["unet2d_train_autocast"] = timed(step2d, device)
        u2.eval()
        u2.requires_grad_(False)
        u2.to(dtype)
        out["unet2d_infer"] = timed(lambda: u2(x.to(dtype), tt, encoder_hidden_states=e.to(dtype)), device)
    print(json.dumps(out, indent=1))


class _Results(dict):
    """A dict that prints each entry to stderr as it is set, so a crash keeps the figures so far."""

    def __setitem__(self, key: str, value: Any) -> None:
        print(f"{key}: {value}", file=sys.stderr, flush=True)
        super().__setitem__(key, value)


if __name__ == "__main__":
    main()
