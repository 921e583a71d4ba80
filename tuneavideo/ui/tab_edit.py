"""Edit tab: pick a tuned model of this session (or upload saved weights), type edit prompts, generate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..config import InvertConfig, SampleConfig
from ..errors import Cancelled
from .widgets import (
    HEAVY,
    MAX_SEED,
    ProgressAdapter,
    cancelled_text,
    engine_errors,
    resolve_seed,
    session_id,
    split_prompts,
)

HELP = {
    "model": "A model tuned in this browser session (newest first), or one loaded from saved weights below.",
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


def resolve_model(model: str | None, handle: dict | None) -> str | None:
    """The dropdown's choice, else the session's latest tuned model (API callers may leave it empty)."""
    return model or (handle or {}).get("tune_key")


# Over 60 lines: Gradio layout code in page order, then the tab's callbacks as closures over its widgets.
def build_edit_tab(engine, handle: gr.State) -> EditTab:
    prof = engine.profile
    scfg = prof.sample
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(choices=[], value=None, label="Tuned model", allow_custom_value=True,
                                info=HELP["model"], elem_id="edit-model")  # fmt: skip
            prompts = gr.Textbox(label="Edit prompt(s)", lines=3, placeholder="spider man is skiing on the beach",
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
                cancel_button = gr.Button("Cancel", variant="stop")
            with gr.Accordion("Load saved tuned weights", open=False):
                upload = gr.File(label="Tuned weights (.zip from the Tune tab, or tuned.safetensors)",
                                 file_types=[".zip", ".safetensors"])  # fmt: skip
                upload_video = gr.Video(label="Its source video (optional: needed for inversion)", sources=["upload"],
                                        height=200)  # fmt: skip
                load_button = gr.Button("Load weights")
        with gr.Column(scale=1):
            status = gr.Markdown("Tune a model first (Tune tab), then type edit prompts here.", elem_id="edit-status")
            video = gr.Video(label="Edited video", interactive=False, elem_id="edit-video", height=320)
            side_by_side = gr.Video(label="Source | edit", interactive=False, height=240)
            gif = gr.Image(label="GIF", type="filepath", interactive=False, height=240)

    def _sample_config(steps, guidance_scale, negative_prompt, seed, use_inversion) -> SampleConfig:
        return dataclasses.replace(
            prof.sample,
            num_inference_steps=int(steps),
            guidance_scale=float(guidance_scale),
            negative_prompt=(negative_prompt or "").strip() or None,
            seed=resolve_seed(seed),
            use_inversion=bool(use_inversion),
        )

    def _outputs(result) -> tuple:
        return result.video_path, result.side_by_side_path, result.gif_path, result.status

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
        with engine_errors("editing"):
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
                return gr.skip(), gr.skip(), gr.skip(), cancelled_text(exc, "Editing stopped.")
        return _outputs(result)

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
        with engine_errors("generating"):
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
                return gr.skip(), gr.skip(), gr.skip(), cancelled_text(exc, "Generation stopped.")
        return _outputs(result)

    def invert(
        invert_steps: int,
        model: str | None = None,
        handle: dict | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> str:
        """DDIM-invert the source clip with the tuned model now (edits then start at once)."""
        with engine_errors("inverting"):
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

    edit_event = edit_button.click(
        edit,
        inputs=[prompts, negative_prompt, steps, guidance_scale, seed, use_inversion, invert_steps, model, handle],
        outputs=[video, side_by_side, gif, status],
        api_name="edit",
        concurrency_id=HEAVY,
    )
    generate_event = generate_button.click(
        generate,
        inputs=[prompts, negative_prompt, steps, guidance_scale, seed, model, handle],
        outputs=[video, side_by_side, gif, status],
        api_name="generate",
        concurrency_id=HEAVY,
    )
    invert_event = invert_button.click(
        invert, inputs=[invert_steps, model, handle], outputs=status, api_name="invert", concurrency_id=HEAVY
    )

    def cancel(request: gr.Request) -> str:
        running = engine.cancel(session_id(request))
        return "Cancelling at the end of the current step…" if running else "Nothing is running."

    cancel_button.click(cancel, None, status, queue=False, api_visibility="private",
                        cancels=[edit_event, generate_event, invert_event])  # fmt: skip

    def load_tuned(
        upload: str | None, upload_video: str | None = None, handle: dict | None = None, request: gr.Request = None
    ) -> tuple:
        """Load saved tuned weights (optionally with their source video) into this session."""
        if not upload:
            raise gr.Error("Choose a tuned-weights file (.zip from the Tune tab) first.", title="Nothing to load")
        with engine_errors("loading tuned weights"):
            result = engine.load_tuned(session_id(request), upload, video_path=upload_video or None)
        how = (
            "with its source video (inversion available)"
            if result.video_key
            else "without a source video (edits start from noise)"
        )
        return f"Loaded {result.label} {how}.", {**(handle or {}), **result.handle}

    load_event = load_button.click(
        load_tuned, inputs=[upload, upload_video, handle], outputs=[status, handle], api_name="load_tuned",
        concurrency_id=HEAVY,
    )  # fmt: skip
    return EditTab(
        model, prompts, negative_prompt, steps, guidance_scale, seed, use_inversion, invert_steps, edit_button,
        generate_button, invert_button, cancel_button, upload, upload_video, load_button, video, gif, side_by_side,
        status, [edit_event, generate_event, invert_event], load_event,
    )  # fmt: skip


if __name__ == "__main__":
    from ..engine import Engine
    from ..settings import Settings

    _engine = Engine(Settings.from_env())
    with gr.Blocks(title="Tune-A-Video: Edit") as _demo:
        build_edit_tab(_engine, gr.State({}))
    _demo.queue(default_concurrency_limit=1).launch()
