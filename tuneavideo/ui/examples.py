"""Examples for the Tune tab: presets whose clip exists, else a small synthetic clip written at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..config import PRESET_DIR, InvertConfig, SampleConfig, TuneConfig, VideoSpec, list_presets, load_preset
from ..errors import TuneAVideoError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    name: str
    video: str
    prompt: str
    edit_prompts: tuple[str, ...]
    video_spec: VideoSpec
    tune: TuneConfig
    invert: InvertConfig
    sample: SampleConfig


def _preset_fits(base_model: str, engine) -> bool:
    """Use a preset's sizes/steps only when it was written for the loaded kind of model."""
    from ..settings import detect_model_kind

    model = engine.settings.model
    if base_model == model or (Path(base_model).name and Path(base_model).name == Path(model).name):
        return True
    return detect_model_kind(base_model) == engine.settings.model_kind and engine.settings.model_kind != "custom"


def load_examples(engine, preset_dir: str | Path = PRESET_DIR, fallback_dir: str | Path | None = None) -> list[Example]:
    """Presets with a readable clip; knobs come from the preset when it fits the loaded model, else the profile's."""
    prof = engine.profile
    examples = []
    for name in list_presets(preset_dir):
        try:
            preset = load_preset(name, preset_dir)
        except TuneAVideoError as exc:
            logger.warning("skipping preset %s: %s", name, exc)
            continue
        if not preset.video_path or not Path(preset.video_path).is_file():
            continue
        fits = _preset_fits(preset.base_model, engine)
        examples.append(
            Example(
                name=name,
                video=preset.video_path,
                prompt=preset.prompt,
                edit_prompts=preset.edit_prompts[:2] or (preset.prompt,),
                video_spec=preset.video if fits else prof.video,
                tune=preset.tune if fits else prof.tune,
                invert=preset.invert if fits else prof.invert,
                sample=preset.sample if fits else prof.sample,
            )
        )
    if not examples and fallback_dir is not None:
        examples.append(synthetic_example(engine, fallback_dir))
    return examples


def _toy_world_example(engine, folder: Path) -> Example | None:
    """For the toy-world model: a rendered clip of its own world (a red circle moving right on blue)."""
    try:
        from ..toyworld.render import MotionSpec, ObjectSpec, SceneSpec, VideoSceneSpec, write_example_clip

        prof = engine.profile
        frames = max(prof.video.num_frames * prof.video.stride, 8)
        spec = VideoSceneSpec(SceneSpec((ObjectSpec("circle", "red", 0.3, 0.3, 0.5),), background="blue"),
                              MotionSpec("right", 0.35), num_frames=frames, fps=8, size=128)  # fmt: skip
        path = folder / f"toy-red-circle-right-{frames}f.mp4"
        if not path.is_file():
            write_example_clip(path, spec)
        return Example(
            name="toy-world: red circle",
            video=str(path),
            prompt=spec.caption,
            edit_prompts=(
                "a yellow circle moving right on a blue background",
                "a red square moving right on a green background",
            ),
            video_spec=prof.video,
            tune=prof.tune,
            invert=prof.invert,
            sample=prof.sample,
        )
    except Exception as exc:
        logger.warning("no toy-world example clip: %s", exc)
        return None


def synthetic_example(engine, folder: str | Path) -> Example:
    """A clip the loaded model can work with, written once: a toy-world scene, else a red square moving right."""
    from ..testing import write_test_video

    folder = Path(folder)
    if engine.settings.model_kind == "toy-world":
        toy = _toy_world_example(engine, folder)
        if toy is not None:
            return toy
    prof = engine.profile
    spec = prof.video
    frames = max(spec.num_frames * spec.stride, 8)
    size = (max(spec.height, 64), max(spec.width, 64))
    path = Path(folder) / f"moving-square-{frames}f-{size[0]}x{size[1]}.mp4"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_test_video(path, num_frames=frames, size=size, fps=8)
    return Example(
        name="moving-square",
        video=str(path),
        prompt="a red square moves to the right",
        edit_prompts=("a blue square moves to the right",),
        video_spec=spec,
        tune=prof.tune,
        invert=prof.invert,
        sample=prof.sample,
    )
