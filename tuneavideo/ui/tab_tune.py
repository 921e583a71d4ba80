"""Tune tab: upload (or pick) a clip, trim it, describe it, tune; preview, losses and a download."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..config import VideoSpec
from ..errors import Cancelled
from .widgets import (
    MAX_SEED,
    ProgressAdapter,
    cancel_button,
    cancelled_text,
    engine_errors,
    error_note,
    progress_box,
    resolve_seed,
    session_id,
    wire_cancel,
    wire_job,
)

HELP = {
    "video": "The one clip to tune on (mp4, mov, webm, avi, mkv, gif). Only the frames you select are decoded.",
    "prompt": "A plain caption of the clip. Edits later change words of it.",
    "start_time": "Where the clip starts in the source, in seconds.",
    "stride": "Keep every n-th source frame (2 = twice the motion per frame). Stride 1 keeps the audio in the outputs.",
    "num_frames": "Frames to tune on and to generate. More frames cost time and memory linearly.",
    "size": "Frame size in pixels (a multiple of 8). The model's native size works best; the clip is centre-cropped.",
    "steps": "Tuning steps. The paper uses 500 for SD at 24 frames; fewer work for short clips.",
    "learning_rate": "AdamW learning rate of the tuned attention weights (paper: 3e-5).",
    "seed": "Random seed of tuning (noise, timesteps) and of the preview; -1 picks one at random.",
    "resize": "crop: keep the aspect ratio, centre-crop to the size; squash: stretch the whole frame (official code).",
    "preview_steps": "Sampling steps of the quick preview made after tuning (0: no preview).",
    "gradient_checkpointing": "Recompute activations in the backward pass: less GPU memory, about 30% slower.",
}


@dataclass
class TuneTab:
    """The Tune tab's components and events (build_demo wires them to the other tabs)."""

    video: gr.Video
    prompt: gr.Textbox
    start_time: gr.Number
    stride: gr.Slider
    num_frames: gr.Slider
    width: gr.Slider
    height: gr.Slider
    steps: gr.Slider
    learning_rate: gr.Number
    seed: gr.Number
    resize: gr.Radio
    preview_steps: gr.Slider
    gradient_checkpointing: gr.Checkbox
    tune_button: gr.Button
    cancel_button: gr.Button
    preview: gr.Video
    download: gr.File
    losses: gr.LinePlot
    status: gr.Markdown
    estimate: gr.Markdown
    tune_event: Any
    progress: gr.Markdown
    note: gr.Markdown
    knobs: list[Any] = dataclasses.field(default_factory=list)


def _configs(
    engine, num_frames, width, height, stride, start_time, resize, steps, learning_rate, seed, gradient_checkpointing
):
    spec = VideoSpec(
        num_frames=int(num_frames),
        width=int(width),
        height=int(height),
        stride=int(stride),
        start_time=float(start_time or 0.0),
        resize=str(resize or "crop"),
    )
    config = dataclasses.replace(
        engine.profile.tune,
        max_train_steps=int(steps),
        learning_rate=float(learning_rate),
        seed=resolve_seed(seed),
        gradient_checkpointing=bool(gradient_checkpointing),
    )
    return spec, config


def estimate_text(
    engine, num_frames, width, height, stride, start_time, resize, steps, learning_rate, seed, gradient_checkpointing
) -> str:
    """Markdown estimate of tuning + editing with these knobs on the engine's device."""
    try:
        spec, config = _configs(engine, num_frames, width, height, stride, start_time, resize, steps, learning_rate,
                                0, gradient_checkpointing)  # fmt: skip
    except Exception as exc:
        return f"Estimate: {exc}"
    return "**Estimate:** " + engine.estimate(spec, config)["text"]


