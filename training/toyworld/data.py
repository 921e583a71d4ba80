"""Training and evaluation sets for the toy-world model: rendered in parallel, deterministic per (seed, chunk).

Kept free of torch so that worker processes start fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneavideo.toyworld.render import (
    MOTIONS,
    TEXTURES,
    MotionSpec,
    SceneSpec,
    all_triples,
    caption,
    is_held_out,
    random_scene,
    render_image,
)


@dataclass(frozen=True)
class DataConfig:
    size: int = 128
    two_object_prob: float = 0.15
    texture_prob: float = 0.3
    motion_prob: float = 0.3  # captions that also name a motion (a still frame of a clip), e.g. "... moving left ..."
    size_range: tuple[float, float] = (0.3, 0.5)
    two_size_range: tuple[float, float] = (0.24, 0.36)


def _not_for_training(color: str, shape: str, background_name: str) -> bool:
    return is_held_out(color, shape, background_name)


def draw_training_scene(rng: np.random.Generator, cfg: DataConfig = DataConfig()) -> tuple[SceneSpec, str]:
    """One training scene (never a held-out combination) and its caption, drawn from ``rng``."""
    scene = random_scene(
        rng,
        two_object_prob=cfg.two_object_prob,
        texture_prob=cfg.texture_prob,
        size_range=cfg.size_range,
        two_size_range=cfg.two_size_range,
        exclude=_not_for_training,
    )
    motion = MotionSpec(MOTIONS[int(rng.integers(len(MOTIONS)))]) if rng.random() < cfg.motion_prob else None
    return scene, caption(scene, motion)


def render_chunk(seed: int, index: int, count: int, cfg: DataConfig = DataConfig()) -> tuple[np.ndarray, list[str]]:
    """``count`` training images (never a held-out combination) and their captions; depends only on the args."""
    import cv2

    cv2.setNumThreads(1)
    rng = np.random.default_rng([seed, index])
    images = np.empty((count, cfg.size, cfg.size, 3), dtype=np.uint8)
    captions = []
    for i in range(count):
        scene, text = draw_training_scene(rng, cfg)
        images[i], _ = render_image(scene, cfg.size)
        captions.append(text)
    return images, captions


def _run_job(job: tuple[Callable[..., Any], tuple]) -> Any:
    render, args = job
    return render(*args)


def iter_chunks(
    render: Callable[..., Any],
    n: int,
    seed: int,
    cfg: DataConfig = DataConfig(),
    workers: int | None = None,
    chunk: int = 1000,
    lead: tuple = (),
) -> Iterator[Any]:
    """Yield ``render(*lead, seed, index, count, cfg)`` for the chunks of a deterministic ``n``-item set, in order.

    ``render`` must be a module-level function (worker processes receive it by name). The content depends on
    ``(lead, n, seed, chunk, cfg)`` only, never on the number of worker processes.
    """
    jobs = []
    done = 0
    index = 0
    while done < n:
        count = min(chunk, n - done)
        jobs.append((render, (*lead, seed, index, count, cfg)))
        done += count
        index += 1
    workers = workers if workers is not None else min(len(jobs), os.cpu_count() or 1)
    if workers <= 1 or len(jobs) == 1:
        for job in jobs:
            yield _run_job(job)
        return
    import multiprocessing as mp

    # fork: the children only run numpy/OpenCV code, and a spawned child would re-import the whole package
    with mp.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(_run_job, jobs)


def iter_training_chunks(
    n: int, seed: int, cfg: DataConfig = DataConfig(), workers: int | None = None, chunk: int = 1000
) -> Iterator[tuple[np.ndarray, list[str]]]:
    """Yield ``(images, captions)`` chunks of a deterministic ``n``-image training set, in order."""
    return iter_chunks(render_chunk, n, seed, cfg, workers, chunk)


@dataclass(frozen=True)
class EvalPrompt:
    prompt: str
    color: str
    shape: str
    background_name: str
    held_out: bool


def eval_prompts(
    n: int, held_out: bool, seed: int = 0, textures: tuple[str, ...] = TEXTURES, motion: bool = False
) -> list[EvalPrompt]:
    """``n`` single-object prompts from held-out (or from seen) combinations, spread evenly over them.

    With ``motion`` every prompt also names a random motion ("... moving left on ..."), as video prompts do.
    """
    triples = [t for t in all_triples(textures) if is_held_out(*t) == held_out]
    rng = np.random.default_rng([seed, int(held_out)])
    order = rng.permutation(len(triples))
    picks = [triples[order[i % len(triples)]] for i in range(n)]
    out = []
    for color, shape, bg_name in picks:
        parts = bg_name.split(" ")
        texture = parts[1] if len(parts) > 1 else "plain"
        from tuneavideo.toyworld.render import ObjectSpec, SceneSpec

        scene = SceneSpec((ObjectSpec(shape, color),), parts[0], texture)
        kind = MotionSpec(MOTIONS[int(rng.integers(len(MOTIONS)))]) if motion else None
        out.append(EvalPrompt(caption(scene, kind), color, shape, bg_name, held_out))
    return out
