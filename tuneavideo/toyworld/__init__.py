"""The toy world: procedurally rendered shapes with exact ground truth, and a classifier that reads them back.

Only numpy, PIL and OpenCV are needed. The training and evaluation code of the embedded toy-world models
lives outside the package, in ``training/toyworld`` of a source checkout.
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
