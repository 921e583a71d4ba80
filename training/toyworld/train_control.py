"""Train a control model for the embedded toy-world model: a Canny ControlNet or a depth T2I-Adapter.

The base pipeline (``models/toy-world``: VAE, text encoder, UNet) stays frozen; only the control model
learns, with the standard noise-prediction loss (epsilon MSE, SD's scaled-linear betas, 10 % empty captions;
timesteps drawn as ``t = (1 - u^3) T`` by default, the T2I-Adapter paper's emphasis on the noisy steps where a
hint fixes the layout; ``--timesteps uniform`` for the plain draw):

* ``--kind controlnet``: a diffusers ``ControlNetModel`` made by ``ControlNetModel.from_unet(base UNet)``
  (encoder copied, zero convolutions; hint embedding of channels ``--cond-channels`` with Kaiming init, see
  :func:`build_control_model`), conditioned on **Canny edges** of the rendered image, computed with the app's
  own extractor ``tuneavideo.hints.canny_hint(frame, 100, 200)``; its residuals enter the frozen UNet as
  ``down_block_additional_residuals`` / ``mid_block_additional_residual``.
* ``--kind t2i_adapter``: a diffusers ``T2IAdapter`` (``full_adapter``, channels = the UNet's
  ``block_out_channels``, x8 pixel unshuffle) conditioned on the renderer's depth-like silhouette map
  ``tuneavideo.toyworld.render.render_depth_hint``; its features enter as
  ``down_intrablock_additional_residuals``.

Training images are rendered exactly like the base model's (``training.toyworld.data``: same scene
distribution, captions and held-out combinations), encoded once with the frozen VAE (posterior mean and
std; a fresh latent sample each step), their hints kept as one-channel uint8. The result is saved as an
fp16 safetensors diffusers folder plus ``training.json`` (arguments, steps, losses, a quick fidelity check).
Everything is seeded; ``--steps N`` makes a run repeatable step for step (its cosine schedule follows steps),
while ``--time`` budgets by wall clock (the schedule follows seconds, so the step count depends on the machine).

Examples::

    python -m training.toyworld.train_control --kind controlnet --smoke --out /tmp/cn   # CPU, < 60 s
    # what the shipped models ran (one H100, bf16 autocast, ~6.5 min each, run side by side on the one GPU)
    python -m training.toyworld.train_control --kind controlnet --device cuda --num-images 60000 --batch 256 \
        --workers 5 --time 330 --eval-n 64 --log-every 100 --out models/toy-world-controlnet-canny
    python -m training.toyworld.train_control --kind t2i_adapter --device cuda --num-images 60000 --batch 256 \
        --workers 5 --time 330 --eval-n 64 --log-every 100 --out models/toy-world-t2i-adapter-depth
    # a CPU-sized run (what a 2-core machine manages in ~10 min; the adapter reached IoU 0.76 this way)
    python -m training.toyworld.train_control --kind t2i_adapter --device cpu --num-images 1500 --batch 16 \
        --warmup 20 --time 600 --eval-n 16 --eval-steps 20 --out /tmp/t2i

"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np

import tuneavideo
from tuneavideo.toyworld.render import random_scene, render_depth_hint, render_image

from .data import DataConfig, draw_training_scene, iter_chunks
from .train import log

KINDS = ("controlnet", "t2i_adapter")
#: The hint each kind of control model is trained on.
HINT_OF_KIND = {"controlnet": "canny", "t2i_adapter": "depth"}
CANNY_LOW, CANNY_HIGH = 100, 200
#: The embedded base model, inside the package (``models/`` at the top of a checkout links to the same folder).
DEFAULT_BASE = Path(tuneavideo.__file__).resolve().parent / "models" / "toy-world"
#: Channels of the ControlNet's hint embedding (diffusers' default is (16, 32, 96, 256)): four levels, x8.
CONTROLNET_COND_CHANNELS = (16, 32, 64, 128)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def hint_for(kind: str, image: np.ndarray, truth) -> np.ndarray:
    """The uint8 ``(h, w, 3)`` hint a model of ``kind`` is trained on, for one rendered image."""
    if kind == "controlnet":
        from tuneavideo.hints import canny_hint

        return canny_hint(image, low_threshold=CANNY_LOW, high_threshold=CANNY_HIGH)
    if kind == "t2i_adapter":
        return render_depth_hint(truth)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def render_control_chunk(
    kind: str, seed: int, index: int, count: int, cfg: DataConfig | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``count`` training images, their one-channel hints ``(n, h, w)`` and captions; depends only on the args.

    Scenes and captions are drawn by :func:`training.toyworld.data.draw_training_scene` (held-out combinations
    excluded), as for the base model's training set.
    """
    cfg = cfg or DataConfig()
    import cv2

    cv2.setNumThreads(1)
    rng = np.random.default_rng([seed, index, 7])
    images = np.empty((count, cfg.size, cfg.size, 3), dtype=np.uint8)
    hints = np.empty((count, cfg.size, cfg.size), dtype=np.uint8)
    captions = []
    for i in range(count):
        scene, text = draw_training_scene(rng, cfg)
        images[i], truth = render_image(scene, cfg.size)
        hints[i] = hint_for(kind, images[i], truth)[:, :, 0]
        captions.append(text)
    return images, hints, captions


