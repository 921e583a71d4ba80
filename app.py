"""Tune-A-Video web app: ``python app.py [--share] [--host 0.0.0.0] [--port 7860] [--model PATH_OR_ID] ...``.

Settings come from flags over environment variables (see ``tuneavideo/settings.py``). Without a GPU
(or without network access) the app falls back to the embedded toy-world model, offline. On a machine
with several GPUs (and Ray installed) it runs one engine worker per GPU, and as many jobs at once
(``--workers N``; see ``tuneavideo/workers.py``); with one worker it is the plain in-process engine.

Shutdown (Ctrl-C, SIGTERM from ``docker stop`` or Spaces) is graceful: the server stops, the engine
releases every session (their outputs are deleted) and the temporary folders go; the run store under
the cache dir stays, so a restart finds earlier tunes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _own_temp_dir() -> Path | None:
    """A fresh Gradio upload folder, removed at shutdown, unless the operator chose one (GRADIO_TEMP_DIR)."""
    if os.environ.get("GRADIO_TEMP_DIR"):
        return None
    folder = Path(tempfile.mkdtemp(prefix="tuneavideo-gradio-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder)  # before Gradio is imported: it reads this once
    return folder


def _stop_on(signum: int, _frame: Any) -> None:
    # Gradio's blocking launch() closes the server on KeyboardInterrupt, and main()'s finally runs after it:
    # turning SIGTERM into that path gives docker stop the same clean exit as Ctrl-C.
    logging.getLogger("tuneavideo").info("signal %s: shutting down", signum)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    temp_dir = _own_temp_dir()
    from tuneavideo.errors import TuneAVideoError
    from tuneavideo.settings import Settings
    from tuneavideo.ui import build_demo
    from tuneavideo.workers import job_slots, open_engine

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    engine = None
    try:
        try:
            settings = Settings.from_args(argv).resolve()
            print(f"[tuneavideo] {settings.model_reason}", flush=True)
            engine = open_engine(settings)  # an Engine, or an EnginePool of one Engine per GPU
        except TuneAVideoError as exc:
            sys.exit(f"[tuneavideo] cannot start: {exc}")
        demo = build_demo(engine, settings)
        # max_size bounds only model jobs (see tuneavideo.ui.HeavyBoundedQueue); cheap events always pass;
        # as many model jobs run at once as there are engine workers
        demo.queue(default_concurrency_limit=job_slots(engine), max_size=settings.max_queue)
        signal.signal(signal.SIGTERM, _stop_on)
        signal.signal(signal.SIGINT, _stop_on)
        try:
            # build_demo's launch defaults: max_file_size = the upload limit, allowed_paths = outputs + examples
            demo.launch(server_name=settings.host, server_port=settings.port, share=settings.share, show_error=True)
        except KeyboardInterrupt:
            demo.close()
    finally:
        if engine is not None:
            engine.close()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        print("[tuneavideo] stopped: sessions released, temporary files removed", flush=True)


if __name__ == "__main__":
    main()
