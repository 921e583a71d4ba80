"""Read a toy-world image back: background colour and texture, the dominant object's colour, mask, centroid,
bounding box and shape. Used to score generated images and videos against the renderer's ground truth.

How it works:

1. **Background.** For each texture (plain, striped, checkered, dotted) the texture's fixed pattern splits
   the image into base and pattern pixels; their medians (in CIE Lab) give a predicted background image,
   and the texture whose prediction has the lowest robust error wins. The base colour is named by the
   nearest palette colour.
2. **Objects.** Pixels far (ΔE) from the predicted background form the foreground; a small opening removes
   specks and connected components are objects. The dominant object is the largest one (or, with a
   reference, the one overlapping the reference's first object most).
3. **Colour.** Median Lab of the object's eroded interior, nearest palette colour.
4. **Shape.** Each shape's template is scaled into the object's bounding box; the best IoU (with a small
   penalty for a different aspect ratio) names the shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from .render import (
    ALL_SHAPES,
    COLOR_NAMES,
    COLORS,
    LINEAR_MOTIONS,
    TEXTURES,
    GroundTruth,
    draw_shape_mask,
    texture_pattern,
)

_ROBUST_CAP = 30.0  # ΔE beyond which a pixel's background error stops growing (objects, blotches)
_FG_THRESHOLD = 22.0  # ΔE from the predicted background that makes a pixel foreground
_TEXTURE_MARGIN = 1.0  # mean-ΔE improvement a texture must bring over a plain background
_ASPECT_PENALTY = 0.3


def to_lab(img: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(h, w, 3)`` to float32 CIE Lab (L in 0..100)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image of shape (h, w, 3), got {img.dtype} {img.shape}")
    return cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


@lru_cache(maxsize=1)
def _palette_lab() -> tuple[tuple[str, ...], np.ndarray]:
    rgb = np.array([COLORS[n] for n in COLOR_NAMES], dtype=np.uint8).reshape(1, -1, 3)
    return COLOR_NAMES, to_lab(rgb)[0]


def nearest_color(lab: np.ndarray) -> tuple[str, float]:
    """Name of the palette colour nearest to one Lab value, and its ΔE distance."""
    names, pal = _palette_lab()
    d = np.linalg.norm(pal - np.asarray(lab, dtype=np.float32)[None, :], axis=1)
    i = int(np.argmin(d))
    return names[i], float(d[i])


@lru_cache(maxsize=16)
def _pattern(texture: str, size: int) -> np.ndarray:
    return texture_pattern(texture, size)


#: Blur levels (Gaussian sigma as a fraction of the object's box) of the shape templates: generated images
#: have soft edges, and a blurred star cut at the half level loses its points, so each shape is also
#: matched in the form it takes after such a blur.
_TEMPLATE_BLURS = (0.0, 0.03, 0.06, 0.09)


@lru_cache(maxsize=1)
def _templates() -> dict[str, list[np.ndarray]]:
    """Each shape's mask (sharp and blurred, cut at 0.5) cropped to its tight bounding box, rendered large."""
    out: dict[str, list[np.ndarray]] = {}
    box = 200.0
    for shape in ALL_SHAPES:
        sharp = draw_shape_mask(shape, 127.5, 127.5, box, 256).astype(np.float32)
        variants = []
        for blur in _TEMPLATE_BLURS:
            m = cv2.GaussianBlur(sharp, (0, 0), blur * box) if blur > 0 else sharp
            m = m > 0.5
            ys, xs = np.nonzero(m)
            variants.append(m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.float32))
        out[shape] = variants
    return out


@dataclass
class ObjectEstimate:
    color: str
    color_distance: float  # ΔE between the object's median colour and the named colour
    shape: str
    shape_scores: dict[str, float]
    mask: np.ndarray
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)
    area: int


@dataclass
class Classification:
    """What :func:`classify_image` read from an image. ``objects`` is sorted by area, largest first."""

    background: str
    texture: str
    background_error: float
    objects: list[ObjectEstimate] = field(default_factory=list)
    dominant: ObjectEstimate | None = None

    @property
    def background_name(self) -> str:
        return self.background if self.texture == "plain" else f"{self.background} {self.texture}"

    @property
    def color(self) -> str | None:
        return self.dominant.color if self.dominant else None

    @property
    def shape(self) -> str | None:
        return self.dominant.shape if self.dominant else None

    @property
    def centroid(self) -> tuple[float, float] | None:
        return self.dominant.centroid if self.dominant else None

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        return self.dominant.bbox if self.dominant else None

    @property
    def mask(self) -> np.ndarray | None:
        return self.dominant.mask if self.dominant else None


def estimate_background(lab: np.ndarray) -> tuple[str, str, np.ndarray, float]:
    """Fit every texture; return ``(colour name, texture, predicted background Lab image, mean error)``."""
    h, w, _ = lab.shape
    if h != w:
        raise ValueError(f"toy-world images are square, got {h}x{w}")
    flat = lab.reshape(-1, 3)
    fits = []
    for texture in TEXTURES:
        pat = _pattern(texture, h).reshape(-1)
        if texture == "plain" or pat.all() or not pat.any():
            base = np.median(flat, axis=0)
            pred = np.broadcast_to(base, flat.shape)
            sec = base
        else:
            base = np.median(flat[~pat], axis=0)
            sec = np.median(flat[pat], axis=0)
            pred = np.where(pat[:, None], sec[None, :], base[None, :])
        err = float(np.minimum(np.linalg.norm(flat - pred, axis=1), _ROBUST_CAP).mean())
        if texture != "plain" and np.linalg.norm(base - sec) < 8.0:
            err = math.inf  # no visible pattern: not this texture
        fits.append((texture, base, sec, pred, err))
    plain_err = fits[0][4]
    best = min(fits[1:], key=lambda f: f[4])
    texture, base, sec, pred, err = best if best[4] < plain_err - _TEXTURE_MARGIN else fits[0]
    name, d_base = nearest_color(base)
    if texture in ("striped", "checkered"):  # half/half patterns: the base is the more saturated of the two
        sec_name, d_sec = nearest_color(sec)
        if d_sec + 5.0 < d_base:
            name = sec_name
    return name, texture, np.asarray(pred).reshape(h, w, 3), err


