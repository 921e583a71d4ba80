"""Loading 2D SD folders and official Tune-A-Video checkpoints; export; tokenizer; offline hub ids."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest
import torch

from tuneavideo import ModelLoadError, TuneAVideoUNet, export_official_unet, load_pipeline, load_unet
from tuneavideo.loading import export_official_pipeline
from tuneavideo.testing import TINY_UNET_CONFIG, tiny_unet
from tuneavideo.tokenizer import CLIP_VOCAB_SIZE, check_tokenizer, clip_tokenizer


def test_clip_tokenizer_is_the_real_vocabulary():
    tok = clip_tokenizer()
    assert len(tok) == CLIP_VOCAB_SIZE
    # ids of the real openai/clip-vit-large-patch14 tokenizer
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_empty_tokenizer_is_refused(tmp_path: Path):
    from transformers import CLIPTokenizer

    empty = CLIPTokenizer(vocab_file=str(tmp_path / "nope.json"), merges_file=str(tmp_path / "nope.txt"))
    with pytest.raises(ValueError, match="tokenizer"):
        check_tokenizer(empty)


def test_load_2d_folder_inflates_with_fresh_temporal_layers(tiny_sd: str):
    unet = load_unet(tiny_sd)
    assert isinstance(unet, TuneAVideoUNet)
    from diffusers import UNet2DConditionModel

    ref = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    state = unet.state_dict()
    for key, value in ref.state_dict().items():
        assert torch.equal(state[key], value), key
    assert not any(p.is_meta for p in unet.parameters())


def _official_folder(tmp_path: Path, unet: TuneAVideoUNet) -> Path:
    """An official-layout checkpoint written by hand: 3D config + .bin state dict."""
    folder = tmp_path / "official" / "unet"
    folder.mkdir(parents=True)
    config = dict(TINY_UNET_CONFIG)
    config.update(
        _class_name="UNet3DConditionModel",
        _diffusers_version="0.11.1",
        down_block_types=["CrossAttnDownBlock3D", "DownBlock3D"],
        up_block_types=["UpBlock3D", "CrossAttnUpBlock3D"],
        mid_block_type="UNetMidBlock3DCrossAttn",
    )
    (folder / "config.json").write_text(json.dumps(config))
    torch.save(unet.state_dict(), folder / "diffusion_pytorch_model.bin")
    return folder.parent


def test_official_checkpoint_round_trips_with_no_key_left_over(tmp_path: Path):
    src = tiny_unet(seed=7)
    folder = _official_folder(tmp_path, src)
    loaded = load_unet(folder)  # subfolder="unet"
    a, b = src.state_dict(), loaded.state_dict()
    assert set(a) == set(b)
    assert any("attn_temp" in k for k in b) and any("norm_temp" in k for k in b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x, text = torch.randn(1, 4, 3, 16, 16), torch.randn(1, 77, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, 5, text).sample, src(x, 5, text).sample)


def test_export_official_then_load(tmp_path: Path):
    src = tiny_unet(seed=8)
    for safe in (False, True):
        out = export_official_unet(src, tmp_path / f"export-{safe}", safe_serialization=safe)
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["_class_name"] == "UNet3DConditionModel"
        assert cfg["down_block_types"] == ["CrossAttnDownBlock3D", "DownBlock3D"]
        loaded = load_unet(out, subfolder=None)
        for key, value in src.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value)


def test_export_full_official_pipeline(tmp_path: Path, tiny_pipe):
    out = export_official_pipeline(tiny_pipe, tmp_path / "pipe")
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "TuneAVideoPipeline"
    assert (out / "unet" / "diffusion_pytorch_model.bin").is_file()
    again = load_pipeline(out)
    for key, value in tiny_pipe.unet.state_dict().items():
        assert torch.equal(again.unet.state_dict()[key], value)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path: Path):
    folder = _official_folder(tmp_path, tiny_unet())
    state = torch.load(folder / "unet" / "diffusion_pytorch_model.bin", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["conv_in.weight"]
    torch.save(state, folder / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="1 missing keys.*1 unexpected keys"):
        load_unet(folder)


class _Evil:
    def __reduce__(self):  # would run code on unpickling
        return (print, ("pwned",))


def test_pickles_load_with_weights_only(tmp_path: Path):
    folder = _official_folder(tmp_path, tiny_unet())
    path = folder / "unet" / "diffusion_pytorch_model.bin"
    with path.open("wb") as fh:
        pickle.dump({"conv_in.weight": _Evil()}, fh)
    with pytest.raises(ModelLoadError, match="refusing to unpickle"):
        load_unet(folder)


def test_hub_id_offline_fails_fast_and_clearly():
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="offline"):
        load_unet("stable-diffusion-v1-5/stable-diffusion-v1-5", local_files_only=True)
    with pytest.raises(ModelLoadError):
        load_pipeline("some-org/not-a-model-xyz", local_files_only=True)
    assert time.perf_counter() - start < 20


def test_missing_path_is_clear():
    with pytest.raises(ModelLoadError, match="not found"):
        load_pipeline("/no/such/folder")
