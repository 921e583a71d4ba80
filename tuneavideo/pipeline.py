"""``TuneAVideoPipeline``: text-to-video sampling and DDIM inversion with an inflated SD-1.x UNet.

A diffusers ``DiffusionPipeline`` over the usual SD components (vae, text_encoder, tokenizer,
unet, scheduler). Sampling follows the official pipeline: DDIM, CFG as ``u + s·(c − u)`` with
``[uncond, cond]`` batching, one ``randn(b, 4, f, h/8, w/8)`` for random latents.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .errors import InputError
from .inversion import ddim_invert
from .progress import ProgressCallback, ProgressReporter
from .unet import TuneAVideoUNet

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

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> TuneAVideoPipeline:  # type: ignore[override]
        """Load from an SD-1.x folder / hub id / single file, or a Tune-A-Video pipeline folder.

        Keyword arguments: ``torch_dtype``, ``device``, ``unet`` (path or model; default: the base's
        UNet), ``local_files_only``, ``revision``, ``variant``. See :func:`tuneavideo.load_pipeline`.
        """
        from .loading import load_pipeline

        return load_pipeline(pretrained_model_name_or_path, **kwargs)

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
        chunk_size: int = 8,
    ) -> torch.Tensor:
        """VAE-encode a clip to scaled latents ``(b, 4, f, h/8, w/8)``.

        ``video``: uint8 ``(f, h, w, 3)`` or float ``(b, 3, f, h, w)`` in [-1, 1]. ``sample=False``
        uses the posterior mean (deterministic, what editing inverts); ``True`` draws from it.
        """
        pixels = video_to_tensor(video)
        b, _, f = pixels.shape[:3]
        frames = pixels.permute(0, 2, 1, 3, 4).flatten(0, 1)  # (b f) 3 h w
        vae_dtype = self.vae.dtype
        out = []
        for chunk in frames.split(chunk_size):
            dist = self.vae.encode(chunk.to(self._execution_device, vae_dtype)).latent_dist
            out.append(dist.sample(generator) if sample else dist.mean)
        latents = torch.cat(out) * self.vae.config.scaling_factor  # (b f) 4 h w
        latents = latents.view(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)
        return latents.to(self.unet.dtype)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """Latents ``(b, 4, f, h, w)`` -> video ``(b, 3, f, H, W)`` float32 in [0, 1] on CPU."""
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
        return ddim_invert(
            self.unet,
            self.scheduler,
            latents.to(device, self.unet.dtype),
            embeds,
            num_inference_steps,
            return_all=return_all,
            callback=callback,
            progress_bar=not self._progress_bar_disabled(),
            unet_kwargs=unet_kwargs,
        )

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
        step_kwargs = {"eta": eta, "generator": generator} if isinstance(self.scheduler, DDIMScheduler) else {}
        legacy = _legacy_callback(callback)
        reporter = ProgressReporter(
            "sample", len(timesteps), None if legacy else callback, tqdm_bar=not self._progress_bar_disabled()
        )
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if do_cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            extra = unet_kwargs(model_input, t, embeds, i, len(timesteps)) if unet_kwargs is not None else {}
            noise_pred = self.unet(model_input, t, encoder_hidden_states=embeds, **extra).sample.to(latents.dtype)
            if do_cfg:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            reporter.step(i + 1, timestep=int(t))
            if legacy:
                callback(i, t, latents)
        reporter.close()

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
