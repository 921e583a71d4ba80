"""One workflow under the CLI and the Engine: same inputs -> bit-identical weights and frames; no global RNG;
a restarted app finds its earlier tunes; defaults come from the base profile."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec

REPO = Path(__file__).resolve().parent.parent
SPEC = VideoSpec(num_frames=4, width=32, height=32, stride=2)
TUNE = TuneConfig(max_train_steps=2, learning_rate=1e-3, seed=11)
INVERT = InvertConfig(num_inference_steps=2)
SAMPLE = SampleConfig(num_inference_steps=2, guidance_scale=7.5, seed=5)


def cli(
    *args: str, cwd: Path | None = None, check: bool = True, threads: int | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "tuneavideo", "-q", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture()
def one_thread():
    """PyTorch's multi-threaded CPU backward sums in a varying order (runs differ by ~1e-6, whatever the entry
    point), so bit-for-bit comparisons run on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cli_and_engine_give_bit_identical_weights_and_frames(make_engine, tiny_sd, tiny_clip, tmp_path, one_thread):
    from tuneavideo.store import RunFolder
    from tuneavideo.video import write_frame_grid

    run = tmp_path / "run"
    cli("tune", "--model", tiny_sd, "--video", tiny_clip, "--prompt", "a red square moving right",
        "--frames", "4", "--width", "32", "--height", "32", "--stride", "2", "--max-train-steps", "2",
        "--lr", "1e-3", "--seed", "11", "--invert-steps", "2", "-o", str(run), threads=1)  # fmt: skip
    cli("edit", "--tuned", str(run), "--prompt", "a blue square", "--steps", "2", "--guidance", "7.5",
        "--seed", "5", "--invert-steps", "2", "--grid", "-o", str(tmp_path / "edit.mp4"), threads=1)  # fmt: skip

    engine = make_engine()
    tuned = engine.tune("cmp", tiny_clip, "a red square moving right", SPEC, TUNE, preview_steps=0)
    edit = engine.edit("cmp", tuned.tune_key, "a blue square", SAMPLE, invert_config=INVERT)

    cli_delta = RunFolder(run).load_delta().state_dict
    engine_delta = engine.cache.peek(tuned.tune_key).delta.state_dict
    assert cli_delta.keys() == engine_delta.keys()
    assert all(torch.equal(cli_delta[k], engine_delta[k]) for k in cli_delta)
    import imageio.v3 as iio

    cli_frames = iio.imread(tmp_path / "edit.png")  # the PNG grid holds the exact pixels
    engine_frames = iio.imread(write_frame_grid(edit.frames[0], tmp_path / "engine.png"))
    assert cli_frames.shape[:2] == engine_frames.shape[:2], (cli_frames.shape, engine_frames.shape)
    diff = np.abs(cli_frames.astype(int) - engine_frames.astype(int))
    assert diff.max() == 0, (diff.max(), diff.mean())
    engine.release("cmp")


def test_tuning_leaves_the_global_rng_alone_and_seeds_stay_random(make_engine, tiny_clip):
    from tuneavideo.workflow import fresh_seed

    engine = make_engine()
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    engine.tune("rng", tiny_clip, "a red square", SPEC, TuneConfig(max_train_steps=1, seed=3), preview_steps=0)
    assert torch.equal(torch.get_rng_state(), state)
    seeds = {fresh_seed() for _ in range(4)}
    engine.tune("rng", tiny_clip, "a red square", SPEC, TuneConfig(max_train_steps=1, seed=3), preview_steps=0)
    assert len(seeds | {fresh_seed()}) == 5  # "no seed" draws from the OS, not from a reseeded global RNG
    edit = engine.generate("rng", engine.models("rng")[-1].tune_key, "x", SampleConfig(1, 1.0, seed=None))
    assert isinstance(edit.seed, int)
    engine.release("rng")


def test_a_restarted_engine_reuses_an_earlier_tune(make_engine, tiny_clip, tmp_path: Path):
    cache = tmp_path / "cache"
    first = make_engine(cache_dir=str(cache))
    made = first.tune("a", tiny_clip, "a red square", SPEC, TUNE, preview_steps=0)
    assert not made.cache_hit and "tune" in made.timings
    weights = {k: v.clone() for k, v in first.cache.peek(made.tune_key).delta.state_dict.items()}
    first.close()
    assert (cache / "runs" / made.tune_key / "tuned.safetensors").is_file()  # kept by close()

    second = make_engine(cache_dir=str(cache))  # "restart": a new engine over the same cache dir
    again = second.tune("b", tiny_clip, "a red square", SPEC, TUNE, preview_steps=0)
    assert again.cache_hit and again.tune_key == made.tune_key and "tune" not in again.timings
    loaded = second.cache.peek(again.tune_key).delta.state_dict
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)
    assert second.stats()["stored_runs"] >= 1
    second.release("b")