def iter_control_chunks(kind: str, n: int, seed: int, cfg: DataConfig, workers: int | None, chunk: int = 1000):
    """Yield ``(images, hints, captions)`` chunks of a deterministic ``n``-image set, in order (any ``workers``)."""
    return iter_chunks(render_control_chunk, n, seed, cfg, workers, chunk, lead=(kind,))


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------


def load_base(folder: Path):
    """``(vae, text_encoder, unet, tokenizer)`` of a toy-world pipeline folder, fp32, frozen, eval mode."""
    from transformers import CLIPTokenizer

    from .train import load_components

    vae, text_encoder, unet = load_components(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(Path(folder) / "tokenizer"), local_files_only=True)
    for m in (vae, text_encoder, unet):
        m.requires_grad_(False).eval()
    return vae, text_encoder, unet, tokenizer


def build_control_model(
    kind: str,
    unet,
    adapter_type: str = "full_adapter",
    res_blocks: int = 2,
    cond_init: str = "kaiming",
    cond_channels: tuple[int, ...] = CONTROLNET_COND_CHANNELS,
    seed: int = 0,
):
    """A fresh control model for ``unet``: ControlNet copied from it, or a T2I-Adapter of matching channels.

    ControlNet: ``ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=cond_channels)`` (four
    levels: a 128 px hint becomes the 16x16 latent grid). ``cond_init``: ``"zero"`` keeps diffusers' init of
    the hint embedding (PyTorch's default convolution init, last convolution zero); ``"kaiming"`` gives all of
    its convolutions Kaiming-normal weights (ReLU gain, zero bias), the last one included, so that a thin
    Canny edge still reaches the ControlNet's encoder with unit-scale activations from the first step. The
    zero convolutions into the UNet stay zero either way: the untrained ControlNet leaves the base unchanged.
    On the toy world this init is what makes the ControlNet follow edges within a few hundred small steps
    (with diffusers' init nothing was learned in 150 steps of batch 16).
    """
    import torch

    if kind == "controlnet":
        from diffusers import ControlNetModel

        model = ControlNetModel.from_unet(
            unet, conditioning_channels=3, conditioning_embedding_out_channels=tuple(cond_channels)
        )
        if cond_init == "kaiming":
            emb = model.controlnet_cond_embedding
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for conv in [emb.conv_in, *emb.blocks, emb.conv_out]:
                    torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                    torch.nn.init.zeros_(conv.bias)
        elif cond_init != "zero":
            raise ValueError(f"cond_init must be zero or kaiming, got {cond_init!r}")
        return model
    from diffusers import T2IAdapter

    return T2IAdapter(
        in_channels=3,
        channels=list(unet.config.block_out_channels),
        num_res_blocks=res_blocks,
        downscale_factor=8,
        adapter_type=adapter_type,
    )


