"""Loading SD-1.x bases and official Tune-A-Video checkpoints (local folders, hub ids, single files).

Untrusted weights load through safetensors or ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import torch

from .attention import make_temporal_layers
from .errors import InputError, ModelLoadError
from .unet import TuneAVideoUNet

logger = logging.getLogger(__name__)

# Official Tune-A-Video (diffusers 0.11) block names -> stock diffusers 2D blocks we inflate.
BLOCK_3D_TO_2D = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
    "UpBlock3D": "UpBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}
BLOCK_2D_TO_3D = {v: k for k, v in BLOCK_3D_TO_2D.items()}
# Config keys the official UNet3DConditionModel accepts (its __init__ signature).
OFFICIAL_CONFIG_KEYS = (
    "sample_size", "in_channels", "out_channels", "center_input_sample", "flip_sin_to_cos", "freq_shift",
    "down_block_types", "mid_block_type", "up_block_types", "only_cross_attention", "block_out_channels",
    "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn", "norm_num_groups", "norm_eps",
    "cross_attention_dim", "attention_head_dim", "dual_cross_attention", "use_linear_projection",
    "class_embed_type", "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
)  # fmt: skip
TEMPORAL_INIT_SEED = 0
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 2.0, host: str = "huggingface.co") -> bool:
    """Quick TCP probe of the hub, so start-up never waits on minutes of download retries."""
    if hub_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{host}")
    hostname = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((hostname, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _local_only(local_files_only: bool | None) -> bool:
    return hub_offline() if local_files_only is None else local_files_only


def _is_hub_id(path_or_id: str) -> bool:
    parts = str(path_or_id).split("/")
    return not Path(path_or_id).exists() and len(parts) == 2 and all(parts) and not str(path_or_id).startswith(".")


def resolve_folder(
    path_or_id: str | os.PathLike,
    subfolder: str | None,
    local_files_only: bool | None = None,
    revision: str | None = None,
    variant: str | None = None,
) -> Path:
    """Return a local folder for ``path_or_id[/subfolder]`` holding ``config.json`` and one weights file.

    For a hub id only ``config.json`` and the single preferred weights file are fetched (a SD repo's
    unet/ folder also holds fp16, non-EMA and pickle copies worth ~10 GB).
    """
    path = Path(path_or_id)
    if path.exists():
        if subfolder and (path / subfolder).is_dir():
            return path / subfolder
        if (path / "config.json").is_file():
            return path
        raise ModelLoadError(f"{path} has no '{subfolder}/config.json' or 'config.json'")
    if not _is_hub_id(str(path_or_id)):
        raise ModelLoadError(f"model path not found: {path_or_id} (not a local folder, nor a hub id like 'org/name')")
    from huggingface_hub import hf_hub_download

    local = _local_only(local_files_only)

    def fetch(name: str) -> Path:
        return Path(
            hf_hub_download(str(path_or_id), name, subfolder=subfolder, revision=revision, local_files_only=local)
        )

    try:
        folder = fetch("config.json").parent
    except Exception as exc:
        hint = " (offline mode: download it once with network access, or pass a local folder)" if local else ""
        raise ModelLoadError(f"could not get '{path_or_id}' from the Hugging Face hub{hint}: {exc}") from exc
    for name in _weight_candidates(variant):
        try:
            fetch(name)
            return folder
        except Exception:
            continue
    raise ModelLoadError(f"'{path_or_id}' has no {subfolder}/ weights among {_weight_candidates(variant)}")


def _weight_candidates(variant: str | None) -> list[str]:
    names = list(WEIGHT_NAMES)
    if variant:
        names = [
            n.replace(".safetensors", f".{variant}.safetensors").replace(".bin", f".{variant}.bin") for n in names
        ] + names
    return names


def _weights_file(folder: Path, variant: str | None) -> Path:
    for name in _weight_candidates(variant):
        if (folder / name).is_file():
            return folder / name
    raise ModelLoadError(f"no weights in {folder}: expected one of {_weight_candidates(variant)}")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state dict from .safetensors, or a pickle with ``weights_only=True`` (never arbitrary code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a plain tensor checkpoint (refusing to unpickle code): {exc}") from exc
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def unet_config_to_2d(config: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Map an official (3D block names) or stock UNet config to a ``UNet2DConditionModel`` config.

    Returns the config and whether it was an official Tune-A-Video config.
    """
    config = dict(config)
    official = config.get("_class_name") == "UNet3DConditionModel" or any(
        b in BLOCK_3D_TO_2D for b in [*config.get("down_block_types", []), config.get("mid_block_type", "")]
    )
    if official:
        config["down_block_types"] = [BLOCK_3D_TO_2D.get(b, b) for b in config["down_block_types"]]
        config["up_block_types"] = [BLOCK_3D_TO_2D.get(b, b) for b in config["up_block_types"]]
        if config.get("mid_block_type"):
            config["mid_block_type"] = BLOCK_3D_TO_2D.get(config["mid_block_type"], config["mid_block_type"])
    unknown = [b for b in [*config["down_block_types"], *config["up_block_types"]] if b.endswith("3D")]
    if unknown:
        raise ModelLoadError(f"unsupported 3D blocks {unknown}: not an SD-1.x / Tune-A-Video UNet")
    return config, official


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

    ``path_or_id`` is a local pipeline folder, a UNet folder, or a hub id. For a 2D base the
    temporal layers are freshly initialised; for an official checkpoint (``UNet3DConditionModel``
    config, ``*3D`` blocks) every key must match, with none missing or left over.
    """
    folder = resolve_folder(path_or_id, subfolder, local_files_only, revision, variant)
    config = json.loads((folder / "config.json").read_text())
    config, official = unet_config_to_2d(config)
    state = load_state_dict_file(_weights_file(folder, variant))
    # Skip the random init of ~860M params: build on the meta device, then assign the loaded tensors.
    from accelerate import init_empty_weights

    with init_empty_weights():
        unet = TuneAVideoUNet.from_config(config)
    expected = set(unet.state_dict())
    has_temporal = any("_temp." in k for k in state)
    if official and not has_temporal:
        raise ModelLoadError(f"{folder}: official config but no attn_temp/norm_temp weights in the checkpoint")
    required = expected if has_temporal else {k for k in expected if "_temp." not in k}
    missing, unexpected = sorted(required - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        kind = "Tune-A-Video" if has_temporal else "SD-1.x"
        raise ModelLoadError(
            f"{folder}: checkpoint does not match a {kind} UNet with this config: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    dtype = torch_dtype or torch.float32  # as diffusers: fp32 unless asked otherwise
    unet.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if not has_temporal:  # a 2D base: fresh temporal layers, made on the loaded weights' device/dtype
        # Seeded, so the same base always inflates to the same model (reproducible tuning runs).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(TEMPORAL_INIT_SEED)
            for module in unet.modules():
                if hasattr(module, "attn_temp"):
                    module.norm_temp, module.attn_temp = make_temporal_layers(module)
        unet.set_attention_backend(unet.attention_backend)  # processors for the new attn_temp modules
    still_meta = [n for n, p in unet.named_parameters() if p.is_meta]
    if still_meta:
        raise ModelLoadError(f"{folder}: parameters left uninitialised: {still_meta[:3]}")
    unet.eval()
    if device is not None:
        unet.to(device)
    logger.info("loaded %s UNet from %s", "Tune-A-Video" if has_temporal else "2D SD (inflated)", folder)
    return unet


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


def validate_size(height: int, width: int, vae_scale_factor: int) -> None:
    """Raise a clear error for sizes the VAE/UNet cannot take."""
    for name, v in (("height", height), ("width", width)):
        if v <= 0 or v % vae_scale_factor:
            raise InputError(f"{name}={v} must be a positive multiple of {vae_scale_factor} for this model")


def _load_component(cls: Any, path_or_id: str | os.PathLike, subfolder: str, local: bool, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(str(path_or_id), subfolder=subfolder, local_files_only=local, **kwargs)
    except Exception as exc:
        raise ModelLoadError(f"could not load {subfolder} ({cls.__name__}) from '{path_or_id}': {exc}") from exc


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
) -> Any:
    """Build a :class:`~tuneavideo.TuneAVideoPipeline` from an SD-1.x base.

    Args:
        pretrained: a diffusers folder, a hub id (default base
            ``stable-diffusion-v1-5/stable-diffusion-v1-5``; community SD-1.x/DreamBooth bases too),
            an official Tune-A-Video output folder, or a single ``.safetensors``/``.ckpt`` file.
        unet: optional UNet override: a folder (official checkpoint or 2D UNet) or a loaded model.
        scheduler: ``"ddim"`` (the official sampler, default) or ``"base"`` to keep the base's own.
        original_config: for single files, a local diffusers config folder (needed offline).
    """
    from diffusers import DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    from .pipeline import TuneAVideoPipeline
    from .tokenizer import check_tokenizer

    local = _local_only(local_files_only)
    path = Path(pretrained)
    if path.is_file():
        return _load_single_file(path, unet, torch_dtype, device, local, original_config, scheduler)
    if not path.exists() and not _is_hub_id(str(pretrained)):
        raise ModelLoadError(f"model not found: {pretrained} (expected a folder, a file or a hub id 'org/name')")
    if not local and _is_hub_id(str(pretrained)) and not hub_reachable():
        logger.warning("the Hugging Face hub is unreachable: using only locally cached files for %s", pretrained)
        local = True  # fail in milliseconds instead of minutes of download retries
    kw = {"revision": revision} if revision else {}
    weights_kw = {**kw, **({"torch_dtype": torch_dtype} if torch_dtype is not None else {})}
    vae = _load_component(__import__("diffusers").AutoencoderKL, pretrained, "vae", local, **weights_kw)
    text_encoder = _load_component(CLIPTextModel, pretrained, "text_encoder", local, **weights_kw)
    tokenizer = _load_component(CLIPTokenizer, pretrained, "tokenizer", local, **kw)
    check_tokenizer(tokenizer, f"{pretrained}/tokenizer")
    base_scheduler = _load_component(DDIMScheduler, pretrained, "scheduler", local, **kw)
    if scheduler == "base":
        import diffusers

        cfg = DDIMScheduler.load_config(str(pretrained), subfolder="scheduler", local_files_only=local, **kw)
        base_scheduler = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
    if unet is None:
        unet_model = load_unet(pretrained, "unet", torch_dtype, None, local, revision, variant)
    elif isinstance(unet, torch.nn.Module):
        unet_model = unet
    else:
        unet_model = load_unet(unet, "unet", torch_dtype, None, local, revision, variant)
    pipe = TuneAVideoPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet_model, scheduler=base_scheduler
    )
    if device is not None:
        pipe.to(device)
    pipe.base_model = str(pretrained)
    return pipe


def _load_single_file(
    path: Path,
    unet: Any,
    torch_dtype: torch.dtype | None,
    device: Any,
    local: bool,
    original_config: str | None,
    scheduler: str,
) -> Any:
    """A single-file SD-1.x checkpoint (A1111/civitai style), converted by diffusers."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .pipeline import TuneAVideoPipeline
    from .unet import TuneAVideoUNet

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
    pipe = TuneAVideoPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet_model, scheduler=sched
    )
    if device is not None:
        pipe.to(device)
    pipe.base_model = str(path)
    return pipe


def export_official_pipeline(pipe: Any, folder: str | os.PathLike, safe_serialization: bool = False) -> Path:
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