def _shape_scores(crop: np.ndarray) -> dict[str, float]:
    h, w = crop.shape
    obs = crop.astype(bool)
    scores = {}
    for shape, variants in _templates().items():
        best = -math.inf
        for k, tpl in enumerate(variants):
            fitted = cv2.resize(tpl, (w, h), interpolation=cv2.INTER_AREA) > 0.5
            inter = np.logical_and(fitted, obs).sum()
            union = np.logical_or(fitted, obs).sum()
            iou = inter / union if union else 0.0
            aspect_obs = w / h
            aspect_tpl = tpl.shape[1] / tpl.shape[0]
            score = iou - _ASPECT_PENALTY * abs(math.log(aspect_obs / aspect_tpl)) - 0.01 * k
            best = max(best, score)
        scores[shape] = float(best)
    return scores


def _refine(lab: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Re-cut a component at the half-way level between background and object colour.

    A fixed ΔE threshold cuts blurred edges too far out (more so for high-contrast colours), rounding
    shapes; the 50% level stays on the true edge of a symmetric blur.
    """
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if inner.sum() < 12:
        inner = mask
    obj = np.median(lab[inner], axis=0)
    region = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    delta = obj[None, None, :] - pred
    denom = np.maximum((delta * delta).sum(axis=2), 1e-6)
    alpha = ((lab - pred) * delta).sum(axis=2) / denom
    refined = (alpha > 0.5) & region & (denom > 100.0)  # pixels where object and background differ (ΔE>10)
    n, labels = cv2.connectedComponents(refined.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    overlap = np.bincount(labels[mask], minlength=n)
    overlap[0] = 0
    best = int(np.argmax(overlap))
    return labels == best if overlap[best] > 0 else mask


def _describe(lab: np.ndarray, mask: np.ndarray) -> ObjectEstimate:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if inner.sum() < 12:
        inner = mask
    color, dist = nearest_color(np.median(lab[inner], axis=0))
    scores = _shape_scores(mask[y0:y1, x0:x1])
    shape = max(scores, key=scores.get)
    return ObjectEstimate(
        color, dist, shape, scores, mask, (float(xs.mean()), float(ys.mean())), (x0, y0, x1, y1), int(xs.size)
    )


def classify_image(
    img: np.ndarray,
    reference: GroundTruth | None = None,
    *,
    min_area_frac: float = 0.002,
    threshold: float = _FG_THRESHOLD,
) -> Classification:
    """Classify a toy-world image (uint8 RGB, square). With ``reference``, the dominant object is the one
    that overlaps the reference's first visible object most (else the largest)."""
    lab = to_lab(img)
    size = img.shape[0]
    bg, texture, pred, err = estimate_background(lab)
    diff = np.linalg.norm(lab - pred, axis=2)
    fg = (diff > threshold).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    min_area = max(int(min_area_frac * size * size), 4)
    objects = []
    for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1 if n > 1 else []:
        if stats[i, cv2.CC_STAT_AREA] < min_area:
            break
        objects.append(_describe(lab, _refine(lab, pred, labels == i)))
    result = Classification(bg, texture, err, objects)
    if objects:
        result.dominant = objects[0]
        ref = next((o for o in reference.objects if o.area > 0), None) if reference is not None else None
        if ref is not None:
            overlaps = [np.logical_and(o.mask, ref.mask).sum() for o in objects]
            if max(overlaps) > 0:
                result.dominant = objects[int(np.argmax(overlaps))]
    return result


def score_against(result: Classification, color: str, shape: str, background_name: str) -> dict[str, bool]:
    """Booleans ``color``, ``shape``, ``background`` and ``all`` for one expected (colour, shape, background)."""
    c = result.color == color
    s = result.shape == shape
    b = result.background_name == background_name
    return {"color": c, "shape": s, "background": b, "all": c and s and b}


def score_truth(result: Classification, truth: GroundTruth, index: int = 0) -> dict[str, bool]:
    obj = truth.objects[index]
    return score_against(result, obj.color, obj.shape, truth.background_name)


# --------------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------------


def motion_direction(centroids: list[tuple[float, float] | None], size: int = 128, still_frac: float = 0.05) -> str:
    """Name the straight-line motion (``left``, ``up-right``...) or ``still`` from a centroid track.

    ``still`` when the net displacement is under ``still_frac`` of the image side. Curved motions
    (``circle``, ``bounce``) and size changes are not told apart here.
    """
    pts = [c for c in centroids if c is not None]
    if len(pts) < 2:
        return "still"
    dx, dy = pts[-1][0] - pts[0][0], pts[-1][1] - pts[0][1]
    if math.hypot(dx, dy) < still_frac * size:
        return "still"
    angle = math.atan2(dy, dx)
    best, best_cos = "still", -2.0
    for name, (ux, uy) in LINEAR_MOTIONS.items():
        cos = math.cos(angle - math.atan2(uy, ux))
        if cos > best_cos:
            best, best_cos = name, cos
    return best