# Over 60 lines: Gradio layout code in page order, then the tab's callbacks as closures over its widgets.
def build_tune_tab(engine, handle: gr.State, last: gr.State | None = None) -> TuneTab:
    """Build the Tune tab inside the current Blocks context; ``handle`` is the session's small state and
    ``last`` receives the job's JSON result."""
    last = last if last is not None else gr.State({})
    prof = engine.profile
    spec, tcfg = prof.video, prof.tune
    with gr.Row():
        with gr.Column(scale=1):
            video = gr.Video(label="Source video", sources=["upload"], height=320, elem_id="tune-video")
            prompt = gr.Textbox(label="Source prompt", placeholder=prof.source_prompt,
                                info=f"{HELP['prompt']} E.g. '{prof.source_prompt}'.")  # fmt: skip
            with gr.Row():
                start_time = gr.Number(label="Start (s)", value=spec.start_time, minimum=0, info=HELP["start_time"])
                stride = gr.Slider(1, 8, value=spec.stride, step=1, label="Frame stride", info=HELP["stride"])
                num_frames = gr.Slider(1, prof.max_frames, value=spec.num_frames, step=1, label="Frames",
                                       info=HELP["num_frames"])  # fmt: skip
            with gr.Row():
                width = gr.Slider(prof.size_step, prof.max_size, value=spec.width, step=prof.size_step, label="Width",
                                  info=HELP["size"])  # fmt: skip
                height = gr.Slider(
                    prof.size_step, prof.max_size, value=spec.height, step=prof.size_step, label="Height"
                )
            with gr.Row():
                steps = gr.Slider(1, 1000, value=tcfg.max_train_steps, step=1, label="Tuning steps", info=HELP["steps"])
                learning_rate = gr.Number(label="Learning rate", value=tcfg.learning_rate, info=HELP["learning_rate"])
                seed = gr.Number(label="Seed", value=tcfg.seed, precision=0, minimum=-1, maximum=MAX_SEED,
                                 info=HELP["seed"])  # fmt: skip
            with gr.Accordion("Advanced", open=False):
                resize = gr.Radio(["crop", "squash"], value=spec.resize, label="Resize", info=HELP["resize"])
                preview_steps = gr.Slider(0, 100, value=prof.preview_steps, step=1, label="Preview steps",
                                          info=HELP["preview_steps"])  # fmt: skip
                gradient_checkpointing = gr.Checkbox(value=tcfg.gradient_checkpointing, label="Gradient checkpointing",
                                                     info=HELP["gradient_checkpointing"])  # fmt: skip
            estimate_md = gr.Markdown(elem_id="tune-estimate")
            with gr.Row():
                tune_button = gr.Button("Tune", variant="primary", elem_id="tune-button")
                cancel = cancel_button("tune-cancel")
            note = error_note("tune-error")
        with gr.Column(scale=1):
            progress_md = progress_box("tune-progress")
            status = gr.Markdown("Upload a clip (or pick an example), describe it, then press **Tune**.",
                                 elem_id="tune-status", label="Tune status")  # fmt: skip
            preview = gr.Video(
                label="Preview: the tuned model, source prompt, from noise", interactive=False, height=320
            )
            losses = gr.LinePlot(x="step", y="loss", label="Training loss", height=220)
            download = gr.File(label="Tuned weights (upload them later in the Edit tab)", interactive=False)

    knobs = [num_frames, width, height, stride, start_time, resize, steps, learning_rate, seed, gradient_checkpointing]

    def tune(
        video: str | None,
        prompt: str,
        start_time: float,
        stride: int,
        num_frames: int,
        width: int,
        height: int,
        steps: int,
        learning_rate: float,
        seed: int,
        resize: str,
        preview_steps: int,
        gradient_checkpointing: bool,
        handle: dict | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple:
        """Tune the base model on the clip; returns preview mp4, weights zip, losses, status."""
        with engine_errors("tuning", request):
            spec, config = _configs(engine, num_frames, width, height, stride, start_time, resize, steps,
                                    learning_rate, seed, gradient_checkpointing)  # fmt: skip
            try:
                result = engine.tune(
                    session_id(request),
                    video,
                    prompt,
                    spec,
                    config,
                    progress=ProgressAdapter(progress),
                    preview_steps=int(preview_steps),
                )
            except Cancelled as exc:
                return gr.skip(), gr.skip(), gr.skip(), cancelled_text(exc, "Tuning stopped."), handle, gr.skip()
        import pandas as pd

        frame = pd.DataFrame({"step": list(range(1, len(result.losses) + 1)), "loss": list(result.losses)})
        status = f"{result.status}\n\nModel: {result.label} (seed {config.seed}). Now go to **Edit**."
        status += "".join(f"\n\nWarning: {w}." for w in result.record.get("warnings", ()))
        done = {"kind": "tune", "tune_key": result.tune_key, "video_key": result.video_key, "label": result.label,
                "cache_hit": result.cache_hit, "losses": list(result.losses), "timings": result.timings,
                "preview": result.preview_path, "download": result.download_path, "seed": config.seed}  # fmt: skip
        return result.preview_path, result.download_path, frame, status, {**(handle or {}), **result.handle}, done

    tune_event = wire_job(
        tune_button,
        tune,
        [
            video,
            prompt,
            start_time,
            stride,
            num_frames,
            width,
            height,
            steps,
            learning_rate,
            seed,
            resize,
            preview_steps,
            gradient_checkpointing,
            handle,
        ],  # fmt: skip
        [preview, download, losses, status, handle, last],
        "tune",
        progress_md,
        note,
        [cancel],
    )

    wire_cancel(cancel, engine, status, [tune_event], "Tuning stopped.", api_name="cancel")

    def estimate(
        num_frames, width, height, stride, start_time, resize, steps, learning_rate, seed, gradient_checkpointing
    ) -> str:
        """Time and memory estimate for these settings on this device."""
        return estimate_text(engine, num_frames, width, height, stride, start_time, resize, steps, learning_rate,
                             seed, gradient_checkpointing)  # fmt: skip

    gr.on(
        triggers=[k.change for k in knobs],
        fn=estimate,
        inputs=knobs,
        outputs=estimate_md,
        api_name="estimate",
        queue=False,
        show_progress="hidden",
    )
    # after a run the engine has calibrated its cost model on this machine: show the sharper estimate
    tune_event.success(estimate, knobs, estimate_md, queue=False, api_visibility="private", show_progress="hidden")
    return TuneTab(
        video, prompt, start_time, stride, num_frames, width, height, steps, learning_rate, seed, resize,
        preview_steps, gradient_checkpointing, tune_button, cancel, preview, download, losses, status,
        estimate_md, tune_event, progress_md, note, knobs,
    )  # fmt: skip


if __name__ == "__main__":
    from ..engine import Engine
    from ..settings import Settings

    _engine = Engine(Settings.from_env())
    with gr.Blocks(title="Tune-A-Video: Tune") as _demo:
        build_tune_tab(_engine, gr.State({}))
    _demo.queue(default_concurrency_limit=1).launch()
