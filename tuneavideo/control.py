"""ControlNet and T2I-Adapter residuals for video: per-frame pose / depth / canny hints.

Both kinds of control model are image models. A clip's frames are folded into the batch
(``(b*f, c, h, w)``, frame-major: row ``b_i * f + f_i``, the same order
:class:`~tuneavideo.unet.TuneAVideoUNet` folds its latents in), so frame ``i`` of every video is
conditioned on hint ``i`` and on nothing else.

* **ControlNet** runs at every denoising step on the folded noisy latents, the per-frame text
  embeddings and the timestep, in chunks of ``chunk_size`` frames, and returns
  ``down_block_additional_residuals`` / ``mid_block_additional_residual``.
* **T2I-Adapter** does not depend on the latents nor on the timestep, so its features are computed
  once and reused at every step as ``down_intrablock_additional_residuals``, exactly as diffusers'
  ``StableDiffusionAdapterPipeline`` does (input in [0, 1], features times the conditioning scale,
  repeated for every video and for both classifier-free-guidance halves).

Several models may be combined: ControlNet residuals are summed, adapter features are summed with
their scales as weights. Each model applies only inside its ``[start, end]`` window of the
denoising steps (the rule of diffusers' ``control_guidance_start`` / ``control_guidance_end``).

Usage::

    control = build_video_control([ControlSpec("controlnet", DEFAULT_CONTROL_MODELS["controlnet"]["pose"], "pose")],
                                  {"pose": pose_hints}, height=512, width=512, device="cuda",
                                  dtype=torch.float16, unet=pipe.unet, guidance_scale=12.5)
    video = pipe(prompt, latents=noise, guidance_scale=12.5, unet_kwargs=control.unet_kwargs)

    # DDIM inversion conditioned on the same hints
    control.prepare_inversion(pipe, prompt="", num_inference_steps=50)
    noise = pipe.invert(latents, num_inference_steps=50, prompt="", unet_kwargs=control.inversion_kwargs)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DEFAULT_BASE_MODEL
from .errors import InputError, MissingDependencyError, ModelLoadError
from .hints import HINT_KINDS, HintConfig
from .hub import is_hub_id
from .profiles import (
    CONTROL_LABELS,
    CONTROL_TYPES,
    SD_CONTROL_MODELS,
    detect_kind,
    resolve_profile,
)
from .weights import local_only

logger = logging.getLogger(__name__)

CONTROL_KINDS = CONTROL_TYPES
DEFAULT_CONTROL_MODELS = SD_CONTROL_MODELS  # the standard SD-1.x control models for each hint kind

# config.json ``_class_name`` values each kind may hold.
_CLASS_NAMES = {"controlnet": ("ControlNetModel",), "t2i_adapter": ("T2IAdapter",)}
_LABELS = CONTROL_LABELS
DIFFUSERS_INSTALL = '"diffusers>=0.25"'


# --------------------------------------------------------------------------------------------
# specs and loading
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControlSpec:
    """One control model and how it applies.

    Attributes:
        kind: ``"controlnet"`` or ``"t2i_adapter"``.
        model: hub id or local diffusers folder (see :data:`DEFAULT_CONTROL_MODELS`).
        hint: the hint kind it reads (one of :data:`~tuneavideo.hints.HINT_KINDS`).
        scale: conditioning scale (ControlNet ``conditioning_scale``; adapter feature weight).
        start, end: fractions of the denoising steps during which it applies; step ``i`` of ``n``
            is used when ``i / n >= start`` and ``(i + 1) / n <= end`` (diffusers' rule).
        guess_mode: ControlNet only: run it on the conditional half of a CFG batch only (the
            unconditional half gets no residuals) with diffusers' 0.1 -> 1.0 per-level scales.
    """

    kind: str
    model: str
    hint: str
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    guess_mode: bool = False

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise InputError(f"control kind must be one of {CONTROL_KINDS}, got {self.kind!r}")
        if self.hint not in HINT_KINDS:
            raise InputError(f"control hint must be one of {HINT_KINDS}, got {self.hint!r}")
        if not isinstance(self.model, (str, Path)) or not str(self.model):
            raise InputError(f"control model must be a hub id or a folder, got {self.model!r}")
        if not math.isfinite(float(self.scale)):
            raise InputError(f"control scale must be a finite number, got {self.scale!r}")
        if not 0.0 <= float(self.start) <= float(self.end) <= 1.0:
            raise InputError(f"control window needs 0 <= start <= end <= 1, got start={self.start}, end={self.end}")
        if self.guess_mode and self.kind != "controlnet":
            raise InputError("guess_mode only applies to ControlNets, not to T2I-Adapters")

    @classmethod
    def default(cls, kind: str, hint: str, **kwargs: Any) -> ControlSpec:
        """The spec for the standard SD-1.x model of ``kind`` for ``hint``."""
        if kind not in CONTROL_KINDS:
            raise InputError(f"control kind must be one of {CONTROL_KINDS}, got {kind!r}")
        if hint not in DEFAULT_CONTROL_MODELS[kind]:
            raise InputError(f"no default {_LABELS[kind]} for hint {hint!r}; pick one of {HINT_KINDS}")
        return cls(kind, DEFAULT_CONTROL_MODELS[kind][hint], hint, **kwargs)

    @property
    def label(self) -> str:
        return f"{_LABELS[self.kind]} '{self.model}' ({self.hint})"

    def active(self, step_index: int, num_steps: int) -> bool:
        """Whether this model applies at denoising step ``step_index`` of ``num_steps``."""
        if num_steps <= 0:
            return True
        return not (step_index / num_steps < self.start or (step_index + 1) / num_steps > self.end)

    @property
    def full_window(self) -> bool:
        return self.start <= 0.0 and self.end >= 1.0


def _control_classes() -> tuple[type, type]:
    """``(ControlNetModel, T2IAdapter)`` from diffusers, or a clear error naming what to install."""
    try:
        from diffusers import ControlNetModel, T2IAdapter
    except ImportError as exc:
        raise MissingDependencyError("ControlNet / T2I-Adapter control", DIFFUSERS_INSTALL) from exc
    return ControlNetModel, T2IAdapter


def _model_class(kind: str) -> type:
    controlnet_cls, adapter_cls = _control_classes()
    return controlnet_cls if kind == "controlnet" else adapter_cls


def load_control_model(
    spec: ControlSpec,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> torch.nn.Module:
    """Load ``spec.model`` as a diffusers ``ControlNetModel`` or ``T2IAdapter`` (frozen, eval mode).

    A local folder, or any model while ``HF_HUB_OFFLINE=1``, loads with ``local_files_only``; a
    missing folder, an uncached hub id offline, or a folder holding the other kind of model raises
    :class:`~tuneavideo.errors.ModelLoadError`.
    """
    if not isinstance(spec, ControlSpec):
        raise InputError(f"load_control_model expects a ControlSpec, got {type(spec).__name__}")
    cls = _model_class(spec.kind)
    name = str(spec.model)
    path = Path(name).expanduser()
    is_folder = path.exists()
    if is_folder:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{spec.label}: {path} has no config.json; expected a diffusers {_LABELS[spec.kind]} folder "
                "(config.json + diffusion_pytorch_model.safetensors)"
            )
        name = str(path)
    elif not is_hub_id(name):
        raise ModelLoadError(f"{spec.label}: not found (not a local folder, nor a hub id like 'org/name')")
    local = True if is_folder else local_only(local_files_only)
    offline_hint = (
        " (offline mode: download it once with network access, or pass a local folder)"
        if local and not is_folder
        else ""
    )
    kwargs: dict[str, Any] = {"local_files_only": local}
    if revision:
        kwargs["revision"] = revision
    try:
        config = cls.load_config(name, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not find {spec.label}{offline_hint}: {exc}") from exc
    class_name = config.get("_class_name") if isinstance(config, Mapping) else None
    if class_name and class_name not in _CLASS_NAMES[spec.kind]:
        raise ModelLoadError(
            f"{spec.label}: that model is a {class_name}, not a {_LABELS[spec.kind]}; check the spec's kind"
        )
    if variant:
        kwargs["variant"] = variant
    try:
        model = cls.from_pretrained(name, torch_dtype=torch_dtype, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load {spec.label}{offline_hint}: {exc}") from exc
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    logger.info("loaded %s", spec.label)
    return model


# --------------------------------------------------------------------------------------------
# hints -> tensors
# --------------------------------------------------------------------------------------------
def _check_hint_video(hints: Any, what: str) -> np.ndarray:
    if not isinstance(hints, np.ndarray):
        raise InputError(f"{what}: hints must be a numpy uint8 array (f, h, w, 3), got {type(hints).__name__}")
    if hints.dtype != np.uint8 or hints.ndim != 4 or hints.shape[-1] != 3 or hints.shape[0] < 1:
        raise InputError(f"{what}: hints must be uint8 (f, h, w, 3), got {hints.dtype} {tuple(hints.shape)}")
    return hints


def resize_hints(hints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 hint video ``(f, h, w, 3)`` to ``(f, height, width, 3)`` (area when shrinking)."""
    hints = _check_hint_video(hints, "resize_hints")
    if hints.shape[1:3] == (height, width):
        return hints
    if height <= 0 or width <= 0:
        raise InputError(f"hint size must be positive, got {height}x{width}")
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError("resizing control hints", "opencv-python-headless") from exc
    shrink = height * width < hints.shape[1] * hints.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(frame, (width, height), interpolation=interp) for frame in hints])


