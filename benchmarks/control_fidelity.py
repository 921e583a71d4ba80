"""Control-fidelity benchmark: do the toy-world ControlNet (canny) and T2I-Adapter (depth) make the video follow
its hints, frame by frame, while the prompt still sets the colour?

For each case (a rendered 8-frame clip of one shape moving on a plain or textured background) the hints of
the source clip are extracted (Canny edges with the app's extractor ``extract_hints(frames,
HintConfig("canny"))``; the renderer's depth-like silhouette map ``render_depth_hint``), and the embedded
toy-world model generates the clip again with a prompt that **changes the object's colour** (shape, motion and
background as the source; a colour edit is what a hint of the object's outline leaves to the prompt), through
``tuneavideo.control.build_video_control(...)`` and ``pipe(..., unet_kwargs=control.unet_kwargs)``, under four
conditions: with or without a delta tuned on the clip (``tuneavideo.tune``) and from fresh noise or from
the clip's DDIM inversion (``pipe.invert(pipe.encode_video(frames))``). Scored per frame with
``tuneavideo.toyworld.classify`` against the renderer's ground truth:

* **IoU** - of the generated object's mask (the classifier's dominant object) with the hint's object region
  (the source object's visible mask on that frame); a frame with no object found scores 0;
* **centroid error** - px between the generated object's mask centroid and the source's (a frame with no
  object found counts half the image side), also as % of the frame width;
* **prompt** - fraction of frames whose object has the prompted colour; **shape** - ... the source's shape;
* **control effect** - the same generations with the control at scale 0 (identical for both kinds: no
  residuals at all), which must follow the hints clearly worse (from noise);
* **per-frame alignment** - the hint video shifted one frame late (frame ``i`` gets hint ``i - 1``), from
  fresh noise, untuned: on every frame whose object moved between ``i - 1`` and ``i`` (mask IoU < 0.9), the
  output *follows the shift* if its object overlaps the object of source frame ``i - 1`` more than that of
  frame ``i``. A correct per-frame control follows the shift on (nearly) every such frame.

Targets of the issue (at scale 1): mean IoU >= 0.7, centroid error <= 3 % of the width, prompt >= 80 %.

    python benchmarks/control_fidelity.py --out benchmarks/control_fidelity.json --markdown benchmarks/control_fidelity.md
    python benchmarks/control_fidelity.py --cases 2 --tune-steps 0   # quick look
    # two processes, half the cases each (seconds add up: "seconds" is CPU-process time summed), then merge
    python benchmarks/control_fidelity.py --case-indices 0,2,4,6,8,10 --out a.json &
    python benchmarks/control_fidelity.py --case-indices 1,3,5,7,9,11 --out b.json; wait
    python benchmarks/control_fidelity.py merge a.json b.json --out all.json --markdown all.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/control_fidelity.py` from a source checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tuneavideo.testing import load_benchmark  # noqa: E402
from tuneavideo.toyworld.classify import Classification  # noqa: E402
from tuneavideo.toyworld.render import (  # noqa: E402
    ALL_SHAPES,
    COLOR_NAMES,
    GroundTruth,
    ObjectSpec,
    VideoSceneSpec,
    random_video_spec,
    render_depth_hint,
    render_video,
)

# Clip helpers shared with the quality benchmark (benchmarks are scripts, so it is loaded by path).
_quality = load_benchmark("quality")
to_uint8 = _quality.to_uint8
classify_clip = _quality.classify_clip
_fmt = _quality._fmt

DEFAULT_MODEL = ROOT / "models" / "toy-world"
#: kind -> (hint kind, shipped model folder)
CONTROL_MODELS: dict[str, tuple[str, Path]] = {
    "controlnet": ("canny", ROOT / "models" / "toy-world-controlnet-canny"),
    "t2i_adapter": ("depth", ROOT / "models" / "toy-world-t2i-adapter-depth"),
}
KIND_LABELS = {"controlnet": "ControlNet (canny)", "t2i_adapter": "T2I-Adapter (depth)", "none": "no control (scale 0)"}
MOTION_CYCLE = (
    "right", "left", "up", "down", "up-right", "down-left", "circle", "bounce", "grow", "shrink", "down-right", "up-left",
)  # fmt: skip
CONDITIONS = (("untuned", "noise"), ("untuned", "inversion"), ("tuned", "noise"), ("tuned", "inversion"))
TARGETS = {"iou": 0.7, "centroid_pct": 3.0, "prompt": 0.8}
MOVED_IOU = 0.9  # consecutive source masks overlapping less than this count as "the object moved"


# --------------------------------------------------------------------------------------------------
# Cases and hints
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case(_quality.ClipCase):
    """A source clip and its colour edit."""

    target_color: str
    edit_spec: VideoSceneSpec

    @property
    def prompt(self) -> str:
        return self.edit_spec.caption

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "motion": self.motion, "source": self.source_prompt, "prompt": self.prompt}


def make_case(index: int, num_frames: int = 8, size: int = 128, seed: int = 0) -> Case:
    """Case ``index``: deterministic in its arguments; motions take turns, a few backgrounds are textured."""
    rng = np.random.default_rng([seed, index, 5])
    motion = MOTION_CYCLE[index % len(MOTION_CYCLE)]
    spec = random_video_spec(
        rng, num_frames=num_frames, size=size, motion=motion, num_objects=1, shapes=ALL_SHAPES, texture_prob=0.25
    )
    obj = spec.scene.objects[0]
    pool = [c for c in COLOR_NAMES if c not in (obj.color, spec.scene.background)]
    color = pool[int(rng.integers(len(pool)))]
    moved: ObjectSpec = replace(obj, color=color)
    edit = replace(spec, scene=replace(spec.scene, objects=(moved,)))
    return Case(index, spec, color, edit)


def make_cases(n: int, num_frames: int = 8, size: int = 128, seed: int = 0) -> list[Case]:
    return [make_case(i, num_frames, size, seed) for i in range(n)]


def clip_hints(frames: np.ndarray, truths: Sequence[GroundTruth]) -> dict[str, np.ndarray]:
    """The hint videos of a source clip: ``{"canny": ..., "depth": ...}``, uint8 ``(f, h, w, 3)``."""
    from tuneavideo.hints import HintConfig, extract_hints

    return {
        "canny": extract_hints(frames, HintConfig(kind="canny", low_threshold=100, high_threshold=200)),
        "depth": np.stack([render_depth_hint(t) for t in truths]),
    }


def shift_late(hints: np.ndarray, frames: int = 1) -> np.ndarray:
    """The hint video ``frames`` frames late: frame ``i`` gets hint ``max(i - frames, 0)``."""
    index = np.maximum(np.arange(len(hints)) - frames, 0)
    return hints[index]


# --------------------------------------------------------------------------------------------------
# Metrics (numpy only)
# --------------------------------------------------------------------------------------------------


def mask_iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return 0.0
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def mask_centroid(mask: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(mask)
    return (float(xs.mean()), float(ys.mean())) if xs.size else None


def frame_scores(
    results: Sequence[Classification], truths: Sequence[GroundTruth], color: str | None = None, shape: str | None = None
) -> list[dict[str, Any]]:
    """Per frame: IoU and centroid error (px) of the dominant object against ``truths[i].objects[0]``,
    and whether its colour / shape are ``color`` / ``shape``."""
    out = []
    for res, truth in zip(results, truths):
        ref = truth.objects[0]
        size = truth.size
        if res.dominant is None or ref.area == 0:
            out.append({"found": False, "iou": 0.0, "centroid_px": 0.5 * size, "color": False, "shape": False})
            continue
        c = mask_centroid(res.mask)
        err = math.dist(c, ref.centroid) if c is not None and ref.centroid is not None else 0.5 * size
        out.append(
            {
                "found": True,
                "iou": mask_iou(res.mask, ref.mask),
                "centroid_px": err,
                "color": color is not None and res.color == color,
                "shape": shape is not None and res.shape == shape,
            }
        )
    return out


def alignment(results: Sequence[Classification], truths: Sequence[GroundTruth], shift: int = 1) -> dict[str, Any]:
    """Does an output made from hints ``shift`` frames late follow the late hints?

    Over frames ``i >= shift`` whose source object moved (mask IoU of frames ``i - shift`` and ``i`` below
    :data:`MOVED_IOU`): ``follows`` = fraction where the output object overlaps source frame ``i - shift``
    more than source frame ``i``; also the mean IoU against the shifted and the unshifted truth.
    """
    follows, iou_shifted, iou_unshifted = [], [], []
    for i in range(shift, len(results)):
        late, now = truths[i - shift].objects[0].mask, truths[i].objects[0].mask
        if mask_iou(late, now) >= MOVED_IOU:
            continue
        mask = results[i].mask
        a, b = mask_iou(mask, late), mask_iou(mask, now)
        follows.append(a > b)
        iou_shifted.append(a)
        iou_unshifted.append(b)
    return {
        "frames": len(follows),
        "follows": float(np.mean(follows)) if follows else None,
        "iou_shifted": float(np.mean(iou_shifted)) if iou_shifted else None,
        "iou_unshifted": float(np.mean(iou_unshifted)) if iou_unshifted else None,
    }


def summarise_frames(frames: Sequence[dict[str, Any]], size: int) -> dict[str, Any]:
    if not frames:
        return {}
    err = float(np.mean([f["centroid_px"] for f in frames]))
    return {
        "frames": len(frames),
        "iou": float(np.mean([f["iou"] for f in frames])),
        "centroid_px": err,
        "centroid_pct": 100.0 * err / size,
        "prompt": float(np.mean([f["color"] for f in frames])),
        "shape": float(np.mean([f["shape"] for f in frames])),
        "found": float(np.mean([f["found"] for f in frames])),
    }


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    model: str = str(DEFAULT_MODEL)
    controlnet: str = str(CONTROL_MODELS["controlnet"][1])
    t2i_adapter: str = str(CONTROL_MODELS["t2i_adapter"][1])
    cases: int = 12
    frames: int = 8
    steps: int = 20
    guidance: float = 5.0
    tune_steps: int = 60
    learning_rate: float = 1e-4
    kinds: tuple[str, ...] = ("controlnet", "t2i_adapter")
    conditions: tuple[tuple[str, str], ...] = CONDITIONS
    scale0: bool = True
    shifted: bool = True
    device: str = "cpu"
    seed: int = 0
    case_indices: tuple[int, ...] | None = None


def load(settings: Settings) -> tuple[Any, dict[str, Any]]:
    """The toy-world pipeline (fp32) and the control models, loaded once."""
    import torch

    from tuneavideo import TuneAVideoPipeline
    from tuneavideo.control import ControlSpec, load_control_model

    pipe = TuneAVideoPipeline.from_pretrained(settings.model, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(settings.device)
    models = {}
    for kind in ("controlnet", "t2i_adapter"):
        hint, _ = CONTROL_MODELS[kind]
        spec = ControlSpec(kind, getattr(settings, kind), hint)
        models[kind] = load_control_model(spec, torch_dtype=torch.float32, device=settings.device)
    return pipe, models


def generate(
    pipe: Any,
    prompt: str,
    kind: str,
    model: Any,
    model_path: str,
    hints: np.ndarray,
    latents: Any,
    settings: Settings,
    scale: float = 1.0,
) -> np.ndarray:
    """One controlled generation: uint8 ``(f, h, w, 3)``."""
    import torch

    from tuneavideo.control import ControlSpec, build_video_control

    hint_kind = CONTROL_MODELS[kind][0]
    spec = ControlSpec(kind, model_path, hint_kind, scale=scale)
    control = build_video_control(
        [spec], [hints], models=[model], device=settings.device, dtype=torch.float32, unet=pipe.unet,
        guidance_scale=settings.guidance,
    )  # fmt: skip
    control.reset()
    video = pipe(
        prompt,
        latents=latents,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
        unet_kwargs=control.unet_kwargs,
    ).videos[0]
    control.reset()
    return to_uint8(video)


def run_case(
    pipe: Any, models: dict[str, Any], case: Case, settings: Settings, log: Any = sys.stderr
) -> list[dict[str, Any]]:
    """Every condition, kind, scale-0 and shifted generation of one case: one row each."""
    import torch

    from tuneavideo import TuneConfig, tune

    frames, truths = render_video(case.spec)
    hints = clip_hints(frames, truths)
    size = case.spec.size
    obj = case.spec.scene.objects[0]
    base = {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}
    rows: list[dict[str, Any]] = []
    paths = {"controlnet": settings.controlnet, "t2i_adapter": settings.t2i_adapter}
    conditions = list(settings.conditions)
    for tuned in ("untuned", "tuned"):
        inits = [i for t, i in conditions if t == tuned]
        if not inits:
            continue
        t0 = time.perf_counter()
        if tuned == "tuned":
            if settings.tune_steps <= 0:
                continue
            tune(
                pipe, frames, case.source_prompt,
                TuneConfig(max_train_steps=settings.tune_steps, learning_rate=settings.learning_rate,
                           mixed_precision="no", seed=case.seed),
            )  # fmt: skip
        tune_seconds = time.perf_counter() - t0
        vsf = pipe.vae_scale_factor
        noise = torch.randn(
            (1, 4, len(frames), size // vsf, size // vsf), generator=torch.Generator().manual_seed(case.seed)
        )
        for init in inits:
            if init == "inversion":
                latents = pipe.invert(pipe.encode_video(frames), num_inference_steps=settings.steps, prompt="")
            else:
                latents = noise
            runs: list[tuple[str, float, bool]] = [(k, 1.0, False) for k in settings.kinds]
            if settings.scale0:
                runs.append(("none", 0.0, False))
            if settings.shifted and tuned == "untuned" and init == "noise":
                runs += [(k, 1.0, True) for k in settings.kinds]
            for kind, scale, shifted in runs:
                t1 = time.perf_counter()
                model_kind = settings.kinds[-1] if kind == "none" else kind  # scale 0: no residuals, any kind
                hint = hints[CONTROL_MODELS[model_kind][0]]
                if shifted:
                    hint = shift_late(hint)
                video = generate(
                    pipe, case.prompt, model_kind, models[model_kind], paths[model_kind], hint, latents.clone(),
                    settings, scale=scale,
                )  # fmt: skip
                results = classify_clip(video, truths)
                row: dict[str, Any] = {
                    "case": case.index, "motion": case.motion, "tuned": tuned, "init": init, "kind": kind,
                    "scale": scale, "shifted": shifted,
                }  # fmt: skip
                if shifted:
                    row.update(alignment(results, truths, 1))
                    row["scores"] = summarise_frames(
                        frame_scores(results, [truths[max(i - 1, 0)] for i in range(len(truths))], case.target_color,
                                     obj.shape), size)  # fmt: skip
                else:
                    row["per_frame"] = frame_scores(results, truths, case.target_color, obj.shape)
                    row["scores"] = summarise_frames(row["per_frame"], size)
                row["seconds"] = round(time.perf_counter() - t1, 2)
                if tuned == "tuned":
                    row["tune_seconds"] = round(tune_seconds, 2)
                rows.append(row)
                s = row["scores"]
                extra = f" follows {row['follows']}" if shifted else ""
                print(
                    f"case {case.index:2d} {case.motion:10s} {tuned:7s} {init:9s} {kind:11s} s={scale:g}"
                    f"{' shifted' if shifted else ''}: IoU {s['iou']:.3f} centroid {s['centroid_px']:.2f}px "
                    f"prompt {s['prompt']:.2f} shape {s['shape']:.2f}{extra} ({row['seconds']:.0f}s)",
                    file=log,
                    flush=True,
                )
        pipe.unet.load_state_dict(base)  # back to the base for the next condition / case
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(rows: Sequence[dict[str, Any]], size: int) -> dict[str, Any]:
    """Per (tuned, init, kind): frame-weighted means; per kind: the alignment of the shifted hints."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if not r["shifted"]:
            groups.setdefault(f"{r['tuned']}/{r['init']}/{r['kind']}", []).append(r)
    out: dict[str, Any] = {
        key: {**summarise_frames([f for r in rs for f in r["per_frame"]], size), "cases": len(rs)}
        for key, rs in groups.items()
    }
    shifted: dict[str, Any] = {}
    for kind in {r["kind"] for r in rows if r["shifted"]}:
        rs = [r for r in rows if r["shifted"] and r["kind"] == kind]
        n = sum(r["frames"] for r in rs)
        shifted[kind] = {
            "cases": len(rs),
            "moved_frames": n,
            "follows": _mean([r["follows"] for r in rs for _ in range(r["frames"]) if r["follows"] is not None]),
            "iou_shifted": _mean(
                [r["iou_shifted"] for r in rs for _ in range(r["frames"]) if r["iou_shifted"] is not None]
            ),
            "iou_unshifted": _mean(
                [r["iou_unshifted"] for r in rs for _ in range(r["frames"]) if r["iou_unshifted"] is not None]
            ),
        }
    return {"conditions": out, "shifted": shifted}


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Whether each (condition, kind) at scale 1 meets the issue's targets."""
    out = {}
    for key, s in summary["conditions"].items():
        if key.endswith("/none"):
            continue
        out[key] = {
            "iou": s["iou"] >= TARGETS["iou"],
            "centroid": s["centroid_pct"] <= TARGETS["centroid_pct"],
            "prompt": s["prompt"] >= TARGETS["prompt"],
        }
    return out


