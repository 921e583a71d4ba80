"""Tests for tuneavideo.hints: canny, mediapipe pose, depth with a tiny random model, loaders.

CPU only and offline: the depth model is a tiny randomly initialised Depth Anything saved to a
temporary folder; the pose test uses mediapipe's bundled model on skimage's astronaut photo.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import sys

import numpy as np
import pytest

from tuneavideo.errors import InputError, MissingDependencyError, ModelLoadError, VideoError
from tuneavideo.hints import (
    HINT_KINDS,
    OPENPOSE_COLORS,
    OPENPOSE_KEYPOINTS,
    HintConfig,
    HintModels,
    draw_openpose,
    extract_hints,
    hint_cache_key,
    load_hint_video,
    normalize_depth,
    pose_keypoints,
)

KP = {name: i for i, name in enumerate(OPENPOSE_KEYPOINTS)}


def _has_mediapipe_pose() -> bool:
    try:
        import mediapipe as mp

        return hasattr(mp, "solutions") and hasattr(mp.solutions, "pose")
    except ImportError:
        return False


needs_mediapipe = pytest.mark.skipif(not _has_mediapipe_pose(), reason="needs mediapipe==0.10.21")


# ------------------------------------------------------------------------------ config & keys
def test_hint_kinds_and_config_validation():
    assert HINT_KINDS == ("pose", "depth", "canny")
    cfg = HintConfig("canny")
    assert (cfg.low_threshold, cfg.high_threshold, cfg.detect_resolution, cfg.pose_backend) == (100, 200, 512, "auto")
    with pytest.raises(InputError, match="hint kind"):
        HintConfig("normal")
    with pytest.raises(InputError):
        HintConfig("canny", low_threshold=200, high_threshold=100)
    with pytest.raises(InputError):
        HintConfig("pose", pose_backend="dwpose")
    with pytest.raises(InputError):
        HintConfig("depth", depth_backend="zoe")
    with pytest.raises(Exception):
        cfg.kind = "pose"  # frozen


def test_hint_cache_key():
    a = hint_cache_key("clip-1", HintConfig("canny"))
    assert len(a) == 64 and all(c in "0123456789abcdef" for c in a)
    assert a == hint_cache_key("clip-1", HintConfig("canny"))
    assert a != hint_cache_key("clip-2", HintConfig("canny"))
    assert a != hint_cache_key("clip-1", HintConfig("canny", low_threshold=50))
    assert a != hint_cache_key("clip-1", HintConfig("pose"))
    # fields of other kinds and runtime-only fields do not change the key
    assert a == hint_cache_key("clip-1", HintConfig("canny", depth_model="x/y", device="cuda", depth_batch_size=9))
    d = HintConfig("depth", depth_model="org/a")
    assert hint_cache_key("v", d) != hint_cache_key("v", HintConfig("depth", depth_model="org/b"))


def test_bad_frames_rejected():
    cfg = HintConfig("canny")
    with pytest.raises(InputError):
        extract_hints(np.zeros((8, 8, 3), np.uint8), cfg)  # missing frame axis
    with pytest.raises(InputError):
        extract_hints(np.zeros((2, 8, 8, 3), np.float32), cfg)
    with pytest.raises(InputError):
        extract_hints([np.zeros((8, 8, 3), np.uint8)], cfg)
    with pytest.raises(InputError):
        extract_hints(np.zeros((0, 8, 8, 3), np.uint8), cfg)


# ------------------------------------------------------------------------------ canny
def test_canny_edges_where_expected():
    frame = np.zeros((64, 80, 3), np.uint8)
    frame[16:48, 20:60] = 255  # a white rectangle
    frames = np.stack([frame, np.zeros_like(frame), frame])
    events = []
    out = extract_hints(frames, HintConfig("canny"), progress=events.append)

    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert set(np.unique(out)) <= {0, 255}
    edges = out[0, ..., 0] > 0
    ys, xs = np.nonzero(edges)
    # every edge pixel lies within a pixel of the rectangle's border ...
    near_border = ((np.abs(ys - 15.5) <= 1.5) | (np.abs(ys - 47.5) <= 1.5)) & (xs >= 18) & (xs <= 61)
    near_border |= ((np.abs(xs - 19.5) <= 1.5) | (np.abs(xs - 59.5) <= 1.5)) & (ys >= 14) & (ys <= 49)
    assert near_border.all()
    # ... and each side of the border is traced
    assert edges[14:18, 30].any() and edges[46:50, 30].any() and edges[30, 18:22].any() and edges[30, 58:62].any()
    assert not edges[20:44, 24:56].any()  # flat interior
    assert not edges[:10].any() and not edges[:, :12].any()  # flat background
    assert not out[1].any()  # a blank frame has no edges
    assert np.array_equal(out[0], out[2])
    assert [e.step for e in events] == [1, 2, 3] and all(e.stage == "hints" and e.total == 3 for e in events)


def test_canny_thresholds_matter():
    rng = np.random.default_rng(0)
    frame = (rng.random((1, 48, 48, 3)) * 60).astype(np.uint8) + 90  # weak texture
    low = extract_hints(frame, HintConfig("canny", low_threshold=5, high_threshold=20))
    high = extract_hints(frame, HintConfig("canny", low_threshold=400, high_threshold=800))
    assert (low > 0).sum() > (high > 0).sum()


# ------------------------------------------------------------------------------ pose
def test_draw_openpose_colours():
    kp = np.zeros((18, 3), np.float32)
    kp[KP["neck"]] = (50, 40, 1.0)
    kp[KP["right_shoulder"]] = (20, 40, 1.0)
    kp[KP["left_shoulder"]] = (80, 40, 0.9)
    kp[KP["nose"]] = (50, 15, 0.2)  # below the visibility threshold: not drawn
    canvas = draw_openpose(kp, 100, 100, min_visibility=0.5)
    assert canvas.shape == (100, 100, 3) and canvas.dtype == np.uint8
    assert tuple(canvas[40, 50]) == OPENPOSE_COLORS[1]  # neck joint, full colour
    assert tuple(canvas[40, 20]) == OPENPOSE_COLORS[2]  # right shoulder
    assert tuple(canvas[40, 80]) == OPENPOSE_COLORS[5]  # left shoulder
    # limbs: neck->right shoulder is limb 0 (red), neck->left shoulder limb 1 (orange), at 60 %
    assert tuple(canvas[40, 35]) == (153, 0, 0)
    assert tuple(canvas[40, 65]) == (153, 51, 0)
    assert not canvas[:30].any()  # nose and its limb skipped
    assert not canvas[50:].any()  # limbs are ~8 px wide ellipses, nothing far below
    assert not draw_openpose(np.zeros((18, 3)), 32, 32).any()


@pytest.fixture(scope="module")
def astronaut():
    skdata = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skdata.astronaut())  # 512x512 RGB portrait


@needs_mediapipe
def test_pose_keypoints_on_a_person(astronaut):
    kp = pose_keypoints(astronaut)
    assert kp.shape == (18, 3) and kp.dtype == np.float32
    vis = kp[:, 2] >= 0.5
    for name in ("nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye"):
        assert vis[KP[name]], name
    nose, neck = kp[KP["nose"]], kp[KP["neck"]]
    rs, ls = kp[KP["right_shoulder"]], kp[KP["left_shoulder"]]
    re, le = kp[KP["right_eye"]], kp[KP["left_eye"]]
    # the face is in the upper middle of the photo, the shoulders below it
    assert 150 < nose[0] < 300 and 60 < nose[1] < 200
    assert nose[1] < neck[1]  # nose above the neck
    assert max(re[1], le[1]) < nose[1] + 5  # eyes not below the nose
    # she faces the camera: her right shoulder is on the image's left, the neck between them
    assert rs[0] < neck[0] < ls[0]
    assert abs(neck[0] - (rs[0] + ls[0]) / 2) < 1e-3 and abs(neck[1] - (rs[1] + ls[1]) / 2) < 1e-3
    assert rs[1] > nose[1] + 40 and ls[1] > nose[1] + 40
    assert re[0] < le[0]
    # landmarks outside the picture (her legs) are marked invisible
    for name in ("right_ankle", "left_ankle"):
        assert kp[KP[name], 2] == 0.0


@needs_mediapipe
def test_pose_hint_has_openpose_colours(astronaut):
    frames = np.stack([astronaut, astronaut])
    out = extract_hints(frames, HintConfig("pose", pose_backend="mediapipe"))
    assert out.shape == frames.shape and out.dtype == np.uint8
    kp = pose_keypoints(astronaut)
    hint = out[0]
    for name in ("nose", "neck", "right_shoulder", "left_shoulder"):
        x, y = np.round(kp[KP[name], :2]).astype(int)
        patch = {tuple(c) for c in hint[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3)}
        assert OPENPOSE_COLORS[KP[name]] in patch, name
    colours = {tuple(c) for c in hint.reshape(-1, 3)}
    assert (153, 0, 0) in colours  # neck -> right shoulder limb
    assert (153, 51, 0) in colours  # neck -> left shoulder limb
    assert (0, 0, 153) in colours  # neck -> nose limb
    assert (hint.sum(-1) == 0).mean() > 0.9  # black background
    assert colours <= {(0, 0, 0)} | set(OPENPOSE_COLORS) | {tuple(int(v * 0.6) for v in c) for c in OPENPOSE_COLORS}
    assert out[1].any()


@needs_mediapipe
def test_pose_black_frames_give_black_hints():
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    out = extract_hints(frames, HintConfig("pose", pose_backend="mediapipe"))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert not out.any()
    assert not pose_keypoints(frames[0]).any()


@needs_mediapipe
def test_pose_auto_uses_mediapipe_without_controlnet_aux(monkeypatch):
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)
    out = extract_hints(np.zeros((1, 32, 32, 3), np.uint8), HintConfig("pose"))
    assert out.shape == (1, 32, 32, 3) and not out.any()


# ------------------------------------------------------------------------------ missing packages
def test_missing_cv2(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError, match="opencv"):
        extract_hints(np.zeros((1, 8, 8, 3), np.uint8), HintConfig("canny"))


def test_missing_mediapipe(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(MissingDependencyError, match="mediapipe==0.10.21") as info:
        extract_hints(frames, HintConfig("pose"))
    assert isinstance(info.value, ImportError) and "pip install" in str(info.value)
    with pytest.raises(MissingDependencyError, match="mediapipe"):
        extract_hints(frames, HintConfig("pose", pose_backend="mediapipe"))
    with pytest.raises(MissingDependencyError, match="mediapipe"):
        pose_keypoints(frames[0])


def test_mediapipe_without_solutions(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "mediapipe", types.SimpleNamespace(__version__="1.2.3"))
    with pytest.raises(MissingDependencyError, match="0.10.21"):
        pose_keypoints(np.zeros((8, 8, 3), np.uint8))


def test_missing_controlnet_aux(monkeypatch):
    monkeypatch.setitem(sys.modules, "controlnet_aux", None)
    frames = np.zeros((1, 8, 8, 3), np.uint8)
    with pytest.raises(MissingDependencyError, match="controlnet_aux"):
        extract_hints(frames, HintConfig("pose", pose_backend="openpose"))
    with pytest.raises(MissingDependencyError, match="controlnet_aux"):
        extract_hints(frames, HintConfig("depth", depth_backend="midas"))


def test_missing_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match="transformers"):
        extract_hints(np.zeros((1, 8, 8, 3), np.uint8), HintConfig("depth", device="cpu"))


# ------------------------------------------------------------------------------ depth
def test_normalize_depth_is_per_clip():
    a = np.linspace(0.0, 1.0, 16, dtype=np.float32).reshape(1, 4, 4)
    depth = np.concatenate([a, a * 0.5])  # second frame is twice as far / half the disparity
    out = normalize_depth(depth)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8
    assert out[0].max() == 255 and out[0].min() == 0
    assert out[1].max() == 128  # not stretched to 255 on its own
    assert np.array_equal(out[..., 0], out[..., 2])
    inv = normalize_depth(depth + 1.0, invert=True)  # metric distance: near (small) = bright
    assert inv[0, 0, 0, 0] == 255 and inv[0, -1, -1, 0] < inv[0, 0, 0, 0]
    assert not normalize_depth(np.full((2, 3, 3), 7.0)).any()


@pytest.fixture(scope="module")
def tiny_depth_model(tmp_path_factory):
    """A randomly initialised, ~76k-parameter Depth Anything saved like a hub checkpoint."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    backbone = transformers.Dinov2Config(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=14,
        image_size=56,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = transformers.DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 16, 16, 16],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    model = transformers.DepthAnythingForDepthEstimation(config).eval()
    folder = tmp_path_factory.mktemp("tiny-depth-anything")
    model.save_pretrained(folder)
    processor = transformers.DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14, do_pad=False
    )
    processor.save_pretrained(folder)
    return str(folder)


