"""Batch jobs on a local Ray (2 CPUs): jobs run through the CLI's workflow, a bad job fails alone, re-runs skip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def jobs_file(tiny_sd: str, tiny_clip: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch")
    (folder / "clip.mp4").write_bytes(Path(tiny_clip).read_bytes())
    (folder / "jobs.yaml").write_text(
        f"""
defaults:
  model: {tiny_sd}
  video_spec: {{num_frames: 4, width: 32, height: 32}}
  tune: {{max_train_steps: 2}}
  invert: {{num_inference_steps: 2}}
  sample: {{num_inference_steps: 2, guidance_scale: 7.5, seed: 3}}
jobs:
  - name: square
    video: clip.mp4
    prompt: a red square moving right
    edits: [a blue square moving right, a blue square moving right!]
  - name: no-such-clip
    video: missing.mp4
    prompt: nothing here
  - name: bad-key
    video: clip.mp4
    prompt: x
    tune: {{learning_rat: 1}}
"""
    )
    return folder / "jobs.yaml"


def test_a_batch_runs_every_job_and_reports_failures(jobs_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "tuneavideo", "batch", str(jobs_file), "--workers", "2", "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "error: job no-such-clip: video file not found: missing.mp4" in proc.stderr
    assert "learning_rat" in proc.stderr and "[batch] done 1/3" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {job["name"]: job["status"] for job in summary["jobs"]}
    assert status == {"square": "done", "no-such-clip": "failed", "bad-key": "failed"}
    square = summary["jobs"][0]
    assert set(square["timings"]) == {"read", "load", "tune", "invert", "edits"}  # where the job's time went
    assert sum(square["timings"].values()) <= square["seconds"] + 0.05
    workers = {job["name"]: job.get("worker", "") for job in summary["jobs"]}
    assert all(re.fullmatch(r".+:\d+", workers[name]) for name in ("square", "no-such-clip")), workers
    edits = sorted(Path(p).name for p in square["outputs"] if p.endswith(".mp4"))
    assert edits == ["a-blue-square-moving-right-2.mp4", "a-blue-square-moving-right.mp4"]  # distinct names
    from tuneavideo.store import RunFolder

    run = RunFolder.open(square["folder"])
    assert run.record["batch_job"] == "square" and run.load_delta().state_dict

    from tuneavideo.batch import load_jobs, run_batch

    again = run_batch([j for j in load_jobs(jobs_file) if j.name == "square"], out, workers=1)
    assert again["skipped"] == 1 and again["done"] == 0  # complete by content key: not run again


def test_jobs_files_are_checked(tmp_path: Path):
    from tuneavideo.batch import load_jobs
    from tuneavideo.errors import InputError

    bad = tmp_path / "jobs.yaml"
    for text, message in [("jobs: []", "non-empty 'jobs'"), ("- {name: a, video: v.mp4, prompt: p}\n"
                          "- {name: a, video: v.mp4, prompt: p}", "distinct"), ("jobs: [1", "not valid YAML")]:  # fmt: skip
        bad.write_text(text)
        with pytest.raises(InputError, match=message):
            load_jobs(bad)
    with pytest.raises(InputError, match="not found"):
        load_jobs(tmp_path / "nope.yaml")
