"""Command line: ``python -m tuneavideo tune|edit|generate|invert|export|presets ...``.

A tuned model is a folder: ``tuned.safetensors`` (trainable parameters only), ``tuned.json`` (base
model, source video and spec, prompt, configs, seed, versions), ``inverted.safetensors`` (DDIM noise
of the source clip) and ``source.mp4`` (the exact clip it was tuned on).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .config import (
    DEFAULT_BASE_MODEL,
    Preset,
    SampleConfig,
    VideoSpec,
    config_to_dict,
    list_presets,
    load_preset,
    replace,
)
from .errors import TuneAVideoError

logger = logging.getLogger("tuneavideo")


# ---------------------------------------------------------------------- argument groups
def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help=f"base SD-1.x: folder, hub id or single file (default: the preset's; else {DEFAULT_BASE_MODEL} on a GPU "
        "with hub access, otherwise the embedded models/toy-world)",
    )
    g.add_argument("--device", default="auto", help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    g.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="weights dtype (auto: fp16 on GPU)"
    )
    g.add_argument("--xformers", action="store_true", help="use xformers attention (GPU, when installed)")


def _add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video")
    g.add_argument("--video", help="source video (mp4/mov/webm/avi/gif)")
    g.add_argument("--frames", type=int, dest="num_frames", help="number of frames (paper: 24)")
    g.add_argument("--width", type=int, help="frame width, a multiple of 8 (paper: 512)")
    g.add_argument("--height", type=int, help="frame height, a multiple of 8 (paper: 512)")
    g.add_argument("--stride", type=int, help="keep every n-th source frame")
    g.add_argument("--start", type=float, dest="start_time", help="start time in seconds")
    g.add_argument(
        "--resize", choices=["crop", "squash"], help="centre-crop (default) or squash like the official code"
    )


def _add_sample_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, dest="num_inference_steps", help="DDIM steps (default 50)")
    g.add_argument("--guidance", type=float, dest="guidance_scale", help="classifier-free guidance (default 12.5)")
    g.add_argument("--negative-prompt", dest="negative_prompt")
    g.add_argument("--eta", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--fps", type=float, help="output fps (default: the source clip's)")
    g.add_argument("--gif", action="store_true", help="also write a GIF")
    g.add_argument("--grid", action="store_true", help="also write a PNG grid of the frames")
    g.add_argument(
        "--clip-metrics",
        nargs="?",
        const="openai/clip-vit-large-patch14",
        metavar="CLIP_MODEL",
        help="also write CLIP frame consistency and text alignment (LOVEU-TGVE) next to each video "
        "(optional CLIP hub id or folder; default openai/clip-vit-large-patch14)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tuneavideo", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tune", help="tune a base model on one video")
    p.add_argument("--preset", help=f"preset name ({', '.join(list_presets()) or 'none'}) or YAML path")
    p.add_argument("--prompt", help="caption of the source video, e.g. 'a man is skiing'")
    p.add_argument("--output", "-o", help="output folder (default: outputs/<video>-<time>)")
    _add_model_args(p)
    _add_video_args(p)
    g = p.add_argument_group("tuning")
    g.add_argument("--max-train-steps", type=int, dest="max_train_steps", help="default 500")
    g.add_argument("--lr", type=float, dest="learning_rate", help="default 3e-5")
    g.add_argument("--seed", type=int)
    g.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], dest="mixed_precision")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None, dest="gradient_checkpointing")
    g.add_argument("--trainable-modules", nargs="+", dest="trainable_modules")
    g.add_argument("--no-invert", action="store_true", help="skip DDIM inversion of the source after tuning")
    g.add_argument("--invert-steps", type=int, help="DDIM inversion steps (default 50)")

    p = sub.add_parser("edit", help="edit the tuned video with new prompt(s) (DDIM inversion + sampling)")
    p.add_argument("--tuned", required=True, help="folder written by `tune`")
    p.add_argument("--prompt", action="append", help="edit prompt; repeat for several (default: the preset's)")
    p.add_argument("--output", "-o", help="output .mp4 (one prompt) or folder")
    p.add_argument("--no-inversion", action="store_true", help="start from random noise instead of the inverted source")
    p.add_argument("--side-by-side", action="store_true", help="also write source|edit side by side")
    _add_model_args(p)
    _add_sample_args(p)

    p = sub.add_parser("generate", help="text-to-video from noise with a tuned model (its motion, new content)")
    p.add_argument("--tuned", help="folder written by `tune` (omit for the inflated base only)")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--output", "-o")
    p.add_argument("--frames", type=int, dest="num_frames")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    _add_model_args(p)
    _add_sample_args(p)

    p = sub.add_parser("control", help="pose/depth/edge-guided generation with ControlNet or T2I-Adapter")
    p.add_argument("--tuned", help="folder written by `tune` (its clip is the default hint source)")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument(
        "--hint", choices=["pose", "depth", "canny"], default="canny", help="hint kind (default canny: weight-free)"
    )
    p.add_argument(
        "--control-type", choices=["controlnet", "t2i_adapter"], default=None,
        help="default: controlnet; on the toy-world base, the type it has a model for (canny: controlnet, depth: t2i_adapter)",
    )  # fmt: skip
    p.add_argument(
        "--control-model",
        help="hub id or folder (default: the standard SD-1.5 model for the hint; on the toy-world base its own "
        "models/toy-world-controlnet-canny or models/toy-world-t2i-adapter-depth)",
    )
    p.add_argument("--hint-video", help="an already-made pose/depth/edge video to use as hints")
    p.add_argument("--depth-model", help="depth estimator for --hint depth (hub id or folder)")
    p.add_argument(
        "--depth-backend", choices=["auto", "transformers", "midas", "toyworld"], default="auto",
        help="how --hint depth is computed (auto: object silhouettes on the toy-world base, else a transformers depth model)",
    )  # fmt: skip
    p.add_argument("--scale", type=float, default=1.0, help="conditioning scale")
    p.add_argument("--control-start", type=float, default=0.0, help="fraction of steps where control starts")
    p.add_argument("--control-end", type=float, default=1.0, help="fraction of steps where control ends")
    p.add_argument("--guess-mode", action="store_true", help="ControlNet guess mode")
    p.add_argument("--inversion", action="store_true", help="start from the DDIM-inverted source (default: noise)")
    p.add_argument("--output", "-o")
    _add_model_args(p)
    _add_video_args(p)
    _add_sample_args(p)

    p = sub.add_parser("invert", help="(re)compute the DDIM inversion of the tuned source clip")
    p.add_argument("--tuned", required=True)
    p.add_argument("--invert-steps", type=int, default=50)
    _add_model_args(p)

    p = sub.add_parser("export", help="write a full official-layout Tune-A-Video pipeline folder")
    p.add_argument("--tuned", required=True)
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--safetensors", action="store_true", help="weights as safetensors (official loader reads .bin)")
    _add_model_args(p)

    sub.add_parser("presets", help="list presets")
    return parser


# ---------------------------------------------------------------------- helpers
def _device_and_dtype(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(args.dtype)
    if dtype is None:
        dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
    return torch.device(device), dtype


def _load(args: argparse.Namespace, base: str) -> Any:
    from .loading import load_pipeline

    device, dtype = _device_and_dtype(args)
    logger.info("loading %s on %s (%s)", base, device, dtype)
    pipe = load_pipeline(base, torch_dtype=dtype, device=device)
    pipe.set_progress_bar_config(disable=True)
    if args.xformers:
        pipe.unet.set_attention_backend("xformers")
    return pipe


def _default_model(args: argparse.Namespace) -> str:
    """The model when --model is not given: SD 1.5 on a GPU with the hub (or a cached copy), else the
    embedded toy-world model, as the app chooses."""
    from .settings import resolve_default_model

    model, _, _, reason = resolve_default_model(args.device)
    print(f"[tuneavideo] {reason}", file=sys.stderr)
    return model


def _safe_name(text: str, limit: int = 60) -> str:
    """A filesystem-safe slug of user text (never used as a path by itself)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return slug[:limit] or "video"


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet


def _fps(args: argparse.Namespace, record: dict) -> float:
    return float(args.fps or record.get("clip_fps") or 8.0)


def _write_outputs(
    frames: Any,
    path: Path,
    fps: float,
    args: argparse.Namespace,
    audio: tuple[str, float] | None = None,
    prompt: str | None = None,
) -> list[Path]:
    from .video import write_frame_grid, write_gif, write_mp4

    out = [
        write_mp4(frames, path, fps, audio_source=audio[0] if audio else None, audio_start=audio[1] if audio else 0.0)
    ]
    if getattr(args, "gif", False):
        out.append(write_gif(frames, path.with_suffix(".gif"), fps))
    if getattr(args, "grid", False):
        out.append(write_frame_grid(frames, path.with_suffix(".png")))
    if getattr(args, "clip_metrics", None) and prompt is not None:
        scores = _clip_scorer(args.clip_metrics).score(frames, prompt)
        metrics_path = path.with_suffix(".metrics.json")
        metrics_path.write_text(json.dumps({"prompt": prompt, "clip_model": args.clip_metrics, **scores}, indent=2))
        print(f"{path.name}: CLIP frame consistency {scores['frame_consistency']:.4f}, "
              f"text alignment {scores['text_alignment']:.2f}", file=sys.stderr)  # fmt: skip
        out.append(metrics_path)
    return out