def hints_to_tensor(hints: np.ndarray, channels: int = 3) -> torch.Tensor:
    """uint8 ``(f, h, w, 3)`` -> float32 ``(f, channels, h, w)`` in [0, 1].

    This is what diffusers feeds ControlNets (``controlnet_cond``) and T2I-Adapters. One-channel
    models (e.g. the canny / sketch T2I-Adapters) get the luma of the RGB hint, as PIL's ``"L"``.
    """
    hints = _check_hint_video(hints, "hints_to_tensor")
    x = torch.from_numpy(np.ascontiguousarray(hints)).permute(0, 3, 1, 2).float() / 255.0
    if channels == 3:
        return x
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise InputError(f"control models with {channels} input channels are not supported (expected 1 or 3)")


# --------------------------------------------------------------------------------------------
# the per-frame control
# --------------------------------------------------------------------------------------------
@dataclass
class ControlEntry:
    """One loaded control model with its spec and its uint8 ``(f, h, w, 3)`` hint video."""

    model: torch.nn.Module
    spec: ControlSpec
    hints: np.ndarray
    _cond: torch.Tensor | None = field(default=None, repr=False)  # (f, C, H, W) in [0, 1]
    _features: list[torch.Tensor] | None = field(default=None, repr=False)  # adapters, scaled, (f, c, h, w)

    @property
    def is_controlnet(self) -> bool:
        return self.spec.kind == "controlnet"

    @property
    def input_channels(self) -> int:
        cfg = self.model.config
        return int(cfg.conditioning_channels if self.is_controlnet else cfg.in_channels)

    @property
    def downscale_factor(self) -> int:
        """Hint pixels per latent pixel this model expects."""
        cfg = self.model.config
        if self.is_controlnet:
            return 2 ** (len(cfg.conditioning_embedding_out_channels) - 1)
        return int(cfg.downscale_factor)

    @property
    def guess_mode(self) -> bool:
        return self.is_controlnet and (self.spec.guess_mode or bool(self.model.config.get("global_pool_conditions")))

    def cond(self) -> torch.Tensor:
        """The hint video as the model's input: ``(f, C, H, W)`` in [0, 1] on its device and dtype."""
        if self._cond is None:
            self._cond = hints_to_tensor(self.hints, self.input_channels).to(self.model.device, self.model.dtype)
        return self._cond


