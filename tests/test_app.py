"""The Gradio app over the tiny model, driven through ``gradio_client`` like an API user would.

One app per module, launched on a free local port with ``prevent_thread_lock=True``; each test uses
its own ``Client`` (= its own session). CPU, offline.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tuneavideo.testing import tiny_controlnet

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TUNE_ARGS = {"num_frames": 4, "width": 32, "height": 32, "stride": 1, "steps": 2, "preview_steps": 1}


@pytest.fixture(scope="module")
def app(make_engine, serve, controlnet_dir, gradio_temp_dir):
    """``(engine, url, base_state)``: the app over a fresh tiny-model engine, on a free local port."""
    from tuneavideo.ui import build_demo

    engine = make_engine(allow_model_dirs=(controlnet_dir,))  # the app loads control models from allowed dirs only
    base_state = {k: v.clone() for k, v in engine.pipe.unet.state_dict().items()}
    return engine, serve(build_demo(engine)), base_state


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("controlnet")
    tiny_controlnet().save_pretrained(folder)
    return str(folder)


def _assert_base_intact(engine, base_state) -> None:
    now = engine.pipe.unet.state_dict()
    assert all(torch.equal(now[k], v) for k, v in base_state.items())


def test_api_has_one_endpoint_per_engine_method(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/tune", "/invert", "/edit", "/generate", "/control", "/cancel", "/load_tuned", "/estimate"} <= names


def test_tune_edit_control_and_reload_through_the_api(app, client, tiny_clip, controlnet_dir):
    from gradio_client import handle_file

    engine = app[0]
    preview, download, losses, status = client.predict(
        video=handle_file(tiny_clip), prompt="a red square moves right", **TUNE_ARGS, api_name="/tune"
    )
    assert Path(preview).suffix == ".mp4" and Path(download).suffix == ".zip"
    assert "Tuned in" in status and len(losses["data"]) == 2
    models = engine.models(client.session_hash)
    assert len(models) == 1  # the State handle names it: /edit needs no model argument

    video, side, gif, status = client.predict(prompts="a blue square moves right", steps=2, invert_steps=2,
                                              api_name="/edit")  # fmt: skip
    assert Path(video).is_file() and Path(side).is_file() and Path(gif).suffix == ".gif"
    assert "tuning: cached" in status and "inversion: done" in status
    *_, status = client.predict(prompts="a green square moves right", steps=2, invert_steps=2, api_name="/edit")
    assert "tuning: cached · inversion: cached" in status
    assert "inversion: cached" in client.predict(invert_steps=2, api_name="/invert")
    video, _, _, status = client.predict(prompts="a square", steps=1, guidance_scale=1.0, api_name="/generate")
    assert Path(video).is_file() and "inversion: off" in status

    hints, video, side, status = client.predict(
        prompts="a square", hint="canny", control_type="controlnet", control_model=controlnet_dir,
        steps=1, guidance_scale=1.0, api_name="/control",
    )  # fmt: skip
    assert Path(hints).is_file() and Path(video).is_file() and Path(side).is_file()
    assert "hints: extracted" in status
    *_, status = client.predict(prompts="a square", hint="canny", control_type="controlnet",
                                control_model=controlnet_dir, steps=1, guidance_scale=1.0, api_name="/control")  # fmt: skip
    assert "hints: cached" in status

    status = client.predict(upload=handle_file(download), api_name="/load_tuned")
    assert "Loaded" in status and "without a source video" in status
    _assert_base_intact(engine, app[2])


def test_cancel_stops_a_running_tune_and_the_app_stays_usable(app, client, tiny_clip):
    from gradio_client import handle_file

    engine, _, base_state = app
    job = client.submit(video=handle_file(tiny_clip), prompt="a square to cancel", **{**TUNE_ARGS, "steps": 500},
                        api_name="/tune")  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        progress = job.status().progress_data
        if progress and (progress[0].index or 0) >= 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no tuning progress was reported")
    assert "Cancelling" in client.predict(api_name="/cancel")
    *_, status = job.result(timeout=120)
    assert "Cancelled" in status
    _assert_base_intact(engine, base_state)
    assert engine.models(client.session_hash) == []
    *_, status = client.predict(video=handle_file(tiny_clip), prompt="a square after cancel",
                                **{**TUNE_ARGS, "steps": 1}, api_name="/tune")  # fmt: skip
    assert "Tuned in" in status


def test_two_concurrent_clients_get_separate_artifacts(app, tiny_clip, tmp_path: Path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    engine, url, base_state = app
    clients = [Client(url, verbose=False, download_files=str(tmp_path / str(i))) for i in range(2)]
    jobs = [
        c.submit(video=handle_file(tiny_clip), prompt=f"square number {i}", **TUNE_ARGS, api_name="/tune")
        for i, c in enumerate(clients)
    ]
    results = [j.result(timeout=300) for j in jobs]
    keys = [[m.tune_key for m in engine.models(c.session_hash)] for c in clients]
    assert len(keys[0]) == len(keys[1]) == 1 and keys[0] != keys[1]
    assert results[0][1] != results[1][1]  # different weights files
    with pytest.raises(AppError, match="not known in this session"):
        clients[0].predict(prompts="a square", model=keys[1][0], api_name="/edit")
    _assert_base_intact(engine, base_state)
    for c in clients:
        engine.release(c.session_hash)


def test_bad_upload_is_a_helpful_gradio_error(client, tmp_path: Path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    fake = tmp_path / "holiday.mp4"
    fake.write_text("not a video at all, just text")
    with pytest.raises(AppError, match=r"holiday\.mp4 could not be decoded"):
        client.predict(video=handle_file(str(fake)), prompt="a beach", **TUNE_ARGS, api_name="/tune")
    with pytest.raises(AppError, match="describe the source video"):
        client.predict(video=handle_file(str(fake)), prompt="", **TUNE_ARGS, api_name="/tune")
    with pytest.raises(AppError, match="No tuned model"):
        client.predict(prompts="a square", api_name="/edit")


def test_cached_examples_build_lazily(app, tmp_path: Path, monkeypatch):
    """CACHE_EXAMPLES=1 turns on Gradio's lazy example cache (nothing is computed at start-up)."""
    import dataclasses

    from tuneavideo.ui import build_demo

    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples-cache"))
    engine = app[0]
    demo = build_demo(engine, dataclasses.replace(engine.settings, cache_examples=True))
    assert demo is not None and engine.models("examples") == []


