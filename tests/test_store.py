"""The run-folder store: atomic writes, validated loads, inversions keyed by settings, safe archives."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tuneavideo.config import InvertConfig
from tuneavideo.errors import InputError, ModelLoadError
from tuneavideo.store import STORE_VERSION, RunFolder, RunStore, TunedDelta, inversion_key

FRAMES = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)


def _delta(value: float = 0.5) -> TunedDelta:
    state = {"a.to_q.weight": torch.full((4, 4), value), "b.attn_temp.to_out.0.bias": torch.zeros(4)}
    return TunedDelta(state, {"prompt": "a red square", "num_frames": 4, "height": 32, "width": 32}, (1.0, 0.5))


def _run(path: Path, value: float = 0.5) -> RunFolder:
    return RunFolder.write(path, _delta(value), FRAMES, fps=8.0)


def test_write_and_load_round_trip(tmp_path: Path):
    run = _run(tmp_path / "run")
    assert RunFolder.is_run(run.path) and run.record["store_version"] == STORE_VERSION
    delta = RunFolder.open(run.path).load_delta()
    assert torch.equal(delta.state_dict["a.to_q.weight"], torch.full((4, 4), 0.5)) and delta.losses == (1.0, 0.5)
    np.testing.assert_array_equal(run.source_frames(), FRAMES)  # exact, not the lossy mp4
    assert (run.path / "source.mp4").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    umask = os.umask(0)
    os.umask(umask)
    assert (run.path / "tuned.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # like any file, not 0600


def test_a_failed_write_keeps_the_earlier_run(tmp_path: Path, monkeypatch):
    run = _run(tmp_path / "run", 0.5)
    import tuneavideo.video as video

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(video, "write_mp4", broken)
    with pytest.raises(OSError, match="disk full"):
        _run(tmp_path / "run", 0.9)
    assert torch.equal(run.load_delta().state_dict["a.to_q.weight"], torch.full((4, 4), 0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_non_finite_weights_are_never_saved_nor_loaded(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="non-finite"):
        _run(tmp_path / "nan", float("nan"))
    assert not (tmp_path / "nan").exists()
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    bad.mkdir()
    save_file({"w": torch.tensor([1.0, float("inf")])}, str(bad / "tuned.safetensors"))
    (bad / "tuned.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="non-finite"):
        TunedDelta.load(bad)


@pytest.mark.parametrize("case", ["json", "version", "tensors", "missing"])
def test_damaged_runs_give_clear_errors(tmp_path: Path, case: str):
    run = _run(tmp_path / "run")
    if case == "json":
        (run.path / "tuned.json").write_text("{not json")
        expected = "damaged"
    elif case == "version":
        (run.path / "tuned.json").write_text(json.dumps({"store_version": STORE_VERSION + 1}))
        expected = "newer tuneavideo"
    elif case == "tensors":
        (run.path / "tuned.safetensors").write_bytes(b"garbage" * 10)
        expected = "not a readable safetensors"
    else:
        (run.path / "tuned.json").unlink()
        expected = "not a tuned-run folder"
    with pytest.raises(ModelLoadError, match=expected):
        RunFolder.open(run.path).load_delta()


def test_weights_are_checked_against_the_unet(tmp_path: Path):
    unet = torch.nn.Module()
    unet.a = torch.nn.Module()
    unet.a.to_q = torch.nn.Linear(4, 3, bias=False)  # another shape than the delta's (4, 4)
    run = _run(tmp_path / "run")
    with pytest.raises(ModelLoadError, match="do not fit"):
        run.load_delta(unet)


def test_inversions_are_keyed_by_settings_and_follow_their_run(tmp_path: Path):
    run = _run(tmp_path / "run")
    latents = torch.randn(1, 4, 4, 4, 4)
    ten, twenty = InvertConfig(num_inference_steps=10), InvertConfig(num_inference_steps=20)
    run.save_inversion(ten, latents)
    assert torch.equal(run.load_inversion(ten), latents) and run.load_inversion(twenty) is None
    assert run.load_inversion(ten, shape=(1, 4, 8, 4, 4)) is None  # another clip length: not this one
    assert run.inversion_path(ten).name == f"{inversion_key(ten)}.safetensors"
    _run(tmp_path / "run", 0.7)  # tuned again into the same folder: old inversions no longer apply
    assert RunFolder(tmp_path / "run").load_inversion(ten) is None


def test_archives_round_trip_and_refuse_hostile_input(tmp_path: Path):
    run = _run(tmp_path / "run")
    run.save_inversion(InvertConfig(num_inference_steps=3), torch.zeros(1, 4, 4, 4, 4))
    archive = run.pack(tmp_path / "run.zip")
    back = RunFolder.unpack(archive, tmp_path / "back")
    assert torch.equal(back.load_delta().state_dict["a.to_q.weight"], run.load_delta().state_dict["a.to_q.weight"])
    assert back.load_inversion(InvertConfig(num_inference_steps=3)) is not None  # same run id travels along

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.write(run.path / "tuned.safetensors", "tuned.safetensors")
        zf.writestr("../../escape.txt", "x")
        zf.writestr("inversions/../../../escape2.safetensors", "x")
    RunFolder.unpack(evil, tmp_path / "evil-out")
    assert not list(tmp_path.rglob("escape*"))  # unknown names are skipped, never joined as paths

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tuned.safetensors", b"\0" * (64 << 20))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InputError, match="refused"):
        RunFolder.unpack(bomb, tmp_path / "bomb-out")
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(100):
            zf.writestr(f"f{i}.txt", "x")
    with pytest.raises(InputError, match="files in the archive"):
        RunFolder.unpack(many, tmp_path / "many-out")
    with pytest.raises(ModelLoadError, match="no tuned.safetensors"):
        RunFolder.unpack(_zip_of(tmp_path / "empty.zip", {"notes.txt": "x"}), tmp_path / "empty-out")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not leftovers and not (tmp_path / "bomb-out").exists()


def _zip_of(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def test_a_run_store_lists_and_validates_keys(tmp_path: Path):
    store = RunStore(tmp_path / "runs")
    _run(store.path("abc123"))
    assert store.keys() == ["abc123"] and store.get("abc123") is not None and store.get("nope") is None
    with pytest.raises(InputError):
        store.path("../etc")
    assert store.nbytes() > 0