def _portable(settings: dict[str, Any]) -> dict[str, Any]:
    """Model paths inside this checkout written relative to it (results do not name the machine's folders)."""
    out = dict(settings)
    for key in ("model", "controlnet", "t2i_adapter"):
        try:
            out[key] = str(Path(out[key]).resolve().relative_to(ROOT))
        except ValueError:
            pass
    return out


def run(settings: Settings, log: Any = sys.stderr) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    pipe, models = load(settings)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    indices = settings.case_indices if settings.case_indices is not None else tuple(range(settings.cases))
    cases = [make_case(i, settings.frames, size, settings.seed) for i in indices]
    rows: list[dict[str, Any]] = []
    for case in cases:
        rows += run_case(pipe, models, case, settings, log)
    summary = summarise(rows, size)
    return {
        "benchmark": "tuneavideo control fidelity (toy world)",
        "settings": {**_portable(asdict(settings)), "size": size},
        "environment": {
            "device": torch.cuda.get_device_name() if settings.device.startswith("cuda") else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "summary": summary,
        "targets": {"thresholds": TARGETS, "met": targets(summary)},
        "cases": [c.describe() for c in cases],
        "results": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def markdown_table(result: dict[str, Any]) -> str:
    st = result["settings"]
    head = "| control | tuned delta | start | IoU ↑ | centroid err px (% width) ↓ | prompt colour ↑ | shape kept ↑ | frames |"
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    conds = result["summary"]["conditions"]
    for tuned, init in CONDITIONS:
        for kind in (*st["kinds"], "none"):
            s = conds.get(f"{tuned}/{init}/{kind}")
            if not s:
                continue
            tune_text = f"yes ({st['tune_steps']} steps)" if tuned == "tuned" else "no"
            start = "DDIM inversion" if init == "inversion" else "noise"
            lines.append(
                f"| {KIND_LABELS[kind]} | {tune_text} | {start} | {s['iou']:.3f} "
                f"| {s['centroid_px']:.2f} ({s['centroid_pct']:.1f} %) | {s['prompt'] * 100:.0f} % "
                f"| {s['shape'] * 100:.0f} % | {s['frames']} |"
            )
    shifted = result["summary"]["shifted"]
    if shifted:
        lines += [
            "",
            "| control | hints one frame late: output follows the late hint ↑ | IoU vs late source ↑ | IoU vs on-time source | moved frames |",
            "|---|---|---|---|---|",
        ]
        for kind in st["kinds"]:
            s = shifted.get(kind)
            if s:
                lines.append(
                    f"| {KIND_LABELS[kind]} | {_fmt(s['follows'] and s['follows'] * 100, '.0f')} % "
                    f"| {_fmt(s['iou_shifted'], '.3f')} | {_fmt(s['iou_unshifted'], '.3f')} | {s['moved_frames']} |"
                )
    lines.append("")
    lines.append(
        f"{len(result['cases'])} clips × {st['frames']} frames at {st['size']} px, prompt = source caption with the "
        f"object's colour changed; DDIM {st['steps']} steps, guidance {st['guidance']:g}; tuned delta: "
        f"{st['tune_steps']} steps at lr {st['learning_rate']:g}; {result['environment']['device']}, "
        f"{result['seconds']:.0f} s in all. Targets at scale 1: IoU ≥ {TARGETS['iou']}, centroid ≤ "
        f"{TARGETS['centroid_pct']:g} % of the width, prompt ≥ {TARGETS['prompt'] * 100:.0f} %."
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--controlnet", default=Settings.controlnet, help="ControlNet folder (canny)")
    ap.add_argument("--t2i-adapter", default=Settings.t2i_adapter, help="T2I-Adapter folder (depth)")
    ap.add_argument("--cases", type=int, default=Settings.cases)
    ap.add_argument("--case-indices", default=None, help="comma-separated case indices (overrides --cases)")
    ap.add_argument("--frames", type=int, default=Settings.frames)
    ap.add_argument("--steps", type=int, default=Settings.steps, help="DDIM steps for inversion and sampling")
    ap.add_argument("--guidance", type=float, default=Settings.guidance)
    ap.add_argument("--tune-steps", type=int, default=Settings.tune_steps, help="0: skip the tuned conditions")
    ap.add_argument("--lr", type=float, default=Settings.learning_rate, help="tuning learning rate")
    ap.add_argument("--kinds", default="controlnet,t2i_adapter")
    ap.add_argument("--conditions", default=",".join(f"{t}/{i}" for t, i in CONDITIONS))
    ap.add_argument("--no-scale0", action="store_true")
    ap.add_argument("--no-shifted", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a busy CPU)")
    ap.add_argument("--out", default=None, help="write the JSON result here")
    ap.add_argument("--markdown", default=None, help="write the markdown table here")
    args = ap.parse_args(argv)
    conditions = tuple(tuple(c.split("/")) for c in args.conditions.split(",") if c)
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        ap.error(f"unknown conditions {bad}; choose from {[f'{t}/{i}' for t, i in CONDITIONS]}")
    if args.tune_steps <= 0:
        conditions = tuple(c for c in conditions if c[0] != "tuned")
    return Settings(
        model=args.model,
        controlnet=args.controlnet,
        t2i_adapter=args.t2i_adapter,
        cases=args.cases,
        frames=args.frames,
        steps=args.steps,
        guidance=args.guidance,
        tune_steps=args.tune_steps,
        learning_rate=args.lr,
        kinds=tuple(k for k in args.kinds.split(",") if k),
        conditions=conditions,  # type: ignore[arg-type]
        scale0=not args.no_scale0,
        shifted=not args.no_shifted,
        device=args.device,
        seed=args.seed,
        case_indices=tuple(int(i) for i in args.case_indices.split(",")) if args.case_indices else None,
    ), args


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from runs over disjoint cases with the same settings (e.g. two processes, half the cases each)."""
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    keep = ("case_indices", "cases")
    for other in results[1:]:
        a = {k: v for k, v in first["settings"].items() if k not in keep}
        b = {k: v for k, v in other["settings"].items() if k not in keep}
        if a != b:
            raise ValueError("the runs to merge used different settings")
    cases = sorted((c for r in results for c in r["cases"]), key=lambda c: c["index"])
    if len({c["index"] for c in cases}) != len(cases):
        raise ValueError("the runs to merge share cases")
    rows = sorted((row for r in results for row in r["results"]), key=lambda row: row["case"])
    summary = summarise(rows, first["settings"]["size"])
    indices = tuple(c["index"] for c in cases)
    return {
        **first,
        "settings": {**first["settings"], "case_indices": indices, "cases": len(indices)},
        "summary": summary,
        "targets": {"thresholds": TARGETS, "met": targets(summary)},
        "cases": cases,
        "results": rows,
        "seconds": round(sum(r["seconds"] for r in results), 1),
        "merged_runs": len(results),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    if argv is None:
        argv = sys.argv[1:]
    if (
        argv and argv[0] == "merge"
    ):  # python benchmarks/control_fidelity.py merge a.json b.json --out x.json --markdown x.md
        ap = argparse.ArgumentParser(prog="control_fidelity.py merge")
        ap.add_argument("files", nargs="+")
        ap.add_argument("--out", default=None)
        ap.add_argument("--markdown", default=None)
        margs = ap.parse_args(argv[1:])
        result = merge([json.loads(Path(f).read_text()) for f in margs.files])
        if margs.out:
            Path(margs.out).write_text(json.dumps(result, indent=2) + "\n")
        table = markdown_table(result)
        if margs.markdown:
            Path(margs.markdown).write_text(table + "\n")
        print(table)
        return result
    settings, args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for path in (settings.model, settings.controlnet, settings.t2i_adapter):
        if not Path(path).is_dir():
            raise SystemExit(f"no model folder at {path}")
    result = run(settings)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(result)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    print(
        json.dumps({"summary": result["summary"], "targets": result["targets"], "seconds": result["seconds"]}, indent=2)
    )
    print()
    print(table)
    return result


if __name__ == "__main__":
    main()
