"""Loading SD-1.x bases and official Tune-A-Video checkpoints, and exporting to the official layout.

The public facade over :meth:`TuneAVideoUNet.from_pretrained_2d` and
:meth:`TuneAVideoPipeline.from_pretrained`. Imports run one way: ``loading -> pipeline -> unet ->
weights -> hub``; nothing below imports this module.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .hub import hub_reachable, is_hub_id
from .pipeline import TuneAVideoPipeline
from .unet import TuneAVideoUNet
from .weights import BLOCK_2D_TO_3D, WEIGHT_NAMES, local_only

logger = logging.getLogger(__name__)

__all__ = ["export_official_pipeline", "export_official_unet", "hub_reachable", "load_pipeline", "load_unet"]

# Config keys the official UNet3DConditionModel accepts (its __init__ signature).
OFFICIAL_CONFIG_KEYS = (
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
    "cross_attention_dim", "attention_head_dim", "dual_cross_attention", "use_linear_projection",
    "class_embed_type", "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
)  # fmt: skip


def load_unet(
    path_or_id: str | os.PathLike,
    subfolder: str | None = "unet",
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> TuneAVideoUNet:
    """Load an inflated UNet from a 2D SD-1.x UNet or an official Tune-A-Video checkpoint.

    See :meth:`TuneAVideoUNet.from_pretrained_2d`; ``local_files_only=True`` never touches the network
    and a hub id missing from the cache fails at once with a :class:`~tuneavideo.errors.ModelLoadError`.
    """
    return TuneAVideoUNet.from_pretrained_2d(
        path_or_id, subfolder, torch_dtype, device, local_files_only, revision, variant
    )


def load_pipeline(
    pretrained: str | os.PathLike,
    unet: str | os.PathLike | torch.nn.Module | None = None,
    torch_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    local_files_only: bool | None = None,
    revision: str | None = None,
    variant: str | None = None,
    scheduler: str = "ddim",
    original_config: str | None = None,
) -> TuneAVideoPipeline:
    """Build a :class:`~tuneavideo.TuneAVideoPipeline` from an SD-1.x base (see its ``from_pretrained``).

    With ``local_files_only=None`` (and no ``HF_HUB_OFFLINE``) a hub id is first probed for two seconds,
    so an unreachable hub falls back to the local cache instead of minutes of download retries.
    """
    local = local_only(local_files_only)
    if not local and not Path(pretrained).exists() and is_hub_id(str(pretrained)) and not hub_reachable():
        logger.warning("the Hugging Face hub is unreachable: using only locally cached files for %s", pretrained)
        local = True
    return TuneAVideoPipeline.from_pretrained(
        pretrained, unet, torch_dtype, device, local, revision, variant, scheduler, original_config
    )


def export_official_unet(unet: TuneAVideoUNet, folder: str | os.PathLike, safe_serialization: bool = False) -> Path:
    """Write ``unet`` as an official Tune-A-Video ``UNet3DConditionModel`` folder (config + weights).

    The official loader reads ``diffusion_pytorch_model.bin``, so that is the default format.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {k: v for k, v in dict(unet.config).items() if k in OFFICIAL_CONFIG_KEYS}
    cfg["down_block_types"] = [BLOCK_2D_TO_3D[b] for b in cfg["down_block_types"]]
    cfg["up_block_types"] = [BLOCK_2D_TO_3D[b] for b in cfg["up_block_types"]]
    cfg["mid_block_type"] = BLOCK_2D_TO_3D.get(cfg.get("mid_block_type") or "UNetMidBlock2DCrossAttn")
    for key in ("down_block_types", "up_block_types", "block_out_channels"):
        cfg[key] = list(cfg[key])
    if isinstance(cfg.get("attention_head_dim"), tuple):
        cfg["attention_head_dim"] = list(cfg["attention_head_dim"])
    config = {"_class_name": "UNet3DConditionModel", "_diffusers_version": "0.11.1", **cfg}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}
    if safe_serialization:
        from safetensors.torch import save_file

        save_file(state, str(folder / WEIGHT_NAMES[0]))
    else:
        torch.save(state, str(folder / WEIGHT_NAMES[1]))
    return folder


def export_official_pipeline(
    pipe: TuneAVideoPipeline, folder: str | os.PathLike, safe_serialization: bool = False
) -> Path:
    """Write a full pipeline folder in the official Tune-A-Video layout (what its training script saves).

    ``unet/`` holds the inflated UNet as ``UNet3DConditionModel`` (3D block names, ``attn_temp`` /
    ``norm_temp`` keys); vae, text_encoder, tokenizer and scheduler are the base's, as diffusers saves
    them. The official ``UNet3DConditionModel.from_pretrained(folder, subfolder="unet")`` reads it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    export_official_unet(pipe.unet, folder / "unet", safe_serialization=safe_serialization)
    pipe.vae.save_pretrained(folder / "vae", safe_serialization=safe_serialization)
    pipe.text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=safe_serialization)
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "TuneAVideoPipeline",
        "_diffusers_version": "0.11.1",
        "scheduler": ["diffusers", type(pipe.scheduler).__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["tuneavideo.models.unet", "UNet3DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
