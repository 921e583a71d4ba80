"""The app on two engine workers (Ray actors on a local Ray with 2 CPUs), driven through ``gradio_client``.

One pool and one app per module (starting Ray and two workers takes a while on a small machine); each
test uses its own clients (= sessions). CPU, offline, the tiny random model; the pool's tests are skipped
without Ray. Also: one worker is the plain in-process engine, without Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = Path(__file__).resolve().parent.parent
TUNE_ARGS = {"num_frames": 4, "width": 32, "height": 32, "stride": 1, "preview_steps": 1}


@pytest.fixture(scope="module")
def pooled(tiny_sd: str, serve, gradio_temp_dir, tmp_path_factory: pytest.TempPathFactory):
    """``(pool, url)``: two CPU engine workers behind the app, whose queue runs two jobs at once."""
    ray = pytest.importorskip("ray")
    from tuneavideo.settings import Settings
    from tuneavideo.ui import build_demo
    from tuneavideo.workers import EnginePool, job_slots, open_engine

    assert not ray.is_initialized()
    settings = Settings(model=tiny_sd, device="cpu", model_kind="tiny", workers=2,
                        cache_dir=str(tmp_path_factory.mktemp("pool-cache")))  # fmt: skip
    pool = open_engine(settings)  # as app.py does: starts a local Ray (2 CPUs here: one per worker)
    try:
        assert isinstance(pool, EnginePool) and pool.size == 2 and job_slots(pool) == 2
        yield pool, serve(build_demo(pool), concurrency=job_slots(pool))  # the queue as app.py sets it
    finally:
        pool.close()
        assert not ray.is_initialized()  # the pool started Ray, so it stopped it


def _client(url: str, folder: Path):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(folder))


def _stats(client) -> dict:
    return json.loads(client.predict(api_name="/stats"))


def _jobs(stats: dict, tag: str, kind: str = "tune") -> list[tuple[int, dict]]:
    """``(worker, job)`` of every job of the session tagged ``tag`` (``pool.tag(session)``) in ``/stats``."""
    return [(w["worker"], j) for w in stats["workers"] for j in w["jobs"] if j["session"] == tag and j["kind"] == kind]


def _wait_for_progress(job, steps: int = 1) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        progress = job.status().progress_data
        if progress and (progress[0].index or 0) >= steps:
            return
        time.sleep(0.05)
    pytest.fail("no tuning progress reached the client")


def test_two_clients_tune_at_once_on_two_workers(pooled, tiny_clip: str, tmp_path: Path):
    from gradio_client import handle_file

    pool, url = pooled
    clients = [_client(url, tmp_path / str(i)) for i in range(2)]
    jobs = [
        c.submit(video=handle_file(tiny_clip), prompt=f"square number {i}", steps=24, **TUNE_ARGS, api_name="/tune")
        for i, c in enumerate(clients)
    ]
    results = [j.result(timeout=300) for j in jobs]
    assert all("Tuned in" in status for *_, status in results)
    assert results[0][1] != results[1][1]  # each its own weights

    stats = _stats(clients[0])
    assert [w["worker"] for w in stats["workers"]] == [0, 1] and all(w["alive"] for w in stats["workers"])
    assert len({w["pid"] for w in stats["workers"]}) == 2 and stats["total"]["workers"] == 2
    assert not any(c.session_hash in json.dumps(stats) for c in clients)  # a session id is a key: not shown
    (w0, job0), (w1, job1) = (_jobs(stats, pool.tag(c.session_hash))[0] for c in clients)
    assert {w0, w1} == {0, 1}  # one client per worker ...
    assert max(job0["started"], job1["started"]) < min(job0["ended"], job1["ended"])  # ... at the same time
    assert job0["status"] == job1["status"] == "done"
    assert [pool.where(c.session_hash) for c in clients] == [w0, w1]
    from tuneavideo.workers import held_folder

    held = held_folder(pool.store.root, pool._salt)  # what each worker's disk budget must not delete for the other
    for worker, c in zip((w0, w1), clients):
        key = pool.models(c.session_hash)[0].tune_key
        assert key in json.loads((held / f"worker-{worker}.json").read_text())
    assert stats["total"]["stored_runs"] >= 2 and stats["total"]["sessions"] >= 2
    # the session's model is on its worker: an edit there reuses the tuning
    *_, status = clients[0].predict(prompts="a blue square", steps=1, invert_steps=1, api_name="/edit")
    assert "tuning: cached" in status
    for c in clients:
        pool.release(c.session_hash)
    assert pool.where(clients[0].session_hash) is None


def test_cancel_goes_to_the_sessions_worker(pooled, tiny_clip: str, tmp_path: Path):
    from gradio_client import handle_file

    pool, url = pooled
    busy, other = _client(url, tmp_path / "busy"), _client(url, tmp_path / "other")
    job = busy.submit(video=handle_file(tiny_clip), prompt="a square to cancel", steps=500, **TUNE_ARGS,
                      api_name="/tune")  # fmt: skip
    _wait_for_progress(job)  # the worker's progress events reach the client's progress bar
    *_, status = other.predict(video=handle_file(tiny_clip), prompt="a square meanwhile", steps=1, **TUNE_ARGS,
                               api_name="/tune")  # fmt: skip
    assert "Tuned in" in status and pool.where(other.session_hash) != pool.where(busy.session_hash)
    assert "Nothing is running" in other.predict(api_name="/cancel")  # its own worker: the other job goes on
    before = job.status().progress_data[0].index
    _wait_for_progress(job, before + 1)
    assert "Cancelling" in busy.predict(api_name="/cancel")
    assert pool.wait_idle(busy.session_hash, timeout=120)  # the app's "Tuning stopped." waits on this worker
    *_, status = job.result(timeout=120)
    assert "Cancelled" in status
    (worker, entry), *_ = _jobs(_stats(busy), pool.tag(busy.session_hash))
    assert worker == pool.where(busy.session_hash) and entry["status"] == "cancelled"
    assert pool.models(busy.session_hash) == []  # nothing was kept from the cancelled tune


def test_worker_errors_read_as_in_process(pooled, make_engine, tiny_clip: str, tmp_path: Path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from tuneavideo.config import VideoSpec
    from tuneavideo.errors import InputError, VideoError

    pool, url = pooled
    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video at all, just text")
    client = _client(url, tmp_path / "c")
    with pytest.raises(AppError, match=r"holiday\.mp4 could not be decoded"):
        client.predict(video=handle_file(str(fake)), prompt="a beach", steps=1, **TUNE_ARGS, api_name="/tune")
    with pytest.raises(AppError, match="describe the source video"):
        client.predict(video=handle_file(tiny_clip), prompt="", steps=1, **TUNE_ARGS, api_name="/tune")
    with pytest.raises(AppError, match="No tuned model"):
        client.predict(prompts="a square", api_name="/edit")

    engine = make_engine()  # the same calls in process: the same classes and messages
    spec = VideoSpec(num_frames=4, width=32, height=32)
    for call in [
        lambda e: e.tune("errors", str(fake), "a beach", spec),
        lambda e: e.tune("errors", tiny_clip, "a square", VideoSpec(num_frames=99, width=32, height=32)),
        lambda e: e.edit("errors", "0" * 16, "a square"),
        lambda e: e.adopt("errors", "0" * 16),
    ]:
        errors = []
        for where in (engine, pool):
            with pytest.raises(InputError) as caught:
                call(where)
            errors.append(caught.value)
        assert type(errors[0]) is type(errors[1]) and str(errors[0]) == str(errors[1])
    assert isinstance(errors[0], InputError) and "Remote" in type(errors[1].__cause__).__name__
    with pytest.raises(VideoError):
        pool.tune("errors", str(fake), "a beach", spec)


def test_a_progress_callback_that_raises_stops_the_job_on_its_worker(pooled, tiny_clip: str):
    from tuneavideo.config import TuneConfig, VideoSpec
    from tuneavideo.errors import Cancelled

    pool, _ = pooled
    seen = []

    def stop_at_two(event) -> None:
        seen.append(event.step)
        if event.step >= 2:
            raise Cancelled("enough")

    with pytest.raises(Cancelled, match="^enough$"):  # the callback's own error, as in process
        pool.tune("cb", tiny_clip, "a square, stopped by its callback", VideoSpec(num_frames=4, width=32, height=32),
                  TuneConfig(max_train_steps=500), progress=stop_at_two)  # fmt: skip
    assert seen[:2] == [1, 2] and pool.models("cb") == []
    (_, entry), *_ = _jobs(pool.stats(), pool.tag("cb"))
    assert entry["status"] == "cancelled"
    pool.release("cb")


def test_a_session_moves_from_a_busy_worker_to_an_idle_one(pooled, tiny_clip: str):
    """Sticky sessions, but one waiting behind another session's job moves to an idle worker (its models
    come along from the shared run store), without Gradio: the pool's Python API from threads."""
    from tuneavideo.config import InvertConfig, SampleConfig, TuneConfig, VideoSpec
    from tuneavideo.errors import Cancelled

    pool, _ = pooled
    spec = VideoSpec(num_frames=4, width=32, height=32)
    key = pool.tune("m-source", tiny_clip, "a square to move", spec, TuneConfig(max_train_steps=1)).tune_key
    pool.release("m-source")
    outcome: dict[str, object] = {}

    def long_tune(session: str) -> threading.Thread:
        events: list = []

        def run() -> None:
            try:
                pool.tune(session, tiny_clip, f"long {session}", spec, TuneConfig(max_train_steps=500),
                          progress=events.append)  # fmt: skip
            except Cancelled as exc:
                outcome[session] = exc

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + 120
        while not events and time.time() < deadline:
            time.sleep(0.05)
        assert events, "no progress from the worker"
        return thread

    first = long_tune("m-a")
    pool.adopt("m-c", key)  # a new session goes to the least busy worker
    assert pool.where("m-c") != pool.where("m-a")
    second = long_tune("m-b")  # also to the idle one: now both are busy
    assert pool.where("m-b") == pool.where("m-c")
    pool.cancel("m-a")
    first.join(60)
    assert isinstance(outcome.get("m-a"), Cancelled)
    result = pool.edit("m-c", key, "a square, moved", SampleConfig(num_inference_steps=1, seed=1),
                       invert_config=InvertConfig(num_inference_steps=1))  # fmt: skip
    assert Path(result.video_path).is_file()
    assert pool.where("m-c") == pool.where("m-a") != pool.where("m-b")  # it went where m-a's job had stopped
    assert [m.tune_key for m in pool.models("m-c")] == [key]
    pool.cancel("m-b")
    second.join(60)
    for session in ("m-a", "m-b", "m-c"):
        pool.release(session)