_SCORERS: dict[str, Any] = {}


def _clip_scorer(model: str) -> Any:
    from .metrics import ClipScorer

    if model not in _SCORERS:
        _SCORERS[model] = ClipScorer(model)
    return _SCORERS[model]


def _read_record(folder: Path) -> dict:
    from .tuning import RECORD_FILE

    path = folder / RECORD_FILE
    if not path.is_file():
        raise TuneAVideoError(f"{folder} is not a tuned-model folder (no {RECORD_FILE}); run `tune` first")
    return json.loads(path.read_text())


def _tuned_base(args: argparse.Namespace, record: dict) -> str:
    """The base model of a tuned run: ``--model``, else the one it was tuned on."""
    return args.model or record.get("base_model") or DEFAULT_BASE_MODEL


def _load_tuned(args: argparse.Namespace) -> tuple[Any, Any, dict, Path]:
    from .tuning import TunedDelta

    folder = Path(args.tuned)
    record = _read_record(folder)
    pipe = _load(args, _tuned_base(args, record))
    delta = TunedDelta.load(folder)
    delta.apply(pipe.unet)
    return pipe, delta, record, folder


def _source_frames(record: dict, folder: Path) -> Any:
    from .video import read_video

    spec = VideoSpec(**record["video_spec"])
    clip = folder / "source.mp4"
    if clip.is_file():  # the exact clip used for tuning, already trimmed and resized
        spec = VideoSpec(num_frames=spec.num_frames, width=spec.width, height=spec.height, resize="squash")
        return read_video(clip, spec)[0]
    return read_video(record["video_path"], spec)[0]


def _inverted(pipe: Any, record: dict, folder: Path, steps: int, quiet: bool) -> Any:
    from .tuning import INVERTED_FILE, load_inverted, save_inverted

    path = folder / INVERTED_FILE
    if path.is_file():
        latents, meta = load_inverted(path)
        if meta.get("num_inference_steps") == steps:
            return latents
    frames = _source_frames(record, folder)
    latents = pipe.invert(
        pipe.encode_video(frames), num_inference_steps=steps, callback=None if quiet else _Bar("invert", steps)
    )
    save_inverted(latents, folder, {"num_inference_steps": steps, "prompt": "", "tuned": record.get("prompt")})
    return latents