def _depth_frames() -> np.ndarray:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:60]
    gradient = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    grey = np.full((40, 60, 3), 128, np.uint8)
    return np.stack([gradient, noise, grey])


def test_depth_with_tiny_model(tiny_depth_model):
    from PIL import Image
    from transformers import pipeline

    frames = _depth_frames()
    cfg = HintConfig("depth", depth_model=tiny_depth_model, device="cpu", depth_batch_size=2)
    events = []
    out = extract_hints(frames, cfg, progress=events.append)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert [e.step for e in events] == [1, 2, 3]

    # one min/max for the whole clip: recompute it from the raw model output
    pipe = pipeline("depth-estimation", model=tiny_depth_model, device="cpu", local_files_only=True)
    raw = np.stack([pipe(Image.fromarray(f))["predicted_depth"].numpy() for f in frames]).astype(np.float64)
    assert raw.shape == frames.shape[:3]
    assert raw.max() > raw.min()
    expected = np.round((raw - raw.min()) / (raw.max() - raw.min()) * 255)
    assert np.abs(out[..., 0].astype(np.float64) - expected).max() <= 1
    assert out.max() == 255 and out.min() == 0
    # per-frame normalisation would stretch every frame to 0..255; clip-level does not
    assert any(f.max() < 255 or f.min() > 0 for f in out[..., 0])

    # the same config gives the same hints, also through a HintModels that keeps the loaded pipeline
    assert np.array_equal(extract_hints(frames, cfg), out)
    with HintModels() as models:
        assert np.array_equal(extract_hints(frames, cfg, models=models), out)
        pipe = models.depth_pipeline(tiny_depth_model, "cpu")
        assert np.array_equal(extract_hints(frames, cfg, models=models), out)
        assert models.depth_pipeline(tiny_depth_model, "cpu") is pipe
        assert models.loaded() == [("depth", (tiny_depth_model, "cpu"))]
    assert models.loaded() == []


