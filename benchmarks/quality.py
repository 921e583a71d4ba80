"""Quality benchmark: one-shot tuning, editing and text-to-video on toy-world clips, scored by the toy-world classifier.

For each case (a rendered 8-frame clip of one shape moving on a plain or textured background, with its
caption) the model is tuned on the clip with :func:`tuneavideo.tune`, the clip is DDIM-inverted, and:

* **edit** - the inverted noise is sampled with an edited caption (the object's colour, its shape or the
  background colour changed): *edit accuracy* is the fraction of frames in which the classifier reads the
  target attribute (*edit all*: target attribute and every other attribute right), *motion error* the
  mean distance in px between the edited object's centre (bounding-box centre) and the source's on every
  frame (a frame with no object found counts half the image side), *background flicker* the mean absolute
  change (0-255) of background pixels between consecutive frames, away from the objects;
* **reconstruct** - the same noise sampled with the source caption: *PSNR* against the source clip;
* **text-to-video** - random noise sampled with the motion words of the source caption and a new object
  (other colour and shape): *motion transfer* is whether the direction of the generated object's path is
  the source's (straight-line motions only), *t2v colour* whether its colour is the prompt's;
* **loss** - the denoising loss on the source clip at fixed timesteps and noise, after tuning / before.

Ablations (the paper's component study) rerun every case with one part changed: no tuning (the inflated
image model as is), no temporal attention (hooks off, ``attn_temp`` not trained), full-frame attention
instead of sparse-causal (every frame attends to all frames), per-frame attention (no cross-frame
attention at all) and a quarter of the tuning steps. Prints one JSON object and a markdown table.

    python benchmarks/quality.py                       # models/toy-world, 20 cases, with ablations
    python benchmarks/quality.py --subset ci --no-ablations
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/quality.py` from a source checkout
    sys.path.insert(0, str(ROOT))

import numpy as np

from tuneavideo.toyworld.classify import Classification, classify_image, motion_direction
from tuneavideo.toyworld.render import (
    BASIC_SHAPES,
    COLOR_NAMES,
    LINEAR_MOTIONS,
    GroundTruth,
    ObjectSpec,
    VideoSceneSpec,
    random_video_spec,
    render_video,
)

DEFAULT_MODEL = "models/toy-world"
EDIT_KINDS = ("color", "shape", "background")
#: Motions of the cases, in turn: the eight straight directions (whose transfer to text-to-video is
#: scored) and two curved ones (edits only).
MOTION_CYCLE = ("right", "left", "up", "down", "up-right", "down-left", "circle", "down-right", "up-left", "bounce")
#: The CPU-sized subset run by the tests: a shape edit (left) and a colour edit (down-left), plain backgrounds.
CI_CASES = (1, 15)
PSNR_CAP = 100.0  # dB reported for identical clips (keeps the JSON finite)


# --------------------------------------------------------------------------------------------------
# Metrics (numpy only; unit-tested on rendered ground truth)
# --------------------------------------------------------------------------------------------------


def to_uint8(video: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` frames (as the pipeline returns) to uint8; uint8 passes through."""
    if video.dtype == np.uint8:
        return video
    return (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray, cap: float = PSNR_CAP) -> float:
    """PSNR in dB of two uint8 clips (or images) of the same shape; identical inputs give ``cap``."""
    a, b = to_uint8(np.asarray(a)), to_uint8(np.asarray(b))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return cap
    return min(cap, 10.0 * math.log10(255.0**2 / mse))


def box_centre(bbox: tuple[int, int, int, int] | None) -> tuple[float, float] | None:
    """Centre ``(x, y)`` in pixel coordinates of a box ``(x0, y0, x1, y1)`` with exclusive ends."""
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox
    return (0.5 * (x0 + x1 - 1), 0.5 * (y0 + y1 - 1))


def truth_centres(truths: Sequence[GroundTruth], index: int = 0) -> list[tuple[float, float] | None]:
    """Bounding-box centre of object ``index`` on every frame of a rendered clip.

    Box centres, not mask centroids: a shape edit (circle -> triangle) moves the centroid but not the box.
    """
    return [box_centre(t.objects[index].bbox) for t in truths]


