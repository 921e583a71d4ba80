"""``TuneAVideoPipeline``: text-to-video sampling and DDIM inversion with an inflated SD-1.x UNet.

A diffusers ``DiffusionPipeline`` over the usual SD components (vae, text_encoder, tokenizer,
unet, scheduler). Sampling follows the official pipeline: DDIM, CFG as ``u + s·(c − u)`` with
``[uncond, cond]`` batching, one ``randn(b, 4, f, h/8, w/8)`` for random latents.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from .errors import InputError, ModelLoadError
from .graphs import loop_unet
from .hub import is_hub_id, offline_hint
from .inversion import ddim_invert
from .progress import ProgressCallback, ProgressReporter
from .speed import SpeedMode, SpeedPlan, apply_speed_mode
from .tokenizer import check_tokenizer
from .unet import TuneAVideoUNet
from .weights import local_only

# Control models plug in here: (latent_input, t, prompt_embeds, step_index, num_steps) -> extra UNet kwargs
UNetKwargsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, int], dict]


@dataclass
class TuneAVideoPipelineOutput(BaseOutput):
    """``videos``: ``(b, f, h, w, 3)`` float in [0, 1] (``np``), ``(b, 3, f, h, w)`` (``pt``) or latents."""

    videos: np.ndarray | torch.Tensor

    @property
    def frames(self) -> np.ndarray | torch.Tensor:
        return self.videos


class TuneAVideoPipeline(DiffusionPipeline):
    """Text-to-video with a Tune-A-Video UNet; ``invert`` gives the DDIM noise of a source clip."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: list[str] = []

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: Any,
        tokenizer: Any,
        unet: TuneAVideoUNet,
        scheduler: Any,
    ) -> None:
        super().__init__()
        if not isinstance(unet, TuneAVideoUNet):
            unet = TuneAVideoUNet.from_unet2d(unet)
        # Same fixes the SD pipeline applies to old scheduler configs (official pipeline does too).
        fixes = {}
        if getattr(scheduler.config, "steps_offset", 1) != 1:
            fixes["steps_offset"] = 1
        if getattr(scheduler.config, "clip_sample", False) is True:
            fixes["clip_sample"] = False
        if fixes:
            scheduler = type(scheduler).from_config({**scheduler.config, **fixes})
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._speed_mode: SpeedMode = "auto"
        self._speed_compile = False

    # ------------------------------------------------------------------ speed (tuneavideo/speed.py)
    @property
    def speed_mode(self) -> SpeedMode:
        """The chosen mode (``"auto"`` until :meth:`set_speed_mode`); :meth:`speed_plan` resolves it."""
        return self._speed_mode

    def set_speed_mode(self, mode: SpeedMode, compile: bool | None = None) -> SpeedPlan:
        """Choose ``"auto"`` (fast on CUDA, plain on CPU), ``"plain"``, ``"fast"`` or ``"low-vram"``.

        ``compile`` adds regional ``torch.compile`` on CUDA (``None`` keeps the last choice, off at first).
        """
        if compile is not None:
            self._speed_compile = compile
        plan = apply_speed_mode(self, mode, self._speed_compile)
        self._speed_mode = mode
        return plan

    def speed_plan(self) -> SpeedPlan:
        """The current mode resolved for the current device, applied to the UNet (idempotent)."""
        return apply_speed_mode(self, self._speed_mode, self._speed_compile)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        unet: str | os.PathLike | torch.nn.Module | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        variant: str | None = None,
        scheduler: str = "ddim",
        original_config: str | None = None,
    ) -> TuneAVideoPipeline:
        """Build a pipeline from an SD-1.x base (what :func:`tuneavideo.load_pipeline` calls).

        Args:
            pretrained_model_name_or_path: a diffusers folder, a hub id (default base
                ``stable-diffusion-v1-5/stable-diffusion-v1-5``; community SD-1.x/DreamBooth bases too),
                an official Tune-A-Video output folder, or a single ``.safetensors``/``.ckpt`` file.
            unet: optional UNet override: a folder (official checkpoint or 2D UNet) or a loaded model.
            local_files_only: the hub policy; ``None`` reads ``HF_HUB_OFFLINE`` (at call time).
            scheduler: ``"ddim"`` (the official sampler, default) or ``"base"`` to keep the base's own.
            original_config: for single files, a local diffusers config folder (needed offline).
        """
        pretrained = pretrained_model_name_or_path
        local = local_only(local_files_only)
        path = Path(pretrained)
        if path.is_file():
            return cls._from_single_file(path, unet, torch_dtype, device, local, original_config, scheduler)
        if not path.exists() and not is_hub_id(str(pretrained)):
            raise ModelLoadError(f"model not found: {pretrained} (expected a folder, a file or a hub id 'org/name')")
        kw = {"revision": revision} if revision else {}
        weights_kw = {**kw, **({"torch_dtype": torch_dtype} if torch_dtype is not None else {})}
        vae = _load_component(AutoencoderKL, pretrained, "vae", local, **weights_kw)
        text_encoder = _load_component(CLIPTextModel, pretrained, "text_encoder", local, **weights_kw)
        tokenizer = _load_component(CLIPTokenizer, pretrained, "tokenizer", local, **kw)
        check_tokenizer(tokenizer, f"{pretrained}/tokenizer")
        base_scheduler = _load_component(DDIMScheduler, pretrained, "scheduler", local, **kw)
        if scheduler == "base":
            import diffusers

            cfg = DDIMScheduler.load_config(str(pretrained), subfolder="scheduler", local_files_only=local, **kw)
            base_scheduler = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
        if isinstance(unet, torch.nn.Module):
            unet_model = unet
        else:
            source = pretrained if unet is None else unet
            unet_model = TuneAVideoUNet.from_pretrained_2d(source, "unet", torch_dtype, None, local, revision, variant)
        pipe = cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet_model, scheduler=base_scheduler)
        if device is not None:
            pipe.to(device)
        pipe.base_model = str(pretrained)
        return pipe

    @classmethod
    def _from_single_file(
        cls,
        path: Path,
        unet: Any,
        torch_dtype: torch.dtype | None,
        device: Any,
        local: bool,
        original_config: str | None,
        scheduler: str,
    ) -> TuneAVideoPipeline:
        """A single-file SD-1.x checkpoint (A1111/civitai style), converted by diffusers."""
        from diffusers import StableDiffusionPipeline

        if path.suffix not in (".safetensors", ".ckpt", ".pt", ".bin"):
            raise ModelLoadError(f"{path}: not a checkpoint file (.safetensors or .ckpt)")
        kwargs: dict[str, Any] = {"local_files_only": local}
        if original_config:
            kwargs["config"] = original_config
        try:
            sd = StableDiffusionPipeline.from_single_file(str(path), torch_dtype=torch_dtype, **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"could not convert single-file checkpoint {path}: {exc}. Offline, pass a local diffusers SD-1.x "
                "folder as original_config so its component configs can be used."
            ) from exc
        unet_model = unet if isinstance(unet, torch.nn.Module) else TuneAVideoUNet.from_unet2d(sd.unet)
        sched = sd.scheduler if scheduler == "base" else DDIMScheduler.from_config(sd.scheduler.config)
        pipe = cls(vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet_model, scheduler=sched)
        if device is not None:
            pipe.to(device)
        pipe.base_model = str(path)
        return pipe

    # ------------------------------------------------------------------ text, VAE
    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        num_videos_per_prompt: int = 1,
        do_classifier_free_guidance: bool = False,
        negative_prompt: str | list[str] | None = None,
    ) -> torch.Tensor:
        """Text embeddings ``(b, 77, d)``; with CFG, ``[uncond; cond]`` stacked on the batch axis."""
        device = device or self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        embeds = self._embed(prompts, device).repeat_interleave(num_videos_per_prompt, dim=0)
        if not do_classifier_free_guidance:
            return embeds
        if negative_prompt is None:
            negatives = [""] * len(prompts)
        elif isinstance(negative_prompt, str):
            negatives = [negative_prompt] * len(prompts)
        else:
            negatives = list(negative_prompt)
            if len(negatives) != len(prompts):
                raise InputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts")
        uncond = self._embed(negatives, device).repeat_interleave(num_videos_per_prompt, dim=0)
        return torch.cat([uncond, embeds])

    def _embed(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        return self.text_encoder(ids)[0].to(self.unet.dtype)

    @torch.no_grad()
    def encode_video(
        self,
        video: np.ndarray | torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """VAE-encode a clip to scaled latents ``(b, 4, f, h/8, w/8)``, ``chunk_size`` frames at a time
        (default: 8, or 1 in the low-VRAM mode).

        ``video``: uint8 ``(f, h, w, 3)`` or float ``(b, 3, f, h, w)`` in [-1, 1]. ``sample=False``
        uses the posterior mean (deterministic, what editing inverts); ``True`` draws from it.
        """
        pixels = video_to_tensor(video)
        b, _, f = pixels.shape[:3]
        frames = pixels.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (b f) 3 h w
        vae_dtype = self.vae.dtype
        out = []
        for chunk in frames.split(chunk_size or self.speed_plan().vae_chunk):
            dist = self.vae.encode(chunk.to(self._execution_device, vae_dtype)).latent_dist
            out.append(dist.sample(generator) if sample else dist.mean)
        latents = torch.cat(out) * self.vae.config.scaling_factor  # (b f) 4 h w
        latents = latents.view(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
        return latents.to(self.unet.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """Latents ``(b, 4, f, h, w)`` -> video ``(b, 3, f, H, W)`` float32 in [0, 1] on CPU."""
        chunk_size = chunk_size or self.speed_plan().vae_chunk
        b, _, f = latents.shape[:3]
        frames = (latents / self.vae.config.scaling_factor).permute(0, 2, 1, 3, 4).flatten(0, 1)
        out = [self.vae.decode(c.to(self.vae.dtype)).sample.float().cpu() for c in frames.split(chunk_size)]
        video = torch.cat(out).view(b, f, 3, *out[0].shape[2:]).permute(0, 2, 1, 3, 4)
        return (video / 2 + 0.5).clamp(0, 1)

    # ------------------------------------------------------------------ inversion
    @torch.no_grad()
    def invert(
        self,
        latents: torch.Tensor,
        num_inference_steps: int = 50,
        prompt: str = "",
        return_all: bool = False,
        callback: ProgressCallback | None = None,
        unet_kwargs: Callable[[torch.Tensor, torch.Tensor, int], dict] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """DDIM-invert clean latents ``(b, 4, f, h, w)`` as the official code does (see ``inversion.py``)."""
        if latents.dim() != 5:
            raise InputError(f"latents must be (b, 4, f, h, w), got {tuple(latents.shape)}")
        device = self._execution_device
        embeds = self.encode_prompt(prompt, device)
        plan = self.speed_plan()  # compiled blocks / CUDA graphs on the fast path
        return ddim_invert(
            loop_unet(self.unet, plan.cuda_graphs, num_inference_steps),
            self.scheduler,
            latents.to(device, self.unet.dtype),
            embeds,
            num_inference_steps,
            return_all=return_all,
            callback=callback,
            progress_bar=not self._progress_bar_disabled(),
            unet_kwargs=unet_kwargs,
        )

    @staticmethod
    def _denoise(
        unet: Any, model_input: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, extra: dict, split: bool
    ) -> torch.Tensor:
        """One call of ``unet`` (the UNet, or the loop's :class:`~tuneavideo.graphs.GraphedUNet`) on
        ``(2b, 4, f, h, w)`` (CFG) or ``(b, ...)``; ``split`` runs CFG as two half batches."""
        if not split:
            return unet(model_input, t, encoder_hidden_states=embeds, **extra).sample
        halves = []
        for half in range(2):  # [uncond, cond]: the same maths, half the activation memory
            part = {k: _half_batch(v, half) for k, v in extra.items()}
            x, e = model_input.chunk(2)[half], embeds.chunk(2)[half]
            halves.append(unet(x, t, encoder_hidden_states=e, **part).sample)
        return torch.cat(halves)

    def _progress_bar_disabled(self) -> bool:
        return bool(getattr(self, "_progress_bar_config", {}).get("disable", False))

    # ------------------------------------------------------------------ sampling
    def check_inputs(
        self, prompt: str | list[str], num_frames: int, height: int, width: int, latents: torch.Tensor | None
    ) -> None:
        if not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
            raise InputError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        if num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {num_frames}")
        for name, v in (("height", height), ("width", width)):
            if v <= 0 or v % self.vae_scale_factor:
                raise InputError(f"{name}={v} must be a positive multiple of {self.vae_scale_factor}")
        if latents is not None and latents.dim() != 5:
            raise InputError(f"latents must be (b, 4, f, h, w), got {tuple(latents.shape)}")

    # Over 60 lines: the documented diffusers-style signature and the numbered steps 0-5, kept in one place.
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 12.5,
        negative_prompt: str | list[str] | None = None,
        num_videos_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback: ProgressCallback | None = None,
        unet_kwargs: UNetKwargsFn | None = None,
        video_length: int | None = None,
    ) -> TuneAVideoPipelineOutput | tuple:
        """Generate videos.

        Args:
            prompt: text (or list of texts) to generate.
            num_frames: frames per video (``video_length`` is accepted as the official alias);
                taken from ``latents`` when given.
            latents: starting noise ``(b, 4, f, h/8, w/8)``, e.g. from :meth:`invert` for editing;
                a single video's latents are shared by every prompt.
            output_type: ``"np"`` -> ``(b, f, h, w, 3)`` float in [0, 1]; ``"pt"`` -> ``(b, 3, f, h, w)``
                (the official layout); ``"latent"`` -> the final latents.
            callback: receives a :class:`~tuneavideo.progress.ProgressEvent` after every step (a
                three-argument ``callback(step, timestep, latents)`` as in the official code also works).
            unet_kwargs: hook for control models, returning extra UNet arguments per step.
        """
        # 0. defaults
        if latents is not None:
            num_frames = latents.shape[2]
            height = height or latents.shape[3] * self.vae_scale_factor
            width = width or latents.shape[4] * self.vae_scale_factor
        num_frames = num_frames or video_length or 8
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        self.check_inputs(prompt, num_frames, height, width, latents)
        if output_type not in ("np", "pt", "latent", "tensor"):
            raise InputError(f"output_type must be 'np', 'pt' or 'latent', got {output_type!r}")

        # 1. text
        device = self._execution_device
        batch = 1 if isinstance(prompt, str) else len(prompt)
        do_cfg = guidance_scale > 1.0
        embeds = self.encode_prompt(prompt, device, num_videos_per_prompt, do_cfg, negative_prompt)

        # 2. timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 3. latents (b, 4, f, h/8, w/8)
        shape = (
            batch * num_videos_per_prompt,
            self.unet.config.in_channels,
            num_frames,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype)
        else:
            if latents.shape[0] == 1 and shape[0] > 1:
                latents = latents.expand(shape).contiguous()
            if tuple(latents.shape) != shape:
                raise InputError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
            latents = latents.to(device, embeds.dtype)
        latents = latents * self.scheduler.init_noise_sigma

        # 4. denoising loop
        plan = self.speed_plan()
        step_kwargs = {"eta": eta, "generator": generator} if isinstance(self.scheduler, DDIMScheduler) else {}
        legacy = _legacy_callback(callback)
        reporter = ProgressReporter(
            "sample", len(timesteps), None if legacy else callback, tqdm_bar=not self._progress_bar_disabled()
        )
        unet = loop_unet(self.unet, plan.cuda_graphs, len(timesteps))  # one graph for this loop, freed with it
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            extra = unet_kwargs(model_input, t, embeds, i, len(timesteps)) if unet_kwargs is not None else {}
            noise_pred = self._denoise(unet, model_input, t, embeds, extra, do_cfg and not plan.cfg_one_batch)
            noise_pred = noise_pred.to(latents.dtype)
            if do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            reporter.step(i + 1, timestep=int(t))
            if legacy:
                callback(i, t, latents)
        reporter.close()
        del unet  # a captured graph's memory goes before decoding

        # 5. decode
        if output_type == "latent":
            videos: Any = latents
        else:
            videos = self.decode_latents(latents)  # (b, 3, f, h, w)
            if output_type == "np":
                videos = videos.permute(0, 2, 3, 4, 1).numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (videos,)
        return TuneAVideoPipelineOutput(videos=videos)


def _half_batch(value: Any, half: int) -> Any:
    """Half ``half`` of a CFG-batched UNet kwarg (tensor, or list/tuple of tensors, e.g. control residuals)."""
    if torch.is_tensor(value) and value.dim() > 0:
        return value.chunk(2)[half]
    if isinstance(value, (list, tuple)):
        return type(value)(_half_batch(v, half) for v in value)
    return value


def _load_component(cls: Any, path_or_id: str | os.PathLike, subfolder: str, local: bool, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(str(path_or_id), subfolder=subfolder, local_files_only=local, **kwargs)
    except Exception as exc:
        hint = f" {offline_hint(str(path_or_id))}" if local and is_hub_id(str(path_or_id)) else ""
        raise ModelLoadError(f"could not load {subfolder} ({cls.__name__}) from '{path_or_id}':{hint} {exc}") from exc


def _legacy_callback(callback: Callable | None) -> bool:
    """True for an official/diffusers-style ``callback(step, timestep, latents)``."""
    if callback is None:
        return False
    import inspect

    try:
        params = [
            p for p in inspect.signature(callback).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]  # fmt: skip
    except (TypeError, ValueError):
        return False
    return len(params) >= 3


def video_to_tensor(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(f, h, w, 3)`` / ``(b, f, h, w, 3)`` or float ``(b, 3, f, h, w)`` -> float ``(b, 3, f, h, w)`` in [-1, 1]."""
    if isinstance(video, np.ndarray):
        if video.dtype != np.uint8:
            raise InputError(f"numpy videos must be uint8 (f, h, w, 3), got {video.dtype}")
        video = torch.from_numpy(np.ascontiguousarray(video))
    if video.dtype == torch.uint8:
        if video.dim() == 4:
            video = video[None]
        if video.dim() != 5 or video.shape[-1] != 3:
            raise InputError(f"uint8 videos must be (f, h, w, 3), got {tuple(video.shape)}")
        return video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # (b, 3, f, h, w), official x/127.5 - 1
    if video.dim() != 5 or video.shape[1] != 3:
        raise InputError(f"float videos must be (b, 3, f, h, w) in [-1, 1], got {tuple(video.shape)}")
    return video
