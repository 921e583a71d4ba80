"""Text-to-image accuracy of a toy-world pipeline: does a generated image show the colour, shape and background
its caption asks for? Captions come from combinations seen in training and from held-out ones; each image is
read back with :mod:`tuneavideo.toyworld.classify` and compared with the caption's ground truth.

    python -m training.toyworld.evaluate --model models/toy-world --n 100 --steps 25 --guidance 5

prints one JSON object (``seen`` / ``held_out``: fraction right for colour, shape, background and all three).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np

from tuneavideo.toyworld.classify import classify_image, score_against
from tuneavideo.toyworld.render import TEXTURES, random_scene, render_image

from .data import EvalPrompt, eval_prompts


def _classify_one(args: tuple[np.ndarray, str, str, str]) -> dict[str, object]:
    img, color, shape, bg = args
    r = classify_image(img)
    out: dict[str, object] = dict(score_against(r, color, shape, bg))
    out["got"] = [r.color, r.shape, r.background_name]
    return out


def classify_batch(items: list[tuple[np.ndarray, str, str, str]], workers: int = 1) -> list[dict[str, object]]:
    if workers <= 1 or len(items) < 8:
        return [_classify_one(it) for it in items]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(_classify_one, items, chunksize=8)


def summarise(prompts: list[EvalPrompt], scores: list[dict[str, object]]) -> dict[str, object]:
    keys = ("color", "shape", "background", "all")
    out: dict[str, object] = {"n": len(prompts)}
    for k in keys:
        out[k] = round(float(np.mean([bool(s[k]) for s in scores])), 4) if scores else None
    by_tex: dict[str, list[bool]] = defaultdict(list)
    by_shape: dict[str, list[bool]] = defaultdict(list)
    for p, s in zip(prompts, scores):
        tex = p.background_name.split(" ")[1] if " " in p.background_name else "plain"
        by_tex[tex].append(bool(s["all"]))
        by_shape[p.shape].append(bool(s["shape"]))
    out["all_by_texture"] = {t: round(float(np.mean(v)), 3) for t, v in sorted(by_tex.items())}
    out["shape_by_shape"] = {t: round(float(np.mean(v)), 3) for t, v in sorted(by_shape.items())}
    return out


def generate(pipe, prompts: list[str], steps: int, guidance: float, seed: int, batch: int, size: int) -> np.ndarray:
    import torch

    images = []
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        gens = [torch.Generator(device="cpu").manual_seed(seed + i + j) for j in range(len(chunk))]
        out = pipe(
            chunk,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            height=size,
            width=size,
            output_type="np",
        )
        images.append((np.clip(out.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(images)


def evaluate_pipeline(
    pipe,
    n: int = 100,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 0,
    batch: int = 64,
    workers: int = 1,
    textures: tuple[str, ...] = TEXTURES,
    grid: Path | None = None,
    motion: bool = False,
) -> dict[str, object]:
    """Generate ``n`` images for seen and ``n`` for held-out captions and score them (see module doc).

    ``motion`` adds a random motion phrase to every caption (video-style prompts; the image should not change).
    """
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    result: dict[str, object] = {
        "settings": {
            "n": n,
            "steps": steps,
            "guidance": guidance,
            "seed": seed,
            "size": size,
            "scheduler": type(pipe.scheduler).__name__,
            "motion_phrases": motion,
        },
    }
    t0 = time.time()
    samples = {}
    for split, held in (("seen", False), ("held_out", True)):
        prompts = eval_prompts(n, held_out=held, seed=seed, textures=textures, motion=motion)
        imgs = generate(
            pipe, [p.prompt for p in prompts], steps, guidance, seed * 100_000 + int(held) * 50_000, batch, size
        )
        scores = classify_batch([(im, p.color, p.shape, p.background_name) for im, p in zip(imgs, prompts)], workers)
        result[split] = summarise(prompts, scores)
        result[split]["examples_wrong"] = [
            {"prompt": p.prompt, "got": s["got"]} for p, s in zip(prompts, scores) if not s["all"]
        ][:8]
        samples[split] = (imgs, prompts)
    result["seconds"] = round(time.time() - t0, 1)
    if grid is not None:
        save_grid(grid, samples)
    return result


def save_grid(path: Path, samples: dict[str, tuple[np.ndarray, list[EvalPrompt]]], per_split: int = 16) -> None:
    from PIL import Image

    rows = []
    for imgs, _ in samples.values():
        k = min(per_split, len(imgs))
        if k == 0:
            continue
        row = list(imgs[:k]) + [np.zeros_like(imgs[0])] * (per_split - k)
        rows.append(np.concatenate([np.concatenate(row[i : i + 8], axis=1) for i in range(0, per_split, 8)], axis=0))
    if rows:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
        with open(Path(path).with_suffix(".txt"), "w") as f:
            for split, (_, prompts) in samples.items():
                f.write(f"# {split}\n" + "\n".join(p.prompt for p in prompts[:per_split]) + "\n")


def classifier_on_renders(n: int = 200, seed: int = 0) -> dict[str, float]:
    """The classifier's own accuracy on clean renders of random scenes (an upper bound for the figures above)."""
    rng = np.random.default_rng(seed)
    hits = defaultdict(list)
    for _ in range(n):
        scene = random_scene(rng, num_objects=1)
        img, _ = render_image(scene)
        s = score_against(classify_image(img), scene.objects[0].color, scene.objects[0].shape, scene.background_name)
        for k, v in s.items():
            hits[k].append(v)
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items()}


def load_pipeline(folder: str | Path, device: str = "cpu", dtype: str = "float32"):
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder),
        torch_dtype=getattr(torch, dtype),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def evaluate_folder(
    folder: str | Path,
    n: int = 100,
    steps: int = 25,
    guidance: float = 5.0,
    seed: int = 0,
    device: str = "cpu",
    workers: int | None = None,
    batch: int | None = None,
    dtype: str = "float32",
    grid: Path | None = None,
    motion: bool = False,
) -> dict[str, object]:
    pipe = load_pipeline(folder, device, dtype)
    workers = workers if workers is not None else min(os.cpu_count() or 1, 16)
    batch = batch if batch is not None else (256 if device == "cuda" else 16)
    result = evaluate_pipeline(
        pipe, n=n, steps=steps, guidance=guidance, seed=seed, batch=batch, workers=workers, grid=grid, motion=motion
    )
    result["model"] = str(folder)
    result["device"] = device
    return result


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m training.toyworld.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=Path("models/toy-world"))
    p.add_argument("--n", type=int, default=100, help="prompts per split (seen, held out)")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="classifier processes")
    p.add_argument("--grid", type=Path, default=None, help="save a PNG grid of the first samples")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    p.add_argument("--motion", action="store_true", help="add a random motion phrase to every prompt (video-style)")
    p.add_argument(
        "--classifier-check", type=int, default=0, help="also score the classifier on this many clean renders"
    )
    args = p.parse_args(argv)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    result = evaluate_folder(
        args.model,
        n=args.n,
        steps=args.steps,
        guidance=args.guidance,
        seed=args.seed,
        device=device,
        workers=args.workers,
        batch=args.batch,
        dtype=args.dtype,
        grid=args.grid,
        motion=args.motion,
    )
    if args.classifier_check:
        result["classifier_on_renders"] = classifier_on_renders(args.classifier_check, args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
