"""UNet checkpoint files: find a UNet folder (local or hub), read its config and weights, map official names.

The lowest loading layer: it imports neither the UNet nor the pipeline, so ``unet.py`` and
``pipeline.py`` can use it while ``loading.py`` (the public facade) imports all three, one way.
Untrusted weights load through safetensors or ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import ModelLoadError
from .hub import hub_offline, is_hub_id, offline_hint

# Official Tune-A-Video (diffusers 0.11) block names -> stock diffusers 2D blocks we inflate.
BLOCK_3D_TO_2D = {
    "CrossAttnDownBlock3D": "CrossAttnDownBlock2D",
    "DownBlock3D": "DownBlock2D",
    "UNetMidBlock3DCrossAttn": "UNetMidBlock2DCrossAttn",
    "UpBlock3D": "UpBlock2D",
    "CrossAttnUpBlock3D": "CrossAttnUpBlock2D",
}
BLOCK_2D_TO_3D = {v: k for k, v in BLOCK_3D_TO_2D.items()}
# Seed of the temporal layers' fresh init, so one base always inflates to the same model.
TEMPORAL_INIT_SEED = 0
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def local_only(local_files_only: bool | None) -> bool:
    """The caller's hub policy, or ``HF_HUB_OFFLINE`` (read now, never at import) when it gave none."""
    return hub_offline() if local_files_only is None else local_files_only


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
    if not is_hub_id(str(path_or_id)):
        raise ModelLoadError(f"model path not found: {path_or_id} (not a local folder, nor a hub id like 'org/name')")
    from huggingface_hub import hf_hub_download

    local = local_only(local_files_only)

    def fetch(name: str) -> Path:
        return Path(
            hf_hub_download(str(path_or_id), name, subfolder=subfolder, revision=revision, local_files_only=local)
        )

    try:
        folder = fetch("config.json").parent
    except Exception as exc:
        hint = f" (offline) {offline_hint(str(path_or_id))}" if local else ""
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


def weights_file(folder: Path, variant: str | None) -> Path:
    """The preferred weights file in a UNet folder (safetensors first, then the official ``.bin``)."""
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


def check_unet_keys(folder: Path, expected: set[str], state: dict[str, Any], official: bool) -> bool:
    """Raise unless ``state`` fits the model; return whether it carries temporal (``_temp.``) weights.

    A 2D base may lack exactly the temporal keys; an official checkpoint must match key for key.
    """
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
    return has_temporal
