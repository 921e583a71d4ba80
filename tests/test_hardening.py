"""Bad input, faults and hostile requests: each gets a clear message, and the next good request still works.

The matrix runs through the CLI (in process: ``tuneavideo.cli.main``), the :class:`~tuneavideo.engine.Engine`
API and the app (``gradio_client``), on CPU with the tiny model. One engine, one served app and one tuned
run per module keep it fast. Categories: files, prompts, numbers, names and paths, archives, memory,
divergence, disk, concurrency, cancel, signals.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
from tuneavideo.errors import Cancelled, InputError, TuneAVideoError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parent.parent
SPEC = VideoSpec(num_frames=4, width=32, height=32)
TUNE = TuneConfig(max_train_steps=1, learning_rate=1e-4)
FAST = SampleConfig(num_inference_steps=1, guidance_scale=1.0, seed=5)
INV = InvertConfig(num_inference_steps=1)
TUNE_ARGS = {"num_frames": 4, "width": 32, "height": 32, "stride": 1, "steps": 1, "preview_steps": 0}
UPLOAD_LIMIT = 3_000_000


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tuneavideo.testing import tiny_controlnet

    folder = tmp_path_factory.mktemp("allowed") / "controlnet"
    tiny_controlnet().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def engine(make_engine, controlnet_dir: str):
    return make_engine(allow_model_dirs=(str(Path(controlnet_dir).parent),), max_upload_bytes=UPLOAD_LIMIT)


@pytest.fixture(scope="module")
def tuned(engine, tiny_clip: str):
    """``(session, tune_key, run folder)`` of one 1-step tune, shared by the module."""
    res = engine.tune("owner", tiny_clip, "a red square moves right", SPEC, TUNE, preview_steps=0)
    return "owner", res.tune_key, Path(engine.models("owner")[0].run_path), res.download_path


@pytest.fixture()
def run_copy(tuned, tmp_path: Path) -> Path:
    """A private copy of the tuned run (tests damage it)."""
    return Path(shutil.copytree(tuned[2], tmp_path / "run"))


def good_edit(engine, tuned) -> None:
    """The next good request still works (and the stored run is intact)."""
    sid, key, run, _ = tuned
    res = engine.edit(sid, key, "a blue square", FAST, invert_config=INV)
    assert Path(res.video_path).is_file()
    assert (run / "tuned.safetensors").is_file()


def cli(capsys, *args: str) -> tuple[int, str]:
    from tuneavideo.cli import main

    rc = main(["-q", *args])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    return rc, text


def cli_error(capsys, pattern: str, *args: str) -> str:
    import re

    rc, text = cli(capsys, *args)
    assert rc == 2, text
    assert re.search(r"^error: ", text, re.M) and re.search(pattern, text), text
    return text


# ------------------------------------------------------------------------------------------ CLI: files
def test_cli_files(capsys, tiny_sd: str, tmp_path: Path, run_copy: Path, engine, tuned):
    m = ["--model", tiny_sd]
    text_mp4 = tmp_path / "holiday.mp4"
    text_mp4.write_text("not a video")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    base = ["tune", "--prompt", "a square", "--frames", "4", "--width", "32", "--height", "32", *m]
    cli_error(capsys, "file not found", *base, "--video", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "a"))
    cli_error(capsys, "could not be decoded", *base, "--video", str(text_mp4), "-o", str(tmp_path / "b"))
    cli_error(
        capsys, "notes.txt could not be decoded as a video", *base, "--video", str(notes), "-o", str(tmp_path / "c")
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no empty output folders left
    cli_error(capsys, "not a tuned-run folder", "edit", "--tuned", str(tmp_path / "nowhere"), "--prompt", "x", *m)
    good_edit(engine, tuned)


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        ("weights", r"not a readable safetensors file"),
        ("nan", r"non-finite values"),
        ("record", r"damaged \(not JSON"),
        ("record-list", r"damaged: expected a JSON object"),
        ("no-weights", r"no tuned.safetensors"),
    ],
)
def test_cli_damaged_runs(capsys, tiny_sd: str, run_copy: Path, damage: str, pattern: str, engine, tuned):
    from safetensors.torch import load_file, save_file

    weights = run_copy / "tuned.safetensors"
    if damage == "weights":
        weights.write_bytes(b"\x00garbage" * 10)
    elif damage == "nan":
        state = load_file(str(weights))
        save_file({k: torch.full_like(v, float("nan")) for k, v in state.items()}, str(weights))
    elif damage == "record":
        (run_copy / "tuned.json").write_text("{not json")
    elif damage == "record-list":
        (run_copy / "tuned.json").write_text("[1, 2]")
    else:
        weights.unlink()
    cli_error(capsys, pattern, "edit", "--tuned", str(run_copy), "--prompt", "a blue square", "--model", tiny_sd,
              "--steps", "1")  # fmt: skip
    good_edit(engine, tuned)


# ------------------------------------------------------------------------------------------ CLI: prompts
@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["tune", "--video", "{clip}", "--prompt", "   "], "no prompt"),
        (["tune", "--video", "{clip}", "--prompt", "\t\n"], "no prompt"),
        (["edit", "--tuned", "{run}", "--prompt", ""], "at least one edit prompt"),
        (["edit", "--tuned", "{run}", "--prompt", "  ", "--prompt", "\n"], "at least one edit prompt"),
        (["generate", "--prompt", "   "], "at least one prompt"),
        (["control", "--tuned", "{run}", "--prompt", " "], "at least one prompt"),
        (["edit", "--tuned", "{run}", *[a for i in range(17) for a in ("--prompt", f"p{i}")]], "at most 16"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--negative-prompt", "   "], None),
    ],
)
def test_cli_prompts(capsys, tiny_sd: str, tiny_clip: str, run_copy: Path, tmp_path: Path, args, pattern):
    args = [a.replace("{clip}", tiny_clip).replace("{run}", str(run_copy)) for a in args]
    if pattern is None:  # a blank negative prompt is "none", not an error
        rc, text = cli(capsys, *args, "--model", tiny_sd, "--steps", "1", "--no-inversion", "-o", str(tmp_path / "o"))
        assert rc == 0, text
        return
    cli_error(capsys, pattern, *args, "--model", tiny_sd, "-o", str(tmp_path / "out"))


def test_cli_long_prompt_is_cut_with_a_warning(capsys, tiny_sd: str, run_copy: Path, tmp_path: Path):
    rc, text = cli(capsys, "edit", "--tuned", str(run_copy), "--prompt", "a red square " * 40, "--model", tiny_sd,
                   "--steps", "1", "--no-inversion", "-o", str(tmp_path / "long"))  # fmt: skip
    assert rc == 0 and "warning: the edit prompt (--prompt) is 1" in text and "only the first 77 are used" in text
    assert len(list((tmp_path / "long").glob("*.mp4"))) == 1


# ------------------------------------------------------------------------------------------ CLI: numbers
@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["generate", "--prompt", "x", "--frames", "10000"], "frames must be from 1 to 16"),
        (["generate", "--prompt", "x", "--frames", "-3"], "num_frames must be >= 1"),
        (["generate", "--prompt", "x", "--width", "8192", "--height", "8192"], "width must be from 8 to 128"),
        (["generate", "--prompt", "x", "--width", "33"], "multiple of 8"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--steps", "0"], "num_inference_steps must be >= 1"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--steps", "100000"], "sampling steps must be from 1 to 1000"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--guidance", "nan"], "guidance must be from 0 to 50"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--guidance", "1e9"], "guidance must be from 0 to 50"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--seed", str(2**70)], "seed must be a whole number"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--seed", "-1"], "seed must be a whole number"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--invert-steps", "5000"], "inversion steps must be from 1"),
        (["edit", "--tuned", "{run}", "--prompt", "x", "--eta", "3"], r"eta must be in \[0, 1\]"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--seed", str(2**70)], "seed must be a whole number"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--max-train-steps", "0"], "at least 1"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--max-train-steps", "1000000000"], "from 1 to 5000"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--lr", "nan"], "learning_rate must be > 0"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--lr", "inf"], "learning rate must be a finite number"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--lr", "-1"], "learning_rate must be > 0"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--frames", "10000"], "frames must be from 1 to 16"),
        (["tune", "--video", "{clip}", "--prompt", "x", "--stride", "1000"], "stride must be from 1 to 64"),
        (["invert", "--tuned", "{run}", "--invert-steps", "0"], "num_inference_steps must be >= 1"),
    ],
)
def test_cli_numbers(capsys, tiny_sd: str, tiny_clip: str, run_copy: Path, tmp_path: Path, args, pattern):
    args = [a.replace("{clip}", tiny_clip).replace("{run}", str(run_copy)) for a in args]
    out = ["-o", str(tmp_path / "out")] if args[0] != "invert" else []
    cli_error(capsys, pattern, *args, "--model", tiny_sd, *out)
    assert not (tmp_path / "out").exists()  # refused before anything was written


# ------------------------------------------------------------------------------------------ CLI: paths
def test_cli_paths(capsys, tiny_sd: str, tiny_clip: str, run_copy: Path, tmp_path: Path, engine, tuned):
    m = ["--model", tiny_sd]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    (tmp_path / "dir.mp4").mkdir()
    edit = ["edit", "--tuned", str(run_copy), "--prompt", "x", *m]
    cli_error(capsys, "is a file, not a folder", *edit, "-o", str(a_file / "x.mp4"))
    cli_error(capsys, "is a file, not a folder", *edit, "-o", str(a_file))
    cli_error(capsys, "is a folder, not a file path", *edit, "-o", str(tmp_path / "dir.mp4"))
    cli_error(capsys, "cannot create the output folder", *edit, "-o", "/proc/tuneavideo-test/out")
    cli_error(capsys, "names one file, but 2 prompts", *edit, "--prompt", "y", "-o", str(tmp_path / "one.mp4"))
    cli_error(capsys, "is a file, not a folder", "export", "--tuned", str(run_copy), "-o", str(a_file), *m)
    tune = ["tune", "--video", tiny_clip, "--prompt", "x", "--frames", "4", "--width", "32", "--height", "32", *m]
    cli_error(capsys, "is a file, not a folder", *tune, "-o", str(a_file))
    cli_error(capsys, "not empty and holds no tuned run", *tune, "-o", str(tmp_path / "busy"))
    assert a_file.read_text() == "x" and (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    good_edit(engine, tuned)


def test_cli_outputs_never_overwrite(capsys, tiny_sd: str, run_copy: Path, tmp_path: Path):
    out = tmp_path / "edits"
    rc, text = cli(capsys, "edit", "--tuned", str(run_copy), "--prompt", "a cat!", "--prompt", "a cat?",
                   "--model", tiny_sd, "--steps", "1", "--no-inversion", "-o", str(out))  # fmt: skip
    assert rc == 0, text
    assert sorted(p.name for p in out.glob("*.mp4")) == ["a-cat-2.mp4", "a-cat.mp4"]


# ------------------------------------------------------------------------------------------ memory
def test_memory_check_refuses_with_the_numbers(capsys, monkeypatch, tiny_sd: str, engine, tuned, tiny_clip: str):
    import tuneavideo.validation as v

    monkeypatch.setattr(v, "available_memory", lambda device: (1000, "available RAM"))
    text = cli_error(capsys, r"this generate job needs about .* but this device \(cpu\) has 1.0 KB", "generate",
                     "--prompt", "x", "--model", tiny_sd)  # fmt: skip
    assert "fewer frames" in text
    with pytest.raises(InputError, match=r"this tune job needs about [0-9.]+ [KMG]?B of memory, but this device"):
        engine.tune("mem", tiny_clip, "a square", SPEC, dataclasses.replace(TUNE, seed=99), preview_steps=0)
    with pytest.raises(InputError, match="this edit job needs about"):
        engine.edit(tuned[0], tuned[1], "a blue square", FAST, invert_config=INV)
    monkeypatch.setenv("TUNEAVIDEO_MEMORY_CHECK", "0")  # the operator's way out
    good_edit(engine, tuned)
    monkeypatch.undo()
    good_edit(engine, tuned)


# ------------------------------------------------------------------------------------------ divergence
def _nan_after_first_step(monkeypatch) -> list[int]:
    import tuneavideo.tuning as tuning

    calls = [0]
    real = tuning.denoising_loss

    def loss(*args):
        calls[0] += 1
        out = real(*args)
        return out * float("nan") if calls[0] >= 2 else out

    monkeypatch.setattr(tuning, "denoising_loss", loss)
    return calls


def test_divergence_stops_at_the_first_nan_and_names_the_learning_rate(monkeypatch, engine, tuned, tiny_clip: str):
    calls = _nan_after_first_step(monkeypatch)
    base = {k: v.clone() for k, v in engine.pipe.unet.state_dict().items()}
    runs = set(engine.store.keys())
    config = TuneConfig(max_train_steps=50, learning_rate=1e3, seed=7)
    with pytest.raises(InputError, match=r"tuning diverged: the loss became nan at step 2 with learning rate 1000"):
        engine.tune("diverge", tiny_clip, "a square", SPEC, config, preview_steps=0)
    assert calls[0] == 2  # stopped at once, not after 50 steps
    assert set(engine.store.keys()) == runs and engine.models("diverge") == []  # nothing saved
    assert all(torch.equal(v, engine.pipe.unet.state_dict()[k]) for k, v in base.items())
    monkeypatch.undo()
    good_edit(engine, tuned)


def test_cli_divergence_is_an_error_and_writes_no_run(capsys, monkeypatch, tiny_sd: str, tiny_clip: str, tmp_path):
    _nan_after_first_step(monkeypatch)
    out = tmp_path / "run"
    cli_error(capsys, r"tuning diverged: .* learning rate 1000", "tune", "--video", tiny_clip, "--prompt", "x",
              "--frames", "4", "--width", "32", "--height", "32", "--max-train-steps", "5", "--lr", "1e3",
              "--model", tiny_sd, "-o", str(out))  # fmt: skip
    assert not (out / "tuned.safetensors").exists()


# ------------------------------------------------------------------------------------------ engine API
@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda e, c, t: e.tune("api", c, "   ", SPEC, TUNE), "describe the source video"),
        (lambda e, c, t: e.tune("api", c, None, SPEC, TUNE), "describe the source video"),
        (lambda e, c, t: e.tune("api", c, "x", dataclasses.replace(SPEC, num_frames=1000), TUNE), "frames must be"),
        (lambda e, c, t: e.tune("api", c, "x", dataclasses.replace(SPEC, width=4096), TUNE), "width must be"),
        (lambda e, c, t: e.tune("api", c, "x", SPEC, dataclasses.replace(TUNE, max_train_steps=0)), "tuning steps"),
        (lambda e, c, t: e.tune("api", c, "x", SPEC, dataclasses.replace(TUNE, seed=2**64)), "seed must be"),
        (lambda e, c, t: e.tune("api", c, "x", SPEC, TUNE, preview_steps=10**6), "preview steps must be"),
        (lambda e, c, t: e.tune("api", None, "x", SPEC, TUNE), "Please upload a video"),
        (lambda e, c, t: e.tune("../etc", c, "x", SPEC, TUNE), "invalid session id"),
        (lambda e, c, t: e.edit("api", "0" * 64, "x", FAST), "not known in this session"),
        (lambda e, c, t: e.edit(t[0], t[1], "", FAST), "at least one edit prompt"),
        (lambda e, c, t: e.edit(t[0], t[1], ["x"] * 40, FAST), "at most 16"),
        (lambda e, c, t: e.edit(t[0], t[1], "x", dataclasses.replace(FAST, num_inference_steps=5000)), "from 1 to"),
        (lambda e, c, t: e.edit(t[0], t[1], "x", dataclasses.replace(FAST, guidance_scale=float("inf"))), "guidance"),
        (lambda e, c, t: e.edit(t[0], t[1], "x", FAST, invert_config=InvertConfig(5000)), "inversion steps"),
        (lambda e, c, t: e.generate(t[0], t[1], "x", FAST, num_frames=999), "frames must be from 1 to 16"),
        (lambda e, c, t: e.invert(t[0], t[1], InvertConfig(num_inference_steps=2000)), "inversion steps"),
    ],
)
def test_engine_refuses_bad_requests(engine, tuned, tiny_clip: str, call, pattern):
    with pytest.raises(InputError, match=pattern):
        call(engine, tiny_clip, tuned)
    assert engine.models("api") == []


def test_engine_good_request_after_refusals(engine, tuned):
    good_edit(engine, tuned)


# ------------------------------------------------------------------------------------------ archives
def _zip(path: Path, members: dict[str, bytes], compress: bool = False) -> str:
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("bomb", "unpacks to .* MB: refused"),
        ("many", "files in the archive"),
        ("no-weights", "holds no tuned.safetensors"),
        ("text", "upload the .zip downloaded from the app"),
        ("nan", "non-finite values"),
        ("garbage-weights", "not a readable safetensors file"),
        ("missing", "uploaded file not found"),
    ],
)
def test_bad_archives_are_refused_and_leave_nothing(engine, tuned, tmp_path: Path, kind: str, pattern: str):
    from safetensors.torch import load_file, save

    weights = (tuned[2] / "tuned.safetensors").read_bytes()
    if kind == "bomb":
        upload = _zip(tmp_path / "bomb.zip", {"tuned.safetensors": b"\0" * 300_000_000}, compress=True)
    elif kind == "many":
        upload = _zip(tmp_path / "many.zip", {f"f{i}.txt": b"x" for i in range(100)})
    elif kind == "no-weights":
        upload = _zip(tmp_path / "empty.zip", {"readme.txt": b"hi"})
    elif kind == "text":
        (tmp_path / "notes.bin").write_text("hello")
        upload = str(tmp_path / "notes.bin")
    elif kind == "nan":
        state = load_file(str(tuned[2] / "tuned.safetensors"))
        nan = save({k: torch.full_like(v, float("nan")) for k, v in state.items()})
        upload = _zip(tmp_path / "nan.zip", {"tuned.safetensors": nan, "tuned.json": b"{}"})
    elif kind == "garbage-weights":
        upload = _zip(tmp_path / "garbage.zip", {"tuned.safetensors": b"\x00" * 64})
    else:
        upload = str(tmp_path / "missing.zip")
    before = sorted(p.name for p in engine.store.root.iterdir())
    with pytest.raises(TuneAVideoError, match=pattern):
        engine.load_tuned("uploader", upload)
    assert sorted(p.name for p in engine.store.root.iterdir()) == before  # no temp folder, no partial run
    assert engine.models("uploader") == [] and len(weights) > 0
    good_edit(engine, tuned)


def test_archive_with_traversal_names_loads_only_known_members(engine, tuned, tmp_path: Path):
    weights = (tuned[2] / "tuned.safetensors").read_bytes()
    evil = tmp_path / "evil"
    upload = _zip(tmp_path / "t.zip", {"tuned.safetensors": weights, "../../evil/pwn.txt": b"x",
                                        "/etc/cron.d/x": b"y", "inversions/../../z.safetensors": b"z"})  # fmt: skip
    res = engine.load_tuned("traversal", upload)
    assert "uploaded" in res.label and not evil.exists()
    run = Path(engine.models("traversal")[0].run_path)
    assert sorted(p.name for p in run.iterdir()) == ["tuned.json", "tuned.safetensors"]
    engine.release("traversal")


def test_upload_over_the_size_limit_is_refused(engine, tmp_path: Path):
    big = tmp_path / "big.safetensors"
    big.write_bytes(b"\0" * (2 * UPLOAD_LIMIT + 10))
    with pytest.raises(InputError, match="larger than"):
        engine.load_tuned("big", str(big))


# ------------------------------------------------------------------------------------------ disk budget
def test_disk_budget_evicts_oldest_unheld_and_never_live_work(engine, tuned, tiny_clip: str):
    sid, key, run, _ = tuned
    for i in range(3):  # old outputs of the owner's session: only the newest of each kind is held
        engine.edit(sid, key, f"a square {i}", FAST, invert_config=INV)
    edits = sorted(p for p in (engine.output_root / sid).glob("*-edit-*"))
    assert len(edits) >= 3
    usage = engine.stats()["disk"]
    assert usage["used_bytes"] > 0 and usage["budget_bytes"] == engine.settings.disk_bytes
    old = engine.settings
    try:
        engine.settings = dataclasses.replace(old, disk_bytes=1)  # everything evictable goes
        freed = engine.enforce_disk()
        assert freed > 0 and not edits[0].exists() and edits[-1].exists()
        assert (run / "tuned.safetensors").is_file()  # held by a live session
        with pytest.raises(InputError, match=r"The server's disk budget is full \(.* of 1 B used"):
            engine.edit(sid, key, "a square", FAST, invert_config=INV)
    finally:
        engine.settings = old
    assert engine.stats()["disk"]["evictions"] >= 1
    good_edit(engine, tuned)


def test_disk_budget_skips_what_vanishes_while_it_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An upload Gradio moves (or a run replaced) between listing and stat is skipped, not a job's error."""
    from tuneavideo.disk import DiskBudget
    from tuneavideo.sessions import Sessions
    from tuneavideo.store import RunStore

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "kept.mp4").write_bytes(b"x" * 10)
    ghost = uploads / "tmp-moved-meanwhile"
    listed = Path.iterdir

    def iterdir(self: Path):
        yield from listed(self)
        if self == uploads:
            yield ghost  # listed, then gone before its stat

    class NoCache:
        def keys(self) -> list[str]:
            return []

    monkeypatch.setattr(Path, "iterdir", iterdir)
    disk = DiskBudget(lambda: 1, RunStore(tmp_path / "runs"), Sessions(tmp_path / "out", lambda sid: 0), NoCache())
    disk.upload_dir = uploads
    assert disk.usage()["uploads_bytes"] == 10
    disk.enforce()  # the old upload may go; the ghost is no error