def test_cli_tune_with_no_flags_uses_the_toy_profile_from_any_directory(tmp_path: Path):
    """`tuneavideo tune --video X --prompt ... -o out` offline on a CPU: the toy-world base and its defaults."""
    clip = REPO / "tuneavideo" / "assets" / "toy-red-circle-right.mp4"
    out = tmp_path / "out"
    proc = cli("tune", "--video", str(clip), "--prompt", "a red circle moving right on a blue background",
               "--max-train-steps", "2", "--no-invert", "-o", str(out), cwd=tmp_path)  # fmt: skip
    import json

    record = json.loads((out / "tuned.json").read_text())
    assert Path(record["base_model"]).name == "toy-world"
    assert (record["num_frames"], record["height"], record["width"]) == (8, 128, 128)
    assert record["video_spec"]["stride"] == 2 and record["tune_config"]["learning_rate"] == 1e-4
    assert proc.stdout.strip().splitlines()[0].startswith("tuned ")
    listed = cli("presets", cwd=tmp_path).stdout
    assert "toy-red-circle-right" in listed and "man-skiing" in listed


def test_an_unreachable_hub_id_fails_fast_with_the_fix(monkeypatch):
    import time

    from tuneavideo.errors import ModelLoadError
    from tuneavideo.settings import load_base

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_base("nobody-here/no-such-model", "cpu", "fp32")
    assert time.perf_counter() - started < 20
    assert "toy-world" in str(info.value) and "download" in str(info.value)


def test_going_offline_reaches_an_already_imported_hub(monkeypatch):
    import huggingface_hub.constants as constants

    from tuneavideo import hub

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=2.0: False)
    assert hub.decide_offline("owner/model") is True
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub.decide_offline(str(REPO)) is True  # offline stays offline


def test_profiles_hold_each_base_s_defaults_and_control_models():
    from tuneavideo.errors import InputError
    from tuneavideo.hints import HintConfig
    from tuneavideo.profiles import TOY_WORLD_DIR, detect_kind, expand_model, resolve_profile

    assert expand_model("toy-world") == str(TOY_WORLD_DIR)
    assert detect_kind("toy-world") == "toy-world" and detect_kind("owner/sd-model") == "sd"
    toy = resolve_profile("toy-world", "cpu")
    assert (toy.video.num_frames, toy.video.width, toy.tune.max_train_steps) == (8, 128, 100)
    assert toy.control_for("canny")[0] == "controlnet" and toy.control_for("depth")[0] == "t2i_adapter"
    with pytest.raises(InputError, match="has no"):
        toy.control_for("pose")
    assert toy.hint_config(HintConfig("depth")).depth_backend == "toyworld"
    sd_gpu, sd_cpu = resolve_profile("owner/sd", "cuda"), resolve_profile("owner/sd", "cpu")
    assert sd_gpu.sample.num_inference_steps == 50 and sd_gpu.sample.guidance_scale == 12.5
    assert sd_cpu.tune.max_train_steps < sd_gpu.tune.max_train_steps
    assert sd_gpu.control_for("pose") == ("controlnet", "lllyasviel/control_v11p_sd15_openpose")
    assert sd_gpu.hint_config(HintConfig("depth")).depth_backend == "transformers"


def _runtime_nodes(tree: Any) -> Iterator[Any]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for type checkers only)."""
    import ast

    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def test_no_import_cycles_in_the_package():
    """Every ``from .x import`` (at module level or inside functions) points one way."""
    import ast

    root = REPO / "tuneavideo"
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = graph.setdefault(name, set())
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    deps.add(f"{base}.{node.module}")
                else:  # from . import a, b
                    deps.update(f"{base}.{alias.name}" for alias in node.names)
    graph = {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph[node]):
            if seen.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(dep) :], dep]))
            if dep not in seen:
                visit(dep, [*stack, dep])
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module, [module])
