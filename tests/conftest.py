"""Shared fixtures: everything offline, on CPU, with tiny models built locally."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

# Without CUDA, the Triton kernels (tuneavideo.kernels) run in Triton's CPU interpreter. It is read when a
# kernel module is imported, so it is set before any test imports one.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random SD-1.x pipeline folder (2D UNet; VAE x2 so 32-px frames give 16x16 latents)."""
    from tuneavideo.testing import write_tiny_sd

    return str(write_tiny_sd(tmp_path_factory.mktemp("tiny-sd")))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 10-frame 48x64 mp4 of a red square moving right."""
    from tuneavideo.testing import write_test_video

    return str(write_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4", num_frames=10, size=(48, 64)))


@pytest.fixture()
def tiny_pipe(tiny_sd: str):
    """A fresh TuneAVideoPipeline over the tiny model (fresh per test: tuning mutates the UNet)."""
    from tuneavideo import TuneAVideoPipeline

    pipe = TuneAVideoPipeline.from_pretrained(tiny_sd)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def make_engine(tiny_sd: str, tmp_path_factory: pytest.TempPathFactory):
    """Factory of :class:`tuneavideo.engine.Engine` s over the tiny model (closed at the end of the session)."""
    from tuneavideo.engine import Engine
    from tuneavideo.settings import Settings

    engines = []

    def make(**overrides):
        values = {"model": tiny_sd, "device": "cpu", "model_kind": "tiny",
                  "cache_dir": str(tmp_path_factory.mktemp("engine-cache")), **overrides}  # fmt: skip
        engine = Engine(Settings(**values))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture(scope="module")
def serve():
    """``serve(demo) -> url``: queue and launch a Blocks app on a free local port; closed after the module."""
    import socket

    demos = []

    def launch(demo, max_size: int = 16, concurrency: int = 1) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo.queue(default_concurrency_limit=concurrency, max_size=max_size)
        _, url, _ = demo.launch(
            server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True
        )
        demos.append(demo)
        return url

    yield launch
    for demo in demos:
        demo.close()


@pytest.fixture(scope="module")
def gradio_temp_dir(tmp_path_factory: pytest.TempPathFactory):
    """A fresh Gradio upload folder (``GRADIO_TEMP_DIR``) for one module's app; the old value comes back after."""
    folder = tmp_path_factory.mktemp("gradio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture()
def client(app, tmp_path):
    """A ``gradio_client`` of the module's ``app`` fixture (``app[1]`` is its URL), downloading into ``tmp_path``."""
    from gradio_client import Client

    return Client(app[1], verbose=False, download_files=str(tmp_path))