def test_depth_inverted_on_request(tiny_depth_model):
    frames = _depth_frames()[:2]
    plain = extract_hints(frames, HintConfig("depth", depth_model=tiny_depth_model, device="cpu"))
    flipped = extract_hints(frames, HintConfig("depth", depth_model=tiny_depth_model, device="cpu", depth_invert=True))
    assert flipped.shape == plain.shape and not np.array_equal(flipped, plain)


def test_depth_model_not_available_offline():
    cfg = HintConfig("depth", depth_model="nobody/no-such-depth-model", device="cpu")
    with pytest.raises(ModelLoadError) as info:
        extract_hints(np.zeros((1, 16, 16, 3), np.uint8), cfg)
    msg = str(info.value)
    assert "nobody/no-such-depth-model" in msg and "offline" in msg
    assert "download" in msg.lower() and "local folder" in msg
    with pytest.raises(ModelLoadError, match="does not exist"):
        extract_hints(np.zeros((1, 16, 16, 3), np.uint8), HintConfig("depth", depth_model="/no/such/folder"))


# ------------------------------------------------------------------------------ hint videos
def test_load_hint_video_gif_and_resize(tmp_path):
    import imageio.v3 as iio

    frames = np.zeros((4, 32, 48, 3), np.uint8)
    for i in range(4):
        frames[i, 8:24, 4 + 8 * i : 16 + 8 * i] = OPENPOSE_COLORS[i]
    path = tmp_path / "pose.gif"
    iio.imwrite(path, frames, duration=100, loop=0)

    same = load_hint_video(path)
    assert same.shape == (4, 32, 48, 3) and same.dtype == np.uint8
    assert np.array_equal(same, frames)

    small = load_hint_video(path, (16, 24), kind="pose")
    assert small.shape == (4, 16, 24, 3)
    # nearest-neighbour keeps the exact pose colours, no blends
    allowed = {(0, 0, 0)} | {OPENPOSE_COLORS[i] for i in range(4)}
    assert {tuple(c) for c in small.reshape(-1, 3)} <= allowed

    big = load_hint_video(path, (64, 96), kind="depth", num_frames=2, stride=2)
    assert big.shape == (2, 64, 96, 3)
    assert np.array_equal(big[1, 20:44:4, 44:60:4], np.broadcast_to(OPENPOSE_COLORS[2], (6, 4, 3)))

    with pytest.raises(VideoError, match="need 5"):
        load_hint_video(path, num_frames=5)