def found_centres(results: Sequence[Classification]) -> list[tuple[float, float] | None]:
    """Bounding-box centre of the dominant object the classifier found on every frame (``None``: none found)."""
    return [box_centre(r.bbox) for r in results]


def motion_error(
    found: Sequence[tuple[float, float] | None], truth: Sequence[tuple[float, float] | None], miss_penalty: float
) -> float:
    """Mean distance (px) between found and true centres over frames where the truth has the object.

    A frame where nothing was found counts ``miss_penalty`` (half the image side in the benchmark:
    about what a guess anywhere in the frame scores).
    """
    if len(found) != len(truth):
        raise ValueError(f"{len(found)} found centres for {len(truth)} frames")
    errs = []
    for p, t in zip(found, truth):
        if t is None:
            continue
        errs.append(miss_penalty if p is None else math.hypot(p[0] - t[0], p[1] - t[1]))
    return float(np.mean(errs)) if errs else 0.0


def _dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    if margin <= 0:
        return mask
    import cv2

    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def background_flicker(video: np.ndarray, object_masks: Sequence[np.ndarray], margin: int = 4) -> float:
    """Mean absolute change (0-255, over RGB) of background pixels between consecutive frames.

    ``object_masks``: one boolean ``(h, w)`` mask per frame of everything that may move (source objects,
    objects found in the output); pixels within ``margin`` px of a mask in either frame are left out.
    A still background scores 0; the score rises with flicker and drift of the background.
    """
    frames = to_uint8(np.asarray(video)).astype(np.float32)
    if len(object_masks) != len(frames):
        raise ValueError(f"{len(object_masks)} masks for {len(frames)} frames")
    if len(frames) < 2:
        return 0.0
    keep = [~_dilate(np.asarray(m, dtype=bool), margin) for m in object_masks]
    diffs = []
    for i in range(len(frames) - 1):
        region = keep[i] & keep[i + 1]
        if region.any():
            diffs.append(float(np.abs(frames[i + 1] - frames[i])[region].mean()))
    return float(np.mean(diffs)) if diffs else 0.0


def object_masks(truths: Sequence[GroundTruth], results: Sequence[Classification] | None = None) -> list[np.ndarray]:
    """Per frame: the union of the source objects' masks and (if given) every object the classifier found."""
    out = []
    for i, truth in enumerate(truths):
        m = ~truth.background_mask
        if results is not None:
            for o in results[i].objects:
                m = m | o.mask
        out.append(m)
    return out


def attribute_hits(results: Sequence[Classification], kind: str, value: str) -> list[bool]:
    """Per frame: does the dominant object (or the background, for ``kind="background"``) read ``value``?"""
    if kind == "color":
        return [r.color == value for r in results]
    if kind == "shape":
        return [r.shape == value for r in results]
    if kind == "background":
        return [r.background_name == value for r in results]
    raise ValueError(f"unknown attribute {kind!r}; expected one of {EDIT_KINDS}")


def scene_hits(results: Sequence[Classification], color: str, shape: str, background_name: str) -> list[bool]:
    """Per frame: colour, shape and background all as given."""
    return [r.color == color and r.shape == shape and r.background_name == background_name for r in results]


def classify_clip(video: np.ndarray, references: Sequence[GroundTruth] | None = None) -> list[Classification]:
    """Classify every frame of a clip (uint8, or float in [0, 1]), against ``references[i]`` when given."""
    frames = to_uint8(np.asarray(video))
    refs = list(references) if references is not None else [None] * len(frames)
    return [classify_image(np.ascontiguousarray(f), r) for f, r in zip(frames, refs)]


# --------------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipCase:
    """A rendered source clip, numbered; the base of this benchmark's and control_fidelity's cases."""

    index: int
    spec: VideoSceneSpec

    @property
    def source_prompt(self) -> str:
        return self.spec.caption

    @property
    def motion(self) -> str:
        return self.spec.motion.kind

    @property
    def seed(self) -> int:
        return 1000 + self.index


