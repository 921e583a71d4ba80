"""Per-frame control hints (pose, depth, canny) for ControlNet / T2I-Adapter conditioning.

Every hint is an ``uint8`` RGB image of the same size as its frame, in the format the standard
Stable Diffusion 1.5 ControlNets and T2I-Adapters were trained on:

* ``canny``: OpenCV Canny edges, white on black (weight-free, always available with OpenCV);
* ``pose``: an OpenPose-18 (COCO) body skeleton in the standard OpenPose colours on black. It comes
  from ``controlnet_aux``'s OpenposeDetector when that package imports and its weights load, or
  else from the bundled ``mediapipe==0.10.21`` BlazePose model, whose 33 landmarks are mapped to
  the 18 OpenPose keypoints and drawn here;
* ``depth``: relative depth from a ``transformers`` depth-estimation model (Depth Anything, DPT) or
  ``controlnet_aux``'s MiDaS, normalised once per clip (not per frame, which would flicker),
  near = bright, as three equal channels; or, for clips of the embedded toy world
  (``depth_backend="toyworld"``, weight-free), the objects' silhouettes at grey 255 on black: the
  depth-like map the toy-world T2I-Adapter was trained on.

Heavy optional packages (cv2, mediapipe, transformers, controlnet_aux) are imported lazily, and a
missing one raises :class:`~tuneavideo.errors.MissingDependencyError` naming what to install. Loaded
detectors belong to a :class:`HintModels` the caller owns (no module-level caches): pass one to
:func:`extract_hints` to reuse them across calls, and ``close()`` it to free them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, MissingDependencyError, ModelLoadError, VideoError
from .progress import ProgressCallback, ProgressReporter

logger = logging.getLogger(__name__)

HINT_KINDS = ("pose", "depth", "canny")
POSE_BACKENDS = ("auto", "openpose", "mediapipe")
DEPTH_BACKENDS = ("transformers", "midas", "toyworld")

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
DEFAULT_ANNOTATORS = "lllyasviel/Annotators"  # controlnet_aux's weights repo (OpenPose, MiDaS)

# Bump when the drawing or normalisation changes, so cached hints are recomputed.
HINTS_VERSION = 1

MEDIAPIPE_INSTALL = '"mediapipe==0.10.21"'
CONTROLNET_AUX_INSTALL = "controlnet_aux (it also needs a working torchvision and timm)"

# --------------------------------------------------------------------------------------------
# OpenPose-18 (COCO body) conventions: keypoint order, the limbs drawn, and their colours (RGB).
# --------------------------------------------------------------------------------------------
OPENPOSE_KEYPOINTS = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

# The 17 limbs of the standard body drawing, as 0-based keypoint index pairs.
OPENPOSE_LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7),
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

# One hue per keypoint (and per limb, by limb index), stepping round the colour wheel.
OPENPOSE_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

LIMB_BRIGHTNESS = 0.6  # limbs are drawn at 60 % of their colour, joints at full colour

# BlazePose (33 landmarks) index for each OpenPose keypoint; None = the neck, computed as the
# midpoint of the two shoulders. BlazePose "left"/"right" are the person's own sides, as in OpenPose.
_BLAZEPOSE_FOR_OPENPOSE = (
    0, None,
    12, 14, 16,
    11, 13, 15,
    24, 26, 28,
    23, 25, 27,
    5, 2, 8, 7,
)  # fmt: skip
_BLAZE_LEFT_SHOULDER, _BLAZE_RIGHT_SHOULDER = 11, 12


@dataclass(frozen=True)
class HintConfig:
    """How to turn frames into control hints. Hashable, so it can go into cache keys."""

    kind: str
    # canny
    low_threshold: int = 100
    high_threshold: int = 200
    # depth
    depth_model: str = DEFAULT_DEPTH_MODEL  # hub id or local folder (transformers backend)
    depth_backend: str = "transformers"  # "transformers" | "midas" (controlnet_aux) | "toyworld" (silhouettes)
    depth_invert: bool | None = None  # None: invert only models that predict metric depth
    # pose
    pose_backend: str = "auto"  # "auto" | "openpose" (controlnet_aux) | "mediapipe"
    pose_model: str = DEFAULT_ANNOTATORS  # controlnet_aux weights: hub id or local folder
    pose_min_visibility: float = 0.5  # mediapipe keypoints below this are not drawn
    pose_tracking: bool = True  # mediapipe: track the person across frames (smoother video)
    # shared
    detect_resolution: int = 512  # short side the detectors work at; pose strokes scale with it
    annotators_model: str = DEFAULT_ANNOTATORS  # controlnet_aux MiDaS weights
    # runtime only: never part of the cache key
    device: str | None = None  # torch device for depth models; None = cuda if available
    depth_batch_size: int = 4

    def __post_init__(self) -> None:
        if self.kind not in HINT_KINDS:
            raise InputError(f"hint kind must be one of {HINT_KINDS}, got {self.kind!r}")
        if not (0 <= self.low_threshold <= self.high_threshold):
            raise InputError(
                f"canny thresholds need 0 <= low <= high, got low={self.low_threshold}, high={self.high_threshold}"
            )
        if self.pose_backend not in POSE_BACKENDS:
            raise InputError(f"pose_backend must be one of {POSE_BACKENDS}, got {self.pose_backend!r}")
        if self.depth_backend not in DEPTH_BACKENDS:
            raise InputError(f"depth_backend must be one of {DEPTH_BACKENDS}, got {self.depth_backend!r}")
        if not (0.0 <= self.pose_min_visibility <= 1.0):
            raise InputError(f"pose_min_visibility must be in [0, 1], got {self.pose_min_visibility}")
        if self.detect_resolution < 64:
            raise InputError(f"detect_resolution must be >= 64, got {self.detect_resolution}")
        if self.depth_batch_size < 1:
            raise InputError(f"depth_batch_size must be >= 1, got {self.depth_batch_size}")
        if not self.depth_model:
            raise InputError("depth_model must name a hub id or a local folder")


# Which config fields change the hints of each kind (the cache key hashes only these).
_KEY_FIELDS = {
    "canny": ("low_threshold", "high_threshold"),
    "pose": ("pose_backend", "pose_model", "pose_min_visibility", "pose_tracking", "detect_resolution"),
    "depth": ("depth_model", "depth_backend", "depth_invert", "detect_resolution", "annotators_model"),
}


def hint_cache_key(video_key: str, config: HintConfig) -> str:
    """sha256 hex digest of a video's key plus the parts of ``config`` that change its hints.

    Runtime-only fields (``device``, ``depth_batch_size``) and fields of other kinds are left out,
    so e.g. changing the canny thresholds does not invalidate cached pose hints. For
    ``pose_backend="auto"`` the key also records whether controlnet_aux is installed.
    """
    params: dict[str, Any] = {name: getattr(config, name) for name in _KEY_FIELDS[config.kind]}
    if config.kind == "pose" and config.pose_backend == "auto":
        params["controlnet_aux_installed"] = importlib.util.find_spec("controlnet_aux") is not None
    payload = {"video": str(video_key), "kind": config.kind, "params": params, "version": HINTS_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# optional imports
# --------------------------------------------------------------------------------------------
def _import_cv2(feature: str = "control hints"):
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(feature, "opencv-python-headless") from exc
    return cv2


def _import_mediapipe_pose():
    """The legacy ``mp.solutions.pose`` module, which only mediapipe 0.10.x (<= 0.10.21) bundles."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise MissingDependencyError("pose hints (mediapipe backend)", MEDIAPIPE_INSTALL) from exc
    solutions = getattr(mp, "solutions", None)
    pose_module = getattr(solutions, "pose", None) if solutions is not None else None
    if pose_module is None:
        version = getattr(mp, "__version__", "?")
        raise MissingDependencyError(
            f"pose hints (mediapipe {version} has no bundled pose model; this feature needs 0.10.21)",
            MEDIAPIPE_INSTALL,
        )
    return pose_module


