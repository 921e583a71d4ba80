"""The toy world: procedurally rendered shapes with exact ground truth, a classifier that reads them back,
and the training/evaluation code of the embedded toy-world text-to-image model (``models/toy-world``).

Only numpy, PIL and OpenCV are needed for rendering and classifying; torch/diffusers are imported lazily
by :mod:`tuneavideo.toyworld.train` and :mod:`tuneavideo.toyworld.evaluate`.
"""

from __future__ import annotations

from .render import (
    ALL_SHAPES,
    BASIC_SHAPES,
    COLORS,
    COMPOSITE_SHAPES,
    MOTIONS,
    TEXTURES,
    GroundTruth,
    MotionSpec,
    ObjectSpec,
    ObjectTruth,
    SceneSpec,
    VideoSceneSpec,
    caption,
    random_scene,
    random_video_spec,
    render_image,
    render_video,
    write_example_clip,
)

__all__ = [
    "ALL_SHAPES",
    "BASIC_SHAPES",
    "COLORS",
    "COMPOSITE_SHAPES",
    "MOTIONS",
    "TEXTURES",
    "GroundTruth",
    "MotionSpec",
    "ObjectSpec",
    "ObjectTruth",
    "SceneSpec",
    "VideoSceneSpec",
    "caption",
    "random_scene",
    "random_video_spec",
    "render_image",
    "render_video",
    "write_example_clip",
]
