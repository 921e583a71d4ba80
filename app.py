"""Tune-A-Video web app: ``python app.py [--share] [--host 0.0.0.0] [--port 7860] [--model PATH_OR_ID] ...``.

Settings come from flags over environment variables (see ``tuneavideo/settings.py``). Without a GPU
(or without network access) the app falls back to the embedded toy-world model, offline.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main(argv: list[str] | None = None) -> None:
    from tuneavideo.engine import Engine
    from tuneavideo.errors import TuneAVideoError
    from tuneavideo.settings import Settings
    from tuneavideo.ui import build_demo

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes
    try:
        settings = Settings.from_args(argv).resolve()
        print(f"[tuneavideo] {settings.model_reason}", flush=True)
        engine = Engine(settings)
    except TuneAVideoError as exc:
        sys.exit(f"[tuneavideo] cannot start: {exc}")
    demo = build_demo(engine, settings)
    demo.queue(default_concurrency_limit=1, max_size=settings.max_queue)
    try:
        demo.launch(
            server_name=settings.host,
            server_port=settings.port,
            share=settings.share,
            allowed_paths=[str(engine.output_root), settings.cache_dir],
            show_error=True,
        )
    finally:
        engine.close()


if __name__ == "__main__":
    main()
