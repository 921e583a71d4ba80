"""Batch jobs on a local Ray (2 CPUs): jobs run through the CLI's workflow, a bad job fails alone, re-runs skip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
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
    assert all(abs(job["started"] - time.time()) < 600 for job in summary["jobs"])  # when each began (Unix seconds)
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
    bad.write_bytes(b"jobs: [\xff\xfe]")
    with pytest.raises(InputError, match="cannot read jobs file"):
        load_jobs(bad)


def test_a_worker_that_dies_or_cannot_start_fails_its_jobs_not_the_batch(tmp_path: Path):
    """A worker killed mid-job is replaced and the batch goes on; workers that cannot start fail the rest."""
    import ray

    from tuneavideo.batch import Job, run_batch
    from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec

    def crash_on_clips_named_crash() -> None:  # Ray's worker set-up hook: a job's worker dies (like an OOM kill)
        import os

        from tuneavideo import store, workflow

        check, write = workflow.check_video_path, store.write_json

        def checked(path: str) -> object:
            if "crash" in str(path):
                os._exit(3)
            return None if "full" in str(path) else check(path)

        def full_disk(path: object, *args: object, **kwargs: object) -> object:
            if "full" in str(path):
                raise OSError(28, "No space left on device")
            return write(path, *args, **kwargs)

        workflow.check_video_path, store.write_json = checked, full_disk

    def job(name: str, video: str) -> Job:
        return Job(name, str(tmp_path / video), "p", (), None, VideoSpec(num_frames=2, width=32, height=32),
                   TuneConfig(max_train_steps=1), InvertConfig(2), SampleConfig(2))  # fmt: skip

    (tmp_path / "full.mp4").write_bytes(b"not a video")  # it fails, and its report cannot be written
    jobs = [job("crash", "crash.mp4"), job("full", "full.mp4"), job("after", "missing.mp4")]
    env = {"worker_process_setup_hook": crash_on_clips_named_crash, "env_vars": {"PYTHONPATH": str(REPO)}}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env=env)
    try:
        summary = run_batch(jobs, tmp_path / "out", workers=1, device="cpu")
    finally:
        ray.shutdown()
    crash, full, after = summary["jobs"]
    assert crash["status"] == "failed" and crash["error"].startswith("worker died"), crash
    assert full["status"] == "failed" and "No space left on device" in full["error"], full  # raised past run()
    assert not full["error"].startswith("worker"), full  # its worker is fine and keeps working
    assert after["status"] == "failed" and "video file not found" in after["error"], after  # ran on a new worker
    assert summary["failed"] == 3 and summary["running"] == 0
    import torch

    if torch.cuda.is_available():
        return
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:  # Ray is told of a GPU that PyTorch cannot see: every worker fails in its set-up
        from tuneavideo.batch import BatchWorkers
        from tuneavideo.errors import InputError

        with pytest.raises(InputError, match="2 GPUs per job, but the Ray cluster has 1"):
            BatchWorkers(gpus_per_job=2)  # would never be scheduled: refused, not left waiting
        summary = run_batch([job("a", "a.mp4"), job("b", "b.mp4")], tmp_path / "out2")
    finally:
        ray.shutdown()
    first, second = [j["error"] for j in summary["jobs"]]  # one worker (one GPU): it failed the first job
    assert first.startswith("worker could not start") and "no CUDA GPU" in first, first
    assert second.startswith("not run: worker could not start") and "no CUDA GPU" in second, second


def test_a_worker_pool_outlives_batches(tiny_sd: str, tiny_clip: str, tmp_path: Path):
    """Workers started once, the base loaded up front, then two batches on them: neither batch loads again."""
    import ray

    from tuneavideo.batch import BatchWorkers, Job, run_batch
    from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
    from tuneavideo.errors import InputError, TuneAVideoError

    def job(name: str) -> Job:
        return Job(name, tiny_clip, "a red square", ("a blue square",), tiny_sd, VideoSpec(num_frames=2, width=32,
                   height=32), TuneConfig(max_train_steps=1), InvertConfig(2), SampleConfig(2))  # fmt: skip

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        with BatchWorkers(workers=1, device="cpu") as pool:
            with pytest.raises(TuneAVideoError, match="could not load .*no-such-model"):
                pool.preload(str(tmp_path / "no-such-model"))
            assert pool.preload(tiny_sd)[0] > 0  # the worker survived the bad load
            first = run_batch([job("a")], tmp_path / "out", pool=pool)
            second = run_batch([job("b")], tmp_path / "out", pool=pool)
            reports = first["jobs"] + second["jobs"]
            assert [r["status"] for r in reports] == ["done", "done"], reports
            assert [r["timings"]["load"] for r in reports] == [0.0, 0.0]  # loaded before either batch
            assert reports[0]["worker"] == reports[1]["worker"]  # one process ran both
            ray.kill(pool.runners[0], no_restart=True)  # lost between batches (say, killed for host memory)
            third = run_batch([job("c")], tmp_path / "out", pool=pool)["jobs"][0]
            assert third["status"] == "done" and third["worker"] != reports[0]["worker"], third  # on a new worker
            assert len(pool.runners) == 1
        assert pool.closed and not pool.runners
        with pytest.raises(InputError, match="closed"):
            run_batch([job("d")], tmp_path / "out", pool=pool)
        assert ray.is_initialized()  # the pool joined this Ray: it leaves it running
    finally:
        ray.shutdown()


def test_watch_runs_each_jobs_file_put_in_the_inbox(tiny_sd: str, tiny_clip: str, tmp_path: Path):
    """`batch --watch`: one pool (the base preloaded) serves every jobs file dropped in; SIGTERM stops it cleanly."""
    import signal

    inbox, out, log = tmp_path / "inbox", tmp_path / "out", tmp_path / "stderr.txt"
    inbox.mkdir()
    (inbox / "clip.mp4").write_bytes(Path(tiny_clip).read_bytes())

    def jobs(name: str) -> str:
        return (f"defaults: {{model: {tiny_sd}, video_spec: {{num_frames: 2, width: 32, height: 32}}, tune: "
                f"{{max_train_steps: 1}}, invert: {{num_inference_steps: 2}}, sample: {{num_inference_steps: 2}}}}\n"
                f"jobs: [{{name: {name}, video: clip.mp4, prompt: a red square}}]\n")  # fmt: skip

    def wait_for(path: Path, seconds: float) -> None:
        deadline = time.time() + seconds
        while not path.exists():
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.5)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "tuneavideo", "batch", "--watch", str(inbox), "--workers", "1", "--preload",
               tiny_sd, "-o", str(out)]  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.Popen(command, stderr=err, env=env)
    try:
        (inbox / "first.yaml").write_text(jobs("a"))
        (inbox / "broken.yaml").write_text("jobs: [1")
        wait_for(out / "first" / "summary.json", 300)
        (inbox / "second.yml").write_text(jobs("b"))
        wait_for(out / "second" / "summary.json", 120)
    finally:
        proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "error: broken.yaml" in text and "not valid YAML" in text and "stopped watching" in text, text
    reports = [json.loads((out / name / "summary.json").read_text())["jobs"][0] for name in ("first", "second")]
    assert [r["status"] for r in reports] == ["done", "done"], reports
    assert [r["timings"]["load"] for r in reports] == [0.0, 0.0]  # preloaded once, before the first file
    assert reports[0]["worker"] == reports[1]["worker"]
