"""One-shot video tuning (Tune-A-Video §4.2) and the tuned-delta artifact.

Only the parameters under modules whose names end with ``attn1.to_q``, ``attn2.to_q`` or
``attn_temp`` are trained (``norm_temp`` stays frozen, as in the official code), with the standard
noise-prediction loss on the one source clip: one timestep per video, i.i.d. noise per frame.
"""

from __future__ import annotations

import functools
import logging
import math
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import TuneConfig, VideoSpec, config_to_dict
from .errors import InputError
from .graphs import GraphedTrainStep, train_graphs_enabled
from .pipeline import video_to_tensor
from .progress import ProgressCallback, ProgressReporter
from .speed import SpeedMode
from .store import DELTA_FILE, RECORD_FILE, TunedDelta, base_fingerprint, load_inverted, save_inverted
from .store import LEGACY_INVERTED_FILE as INVERTED_FILE

logger = logging.getLogger(__name__)

__all__ = [  # the tuned-delta artifact and its files belong to the store; these names stay importable here
    "DELTA_FILE", "INVERTED_FILE", "RECORD_FILE", "TunedDelta", "base_fingerprint", "denoising_loss",
    "load_inverted", "save_inverted", "select_trainable", "tune",
]  # fmt: skip


def select_trainable(unet: torch.nn.Module, suffixes: tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """Parameters of every module whose qualified name ends with one of ``suffixes``."""
    names: dict[str, torch.nn.Parameter] = {}
    for mod_name, module in unet.named_modules():
        if mod_name.endswith(tuple(suffixes)):
            for p_name, p in module.named_parameters():
                names[f"{mod_name}.{p_name}"] = p
    if not names:
        raise InputError(f"no module name ends with any of {list(suffixes)}; nothing to train")
    return names


def _resolve_precision(config: TuneConfig, device: torch.device) -> str:
    if config.mixed_precision != "auto":
        if config.mixed_precision != "no" and device.type != "cuda":
            raise InputError(f"mixed_precision={config.mixed_precision} needs a CUDA GPU; use 'no' on {device.type}")
        return config.mixed_precision
    return "fp16" if device.type == "cuda" else "no"


def denoising_loss(
    unet: torch.nn.Module,
    scheduler: Any,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
) -> torch.Tensor:
    """The training objective: MSE between the UNet output and ε (or v), mean over every element."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    elif scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction type {scheduler.config.prediction_type!r}")
    # The UNet input takes the embeddings' dtype: fp32 under autocast, the UNet's own half dtype on the fast path.
    pred = unet(noisy.to(prompt_embeds.dtype), timesteps, encoder_hidden_states=prompt_embeds).sample
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


# Over 60 lines: the documented signature, the loop and the record; the parts live in the helpers below.
def tune(
    pipe: Any,
    video: np.ndarray | torch.Tensor,
    prompt: str,
    config: TuneConfig = TuneConfig(),  # noqa: B008 - frozen dataclass
    callback: ProgressCallback | None = None,
    video_spec: VideoSpec | None = None,
    progress_bar: bool = False,
    extra_record: dict[str, Any] | None = None,
    *,
    generator: torch.Generator | None = None,
    speed: SpeedMode | None = None,
) -> TunedDelta:
    """Tune ``pipe.unet`` in place on one clip and return the tuned parameters as a :class:`TunedDelta`.

    Args:
        pipe: a :class:`~tuneavideo.TuneAVideoPipeline` (its VAE and text encoder stay frozen).
        video: uint8 frames ``(f, h, w, 3)`` or float ``(1, 3, f, h, w)`` in [-1, 1].
        prompt: a caption of the source clip.
        callback: gets a ``ProgressEvent(stage="tune", loss=...)`` per step; raising
            :class:`~tuneavideo.errors.Cancelled` stops at the end of that step (the UNet then holds
            partially tuned weights; the engine restores the base).
        generator: the source of every random draw (posterior samples, noise, timesteps); default
            ``torch.Generator("cpu").manual_seed(config.seed)``. It may live on another device than
            the model: draws are made on its device, then moved. The global RNG is never used.
        speed: a :data:`~tuneavideo.speed.SpeedMode` to apply to ``pipe`` first (it stays applied);
            ``None`` keeps the pipeline's own mode (``pipe.speed_mode``, ``"auto"`` by default).
    """
    from diffusers import DDPMScheduler

    unet = pipe.unet
    device = pipe._execution_device
    precision = _resolve_precision(config, device)
    if precision == "no" and unet.dtype != torch.float32:
        raise InputError(
            f"tuning a {unet.dtype} UNet needs mixed precision (fp16/bf16); load the model in fp32 to use 'no'"
        )
    plan = pipe.set_speed_mode(speed) if speed is not None else pipe.speed_plan()
    if generator is None:
        generator = torch.Generator("cpu").manual_seed(config.seed)

    # Frozen parts run once: the clip's VAE posterior and the prompt embedding.
    with torch.no_grad():
        pixels = video_to_tensor(video)
        posterior = _ClipPosterior.encode(pipe, pixels, plan.vae_chunk)
        prompt_embeds = pipe.encode_prompt(prompt, device).float()
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    trainable = select_trainable(unet, config.trainable_modules)
    checkpointing = bool(plan.gradient_checkpointing or config.gradient_checkpointing)
    # Fast path: the UNet computes in its own half dtype (no autocast casts around every norm and matmul);
    # the optimizer keeps fp32 master copies of the trained parameters.
    half = plan.half_compute and _PRECISION_DTYPES.get(precision) == unet.dtype
    compute_dtype = unet.dtype if precision == "no" else torch.float32  # latents, noise, targets
    # The fast and low-vram paths replay the whole step from a CUDA graph (TUNEAVIDEO_TRAIN_GRAPHS=0: eager).
    graphed = plan.train_graphs and half and device.type == "cuda" and train_graphs_enabled()
    losses: list[float] = []
    started = time.perf_counter()
    with (
        _frozen_parts_offloaded(pipe, plan.offload_frozen),
        _training_mode(unet, trainable, checkpointing, half, graphed) as params,
        _whole_transformer_checkpoints(unet, checkpointing and plan.checkpoint_transformers, not graphed),
    ):
        optimizer = torch.optim.AdamW(
            params,
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.adam_weight_decay,
            eps=config.adam_epsilon,
            **({"fused": True} if plan.fused_adamw else {}),
            **({"capturable": True} if graphed else {}),  # its step count stays on the GPU
        )
        step_fn: Any = _MixedPrecisionStep(
            optimizer, params, precision, device, config.max_grad_norm, list(trainable.values()) if half else None
        )
        embeds = prompt_embeds.to(unet.dtype if half else compute_dtype)  # the UNet's input dtype
        ahead = _compile_kernels_ahead(unet, noise_scheduler, posterior, embeds, step_fn, plan, device, compute_dtype)
        if graphed:
            step_fn = GraphedTrainStep(step_fn)
        reporter = ProgressReporter("tune", config.max_train_steps, callback, tqdm_bar=progress_bar)
        try:
            for step in range(config.max_train_steps):
                if ahead is not None and ahead.poll():  # the kernels are compiled: they take over from here
                    ahead = None
                with torch.no_grad():
                    latents = posterior.sample(generator, device, compute_dtype)  # (b, 4, f, h, w)
                    noise = _randn(latents.shape, generator, latents.dtype).to(device)
                    t = torch.randint(
                        0,
                        noise_scheduler.config.num_train_timesteps,
                        (latents.shape[0],),
                        generator=generator,
                        device=generator.device,
                    ).to(device)
                with plan.attention_context():  # backward and checkpoint recomputes pick the same kernels
                    loss = step_fn(denoising_loss, unet, noise_scheduler, latents, embeds, noise, t)
                losses.append(loss)
                _check_finite_loss(loss, step + 1, config.learning_rate)
                reporter.step(step + 1, loss=loss, timestep=int(t[0]))
        except BaseException:
            if ahead is not None:  # cancelled or failed: stop compiling now, the kernels switch back on
                ahead.cancel()
            raise
        finally:
            if ahead is not None:  # a run shorter than the compile: let it finish, so the kernels switch back on
                ahead.wait(timeout=600)
            reporter.close()
            skipped = step_fn.skipped
            graph_steps = getattr(step_fn, "replays", None)
            del optimizer, step_fn

    record = {
        "format": "tuneavideo-delta-v1",
        "base_model": getattr(pipe, "base_model", None),
        "base_fingerprint": base_fingerprint(unet),
        "prompt": prompt,
        "num_frames": int(pixels.shape[2]),
        "height": int(pixels.shape[-2]),
        "width": int(pixels.shape[-1]),
        "video_spec": config_to_dict(video_spec) if video_spec else None,
        "tune_config": config_to_dict(config),
        "seed": config.seed,
        "mixed_precision": precision,
        "speed_mode": plan.mode,
        "device": str(device),
        "steps": len(losses),
        "skipped_steps": skipped,  # fp16 loss scaling: steps whose gradients overflowed and were not applied
        "cuda_graph_steps": graph_steps,  # steps replayed from a CUDA graph (None: not graphed)
        "final_loss": losses[-1] if losses else None,
        "mean_loss_last_10": float(np.mean(losses[-10:])) if losses else None,
        "seconds": round(time.perf_counter() - started, 2),
        "trainable_parameters": sum(p.numel() for p in trainable.values()),
        "versions": _versions(),
        **(extra_record or {}),
    }
    state = {k: v.detach().clone() for k, v in trainable.items()}
    return TunedDelta(state, record, tuple(losses))


def _compile_kernels_ahead(
    unet: torch.nn.Module, scheduler: Any, posterior: _ClipPosterior, embeds: torch.Tensor, step: _MixedPrecisionStep,
    plan: Any, device: torch.device, dtype: torch.dtype,
) -> Any:  # fmt: skip
    """Fast / low-vram on CUDA: a dry forward and backward of the step's shapes records the Triton kernels'
    launches; those this machine has not compiled yet compile in worker processes while the first steps run on
    the PyTorch path (:mod:`tuneavideo.kernels.precompile`). Returns the compile in flight, or None."""
    from .kernels import precompile

    if not (plan.fast_kernels and precompile.wanted(device)):
        return None
    bf, c, h, w = posterior.mean.shape
    b, f = bf // posterior.num_frames, posterior.num_frames

    def dry_run() -> None:  # zeros, no generator draws: the run's random stream is untouched
        latents = torch.zeros(b, c, f, h, w, device=device, dtype=dtype)
        t = torch.zeros(b, dtype=torch.long, device=device)
        with torch.autocast(device.type, dtype=step.dtype or torch.float32, enabled=step.autocast):
            with plan.attention_context():
                loss = denoising_loss(unet, scheduler, latents, embeds, latents, t)
        loss.backward()
        for p in unet.parameters():
            p.grad = None
        # the inversion's and the guided edit's forward passes (one and two videos) compile ahead too
        with torch.no_grad(), plan.attention_context():
            for n in (1, 2):
                x = torch.zeros(n, c, f, h, w, device=device, dtype=unet.dtype)
                unet(x, t[:1].expand(n), encoder_hidden_states=embeds[:1].expand(n, -1, -1).to(unet.dtype))

    try:
        return precompile.prepare(dry_run, device)
    except Exception as exc:  # optional: the kernels then compile on first use, as Triton does by itself
        for p in unet.parameters():
            p.grad = None
        logger.warning("compiling the kernels ahead was skipped: %s: %s", type(exc).__name__, exc)
        return None


def _check_finite_loss(loss: float, step: int, learning_rate: float) -> None:
    """Stop at the first non-finite loss: every later step would only spread NaNs through the weights."""
    if not math.isfinite(loss):
        raise InputError(
            f"tuning diverged: the loss became {loss} at step {step} with learning rate {learning_rate:g}; "
            "lower the learning rate (the paper uses 3e-5) and tune again."
        )


def _randn(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    # Drawn on the generator's device (CPU by default), so a seed gives the same numbers on any GPU.
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)


@dataclass
class _ClipPosterior:
    """The VAE posterior of the source clip, per frame: ``mean`` / ``std`` are ``(b f, 4, h, w)`` fp32."""

    mean: torch.Tensor
    std: torch.Tensor
    num_frames: int
    scaling: float

    @classmethod
    def encode(cls, pipe: Any, pixels: torch.Tensor, chunk: int) -> _ClipPosterior:
        """Encode ``pixels`` ``(b, 3, f, h, w)`` in chunks of ``chunk`` frames (unsliced, as official)."""
        device = pipe._execution_device
        f = pixels.shape[2]
        frames = pixels.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (b f) 3 h w
        moments = torch.cat(
            [pipe.vae.encode(c.to(device, pipe.vae.dtype)).latent_dist.parameters for c in frames.split(chunk)]
        )
        mean, logvar = moments.float().chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        return cls(mean, std, f, pipe.vae.config.scaling_factor)

    def sample(self, generator: torch.Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """A fresh posterior sample, as the official loop's ``vae.encode(...).sample()``: ``(b, 4, f, h, w)``."""
        z = self.mean + self.std * _randn(self.mean.shape, generator).to(device)
        z = z * self.scaling
        latents = z.view(-1, self.num_frames, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        return latents.to(dtype)


_PRECISION_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@contextmanager
def _frozen_parts_offloaded(pipe: Any, offload: bool) -> Iterator[None]:
    """With ``offload``: the VAE and the text encoder on the CPU while tuning (they are done once the clip and
    prompt are encoded), back on the pipeline's device afterwards: ~0.4 GiB for SD-1.x on a small GPU."""
    if not offload:
        yield
        return
    device = pipe._execution_device
    parts = [m for m in (pipe.vae, pipe.text_encoder) if m is not None]
    for part in parts:
        part.to("cpu")
    try:
        yield
    finally:
        for part in parts:
            part.to(device)


@contextmanager
def _training_mode(
    unet: torch.nn.Module,
    trainable: dict[str, torch.nn.Parameter],
    checkpointing: bool,
    masters: bool = False,
    graphed: bool = False,
) -> Iterator[list[torch.nn.Parameter]]:
    """Unfreeze ``trainable`` (the rest frozen) and put everything back afterwards; yields what to optimise.

    By default the trainable parameters themselves become fp32 master weights (used under autocast).
    With ``masters`` they stay in the UNet's half dtype and fp32 copies are yielded instead: the step
    copies gradients to them and their updated values back (:class:`_MixedPrecisionStep`). ``graphed``
    checkpoints without saving RNG states (a graph capture cannot read them; the UNet draws no random numbers).
    """
    unet.requires_grad_(False)
    base_dtype = unet.dtype
    model_params = list(trainable.values())
    for p in model_params:
        if not masters:
            p.data = p.data.float()
        p.requires_grad_(True)
    params = [p.detach().float().requires_grad_(True) for p in model_params] if masters else model_params
    if checkpointing:
        unet.enable_gradient_checkpointing(functools.partial(_checkpoint, preserve_rng_state=not graphed))
    was_training = unet.training
    unet.train()
    try:
        yield params
    finally:
        if checkpointing:
            unet.disable_gradient_checkpointing()
        for p in model_params:
            p.requires_grad_(False)
            p.grad = None
            p.data = p.data.to(base_dtype)
        unet.train(was_training)


@contextmanager
def _whole_transformer_checkpoints(unet: torch.nn.Module, on: bool, preserve_rng_state: bool) -> Iterator[None]:
    """Checkpoint each ``Transformer2DModel`` as a whole (GroupNorm, proj_in, its blocks with their temporal
    layers, proj_out) instead of each inner block (diffusers' granularity, set by ``enable_gradient_checkpointing``).

    Per-block checkpoints keep the activations of the norm and the projections around every block: 1.6 GiB of
    the 5.3 GiB over the weights at the low-vram peak (24 frames x 64², measured on an H200). One checkpoint
    per transformer keeps its input only; the blocks inside run plainly during its recompute.
    """
    if not on:
        yield
        return
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    transformers = [m for m in unet.modules() if isinstance(m, Transformer2DModel)]
    for module in transformers:
        module.gradient_checkpointing = False  # no checkpoint inside the checkpoint (a third forward)
        module.forward = functools.partial(_checkpointed_call, type(module).forward, module, preserve_rng_state)
    try:
        yield
    finally:
        for module in transformers:
            module.__dict__.pop("forward", None)


def _checkpointed_call(
    forward: Any, module: torch.nn.Module, preserve_rng_state: bool, *args: Any, **kwargs: Any
) -> Any:
    if not torch.is_grad_enabled():
        return forward(module, *args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, module, *args, use_reentrant=False, preserve_rng_state=preserve_rng_state, **kwargs)


def _checkpoint(module: torch.nn.Module, *args: Any, preserve_rng_state: bool = True) -> Any:
    """diffusers' gradient-checkpointing call (non-reentrant, hooks included), with the RNG-state choice made here."""
    return _checkpointed_call(type(module).__call__, module, preserve_rng_state, *args)


class _MixedPrecisionStep:
    """One optimiser step under fp16/bf16 autocast (fp32 master weights), with fp16 loss scaling.

    Plain ``torch.autocast`` + ``torch.amp.GradScaler`` (the defaults accelerate uses), created per
    run: no process-wide state is touched.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: list,
        precision: str,
        device: torch.device,
        max_norm: float,
        half_params: list | None = None,
    ) -> None:
        self.optimizer, self.params, self.max_norm = optimizer, params, max_norm
        self.device_type = device.type
        self.dtype = _PRECISION_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        # Half-compute: the UNet's own half parameters; ``params`` are their fp32 masters (no autocast).
        self.half_params = half_params
        self.autocast = self.dtype is not None and half_params is None
        self.skipped = 0  # steps the scaler skipped (inf/NaN gradients; it lowers its scale after each)

    def __call__(self, loss_fn: Any, *args: Any) -> float:
        """``loss_fn(*args)`` under autocast (or in half), backward, clip, step; returns the loss."""
        return self.finish(*self.ops(loss_fn, *args))

    def ops(self, loss_fn: Any, *args: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The step's GPU work with no host synchronisation (so a CUDA graph can capture it).

        Returns the loss and, with fp16 loss scaling, a flag that is true when the scaler skipped the step.
        """
        with torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.autocast):
            loss = loss_fn(*args)
        skipped = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self._grads_to_masters()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            scale = self.scaler._scale.clone()  # the scale tensor itself: get_scale() would synchronise
            self.scaler.step(self.optimizer)
            self.scaler.update()
            skipped = self.scaler._scale < scale  # update() backs off only after a skipped step
        else:
            loss.backward()
            self._grads_to_masters()
            torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.half_params is not None:
            with torch.no_grad():
                torch._foreach_copy_(self.half_params, self.params)  # updated masters, rounded to half
        return loss.detach(), skipped

    def finish(self, loss: torch.Tensor, skipped: torch.Tensor | None) -> float:
        """Read a step's results on the host: count a skipped step, return the loss."""
        if skipped is not None:
            self.skipped += int(skipped)
        return float(loss)

    def reset(self) -> None:
        """Drop the gradients and the scaler's per-step bookkeeping of a step that never finished."""
        self.optimizer.zero_grad(set_to_none=True)
        for half in self.half_params or []:
            half.grad = None
        if self.scaler is not None:
            self.scaler._per_optimizer_states.clear()  # a defaultdict: the next step starts fresh

    def _grads_to_masters(self) -> None:
        if self.half_params is None:
            return
        for half, master in zip(self.half_params, self.params, strict=True):
            master.grad = None if half.grad is None else half.grad.float()
            half.grad = None


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    from . import __version__

    return {
        "tuneavideo": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