def test_api_shows_model_choices_named_outputs_and_json_results(app, client, tiny_clip, tmp_path: Path):
    """The README's script: tune -> two-prompt edit -> structured result -> models -> download, end to end."""
    from gradio_client import Client, handle_file

    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/models", "/result", "/use_model", "/download_model"} <= set(info)
    model_param = next(p for p in info["/edit"]["parameters"] if p["parameter_name"] == "model")
    assert model_param["type"]["type"] == "string" and "/models" in model_param["type"]["description"]
    assert "Literal[]" not in str(client.view_api(print_info=False, return_format="str"))
    assert [r["label"] for r in info["/edit"]["returns"]][-1] == "Edit status"
    assert [r["label"] for r in info["/tune"]["returns"]][-1] == "Tune status"

    _, download, _, _ = client.predict(video=handle_file(tiny_clip), prompt="a red square moves right, scripted",
                                       **TUNE_ARGS, api_name="/tune")  # fmt: skip
    tuned = client.predict(api_name="/result")
    assert tuned["kind"] == "tune" and len(tuned["tune_key"]) >= 16 and "tune" in tuned["timings"]
    client.predict(prompts="a blue square moves right\na green square moves right", steps=2, invert_steps=2,
                   api_name="/edit")  # fmt: skip
    edited = client.predict(api_name="/result")
    assert edited["tune_key"] == tuned["tune_key"] and len(edited["videos"]) == 2
    assert all(Path(p).is_file() for p in edited["videos"]) and edited["videos"][0] != edited["videos"][1]
    assert [s["prompt"] for s in edited["scores"]] == edited["prompts"] and "sample" in edited["timings"]
    models = client.predict(api_name="/models")
    assert [m["tune_key"] for m in models] == [tuned["tune_key"]] and models[0]["source"] == "tuned"
    zipped = client.predict(key=tuned["tune_key"], api_name="/download_model")
    assert Path(zipped).suffix == ".zip" and Path(zipped).stat().st_size > 1000

    # another session (a reload, a restart) picks the stored model by its key; an upload keeps the tune's key
    other = Client(app[1], verbose=False, download_files=str(tmp_path / "other"))
    assert "Using" in other.predict(key=tuned["tune_key"], api_name="/use_model")[0]
    assert [m["tune_key"] for m in other.predict(api_name="/models")] == [tuned["tune_key"]]
    third = Client(app[1], verbose=False, download_files=str(tmp_path / "third"))
    third.predict(upload=handle_file(download), api_name="/load_tuned")
    (uploaded,) = third.predict(api_name="/models")
    assert uploaded["source"] == "uploaded" and uploaded["made_by"] == tuned["tune_key"]
    assert uploaded["tune_key"] != tuned["tune_key"]  # stored under its own content key, never the tune's
    assert tuned["tune_key"][:6] in uploaded["label"]


def test_error_note_and_stored_models(app, client):
    """A failed request raises for scripts; a restarted engine lists the stored models of its base."""
    from gradio_client.exceptions import AppError

    from tuneavideo.engine import Engine

    engine = app[0]
    with pytest.raises(AppError, match="not in this server's store"):
        client.predict(key="0" * 16, api_name="/use_model")
    stored = engine.stored_models()
    assert stored and all(m.tune_key for m in stored)
    restarted = Engine(engine.settings)
    try:
        assert {m.tune_key for m in restarted.stored_models()} == {m.tune_key for m in stored}
    finally:
        restarted.close()


def test_toy_world_scores_read_colour_and_shape():
    from tuneavideo.results import toy_world_scores, toy_world_target
    from tuneavideo.toyworld.render import ObjectSpec, SceneSpec, render_image

    assert toy_world_target("a yellow circle moving right on a blue striped background") == {
        "color": "yellow", "shape": "circle", "background": "blue striped"}  # fmt: skip
    frame, _ = render_image(SceneSpec((ObjectSpec("circle", "yellow", 0.5, 0.5, 0.4),), background="blue"), 128)
    frames = np.stack([frame, frame])
    hit = toy_world_scores(frames, "a yellow circle on a blue background")
    assert hit["hit_rate"] == 1.0 and hit["frames"][0]["color"] == "yellow"
    assert toy_world_scores(frames, "a red square on a blue background")["hit_rate"] == 0.0