def _controlnet_aux_importable() -> bool:
    try:
        importlib.import_module("controlnet_aux")
    except Exception:  # ImportError, or e.g. a broken torchvision raising RuntimeError on import
        return False
    return True


def _import_controlnet_aux(feature: str):
    try:
        return importlib.import_module("controlnet_aux")
    except Exception as exc:
        raise MissingDependencyError(feature, CONTROLNET_AUX_INSTALL) from exc


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    """Unambiguously a filesystem path (hub ids look like ``org/name``)."""
    return os.path.isabs(name) or name.startswith(("./", "../", "~", ".\\"))


def _not_available(what: str, model: str, exc: BaseException | None = None) -> ModelLoadError:
    where = "offline (HF_HUB_OFFLINE=1)" if _offline() else "here"
    detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return ModelLoadError(
        f"The {what} {model!r} is not available {where}. Download it first "
        f"(e.g. `hf download {model}` on a machine with internet, then copy the cache), or point the "
        f"config at a local folder that holds it.{detail}"
    )


# --------------------------------------------------------------------------------------------
# loaded detectors, owned by the caller
# --------------------------------------------------------------------------------------------
def _load_annotator(detector: str, model: str, feature: str, what: str):
    """``controlnet_aux.<detector>.from_pretrained(model)``, or a clear error naming ``what`` is missing."""
    aux = _import_controlnet_aux(feature)
    try:
        return getattr(aux, detector).from_pretrained(model)
    except Exception as exc:
        raise _not_available(what, model, exc) from exc