@dataclass(frozen=True)
class Case(ClipCase):
    """One source clip with its edit and its text-to-video prompt."""

    edit_kind: str  # "color" | "shape" | "background"
    edit_value: str  # the target colour / shape / background name
    edit_spec: VideoSceneSpec
    t2v_spec: VideoSceneSpec  # same motion and background, another object

    @property
    def edit_prompt(self) -> str:
        return self.edit_spec.caption

    @property
    def t2v_prompt(self) -> str:
        return self.t2v_spec.caption

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "motion": self.motion,
            "source": self.source_prompt,
            "edit": {"kind": self.edit_kind, "value": self.edit_value, "prompt": self.edit_prompt},
            "t2v": self.t2v_prompt,
        }


def _other(rng: np.random.Generator, choices: Sequence[str], avoid: Sequence[str]) -> str:
    pool = [c for c in choices if c not in avoid]
    return pool[int(rng.integers(len(pool)))]


def _with_object(spec: VideoSceneSpec, **changes: str) -> VideoSceneSpec:
    obj: ObjectSpec = replace(spec.scene.objects[0], **changes)
    return replace(spec, scene=replace(spec.scene, objects=(obj,) + spec.scene.objects[1:]))


def make_case(index: int, num_frames: int = 8, size: int = 128, seed: int = 0) -> Case:
    """Case ``index``: deterministic in ``(index, num_frames, size, seed)``; motions and edit kinds take turns."""
    rng = np.random.default_rng([seed, index])
    motion = MOTION_CYCLE[index % len(MOTION_CYCLE)]
    spec = random_video_spec(
        rng, num_frames=num_frames, size=size, motion=motion, num_objects=1, shapes=BASIC_SHAPES, texture_prob=0.2
    )
    obj, scene = spec.scene.objects[0], spec.scene
    kind = EDIT_KINDS[index % len(EDIT_KINDS)]
    if kind == "color":
        value = _other(rng, COLOR_NAMES, (obj.color, scene.background))
        edit = _with_object(spec, color=value)
    elif kind == "shape":
        value = _other(rng, BASIC_SHAPES, (obj.shape,))
        edit = _with_object(spec, shape=value)
    else:
        background = _other(rng, COLOR_NAMES, (obj.color, scene.background))
        edit = replace(spec, scene=replace(scene, background=background))
        value = edit.scene.background_name
    t2v = _with_object(
        spec,
        color=_other(rng, COLOR_NAMES, (obj.color, scene.background)),
        shape=_other(rng, BASIC_SHAPES, (obj.shape,)),
    )
    return Case(index, spec, kind, value, edit, t2v)


def make_cases(n: int, num_frames: int = 8, size: int = 128, seed: int = 0) -> list[Case]:
    return [make_case(i, num_frames, size, seed) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Variants (ablations)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    tune_fraction: float = 1.0  # of --tune-steps; 0 = no tuning
    attention: str = "sparse-causal"  # see tuneavideo.ablation.ATTENTION_MODES
    temporal: bool = True
    trainable_modules: tuple[str, ...] = ("attn1.to_q", "attn2.to_q", "attn_temp")


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("full", "Tune-A-Video (full)"),
        Variant("no-tuning", "no tuning (inflated model only)", tune_fraction=0.0),
        Variant("no-temporal", "no temporal attention", temporal=False, trainable_modules=("attn1.to_q", "attn2.to_q")),
        Variant("full-frame", "full-frame attention instead of sparse-causal", attention="full-frame"),
        Variant("frame-attn", "per-frame attention (no cross-frame)", attention="frame"),
        Variant("quarter-steps", "1/4 of the tuning steps", tune_fraction=0.25),
    )
}
ABLATIONS = tuple(n for n in VARIANTS if n != "full")