def test_load_hint_video_single_and_grey_images(tmp_path):
    import imageio.v3 as iio

    grey = np.zeros((20, 30), np.uint8)
    grey[5:15, 10:20] = 200
    iio.imwrite(tmp_path / "depth.png", grey)
    out = load_hint_video(tmp_path / "depth.png", (10, 15))
    assert out.shape == (1, 10, 15, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2]) and out.max() == 200

    deep = grey.astype(np.uint16) * 257
    iio.imwrite(tmp_path / "depth16.png", deep)
    assert load_hint_video(tmp_path / "depth16.png").max() == 200

    with pytest.raises(VideoError, match="not found"):
        load_hint_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError):
        load_hint_video(tmp_path / "junk.mp4")
    with pytest.raises(InputError):
        load_hint_video(tmp_path / "depth.png", kind="normal")


# ------------------------------------------------------------------------------ controlnet_aux paths (faked)
class _FakeOpenpose:
    """Stands in for controlnet_aux.OpenposeDetector: returns a hint at its own working size."""

    loaded: list = []

    @classmethod
    def from_pretrained(cls, name):
        cls.loaded.append(name)
        if name == "missing/weights":
            raise OSError("not cached")
        return cls()

    def __call__(self, image, detect_resolution=512, image_resolution=512, **kwargs):
        from PIL import Image

        canvas = np.zeros((64, 64, 3), np.uint8)
        canvas[:32, :32] = OPENPOSE_COLORS[0]
        canvas[32:, 32:] = OPENPOSE_COLORS[7]
        return Image.fromarray(canvas)  # older controlnet_aux versions return PIL images


