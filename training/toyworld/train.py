"""Train the embedded toy-world text-to-image model: a tiny Stable Diffusion 1.x made of the same classes.

Stages:

1. ``vae``: an ``AutoencoderKL`` (x8 downsampling, 4 latent channels) on rendered 128 px images.
2. ``unet``: the whole training set is encoded once to latents (posterior mean and std), every caption is
   tokenised once, and a ``UNet2DConditionModel`` and a ``CLIPTextModel`` are trained together from scratch
   (epsilon prediction, SD's scaled-linear betas, min-SNR weighting, 10% empty captions for classifier-free
   guidance, bf16 autocast on CUDA, EMA weights exported).

Every stage saves a checkpoint under ``--work`` and ``--resume`` picks it up; ``--init-from`` starts from an
exported pipeline folder instead (how training continues across separate GPU sessions). The result is a
standard diffusers ``StableDiffusionPipeline`` folder in fp16 safetensors (``--out``).

Examples::

    python -m training.toyworld.train --smoke --out /tmp/toy      # CPU, seconds: CI
    python -m training.toyworld.train --device cuda --out models/toy-world --vae-time 140 --unet-time 300
    python -m training.toyworld.train --device cuda --init-from models/toy-world --stages unet --unet-time 420
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np

from .data import DataConfig, iter_training_chunks


@dataclass(frozen=True)
class ModelConfig:
    image_size: int = 128
    vae_channels: tuple[int, ...] = (32, 64, 96, 96)  # 4 levels: x8 downsampling
    vae_layers: int = 1
    vae_groups: int = 16
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 96, 128)
    unet_layers: int = 2
    unet_heads: int = 4  # ``attention_head_dim`` as SD 1.x uses it (a head count)
    unet_groups: int = 32
    text_hidden: int = 64
    text_layers: int = 4
    text_heads: int = 4


SMOKE_MODEL = ModelConfig(
    image_size=64,
    vae_channels=(8, 16, 16, 16),
    vae_groups=4,
    unet_channels=(16, 32, 32),
    unet_layers=1,
    unet_heads=2,
    unet_groups=8,
    text_hidden=16,
    text_layers=1,
    text_heads=2,
)


# --------------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------------


def build_vae(cfg: ModelConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=cfg.vae_layers,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_groups,
        sample_size=cfg.image_size,
    )


def build_unet(cfg: ModelConfig):
    from diffusers import UNet2DConditionModel

    levels = len(cfg.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    return UNet2DConditionModel(
        sample_size=cfg.image_size // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.unet_layers,
        cross_attention_dim=cfg.text_hidden,
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=cfg.unet_groups,
    )


def build_text_encoder(cfg: ModelConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    from tuneavideo.tokenizer import CLIP_VOCAB_SIZE

    config = CLIPTextConfig(
        vocab_size=CLIP_VOCAB_SIZE,
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config)


def build_scheduler():
    """SD 1.x's noise schedule and DDIM settings (the scheduler config of stable-diffusion-v1-5)."""
    from diffusers import DDIMScheduler

    from tuneavideo.testing import SD_SCHEDULER_CONFIG

    return DDIMScheduler(**SD_SCHEDULER_CONFIG)


def build_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    from tuneavideo.tokenizer import check_tokenizer, write_clip_tokenizer_files

    write_clip_tokenizer_files(folder)
    tok = CLIPTokenizer.from_pretrained(str(folder))
    check_tokenizer(tok, str(folder))
    return tok