@contextlib.contextmanager
def variant_model(unet: Any, variant: Variant) -> Iterator[Any]:
    from tuneavideo.ablation import attention_mode, temporal_attention_disabled

    with attention_mode(unet, variant.attention), temporal_attention_disabled(unet, not variant.temporal):
        yield unet


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    model: str = DEFAULT_MODEL
    cases: int = 20
    frames: int = 8
    tune_steps: int = 100
    learning_rate: float = 1e-4
    steps: int = 25
    guidance: float = 7.5
    device: str = "cpu"
    seed: int = 0
    variants: tuple[str, ...] = ("full",) + ABLATIONS
    case_indices: tuple[int, ...] | None = None  # overrides `cases` (the CI subset)
    save_dir: str | None = None  # write a PNG strip per case and variant here
    t2v: bool = True  # also sample text-to-video from noise (a third of the sampling cost)


LOSS_TIMESTEPS = (100, 300, 500, 700, 900)


def clip_loss(pipe: Any, latents: Any, embeds: Any, seed: int = 0, timesteps: Sequence[int] = LOSS_TIMESTEPS) -> float:
    """Denoising loss of ``pipe.unet`` on one clip's latents at fixed timesteps and fixed noise (mean MSE)."""
    import torch
    from diffusers import DDPMScheduler

    from tuneavideo.tuning import denoising_loss

    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    k = len(timesteps)
    gen = torch.Generator().manual_seed(seed)
    lat = latents.float().cpu().repeat(k, 1, 1, 1, 1)
    noise = torch.randn(lat.shape, generator=gen)
    device, dtype = pipe.unet.device, pipe.unet.dtype
    t = torch.tensor(list(timesteps), dtype=torch.long, device=device)
    with torch.no_grad():
        loss = denoising_loss(
            pipe.unet,
            scheduler,
            lat.to(device, dtype),
            embeds.to(device, dtype).expand(k, -1, -1),
            noise.to(device, dtype),
            t,
        )
    return float(loss)


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def run_case(pipe: Any, case: Case, variant: Variant, settings: Settings) -> dict[str, Any]:
    """Tune (per the variant), invert, edit, reconstruct and generate for one case; return its metrics."""
    import torch

    from tuneavideo import TuneConfig, tune

    frames, truths = render_video(case.spec)
    size = case.spec.size
    edit_truths = render_video(case.edit_spec)[1]
    t0 = time.perf_counter()
    out: dict[str, Any] = {"case": case.index, "variant": variant.name}
    with variant_model(pipe.unet, variant):
        latents = pipe.encode_video(frames)
        embeds = pipe.encode_prompt(case.source_prompt)
        out["loss_before"] = clip_loss(pipe, latents, embeds, seed=case.seed)
        steps = round(settings.tune_steps * variant.tune_fraction)
        out["tune_steps"] = steps
        if steps > 0:
            config = TuneConfig(
                max_train_steps=steps,
                learning_rate=settings.learning_rate,
                trainable_modules=variant.trainable_modules,
                mixed_precision="no",
                seed=case.seed,
            )
            delta = tune(pipe, frames, case.source_prompt, config)
            out["tune_loss_last10"] = delta.record.get("mean_loss_last_10")
        out["loss_after"] = clip_loss(pipe, latents, embeds, seed=case.seed)
        out["tune_seconds"] = round(time.perf_counter() - t0, 2)

        inverted = pipe.invert(latents, num_inference_steps=settings.steps, prompt="")
        noise = torch.randn(inverted.shape, generator=torch.Generator().manual_seed(case.seed)).to(inverted)
        # One batch: [reconstruction, edit] from the inverted noise, text-to-video from fresh noise.
        prompts, latents_in = [case.source_prompt, case.edit_prompt], [inverted, inverted]
        if settings.t2v:
            prompts.append(case.t2v_prompt)
            latents_in.append(noise)
        videos = pipe(
            prompts, latents=torch.cat(latents_in), num_inference_steps=settings.steps, guidance_scale=settings.guidance
        ).videos
    recon, edited = to_uint8(videos[0]), to_uint8(videos[1])
    t2v = to_uint8(videos[2]) if settings.t2v else None

    # reconstruction
    out["recon_psnr"] = psnr(recon, frames)
    # edit
    edit_cls = classify_clip(edited, truths)
    hits = attribute_hits(edit_cls, case.edit_kind, case.edit_value)
    obj = case.edit_spec.scene.objects[0]
    out["edit_acc"] = float(np.mean(hits))
    out["edit_all"] = float(np.mean(scene_hits(edit_cls, obj.color, obj.shape, case.edit_spec.scene.background_name)))
    out["motion_err"] = motion_error(found_centres(edit_cls), truth_centres(truths), miss_penalty=0.5 * size)
    masks = object_masks(truths, edit_cls)
    out["edit_flicker"] = background_flicker(edited, [m | e for m, e in zip(masks, object_masks(edit_truths))])
    # text-to-video
    out["t2v_direction"] = out["t2v_motion"] = out["t2v_color"] = None
    if t2v is not None:
        t2v_cls = classify_clip(t2v)
        direction = motion_direction(found_centres(t2v_cls), size=size)
        out["t2v_direction"] = direction
        out["t2v_motion"] = float(direction == case.motion) if case.motion in LINEAR_MOTIONS else None
        out["t2v_color"] = float(np.mean(attribute_hits(t2v_cls, "color", case.t2v_spec.scene.objects[0].color)))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if settings.save_dir:
        videos_out = [frames, recon, edited] + ([t2v] if t2v is not None else [])
        save_strip(Path(settings.save_dir) / f"case{case.index:02d}-{variant.name}.png", videos_out)
    return out