# ------------------------------------------------------------------------------------------ concurrency, cancel
def test_concurrent_sessions_and_cancel(engine, tuned, tiny_clip: str):
    sid, key, _, download = tuned
    results: dict[str, object] = {}

    def job(name: str) -> None:
        try:
            engine.load_tuned(name, download)
            key_n = engine.models(name)[0].tune_key
            results[name] = engine.generate(name, key_n, f"a square {name}", FAST)
        except Exception as exc:  # recorded, asserted below
            results[name] = exc

    threads = [threading.Thread(target=job, args=(f"c{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(not isinstance(r, Exception) and Path(r.video_path).is_file() for r in results.values()), results
    assert len({r.video_path for r in results.values()}) == 3

    def cancel_at_first_step(event) -> None:
        engine.cancel("canceller")

    with pytest.raises(Cancelled):
        engine.tune("canceller", tiny_clip, "a square to cancel", SPEC, TuneConfig(max_train_steps=200, seed=3),
                    progress=cancel_at_first_step, preview_steps=0)  # fmt: skip
    assert engine.models("canceller") == []
    assert engine.wait_idle("canceller", timeout=0)  # the cancelled job has ended

    # wait_idle (the app's "… stopped." after Cancel) waits for a running job's end, and no longer
    started, release = threading.Event(), threading.Event()

    def hold(event) -> None:
        started.set()
        release.wait(60)

    engine.load_tuned("waiter", download)
    waiter_key = engine.models("waiter")[0].tune_key
    runner = threading.Thread(
        target=lambda: engine.generate("waiter", waiter_key, "a square", FAST, progress=hold), daemon=True
    )
    runner.start()
    assert started.wait(120)
    assert not engine.wait_idle("waiter", timeout=0.2)
    release.set()
    assert engine.wait_idle("waiter", timeout=120)
    runner.join(timeout=60)
    engine.release("waiter")
    assert engine.release("not a valid id!") == 0  # a bad id is ignored, not a crash
    for name in results:
        engine.release(name)
    good_edit(engine, tuned)


# ------------------------------------------------------------------------------------------ the app
@pytest.fixture(scope="module")
def app(engine, tuned, serve, gradio_temp_dir):
    """``(engine, url)``: the app over the module's engine, its heavy queue one job long."""
    from tuneavideo.ui import build_demo

    return engine, serve(build_demo(engine), max_size=1)


def _app_tune(client, tiny_clip: str, **kwargs):
    from gradio_client import handle_file

    return client.predict(video=handle_file(tiny_clip), **{"prompt": "a red square", **TUNE_ARGS, **kwargs},
                          api_name="/tune")  # fmt: skip


CONTROL = {"prompts": "a square", "hint": "canny", "control_type": "controlnet", "steps": 1, "guidance_scale": 1.0}


def test_app_control_model_names(client, tiny_clip: str, controlnet_dir: str, tmp_path: Path):
    from gradio_client.exceptions import AppError

    _app_tune(client, tiny_clip)
    probes = ["/etc", "/nonexistent", "~/x", "../../etc", "/", "/etc/passwd", str(tmp_path), "C:\\Windows",
              "file:///etc", "a/b/c", str(Path(controlnet_dir).parent.parent)]  # fmt: skip
    messages = set()
    for name in probes:
        with pytest.raises(AppError) as err:
            client.predict(**CONTROL, control_model=name, api_name="/control")
        messages.add(str(err.value))
    assert len(messages) == 1, messages  # the same words whatever exists on the server
    assert "control model 'that name' is not available" in messages.pop()
    with pytest.raises(AppError, match="control model 'nobody/no-such-controlnet' is not available"):
        client.predict(**CONTROL, control_model="nobody/no-such-controlnet", api_name="/control")
    hints, video, *_ = client.predict(**CONTROL, control_model=controlnet_dir, api_name="/control")
    assert Path(video).is_file()


def test_app_bad_numbers_and_prompts(client, tiny_clip: str):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="greater than maximum value 16"):  # Gradio checks slider bounds
        _app_tune(client, tiny_clip, num_frames=500)
    with pytest.raises(AppError, match="learning_rate must be > 0"):
        _app_tune(client, tiny_clip, learning_rate=-1.0)
    with pytest.raises(AppError, match="describe the source video"):
        _app_tune(client, tiny_clip, prompt="   ")
    *_, status = _app_tune(client, tiny_clip, prompt="a red square " * 30)
    assert "Warning: the source prompt is" in status and "only the first 77" in status
    with pytest.raises(AppError, match="greater than maximum value 150"):
        client.predict(prompts="x", steps=5000, api_name="/edit")
    video, *_ = client.predict(prompts="a blue square", steps=1, invert_steps=1, api_name="/edit")
    assert Path(video).is_file()


def test_app_uploads(client, tiny_clip: str, tmp_path: Path, tuned):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    big = tmp_path / "big.zip"
    big.write_bytes(b"\0" * (UPLOAD_LIMIT + 1))
    with pytest.raises(Exception, match=r"(?i)too large|exceeds|size"):
        client.predict(upload=handle_file(str(big)), api_name="/load_tuned")
    bomb = _zip(tmp_path / "bomb.zip", {"tuned.safetensors": b"\0" * 200_000_000}, compress=True)
    with pytest.raises(AppError, match="unpacks to"):
        client.predict(upload=handle_file(bomb), api_name="/load_tuned")
    status = client.predict(upload=handle_file(tuned[3]), api_name="/load_tuned")
    assert "Loaded" in status


def test_app_cheap_endpoints_are_never_refused(app, client, tiny_clip: str):
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import handle_file

    engine, url = app
    busy = client.submit(video=handle_file(tiny_clip), prompt="a busy square", **{**TUNE_ARGS, "steps": 30},
                         api_name="/tune")  # fmt: skip

    def stats(_: int) -> dict:
        return json.loads(client.predict(api_name="/stats"))

    def estimate(_: int) -> str:
        return client.predict(num_frames=4, width=32, height=32, stride=1, start_time=0, resize="crop", steps=2,
                              learning_rate=1e-4, seed=1, gradient_checkpointing=False, api_name="/estimate")  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(stats, range(20))) + list(pool.map(estimate, range(12)))
    assert all("disk" in g for g in got[:20]) and all("Estimate" in g for g in got[20:])
    assert got[0]["disk"]["budget_bytes"] == engine.settings.disk_bytes
    client.predict(api_name="/cancel")
    busy.result(timeout=300)


def test_app_heavy_queue_is_bounded_with_a_clear_message(app, tiny_clip: str, tmp_path: Path):
    from gradio_client import Client, handle_file

    _, url = app
    clients = [Client(url, verbose=False, download_files=str(tmp_path / str(i))) for i in range(4)]
    jobs = [c.submit(video=handle_file(tiny_clip), prompt=f"queued square {i}", **{**TUNE_ARGS, "steps": 20},
                     api_name="/tune") for i, c in enumerate(clients)]  # fmt: skip
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=300)[-1])
        except Exception as exc:  # the refused ones
            outcomes.append(f"refused: {exc}")
    refused = [o for o in outcomes if o.startswith("refused")]
    assert refused and all("busy" in o or "full" in o.lower() for o in refused), outcomes
    assert any("Tuned in" in o for o in outcomes)
    for c in clients:
        app[0].release(c.session_hash)


# ------------------------------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_app_shuts_down_cleanly_on_signals(tiny_sd: str, tmp_path: Path, sig: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache, tmp = tmp_path / "cache", tmp_path / "tmp"
    (cache / "runs" / "kept-run").mkdir(parents=True)
    (cache / "runs" / "kept-run" / "tuned.json").write_text("{}")
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("GRADIO_TEMP_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--model", tiny_sd, "--device", "cpu", "--cache-dir", str(cache),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    lines = []
    deadline = time.time() + 150
    while time.time() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "Running on" in line or not line:
            break
    assert any("Running on" in line for line in lines), "".join(lines)
    assert any(tmp.iterdir())  # its output and upload folders
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, "".join(lines) + out
    assert "stopped: sessions released, temporary files removed" in out
    assert list(tmp.iterdir()) == []  # outputs and Gradio uploads gone
    assert (cache / "runs" / "kept-run" / "tuned.json").is_file()  # the run store persists