class HintModels:
    """The detectors :func:`extract_hints` loads, kept until :meth:`close`: an explicit owner, not a global cache.

    Each detector loads on first use and stays for later calls; the two most recently used depth pipelines
    and OpenPose detectors and one MiDaS are kept (an older one is dropped when a new one loads). A load
    that fails keeps nothing. Thread-safe; usable again after ``close()`` (it loads afresh) and as a
    context manager. mediapipe pose is not kept here: its tracker follows one clip, so each call makes one.

        models = HintModels()
        hints = extract_hints(frames, HintConfig("depth"), models=models)
        models.close()
    """

    #: How many loaded detectors of each kind are kept (least recently used dropped first).
    KEEP = {"depth": 2, "openpose": 2, "midas": 1}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, OrderedDict[tuple[str, ...], Any]] = {kind: OrderedDict() for kind in self.KEEP}

    def depth_pipeline(self, model: str, device: str) -> Any:
        """The ``transformers`` depth-estimation pipeline of ``model`` on ``device``."""
        return self._get("depth", (model, device), lambda: _load_depth_pipeline(model, device))

    def openpose(self, model: str) -> Any:
        """controlnet_aux's ``OpenposeDetector`` with the weights of ``model`` (hub id or folder)."""
        return self._get(
            "openpose",
            (model,),
            lambda: _load_annotator(
                "OpenposeDetector", model, "pose hints (openpose backend)", "OpenPose annotator weights"
            ),
        )

    def midas(self, model: str) -> Any:
        """controlnet_aux's ``MidasDetector`` with the weights of ``model`` (hub id or folder)."""
        return self._get(
            "midas",
            (model,),
            lambda: _load_annotator("MidasDetector", model, "depth hints (midas backend)", "MiDaS annotator weights"),
        )

    def loaded(self) -> list[tuple[str, tuple[str, ...]]]:
        """``(kind, key)`` of every detector held now, oldest first within a kind."""
        with self._lock:
            return [(kind, key) for kind, held in self._held.items() for key in held]

    def close(self) -> None:
        """Drop every loaded detector (and return cached CUDA memory when torch is in use)."""
        with self._lock:
            for held in self._held.values():
                held.clear()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def __enter__(self) -> HintModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, kind: str, key: tuple[str, ...], load: Callable[[], Any]) -> Any:
        with self._lock:  # held while loading: two threads never load the same detector twice
            held = self._held[kind]
            if key in held:
                held.move_to_end(key)
                return held[key]
            model = load()
            held[key] = model
            while len(held) > self.KEEP[kind]:
                held.popitem(last=False)
            return model