def controlled_unet(kind: str, model, unet, xt, t, ctx, cond, scale: float = 1.0):
    """Noise prediction of the frozen ``unet`` under the control ``model`` (``cond``: hints in [0, 1], NCHW)."""
    if kind == "controlnet":
        down, mid = model(
            xt, t, encoder_hidden_states=ctx, controlnet_cond=cond, conditioning_scale=scale, return_dict=False
        )
        return unet(
            xt, t, encoder_hidden_states=ctx, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
    feats = [f * scale for f in model(cond)]  # a fresh list: the UNet pops from it
    return unet(xt, t, encoder_hidden_states=ctx, down_intrablock_additional_residuals=feats).sample


def hints_to_input(hints_u8, device: str):
    """One-channel uint8 ``(n, h, w)`` (numpy or torch) -> float ``(n, 3, h, w)`` in [0, 1] (RGB grey)."""
    import torch

    h = torch.as_tensor(hints_u8).to(device, non_blocking=True).float().div_(255.0)
    return h[:, None].expand(-1, 3, -1, -1).contiguous()


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def encode_set(vae, kind: str, args, data_cfg: DataConfig, device: str, amp: bool, batch: int = 500):
    """Render + VAE-encode the training set: ``(mean, std)`` fp16 latents, uint8 hints and captions, on ``device``."""
    import torch

    from .train import to_model_input

    means, stds, hints, captions = [], [], [], []
    t0 = time.time()
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
        for imgs, hnts, caps in iter_control_chunks(kind, args.num_images, args.data_seed, data_cfg, args.workers):
            for i in range(0, len(imgs), batch):
                dist = vae.encode(to_model_input(imgs[i : i + batch], device)).latent_dist
                means.append(dist.mean.float().to(torch.float16))
                stds.append(dist.std.float().to(torch.float16))
            hints.append(torch.from_numpy(hnts).to(device))
            captions.extend(caps)
    return torch.cat(means), torch.cat(stds), torch.cat(hints), captions, time.time() - t0


def sample_timesteps(how: str, n: int, device: str, generator, num_train_timesteps: int = 1000):
    """``uniform`` over [0, T), or ``cubic``: ``t = (1 - u^3) T`` (T2I-Adapter's sampling: 79 % of steps above T/2,
    where the layout a hint fixes is decided)."""
    import torch

    if how == "uniform":
        return torch.randint(0, num_train_timesteps, (n,), device=device, generator=generator)
    if how == "cubic":
        u = torch.rand(n, device=device, generator=generator)
        return ((1.0 - u**3) * num_train_timesteps).long().clamp_(0, num_train_timesteps - 1)
    raise ValueError(f"timestep sampling must be uniform or cubic, got {how!r}")


def _budget(args, t_start: float) -> float | None:
    """Seconds of training: ``--time``, cut to what ``--deadline`` leaves after ``--reserve`` (at least 1 s)."""
    budget = args.time
    if args.deadline:
        left = args.deadline - (time.time() - t_start) - args.reserve
        budget = left if budget is None else min(budget, left)
        budget = max(budget, 1.0)
    return budget


def train(kind, model, unet, text_encoder, data, ids_all, empty_ids, args, device: str, amp: bool, t_start: float):
    """Train the control ``model`` on ``data = (mean, std, hints)`` with the base frozen; the training record."""
    import torch
    import torch.nn.functional as F

    from .train import Clock, adamw, build_scheduler, log_train, lr_at, noisy_batch, set_lr

    mean, std, hints = data
    model.to(device).train()
    unet.to(device)
    text_encoder.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, device, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    ac = build_scheduler().alphas_cumprod.to(device=device, dtype=torch.float32)
    empty = torch.as_tensor(empty_ids, device=device)
    g = torch.Generator(device=device).manual_seed(args.seed + 3)
    budget = _budget(args, t_start)
    clock = Clock(args.steps, budget)
    step = 0
    losses: list[float] = []
    acc = torch.zeros((), device=device)
    t_log = time.time()
    log("train_start", kind=kind, images=len(mean), batch=args.batch, lr=args.lr, steps=args.steps, seconds=budget)

    def draw_t(n: int):
        return sample_timesteps(args.timesteps, n, device, g)

    while not clock.done(step):
        idx, ids, xt, t, noise = noisy_batch(
            mean, std, ids_all, empty, ac, args.batch, float(args.scaling_factor), args.cfg_drop, draw_t, g, device
        )
        cond = hints_to_input(hints[idx], device)
        lr = lr_at(step, clock.progress(step), args.lr, args.warmup, "cosine")
        set_lr(opt, lr)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
            with torch.no_grad():
                ctx = text_encoder(ids)[0]
            pred = controlled_unet(kind, model, unet, xt, t, ctx, cond)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        acc += loss.detach()
        if step % args.log_every == 0:
            losses.append(round(log_train("train", step, acc, args.log_every, lr, clock, t_log), 5))
            t_log = time.time()
    model.eval()
    return {"steps": step, "seconds": round(clock.elapsed(), 1), "loss_log": losses, "log_every": args.log_every}


def control_gain(kind, model, unet, text_encoder, data, ids_all, args, device: str, amp: bool, n: int = 256) -> dict:
    """Mean noise-prediction MSE on a fixed batch with the control at scale 1 and at scale 0, per noise band."""
    import torch
    import torch.nn.functional as F

    from .train import build_scheduler

    mean, std, hints = data
    n = min(n, len(mean))
    g = torch.Generator(device=device).manual_seed(12345)
    ac = build_scheduler().alphas_cumprod.to(device=device, dtype=torch.float32)
    idx = torch.arange(n, device=device)
    x0 = mean[idx].float() * float(args.scaling_factor)
    cond = hints_to_input(hints[idx], device)
    noise = torch.randn(x0.shape, device=device, generator=g)
    out = {}
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
        ctx = text_encoder(ids_all[idx])[0]
        for lo, hi in ((0, 300), (300, 700), (700, 1000)):
            t = torch.randint(lo, hi, (n,), device=device, generator=g)
            a = ac[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            with_c = F.mse_loss(controlled_unet(kind, model, unet, xt, t, ctx, cond).float(), noise)
            without = F.mse_loss(controlled_unet(kind, model, unet, xt, t, ctx, cond, scale=0.0).float(), noise)
            out[f"t{lo}-{hi}"] = {"mse_control": round(float(with_c), 5), "mse_scale0": round(float(without), 5)}
    return out


# --------------------------------------------------------------------------------------------------
# Quick fidelity check (2D, still images)
# --------------------------------------------------------------------------------------------------


def sample_images(kind, model, unet, text_encoder, vae, tokens, prompts, hints_u8, *, device, amp, steps=25,
                  guidance=5.0, scale=1.0, seed=0, scaling_factor=1.0):  # fmt: skip
    """DDIM + CFG samples of the frozen base under the control: uint8 ``(n, h, w, 3)``."""
    import torch

    from .train import build_scheduler

    sched = build_scheduler()
    sched.set_timesteps(steps, device=device)
    n = len(prompts)
    g = torch.Generator(device="cpu").manual_seed(seed)
    size = hints_u8.shape[1] // 8
    lat = torch.randn((n, 4, size, size), generator=g).to(device)
    ids = torch.as_tensor(np.array([tokens.ids(p) for p in prompts] + [tokens.ids("")] * n), device=device)
    cond = hints_to_input(hints_u8, device)
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp):
        ctx = text_encoder(ids)[0]
        ctx = torch.cat([ctx[n:], ctx[:n]])  # [uncond; cond]
        for t in sched.timesteps:
            x_in = torch.cat([lat, lat])
            eps = controlled_unet(kind, model, unet, x_in, t, ctx, torch.cat([cond, cond]), scale=scale).float()
            u, c = eps.chunk(2)
            lat = sched.step(u + guidance * (c - u), t, lat).prev_sample
        img = vae.decode(lat / scaling_factor).sample.float()
    img = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return img


def quick_fidelity(kind, model, unet, text_encoder, vae, tokens, args, device, amp) -> dict:
    """Fresh single-object scenes: generate from their hint with the true caption, at scale 1 and 0.

    Reports the mean IoU of the classified object's mask with the scene's object mask, the centroid error
    (px) and the fraction of images whose object colour is read back right.
    """
    from tuneavideo.toyworld.classify import classify_image

    rng = np.random.default_rng([args.seed, 99])
    scenes = [random_scene(rng, num_objects=1, texture_prob=0.0) for _ in range(args.eval_n)]
    renders = [render_image(s, args.size) for s in scenes]
    hints = np.stack([hint_for(kind, img, gt)[:, :, 0] for img, gt in renders])
    prompts = [gt.caption for _, gt in renders]
    out = {"n": len(scenes), "steps": args.eval_steps}
    for scale in (1.0, 0.0):
        imgs = sample_images(
            kind, model, unet, text_encoder, vae, tokens, prompts, hints, device=device, amp=amp,
            steps=args.eval_steps, scale=scale, seed=args.seed, scaling_factor=args.scaling_factor,
        )  # fmt: skip
        ious, errs, colors = [], [], []
        for img, (_, gt) in zip(imgs, renders):
            res = classify_image(np.ascontiguousarray(img), gt)
            ref = gt.objects[0]
            if res.dominant is None:
                ious.append(0.0)
                errs.append(float(args.size))
                colors.append(False)
                continue
            inter = np.logical_and(res.mask, ref.mask).sum()
            union = np.logical_or(res.mask, ref.mask).sum()
            ious.append(float(inter / union) if union else 0.0)
            errs.append(math.dist(res.centroid, ref.centroid))
            colors.append(res.color == ref.color)
        out[f"scale{scale:g}"] = {
            "iou": round(float(np.mean(ious)), 4),
            "centroid_px": round(float(np.mean(errs)), 2),
            "color": round(float(np.mean(colors)), 4),
        }
    return out


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # Over 60 lines: one flat table of command-line options, clearer kept together than split.
    p = argparse.ArgumentParser(prog="python -m training.toyworld.train_control", description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--base", type=Path, default=DEFAULT_BASE, help="the toy-world pipeline folder (frozen)")
    p.add_argument("--out", type=Path, default=None, help="folder to write (default: models/toy-world-<kind>-<hint>)")
    p.add_argument(
        "--smoke", action="store_true", help="3 steps on 32 images, CPU unless --device says otherwise (CI); < 60 s"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: bf16 autocast on CUDA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-seed", type=int, default=11, help="seed of the rendered training set")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--num-images", type=int, default=60_000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument(
        "--size-range", default="0.2,0.5",
        help="object size (fraction of the side) of one-object scenes; the base saw 0.3,0.5, clips use 0.22,0.34",
    )  # fmt: skip
    p.add_argument("--two-size-range", default="0.2,0.36", help="object sizes of two-object scenes")
    p.add_argument("--steps", type=int, default=None, help="training steps (reproducible); or --time")
    p.add_argument("--time", type=float, default=None, help="seconds of training (the LR schedule follows time)")
    p.add_argument("--deadline", type=float, default=None, help="stop training this many seconds after start")
    p.add_argument("--reserve", type=float, default=25.0, help="seconds kept for evaluation and saving (deadline)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default per kind)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument(
        "--timesteps", choices=("uniform", "cubic"), default="cubic", help="timestep sampling (see sample_timesteps)"
    )
    p.add_argument("--cfg-drop", type=float, default=0.1, help="fraction of empty captions")
    p.add_argument(
        "--cond-init", choices=("zero", "kaiming"), default="kaiming",
        help="ControlNet: init of the hint embedding (see build_control_model)",
    )  # fmt: skip
    p.add_argument(
        "--cond-channels", default=",".join(map(str, CONTROLNET_COND_CHANNELS)),
        help="ControlNet: channels of the hint embedding's four levels",
    )  # fmt: skip
    p.add_argument("--adapter-type", choices=("full_adapter", "light_adapter"), default="full_adapter")
    p.add_argument("--eval-n", type=int, default=64, help="scenes of the quick fidelity check (0: skip)")
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--gain-n", type=int, default=256, help="images of the control-gain check (MSE at scale 1 vs 0)")
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    for name in ("size_range", "two_size_range"):
        lo, hi = (float(v) for v in str(getattr(args, name)).split(","))
        if not 0 < lo <= hi < 1:
            p.error(f"--{name.replace('_', '-')} needs 0 < low <= high < 1, got {lo},{hi}")
        setattr(args, name, (lo, hi))
    args.cond_channels = tuple(int(c) for c in str(args.cond_channels).split(",") if c)
    if len(args.cond_channels) != 4:
        p.error("--cond-channels needs four values (three x2 downsamplings: 128 px hints -> 16x16 latents)")
    if args.lr is None:
        args.lr = {"controlnet": 1e-3, "t2i_adapter": 5e-4}[args.kind]
    if args.smoke:
        smoke = {
            "num_images": 32, "steps": 3, "batch": 8, "warmup": 2, "eval_n": 2, "eval_steps": 2, "gain_n": 8,
            "log_every": 1,
        }  # fmt: skip
        for name, value in smoke.items():  # forced: a smoke run stays small whatever else the command says
            setattr(args, name, value)
        args.time = None
        if args.device == "auto":
            args.device = "cpu"
        if args.workers is None:
            args.workers = 2
    if args.steps is None and args.time is None and args.deadline is None:
        args.steps = 2000
    if args.out is None:
        args.out = DEFAULT_BASE.parent / f"toy-world-{args.kind.replace('_', '-')}-{HINT_OF_KIND[args.kind]}"
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    if args.smoke:
        torch.set_num_threads(1)  # tiny ops on a shared CPU: one thread is faster
    try:
        return _run(args, time.time())
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, t_start: float) -> dict:
    import torch

    from .train import CaptionTokens, configure_device, pick_device

    device = pick_device(args.device)
    amp = args.precision == "bf16" or (args.precision == "auto" and device == "cuda")
    configure_device(device, args.seed)
    log(
        "start", kind=args.kind, hint=HINT_OF_KIND[args.kind], device=device, amp=amp, torch=torch.__version__,
        gpu=torch.cuda.get_device_name() if device == "cuda" else None,
    )  # fmt: skip

    vae, text_encoder, unet, tokenizer = load_base(args.base)
    args.scaling_factor = float(vae.config.scaling_factor)
    for m in (vae, text_encoder, unet):
        m.to(device)
    model = build_control_model(
        args.kind, unet, args.adapter_type, cond_init=args.cond_init, cond_channels=args.cond_channels, seed=args.seed
    )
    n_params = sum(p.numel() for p in model.parameters())
    log("model", cls=type(model).__name__, params=n_params, elapsed=round(time.time() - t_start, 1))

    data_cfg = replace(DataConfig(), size=args.size, size_range=args.size_range, two_size_range=args.two_size_range)
    mean, std, hints, captions, secs = encode_set(vae, args.kind, args, data_cfg, device, amp)
    log("data", images=len(captions), seconds=round(secs, 1), elapsed=round(time.time() - t_start, 1))
    tokens = CaptionTokens(tokenizer)
    ids_all = torch.as_tensor(tokens.encode(captions), device=device)
    empty_ids = tokens.ids("")

    data = (mean, std, hints)
    summary: dict[str, Any] = {"kind": args.kind, "hint": HINT_OF_KIND[args.kind], "params": n_params}
    summary["train"] = train(args.kind, model, unet, text_encoder, data, ids_all, empty_ids, args, device, amp, t_start)
    log("trained", **{k: v for k, v in summary["train"].items() if k != "loss_log"})
    summary["control_gain"] = control_gain(
        args.kind, model, unet, text_encoder, data, ids_all, args, device, amp, n=args.gain_n
    )
    log("control_gain", elapsed=round(time.time() - t_start, 1), **summary["control_gain"])
    if args.eval_n > 0:
        summary["quick_fidelity"] = quick_fidelity(args.kind, model, unet, text_encoder, vae, tokens, args, device, amp)
        log("quick_fidelity", elapsed=round(time.time() - t_start, 1), **summary["quick_fidelity"])

    _save(model, args, device, summary, {"images": len(captions), "data_seconds": round(secs, 1)}, t_start)
    return summary


def _save(model, args: argparse.Namespace, device: str, summary: dict, data: dict, t_start: float) -> Path:
    """Write the fp16 diffusers folder ``--out`` and its ``training.json``; the size goes into ``summary``."""
    import torch

    from .train import drop_name_or_path, folder_size

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    model.to("cpu", torch.float16).save_pretrained(out, safe_serialization=True)
    drop_name_or_path(out / "config.json")
    record = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        **summary,
        **data,
        "total_seconds": round(time.time() - t_start, 1),
    }
    record["args"]["base"] = Path(args.base).name
    record["args"]["out"] = out.name
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    summary["size_mb"] = round(folder_size(out) / 1e6, 2)
    log("saved", folder=str(out), size_mb=summary["size_mb"], total_seconds=record["total_seconds"])
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
