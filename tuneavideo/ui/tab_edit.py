"""Edit tab: pick a tuned model of this session (or upload saved weights), type edit prompts, generate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..config import InvertConfig, SampleConfig
from ..errors import Cancelled
from .results_view import edit_json, render_result
from .widgets import (
    MAX_SEED,
    ProgressAdapter,
    cancel_button,
    cancelled_text,
    engine_errors,
    error_note,
    model_dropdown,
    progress_box,
    resolve_seed,
    session_id,
    split_prompts,
    wire_cancel,
    wire_job,
)

HELP = {
    "model": "Your tuned models (newest first; earlier ones from the My models tab), or saved weights loaded below.",
    "prompts": "One edit per line: change the subject, background or style words of the source prompt.",
    "negative_prompt": "What to steer away from (e.g. 'blurry, low quality'); empty = unconditional.",
    "steps": "DDIM steps for sampling (paper: 50). Fewer is faster and a little coarser.",
    "guidance": "Classifier-free guidance: higher follows the prompt more, lower keeps more of the source (paper: 12.5).",
    "seed": "Seed of the noise when not inverting; with inversion the result is deterministic. -1: random.",
    "use_inversion": "Start from the DDIM-inverted source clip (keeps its motion and layout) instead of random noise.",
    "invert_steps": "DDIM steps of the inversion (paper: 50); inverted noise is cached per model and step count.",
}


@dataclass
class EditTab:
    model: gr.Dropdown
    prompts: gr.Textbox
    negative_prompt: gr.Textbox
    steps: gr.Slider
    guidance_scale: gr.Slider
    seed: gr.Number
    use_inversion: gr.Checkbox
    invert_steps: gr.Slider
    edit_button: gr.Button
    generate_button: gr.Button
    invert_button: gr.Button
    cancel_button: gr.Button
    upload: gr.File
    upload_video: gr.Video
    load_button: gr.Button
    video: gr.Video
    gif: gr.Image
    side_by_side: gr.Video
    status: gr.Markdown
    events: list[Any]
    load_event: Any
    gallery: gr.Gallery
    downloads: gr.File
    scores: gr.Markdown
    result_json: gr.JSON


def resolve_model(model: str | None, handle: dict | None) -> str | None:
    """The dropdown's choice, else the session's latest tuned model (API callers may leave it empty)."""
    return model or (handle or {}).get("tune_key")


# Over 60 lines: Gradio layout code in page order, then the tab's callbacks as closures over its widgets.
def build_edit_tab(engine, handle: gr.State, last: gr.State | None = None) -> EditTab:
    """Build the Edit tab; ``handle`` is the session's small state, ``last`` receives the job's JSON result."""
    last = last if last is not None else gr.State({})
    prof = engine.profile
    examples = "\n".join(prof.example_prompts) or "a blue square moves to the right"
    scfg = prof.sample
    with gr.Row():
        with gr.Column(scale=1):
            model = model_dropdown(label="Tuned model", info=HELP["model"], elem_id="edit-model")
            prompts = gr.Textbox(label="Edit prompt(s)", lines=3, placeholder=examples,
                                 info=HELP["prompts"], elem_id="edit-prompts")  # fmt: skip
            negative_prompt = gr.Textbox(label="Negative prompt", value=scfg.negative_prompt or "",
                                         info=HELP["negative_prompt"])  # fmt: skip
            with gr.Row():
                steps = gr.Slider(1, 150, value=scfg.num_inference_steps, step=1, label="Sampling steps",
                                  info=HELP["steps"])  # fmt: skip
                guidance_scale = gr.Slider(1.0, 25.0, value=scfg.guidance_scale, step=0.5, label="Guidance",
                                           info=HELP["guidance"])  # fmt: skip
            with gr.Row():
                seed = gr.Number(label="Seed", value=scfg.seed if scfg.seed is not None else -1, precision=0,
                                 minimum=-1, maximum=MAX_SEED, info=HELP["seed"])  # fmt: skip
                use_inversion = gr.Checkbox(value=scfg.use_inversion, label="Use DDIM inversion",
                                            info=HELP["use_inversion"])  # fmt: skip
            with gr.Accordion("Advanced", open=False):
                invert_steps = gr.Slider(1, 150, value=prof.invert.num_inference_steps, step=1,
                                         label="Inversion steps", info=HELP["invert_steps"])  # fmt: skip
                invert_button = gr.Button("Precompute inversion", size="sm")
            with gr.Row():
                edit_button = gr.Button("Edit video", variant="primary", elem_id="edit-button")
                generate_button = gr.Button("Generate from noise", elem_id="generate-button")
                cancel = cancel_button("edit-cancel")
            note = error_note("edit-error")
            with gr.Accordion("Load saved tuned weights", open=False):
                upload = gr.File(label="Tuned weights (.zip from the Tune tab, or tuned.safetensors)",
                                 file_types=[".zip", ".safetensors"])  # fmt: skip
                upload_video = gr.Video(label="Its source video (optional: needed for inversion)", sources=["upload"],
                                        height=200)  # fmt: skip
                load_button = gr.Button("Load weights", elem_id="load-button")
                load_note = error_note("load-error")
        with gr.Column(scale=1):
            progress_md = progress_box("edit-progress")
            status = gr.Markdown("Tune a model first (Tune tab), then type edit prompts here.", elem_id="edit-status",
                                 label="Edit status")  # fmt: skip
            gallery = gr.Gallery(label="Every edit (one per prompt; click to play, download from the viewer)",
                                 columns=2, height=300, elem_id="edit-gallery", interactive=False)  # fmt: skip
            scores = gr.Markdown(elem_id="edit-scores")
            with gr.Accordion("All outputs: first edit, side by side, GIF, downloads, JSON", open=False):
                video = gr.Video(label="Edited video (first prompt)", interactive=False, elem_id="edit-video",
                                 height=240)  # fmt: skip
                side_by_side = gr.Video(label="Source | every edit", interactive=False, height=240)
                gif = gr.Image(label="GIF", type="filepath", interactive=False, height=240)
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="edit-files")
                result_json = gr.JSON(label="Result (JSON)", elem_id="edit-json")

    def _sample_config(steps, guidance_scale, negative_prompt, seed, use_inversion) -> SampleConfig:
        return dataclasses.replace(
            prof.sample,
            num_inference_steps=int(steps),
            guidance_scale=float(guidance_scale),
            negative_prompt=(negative_prompt or "").strip() or None,
            seed=resolve_seed(seed),
            use_inversion=bool(use_inversion),
        )

    def _outputs(result, kind: str) -> tuple:
        done = edit_json(kind, result, engine.scores(result))
        return result.video_path, result.side_by_side_path, result.gif_path, result.status, done

    def edit(
        prompts: str,
        negative_prompt: str,
        steps: int,
        guidance_scale: float,
        seed: int,
        use_inversion: bool,
        invert_steps: int,
        model: str | None = None,
        handle: dict | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Edit the source clip: returns the edited mp4, a source|edit mp4, a GIF, and a status line."""
        with engine_errors("editing", request):
            sample = _sample_config(steps, guidance_scale, negative_prompt, seed, use_inversion)
            try:
                result = engine.edit(
                    session_id(request),
                    resolve_model(model, handle),
                    split_prompts(prompts),
                    sample,
                    progress=ProgressAdapter(progress),
                    invert_config=InvertConfig(num_inference_steps=int(invert_steps)),
                )
            except Cancelled as exc:
                return gr.skip(), gr.skip(), gr.skip(), cancelled_text(exc, "Editing stopped."), gr.skip()
            return _outputs(result, "edit")

    def generate(
        prompts: str,
        negative_prompt: str,
        steps: int,
        guidance_scale: float,
        seed: int,
        model: str | None = None,
        handle: dict | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Text-to-video from noise with the tuned model (no inversion)."""
        with engine_errors("generating", request):
            sample = _sample_config(steps, guidance_scale, negative_prompt, seed, False)
            try:
                result = engine.generate(
                    session_id(request),
                    resolve_model(model, handle),
                    split_prompts(prompts),
                    sample,
                    progress=ProgressAdapter(progress),
                )
            except Cancelled as exc:
                return gr.skip(), gr.skip(), gr.skip(), cancelled_text(exc, "Generation stopped."), gr.skip()
            return _outputs(result, "generate")

    def invert(
        invert_steps: int,
        model: str | None = None,
        handle: dict | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> str:
        """DDIM-invert the source clip with the tuned model now (edits then start at once)."""
        with engine_errors("inverting", request):
            try:
                result = engine.invert(
                    session_id(request),
                    resolve_model(model, handle),
                    InvertConfig(num_inference_steps=int(invert_steps)),
                    progress=ProgressAdapter(progress),
                )
            except Cancelled as exc:
                return cancelled_text(exc, "Inversion stopped.")
        return result.status

    shown = [video, side_by_side, gif, status, last]
    edit_event = wire_job(
        edit_button,
        edit,
        [prompts, negative_prompt, steps, guidance_scale, seed, use_inversion, invert_steps, model, handle],
        shown,
        "edit",
        progress_md,
        note,
        [cancel],
    )
    generate_event = wire_job(
        generate_button,
        generate,
        [prompts, negative_prompt, steps, guidance_scale, seed, model, handle],
        shown,
        "generate",
        progress_md,
        note,
        [cancel],
    )
    invert_event = wire_job(invert_button, invert, [invert_steps, model, handle], [status], "invert", progress_md,
                            note, [cancel])  # fmt: skip
    for event in (edit_event, generate_event):
        event.success(render_result, [last], [gallery, downloads, scores, result_json], queue=False,
                      api_visibility="private", show_progress="hidden")  # fmt: skip

    wire_cancel(cancel, engine, status, [edit_event, generate_event, invert_event], "The job stopped.",
                api_visibility="private")  # fmt: skip

    def load_tuned(
        upload: str | None, upload_video: str | None = None, handle: dict | None = None, request: gr.Request = None
    ) -> tuple:
        """Load saved tuned weights (optionally with their source video) into this session."""
        if not upload:
            with engine_errors("loading tuned weights", request):
                raise gr.Error("Choose a tuned-weights file (.zip from the Tune tab) first.", title="Nothing to load")
        with engine_errors("loading tuned weights", request):
            result = engine.load_tuned(session_id(request), upload, video_path=upload_video or None)
        how = (
            "with its source video (inversion available)"
            if result.video_key
            else "without a source video (edits start from noise)"
        )
        return f"Loaded {result.label} {how}.", {**(handle or {}), **result.handle}

    load_event = wire_job(load_button, load_tuned, [upload, upload_video, handle], [status, handle], "load_tuned",
                          progress_md, load_note, [])  # fmt: skip
    return EditTab(
        model, prompts, negative_prompt, steps, guidance_scale, seed, use_inversion, invert_steps, edit_button,
        generate_button, invert_button, cancel, upload, upload_video, load_button, video, gif, side_by_side,
        status, [edit_event, generate_event, invert_event], load_event, gallery, downloads, scores, result_json,
    )  # fmt: skip


if __name__ == "__main__":
    from ..engine import Engine
    from ..settings import Settings

    _engine = Engine(Settings.from_env())
    with gr.Blocks(title="Tune-A-Video: Edit") as _demo:
        build_edit_tab(_engine, gr.State({}))
    _demo.queue(default_concurrency_limit=1).launch()