# --------------------------------------------------------------------------------------------
# input checks and small helpers
# --------------------------------------------------------------------------------------------
def _check_frames(frames: Any) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise InputError(f"frames must be a numpy array of shape (f, h, w, 3), got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4):
        raise InputError(f"frames must have shape (f, h, w, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (0..255), got {frames.dtype}")
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise InputError(f"frames must hold at least one non-empty frame, got shape {frames.shape}")
    return np.ascontiguousarray(frames[..., :3])


def _resize(cv2, image: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if nearest:
        interp = cv2.INTER_NEAREST
    elif height <= image.shape[0] and width <= image.shape[1]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interp)


def _per_frame(frames: np.ndarray, hint: Callable[[np.ndarray], np.ndarray], reporter: ProgressReporter) -> np.ndarray:
    """``hint(frame) -> (h, w, 3)`` uint8 on every frame, one progress step each."""
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        out[i] = hint(frame)
        reporter.step(i + 1)
    return out


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=-1)


# --------------------------------------------------------------------------------------------
# canny
# --------------------------------------------------------------------------------------------
def canny_hint(frame: np.ndarray, low_threshold: int = 100, high_threshold: int = 200) -> np.ndarray:
    """White Canny edges on black, (h, w, 3) uint8, computed on the RGB frame at its own size."""
    cv2 = _import_cv2("canny hints")
    edges = cv2.Canny(np.ascontiguousarray(frame), low_threshold, high_threshold)
    return _grey_to_rgb(edges)


# --------------------------------------------------------------------------------------------
# pose
# --------------------------------------------------------------------------------------------
def _stroke_sizes(height: int, width: int, detect_resolution: int) -> tuple[int, int]:
    """Limb half-width and joint radius: 4 px on a canvas whose short side is ``detect_resolution``."""
    scale = min(height, width) / float(detect_resolution)
    size = max(1, int(round(4 * scale)))
    return size, size


def draw_openpose(
    keypoints: np.ndarray,
    height: int,
    width: int,
    *,
    min_visibility: float = 0.5,
    stick_width: int = 4,
    joint_radius: int = 4,
) -> np.ndarray:
    """Draw one OpenPose-18 body on a black (height, width, 3) RGB canvas.

    ``keypoints`` is (18, 3): x, y in pixels and a visibility in [0, 1]; keypoints below
    ``min_visibility`` are skipped, with their limbs. Limbs are filled ellipses ``2*stick_width``
    wide in 60 % of their colour; joints are filled circles in full colour on top.
    """
    cv2 = _import_cv2("pose hints")
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (len(OPENPOSE_KEYPOINTS), 3):
        raise InputError(f"keypoints must have shape (18, 3), got {kp.shape}")
    shown = kp[:, 2] >= min_visibility
    shown &= kp[:, 2] > 0
    limbs = np.zeros((height, width, 3), dtype=np.uint8)
    for limb_index, (a, b) in enumerate(OPENPOSE_LIMBS):
        if not (shown[a] and shown[b]):
            continue
        (xa, ya), (xb, yb) = kp[a, :2], kp[b, :2]
        centre = (int(round((xa + xb) / 2)), int(round((ya + yb) / 2)))
        half_length = int(round(math.hypot(xb - xa, yb - ya) / 2))
        angle = int(round(math.degrees(math.atan2(yb - ya, xb - xa))))
        outline = cv2.ellipse2Poly(centre, (half_length, stick_width), angle, 0, 360, 1)
        cv2.fillConvexPoly(limbs, outline, OPENPOSE_COLORS[limb_index])
    canvas = (limbs.astype(np.float32) * LIMB_BRIGHTNESS).astype(np.uint8)
    for index in np.flatnonzero(shown):
        x, y = kp[index, :2]
        cv2.circle(canvas, (int(round(x)), int(round(y))), joint_radius, OPENPOSE_COLORS[index], thickness=-1)
    return canvas