def save_strip(path: Path, videos: Sequence[np.ndarray]) -> Path:
    """One PNG: a row per video (source, reconstruction, edit, text-to-video), a column per frame."""
    from PIL import Image

    rows = [np.concatenate(list(to_uint8(v)), axis=1) for v in videos]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def load(model: str, device: str) -> Any:
    import torch

    from tuneavideo import TuneAVideoPipeline

    pipe = TuneAVideoPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


METRICS = (
    "loss_ratio",
    "recon_psnr",
    "edit_acc",
    "edit_all",
    "motion_err",
    "edit_flicker",
    "t2v_motion",
    "t2v_color",
    "seconds",
)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every metric over the cases of one variant (``None`` entries skipped)."""
    out: dict[str, Any] = {"cases": len(rows)}
    for m in METRICS:
        if m == "loss_ratio":
            vals = [r["loss_after"] / r["loss_before"] for r in rows if r["loss_before"] > 0]
        else:
            vals = [r.get(m) for r in rows]
        out[m] = _mean(vals)
    errs = [r["motion_err"] for r in rows]
    out["motion_err_median"] = float(np.median(errs)) if errs else None
    for kind in EDIT_KINDS:
        out[f"edit_acc_{kind}"] = _mean([r["edit_acc"] for r in rows if r.get("edit_kind") == kind])
    return out


def model_fingerprint(model: str) -> str | None:
    """First 16 hex digits of the SHA-256 of the model's UNet weights (which model version was scored)."""
    import hashlib

    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        path = Path(model) / "unet" / name
        if path.is_file():
            return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return None