class _Bar:
    """A tqdm bar driven by ProgressEvents (so the CLI shows ETA for every stage)."""

    def __init__(self, stage: str, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=stage, dynamic_ncols=True)

    def __call__(self, event: Any) -> None:
        self.bar.update(event.step - self.bar.n)
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}")
        if event.step >= event.total:
            self.bar.close()


# ---------------------------------------------------------------------- commands
def cmd_tune(args: argparse.Namespace) -> list[Path]:
    import torch

    from .tuning import save_inverted, tune
    from .video import read_video, write_mp4

    preset = load_preset(args.preset) if args.preset else Preset(name="custom", prompt="")
    video_path = args.video or preset.video_path
    prompt = args.prompt or preset.prompt
    if not video_path:
        raise TuneAVideoError("no video: pass --video PATH (presets name the paper's clips but you supply the file)")
    if not prompt:
        raise TuneAVideoError("no prompt: pass --prompt describing the source video, e.g. 'a man is skiing'")
    spec = replace(
        preset.video,
        num_frames=args.num_frames,
        width=args.width,
        height=args.height,
        stride=args.stride,
        start_time=args.start_time,
        resize=args.resize,
    )
    tcfg = replace(
        preset.tune,
        max_train_steps=args.max_train_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        trainable_modules=tuple(args.trainable_modules) if args.trainable_modules else None,
    )
    icfg = replace(preset.invert, num_inference_steps=args.invert_steps)
    frames, info = read_video(video_path, spec)
    out = Path(args.output or Path("outputs") / f"{_safe_name(Path(video_path).stem)}-{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    base = args.model or (preset.base_model if args.preset else _default_model(args))
    pipe = _load(args, base)
    delta = tune(
        pipe,
        frames,
        prompt,
        tcfg,
        callback=None if args.quiet else _Bar("tune", tcfg.max_train_steps),
        video_spec=spec,
        extra_record={
            "video_path": str(Path(video_path).resolve()),
            "clip_fps": info.fps,
            "clip_start": info.clip_start,
            "audio": bool(info.has_audio and spec.stride == 1),
            "preset": preset.name,
            "edit_prompts": list(preset.edit_prompts),
            "sample_config": config_to_dict(preset.sample),
        },
    )
    written = [delta.save(out) / "tuned.safetensors", out / "tuned.json"]
    written.append(write_mp4(frames, out / "source.mp4", info.fps))
    if not args.no_invert:
        with torch.no_grad():
            latents = pipe.invert(
                pipe.encode_video(frames),
                num_inference_steps=icfg.num_inference_steps,
                callback=None if args.quiet else _Bar("invert", icfg.num_inference_steps),
            )
        written.append(
            save_inverted(latents, out, {"num_inference_steps": icfg.num_inference_steps, "prompt": icfg.prompt})
        )
    print(
        f"tuned {delta.record['trainable_parameters']:,} parameters in {delta.record['seconds']} s "
        f"(final loss {delta.record['final_loss']:.4f})"
    )
    return written


def _sample_config(args: argparse.Namespace, record: dict) -> SampleConfig:
    base = SampleConfig(**record["sample_config"]) if record.get("sample_config") else SampleConfig()
    return replace(
        base,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        negative_prompt=args.negative_prompt,
        eta=args.eta,
        seed=args.seed,
    )


def _sample(
    pipe: Any,
    prompt: str,
    cfg: SampleConfig,
    args: argparse.Namespace,
    stage: str,
    num_frames: int,
    height: int,
    width: int,
    latents: Any = None,
    unet_kwargs: Any = None,
) -> Any:
    """One video for ``prompt`` as uint8 frames ``(f, h, w, 3)``, with a progress bar."""
    from .video import to_uint8

    video = pipe(
        prompt,
        num_frames=num_frames,
        height=height,
        width=width,
        num_inference_steps=cfg.num_inference_steps,
        guidance_scale=cfg.guidance_scale,
        negative_prompt=cfg.negative_prompt,
        eta=cfg.eta,
        generator=_generator(cfg.seed),
        latents=latents,
        unet_kwargs=unet_kwargs,
        callback=None if args.quiet else _Bar(f"{stage}: {prompt[:30]}", cfg.num_inference_steps),
    ).videos[0]
    return to_uint8(video)


def _generator(seed: int | None) -> Any:
    import torch

    return None if seed is None else torch.Generator(device="cpu").manual_seed(seed)


def cmd_edit(args: argparse.Namespace) -> list[Path]:
    from .video import make_grid, write_mp4

    pipe, _, record, folder = _load_tuned(args)
    prompts = args.prompt or record.get("edit_prompts") or []
    if not prompts:
        raise TuneAVideoError("no edit prompt: pass --prompt 'new description'")
    cfg = _sample_config(args, record)
    latents = None
    if not args.no_inversion:
        latents = _inverted(pipe, record, folder, cfg.num_inference_steps, args.quiet)
    fps = _fps(args, record)
    audio = (record["video_path"], record.get("clip_start", 0.0)) if record.get("audio") else None
    source = _source_frames(record, folder) if args.side_by_side else None
    written: list[Path] = []
    for prompt in prompts:
        frames = _sample(
            pipe, prompt, cfg, args, "edit", record["num_frames"], record["height"], record["width"], latents
        )
        path = _output_path(args.output, folder, prompt, len(prompts))
        written += _write_outputs(frames, path, fps, args, audio, prompt)
        if source is not None:
            written.append(
                write_mp4(make_grid([source, frames], ncols=2), path.with_name(path.stem + "-side-by-side.mp4"), fps)
            )
    return written


def _output_path(output: str | None, folder: Path, prompt: str, n: int) -> Path:
    name = f"{_safe_name(prompt)}.mp4"
    if output is None:
        return folder / "edits" / name
    out = Path(output)
    if out.suffix.lower() == ".mp4" and n == 1:
        return out
    return out / name


def cmd_generate(args: argparse.Namespace) -> list[Path]:
    if args.tuned:
        pipe, _, record, folder = _load_tuned(args)
    else:
        pipe, record, folder = _load(args, args.model or _default_model(args)), {}, Path("outputs")
    cfg = _sample_config(args, record)
    num_frames = args.num_frames or record.get("num_frames") or 8
    height = args.height or record.get("height") or 512
    width = args.width or record.get("width") or 512
    written: list[Path] = []
    for prompt in args.prompt:
        video = _sample(pipe, prompt, cfg, args, "generate", num_frames, height, width)
        path = _output_path(args.output, folder / "generated" if args.tuned else folder, prompt, len(args.prompt))
        written += _write_outputs(video, path, _fps(args, record), args, prompt=prompt)
    return written


def cmd_control(args: argparse.Namespace) -> list[Path]:
    from .control import ControlSpec, build_video_control, default_control_for, with_default_depth_backend
    from .hints import HintConfig, extract_hints, load_hint_video
    from .video import make_grid, read_video, write_mp4

    if args.tuned:
        base = _tuned_base(args, _read_record(Path(args.tuned)))
    else:
        if not args.video and not args.hint_video:
            raise TuneAVideoError("pass --tuned RUN, or --video / --hint-video with --model")
        base = args.model or _default_model(args)
    # Choose the control model before loading anything: a wrong choice fails in a second, not after a load.
    if args.control_model:
        control_type, control_model = args.control_type or "controlnet", args.control_model
    else:
        control_type, control_model = default_control_for(base, args.hint, args.control_type)
    if args.tuned:
        pipe, _, record, folder = _load_tuned(args)
        frames = _source_frames(record, folder) if not args.video else None
    else:
        pipe, record, folder = _load(args, base), {}, Path("outputs")
        frames = None
    spec = replace(
        VideoSpec(**record["video_spec"]) if record.get("video_spec") else VideoSpec(num_frames=8),
        num_frames=args.num_frames, width=args.width, height=args.height, stride=args.stride,
        start_time=args.start_time, resize=args.resize,
    )  # fmt: skip
    if frames is None and args.video:
        frames = read_video(args.video, spec)[0]
    if args.hint_video:
        hints = load_hint_video(args.hint_video, (spec.height, spec.width), kind=args.hint, num_frames=spec.num_frames)
    else:
        backend = "transformers" if args.depth_backend == "auto" else args.depth_backend
        hint_cfg = HintConfig(
            kind=args.hint, depth_backend=backend, **({"depth_model": args.depth_model} if args.depth_model else {})
        )
        if args.depth_backend == "auto" and not args.depth_model:  # silhouettes on the toy-world base
            hint_cfg = with_default_depth_backend(base, hint_cfg)
        hints = extract_hints(frames, hint_cfg)
    cfg = _sample_config(args, record)
    cspec = ControlSpec(
        control_type, control_model, args.hint, args.scale, args.control_start, args.control_end, args.guess_mode
    )
    logger.info("control: %s", cspec.label)
    control = build_video_control(
        [cspec], [hints], height=spec.height, width=spec.width, device=pipe.device, dtype=pipe.unet.dtype,
        unet=pipe.unet, guidance_scale=cfg.guidance_scale,
    )  # fmt: skip
    latents = None
    if args.inversion:
        if frames is None:
            raise TuneAVideoError("--inversion needs the source clip (--tuned or --video)")
        latents = pipe.invert(pipe.encode_video(frames), num_inference_steps=cfg.num_inference_steps)
    fps = _fps(args, record)
    out_dir = folder / "control" if args.output is None else Path(args.output)
    written = [
        write_mp4(hints, (out_dir if out_dir.suffix != ".mp4" else out_dir.parent) / f"hint-{args.hint}.mp4", fps)
    ]
    for prompt in args.prompt:
        result = _sample(pipe, prompt, cfg, args, "control", spec.num_frames, spec.height, spec.width, latents,
                         unet_kwargs=control.unet_kwargs)  # fmt: skip
        control.reset()
        if args.output is None:  # beside the hint video: <run>/control/<prompt>.mp4
            path = out_dir / f"{_safe_name(prompt)}.mp4"
        else:
            path = _output_path(args.output, folder / "control", prompt, len(args.prompt))
        written += _write_outputs(result, path, fps, args, prompt=prompt)
        written.append(
            write_mp4(make_grid([hints, result], ncols=2), path.with_name(path.stem + "-with-hint.mp4"), fps)
        )
    return written


def cmd_invert(args: argparse.Namespace) -> list[Path]:
    from .tuning import INVERTED_FILE

    pipe, _, record, folder = _load_tuned(args)
    (folder / INVERTED_FILE).unlink(missing_ok=True)
    _inverted(pipe, record, folder, args.invert_steps, args.quiet)
    return [folder / INVERTED_FILE]


def cmd_export(args: argparse.Namespace) -> list[Path]:
    from .loading import export_official_pipeline

    pipe, _, _, _ = _load_tuned(args)
    return [export_official_pipeline(pipe, args.output, safe_serialization=args.safetensors)]


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.command == "presets":
        for name in list_presets():
            p = load_preset(name)
            print(
                f"{name:20s} {p.prompt!r} ({p.video.num_frames} frames, {p.video.width}x{p.video.height}, stride {p.video.stride})"
            )
        return 0
    commands = {
        "tune": cmd_tune,
        "edit": cmd_edit,
        "generate": cmd_generate,
        "control": cmd_control,
        "invert": cmd_invert,
        "export": cmd_export,
    }
    try:
        written = commands[args.command](args)
    except TuneAVideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