def test_a_dead_worker_is_a_clear_error_its_sessions_go_on_elsewhere_and_it_is_replaced(pooled, tiny_clip: str):
    """(Last of the pool's tests: it kills a worker.)"""
    import ray  # the pool's fixture skips without it

    from tuneavideo.config import TuneConfig, VideoSpec
    from tuneavideo.workers import WorkerLost

    pool, _ = pooled
    assert isinstance(pool._each("stats", timeout=1e-6), dict)  # workers too slow to answer are left out, not raised
    spec, config = VideoSpec(num_frames=4, width=32, height=32), TuneConfig(max_train_steps=1)
    pool.tune("d-a", tiny_clip, "a square before", spec, config)
    dead = pool.where("d-a")
    old = pool._actors[dead]
    ray.kill(old)
    deadline = time.time() + 60  # the kill lands asynchronously: a call sent at once may still be answered
    while time.time() < deadline:
        try:
            ray.get(pool._actors[dead].ready.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            break
        except ray.exceptions.GetTimeoutError:  # a loaded machine: ask again
            continue
        time.sleep(0.1)
    with pytest.raises(WorkerLost, match="stopped"):
        pool.models("d-a")
    assert pool.where("d-a") is None
    result = pool.tune("d-a", tiny_clip, "a square after", spec, config)
    assert pool.where("d-a") == 1 - dead and result.tune_key
    deadline = time.time() + 300  # a fresh worker loads its engine in the background, then rejoins
    while not (stats := pool.stats())["workers"][dead]["alive"] and time.time() < deadline:
        assert stats["workers"][dead]["restarting"] and stats["total"]["workers"] == 1
        time.sleep(0.5)
    assert [w["alive"] for w in stats["workers"]] == [True, True] and stats["workers"][dead]["restarts"] == 1
    pool.tune("d-b", tiny_clip, "a square on the new worker", spec, config)
    assert pool.where("d-b") == dead  # the least busy: it takes new sessions
    with pytest.raises(WorkerLost), pool._lost(dead, old):  # a late error from the replaced worker's last call
        raise ray.exceptions.RayActorError()
    assert pool.where("d-b") == dead and pool.stats()["workers"][dead]["alive"]  # fails that call only

    ray.kill(pool._actors[dead])  # the replacement dies too, and the pool closes while its successor loads
    deadline = time.time() + 60
    while not pool.stats()["workers"][dead].get("restarting") and time.time() < deadline:
        time.sleep(0.1)
    assert pool.stats()["workers"][dead]["restarts"] == 2
    threads = list(pool._restart_threads)
    pool.close()  # stops the loading worker first, so Ray is not shut down under its thread's wait
    assert threads and not any(t.is_alive() for t in threads) and not ray.is_initialized()


def test_one_worker_is_the_plain_engine_without_ray(tiny_sd: str, tmp_path: Path):
    script = f"""
import sys
from tuneavideo.engine import Engine
from tuneavideo.settings import Settings
from tuneavideo.ui import build_demo
from tuneavideo.workers import job_slots, open_engine

engine = open_engine(Settings.from_args(["--model", {tiny_sd!r}, "--device", "cpu", "--cache-dir", {str(tmp_path)!r}]))
build_demo(engine)
assert type(engine) is Engine and job_slots(engine) == 1, engine
assert "ray" not in sys.modules, "ray was imported"
engine.close()
print("plain engine, no ray")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "GRADIO_TEMP_DIR": str(tmp_path / "g")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "plain engine, no ray" in proc.stdout, proc.stdout + proc.stderr


def test_worker_count_and_settings(monkeypatch: pytest.MonkeyPatch):
    from tuneavideo import workers
    from tuneavideo.errors import InputError, MissingDependencyError
    from tuneavideo.settings import Settings

    monkeypatch.setattr(workers, "gpu_count", lambda: 2)
    monkeypatch.setattr(workers, "ray_installed", lambda: True)
    assert workers.worker_count(Settings(device="cuda")) == 2  # auto: one per GPU
    assert workers.worker_count(Settings(device="cuda:1")) == 1  # one chosen GPU
    assert workers.worker_count(Settings(device="cpu")) == 1
    assert workers.worker_count(Settings(device="cpu", workers=2)) == 2
    assert workers.worker_count(Settings(device="cuda", ray_address="auto")) == 0  # the cluster's GPUs
    monkeypatch.setattr(workers, "ray_installed", lambda: False)
    assert workers.worker_count(Settings(device="cuda")) == 1
    monkeypatch.setattr(workers, "ray_installed", lambda: True)
    monkeypatch.setattr(workers, "gpu_count", lambda: 1)
    assert workers.worker_count(Settings(device="cuda")) == 1

    assert Settings.from_args(["--workers", "3", "--ray-address", "10.0.0.1:6379"], env={}).workers == 3
    assert Settings.from_args([], env={"TUNEAVIDEO_WORKERS": "2"}).workers == 2
    assert Settings.from_args(["--workers", "auto"], env={"TUNEAVIDEO_WORKERS": "2"}).workers == 0
    assert Settings.from_args([], env={"TUNEAVIDEO_RAY_ADDRESS": "auto"}).ray_address == "auto"
    for bad in ("-1", "two"):
        with pytest.raises(InputError, match="workers must be"):
            Settings.from_args(["--workers", bad], env={})

    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(MissingDependencyError, match=r"several engine workers.*pip install"):
        workers.EnginePool(Settings(device="cpu", workers=2))


def test_the_disk_budget_keeps_runs_other_workers_hold(tmp_path: Path):
    from tuneavideo.disk import DiskBudget
    from tuneavideo.sessions import Sessions
    from tuneavideo.store import DELTA_FILE, RECORD_FILE, RunStore

    store = RunStore(tmp_path / "runs")
    for key in ("held-there", "free"):
        for name in (DELTA_FILE, RECORD_FILE):
            (store.path(key) / name).parent.mkdir(exist_ok=True)
            (store.path(key) / name).write_text("x" * 100)
        os.utime(store.path(key), (time.time() - 7200,) * 2)  # old enough to go

    class NoCache:
        def keys(self) -> list[str]:
            return []

    disk = DiskBudget(lambda: 1, store, Sessions(tmp_path / "out", lambda sid: 0), NoCache())
    disk.held_elsewhere = lambda: {"held-there"}
    disk.enforce()
    assert store.keys() == ["held-there"]