def test_openpose_backend_via_controlnet_aux(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "controlnet_aux", types.SimpleNamespace(OpenposeDetector=_FakeOpenpose))
    frames = np.zeros((2, 30, 50, 3), np.uint8)
    out = extract_hints(frames, HintConfig("pose", pose_backend="openpose", pose_model="local/annotators"))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert tuple(out[0, 0, 0]) == OPENPOSE_COLORS[0] and tuple(out[1, -1, -1]) == OPENPOSE_COLORS[7]
    assert {tuple(c) for c in out.reshape(-1, 3)} <= {(0, 0, 0), OPENPOSE_COLORS[0], OPENPOSE_COLORS[7]}
    assert "local/annotators" in _FakeOpenpose.loaded
    # "auto" picks controlnet_aux when it imports
    auto = extract_hints(frames[:1], HintConfig("pose", pose_model="local/annotators"))
    assert np.array_equal(auto[0], out[0])
    # an explicit openpose request with missing weights is a clear load error
    with pytest.raises(ModelLoadError, match="missing/weights"):
        extract_hints(frames, HintConfig("pose", pose_backend="openpose", pose_model="missing/weights"))


def test_hint_models_keep_detectors_until_closed(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "controlnet_aux", types.SimpleNamespace(OpenposeDetector=_FakeOpenpose))
    _FakeOpenpose.loaded.clear()
    frames = np.zeros((1, 30, 50, 3), np.uint8)
    for _ in range(2):  # no owner given: a temporary one per call, loaded each time
        extract_hints(frames, HintConfig("pose", pose_backend="openpose", pose_model="a"))
    assert _FakeOpenpose.loaded == ["a", "a"]
    models = HintModels()
    for name in ("a", "a", "b", "a", "c"):  # kept: the two most recently used
        extract_hints(frames, HintConfig("pose", pose_backend="openpose", pose_model=name), models=models)
    assert _FakeOpenpose.loaded == ["a", "a", "a", "b", "c"]
    assert models.loaded() == [("openpose", ("a",)), ("openpose", ("c",))]
    with pytest.raises(ModelLoadError):  # a failed load keeps nothing
        models.openpose("missing/weights")
    assert len(models.loaded()) == 2
    models.close()
    assert models.loaded() == []
    extract_hints(frames, HintConfig("pose", pose_backend="openpose", pose_model="a"), models=models)
    assert _FakeOpenpose.loaded[-1] == "a" and models.loaded() == [("openpose", ("a",))]


@needs_mediapipe
def test_auto_pose_falls_back_to_mediapipe_when_openpose_weights_missing(monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "controlnet_aux", types.SimpleNamespace(OpenposeDetector=_FakeOpenpose))
    out = extract_hints(np.zeros((1, 32, 32, 3), np.uint8), HintConfig("pose", pose_model="missing/weights"))
    assert out.shape == (1, 32, 32, 3) and not out.any()  # mediapipe: no person, black hint


def test_midas_backend_normalises_per_clip(monkeypatch):
    import types

    torch = pytest.importorskip("torch")

    class FakeMidasNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):  # (1, 3, h, w) in [-1, 1] -> (1, h, w) "inverse depth"
            assert x.shape[2] % 64 == 0 and x.shape[3] % 64 == 0
            return (x.mean(1) + 1.0) * self.gain

    class FakeMidasDetector:
        @classmethod
        def from_pretrained(cls, name):
            det = cls()
            det.model = FakeMidasNet()
            return det

    monkeypatch.setitem(sys.modules, "controlnet_aux", types.SimpleNamespace(MidasDetector=FakeMidasDetector))
    frames = np.stack([np.full((40, 60, 3), v, np.uint8) for v in (0, 100, 200)])
    frames[2, :, :30] = 250
    out = extract_hints(frames, HintConfig("depth", depth_backend="midas", detect_resolution=64))
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert out[0].max() == 0 and out[2].max() == 255
    assert 90 < out[1, 20, 30, 0] < 120  # mid-grey frame stays mid-grey (clip-level scaling)