def _blazepose_to_openpose(landmarks, height: int, width: int) -> np.ndarray:
    """Map mediapipe's 33 normalised landmarks to OpenPose-18 (x, y in pixels, visibility)."""
    raw = np.array([(lm.x * width, lm.y * height, lm.visibility) for lm in landmarks], dtype=np.float64)
    out = np.zeros((len(OPENPOSE_KEYPOINTS), 3), dtype=np.float64)
    for op_index, blaze_index in enumerate(_BLAZEPOSE_FOR_OPENPOSE):
        if blaze_index is None:
            left, right = raw[_BLAZE_LEFT_SHOULDER], raw[_BLAZE_RIGHT_SHOULDER]
            out[op_index] = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2, min(left[2], right[2]))
        else:
            out[op_index] = raw[blaze_index]
    # BlazePose extrapolates landmarks outside the picture; those cannot be drawn.
    outside = (out[:, 0] < 0) | (out[:, 0] > width - 1) | (out[:, 1] < 0) | (out[:, 1] > height - 1)
    out[outside, 2] = 0.0
    out[:, 2] = np.clip(out[:, 2], 0.0, 1.0)
    return out.astype(np.float32)


class _MediapipePose:
    """A mediapipe BlazePose (model_complexity=1, the only one bundled) used as a context manager."""

    def __init__(self, static_image_mode: bool) -> None:
        pose_module = _import_mediapipe_pose()
        self._pose = pose_module.Pose(
            static_image_mode=static_image_mode,
            model_complexity=1,
            smooth_landmarks=not static_image_mode,
            enable_segmentation=False,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    def keypoints(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        result = self._pose.process(np.ascontiguousarray(frame[..., :3]))
        if result.pose_landmarks is None:
            return np.zeros((len(OPENPOSE_KEYPOINTS), 3), dtype=np.float32)
        return _blazepose_to_openpose(result.pose_landmarks.landmark, height, width)

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> _MediapipePose:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pose_keypoints(frame: np.ndarray) -> np.ndarray:
    """OpenPose-18 keypoints of the most prominent person in one RGB frame, via mediapipe.

    Returns float32 (18, 3): x, y in pixels and a visibility in [0, 1] (0 for keypoints outside the
    frame). No person gives all zeros. Order: :data:`OPENPOSE_KEYPOINTS`.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] not in (3, 4) or frame.dtype != np.uint8:
        raise InputError("frame must be a uint8 numpy array of shape (h, w, 3)")
    with _MediapipePose(static_image_mode=True) as detector:
        return detector.keypoints(frame)


def _resolve_pose_backend(config: HintConfig) -> str:
    if config.pose_backend != "auto":
        return config.pose_backend
    return "openpose" if _controlnet_aux_importable() else "mediapipe"


def _pose_hints_openpose(frames: np.ndarray, config: HintConfig, detector, reporter: ProgressReporter) -> np.ndarray:
    """controlnet_aux's OpenPose drawing of every frame, at the frame's size (nearest-neighbour)."""
    cv2 = _import_cv2("pose hints")
    out = np.zeros_like(frames)
    for i, frame in enumerate(frames):
        height, width = frame.shape[:2]
        hint = detector(frame, detect_resolution=config.detect_resolution, image_resolution=min(height, width))
        hint = np.asarray(hint, dtype=np.uint8)
        if hint.ndim == 2:
            hint = _grey_to_rgb(hint)
        out[i] = _resize(cv2, hint[..., :3], height, width, nearest=True)
        reporter.step(i + 1)
    return out


def _pose_hints_mediapipe(frames: np.ndarray, config: HintConfig, reporter: ProgressReporter) -> np.ndarray:
    height, width = frames.shape[1:3]
    stick, radius = _stroke_sizes(height, width, config.detect_resolution)
    out = np.zeros_like(frames)
    with _MediapipePose(static_image_mode=not config.pose_tracking) as detector:
        for i, frame in enumerate(frames):
            kp = detector.keypoints(frame)
            out[i] = draw_openpose(
                kp, height, width, min_visibility=config.pose_min_visibility, stick_width=stick, joint_radius=radius
            )
            reporter.step(i + 1)
    return out


def _pose_hints(frames: np.ndarray, config: HintConfig, reporter: ProgressReporter, models: HintModels) -> np.ndarray:
    """Pose hints by the configured backend; ``auto`` falls back to mediapipe when OpenPose cannot load."""
    _import_cv2("pose hints")
    backend = _resolve_pose_backend(config)
    if backend == "openpose":
        try:
            detector = models.openpose(config.pose_model)
        except ModelLoadError as exc:
            if config.pose_backend == "auto" and importlib.util.find_spec("mediapipe") is not None:
                logger.warning("OpenPose weights unavailable (%s); falling back to mediapipe pose", exc)
                return _pose_hints_mediapipe(frames, config, reporter)
            raise
        return _pose_hints_openpose(frames, config, detector, reporter)
    if config.pose_backend == "auto":
        try:
            _import_mediapipe_pose()
        except MissingDependencyError as exc:
            raise MissingDependencyError(
                "pose hints (needs mediapipe, or controlnet_aux with its OpenPose weights)", MEDIAPIPE_INSTALL
            ) from exc
    return _pose_hints_mediapipe(frames, config, reporter)


# --------------------------------------------------------------------------------------------
# depth
# --------------------------------------------------------------------------------------------
def normalize_depth(depth: np.ndarray, invert: bool = False) -> np.ndarray:
    """Relative depth (f, h, w) of a whole clip -> (f, h, w, 3) uint8, one min/max for the clip.

    Larger input values become brighter (disparity-like outputs of DPT / Depth Anything / MiDaS:
    near = bright). ``invert=True`` first takes 1/depth, for models that predict metric distance.
    A constant clip gives all zeros.
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 3:
        raise InputError(f"depth must have shape (f, h, w), got {d.shape}")
    if invert:
        d = 1.0 / np.maximum(d, 1e-6)
    finite = np.isfinite(d)
    if not finite.any():
        return np.zeros(d.shape + (3,), dtype=np.uint8)
    lo, hi = float(d[finite].min()), float(d[finite].max())
    if not hi > lo:
        return np.zeros(d.shape + (3,), dtype=np.uint8)
    scaled = np.where(finite, (d - lo) / (hi - lo), 0.0)
    grey = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    return _grey_to_rgb(grey)


def _torch_device(config: HintConfig) -> str:
    if config.device:
        return config.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_depth_pipeline(model: str, device: str):
    """A ``transformers`` depth-estimation pipeline from a hub id or a local folder."""
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError("depth hints", "transformers") from exc
    local_folder = os.path.isdir(os.path.expanduser(model))
    if not local_folder and _looks_like_path(model):
        raise ModelLoadError(f"depth model folder {model!r} does not exist")
    source = os.path.expanduser(model) if local_folder else model
    try:
        return transformers.pipeline(
            "depth-estimation", model=source, device=device, local_files_only=local_folder or _offline()
        )
    except (OSError, ValueError, KeyError) as exc:
        raise _not_available("depth model", model, exc) from exc


def _depth_is_metric(pipe) -> bool:
    cfg = getattr(getattr(pipe, "model", None), "config", None)
    if cfg is None:
        return False
    return getattr(cfg, "depth_estimation_type", None) == "metric" or getattr(cfg, "model_type", "") == "zoedepth"


def _raw_depth_transformers(
    frames: np.ndarray, config: HintConfig, reporter: ProgressReporter, models: HintModels
) -> tuple[np.ndarray, bool]:
    """Raw per-frame depth ``(f, h, w)`` float32 at the frames' size, and whether the model is metric."""
    from PIL import Image

    cv2 = _import_cv2("depth hints")
    pipe = models.depth_pipeline(config.depth_model, _torch_device(config))
    height, width = frames.shape[1:3]
    raw = np.zeros(frames.shape[:3], dtype=np.float32)
    bs = config.depth_batch_size
    for start in range(0, len(frames), bs):
        batch = [Image.fromarray(frame) for frame in frames[start : start + bs]]
        results = pipe(batch, batch_size=len(batch))
        if isinstance(results, dict):
            results = [results]
        for offset, result in enumerate(results):
            pred = result["predicted_depth"]
            pred = pred.detach().float().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred, np.float32)
            pred = np.squeeze(pred)
            if pred.ndim != 2:
                raise ModelLoadError(f"depth model {config.depth_model!r} returned depth of shape {pred.shape}")
            if pred.shape != (height, width):
                pred = cv2.resize(pred.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            raw[start + offset] = pred
            reporter.step(start + offset + 1)
    return raw, _depth_is_metric(pipe)


def _raw_depth_midas(
    frames: np.ndarray, config: HintConfig, reporter: ProgressReporter, models: HintModels
) -> np.ndarray:
    """Raw MiDaS inverse depth per frame (the detector's own output is normalised per frame)."""
    import torch

    cv2 = _import_cv2("depth hints")
    detector = models.midas(config.annotators_model)
    net = detector.model
    device = next(net.parameters()).device
    height, width = frames.shape[1:3]
    scale = config.detect_resolution / min(height, width)
    work_h = max(64, int(round(height * scale / 64.0)) * 64)
    work_w = max(64, int(round(width * scale / 64.0)) * 64)
    raw = np.zeros(frames.shape[:3], dtype=np.float32)
    with torch.no_grad():
        for i, frame in enumerate(frames):
            work = _resize(cv2, frame, work_h, work_w)
            x = torch.from_numpy(work).float().to(device) / 127.5 - 1.0
            pred = net(x.permute(2, 0, 1).unsqueeze(0))[0]
            pred = np.squeeze(pred.float().cpu().numpy())
            raw[i] = cv2.resize(pred, (width, height), interpolation=cv2.INTER_LINEAR)
            reporter.step(i + 1)
    return raw


TOYWORLD_SIZE = 128  # the side the toy world is rendered (and its classifier tuned) at


def toyworld_depth_hint(frame: np.ndarray) -> np.ndarray:
    """The depth-like hint of a toy-world frame, read from its pixels: object silhouettes at 255 on black.

    The background (plain or textured) is estimated and every object that stands out of it is filled
    with grey 255 (:func:`tuneavideo.toyworld.classify.classify_image` does the segmentation). On a
    one-object clip this is the map ``tuneavideo.toyworld.render.render_depth_hint`` draws from the
    renderer's ground truth; with several objects all get 255 (their order in depth cannot be read
    from one frame), where the renderer would draw the back ones darker. Frames of any size are
    segmented at the toy world's 128 px and the mask scaled back. Returns uint8 ``(h, w, 3)``.
    """
    cv2 = _import_cv2("toy-world depth hints")
    from .toyworld.classify import classify_image

    h, w = frame.shape[:2]
    side = TOYWORLD_SIZE
    result = classify_image(np.ascontiguousarray(_resize(cv2, frame, side, side)))  # no-op at 128 px
    mask = np.zeros((side, side), dtype=np.uint8)
    for obj in result.objects:
        mask[obj.mask] = 255
    return _grey_to_rgb(_resize(cv2, mask, h, w, nearest=True))


def _depth_hints(frames: np.ndarray, config: HintConfig, reporter: ProgressReporter, models: HintModels) -> np.ndarray:
    """Depth hints by the configured backend, normalised once for the whole clip."""
    if config.depth_backend == "toyworld":
        return _per_frame(frames, toyworld_depth_hint, reporter)
    if config.depth_backend == "midas":
        raw, metric = _raw_depth_midas(frames, config, reporter, models), False
    else:
        raw, metric = _raw_depth_transformers(frames, config, reporter, models)
    invert = metric if config.depth_invert is None else config.depth_invert
    return normalize_depth(raw, invert=invert)


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------
def extract_hints(
    frames: np.ndarray,
    config: HintConfig,
    progress: ProgressCallback | None = None,
    models: HintModels | None = None,
) -> np.ndarray:
    """One control hint per frame: (f, h, w, 3) uint8 RGB frames -> (f, h, w, 3) uint8 RGB hints.

    ``progress`` receives a :class:`~tuneavideo.progress.ProgressEvent` (stage ``"hints"``) per
    frame and may raise :class:`~tuneavideo.errors.Cancelled` to stop. ``models`` holds the loaded
    detectors and keeps them for the next call; with ``None`` a temporary :class:`HintModels` is used
    and closed before returning (every call loads its detector again).
    """
    if not isinstance(config, HintConfig):
        raise InputError(f"config must be a HintConfig, got {type(config).__name__}")
    frames = _check_frames(frames)
    owned = models is None
    models = HintModels() if models is None else models
    reporter = ProgressReporter("hints", total=len(frames), callback=progress)
    try:
        if config.kind == "canny":
            return _per_frame(frames, lambda f: canny_hint(f, config.low_threshold, config.high_threshold), reporter)
        if config.kind == "pose":
            return _pose_hints(frames, config, reporter, models)
        return _depth_hints(frames, config, reporter, models)
    finally:
        reporter.close()
        if owned:
            models.close()


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.uint32) // 257).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        a = array.astype(np.float64)
        if np.nanmax(a) <= 1.0:
            a = a * 255.0
        return np.clip(np.nan_to_num(np.round(a)), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def load_hint_video(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    *,
    kind: str | None = None,
    num_frames: int | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Read an already-made hint video (or a single image) as (f, h, w, 3) uint8 RGB.

    ``size`` is the target (height, width). Pose hints are resized with nearest-neighbour so their
    colours stay exact; the others with INTER_AREA when shrinking (linear when enlarging). Every
    ``stride``-th frame is kept, then the first ``num_frames`` (a shorter video is an error).
    """
    if kind is not None and kind not in HINT_KINDS:
        raise InputError(f"hint kind must be one of {HINT_KINDS}, got {kind!r}")
    if stride < 1:
        raise InputError(f"stride must be >= 1, got {stride}")
    if num_frames is not None and num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {num_frames}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise InputError(f"size must be (height, width) with positive values, got {size}")
    p = Path(path)
    if not p.is_file():
        raise VideoError(f"hint video not found: {p}")
    import imageio.v3 as iio

    try:
        arr = np.asarray(iio.imread(p))
    except Exception as exc:
        raise VideoError(f"cannot read hint video {p}: {exc}") from exc
    if arr.ndim == 2:  # one grey image
        arr = arr[None, ..., None]
    elif arr.ndim == 3:
        arr = arr[None] if arr.shape[-1] in (3, 4) else arr[..., None]  # one colour image / grey video
    if arr.ndim != 4 or arr.shape[-1] not in (1, 2, 3, 4):
        raise VideoError(f"hint video {p} has an unsupported frame layout {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] == 2:  # grey + alpha
        arr = np.repeat(arr[..., :1], 3, axis=-1)
    arr = _to_uint8(arr[..., :3][::stride])
    if num_frames is not None:
        if len(arr) < num_frames:
            raise VideoError(f"hint video {p} has {len(arr)} frames (stride {stride}), need {num_frames}")
        arr = arr[:num_frames]
    if size is not None:
        cv2 = _import_cv2("hint videos")
        height, width = int(size[0]), int(size[1])
        arr = np.stack([_resize(cv2, np.ascontiguousarray(f), height, width, nearest=kind == "pose") for f in arr])
    return np.ascontiguousarray(arr)


__all__ = [
    "DEFAULT_DEPTH_MODEL",
    "HINT_KINDS",
    "OPENPOSE_COLORS",
    "OPENPOSE_KEYPOINTS",
    "OPENPOSE_LIMBS",
    "HintConfig",
    "HintModels",
    "canny_hint",
    "draw_openpose",
    "extract_hints",
    "hint_cache_key",
    "load_hint_video",
    "normalize_depth",
    "pose_keypoints",
]
