"""Toy world: renderer, captions, classifier, the --smoke training mode and the embedded model folder."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from training.toyworld.data import eval_prompts, render_chunk
from tuneavideo.toyworld.classify import classify_image, motion_direction, score_truth
from tuneavideo.toyworld.render import (
    ALL_SHAPES,
    COLORS,
    LINEAR_MOTIONS,
    MotionSpec,
    ObjectSpec,
    SceneSpec,
    VideoSceneSpec,
    caption,
    is_held_out,
    random_scene,
    random_video_spec,
    render_image,
    render_video,
    write_example_clip,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "toy-world"


# ---------------------------------------------------------------------------------------------- renderer


def test_random_scenes_and_renders_are_deterministic():
    a = [random_scene(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    img1, gt1 = render_image(a[0])
    img2, gt2 = render_image(a[1])
    assert np.array_equal(img1, img2)
    assert [o.centroid for o in gt1.objects] == [o.centroid for o in gt2.objects]
    v1 = random_video_spec(np.random.default_rng(3))
    v2 = random_video_spec(np.random.default_rng(3))
    assert v1 == v2
    f1, _ = render_video(v1)
    f2, _ = render_video(v2)
    assert np.array_equal(f1, f2)


def test_ground_truth_matches_pixels():
    rng = np.random.default_rng(0)
    for _ in range(40):
        scene = random_scene(rng, two_object_prob=0.5)
        img, gt = render_image(scene, size=128)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        covered = np.zeros((128, 128), dtype=int)
        for spec, obj in zip(scene.objects, gt.objects):
            assert obj.area == obj.mask.sum() > 0
            assert (img[obj.mask] == COLORS[spec.color]).all()
            x0, y0, x1, y1 = obj.bbox
            cx, cy = obj.centroid
            assert x0 <= cx < x1 and y0 <= cy < y1
            assert abs(cx - spec.x * 128) < 0.2 * spec.size * 128 + 1
            covered += obj.mask
        assert covered.max() <= 1  # visible masks never overlap
        assert (gt.background_mask == (covered == 0)).all()


def test_occlusion_hides_the_lower_object():
    scene = SceneSpec(
        (ObjectSpec("square", "red", 0.5, 0.5, 0.5), ObjectSpec("circle", "blue", 0.3, 0.5, 0.5)), "white"
    )
    img, gt = render_image(scene)
    red, blue = gt.objects
    assert not (red.mask & blue.mask).any()
    assert red.area < (0.86 * 0.5 * 128) ** 2
    assert tuple(img[64, 64]) == COLORS["blue"]


@pytest.mark.parametrize("kind", list(LINEAR_MOTIONS))
def test_centroids_follow_linear_motion(kind):
    spec = random_video_spec(np.random.default_rng(5), motion=kind, num_objects=1)
    frames, truths = render_video(spec)
    assert frames.shape == (8, 128, 128, 3)
    centroids = [t.objects[0].centroid for t in truths]
    ux, uy = LINEAR_MOTIONS[kind]
    steps = [(b[0] - a[0]) * ux + (b[1] - a[1]) * uy for a, b in itertools.pairwise(centroids)]
    assert all(s > 0 for s in steps)  # every frame moves forward along the direction
    assert motion_direction(centroids) == kind
    # and the classifier's own centroids agree
    read = [classify_image(f).centroid for f in frames]
    assert motion_direction(read) == kind


def test_other_motions():
    base = SceneSpec((ObjectSpec("star", "yellow", 0.25, 0.6, 0.5),), "blue")
    truths = render_video(VideoSceneSpec(base, MotionSpec("circle"), num_frames=8))[1]
    c = [t.objects[0].centroid for t in truths]
    assert math.dist(c[0], c[4]) > 0.2 * 128  # half an orbit away
    assert motion_direction(c) == "still" or math.dist(c[0], c[-1]) < math.dist(c[0], c[4])
    areas = [t.objects[0].area for t in render_video(VideoSceneSpec(base, MotionSpec("grow")))[1]]
    assert areas == sorted(areas) and areas[-1] > 2 * areas[0]
    ys = [t.objects[0].centroid[1] for t in render_video(VideoSceneSpec(base, MotionSpec("bounce"), num_frames=9))[1]]
    assert ys[4] < ys[0] - 20 and abs(ys[8] - ys[0]) < 1
    still = render_video(VideoSceneSpec(base, MotionSpec("still"), num_frames=4))[0]
    assert all(np.array_equal(still[0], f) for f in still)


def test_video_objects_stay_in_frame():
    rng = np.random.default_rng(11)
    for _ in range(25):
        spec = random_video_spec(rng)
        _, truths = render_video(spec)
        first = [t.objects[0] for t in truths]
        assert all(o.area > 0 for o in first)
        full = [o.area for o in first]
        if spec.motion.kind not in ("grow", "shrink"):
            assert max(full) - min(full) <= 0.15 * max(full) + 4  # never clipped by the border


# ---------------------------------------------------------------------------------------------- captions


def test_captions():
    scene = SceneSpec((ObjectSpec("circle", "red"),), "blue")
    assert caption(scene) == "a red circle on a blue background"
    assert caption(scene, MotionSpec("right")) == "a red circle moving right on a blue background"
    assert caption(scene, "up-left") == "a red circle moving up and left on a blue background"
    textured = SceneSpec((ObjectSpec("square", "orange"), ObjectSpec("snowman", "white")), "orange", "striped")
    assert caption(textured) == "an orange square and a white snowman on an orange striped background"
    spec = VideoSceneSpec(scene, MotionSpec("bounce"))
    assert spec.caption == "a red circle bouncing on a blue background"
    assert render_video(spec)[1][0].caption == spec.caption
    with pytest.raises(ValueError):
        ObjectSpec("hexagon", "red")
    with pytest.raises(ValueError):
        SceneSpec((), "blue", "wavy")


def test_held_out_combinations_never_reach_training():
    _, captions = render_chunk(seed=0, index=0, count=300)
    prompts = eval_prompts(60, held_out=True)
    assert all(is_held_out(p.color, p.shape, p.background_name) for p in prompts)
    held = {p.prompt.replace(" background", "") for p in prompts}
    for c in captions:
        for h in held:
            color_shape, bg = h.split(" on ")
            assert not (color_shape in c and c.endswith(f"on {bg} background") and " and " not in c)


def test_write_example_clip(tmp_path):
    import imageio.v3 as iio

    spec = random_video_spec(np.random.default_rng(2), motion="right", num_objects=1)
    path = write_example_clip(tmp_path / "clip.mp4", spec, fps=8)
    frames = iio.imread(path, plugin="pyav") if _has_pyav() else np.stack(list(iio.imiter(path)))
    assert frames.shape[:3] == (8, 128, 128)
    truth, _ = render_video(spec)
    assert np.abs(frames.astype(int) - truth.astype(int)).mean() < 12  # lossy, but the same clip


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- classifier


def test_classifier_on_clean_renders():
    rng = np.random.default_rng(123)
    hits = []
    for _ in range(120):
        scene = random_scene(rng, two_object_prob=0.3)
        img, gt = render_image(scene)
        hits.append(score_truth(classify_image(img, gt), gt)["all"])
    assert np.mean(hits) >= 0.95


def test_classifier_reads_every_shape_and_colour():
    for i, shape in enumerate(ALL_SHAPES):
        for j, color in enumerate(COLORS):
            bg = "black" if color != "black" else "white"
            scene = SceneSpec((ObjectSpec(shape, color, 0.3 + 0.02 * (i % 4), 0.4 + 0.03 * (j % 5), 0.55),), bg)
            r = classify_image(render_image(scene)[0])
            assert (r.shape, r.color, r.background_name) == (shape, color, bg)


# ---------------------------------------------------------------------------------------------- training


def test_smoke_training_writes_a_loadable_pipeline(tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    from training.toyworld import train

    out, work = tmp_path / "pipe", tmp_path / "work"
    summary = train.main(["--smoke", "--out", str(out), "--work", str(work)])
    assert summary["unet"]["steps"] == 4 and summary["vae"]["steps"] == 3
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    pipe = StableDiffusionPipeline.from_pretrained(str(out), local_files_only=True)
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32
    assert len(pipe.tokenizer) == 49408
    image = pipe(
        "a red circle on a blue background", num_inference_steps=2, height=64, width=64, output_type="np"
    ).images
    assert image.shape == (1, 64, 64, 3)
    # resume the UNet stage from its checkpoint
    again = train.main(["--smoke", "--out", str(out), "--work", str(work), "--stages", "unet", "--resume"])
    assert again["unet"]["steps"] == 8


# ---------------------------------------------------------------------------------------------- embedded model


needs_model = pytest.mark.skipif(not (MODEL / "model_index.json").exists(), reason="models/toy-world not present")


@needs_model
def test_embedded_model_folder():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from tuneavideo.tokenizer import check_tokenizer

    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 30 * 1024 * 1024
    pipe = StableDiffusionPipeline.from_pretrained(str(MODEL), local_files_only=True)
    assert len(pipe.tokenizer) == 49408
    check_tokenizer(pipe.tokenizer)
    assert isinstance(pipe.scheduler, DDIMScheduler)
    cfg = pipe.scheduler.config
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule, cfg.num_train_timesteps) == (
        0.00085,
        0.012,
        "scaled_linear",
        1000,
    )
    assert (cfg.steps_offset, cfg.clip_sample, cfg.set_alpha_to_one) == (1, False, False)
    assert pipe.vae_scale_factor == 8 and pipe.unet.config.sample_size == 16
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert pipe.safety_checker is None


@needs_model
def test_embedded_model_draws_the_caption():
    import torch

    from training.toyworld.evaluate import load_pipeline

    pipe = load_pipeline(MODEL)
    prompts = ["a red circle on a blue background", "a yellow square on a black background"]
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is fast, and robust to a busy CI box
    try:
        out = pipe(prompts, num_inference_steps=12, guidance_scale=5.0, generator=gens, output_type="np").images
    finally:
        torch.set_num_threads(threads)
    hits = 0
    for img, (color, shape, bg) in zip(out, [("red", "circle", "blue"), ("yellow", "square", "black")]):
        r = classify_image((img * 255).round().astype(np.uint8))
        hits += (r.color, r.shape, r.background_name) == (color, shape, bg)
    assert hits >= 1  # a trained model, not noise (the model card reports the measured accuracy)