class CaptionTokens:
    """Tokenise captions of the toy-world vocabulary fast and exactly.

    CLIP's BPE works on each whitespace-separated lower-case word on its own, so a caption's ids are the
    concatenation of its words' ids; each distinct word goes through the real tokenizer once. A sample is
    checked against the full tokenizer.
    """

    def __init__(self, tokenizer, max_length: int = 77):
        self.tok = tokenizer
        self.max_length = max_length
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.words: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        body: list[int] = []
        for w in text.lower().split():
            if w not in self.words:
                self.words[w] = self.tok(w, add_special_tokens=False).input_ids
            body.extend(self.words[w])
        body = body[: self.max_length - 2]
        out = [self.bos, *body, self.eos]
        return out + [self.pad] * (self.max_length - len(out))

    def encode(self, captions: list[str]) -> np.ndarray:
        arr = np.array([self.ids(c) for c in captions], dtype=np.int64)
        step = max(1, len(captions) // 8)
        sample = captions[::step][:8]
        ref = self.tok(sample, padding="max_length", max_length=self.max_length, truncation=True).input_ids
        if not np.array_equal(np.array(ref), arr[::step][: len(sample)]):
            raise RuntimeError("word-cached tokenisation disagrees with the CLIP tokenizer")
        return arr


# --------------------------------------------------------------------------------------------------
# Saving / loading
# --------------------------------------------------------------------------------------------------


def save_pipeline(
    folder: Path, vae, text_encoder, unet, tokenizer_dir: Path | None = None, dtype: str = "float16"
) -> Path:
    """Write a standard ``StableDiffusionPipeline`` folder (no safety checker) in ``dtype`` safetensors."""
    import copy

    import torch
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    tmp_tok = folder.parent / (folder.name + ".tok-tmp")
    tokenizer = build_tokenizer(tmp_tok if tokenizer_dir is None else tokenizer_dir)
    torch_dtype = getattr(torch, dtype)
    parts = [copy.deepcopy(m).to("cpu", torch_dtype).eval() for m in (vae, text_encoder, unet)]
    pipe = StableDiffusionPipeline(
        vae=parts[0],
        text_encoder=parts[1],
        tokenizer=tokenizer,
        unet=parts[2],
        scheduler=build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if folder.exists():
        shutil.rmtree(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    # Ship the plain vocab.json/merges.txt pair rather than the 3.6 MB tokenizer.json transformers writes.
    tok_dir = folder / "tokenizer"
    shutil.rmtree(tok_dir)
    build_tokenizer(tok_dir)
    if tmp_tok.exists():
        shutil.rmtree(tmp_tok)
    # transformers 5 loads a model in the dtype its config names ("auto"); the weights stay fp16 on disk, but
    # a plain ``from_pretrained`` must give an fp32 text encoder like the fp32 UNet/VAE diffusers gives.
    te_cfg = folder / "text_encoder" / "config.json"
    cfg = json.loads(te_cfg.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in cfg:
            cfg[key] = "float32"
    te_cfg.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for part in ("vae", "unet", "text_encoder"):
        drop_name_or_path(folder / part / "config.json")
    return folder


def drop_name_or_path(config_path: Path) -> None:
    """Remove ``_name_or_path`` (where the weights were loaded from, e.g. ``--init-from``) from a saved config."""
    cfg = json.loads(config_path.read_text())
    if cfg.pop("_name_or_path", None) is not None:
        config_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def load_components(folder: Path):
    """``(vae, text_encoder, unet)`` from a pipeline folder, in fp32 for further training."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = Path(folder)
    vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32, local_files_only=True)
    te = CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32, local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32, local_files_only=True)
    return vae, te.float(), unet


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------
# Training helpers
# --------------------------------------------------------------------------------------------------


class Clock:
    """Progress in [0, 1] as the larger of steps done and time used; ends a stage at either budget."""

    def __init__(self, max_steps: int | None, time_budget: float | None):
        self.max_steps = max_steps
        self.time_budget = time_budget
        self.start = time.time()

    def elapsed(self) -> float:
        return time.time() - self.start

    def progress(self, step: int) -> float:
        p = 0.0
        if self.max_steps:
            p = max(p, step / self.max_steps)
        if self.time_budget:
            p = max(p, self.elapsed() / self.time_budget)
        return min(p, 1.0)

    def done(self, step: int) -> bool:
        if self.max_steps is not None and step >= self.max_steps:
            return True
        return bool(self.time_budget) and self.elapsed() >= self.time_budget


def lr_at(step: int, progress: float, peak: float, warmup: int, schedule: str, final_frac: float = 0.05) -> float:
    warm = min(1.0, (step + 1) / max(warmup, 1))
    if schedule == "cosine":
        return peak * warm * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * progress)))
    return peak * warm


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def adamw(params, device: str, **kwargs: Any):
    """``torch.optim.AdamW(params, **kwargs)``, fused on CUDA."""
    import torch

    return torch.optim.AdamW(params, **kwargs, **({"fused": True} if device == "cuda" else {}))


def set_lr(opt, lr: float) -> None:
    """Set the learning rate of every parameter group of ``opt``."""
    for group in opt.param_groups:
        group["lr"] = lr


def noisy_batch(
    mean, std, ids_all, empty, alphas_cumprod, batch: int, scale: float, cfg_drop: float, draw_t, g, device: str
):
    """One diffusion training batch from pre-encoded latents, all random draws from ``g`` in a fixed order.

    ``mean``/``std``: ``(n, 4, h, w)`` posterior of the VAE; ``ids_all``: ``(n, 77)`` caption ids; ``empty``:
    ``(77,)`` ids of the empty caption (used with probability ``cfg_drop``); ``draw_t(batch)`` draws the
    timesteps. Returns ``(idx, ids, xt, t, noise)``: the picked rows ``(batch,)``, their ids ``(batch, 77)``,
    the noised latents and the noise ``(batch, 4, h, w)``, and the timesteps ``(batch,)``.
    """
    import torch

    idx = torch.randint(0, len(mean), (batch,), device=device, generator=g)
    x0 = (mean[idx].float() + std[idx].float() * torch.randn(mean[idx].shape, device=device, generator=g)) * scale
    drop = torch.rand(batch, device=device, generator=g) < cfg_drop
    ids = torch.where(drop[:, None], empty[None, :], ids_all[idx])
    noise = torch.randn(x0.shape, device=device, generator=g)
    t = draw_t(batch)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    return idx, ids, xt, t, noise


# --------------------------------------------------------------------------------------------------
# Stage 1: VAE
# --------------------------------------------------------------------------------------------------


def to_model_input(batch_u8, device: str, dtype=None):
    """uint8 NHWC (numpy or torch) to float NCHW in [-1, 1] on ``device``."""
    import torch

    t = torch.as_tensor(batch_u8).to(device, non_blocking=True)
    t = t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return t.contiguous(memory_format=torch.channels_last) if device == "cuda" else t


def train_vae(vae, images: np.ndarray, args, device: str, state: dict | None = None) -> dict:
    import torch

    torch.manual_seed(args.seed)
    vae.to(device).train()
    if device == "cuda":
        vae.to(memory_format=torch.channels_last)
    params = list(vae.parameters())
    opt = adamw(params, device, lr=args.vae_lr, weight_decay=0.0, betas=(0.9, 0.99))
    step = 0
    if state:
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    data = torch.from_numpy(images)
    if device == "cuda":
        data = data.to(device)
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    clock = Clock(args.vae_steps, args.vae_time)
    use_amp = device == "cuda"
    t_log = time.time()
    start_step = step
    while not clock.done(step - start_step):
        idx = torch.randint(0, len(data), (args.vae_batch,), generator=g)
        x = to_model_input(data[idx.to(data.device)], device)
        lr = lr_at(step, clock.progress(step - start_step), args.vae_lr, args.vae_warmup, "cosine", 0.1)
        set_lr(opt, lr)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            posterior = vae.encode(x).latent_dist
            z = posterior.sample()
            rec = vae.decode(z).sample
        rec = rec.float()
        l1 = (rec - x).abs().mean()
        mse = ((rec - x) ** 2).mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + mse + args.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % args.log_every == 0:
            psnr = -10 * math.log10(max(float(mse.detach()) / 4.0, 1e-10))  # images in [-1, 1]
            log(
                "vae",
                step=step,
                l1=round(float(l1.detach()), 5),
                psnr=round(psnr, 2),
                lr=lr,
                elapsed=round(clock.elapsed(), 1),
                it_s=round(args.log_every / (time.time() - t_log), 2),
            )
            t_log = time.time()
    vae.eval()
    return {"optimizer": opt.state_dict(), "step": step}


def vae_psnr(vae, images: np.ndarray, device: str, batch: int = 256) -> float:
    import torch

    mses = []
    with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for i in range(0, len(images), batch):
            x = to_model_input(images[i : i + batch], device)
            rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
            mses.append(float(((rec - x) ** 2).mean()))
    return -10 * math.log10(max(float(np.mean(mses)) / 4.0, 1e-10))


def set_scaling_factor(vae, images: np.ndarray, device: str, batch: int = 256) -> float:
    """Set SD's ``scaling_factor`` so that scaled posterior samples have unit standard deviation."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    samples = []
    with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for i in range(0, len(images), batch):
            dist = vae.encode(to_model_input(images[i : i + batch], device)).latent_dist
            eps = torch.randn(dist.mean.shape, generator=g).to(device)
            samples.append((dist.mean.float() + dist.std.float() * eps).cpu())
    factor = float(1.0 / torch.cat(samples).std())
    vae.register_to_config(scaling_factor=factor)
    return factor


# --------------------------------------------------------------------------------------------------
# Stage 2: UNet + text encoder
# --------------------------------------------------------------------------------------------------


def encode_dataset(vae, n: int, seed: int, data_cfg: DataConfig, device: str, workers: int | None, batch: int = 500):
    """Render and encode the training set chunk by chunk: returns (mean, std) latents (fp16) and captions."""
    import torch

    means, stds, captions = [], [], []
    vae.to(device).eval()
    t0 = time.time()
    with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for imgs, caps in iter_training_chunks(n, seed, data_cfg, workers):
            for i in range(0, len(imgs), batch):
                dist = vae.encode(to_model_input(imgs[i : i + batch], device)).latent_dist
                means.append(dist.mean.float().to(torch.float16))
                stds.append(dist.std.float().to(torch.float16))
            captions.extend(caps)
    mean = torch.cat(means)
    std = torch.cat(stds)
    log("encoded", images=len(captions), seconds=round(time.time() - t0, 1), latent_shape=list(mean.shape[1:]))
    return mean, std, captions


class EMA:
    def __init__(self, params, decay: float):
        import torch

        self.params = [p for p in params]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay
        self.torch = torch

    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch = self.torch
        with torch.no_grad():
            torch._foreach_mul_(self.shadow, d)
            torch._foreach_add_(self.shadow, [p.detach().float() for p in self.params], alpha=1 - d)

    def copy_to(self, params) -> None:
        with self.torch.no_grad():
            for s, p in zip(self.shadow, params):
                p.copy_(s)

    def state_dict(self) -> list:
        return [s.cpu() for s in self.shadow]

    def load(self, tensors) -> None:
        with self.torch.no_grad():
            for s, t in zip(self.shadow, tensors):
                s.copy_(t)


def _unet_loss(model, text_encoder, ids, xt, t, noise, weight, use_amp: bool):
    """Forward and backward of one batch; returns the per-sample (unweighted) MSE, detached."""
    import torch
    import torch.nn.functional as F

    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
        ctx = text_encoder(ids)[0]
        pred = model(xt, t, encoder_hidden_states=ctx).sample
    per = F.mse_loss(pred.float(), noise, reduction="none").mean(dim=(1, 2, 3))
    (per * weight).mean().backward()
    return per.detach()


def _unet_step(model, unet, text_encoder, opt, params, batch, weight, use_amp: bool):
    """Forward, backward and optimiser step of one batch; returns ``(per-sample MSE, model)``.

    A compiled ``model`` that fails falls back to the eager ``unet`` (returned, to be used from then on).
    """
    import torch

    _, ids, xt, t, noise = batch
    opt.zero_grad(set_to_none=True)
    try:
        per = _unet_loss(model, text_encoder, ids, xt, t, noise, weight, use_amp)
    except Exception as exc:
        if model is unet:
            raise
        log("compile_failed", error=f"{type(exc).__name__}: {exc}"[:500])
        model = unet
        opt.zero_grad(set_to_none=True)
        per = _unet_loss(model, text_encoder, ids, xt, t, noise, weight, use_amp)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return per, model


def train_unet(unet, text_encoder, latents, captions_ids, args, device: str, state: dict | None = None):
    """Train UNet and text encoder together on ``latents = (mean, std)``; ``(checkpoint state, EMA)``."""
    import torch

    torch.manual_seed(args.seed + 2)
    mean, std = latents
    unet.to(device).train()
    text_encoder.to(device).train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = adamw(params, device, lr=args.unet_lr, weight_decay=0.01, betas=(0.9, 0.999))
    ema = EMA(params, args.ema_decay)
    step = 0
    if state:
        if state.get("optimizer") is not None:
            opt.load_state_dict(state["optimizer"])
        if state.get("ema") is not None:
            ema.load(state["ema"])
        step = state.get("step", 0)
    ac = build_scheduler().alphas_cumprod.to(device=device, dtype=torch.float32)
    snr_all = ac / (1 - ac)
    ids_all = torch.as_tensor(captions_ids, device=device)
    empty = torch.as_tensor(args.empty_ids, device=device)
    g = torch.Generator(device=device).manual_seed(args.seed + 3)
    model = unet
    if getattr(args, "compile", False) and device == "cuda":
        # The step is bound by Python/kernel-launch overhead at 16x16 latents; inductor fuses it away.
        model = torch.compile(unet)
        log("compile", mode="default")
    clock = Clock(args.unet_steps, args.unet_time)
    start_step = step
    t_log = time.time()
    loss_acc = torch.zeros((), device=device)

    def draw_t(n: int):
        return torch.randint(0, 1000, (n,), device=device, generator=g)

    while not clock.done(step - start_step):
        batch = noisy_batch(
            mean, std, ids_all, empty, ac, args.unet_batch, float(args.scaling_factor), args.cfg_drop, draw_t, g, device
        )
        lr = lr_at(step - start_step, clock.progress(step - start_step), args.unet_lr, args.warmup, args.schedule)
        set_lr(opt, lr)
        snr = snr_all[batch[3]]
        weight = torch.clamp(snr, max=args.min_snr) / snr if args.min_snr > 0 else torch.ones_like(snr)
        per, model = _unet_step(model, unet, text_encoder, opt, params, batch, weight, device == "cuda")
        ema.update(step)
        step += 1
        loss_acc += per.mean()
        if step % args.log_every == 0:
            log_train("unet", step, loss_acc, args.log_every, lr, clock, t_log)
            t_log = time.time()
    unet.eval()
    text_encoder.eval()
    return {"optimizer": opt.state_dict(), "ema": ema.state_dict(), "step": step}, ema


def log_train(event: str, step: int, loss_acc, every: int, lr: float, clock: Clock, t_log: float) -> float:
    """Log the mean loss of the last ``every`` steps (and zero ``loss_acc``); returns that mean."""
    value = float(loss_acc) / every
    log(
        event,
        step=step,
        loss=round(value, 5),
        lr=round(lr, 7),
        elapsed=round(clock.elapsed(), 1),
        it_s=round(every / (time.time() - t_log), 2),
    )
    loss_acc.zero_()
    return value


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # Over 60 lines: one flat table of command-line options, clearer kept together than split.
    p = argparse.ArgumentParser(prog="python -m training.toyworld.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out", type=Path, default=Path("models/toy-world"), help="pipeline folder to write (fp16 safetensors)"
    )
    p.add_argument(
        "--work", type=Path, default=Path("runs/toyworld"), help="checkpoints of each stage (fp32, optimiser state)"
    )
    p.add_argument("--stages", default="vae,unet", help="comma list of stages to run: vae, unet")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --work")
    p.add_argument("--init-from", type=Path, default=None, help="start from an exported pipeline folder's weights")
    p.add_argument("--smoke", action="store_true", help="tiny model and data, a few steps on CPU (CI)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    # data
    p.add_argument("--num-images", type=int, default=200_000, help="images rendered and encoded for the UNet stage")
    p.add_argument("--vae-images", type=int, default=50_000, help="images rendered for the VAE stage")
    p.add_argument(
        "--data-seed", type=int, default=1, help="seed of the rendered training set (vary it across sessions)"
    )
    p.add_argument("--motion-prob", type=float, default=0.3)
    p.add_argument("--two-object-prob", type=float, default=0.15)
    p.add_argument("--texture-prob", type=float, default=0.3)
    # VAE
    p.add_argument("--vae-steps", type=int, default=None)
    p.add_argument("--vae-time", type=float, default=None, help="seconds for the VAE stage")
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=1e-3)
    p.add_argument("--vae-warmup", type=int, default=200)
    p.add_argument("--vae-kl", type=float, default=1e-6)
    # UNet + text encoder
    p.add_argument("--unet-steps", type=int, default=None)
    p.add_argument("--unet-time", type=float, default=None, help="seconds for the UNet stage")
    p.add_argument("--unet-batch", type=int, default=512)
    p.add_argument("--unet-lr", type=float, default=4e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="cosine")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--min-snr", type=float, default=5.0, help="min-SNR-gamma loss weighting (0: plain MSE)")
    p.add_argument("--cfg-drop", type=float, default=0.1, help="fraction of empty captions")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the UNet (CUDA only; falls back to eager on error)"
    )
    # evaluation after training
    p.add_argument("--eval-n", type=int, default=0, help="prompts per split (seen / held out) to evaluate at the end")
    p.add_argument("--eval-steps", type=int, default=25)
    p.add_argument("--eval-guidance", type=float, default=5.0)
    p.add_argument("--eval-json", type=Path, default=None)
    p.add_argument("--eval-grid", type=Path, default=None, help="PNG grid of the first evaluation samples")
    p.add_argument("--log-every", type=int, default=100)
    args = p.parse_args(argv)
    if args.smoke:
        smoke = {
            "num_images": 96,
            "vae_images": 64,
            "vae_steps": 3,
            "unet_steps": 4,
            "vae_batch": 8,
            "unet_batch": 8,
            "warmup": 2,
            "vae_warmup": 2,
            "log_every": 2,
        }
        for name, value in smoke.items():
            if p.get_default(name) == getattr(args, name):
                setattr(args, name, value)
        if args.device == "auto":
            args.device = "cpu"
        if args.workers is None:
            args.workers = 1
    if args.vae_steps is None and args.vae_time is None:
        args.vae_steps = 4000
    if args.unet_steps is None and args.unet_time is None:
        args.unet_steps = 20000
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    t_start = time.time()
    device = pick_device(args.device)
    threads = torch.get_num_threads()
    if args.smoke:
        # Tiny ops: one thread is faster, and far faster when other processes share the CPU.
        torch.set_num_threads(1)
    try:
        return _run(args, device, t_start)
    finally:
        torch.set_num_threads(threads)


def configure_device(device: str, seed: int) -> None:
    """TF32 matmuls and cuDNN autotuning on CUDA; seed torch's global generator (model init draws from it)."""
    import torch

    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(seed)


def _build_models(args: argparse.Namespace, cfg: ModelConfig, work: Path) -> tuple[Any, Any, Any]:
    """``(vae, text_encoder, unet)``: fresh, from ``--init-from``, with the VAE from ``--work`` on ``--resume``."""
    from diffusers import AutoencoderKL

    if args.init_from is not None:
        vae, text_encoder, unet = load_components(args.init_from)
        log("init_from", folder=str(args.init_from))
    else:
        vae, text_encoder, unet = build_vae(cfg), build_text_encoder(cfg), build_unet(cfg)
    if args.resume and (work / "vae").exists():
        vae = AutoencoderKL.from_pretrained(work / "vae", local_files_only=True)
    return vae, text_encoder, unet


def _resume_state(args: argparse.Namespace, path: Path) -> dict | None:
    """The optimiser/step checkpoint at ``path`` when resuming and it exists, else ``None``."""
    import torch

    return torch.load(path, weights_only=False) if args.resume and path.exists() else None


def _vae_stage(vae, args: argparse.Namespace, data_cfg: DataConfig, device: str, work: Path) -> dict:
    """Stage 1: render the VAE set, train, measure PSNR, set the scaling factor, checkpoint; the summary."""
    import torch

    state = _resume_state(args, work / "vae_state.pt")
    t0 = time.time()
    vae_imgs = np.concatenate(
        [c[0] for c in iter_training_chunks(args.vae_images, args.data_seed + 1000, data_cfg, args.workers)]
    )
    log("vae_data", images=len(vae_imgs), seconds=round(time.time() - t0, 1))
    vstate = train_vae(vae, vae_imgs, args, device, state)
    held = vae_imgs[: min(len(vae_imgs), 1024)]
    psnr = vae_psnr(vae, held, device)
    set_scaling_factor(vae, held, device)
    summary = {"steps": vstate["step"], "psnr_db": round(psnr, 2), "seconds": round(time.time() - t0, 1)}
    log("vae_done", **summary)
    vae.to("cpu").save_pretrained(work / "vae")
    torch.save(vstate, work / "vae_state.pt")
    return summary


def _unet_stage(vae, text_encoder, unet, args, data_cfg: DataConfig, device: str, work: Path) -> tuple[Any, Any, dict]:
    """Stage 2: encode the set, train UNet + text encoder, checkpoint; ``(text_encoder, unet, summary)``.

    On ``--resume`` the models come from ``--work``; unless ``--no-ema`` the returned ones carry the EMA weights.
    """
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    tokens = CaptionTokens(build_tokenizer(work / "tokenizer"))
    mean, std, captions = encode_dataset(vae, args.num_images, args.data_seed, data_cfg, device, args.workers)
    args.scaling_factor = vae.config.scaling_factor
    log("latents", scaling_factor=args.scaling_factor, mean=float(mean[:4096].float().mean()))
    ids = tokens.encode(captions)
    args.empty_ids = tokens.ids("")
    state = None
    if args.resume and (work / "unet").exists():
        unet = UNet2DConditionModel.from_pretrained(work / "unet", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(work / "text_encoder", local_files_only=True)
        state = torch.load(work / "unet_state.pt", weights_only=False)
    t0 = time.time()
    ustate, ema = train_unet(unet, text_encoder, (mean, std), ids, args, device, state)
    summary = {"steps": ustate["step"], "seconds": round(time.time() - t0, 1), "images": len(captions)}
    log("unet_done", **summary)
    unet.to("cpu").save_pretrained(work / "unet")
    text_encoder.to("cpu").save_pretrained(work / "text_encoder")
    torch.save(ustate, work / "unet_state.pt")
    if not args.no_ema:
        ema.copy_to(list(unet.parameters()) + list(text_encoder.parameters()))
    return text_encoder, unet, summary


def _export(vae, text_encoder, unet, args: argparse.Namespace, work: Path, summary: dict) -> Path:
    """Write the fp16 pipeline folder ``--out`` and ``train_args.json``; sizes go into ``summary``."""
    vae.to("cpu")
    out = save_pipeline(args.out, vae, text_encoder, unet)
    summary["out"] = str(out)
    summary["size_mb"] = round(folder_size(out) / 1e6, 2)
    log("saved", folder=str(out), size_mb=summary["size_mb"])
    (work / "train_args.json").write_text(
        json.dumps(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "empty_ids"}, indent=2
        )
    )
    return out


def _run(args: argparse.Namespace, device: str, t_start: float) -> dict:
    """The stages named by ``--stages``, the export and the optional evaluation; the run's summary."""
    import torch

    configure_device(device, args.seed)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - {"vae", "unet"}
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; use vae and/or unet")
    cfg = SMOKE_MODEL if args.smoke else ModelConfig()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data_cfg = DataConfig(
        size=cfg.image_size,
        two_object_prob=args.two_object_prob,
        texture_prob=args.texture_prob,
        motion_prob=args.motion_prob,
    )
    log(
        "start",
        device=device,
        stages=stages,
        model=asdict(cfg),
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name() if device == "cuda" else None,
    )
    vae, text_encoder, unet = _build_models(args, cfg, work)
    counts = {
        k: sum(p.numel() for p in m.parameters())
        for k, m in (("vae", vae), ("text_encoder", text_encoder), ("unet", unet))
    }
    log("params", **counts)
    summary: dict[str, Any] = {"params": counts}
    if "vae" in stages:
        summary["vae"] = _vae_stage(vae, args, data_cfg, device, work)
    vae.to(device).eval()
    if "unet" in stages:
        text_encoder, unet, summary["unet"] = _unet_stage(vae, text_encoder, unet, args, data_cfg, device, work)
    out = _export(vae, text_encoder, unet, args, work, summary)
    if args.eval_n > 0:
        from .evaluate import evaluate_folder

        result = evaluate_folder(
            out,
            n=args.eval_n,
            steps=args.eval_steps,
            guidance=args.eval_guidance,
            device=device,
            workers=args.workers,
            grid=args.eval_grid,
        )
        summary["eval"] = result
        if args.eval_json:
            args.eval_json.write_text(json.dumps(result, indent=2))
    summary["seconds"] = round(time.time() - t_start, 1)
    log("done", **{k: v for k, v in summary.items() if k != "eval"})
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
