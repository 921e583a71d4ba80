"""Deterministic renderer for the toy world: coloured shapes on plain or textured backgrounds.

Everything here is numpy + OpenCV and fully determined by its inputs (random choices take an explicit
``numpy.random.Generator``), so images, videos and their ground truth can be regenerated bit for bit.

Coordinates in the specs are *fractions of the image side* (``x``, ``y`` of an object's centre, ``size``
of its bounding square), so one scene renders at any resolution; the ground truth is in pixels.

Examples::

    >>> scene = SceneSpec((ObjectSpec("circle", "red", 0.4, 0.5, 0.5),), background="blue")
    >>> caption(scene)
    'a red circle on a blue background'
    >>> img, truth = render_image(scene, size=128)
    >>> img.shape, truth.objects[0].shape
    ((128, 128, 3), 'circle')
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------

#: Named colours, chosen to be far apart in CIE Lab so that a classifier can name them back.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "green": (40, 170, 60),
    "blue": (25, 100, 240),
    "yellow": (245, 215, 35),
    "purple": (130, 30, 150),
    "orange": (245, 135, 25),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "pink": (250, 140, 200),
    "cyan": (40, 210, 225),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

BASIC_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
#: Objects built from several primitives: a square with a triangular roof, two stacked circles, an annulus.
COMPOSITE_SHAPES: tuple[str, ...] = ("house", "snowman", "ring")
ALL_SHAPES: tuple[str, ...] = BASIC_SHAPES + COMPOSITE_SHAPES

#: ``plain`` is a flat colour; the others draw a pattern in a greyed shade of the background colour.
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered", "dotted")

#: Motion kinds and the words used for them in captions.
MOTION_PHRASES: dict[str, str] = {
    "still": "standing still",
    "left": "moving left",
    "right": "moving right",
    "up": "moving up",
    "down": "moving down",
    "up-left": "moving up and left",
    "up-right": "moving up and right",
    "down-left": "moving down and left",
    "down-right": "moving down and right",
    "circle": "moving in a circle",
    "bounce": "bouncing",
    "grow": "growing",
    "shrink": "shrinking",
}
MOTIONS: tuple[str, ...] = tuple(MOTION_PHRASES)
LINEAR_MOTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up-left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "up-right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "down-left": (-math.sqrt(0.5), math.sqrt(0.5)),
    "down-right": (math.sqrt(0.5), math.sqrt(0.5)),
}
#: Default ``MotionSpec.amount`` per kind (see :class:`MotionSpec`).
DEFAULT_AMOUNT: dict[str, float] = {
    **{k: 0.35 for k in LINEAR_MOTIONS},
    "still": 0.0,
    "circle": 0.16,
    "bounce": 0.28,
    "grow": 1.6,
    "shrink": 0.6,
}

_TEXTURE_GREY = np.array([128.0, 128.0, 128.0])
_SUBPIXEL_BITS = 4  # OpenCV fixed-point drawing: coordinates carry 4 fractional bits
_SUBPIXEL = 1 << _SUBPIXEL_BITS


def _check_name(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def secondary_color(color: str) -> tuple[int, int, int]:
    """The pattern colour of a textured background: the base colour mixed half-and-half with grey."""
    base = np.array(COLORS[color], dtype=np.float64)
    return tuple(int(v) for v in np.rint(0.5 * base + 0.5 * _TEXTURE_GREY))  # type: ignore[return-value]


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectSpec:
    """One object: ``shape`` and ``color`` names, bounding-square ``size`` and centre ``x``, ``y``.

    ``size``, ``x`` and ``y`` are fractions of the image side (``x`` to the right, ``y`` down).
    """

    shape: str
    color: str
    size: float = 0.35
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self) -> None:
        _check_name(self.shape, ALL_SHAPES, "shape")
        _check_name(self.color, COLOR_NAMES, "colour")
        if not self.size > 0:
            raise ValueError(f"object size must be > 0, got {self.size}")

    @property
    def phrase(self) -> str:
        return f"{article(self.color)} {self.color} {self.shape}"


@dataclass(frozen=True)
class SceneSpec:
    """Objects (drawn in order, later ones on top) on a background colour with an optional texture."""

    objects: tuple[ObjectSpec, ...]
    background: str = "white"
    texture: str = "plain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        _check_name(self.background, COLOR_NAMES, "background colour")
        _check_name(self.texture, TEXTURES, "texture")

    @property
    def background_name(self) -> str:
        """``"blue"`` for a plain background, ``"blue striped"`` for a textured one."""
        return self.background if self.texture == "plain" else f"{self.background} {self.texture}"

    def triples(self) -> list[tuple[str, str, str]]:
        """``(colour, shape, background_name)`` of every object: the unit held out of training."""
        return [(o.color, o.shape, self.background_name) for o in self.objects]


@dataclass(frozen=True)
class MotionSpec:
    """How the first object of a scene moves over a clip.

    ``amount`` is the size of the whole motion over the clip: the distance travelled (fraction of the
    image side) for the eight straight directions, the orbit radius for ``circle``, the hop height for
    ``bounce``, and the final/initial size ratio for ``grow``/``shrink``. ``None`` takes the default.
    ``cycles`` counts orbits (``circle``) or hops (``bounce``).
    """

    kind: str = "still"
    amount: float | None = None
    cycles: float = 1.0

    def __post_init__(self) -> None:
        _check_name(self.kind, MOTIONS, "motion")

    @property
    def resolved_amount(self) -> float:
        return DEFAULT_AMOUNT[self.kind] if self.amount is None else float(self.amount)

    @property
    def phrase(self) -> str:
        return MOTION_PHRASES[self.kind]

    def offset(self, t: float) -> tuple[float, float, float]:
        """``(dx, dy, scale)`` of the moving object at clip progress ``t`` in [0, 1], relative to frame 0."""
        a = self.resolved_amount
        if self.kind in LINEAR_MOTIONS:
            ux, uy = LINEAR_MOTIONS[self.kind]
            return ux * a * t, uy * a * t, 1.0
        if self.kind == "circle":
            theta = 2.0 * math.pi * self.cycles * t
            return a * (math.cos(theta) - 1.0), a * math.sin(theta), 1.0
        if self.kind == "bounce":
            return 0.0, -a * abs(math.sin(math.pi * self.cycles * t)), 1.0
        if self.kind in ("grow", "shrink"):
            return 0.0, 0.0, 1.0 + (a - 1.0) * t
        return 0.0, 0.0, 1.0


@dataclass(frozen=True)
class VideoSceneSpec:
    """A clip: ``scene`` at frame 0, its first object moving by ``motion``; others stand still."""

    scene: SceneSpec
    motion: MotionSpec = field(default_factory=MotionSpec)
    num_frames: int = 8
    fps: int = 8
    size: int = 128

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")

    def progress(self, frame: int) -> float:
        return 0.0 if self.num_frames == 1 else frame / (self.num_frames - 1)

    def scene_at(self, frame: int) -> SceneSpec:
        """The still scene shown at ``frame``."""
        if not self.scene.objects:
            return self.scene
        dx, dy, scale = self.motion.offset(self.progress(frame))
        first = self.scene.objects[0]
        moved = replace(first, x=first.x + dx, y=first.y + dy, size=first.size * scale)
        return replace(self.scene, objects=(moved,) + self.scene.objects[1:])

    @property
    def caption(self) -> str:
        return caption(self.scene, self.motion)


# --------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------


@dataclass
class ObjectTruth:
    """Exact pixel truth for one object: its *visible* mask (occluded parts removed), centroid (x, y) in
    pixels, bounding box ``(x0, y0, x1, y1)`` with exclusive ends, and visible area. An object that is
    entirely hidden or outside the frame has ``area == 0``, ``centroid``/``bbox`` ``None``."""

    shape: str
    color: str
    mask: np.ndarray
    centroid: tuple[float, float] | None
    bbox: tuple[int, int, int, int] | None
    area: int
    rgb: tuple[int, int, int]


@dataclass
class GroundTruth:
    size: int
    background: str
    texture: str
    objects: list[ObjectTruth]
    caption: str

    @property
    def background_name(self) -> str:
        return self.background if self.texture == "plain" else f"{self.background} {self.texture}"

    @property
    def background_mask(self) -> np.ndarray:
        covered = np.zeros((self.size, self.size), dtype=bool)
        for o in self.objects:
            covered |= o.mask
        return ~covered


def _mask_stats(mask: np.ndarray) -> tuple[tuple[float, float] | None, tuple[int, int, int, int] | None, int]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None, None, 0
    centroid = (float(xs.mean()), float(ys.mean()))
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return centroid, bbox, int(xs.size)


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def _fixed(points: Iterable[tuple[float, float]]) -> np.ndarray:
    """Pixel-centre float coordinates to OpenCV fixed point (pixel i covers [i - 0.5, i + 0.5])."""
    arr = np.asarray(list(points), dtype=np.float64)
    return np.round(arr * _SUBPIXEL).astype(np.int32).reshape(-1, 1, 2)


def _poly(canvas: np.ndarray, points: Iterable[tuple[float, float]]) -> None:
    cv2.fillPoly(canvas, [_fixed(points)], 255, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)


def _disc(canvas: np.ndarray, cx: float, cy: float, r: float, value: int = 255) -> None:
    centre = (round(cx * _SUBPIXEL), round(cy * _SUBPIXEL))
    radius = max(round(r * _SUBPIXEL), 1)
    cv2.circle(canvas, centre, radius, value, thickness=-1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)


def star_points(cx: float, cy: float, s: float, inner_ratio: float = 0.42) -> list[tuple[float, float]]:
    """Five-pointed star, one point up, in a box of side ``s`` (vertically centred on its bbox)."""
    outer = 0.5 * s
    inner = outer * inner_ratio
    cy = cy + 0.5 * outer * (1.0 - math.cos(math.pi / 5))  # the star's bbox is top-heavy; re-centre it
    pts = []
    for i in range(10):
        r = outer if i % 2 == 0 else inner
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def draw_shape_mask(shape: str, cx: float, cy: float, s: float, size: int) -> np.ndarray:
    """Boolean ``size`` x ``size`` mask of ``shape`` centred at pixel (``cx``, ``cy``) in a box of side ``s`` px."""
    _check_name(shape, ALL_SHAPES, "shape")
    canvas = np.zeros((size, size), dtype=np.uint8)
    h = 0.5 * s
    if shape == "circle":
        _disc(canvas, cx, cy, h)
    elif shape == "square":
        q = 0.43 * s
        _poly(canvas, [(cx - q, cy - q), (cx + q, cy - q), (cx + q, cy + q), (cx - q, cy + q)])
    elif shape == "triangle":
        _poly(canvas, [(cx, cy - 0.45 * s), (cx + h, cy + 0.45 * s), (cx - h, cy + 0.45 * s)])
    elif shape == "star":
        _poly(canvas, star_points(cx, cy, s))
    elif shape == "house":
        _poly(canvas, [(cx, cy - h), (cx + h, cy - 0.04 * s), (cx - h, cy - 0.04 * s)])  # roof
        w = 0.34 * s
        _poly(canvas, [(cx - w, cy - 0.06 * s), (cx + w, cy - 0.06 * s), (cx + w, cy + h), (cx - w, cy + h)])
    elif shape == "snowman":
        _disc(canvas, cx, cy + 0.2 * s, 0.3 * s)
        _disc(canvas, cx, cy - 0.28 * s, 0.2 * s)
    elif shape == "ring":
        _disc(canvas, cx, cy, h)
        _disc(canvas, cx, cy, 0.26 * s, value=0)
    return canvas > 0


def texture_pattern(texture: str, size: int) -> np.ndarray:
    """Boolean map of where a texture draws its pattern colour (fixed phase: identical in every image)."""
    _check_name(texture, TEXTURES, "texture")
    cell = size / 16.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    if texture == "plain":
        return np.zeros((size, size), dtype=bool)
    if texture == "striped":  # vertical stripes one cell wide
        return (np.floor(xx / cell).astype(np.int64) % 2) == 1
    if texture == "checkered":  # squares two cells wide
        return ((np.floor(xx / (2 * cell)) + np.floor(yy / (2 * cell))).astype(np.int64) % 2) == 1
    # dotted: a dot in the middle of every 2x2-cell square
    px = (xx + 0.5) % (2 * cell) - cell
    py = (yy + 0.5) % (2 * cell) - cell
    return px * px + py * py <= (0.45 * cell) ** 2


_PATTERN_CACHE: dict[tuple[str, int], np.ndarray] = {}


def _cached_pattern(texture: str, size: int) -> np.ndarray:
    key = (texture, size)
    if key not in _PATTERN_CACHE:
        _PATTERN_CACHE[key] = texture_pattern(texture, size)
    return _PATTERN_CACHE[key]


def render_background(background: str, texture: str, size: int) -> np.ndarray:
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = COLORS[background]
    if texture != "plain":
        img[_cached_pattern(texture, size)] = secondary_color(background)
    return img


def render_image(scene: SceneSpec, size: int = 128, caption_text: str | None = None) -> tuple[np.ndarray, GroundTruth]:
    """Render ``scene`` to a ``size`` x ``size`` RGB uint8 image and its exact :class:`GroundTruth`."""
    img = render_background(scene.background, scene.texture, size)
    full_masks = []
    for obj in scene.objects:
        mask = draw_shape_mask(obj.shape, obj.x * size - 0.5, obj.y * size - 0.5, obj.size * size, size)
        img[mask] = COLORS[obj.color]
        full_masks.append(mask)
    objects: list[ObjectTruth] = []
    for i, obj in enumerate(scene.objects):
        visible = full_masks[i].copy()
        for later in full_masks[i + 1 :]:
            visible &= ~later
        centroid, bbox, area = _mask_stats(visible)
        objects.append(ObjectTruth(obj.shape, obj.color, visible, centroid, bbox, area, COLORS[obj.color]))
    text = caption(scene) if caption_text is None else caption_text
    return img, GroundTruth(size, scene.background, scene.texture, objects, text)


def render_video(spec: VideoSceneSpec) -> tuple[np.ndarray, list[GroundTruth]]:
    """Render a clip: ``(num_frames, size, size, 3)`` uint8 frames and one :class:`GroundTruth` per frame."""
    text = spec.caption
    frames, truths = [], []
    for f in range(spec.num_frames):
        img, gt = render_image(spec.scene_at(f), spec.size, caption_text=text)
        frames.append(img)
        truths.append(gt)
    return np.stack(frames), truths


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def caption(scene: SceneSpec, motion: MotionSpec | str | None = None) -> str:
    """Plain-English caption: ``"a red circle moving right on a blue background"``.

    The motion (of the first object) is named only when given; without it the caption describes a still
    image. Two objects read ``"a red circle and a blue square on a yellow striped background"``.
    """
    if isinstance(motion, str):
        motion = MotionSpec(motion)
    parts = []
    for i, obj in enumerate(scene.objects):
        phrase = obj.phrase
        if i == 0 and motion is not None:
            phrase += " " + motion.phrase
        parts.append(phrase)
    subject = " and ".join(parts) if parts else "nothing"
    bg = scene.background_name
    return f"{subject} on {article(bg)} {bg} background"


# --------------------------------------------------------------------------------------------------
# Random scenes
# --------------------------------------------------------------------------------------------------


def triple_key(color: str, shape: str, background_name: str) -> str:
    return f"{color}|{shape}|{background_name}"


def is_held_out(color: str, shape: str, background_name: str, modulus: int = 12) -> bool:
    """Whether a ``(colour, shape, background)`` combination is reserved for evaluation (about 1 in 12).

    A fixed hash, so the split is the same everywhere; every single colour, shape and background still
    appears in training through other combinations.
    """
    return zlib.crc32(triple_key(color, shape, background_name).encode()) % modulus == 0


def all_triples(textures: Sequence[str] = TEXTURES) -> list[tuple[str, str, str]]:
    out = []
    for bg in COLOR_NAMES:
        for tex in textures:
            name = bg if tex == "plain" else f"{bg} {tex}"
            for color in COLOR_NAMES:
                if color == bg:
                    continue
                for shape in ALL_SHAPES:
                    out.append((color, shape, name))
    return out


def _pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _place_object(
    rng: np.random.Generator,
    objects: list[ObjectSpec],
    background: str,
    bg_name: str,
    size_range: tuple[float, float],
    colors: Sequence[str],
    shapes: Sequence[str],
    margin: float,
    exclude: Callable[[str, str, str], bool] | None,
    tries: int = 50,
) -> ObjectSpec | None:
    """One object wholly inside the frame, clear of ``objects`` and coloured unlike them and the background.

    Up to ``tries`` draws from ``rng``; ``None`` when none fits.
    """
    lo, hi = size_range
    for _t in range(tries):
        color = _pick(rng, colors)
        shape = _pick(rng, shapes)
        if color == background or any(o.color == color for o in objects):
            continue
        if exclude is not None and exclude(color, shape, bg_name):
            continue
        s = float(rng.uniform(lo, hi))
        half = 0.5 * s + margin
        x = float(rng.uniform(half, 1.0 - half))
        y = float(rng.uniform(half, 1.0 - half))
        if any(abs(x - o.x) < 0.5 * (s + o.size) + 0.02 and abs(y - o.y) < 0.5 * (s + o.size) + 0.02 for o in objects):
            continue
        return ObjectSpec(shape, color, s, x, y)
    return None


def random_scene(
    rng: np.random.Generator,
    *,
    num_objects: int | None = None,
    two_object_prob: float = 0.15,
    shapes: Sequence[str] = ALL_SHAPES,
    colors: Sequence[str] = COLOR_NAMES,
    backgrounds: Sequence[str] = COLOR_NAMES,
    textures: Sequence[str] = TEXTURES,
    texture_prob: float = 0.3,
    size_range: tuple[float, float] = (0.3, 0.5),
    two_size_range: tuple[float, float] = (0.24, 0.36),
    margin: float = 0.02,
    exclude: Callable[[str, str, str], bool] | None = None,
    max_tries: int = 200,
) -> SceneSpec:
    """A random scene: one object (or two with ``two_object_prob``) wholly inside the frame, non-overlapping,
    each coloured unlike the background (and unlike each other).

    ``exclude(colour, shape, background_name)`` rejects combinations (e.g. :func:`is_held_out` to build a
    training set). ``textures`` other than ``plain`` are used with probability ``texture_prob``.
    """
    n = num_objects if num_objects is not None else (2 if rng.random() < two_object_prob else 1)
    patterned = [t for t in textures if t != "plain"]
    for _ in range(max_tries):
        background = _pick(rng, backgrounds)
        if patterned and (rng.random() < texture_prob or "plain" not in textures):
            texture = _pick(rng, patterned)
        else:
            texture = "plain"
        bg_name = background if texture == "plain" else f"{background} {texture}"
        sizes = size_range if n == 1 else two_size_range
        objects: list[ObjectSpec] = []
        for _i in range(n):
            obj = _place_object(rng, objects, background, bg_name, sizes, colors, shapes, margin, exclude)
            if obj is None:
                break
            objects.append(obj)
        else:
            return SceneSpec(tuple(objects), background, texture)
    raise RuntimeError("random_scene: could not place the objects; loosen the constraints")


def _path_extent(motion: MotionSpec, num_frames: int) -> tuple[float, float, float, float, float]:
    """Min/max of the motion offsets over the clip, and the largest scale reached."""
    dxs, dys, scales = [], [], []
    for f in range(num_frames):
        t = 0.0 if num_frames == 1 else f / (num_frames - 1)
        dx, dy, sc = motion.offset(t)
        dxs.append(dx)
        dys.append(dy)
        scales.append(sc)
    return min(dxs), max(dxs), min(dys), max(dys), max(scales)


def random_video_spec(
    rng: np.random.Generator,
    *,
    num_frames: int = 8,
    fps: int = 8,
    size: int = 128,
    motions: Sequence[str] = MOTIONS,
    motion: str | None = None,
    num_objects: int | None = None,
    two_object_prob: float = 0.15,
    size_range: tuple[float, float] = (0.22, 0.34),
    margin: float = 0.02,
    **scene_kwargs,
) -> VideoSceneSpec:
    """A random clip whose moving object stays wholly inside the frame on every frame.

    Extra keyword arguments go to :func:`random_scene` (``shapes``, ``colors``, ``textures``, ``exclude``...).
    The second object, if any, stands still away from the first object's path.
    """
    kind = motion if motion is not None else _pick(rng, motions)
    if kind in LINEAR_MOTIONS:
        amount = float(rng.uniform(0.25, 0.4))
    elif kind == "circle":
        amount = float(rng.uniform(0.12, 0.18))
    elif kind == "bounce":
        amount = float(rng.uniform(0.2, 0.3))
    else:
        amount = None
    mspec = MotionSpec(kind, amount)
    x0, x1, y0, y1, max_scale = _path_extent(mspec, num_frames)
    n = num_objects if num_objects is not None else (2 if rng.random() < two_object_prob else 1)
    for _ in range(200):
        base = random_scene(
            rng, num_objects=n, size_range=size_range, two_size_range=size_range, margin=margin, **scene_kwargs
        )
        first = base.objects[0]
        half = 0.5 * first.size * max_scale + margin
        lo_x, hi_x = half - x0, 1.0 - half - x1
        lo_y, hi_y = half - y0, 1.0 - half - y1
        if lo_x > hi_x or lo_y > hi_y:
            continue
        first = replace(first, x=float(rng.uniform(lo_x, hi_x)), y=float(rng.uniform(lo_y, hi_y)))
        others = list(base.objects[1:])
        clear = True
        for o in others:  # keep still objects off the mover's path (checked at a few points along it)
            for f in range(num_frames):
                t = 0.0 if num_frames == 1 else f / (num_frames - 1)
                dx, dy, sc = mspec.offset(t)
                reach = 0.5 * (first.size * sc + o.size) + 0.01
                if abs(first.x + dx - o.x) < reach and abs(first.y + dy - o.y) < reach:
                    clear = False
                    break
        if not clear:
            continue
        scene = replace(base, objects=(first, *others))
        return VideoSceneSpec(scene, mspec, num_frames=num_frames, fps=fps, size=size)
    raise RuntimeError("random_video_spec: could not fit the motion in the frame; use smaller objects")


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def write_example_clip(path: str | Path, spec: VideoSceneSpec, fps: int | None = None) -> Path:
    """Render ``spec`` and write it as an H.264 mp4 (or a GIF if ``path`` ends in ``.gif``); returns the path."""
    import imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, _ = render_video(spec)
    rate = spec.fps if fps is None else fps
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, list(frames), duration=1.0 / rate, loop=0)
    else:
        imageio.mimsave(path, list(frames), fps=rate, macro_block_size=1, codec="libx264", quality=9)
    return path


# --------------------------------------------------------------------------------------------------
# Control hints
# --------------------------------------------------------------------------------------------------

#: Grey level of the nearest (last drawn) object in :func:`render_depth_hint`; each object further back is
#: ``DEPTH_HINT_STEP`` darker. The background is 0.
DEPTH_HINT_NEAR = 255
DEPTH_HINT_STEP = 80


def render_depth_hint(source: GroundTruth | SceneSpec, size: int | None = None) -> np.ndarray:
    """A depth-like hint of a toy-world image: each object's silhouette filled with one grey level on black.

    Objects are ordered by drawing order (later = on top = nearer): with ``n`` objects, object ``i``
    (0-based) gets grey ``DEPTH_HINT_NEAR - DEPTH_HINT_STEP * (n - 1 - i)``, so a single object is 255 and two
    objects are 175 (back) and 255 (front); the background (textured or not) is 0. The map uses the
    *visible* masks, so a nearer object hides the one behind it exactly as in the rendered image.

    ``source`` is the :class:`GroundTruth` of :func:`render_image` (its size is used and ``size`` must be
    ``None`` or equal) or a :class:`SceneSpec` (drawn at ``size``, default 128). Returns uint8 ``(h, w, 3)``
    with three equal channels, the layout of every hint video in :mod:`tuneavideo.hints`.
    """
    if isinstance(source, GroundTruth):
        if size is not None and size != source.size:
            raise ValueError(f"the ground truth is {source.size} px but size={size} was asked for")
        size = source.size
        masks = [o.mask for o in source.objects]
    elif isinstance(source, SceneSpec):
        size = 128 if size is None else int(size)
        masks = [
            draw_shape_mask(o.shape, o.x * size - 0.5, o.y * size - 0.5, o.size * size, size) for o in source.objects
        ]
    else:
        raise TypeError(f"render_depth_hint expects a GroundTruth or a SceneSpec, got {type(source).__name__}")
    depth = np.zeros((size, size), dtype=np.uint8)
    n = len(masks)
    for i, mask in enumerate(masks):  # back to front: later objects overwrite earlier ones where they overlap
        depth[mask] = max(DEPTH_HINT_NEAR - DEPTH_HINT_STEP * (n - 1 - i), 1)
    return np.repeat(depth[:, :, None], 3, axis=2)