def run(
    settings: Settings,
    log: Any = sys.stderr,
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every selected case and variant; ``on_case`` gets the partial result after each case."""
    import torch

    started = time.perf_counter()
    pipe = load(settings.model, settings.device)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    indices = settings.case_indices if settings.case_indices is not None else tuple(range(settings.cases))
    cases = [make_case(i, settings.frames, size, settings.seed) for i in indices]
    base_state = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in settings.variants}
    vae_psnr: list[float] = []
    done: list[Case] = []

    def result(complete: bool) -> dict[str, Any]:
        return {
            "benchmark": "tuneavideo quality (toy world)",
            "complete": complete,
            "settings": {**asdict(settings), "size": size},
            "model_fingerprint": model_fingerprint(settings.model),
            "environment": {
                "device": torch.cuda.get_device_name() if settings.device.startswith("cuda") else "cpu",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            "vae_psnr": _mean(vae_psnr),
            "summary": {name: summarise(r) for name, r in rows.items()},
            "cases": [c.describe() for c in done],
            "results": rows,
            "seconds": round(time.perf_counter() - started, 1),
        }

    for case in cases:
        frames = render_video(case.spec)[0]
        vae_psnr.append(psnr(pipe.decode_latents(pipe.encode_video(frames))[0].permute(1, 2, 3, 0).numpy(), frames))
        for name in settings.variants:
            row = run_case(pipe, case, VARIANTS[name], settings)
            row["edit_kind"] = case.edit_kind
            rows[name].append(row)
            pipe.unet.load_state_dict(base_state)  # back to the base for the next run
            if log is not None:
                print(
                    f"[{time.perf_counter() - started:7.1f}s] case {case.index:2d} {name:13s} "
                    f"loss {row['loss_before']:.4f}->{row['loss_after']:.4f} psnr {row['recon_psnr']:5.2f} "
                    f"edit {row['edit_acc']:.2f} motion {row['motion_err']:5.1f}px flicker {row['edit_flicker']:.2f} "
                    f"t2v {row['t2v_direction'] or '-'}/{case.motion} ({row['seconds']:.0f}s)",
                    file=log,
                    flush=True,
                )
        done.append(case)
        if on_case is not None:
            on_case(result(complete=False))
    return result(complete=True)


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Combine the results of shards (``--shard I/N``) of one run into one result (cases in index order)."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    keys = ("tune_steps", "learning_rate", "steps", "guidance", "frames", "seed", "model")
    for r in results[1:]:
        for k in keys:
            if r["settings"].get(k) != first["settings"].get(k):
                raise ValueError(f"shards differ in {k}: {r['settings'].get(k)!r} vs {first['settings'].get(k)!r}")
    variants = list(first["results"])
    rows = {
        v: sorted((row for r in results for row in r["results"].get(v, [])), key=lambda row: row["case"])
        for v in variants
    }
    cases = sorted((c for r in results for c in r["cases"]), key=lambda c: c["index"])
    n = [len(r["cases"]) for r in results]
    vae = [r["vae_psnr"] for r in results if r.get("vae_psnr") is not None]
    weights = [k for r, k in zip(results, n) if r.get("vae_psnr") is not None]
    return {
        **first,
        "complete": all(r.get("complete") for r in results),
        "settings": {**first["settings"], "case_indices": [c["index"] for c in cases], "cases": len(cases)},
        "vae_psnr": float(np.average(vae, weights=weights)) if vae and sum(weights) else None,
        "summary": {v: summarise(rows[v]) for v in variants},
        "cases": cases,
        "results": rows,
        "seconds": max(r["seconds"] for r in results),
        "shards": len(results),
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(result: dict[str, Any]) -> str:
    """The summary as a markdown table: one row per variant, plus the per-edit-kind accuracy of each."""
    head = (
        "| variant | tuned/untuned loss | recon PSNR (dB) ↑ | edit acc ↑ | edit all ↑ | motion err (px) ↓ "
        "| bg flicker ↓ | t2v motion ↑ | t2v colour ↑ | edit acc colour / shape / bg | s/case |"
    )
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for name, s in result["summary"].items():
        kinds = " / ".join(_fmt(s.get(f"edit_acc_{k}"), ".2f") for k in EDIT_KINDS)
        lines.append(
            f"| {VARIANTS[name].label if name in VARIANTS else name} | {_fmt(s['loss_ratio'], '.2f')} "
            f"| {_fmt(s['recon_psnr'], '.2f')} | {_fmt(s['edit_acc'], '.2f')} | {_fmt(s['edit_all'], '.2f')} "
            f"| {_fmt(s['motion_err'], '.1f')} | {_fmt(s['edit_flicker'], '.2f')} | {_fmt(s['t2v_motion'], '.2f')} "
            f"| {_fmt(s['t2v_color'], '.2f')} | {kinds} | {_fmt(s['seconds'], '.0f')} |"
        )
    st = result["settings"]
    lines.append("")
    lines.append(
        f"{len(result['cases'])} cases, {st['frames']} frames at {st['size']} px, {st['tune_steps']} tuning steps "
        f"(lr {st['learning_rate']:g}), {st['steps']} DDIM steps, guidance {st['guidance']:g}, "
        f"VAE round-trip PSNR {_fmt(result['vae_psnr'], '.2f')} dB (the ceiling for reconstruction), "
        f"{result['environment']['device']}, {result['seconds']:.0f} s in all."
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", default=DEFAULT_MODEL, help="SD-1.x pipeline folder (default: the embedded toy-world model)"
    )
    ap.add_argument("--cases", type=int, default=Settings.cases)
    ap.add_argument("--frames", type=int, default=Settings.frames)
    ap.add_argument("--tune-steps", type=int, default=Settings.tune_steps)
    ap.add_argument("--lr", type=float, default=Settings.learning_rate, help="tuning learning rate")
    ap.add_argument("--steps", type=int, default=Settings.steps, help="DDIM steps for inversion and sampling")
    ap.add_argument("--guidance", type=float, default=Settings.guidance)
    ap.add_argument("--seed", type=int, default=0, help="seed of the case set")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default on CPU: 1, robust on a busy machine)"
    )
    ap.add_argument("--subset", choices=["ci"], default=None, help=f"ci: cases {CI_CASES} (a shape and a colour edit)")
    ap.add_argument(
        "--shard", default=None, help="I/N: run only the cases whose index is I modulo N (merge with --merge)"
    )
    ap.add_argument(
        "--ablations", action=argparse.BooleanOptionalAction, default=True, help="also run the ablation variants"
    )
    ap.add_argument("--variants", default=None, help=f"comma-separated variants to run (of {', '.join(VARIANTS)})")
    ap.add_argument(
        "--t2v", action=argparse.BooleanOptionalAction, default=True, help="also score text-to-video from noise"
    )
    ap.add_argument("--out", default=None, help="write the JSON result here (also after every case)")
    ap.add_argument("--markdown", default=None, help="write the markdown table here")
    ap.add_argument(
        "--save", default=None, help="write a PNG per case and variant here (source / recon / edit / t2v rows)"
    )
    ap.add_argument(
        "--merge", nargs="+", default=None, metavar="JSON", help="merge the results of shards, print them, exit"
    )
    args = ap.parse_args(argv)
    if args.variants:
        variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    else:
        variants = ("full",) + (ABLATIONS if args.ablations else ())
    indices = CI_CASES if args.subset == "ci" else tuple(range(args.cases))
    if args.shard:
        try:
            i, n = (int(x) for x in args.shard.split("/"))
            assert 0 <= i < n
        except (ValueError, AssertionError):
            ap.error(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
        indices = tuple(k for k in indices if k % n == i)
    device = args.device
    if device is None and not args.merge:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = Settings(
        model=args.model,
        cases=len(indices),
        frames=args.frames,
        tune_steps=args.tune_steps,
        learning_rate=args.lr,
        steps=args.steps,
        guidance=args.guidance,
        device=device or "cpu",
        seed=args.seed,
        variants=variants,
        case_indices=indices,
        save_dir=args.save,
        t2v=args.t2v,
    )
    return settings, args


def _write(path: str | None, text: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    settings, args = parse_args(argv)
    if args.merge:
        result = merge([json.loads(Path(p).read_text()) for p in args.merge])
    else:
        if not (Path(settings.model) / "model_index.json").is_file():
            raise SystemExit(f"no model at {settings.model} (expected a diffusers folder with model_index.json)")
        import torch

        threads = args.threads or (1 if settings.device == "cpu" else None)
        if threads:
            torch.set_num_threads(threads)
        result = run(settings, on_case=lambda partial: _write(args.out, json.dumps(partial, indent=2)))
    text = json.dumps(result, indent=2)
    print(text)
    table = markdown_table(result)
    print()
    print(table)
    _write(args.out, text)
    _write(args.markdown, table)
    return result


if __name__ == "__main__":
    main()
