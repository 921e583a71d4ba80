"""Tiny SD-1.x-shaped models built offline, for tests, CI and examples (no hub, no GPU).

Every component is a real diffusers/transformers class with a tiny config and random weights,
and the tokenizer is the real CLIP vocabulary, so a tiny pipeline folder loads through exactly
the same code path as Stable Diffusion 1.5.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch

TINY_UNET_CONFIG = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 4,  # = number of heads, as in SD's config
    "norm_num_groups": 8,
}
TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 32,
}
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


T = TypeVar("T")


def keeps_global_rng(build: Callable[..., T]) -> Callable[..., T]:
    """Model constructors draw their init from PyTorch's global RNG; these builders seed it for a
    reproducible model, inside ``fork_rng`` so the caller's global RNG state is left as it was."""

    @functools.wraps(build)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with torch.random.fork_rng(devices=[]):
            return build(*args, **kwargs)

    return wrapper


@keeps_global_rng
def tiny_unet2d(seed: int = 0, **overrides: object):
    """A random tiny ``UNet2DConditionModel`` (SD layout: cross-attn down/up blocks, GEGLU, 2 levels)."""
    from diffusers import UNet2DConditionModel

    torch.random.manual_seed(seed)
    return UNet2DConditionModel(**{**TINY_UNET_CONFIG, **overrides}).eval()


@keeps_global_rng
def tiny_unet(seed: int = 0, randomize_temporal: bool = True, **overrides: object):
    """A random tiny inflated UNet. With ``randomize_temporal`` the zero-initialised temporal output
    weights get random values too, so tests see temporal attention actually act."""
    from .unet import TuneAVideoUNet

    torch.random.manual_seed(seed)
    unet = TuneAVideoUNet(**{**TINY_UNET_CONFIG, **overrides}).eval()
    if randomize_temporal:
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "attn_temp.to_out" in name:
                    p.normal_(0, 0.2)
    return unet


@keeps_global_rng
def tiny_text_encoder(seed: int = 0, hidden_size: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.random.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return CLIPTextModel(config).eval()


@keeps_global_rng
def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.random.manual_seed(seed)
    return AutoencoderKL(**TINY_VAE_CONFIG).eval()


def write_tiny_sd(folder: str | Path, seed: int = 0, safetensors: bool = True) -> Path:
    """Write a tiny Stable-Diffusion-1.x pipeline folder (diffusers layout, 2D UNet) and return it.

    Its VAE downsamples by 2, so 64-px frames give 32x32 latents; the UNet has 2 levels.
    """
    from diffusers import DDIMScheduler

    from .tokenizer import write_clip_tokenizer_files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tiny_unet2d(seed).save_pretrained(folder / "unet", safe_serialization=safetensors)
    tiny_vae(seed + 1).save_pretrained(folder / "vae", safe_serialization=safetensors)
    tiny_text_encoder(seed + 2).save_pretrained(folder / "text_encoder", safe_serialization=safetensors)
    write_clip_tokenizer_files(folder / "tokenizer")
    DDIMScheduler(**SD_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_test_video(path: str | Path, num_frames: int = 8, size: tuple[int, int] = (64, 64), fps: int = 8) -> Path:
    """A small mp4 of a coloured square moving right on a gradient, for tests and examples."""
    import imageio.v3 as iio
    import numpy as np

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(num_frames):
        img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 96)], -1)
        x0 = 4 + i * max(1, (w - 24) // max(num_frames - 1, 1))
        img[h // 3 : h // 3 + 16, x0 : x0 + 16] = (230, 40, 40)
        frames.append(img.astype(np.uint8))
    path = Path(path)
    iio.imwrite(path, np.stack(frames), fps=fps, codec="libx264", macro_block_size=1)
    return path


@keeps_global_rng
def tiny_controlnet(seed: int = 0, randomize_zero_convs: bool = True, conditioning_channels: int = 3):
    """A random tiny ``ControlNetModel`` for the tiny UNet (hints at 2x the latent size, like the tiny VAE).

    A fresh ControlNet's zero convolutions make every residual 0; ``randomize_zero_convs`` gives them
    random weights so tests see the residuals act.
    """
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(
        tiny_unet2d(seed), conditioning_embedding_out_channels=(8, 16), conditioning_channels=conditioning_channels
    ).eval()
    if randomize_zero_convs:
        torch.random.manual_seed(seed + 100)
        zero_modules = [controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_mid_block]
        zero_modules += list(controlnet.controlnet_down_blocks)
        with torch.no_grad():
            for module in zero_modules:
                for p in module.parameters():
                    p.normal_(0, 0.1)
    return controlnet


@keeps_global_rng
def tiny_t2i_adapter(seed: int = 0, in_channels: int = 3):
    """A random tiny full ``T2IAdapter`` whose features fit the tiny UNet's two down blocks (2x downscale)."""
    from diffusers import T2IAdapter

    torch.random.manual_seed(seed)
    return T2IAdapter(
        in_channels=in_channels,
        channels=list(TINY_UNET_CONFIG["block_out_channels"]),
        num_res_blocks=1,
        downscale_factor=2,
        adapter_type="full_adapter",
    ).eval()


def write_tiny_controlnet(folder: str | Path, seed: int = 0) -> Path:
    """Save :func:`tiny_controlnet` as a diffusers folder and return it."""
    folder = Path(folder)
    tiny_controlnet(seed).save_pretrained(folder)
    return folder


def write_tiny_t2i_adapter(folder: str | Path, seed: int = 0, in_channels: int = 3) -> Path:
    """Save :func:`tiny_t2i_adapter` as a diffusers folder and return it."""
    folder = Path(folder)
    tiny_t2i_adapter(seed, in_channels).save_pretrained(folder)
    return folder


@keeps_global_rng
def write_tiny_clip_model(folder: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """A tiny random ``CLIPModel`` folder (model, real CLIP tokenizer, image processor) for metric tests."""
    from transformers import CLIPConfig, CLIPModel

    try:
        from transformers import CLIPImageProcessorPil as processor_cls
    except ImportError:  # transformers builds without the PIL-only class
        from transformers import CLIPImageProcessor as processor_cls

    from .tokenizer import write_clip_tokenizer_files

    folder = Path(folder)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={"vocab_size": 49408, "max_position_embeddings": 77, **layers},
        vision_config={"image_size": image_size, "patch_size": 8, **layers},
        projection_dim=16,
    )
    torch.random.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    write_clip_tokenizer_files(folder)
    processor_cls(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(folder)
    return folder


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` of this source checkout (benchmarks are scripts, not a package), once."""
    module_name = f"tuneavideo_benchmark_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmarks live in a source checkout of tuneavideo")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
