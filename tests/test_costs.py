"""The cost model: the GPU table is what the benchmarks measured, estimates carry a range and a source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
from tuneavideo.costs import TABLE_FILE, CostModel, gpu_table
from tuneavideo.testing import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
PAPER = (VideoSpec(24, 512, 512), TuneConfig(max_train_steps=500), SampleConfig(50, 12.5), InvertConfig(50))
SD_SIZES = (int(2.2e9), 74_000_000, 2)  # weights bytes, trained parameters, bytes per element (fp16)


def test_the_shipped_gpu_table_is_what_the_benchmarks_wrote():
    script = load_benchmark("cost_table")
    assert json.loads(TABLE_FILE.read_text()) == json.loads(json.dumps(script.build_table(script.DEFAULT_PAIRS)))
    h200 = gpu_table()["NVIDIA H200"]
    bench = json.loads((ROOT / h200["source"]).read_text())
    cell = next(c for c in bench["cells"] if c["mode"] == "plain" and c["frames"] == 24)
    a, b = h200["modes"]["plain"]["train"]
    assert a + b * 24 * 64 * 64 == pytest.approx(cell["tune_step_s"], rel=0.02)  # the line goes through it


@pytest.mark.parametrize(
    "name,close",
    [("job_h200_24f.json", True), ("job_h200_24f_cold.json", True), ("job_h200_24f_lowvram.json", True),
     ("job_h200_8f.json", False)],
)  # fmt: skip
def test_whole_jobs_on_an_h200_are_within_25_percent_of_their_estimates(name, close, monkeypatch):
    """Fresh-process jobs through the Engine (benchmarks/job_time.py): the paper's setting with the fast path's
    kernels compiled already and with an empty kernel cache (a machine's first job: the range's top end adds the
    compile), low-vram (measured before the Triton kernels), and a short 8-frame job whose kernels compiled inside
    it (1.4x the warm estimate: only inside the range)."""
    import tuneavideo.costs as costs

    monkeypatch.setattr(costs, "triton_installed", lambda: True)  # a GPU machine with Triton, as the jobs ran
    job = json.loads((ROOT / "benchmarks" / name).read_text())
    model = CostModel("cuda", "sd", 8, job["gpu"], job["speed_mode"])
    spec = VideoSpec(job["frames"], job["size"], job["size"])
    configs = (spec, TuneConfig(max_train_steps=job["tune_steps"]), SampleConfig(job["ddim_steps"], 12.5),
               InvertConfig(job["ddim_steps"]))  # fmt: skip
    est = model.estimate(*configs, num_prompts=1, preview_steps=0, weights_bytes=SD_SIZES[0],
                         trainable_params=SD_SIZES[1], element_size=SD_SIZES[2])  # fmt: skip
    measured = job["measured"]["total_seconds"]
    if close:
        assert est["total_seconds"] == pytest.approx(measured, rel=0.25)
    assert est["range"][0] <= measured <= est["range"][1]
    assert "first job adds" in est["text"]  # nothing ran here yet: it may compile the kernels
    monkeypatch.setattr(costs, "triton_installed", lambda: False)  # no Triton: nothing to compile
    plain = model.estimate(*configs, num_prompts=1, preview_steps=0, weights_bytes=SD_SIZES[0],
                           trainable_params=SD_SIZES[1], element_size=SD_SIZES[2])  # fmt: skip
    assert "first job adds" not in plain["text"] and plain["range"][1] < est["range"][1]
    assert "NVIDIA H200" in est["source"] and "Source:" in est["text"]


def test_an_unknown_gpu_is_scaled_by_its_matmul_throughput(monkeypatch):
    import tuneavideo.costs as costs

    monkeypatch.setattr(costs, "triton_installed", lambda: True)
    ref = gpu_table()["NVIDIA H200"]["matmul_fp16_tflops"]
    fast = CostModel("cuda", "sd", 8, "Some GPU", "fast", tflops=ref)
    slow = CostModel("cuda", "sd", 8, "Some GPU", "fast", tflops=ref / 4)
    args = dict(num_prompts=1, preview_steps=0, weights_bytes=SD_SIZES[0], trainable_params=SD_SIZES[1], element_size=2)
    t_fast, t_slow = fast.estimate(*PAPER, **args), slow.estimate(*PAPER, **args)
    fixed = fast.fixed["train"]  # encoding, graphs' first use: host-bound in good part, so not scaled
    assert fixed > 0 and slow.fixed == fast.fixed
    assert t_slow["tune_seconds"] - fixed == pytest.approx(4 * (t_fast["tune_seconds"] - fixed), rel=1e-6)
    compile_s = fast.row["kernel_compile_s"]  # a machine's first job may compile the kernels: the top end adds it
    assert compile_s > 0 and slow.row["kernel_compile_s"] == compile_s
    assert "scaled to Some GPU" in t_slow["source"]
    assert (t_slow["range"][1] - compile_s) / t_slow["total_seconds"] == pytest.approx(1.5, rel=1e-4)  # rounded
    unmeasured = CostModel("cuda", "sd", 8, "Some GPU", "fast").estimate(*PAPER, **args)
    assert "not in the table" in unmeasured["source"]


def test_cpu_estimates_say_where_they_come_from_and_narrow_once_calibrated():
    model = CostModel("cpu", "toy-world")
    spec = VideoSpec(8, 128, 128)
    args = (spec, TuneConfig(max_train_steps=100), SampleConfig(25, 7.5), InvertConfig(25), 1, 10, 10**8, 10**6, 4)
    before = model.estimate(*args)
    assert before["range"][0] < before["total_seconds"] < before["range"][1]
    assert "2-core CPU" in before["source"] and "rough" in before["text"]
    model.measured("train", 2 * before["tune_seconds"], 100, model.units(spec))
    model.measured("sample", 10.0, 25, model.units(spec, 2))
    after = model.estimate(*args)
    assert after["tune_seconds"] == pytest.approx(2 * before["tune_seconds"], rel=1e-3)
    assert "calibrated by 2 runs" in after["source"]
    width = (after["range"][1] - after["range"][0]) / after["total_seconds"]
    assert width == pytest.approx(0.4)  # +-20 % once both kinds of step were measured here


def test_low_vram_estimates_come_from_its_own_measured_rows():
    job = json.loads((ROOT / "benchmarks" / "job_h200_24f_lowvram.json").read_text())
    assert job["speed_mode"] == "low-vram"
    model = CostModel("cuda", "sd", 8, job["gpu"], "low-vram")
    est = model.estimate(*PAPER, num_prompts=1, preview_steps=0, weights_bytes=SD_SIZES[0],
                         trainable_params=SD_SIZES[1], element_size=SD_SIZES[2])  # fmt: skip
    assert "low-vram mode" in est["source"] and "x1.43" not in est["source"]
    assert est["total_seconds"] == pytest.approx(job["measured"]["total_seconds"], rel=0.25)
    assert est["tune_peak_bytes"] / 2**30 == pytest.approx(job["measured"]["peak_gib"], rel=0.25)  # a 12 GB card fits
    fast = CostModel("cuda", "sd", 8, job["gpu"], "fast").estimate(
        *PAPER,
        num_prompts=1,
        preview_steps=0,
        weights_bytes=SD_SIZES[0],
        trainable_params=SD_SIZES[1],
        element_size=SD_SIZES[2],
    )
    assert est["tune_peak_bytes"] < fast["tune_peak_bytes"] / 2


def test_a_phase_s_fixed_seconds_are_added_once_and_kept_out_of_the_calibration():
    model = CostModel("cuda", "sd", 8, "NVIDIA H200", "fast")
    fixed = model.fixed
    assert set(fixed) == {"train", "forward", "sample"} and all(v > 0 for v in fixed.values())
    units = model.units(VideoSpec(8, 512, 512))
    steps_only = 300 * model._step("train", units)
    assert model.seconds("train", 300, units) == pytest.approx(steps_only + fixed["train"])
    assert model.seconds("sample", 0, units) == 0.0  # no preview: nothing, not the fixed part
    model.measured("train", 2 * steps_only + fixed["train"], 300, units)  # steps twice as slow as the table
    assert model.correction["train"] == pytest.approx(2.0)
    assert model.seconds("train", 300, units) == pytest.approx(2 * steps_only + fixed["train"])
    assert CostModel("cpu", "toy-world").fixed == {}  # CPU constants have no fixed part
    # an edit of N prompts is N pipeline calls, each with its own fixed part (decode, write)
    cfg = SampleConfig(50, 12.5)
    args = (VideoSpec(8, 512, 512), TuneConfig(max_train_steps=300), cfg, InvertConfig(50))
    sizes = dict(preview_steps=0, weights_bytes=SD_SIZES[0], trainable_params=SD_SIZES[1], element_size=2)
    one, three = (model.estimate(*args, num_prompts=n, **sizes)["edit_seconds"] for n in (1, 3))
    assert three == pytest.approx(3 * one, abs=0.02)
    per_call = 50 * model._step("sample", 2 * units)
    model.measured("sample", 3 * (per_call + fixed["sample"]), 150, 2 * units, calls=3)
    assert model.correction["forward"] == pytest.approx(1.0)