class VideoControl:
    """Per-frame ControlNet / T2I-Adapter conditioning for :class:`~tuneavideo.TuneAVideoPipeline`.

    Args:
        entries: :class:`ControlEntry` objects or ``(model, spec, hints)`` tuples; every hint video
            is uint8 ``(f, h, w, 3)`` at the generation size, with the same ``f`` for all.
        chunk_size: frames per ControlNet / adapter call (bounds activation memory).
        do_classifier_free_guidance: whether the sampling batches are ``[uncond; cond]``. Only
            guess mode needs to know; ``None`` infers it from the batch (two equal latent halves
            with different text halves), so pass it (or ``guidance_scale`` to
            :func:`build_video_control`) when using guess mode.

    ``unet_kwargs`` plugs into ``pipe(..., unet_kwargs=control.unet_kwargs)`` and
    ``inversion_kwargs`` into ``pipe.invert(..., unet_kwargs=control.inversion_kwargs)`` after
    :meth:`prepare_inversion` / :meth:`set_inversion_prompt`. Residuals are returned folded,
    ``(B*f, c, h, w)`` with row ``B_i * f + f_i``, which the UNet takes as is.
    """

    def __init__(
        self,
        entries: Sequence[ControlEntry | tuple[torch.nn.Module, ControlSpec, np.ndarray]],
        chunk_size: int = 8,
        do_classifier_free_guidance: bool | None = None,
    ) -> None:
        if not entries:
            raise InputError("VideoControl needs at least one (model, spec, hints) entry")
        if int(chunk_size) < 1:
            raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
        controlnet_cls, adapter_cls = _control_classes()
        self.entries: list[ControlEntry] = []
        for item in entries:
            entry = item if isinstance(item, ControlEntry) else ControlEntry(*item)
            if not isinstance(entry.spec, ControlSpec):
                raise InputError(f"expected a ControlSpec, got {type(entry.spec).__name__}")
            expected = controlnet_cls if entry.is_controlnet else adapter_cls
            if not isinstance(entry.model, expected):
                got = type(entry.model).__name__
                raise InputError(f"{entry.spec.label}: model is a {got}, not a {expected.__name__}")
            _check_hint_video(entry.hints, entry.spec.label)
            self.entries.append(entry)
        first = self.entries[0].hints.shape
        for entry in self.entries[1:]:
            if entry.hints.shape != first:
                raise InputError(
                    f"all hint videos must have the same frames and size: {self.entries[0].spec.label} has "
                    f"{tuple(first)}, {entry.spec.label} has {tuple(entry.hints.shape)}"
                )
        self.chunk_size = int(chunk_size)
        self.do_classifier_free_guidance = do_classifier_free_guidance
        self._inversion_embeds: torch.Tensor | None = None
        self._inversion_steps: int | None = None
        self._adapter_sums: dict[tuple[int, ...], list[torch.Tensor]] = {}

    # ------------------------------------------------------------------ properties
    @property
    def specs(self) -> list[ControlSpec]:
        return [e.spec for e in self.entries]

    @property
    def models(self) -> list[torch.nn.Module]:
        return [e.model for e in self.entries]

    @property
    def hints(self) -> list[np.ndarray]:
        """The uint8 ``(f, h, w, 3)`` hint video of each entry, in entry order."""
        return [e.hints for e in self.entries]

    @property
    def num_frames(self) -> int:
        return int(self.entries[0].hints.shape[0])

    @property
    def height(self) -> int:
        return int(self.entries[0].hints.shape[1])

    @property
    def width(self) -> int:
        return int(self.entries[0].hints.shape[2])

    def reset(self) -> None:
        """Forget cached hint tensors and adapter features (after changing models, device or dtype)."""
        for entry in self.entries:
            entry._cond = None
            entry._features = None
        self._adapter_sums.clear()

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> VideoControl:
        for entry in self.entries:
            entry.model.to(device=device, dtype=dtype)
        self.reset()
        return self

    def check_compatible(self, unet: torch.nn.Module) -> None:
        """Raise :class:`ModelLoadError` when a control model was made for a different UNet (e.g. SDXL)."""
        ucfg = unet.config
        channels = list(ucfg.block_out_channels)
        for entry in self.entries:
            cfg = entry.model.config
            if entry.is_controlnet:
                mismatch = [
                    f"{key} {cfg.get(key)} vs {ucfg.get(key)}"
                    for key in ("block_out_channels", "cross_attention_dim", "in_channels")
                    if _norm(cfg.get(key)) != _norm(ucfg.get(key))
                ]
            else:
                mismatch = [] if list(cfg.channels) == channels else [f"channels {list(cfg.channels)} vs {channels}"]
            if mismatch:
                raise ModelLoadError(
                    f"{entry.spec.label} does not fit this UNet ({'; '.join(mismatch)}): use an SD-1.x control model"
                )

    # ------------------------------------------------------------------ hooks for the pipeline
    @torch.no_grad()
    def unet_kwargs(
        self,
        latent_model_input: torch.Tensor,
        t: torch.Tensor | int | float,
        prompt_embeds: torch.Tensor,
        step_index: int,
        num_steps: int,
    ) -> dict[str, Any]:
        """Extra UNet arguments for one sampling step (the pipeline's ``unet_kwargs`` hook).

        ``latent_model_input`` is ``(B, 4, f, h, w)``, with CFG ``B = 2b`` ordered ``[uncond; cond]``;
        ``prompt_embeds`` is ``(B, n, d)``. Returns ``{}`` when no model applies at this step.
        """
        return self._kwargs(latent_model_input, t, prompt_embeds, step_index, num_steps, cfg=None)

    @torch.no_grad()
    def inversion_kwargs(self, latents: torch.Tensor, t: torch.Tensor | int | float, step_index: int) -> dict[str, Any]:
        """Extra UNet arguments for one DDIM-inversion step (``pipe.invert``'s ``unet_kwargs`` hook).

        Uses the inversion prompt embedding given to :meth:`set_inversion_prompt`. Inversion walks
        the timesteps backwards, so its step ``i`` of ``n`` is denoising step ``n - 1 - i``: each
        model's ``[start, end]`` window covers the same noise levels in inversion and sampling.
        """
        if self._inversion_embeds is None:
            raise InputError(
                "call control.prepare_inversion(pipe, prompt, num_inference_steps) (or set_inversion_prompt) "
                "before inverting with control"
            )
        n = self._inversion_steps
        if n is None:
            if not all(e.spec.full_window for e in self.entries):
                raise InputError("control windows (start/end) need num_inference_steps in set_inversion_prompt")
            n, denoise_index = 0, 0
        else:
            if not 0 <= step_index < n:
                raise InputError(f"inversion step {step_index} is outside the {n} steps given to set_inversion_prompt")
            denoise_index = n - 1 - step_index
        embeds = self._inversion_embeds.to(latents.device)
        b = latents.shape[0]
        if embeds.shape[0] == 1 and b > 1:
            embeds = embeds.expand(b, -1, -1)
        return self._kwargs(latents, t, embeds, denoise_index, n, cfg=False)

    def set_inversion_prompt(self, prompt_embeds: torch.Tensor, num_inference_steps: int | None = None) -> None:
        """The text embedding ``(1 or b, n, d)`` inversion is conditioned on, and its step count."""
        if not torch.is_tensor(prompt_embeds) or prompt_embeds.dim() != 3:
            raise InputError("inversion prompt_embeds must be a (1 or b, n, d) tensor")
        if num_inference_steps is not None and int(num_inference_steps) < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self._inversion_embeds = prompt_embeds.detach()
        self._inversion_steps = None if num_inference_steps is None else int(num_inference_steps)

    def prepare_inversion(self, pipe: Any, prompt: str = "", num_inference_steps: int = 50) -> Any:
        """Embed ``prompt`` as ``pipe.invert`` does and return :meth:`inversion_kwargs` for its hook."""
        self.set_inversion_prompt(pipe.encode_prompt(prompt, pipe._execution_device), num_inference_steps)
        return self.inversion_kwargs

    # ------------------------------------------------------------------ internals
    def _kwargs(
        self,
        x: torch.Tensor,
        t: torch.Tensor | int | float,
        embeds: torch.Tensor,
        step_index: int,
        num_steps: int,
        cfg: bool | None,
    ) -> dict[str, Any]:
        if x.dim() != 5:
            raise InputError(f"control expects latents (B, c, f, h, w), got {tuple(x.shape)}")
        batch, _, f, h, w = x.shape
        if f != self.num_frames:
            raise InputError(f"the hint video has {self.num_frames} frames but the latents have {f}")
        if embeds.shape[0] not in (batch, batch * f):
            raise InputError(f"prompt embeddings batch {embeds.shape[0]} must be {batch} (or {batch * f})")
        active = [i for i, e in enumerate(self.entries) if e.spec.active(step_index, num_steps)]
        for i in active:
            entry = self.entries[i]
            factor = entry.downscale_factor
            if (self.height, self.width) != (h * factor, w * factor):
                raise InputError(
                    f"{entry.spec.label}: hints are {self.height}x{self.width} but latents {h}x{w} need "
                    f"{h * factor}x{w * factor} hints; build the control at the generation size"
                )
        out: dict[str, Any] = {}
        controlnets = [self.entries[i] for i in active if self.entries[i].is_controlnet]
        if controlnets:
            if cfg is None and any(e.guess_mode for e in controlnets):
                cfg = self._infer_cfg(x, embeds)
            down, mid = self._controlnet_residuals(controlnets, x, t, embeds, bool(cfg))
            out["down_block_additional_residuals"] = tuple(down)
            out["mid_block_additional_residual"] = mid
        adapters = tuple(i for i in active if not self.entries[i].is_controlnet)
        if adapters:
            # A fresh list of fresh tensors each step: the UNet pops from it.
            features = self._adapter_features(adapters)
            out["down_intrablock_additional_residuals"] = [
                feat.to(x.device, x.dtype).repeat(batch, 1, 1, 1) for feat in features
            ]
        return out

    def _infer_cfg(self, x: torch.Tensor, embeds: torch.Tensor) -> bool:
        if self.do_classifier_free_guidance is not None:
            return self.do_classifier_free_guidance
        batch = x.shape[0]
        if batch % 2 or embeds.shape[0] != batch:
            return False
        half = batch // 2
        return bool(torch.equal(x[:half], x[half:]) and not torch.equal(embeds[:half], embeds[half:]))

    def _controlnet_residuals(
        self,
        entries: list[ControlEntry],
        x: torch.Tensor,
        t: torch.Tensor | int | float,
        embeds: torch.Tensor,
        cfg: bool,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Summed ControlNet residuals for the folded batch ``(B*f, c, h', w')``."""
        batch, _, f = x.shape[:3]
        rows = batch * f
        folded = x.permute(0, 2, 1, 3, 4).reshape(rows, *x.shape[1:2], *x.shape[3:])  # row = B_i * f + f_i
        per_row_text = embeds.shape[0] == rows
        timesteps = t.reshape(-1) if torch.is_tensor(t) else None
        per_video_t = timesteps is not None and timesteps.numel() > 1
        if per_video_t and timesteps.numel() != batch:
            raise InputError(f"timestep has {timesteps.numel()} values for {batch} videos")
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for entry in entries:
            model, cond = entry.model, entry.cond()
            guess = entry.guess_mode
            # guess mode + CFG: the ControlNet sees the conditional half only; the uncond half stays 0
            first = rows // 2 if (guess and cfg) else 0
            for start in range(first, rows, self.chunk_size):
                stop = min(start + self.chunk_size, rows)
                index = torch.arange(start, stop, device=embeds.device)
                video = index // f
                text = embeds[index] if per_row_text else embeds[video]
                step_t = timesteps[video.to(timesteps.device)] if per_video_t else t
                res_down, res_mid = model(
                    folded[start:stop].to(model.device, model.dtype),
                    step_t,
                    encoder_hidden_states=text.to(model.device, model.dtype),
                    controlnet_cond=cond[(index % f).to(cond.device)],
                    conditioning_scale=float(entry.spec.scale),
                    guess_mode=guess,
                    return_dict=False,
                )
                if down is None:
                    down = [x.new_zeros((rows, *r.shape[1:])) for r in res_down]
                    mid = x.new_zeros((rows, *res_mid.shape[1:]))
                if len(res_down) != len(down):
                    raise InputError("the ControlNets give different numbers of residuals; they must share a base")
                for buf, r in zip(down, res_down):
                    buf[start:stop] += r.to(buf.device, buf.dtype)
                mid[start:stop] += res_mid.to(mid.device, mid.dtype)
        assert down is not None and mid is not None
        return down, mid

    def _adapter_features(self, active: tuple[int, ...]) -> list[torch.Tensor]:
        """Sum over active adapters of ``scale * adapter(hints)``, per frame ``(f, c, h', w')``; cached."""
        if active in self._adapter_sums:
            return self._adapter_sums[active]
        total: list[torch.Tensor] | None = None
        for i in active:
            feats = self._entry_features(self.entries[i])
            if total is None:
                total = feats  # never modified in place: the sums below make new tensors
                continue
            if len(feats) != len(total) or any(a.shape != b.shape for a, b in zip(feats, total)):
                raise InputError("the T2I-Adapters give features of different shapes; they must share a base")
            total = [acc + feat.to(acc.device, acc.dtype) for acc, feat in zip(total, feats)]
        assert total is not None
        self._adapter_sums[active] = total
        return total

    @torch.no_grad()
    def _entry_features(self, entry: ControlEntry) -> list[torch.Tensor]:
        """One adapter's features for every frame, times its scale: computed once, then cached."""
        if entry._features is None:
            cond = entry.cond()
            chunks = [list(entry.model(part)) for part in cond.split(self.chunk_size)]
            scale = float(entry.spec.scale)
            entry._features = [torch.cat([c[k] for c in chunks]) * scale for k in range(len(chunks[0]))]
        return entry._features


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------
# Over 60 lines: a documented public signature (13 arguments) and their checks; the work is in VideoControl.
def build_video_control(
    specs: Sequence[ControlSpec],
    hints: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    models: Sequence[torch.nn.Module | None] | Mapping[str, torch.nn.Module] | None = None,
    height: int | None = None,
    width: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    unet: torch.nn.Module | None = None,
    chunk_size: int = 8,
    guidance_scale: float | None = None,
    local_files_only: bool | None = None,
) -> VideoControl:
    """Load the models of ``specs`` and pair them with their hint videos.

    Args:
        specs: one :class:`ControlSpec` per model.
        hints: uint8 ``(f, h, w, 3)`` hint videos, either keyed by hint kind (``{"pose": ...}``)
            or one per spec, in spec order.
        models: already loaded models, one per spec (``None`` entries are loaded) or keyed by
            ``spec.model``; the rest are loaded with :func:`load_control_model`.
        height, width: the generation size; hints are resized to it (default: their own size).
        device, dtype: where the models (and so the hint tensors) live.
        unet: when given, each model is checked to fit it.
        guidance_scale: the sampling guidance scale, so guess mode knows whether batches are CFG.
    """
    specs = list(specs)
    if not specs:
        raise InputError("build_video_control needs at least one ControlSpec")
    for spec in specs:
        if not isinstance(spec, ControlSpec):
            raise InputError(f"expected ControlSpec objects, got {type(spec).__name__}")
    if isinstance(hints, Mapping):
        missing = sorted({s.hint for s in specs} - set(hints))
        if missing:
            raise InputError(f"no hint video given for {missing} (have {sorted(hints)})")
        videos = [hints[s.hint] for s in specs]
    else:
        videos = list(hints)
        if len(videos) != len(specs):
            raise InputError(f"{len(videos)} hint videos for {len(specs)} control specs")
    videos = [_check_hint_video(v, s.label) for v, s in zip(videos, specs)]
    height = height or videos[0].shape[1]
    width = width or videos[0].shape[2]
    videos = [resize_hints(v, height, width) for v in videos]

    if models is None:
        given: list[torch.nn.Module | None] = [None] * len(specs)
    elif isinstance(models, Mapping):
        given = [models.get(str(s.model)) for s in specs]
    else:
        given = list(models)
        if len(given) != len(specs):
            raise InputError(f"{len(given)} models for {len(specs)} control specs")
    loaded: dict[str, torch.nn.Module] = {}
    entries = []
    for spec, video, model in zip(specs, videos, given):
        if model is None:
            key = f"{spec.kind}:{spec.model}"
            if key not in loaded:
                loaded[key] = load_control_model(
                    spec, torch_dtype=dtype, device=device, local_files_only=local_files_only
                )
            model = loaded[key]
        elif device is not None or dtype is not None:
            model.to(device=device, dtype=dtype)
        entries.append(ControlEntry(model, spec, video))
    cfg = None if guidance_scale is None else guidance_scale > 1.0
    control = VideoControl(entries, chunk_size=chunk_size, do_classifier_free_guidance=cfg)
    if unet is not None:
        control.check_compatible(unet)
    return control


# --------------------------------------------------------------------------------------------
# the embedded toy-world model's own control models
# --------------------------------------------------------------------------------------------
# Which control models fit which base is the base profile's business (tuneavideo.profiles); these three
# functions are the first release's names for it.
def toy_world_control_defaults(model_path: str | Path | None) -> dict[str, dict[str, str]] | None:
    """The control models trained for the embedded toy-world base when ``model_path`` is it, else None."""
    if not model_path or detect_kind(str(model_path)) != "toy-world":
        return None
    models = resolve_profile(str(model_path)).control_models
    return {kind: dict(by_hint) for kind, by_hint in models.items()} or None


def default_control_for(base_model: str | Path | None, hint: str, control_type: str | None = None) -> tuple[str, str]:
    """``(control_type, model)`` to use when the user names no control model (see ``BaseProfile.control_for``)."""
    return resolve_profile(str(base_model or DEFAULT_BASE_MODEL)).control_for(hint, control_type)


def default_depth_backend(base_model: str | Path | None) -> str:
    """How default depth hints are computed on this base (``toyworld`` silhouettes or ``transformers``)."""
    return resolve_profile(str(base_model or DEFAULT_BASE_MODEL)).depth_backend


def with_default_depth_backend(base_model: str | Path | None, config: HintConfig) -> HintConfig:
    """``config`` with the base's own depth backend when it asks for the default depth estimator."""
    return resolve_profile(str(base_model or DEFAULT_BASE_MODEL)).hint_config(config)
