"""Control tab: pose / depth / canny hints from the clip steer a ControlNet or T2I-Adapter."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from ..control import (
    DEFAULT_CONTROL_MODELS,
    ControlSpec,
    default_control_for,
    toy_world_control_defaults,
    with_default_depth_backend,
)
from ..errors import Cancelled, InputError, ModelLoadError
from ..hints import HINT_KINDS, HintConfig
from ..profiles import MODELS_DIR, TOY_WORLD_CONTROL_FOLDERS
from ..validation import model_not_allowed
from .results_view import edit_json, render_result
from .tab_edit import resolve_model
from .widgets import (
    MAX_SEED,
    ProgressAdapter,
    cancel_button,
    cancelled_text,
    engine_errors,
    error_note,
    model_dropdown,
    network_model,
    progress_box,
    resolve_seed,
    session_id,
    split_prompts,
    wire_cancel,
    wire_job,
)

CONTROL_TYPES = [("ControlNet", "controlnet"), ("T2I-Adapter", "t2i_adapter")]
HELP = {
    "hint": "pose: OpenPose skeletons (mediapipe offline); depth: a depth model (toy world: object silhouettes); "
    "canny: edges (no model needed).",
    "control_type": "ControlNet (strong, runs every step) or T2I-Adapter (light, computed once).",
    "control_model": "Hub id or local folder of an SD-1.x control model for this hint.",
    "scale": "How strongly the hints steer the result (1 = as trained).",
    "window": "Fraction of the sampling steps during which the control applies (start..end).",
    "driving": "Optional: take the hints from another clip (e.g. someone else's dance); default: the tuned clip.",
    "use_inversion": "Start from the inverted source clip (only when the hints come from the source clip).",
}


@dataclass
class ControlTab:
    model: gr.Dropdown
    prompts: gr.Textbox
    hint: gr.Radio
    control_type: gr.Radio
    control_model: gr.Dropdown
    scale: gr.Slider
    start: gr.Slider
    end: gr.Slider
    driving_video: gr.Video
    steps: gr.Slider
    guidance_scale: gr.Slider
    seed: gr.Number
    use_inversion: gr.Checkbox
    low_threshold: gr.Slider
    high_threshold: gr.Slider
    button: gr.Button
    cancel_button: gr.Button
    hints_video: gr.Video
    video: gr.Video
    side_by_side: gr.Video
    status: gr.Markdown
    event: Any
    gallery: gr.Gallery
    scores: gr.Markdown


_CLASSES = {"ControlNetModel": "controlnet", "T2IAdapter": "t2i_adapter"}


def local_control_models(root: str | Path = MODELS_DIR) -> list[tuple[str, str]]:
    """``(kind, folder)`` of every ControlNet / T2I-Adapter folder under ``models/`` (two levels deep)."""
    found = []
    root = Path(root)
    for cfg in sorted([*root.glob("*/config.json"), *root.glob("*/*/config.json")]):
        try:
            kind = _CLASSES.get(json.loads(cfg.read_text()).get("_class_name", ""))
        except (OSError, ValueError):
            continue
        if kind:
            found.append((kind, str(cfg.parent)))
    return found


def default_control_model(
    control_type: str, hint: str, local: list[tuple[str, str]] | None = None, base_model: str | None = None
) -> str:
    """The control model offered for ``control_type`` + ``hint``.

    On the embedded toy-world base: its own model for that pair (``""`` when it has none). Otherwise a local
    model of that type whose folder names the hint (the toy world's own models excepted: they fit only their
    base), else the standard SD-1.x model.
    """
    toy = toy_world_control_defaults(base_model)
    if toy is not None:
        return toy.get(control_type, {}).get(hint, "")
    toy_names = {name for by_hint in TOY_WORLD_CONTROL_FOLDERS.values() for name in by_hint.values()}
    for kind, folder in local or []:
        if kind == control_type and hint in Path(folder).name and Path(folder).name not in toy_names:
            return folder
    return DEFAULT_CONTROL_MODELS.get(control_type, {}).get(hint, "")


def default_pair(base_model: str | None) -> tuple[str, str]:
    """``(hint, control_type)`` the tab opens with: canny + ControlNet (the toy world has one too)."""
    try:
        control_type, _ = default_control_for(base_model, "canny")
    except InputError:
        control_type = "controlnet"
    return "canny", control_type


def control_model_choices(local: list[tuple[str, str]]) -> list[str]:
    hub = [m for models in DEFAULT_CONTROL_MODELS.values() for m in models.values()]
    return [folder for _, folder in local] + hub


# Over 60 lines: Gradio layout code in page order, then the tab's callbacks as closures over its widgets.
def build_control_tab(engine, handle: gr.State, last: gr.State | None = None) -> ControlTab:
    """Build the Control tab; hints and control types the loaded base cannot use are not offered."""
    last = last if last is not None else gr.State({})
    prof = engine.profile
    scfg = prof.sample
    hints_offered = [h for h in HINT_KINDS if prof.supports(h)] if prof.only_listed_controls else list(HINT_KINDS)
    types_offered = [(label, kind) for label, kind in CONTROL_TYPES if not prof.only_listed_controls
                     or any(prof.supports(h, kind) for h in hints_offered)]  # fmt: skip
    skipped = [h for h in HINT_KINDS if h not in hints_offered]
    local = local_control_models()
    base = engine.settings.model
    toy = toy_world_control_defaults(base)
    first_hint, first_type = default_pair(base)
    if toy is not None:
        have = ", ".join(
            f"{h} ({'ControlNet' if k == 'controlnet' else 'T2I-Adapter'})" for k, by in toy.items() for h in by
        )
        gr.Markdown(
            f"Toy-world base: its own control models are picked for you: {have}. Depth hints here are the "
            "objects' silhouettes, read from the frames. Try a toy example, then a prompt with a new colour."
            + (f" Not offered here: {', '.join(skipped)} (no control model for it fits this base)." if skipped else "")
        )
    elif engine.settings.model_kind != "sd" and not local:
        gr.Markdown(
            "The standard ControlNets / T2I-Adapters are made for Stable Diffusion 1.x; with this base model, use "
            "a control model trained for it (a local folder; models under `models/` are listed automatically)."
        )
    with gr.Row():
        with gr.Column(scale=1):
            model = model_dropdown(label="Tuned model", elem_id="control-model-pick")
            placeholder = prof.example_prompts[0] if prof.example_prompts else "an astronaut is dancing on the moon"
            prompts = gr.Textbox(label="Prompt(s)", lines=2, placeholder=placeholder,
                                 info="One per line.", elem_id="control-prompts")  # fmt: skip
            type_info = HELP["control_type"] + (
                " On this base the hint decides it." if prof.only_listed_controls else ""
            )
            with gr.Row():
                hint = gr.Radio(
                    hints_offered, value=first_hint, label="Hint", info=HELP["hint"], elem_id="control-hint"
                )
                control_type = gr.Radio(types_offered, value=first_type, label="Control model type", info=type_info,
                                        interactive=not prof.only_listed_controls, elem_id="control-type")  # fmt: skip
            control_model = gr.Dropdown(choices=control_model_choices(local), allow_custom_value=True,
                                        value=default_control_model(first_type, first_hint, local, base),
                                        label="Control model", info=HELP["control_model"], elem_id="control-model")  # fmt: skip
            with gr.Row():
                scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Control scale", info=HELP["scale"])
                start = gr.Slider(0.0, 1.0, value=0.0, step=0.05, label="Start", info=HELP["window"])
                end = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="End")
            driving_video = gr.Video(label="Driving video (optional)", sources=["upload"], height=200)
            with gr.Row():
                steps = gr.Slider(
                    1, 150, value=scfg.num_inference_steps, step=1, label="Sampling steps", elem_id="control-steps"
                )
                guidance_scale = gr.Slider(1.0, 25.0, value=scfg.guidance_scale, step=0.5, label="Guidance")
                seed = gr.Number(label="Seed", value=scfg.seed if scfg.seed is not None else -1, precision=0,
                                 minimum=-1, maximum=MAX_SEED)  # fmt: skip
            use_inversion = gr.Checkbox(value=False, label="Start from the inverted source", info=HELP["use_inversion"])
            with gr.Accordion("Advanced (canny thresholds)", open=False):
                low_threshold = gr.Slider(0, 255, value=100, step=1, label="Canny low threshold")
                high_threshold = gr.Slider(0, 255, value=200, step=1, label="Canny high threshold")
            with gr.Row():
                button = gr.Button("Generate with control", variant="primary", elem_id="control-button")
                cancel = cancel_button("control-cancel")
            note = error_note("control-error")
        with gr.Column(scale=1):
            progress_md = progress_box("control-progress")
            status = gr.Markdown("Pick a tuned model, a hint type and a control model.", elem_id="control-status",
                                 label="Control status")  # fmt: skip
            with gr.Row():
                hints_video = gr.Video(label="Hints", interactive=False, height=280)
                video = gr.Video(label="Result", interactive=False, height=280, elem_id="control-video")
            side_by_side = gr.Video(label="Source | hints | every result", interactive=False, height=240)
            gallery = gr.Gallery(label="Every result (one per prompt)", columns=2, height=240, interactive=False,
                                 elem_id="control-gallery")  # fmt: skip
            scores = gr.Markdown(elem_id="control-scores")
            with gr.Accordion("Downloads and JSON", open=False):
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False)
                result_json = gr.JSON(label="Result (JSON)")

    def pick_default(control_type: str, hint: str) -> str:
        return default_control_model(control_type, hint, local, base)

    def pick_for_hint(control_type: str, hint: str) -> tuple[Any, str]:
        """On the toy-world base a hint has a model of one type only: switch the type to it."""
        if toy is not None and hint not in toy.get(control_type, {}):
            for kind, by_hint in toy.items():
                if hint in by_hint:
                    return kind, by_hint[hint]
        return gr.skip(), pick_default(control_type, hint)

    hint.change(pick_for_hint, [control_type, hint], [control_type, control_model], queue=False,
                api_visibility="private", show_progress="hidden")  # fmt: skip
    control_type.change(pick_default, [control_type, hint], control_model, queue=False,
                        api_visibility="private", show_progress="hidden")  # fmt: skip

    def control(
        prompts: str,
        hint: str,
        control_type: str,
        control_model: str,
        scale: float,
        start: float,
        end: float,
        steps: int,
        guidance_scale: float,
        seed: int,
        use_inversion: bool,
        low_threshold: int,
        high_threshold: int,
        model: str | None = None,
        driving_video: str | None = None,
        handle: dict | None = None,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),  # noqa: B008
    ) -> tuple:
        """Generate with per-frame control hints; returns the hint video, the result, a side-by-side, status."""
        with engine_errors("generating with control", request):
            hint_config = with_default_depth_backend(
                base, HintConfig(str(hint), low_threshold=int(low_threshold), high_threshold=int(high_threshold))
            )
            chosen = (control_model or "").strip()
            toy_folders = {f: (k, h) for k, by_hint in (toy or {}).items() for h, f in by_hint.items()}
            if not chosen or toy_folders.get(chosen, (control_type, hint)) != (control_type, hint):
                # no model, or one of the toy world's own models left over from another hint (an API call that
                # names only the hint): the toy world's model for this hint, whichever type it is
                control_type, chosen = default_control_for(base, str(hint), None if chosen else str(control_type))
            chosen = network_model(engine, chosen)
            spec = ControlSpec(str(control_type), chosen, str(hint), scale=float(scale),
                               start=float(start), end=float(end))  # fmt: skip
            sample = dataclasses.replace(
                scfg,
                num_inference_steps=int(steps),
                guidance_scale=float(guidance_scale),
                seed=resolve_seed(seed),
                use_inversion=bool(use_inversion),
            )
            try:
                result = engine.control(
                    session_id(request),
                    resolve_model(model, handle),
                    split_prompts(prompts),
                    hint_config,
                    spec,
                    sample,
                    progress=ProgressAdapter(progress),
                    video_path=driving_video or None,
                )
            except Cancelled as exc:
                return gr.skip(), gr.skip(), gr.skip(), cancelled_text(exc, "Generation stopped."), gr.skip()
            except ModelLoadError as exc:
                if spec.label in str(exc):  # the control model: one message whatever failed on the server
                    raise model_not_allowed(chosen) from exc
                raise
            done = edit_json("control", result, engine.scores(result))
        return result.hint_path, result.video_path, result.side_by_side_path, result.status, done

    event = wire_job(
        button,
        control,
        [
            prompts,
            hint,
            control_type,
            control_model,
            scale,
            start,
            end,
            steps,
            guidance_scale,
            seed,
            use_inversion,
            low_threshold,
            high_threshold,
            model,
            driving_video,
            handle,
        ],  # fmt: skip
        [hints_video, video, side_by_side, status, last],
        "control",
        progress_md,
        note,
        [cancel],
    )
    event.success(render_result, [last], [gallery, downloads, scores, result_json], queue=False,
                  api_visibility="private", show_progress="hidden")  # fmt: skip

    wire_cancel(cancel, engine, status, [event], "Generation stopped.", api_visibility="private")
    return ControlTab(
        model, prompts, hint, control_type, control_model, scale, start, end, driving_video, steps, guidance_scale,
        seed, use_inversion, low_threshold, high_threshold, button, cancel, hints_video, video, side_by_side,
        status, event, gallery, scores,
    )  # fmt: skip


if __name__ == "__main__":
    from ..engine import Engine
    from ..settings import Settings

    _engine = Engine(Settings.from_env())
    with gr.Blocks(title="Tune-A-Video: Control") as _demo:
        build_control_tab(_engine, gr.State({}))
    _demo.queue(default_concurrency_limit=1).launch()
