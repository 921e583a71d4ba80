"""Network inflation (Tune-A-Video §4.1): a stock SD-1.x UNet that runs on videos ``(b, c, f, h, w)``.

``TuneAVideoUNet`` *is* a diffusers ``UNet2DConditionModel`` (same block stack, same parameter
names) with four small patches:

1. frames fold into the batch, so every 2D conv / attention / norm is reused unchanged;
2. ResNet GroupNorms and ``conv_norm_out`` pool their statistics over all frames of a clip (the
   official 5-D GroupNorm); the transformers' GroupNorm stays per frame;
3. every ``attn1`` uses :class:`~tuneavideo.attention.SparseCausalAttnProcessor`;
4. every ``BasicTransformerBlock`` gains ``norm_temp`` + ``attn_temp`` run after its feed-forward.

The added parameter names match official Tune-A-Video checkpoints key for key.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel, UNet2DConditionOutput
from torch import nn

from .attention import (
    FrameContext,
    SparseCausalAttnProcessor,
    TemporalAttentionHook,
    XFormersAttnProcessor,
    make_temporal_layers,
)
from .errors import ModelLoadError
from .kernels import channels_last_memory, kernel_module
from .weights import (
    TEMPORAL_INIT_SEED,
    check_unet_keys,
    load_state_dict_file,
    resolve_folder,
    unet_config_to_2d,
    weights_file,
)

logger = logging.getLogger(__name__)

ATTENTION_KERNELS = ("sdpa", "xformers")


class ClipGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span every frame of a clip: input ``(b f) c h w``.

    Equivalent to ``F.group_norm`` on the 5-D ``(b, c, f, h, w)`` tensor (official ResnetBlock3D),
    computed on the folded layout without permuting copies. Same parameters as ``nn.GroupNorm``.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float, affine: bool, context: FrameContext) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.context = context

    @classmethod
    def from_group_norm(cls, norm: nn.GroupNorm, context: FrameContext) -> ClipGroupNorm:
        new = cls(norm.num_groups, norm.num_channels, norm.eps, norm.affine, context)
        if norm.affine:
            new.weight, new.bias = norm.weight, norm.bias  # share, don't copy
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.context.num_frames
        nhwc = channels_last_memory(x)  # SpeedPlan.channels_last: the kernel keeps NHWC, any frame count and dtype
        if self.context.fast_kernels and (nhwc or (f > 1 and x.dtype in (torch.float16, torch.bfloat16))):
            gn = kernel_module("group_norm")
            if gn is not None and gn.clip_group_norm_supported(x, f, self.num_groups, self.weight):
                return gn.clip_group_norm(x, f, self.num_groups, self.weight, self.bias, self.eps)
            if not nhwc and x.is_contiguous():
                return self._frame_parallel(x, f)
        if f == 1:
            return super().forward(x)
        bf, c, h, w = x.shape
        x5 = x.view(bf // f, f, c, h, w).transpose(1, 2)  # (b, c, f, h, w)
        y = F.group_norm(x5, self.num_groups, self.weight, self.bias, self.eps)
        return y.transpose(1, 2).reshape(bf, c, h, w)

    def _frame_parallel(self, x: torch.Tensor, f: int) -> torch.Tensor:
        """The same normalisation from per-frame statistics pooled over the clip, without layout copies.

        ``F.group_norm`` on the 5-D view first copies it contiguous, then reduces ``b * groups`` rows of
        ``f·h·w·c/groups`` elements: 64 long rows leave most of an H200 idle (0.34 ms a call at 24 frames).
        Here each frame's group is reduced on its own (``b·f·groups`` rows, fp32 accumulation), the
        moments are pooled exactly (E[x] and E[x²] over equal-sized frames), and one broadcast
        multiply-add normalises in place of the layout. Only rounding differs from the reference path.
        """
        bf, c, h, w = x.shape
        b, g = bf // f, self.num_groups
        xg = x.view(b, f, g, -1)  # (b, f, groups, c/groups·h·w)
        mean = xg.mean(dim=-1, dtype=torch.float32)  # (b, f, groups)
        var = torch.var(xg, dim=-1, correction=0).float()  # per frame; a variance needs only relative precision
        clip_mean = mean.mean(dim=1)  # (b, groups)
        clip_var = (var + mean.square()).mean(dim=1) - clip_mean.square()
        rstd = torch.rsqrt(clip_var.clamp_min(0) + self.eps)  # (b, groups)
        weight = self.weight.float().view(1, g, -1) if self.affine else x.new_ones(1, g, c // g, dtype=torch.float32)
        bias = self.bias.float().view(1, g, -1) if self.affine else 0.0
        scale = rstd.unsqueeze(-1) * weight  # (b, groups, c/groups)
        shift = bias - clip_mean.unsqueeze(-1) * scale
        x5 = x.view(b, f, g, c // g, h * w)
        y = torch.addcmul(shift.to(x.dtype).view(b, 1, g, -1, 1), x5, scale.to(x.dtype).view(b, 1, g, -1, 1))
        return y.view(bf, c, h, w)


def _fold(x: torch.Tensor) -> torch.Tensor:
    # (b, c, f, h, w) -> (b f, c, h, w)
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def _unfold(x: torch.Tensor, f: int) -> torch.Tensor:
    # (b f, c, h, w) -> (b, c, f, h, w)
    bf, c, h, w = x.shape
    return x.view(bf // f, f, c, h, w).permute(0, 2, 1, 3, 4)


def _repeat_frames(x: torch.Tensor | None, f: int) -> torch.Tensor | None:
    # (b, ...) -> (b f, ...), each video's entry repeated for its frames
    return None if x is None else x.repeat_interleave(f, dim=0)


def _fold_residuals(residuals: Any, f: int) -> Any:
    if residuals is None:
        return None
    if torch.is_tensor(residuals):
        return _fold(residuals) if residuals.dim() == 5 else residuals
    # a list: diffusers pops T2I-Adapter residuals from it while running the down blocks
    return [_fold(r) if r.dim() == 5 else r for r in residuals]


class TuneAVideoUNet(UNet2DConditionModel):
    """Inflated SD UNet: ``forward(latents (b, c, f, h, w), t, text (b, n, d)) -> (b, c, f, h, w)``.

    Build it like any ``UNet2DConditionModel`` (same config) or from an existing one with
    :meth:`from_unet2d`; load weights with :meth:`from_pretrained_2d` (``tuneavideo.load_unet``).
    """

    _supports_gradient_checkpointing = True

    @functools.wraps(UNet2DConditionModel.__init__)  # keeps the config signature for ConfigMixin
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inflate()

    # ------------------------------------------------------------------ inflation
    def _inflate(self) -> None:
        self.frame_context = FrameContext()
        self._attention_kernel = "sdpa"
        self._temporal_hooks = []  # handles, to remove the hooks
        self._temporal_hook_fns: list[TemporalAttentionHook] = []  # the hooks, to compile them (speed.py)
        # 1. clip-level GroupNorm in resnets and the output norm (not in the transformers)
        for module in list(self.modules()):
            if isinstance(module, ResnetBlock2D):
                for name in ("norm1", "norm2"):
                    norm = getattr(module, name)
                    if type(norm) is nn.GroupNorm:
                        setattr(module, name, ClipGroupNorm.from_group_norm(norm, self.frame_context))
        if type(self.conv_norm_out) is nn.GroupNorm:
            self.conv_norm_out = ClipGroupNorm.from_group_norm(self.conv_norm_out, self.frame_context)
        # 2. temporal attention after every transformer block's feed-forward
        for module in list(self.modules()):
            if isinstance(module, BasicTransformerBlock):
                if module.attn1 is None or module.only_cross_attention:
                    raise ValueError("Tune-A-Video inflation needs self-attention (attn1) in every transformer block")
                module.attn_temp = None  # placeholder, filled by init_temporal_layers
                hook = TemporalAttentionHook(self.frame_context)
                self._temporal_hooks.append(module.register_forward_hook(hook))
                self._temporal_hook_fns.append(hook)
        self.init_temporal_layers()

    def init_temporal_layers(self, generator: torch.Generator | None = None) -> None:
        """(Re)create every ``norm_temp`` / ``attn_temp`` with a fresh init drawn from ``generator``.

        The default generator is seeded with ``TEMPORAL_INIT_SEED``, so one base always inflates to
        the same model; the global RNG is neither read nor reseeded.
        """
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(TEMPORAL_INIT_SEED)
        for module in self.modules():
            if isinstance(module, BasicTransformerBlock) and hasattr(module, "attn_temp"):
                module.norm_temp, module.attn_temp = make_temporal_layers(module, generator)
        self.set_attention_kernel(self._attention_kernel)  # processors for the new attn_temp modules

    @classmethod
    def from_unet2d(cls, unet: UNet2DConditionModel) -> TuneAVideoUNet:
        """Inflate a loaded 2D UNet: same config and weights; temporal layers freshly initialised."""
        from accelerate import init_empty_weights

        with init_empty_weights():  # the 2D weights are assigned below; skip their random init
            model = cls.from_config(unet.config)
        missing, unexpected = model.load_state_dict(unet.state_dict(), strict=False, assign=True)
        assert not unexpected, unexpected
        assert all("_temp." in k for k in missing), missing
        model.init_temporal_layers()
        return model.to(device=unet.device, dtype=unet.dtype)

    @classmethod
    def from_pretrained_2d(
        cls,
        pretrained_model_path: str | os.PathLike,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        local_files_only: bool | None = None,
        revision: str | None = None,
        variant: str | None = None,
    ) -> TuneAVideoUNet:
        """Inflate a 2D SD-1.x UNet folder, or load an official Tune-A-Video checkpoint (the official name).

        ``pretrained_model_path`` is a local pipeline folder, a UNet folder, or a hub id. For a 2D base
        the temporal layers are freshly initialised; for an official checkpoint (``UNet3DConditionModel``
        config, ``*3D`` blocks) every key must match, with none missing or left over.
        """
        folder = resolve_folder(pretrained_model_path, subfolder, local_files_only, revision, variant)
        config, official = unet_config_to_2d(json.loads((folder / "config.json").read_text()))
        state = load_state_dict_file(weights_file(folder, variant))
        # Skip the random init of ~860M params: build on the meta device, then assign the loaded tensors.
        from accelerate import init_empty_weights

        with init_empty_weights():
            unet = cls.from_config(config)
        has_temporal = check_unet_keys(folder, set(unet.state_dict()), state, official)
        dtype = torch_dtype or torch.float32  # as diffusers: fp32 unless asked otherwise
        unet.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
        if not has_temporal:  # a 2D base: fresh temporal layers on the loaded weights' device and dtype
            unet.init_temporal_layers()
        still_meta = [n for n, p in unet.named_parameters() if p.is_meta]
        if still_meta:
            raise ModelLoadError(f"{folder}: parameters left uninitialised: {still_meta[:3]}")
        unet.eval()
        if device is not None:
            unet.to(device)
        logger.info("loaded %s UNet from %s", "Tune-A-Video" if has_temporal else "2D SD (inflated)", folder)
        return unet

    # ------------------------------------------------------------------ attention kernels
    def set_attention_kernel(self, kernel: str = "sdpa") -> None:
        """Run every attention layer with PyTorch SDPA (default) or xformers (CUDA only).

        Our own name: diffusers' :meth:`set_attention_backend` picks its dispatch backends instead.
        """
        if kernel not in ATTENTION_KERNELS:
            raise ValueError(f"attention kernel must be one of {ATTENTION_KERNELS}, got {kernel!r}")
        if kernel == "xformers":
            try:
                import xformers.ops  # noqa: F401
            except ImportError as exc:
                raise ImportError("xformers is not installed: pip install xformers (GPU only)") from exc
            if not torch.cuda.is_available():
                raise ValueError("xformers attention needs a CUDA GPU; use the default 'sdpa' kernel on CPU")
        processors = {}
        for name in self.attn_processors:
            if name.endswith("attn1.processor"):
                processors[name] = SparseCausalAttnProcessor(self.frame_context, kernel)
            else:
                processors[name] = XFormersAttnProcessor() if kernel == "xformers" else AttnProcessor2_0()
        super().set_attn_processor(processors)
        self._attention_kernel = kernel

    @property
    def attention_kernel(self) -> str:
        """``"sdpa"`` or ``"xformers"``: what :meth:`set_attention_kernel` last chose."""
        return self._attention_kernel

    @property
    def attention_backend(self) -> str:
        """Deprecated name of :attr:`attention_kernel`."""
        return self._attention_kernel

    def set_attention_backend(self, backend: str) -> None:
        """Deprecated alias for ``"sdpa"``/``"xformers"``; any other name goes to diffusers' dispatch."""
        if backend in ATTENTION_KERNELS:
            warnings.warn(
                "TuneAVideoUNet.set_attention_backend('sdpa'|'xformers') is deprecated; use set_attention_kernel",
                DeprecationWarning,
                stacklevel=2,
            )
            self.set_attention_kernel(backend)
            return
        super().set_attention_backend(backend)

    def set_attn_processor(self, processor: Any) -> None:
        """Refuse a processor swap that would silently drop sparse-causal attention."""
        procs = processor if isinstance(processor, dict) else dict.fromkeys(self.attn_processors, processor)
        for name, proc in procs.items():
            if name.endswith("attn1.processor") and not isinstance(proc, SparseCausalAttnProcessor):
                raise ValueError(
                    f"{name} must stay a SparseCausalAttnProcessor; use set_attention_kernel('sdpa'|'xformers')"
                )
        super().set_attn_processor(processor)

    def set_default_attn_processor(self) -> None:
        self.set_attention_kernel("sdpa")

    def set_use_memory_efficient_attention_xformers(self, valid: bool, attention_op: Any = None) -> None:
        # Called by DiffusionPipeline.enable_xformers_memory_efficient_attention(); route it to our kernels.
        self.set_attention_kernel("xformers" if valid else "sdpa")

    # ------------------------------------------------------------------ forward
    # Over 60 lines: mostly the documented diffusers signature and its per-frame argument folding.
    def forward(  # type: ignore[override]
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> UNet2DConditionOutput | tuple:
        """Denoise a batch of clips.

        Args:
            sample: noisy latents ``(b, c, f, h, w)``.
            timestep: scalar or ``(b,)``; one timestep per video, shared by its frames.
            encoder_hidden_states: text embeddings ``(b, n, d)`` (repeated per frame) or per-frame
                embeddings ``(b*f, n, d)``.
            down_block_additional_residuals / mid_block_additional_residual /
            down_intrablock_additional_residuals: ControlNet / T2I-Adapter residuals, either
                ``(b, c, f, h, w)`` or already folded ``(b*f, c, h, w)``.
        Returns:
            ``UNet2DConditionOutput`` whose ``sample`` is ``(b, c, f, h, w)``.
        """
        if sample.dim() != 5:
            raise ValueError(f"TuneAVideoUNet expects latents (b, c, f, h, w), got shape {tuple(sample.shape)}")
        b, _, f = sample.shape[:3]
        self.frame_context.num_frames = f

        if not torch.is_tensor(timestep):
            dtype = torch.float64 if isinstance(timestep, float) else torch.int64
            timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
        timestep = timestep.to(sample.device).reshape(-1).expand(b).repeat_interleave(f)  # (b f,)

        if encoder_hidden_states.shape[0] == b:
            encoder_hidden_states = _repeat_frames(encoder_hidden_states, f)
        elif encoder_hidden_states.shape[0] != b * f:
            raise ValueError(
                f"encoder_hidden_states batch {encoder_hidden_states.shape[0]} must be b={b} or b*f={b * f}"
            )
        if encoder_attention_mask is not None and encoder_attention_mask.shape[0] == b:
            encoder_attention_mask = _repeat_frames(encoder_attention_mask, f)

        plan = getattr(self, "speed_plan", None)  # set by tuneavideo.speed.apply_speed_mode
        with plan.attention_context() if plan is not None else contextlib.nullcontext():
            out = self._forward_2d(
                sample,
                timestep,
                encoder_hidden_states,
                class_labels,
                attention_mask,
                cross_attention_kwargs,
                down_block_additional_residuals,
                mid_block_additional_residual,
                down_intrablock_additional_residuals,
                encoder_attention_mask,
                **kwargs,
            )
        out = _unfold(out, f)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)

    def _forward_2d(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cross_attention_kwargs: dict[str, Any] | None,
        down_block_additional_residuals: Any,
        mid_block_additional_residual: Any,
        down_intrablock_additional_residuals: Any,
        encoder_attention_mask: torch.Tensor | None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The stock 2D UNet on frames folded into the batch: returns ``(b f, c, h, w)``."""
        f = self.frame_context.num_frames
        return super().forward(
            _fold(sample),
            timestep,
            encoder_hidden_states,
            class_labels=_repeat_frames(class_labels, f),
            attention_mask=_repeat_frames(attention_mask, f),
            cross_attention_kwargs=cross_attention_kwargs,
            down_block_additional_residuals=_fold_residuals(down_block_additional_residuals, f),
            mid_block_additional_residual=_fold_residuals(mid_block_additional_residual, f),
            down_intrablock_additional_residuals=_fold_residuals(down_intrablock_additional_residuals, f),
            encoder_attention_mask=encoder_attention_mask,
            return_dict=False,
            **kwargs,
        )[0]


def temporal_parameter_names(unet: nn.Module) -> list[str]:
    """Names of the parameters inflation added (``attn_temp`` / ``norm_temp``)."""
    return [n for n, _ in unet.named_parameters() if "_temp." in n]
