"""The Gradio app: ``build_demo(engine, settings) -> gr.Blocks`` with Tune / Edit / Control / About tabs.

Every model-running event has an ``api_name`` matching the engine method (``/tune``, ``/invert``,
``/edit``, ``/generate``, ``/control``, plus ``/load_tuned``, ``/cancel``, ``/estimate``) and shares
one ``concurrency_id``; ``gr.State`` holds only a small handle (the session's latest tuned-model key);
tensors stay in the engine's cache, and ``demo.unload`` releases the session's references.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import route_utils
from gradio.queueing import Queue

from .examples import Example, load_examples
from .models_tab import browser_secret, build_models_tab
from .tab_control import HELP as CONTROL_HELP
from .tab_control import build_control_tab
from .tab_edit import HELP as EDIT_HELP
from .tab_edit import build_edit_tab
from .tab_tune import HELP as TUNE_HELP
from .tab_tune import build_tune_tab, estimate_text
from .widgets import HEAVY, engine_errors, forget_errors, session_id

logger = logging.getLogger(__name__)

__all__ = ["HeavyBoundedQueue", "banner_text", "base_card", "build_demo", "example_dir", "help_text", "served_paths"]

EXAMPLES_SESSION = "examples"  # cached examples' artifacts are held by this never-released session


def banner_text(engine) -> str:
    info = engine.describe()
    workers = f", {info['workers']} engine workers" if info.get("workers", 1) > 1 else ""
    return (
        f"### Tune-A-Video: one-shot video tuning and editing\n"
        f"**Model:** `{info['model']}` ({info['kind']}, {info['unet_parameters'] / 1e6:.1f} M UNet parameters, "
        f"native {info['native_size']} px) on **{info['device']}** ({info['dtype']}{workers}). {info['reason']}"
    )


def base_card(engine) -> str:
    """Plain words about the loaded base: what it can draw, its native size, example prompts that work."""
    prof, info = engine.profile, engine.describe()
    lines = [f"**What this base can draw.** {prof.about}", f"**Native size:** {info['native_size']} px."]
    prompts = [prof.source_prompt, *prof.example_prompts]
    if prof.example_prompts:
        lines.append("**Prompts that work:** " + "; ".join(f"“{p}”" for p in prompts) + ".")
    return "  \n".join(lines)


def help_text(engine) -> str:
    def table(title: str, rows: dict[str, str]) -> str:
        lines = [f"#### {title}", "| knob | what it does |", "|---|---|"]
        lines += [f"| {name.replace('_', ' ')} | {text} |" for name, text in rows.items()]
        return "\n".join(lines)

    est = engine.estimate()
    return "\n\n".join(
        [
            "### How it works\n"
            "1. **Tune**: the base text-to-image model is fine-tuned for a few hundred steps on your one clip "
            "(only the attention queries and the new temporal attention layers change; the result is a small "
            "set of weights you can download).\n"
            "2. **Edit**: the clip is DDIM-inverted with the tuned model (cached), then sampled again with your "
            "new prompt, so motion and layout stay while the words you changed take effect. Re-edits reuse "
            "both the tuning and the inversion.\n"
            "3. **Control**: per-frame pose / depth / edge hints steer a ControlNet or T2I-Adapter on top.",
            f"### Estimate for the default settings on this device\n{est['text']}",
            table("Tune", TUNE_HELP),
            table("Edit", EDIT_HELP),
            table("Control", CONTROL_HELP),
            "Outputs of a session are deleted when its browser tab closes; tuned models stay in the server's run "
            "store (within its disk budget), so the same clip + prompt + settings is tuned only once, and the "
            "**My models** tab lists the models you made in this browser, also after a reload or a restart.",
        ]
    )


def _example_rows(examples: list[Example]) -> list[list[Any]]:
    return [
        [
            ex.video,
            ex.prompt,
            ex.video_spec.num_frames,
            ex.video_spec.width,
            ex.video_spec.height,
            ex.video_spec.stride,
            ex.video_spec.start_time,
            ex.tune.max_train_steps,
            ex.tune.learning_rate,
            ex.tune.seed,
            "\n".join(ex.edit_prompts),
        ]
        for ex in examples
    ]


def example_dir(engine, settings=None) -> Path:
    """Where the built-in example clip is written (the cache dir, else the engine's output dir)."""
    settings = settings or engine.settings
    return Path(settings.cache_dir or engine.output_root) / "examples"


# Over 60 lines: Gradio layout code in page order; the event wiring follows the widgets it connects.
def build_demo(engine, settings=None) -> gr.Blocks:
    """The whole app over one :class:`~tuneavideo.engine.Engine` (``settings`` default: the engine's)."""
    settings = settings or engine.settings
    examples = load_examples(engine, fallback_dir=example_dir(engine, settings))

    # delete_cache: Gradio's copies of uploads and outputs older than a day go, checked hourly (a public app
    # would otherwise fill its disk); the engine deletes a session's own outputs when its tab closes.
    with gr.Blocks(title="Tune-A-Video", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(banner_text(engine), elem_id="banner")
        with gr.Accordion("About this base model", open=True, elem_id="base-card"):
            gr.Markdown(base_card(engine))
        handle = gr.State({})
        last = gr.State({})  # the latest job's JSON result (``/result``)
        # the keys of the models made in this browser: kept in its localStorage, across reloads and restarts
        my_keys = gr.BrowserState([], storage_key="tuneavideo-my-models", secret=browser_secret(engine))
        with gr.Tabs():
            tune_tab_block = gr.Tab("Tune", id="tune")
            with tune_tab_block:
                tune = build_tune_tab(engine, handle, last)
            edit_tab_block = gr.Tab("Edit", id="edit")
            with edit_tab_block:
                edit = build_edit_tab(engine, handle, last)
            control_tab_block = gr.Tab("Control", id="control")
            with control_tab_block:
                control = build_control_tab(engine, handle, last)
            with gr.Tab("My models", id="models"):
                mine = build_models_tab(engine, handle, my_keys, [edit.model, control.model])
            with gr.Tab("About", id="about"):
                gr.Markdown(help_text(engine))
                stats_box = gr.Code(label="Cache statistics", language="json")
                stats_button = gr.Button("Refresh statistics", size="sm")

        def current_models(handle_value: dict | None, request: gr.Request) -> dict:
            """The session's models (newest first), the latest one selected: a tab's picker is filled when it
            is shown, since an update sent to a picker on a hidden tab may not reach it."""
            models = list(reversed(engine.models(session_id(request))))
            choices = [(m.label, m.tune_key) for m in models]
            key = (handle_value or {}).get("tune_key")
            value = key if key in {k for _, k in choices} else (choices[0][1] if choices else None)
            return gr.update(choices=choices, value=value)

        for block, picker in ((edit_tab_block, edit.model), (control_tab_block, control.model)):
            block.select(current_models, [handle], picker, queue=False, api_visibility="private")

        if examples:
            with tune_tab_block:
                inputs = [tune.video, tune.prompt, tune.num_frames, tune.width, tune.height, tune.stride,
                          tune.start_time, tune.steps, tune.learning_rate, tune.seed, edit.prompts]  # fmt: skip

                def run_example(
                    video,
                    prompt,
                    num_frames,
                    width,
                    height,
                    stride,
                    start_time,
                    steps,
                    learning_rate,
                    seed,
                    edit_prompts,
                ):
                    """Tune an example (cached runs are held by a session that is never released)."""
                    from .tab_tune import _configs

                    with engine_errors("tuning the example"):
                        spec, config = _configs(engine, num_frames, width, height, stride, start_time, "crop",
                                                steps, learning_rate, seed, tune.gradient_checkpointing.value)  # fmt: skip
                        result = engine.tune(EXAMPLES_SESSION, video, prompt, spec, config)
                    return result.preview_path, result.status

                gr.Examples(
                    examples=_example_rows(examples),
                    inputs=inputs,
                    outputs=[tune.preview, tune.status] if settings.cache_examples else None,
                    fn=run_example if settings.cache_examples else None,
                    cache_examples=settings.cache_examples,
                    cache_mode="lazy" if settings.cache_examples else None,
                    example_labels=[ex.name for ex in examples],
                    label="Examples (click one, then press Tune)",
                )

        for event in (tune.tune_event, edit.load_event):
            event.success(mine.remember, [handle, my_keys], mine.outputs, queue=False, api_visibility="private",
                          show_progress="hidden")  # fmt: skip
        demo.load(mine.restore, [my_keys, handle], mine.outputs, queue=False, api_visibility="private")

        def result(last: dict | None) -> dict:
            """The latest job's structured result: keys, file paths, timings, scores (JSON)."""
            return last or {}

        with gr.Row(visible=False):
            result_json, result_button = gr.JSON(label="Result"), gr.Button("result")
        result_button.click(result, [last], result_json, api_name="result", queue=False)

        def stats() -> str:
            """Engine cache statistics (hits, misses, bytes, entries); with several engine workers, per worker
            (device, recent jobs with start and end times) and their total."""
            return json.dumps(engine.stats(), indent=2)

        stats_button.click(stats, None, stats_box, api_name="stats", queue=False)
        demo.load(stats, None, stats_box, queue=False, api_visibility="private")
        demo.load(
            lambda *knobs: estimate_text(engine, *knobs), tune.knobs, tune.estimate, queue=False,
            api_visibility="private",
        )  # fmt: skip

        def release(request: gr.Request) -> None:
            engine.release(session_id(request))
            forget_errors(request)

        demo.unload(release)
    demo.heavy_concurrency_id = HEAVY  # for tests and app.py
    engine.disk.upload_dir = Path(gr.utils.get_upload_folder()).resolve()  # counted in the disk budget
    _harden(demo, engine, settings)
    return demo


class HeavyBoundedQueue(Queue):
    """Gradio's queue, but ``max_size`` bounds only the jobs waiting for the model.

    Gradio counts every queued event against ``max_size``, so cheap ones (``/stats``, ``/estimate``, fired
    while a slider moves) were refused with "Queue is full" under load. Here they always pass; a model job
    over the limit is refused with the number of jobs ahead of it.
    """

    heavy_limit: int | None = None

    async def push(self, body: Any, request: Any, username: str | None) -> tuple:
        fn = route_utils.get_fn(self.blocks, None, body) if body.fn_index is not None else None
        if fn is not None and fn.concurrency_id == HEAVY and self.heavy_limit is not None:
            waiting = self.event_queue_per_concurrency_id.get(HEAVY)
            n = len(waiting.queue) if waiting is not None else 0
            if n >= self.heavy_limit:
                return (False, f"The server is busy: {n} jobs are already waiting for the model (at most "
                        f"{self.heavy_limit}). Please try again in a few minutes.", "queue_full")  # fmt: skip
        return await super().push(body, request, username)


def _harden(demo: gr.Blocks, engine, settings) -> None:
    """Make ``demo.queue`` bound only heavy jobs, and ``demo.launch`` default to the upload limit and to
    serving files from the output and example folders only (callers' explicit values win)."""
    queue, launch = demo.queue, demo.launch

    def bounded_queue(*args: Any, max_size: int | None = None, **kwargs: Any) -> gr.Blocks:
        out = queue(*args, max_size=None, **kwargs)
        demo._queue.__class__ = HeavyBoundedQueue
        demo._queue.heavy_limit = max_size
        return out

    def safe_launch(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("max_file_size", settings.max_upload_bytes)
        kwargs.setdefault("allowed_paths", served_paths(engine, settings))
        return launch(*args, **kwargs)

    demo.queue, demo.launch = bounded_queue, safe_launch


def served_paths(engine, settings=None) -> list[str]:
    """The only folders the app serves files from, besides Gradio's own cache: outputs and the examples."""
    return [str(engine.output_root), str(example_dir(engine, settings))]
