"""Command line: ``tuneavideo tune|edit|generate|control|invert|export|presets ...``.

Every command runs the steps of :mod:`tuneavideo.workflow`, as the app does, and a tuned model is a
run folder of :mod:`tuneavideo.store` (``tuned.safetensors``, ``tuned.json``, ``source.mp4`` + exact
frames, ``inversions/``). Defaults come from the preset, else from the loaded base's profile
(:mod:`tuneavideo.profiles`), so ``tuneavideo tune --video clip.mp4 --prompt "..." -o out`` on the
embedded toy-world model finishes in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .config import InvertConfig, SampleConfig, VideoSpec, config_to_dict, list_presets, replace
from .errors import InputError, TuneAVideoError

logger = logging.getLogger("tuneavideo")


# ---------------------------------------------------------------------- argument groups
def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="base SD-1.x: folder, hub id, single file, or 'toy-world' (the embedded model). Default: the preset's "
        "or the run's; else Stable Diffusion 1.5 on a GPU with hub access, otherwise toy-world",
    )
    g.add_argument("--device", default="auto", help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    g.add_argument(
        "--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="weights dtype (auto: fp16 on GPU)"
    )
    g.add_argument("--xformers", action="store_true", help="use xformers attention (GPU, when installed)")
    g.add_argument("--speed", default="auto", choices=["auto", "plain", "fast", "low-vram"],
                   help="auto: fast on a GPU (low-vram under 20 GiB), plain on CPU; low-vram fits 12 GB cards")  # fmt: skip
    g.add_argument("--compile", action="store_true", help="regional torch.compile on CUDA (slow start, faster steps)")


def _add_video_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video")
    g.add_argument("--video", help="source video (mp4/mov/webm/avi/mkv/gif)")
    g.add_argument("--frames", type=int, dest="num_frames", help="number of frames (paper: 24; default: the base's)")
    g.add_argument("--width", type=int, help="frame width, a multiple of 8 (paper: 512)")
    g.add_argument("--height", type=int, help="frame height, a multiple of 8 (paper: 512)")
    g.add_argument("--stride", type=int, help="keep every n-th source frame")
    g.add_argument("--start", type=float, dest="start_time", help="start time in seconds")
    g.add_argument(
        "--resize", choices=["crop", "squash"], help="centre-crop (default) or squash like the official code"
    )


def _add_sample_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, dest="num_inference_steps", help="DDIM steps (paper: 50)")
    g.add_argument("--guidance", type=float, dest="guidance_scale", help="classifier-free guidance (paper: 12.5)")
    g.add_argument("--negative-prompt", dest="negative_prompt")
    g.add_argument("--eta", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--invert-steps", type=int, help="DDIM inversion steps (default: the run's, paper 50)")
    g.add_argument("--fps", type=float, help="output fps (default: the source clip's)")
    g.add_argument("--gif", action="store_true", help="also write a GIF per video")
    g.add_argument("--grid", action="store_true", help="also write a PNG grid of the frames (exact pixels)")
    g.add_argument(
        "--clip-metrics",
        nargs="?",
        const="openai/clip-vit-large-patch14",
        metavar="CLIP_MODEL",
        help="also write CLIP frame consistency and text alignment (LOVEU-TGVE) next to each video "
        "(optional CLIP hub id or folder; default openai/clip-vit-large-patch14)",
    )


def _add_control_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("control")
    g.add_argument(
        "--hint", choices=["pose", "depth", "canny"], default="canny", help="hint kind (default canny: weight-free)"
    )
    g.add_argument("--control-type", choices=["controlnet", "t2i_adapter"],
                   help="default: controlnet; on the toy-world base, the type it has a model for")  # fmt: skip
    g.add_argument("--control-model", help="hub id or folder (default: the base profile's model for the hint)")
    g.add_argument("--hint-video", help="an already-made pose/depth/edge video to use as hints")
    g.add_argument("--depth-model", help="depth estimator for --hint depth (hub id or folder)")
    g.add_argument("--depth-backend", choices=["auto", "transformers", "midas", "toyworld"], default="auto",
                   help="how --hint depth is computed (auto: the base profile's choice)")  # fmt: skip
    g.add_argument("--scale", type=float, default=1.0, help="conditioning scale")
    g.add_argument("--control-start", type=float, default=0.0, help="fraction of steps where control starts")
    g.add_argument("--control-end", type=float, default=1.0, help="fraction of steps where control ends")
    g.add_argument("--guess-mode", action="store_true", help="ControlNet guess mode")
    g.add_argument("--inversion", action="store_true", help="start from the DDIM-inverted source (default: noise)")


# Over 60 lines: the whole command-line surface in one place, one block per subcommand.
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuneavideo", description=__doc__.split("\n")[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info lines")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tune", help="tune a base model on one video")
    p.add_argument("--preset", help=f"preset name ({', '.join(list_presets()) or 'none'}) or YAML path")
    p.add_argument("--prompt", help="caption of the source video, e.g. 'a man is skiing'")
    p.add_argument("--output", "-o", help="output run folder (default: outputs/<video>-<time>)")
    _add_model_args(p)
    _add_video_args(p)
    g = p.add_argument_group("tuning")
    g.add_argument("--max-train-steps", type=int, dest="max_train_steps", help="paper: 500 (default: the base's)")
    g.add_argument("--lr", type=float, dest="learning_rate", help="paper: 3e-5")
    g.add_argument("--seed", type=int)
    g.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], dest="mixed_precision")
    g.add_argument("--gradient-checkpointing", action="store_true", default=None, dest="gradient_checkpointing")
    g.add_argument("--trainable-modules", nargs="+", dest="trainable_modules")
    g.add_argument("--no-invert", action="store_true", help="skip DDIM inversion of the source after tuning")
    g.add_argument("--invert-steps", type=int, help="DDIM inversion steps (paper: 50)")

    p = sub.add_parser("edit", help="edit the tuned video with new prompt(s) (DDIM inversion + sampling)")
    p.add_argument("--tuned", required=True, help="run folder written by `tune`")
    p.add_argument("--prompt", action="append", help="edit prompt; repeat for several (default: the preset's)")
    p.add_argument("--output", "-o", help="output .mp4 (one prompt) or folder (default: <run>/edits)")
    p.add_argument("--no-inversion", action="store_true", help="start from random noise instead of the inverted source")
    p.add_argument("--side-by-side", action="store_true", help="also write source|edit side by side")
    _add_model_args(p)
    _add_sample_args(p)

    p = sub.add_parser("generate", help="text-to-video from noise with a tuned model (its motion, new content)")
    p.add_argument("--tuned", help="run folder written by `tune` (omit for the inflated base only)")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--output", "-o", help="output .mp4 (one prompt) or folder (default: <run>/generated)")
    p.add_argument("--frames", type=int, dest="num_frames")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    _add_model_args(p)
    _add_sample_args(p)

    p = sub.add_parser("control", help="pose/depth/edge-guided generation with ControlNet or T2I-Adapter")
    p.add_argument("--tuned", help="run folder written by `tune` (its clip is the default hint source)")
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--output", "-o", help="output .mp4 (one prompt) or folder (default: <run>/control)")
    _add_control_args(p)
    _add_model_args(p)
    _add_video_args(p)
    _add_sample_args(p)

    p = sub.add_parser("invert", help="(re)compute the DDIM inversion of the tuned source clip")
    p.add_argument("--tuned", required=True)
    p.add_argument("--invert-steps", type=int, help="DDIM inversion steps (default: the run's)")
    _add_model_args(p)

    p = sub.add_parser("export", help="write a full official-layout Tune-A-Video pipeline folder")
    p.add_argument("--tuned", required=True)
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--safetensors", action="store_true", help="weights as safetensors (official loader reads .bin)")
    _add_model_args(p)

    sub.add_parser("presets", help="list presets")
    from .batch import add_parser as add_batch_parser  # light: ray is imported only when a batch runs

    add_batch_parser(sub)
    return parser


# ---------------------------------------------------------------------- helpers
def _say(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"[tuneavideo] {text}", file=sys.stderr)


def _base(args: argparse.Namespace, fallback: str | None) -> str:
    """The base model: ``--model``, else ``fallback`` (preset / run), else the default for this machine."""
    from .profiles import expand_model
    from .settings import resolve_default_model

    if args.model or fallback:
        return expand_model(args.model or fallback)
    model, _, _, reason = resolve_default_model(args.device)
    _say(args, reason)
    return model


def _profile(args: argparse.Namespace, base: str) -> Any:
    from .profiles import resolve_profile
    from .settings import resolve_device

    return resolve_profile(base, resolve_device(args.device))


def _load(args: argparse.Namespace, base: str) -> Any:
    from .settings import load_base, resolve_device, resolve_dtype, speed_for

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    speed = speed_for(args.speed, device)
    _say(args, f"loading {base} on {device} ({dtype}, speed mode {speed})")
    pipe = load_base(base, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    pipe.set_speed_mode(speed, compile=args.compile)
    if args.xformers:
        pipe.unet.set_attention_kernel("xformers")
    return pipe


def _open_run(args: argparse.Namespace) -> tuple[Any, dict[str, Any], str]:
    from .store import RunFolder

    run = RunFolder.open(args.tuned)
    record = run.record
    return run, record, _base(args, record.get("base_model"))


def _load_tuned(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any], str]:
    """``(run, pipe, delta, record, base)`` of ``--tuned``; the delta is checked against the loaded UNet."""
    run, record, base = _open_run(args)
    pipe = _load(args, base)
    return run, pipe, run.load_delta(pipe.unet), record, base


class _Bar:
    """A tqdm bar driven by ProgressEvents (so the CLI shows ETA for every stage)."""

    def __init__(self, stage: str, total: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=stage, dynamic_ncols=True)

    def __call__(self, event: Any) -> None:
        self.bar.total = event.total
        self.bar.update(event.step - self.bar.n)
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4f}")
        if event.step >= event.total:
            self.bar.close()


def _bar(args: argparse.Namespace, stage: str, total: int) -> _Bar | None:
    return None if args.quiet else _Bar(stage, total)


def _warn(warnings: list[str]) -> None:
    """Warnings are shown even with -q: they say the result will differ from what was asked."""
    for text in warnings:
        print(f"warning: {text}", file=sys.stderr)


def _prompts(values: Any, what: str) -> list[str]:
    from .validation import check_prompts

    prompts, warnings = check_prompts(values, what)
    _warn(warnings)
    return prompts


def _file_footprint(base: str) -> tuple[int, int, int, int] | None:
    """``(weight bytes, trained parameters, bytes per element, VAE scale)`` of a base read from its files.

    The CLI checks memory before loading anything, so the sizes come from the weight files; the trained
    part (attention queries + temporal layers) is taken as a fifth of the UNet, above what it is on SD-1.x.
    None when the files are not local (a hub id not yet downloaded): the check is then skipped.
    """
    import json

    from .settings import _sd_cached

    folder = Path(base)
    if not folder.is_dir() and _sd_cached(base):
        from huggingface_hub import try_to_load_from_cache

        folder = Path(str(try_to_load_from_cache(base, "model_index.json"))).parent
    if not folder.is_dir():
        return None

    def size(part: str) -> int:
        files = [*(folder / part).glob("*.safetensors"), *(folder / part).glob("*.bin")]
        return sum(f.stat().st_size for f in files)

    unet = size("unet")
    try:
        blocks = json.loads((folder / "vae" / "config.json").read_text()).get("block_out_channels", [0] * 4)
    except (OSError, ValueError):
        blocks = [0] * 4
    return unet + size("vae") + size("text_encoder"), unet // 4 // 5, 4, 2 ** (len(blocks) - 1)


def _check_fits(args: argparse.Namespace, base: str, profile: Any, kind: str, spec: VideoSpec, **configs: Any) -> None:
    """Refuse, with the numbers, a job whose estimated peak memory exceeds what this device has free."""
    from .costs import CostModel
    from .settings import resolve_device
    from .validation import check_memory

    found = _file_footprint(base)
    if found is None:
        return
    weights, trainable, element, vae_scale = found
    device = resolve_device(args.device)
    est = CostModel(device, profile.cost_kind, vae_scale).estimate(
        spec, configs.get("tune") or profile.tune, configs.get("sample") or profile.sample,
        configs.get("invert") or profile.invert, configs.get("num_prompts", 1), 0, weights, trainable, element,
    )  # fmt: skip
    check_memory(est["tune_peak_bytes"] if kind == "tune" else est["edit_peak_bytes"], device, f"this {kind} job")


def _frames_spec(frames: Any) -> VideoSpec:
    """The spec of frames already read, ``(f, h, w, 3)``: what a job on them costs."""
    f, h, w = frames.shape[:3]
    return VideoSpec(num_frames=int(f), width=int(w), height=int(h))


def _from_record(cls: type, record: dict[str, Any], key: str, default: Any) -> Any:
    from .config import build_config
    from .store import RECORD_FILE

    data = record.get(key)
    return build_config(cls, data, f"{RECORD_FILE}:{key}") if isinstance(data, dict) else default


def _sample_config(args: argparse.Namespace, record: dict[str, Any], profile: Any) -> SampleConfig:
    from .validation import check_sample_config, check_steps
    from .workflow import check_seed, with_seed

    if args.seed is not None:
        check_seed(args.seed)
    base = _from_record(SampleConfig, record, "sample_config", profile.sample)
    cfg = replace(base, num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
                  negative_prompt=args.negative_prompt, eta=args.eta, seed=args.seed)  # fmt: skip
    if args.invert_steps is not None:
        check_steps(args.invert_steps, "inversion steps")
    return with_seed(check_sample_config(cfg))


def _invert_config(args: argparse.Namespace, record: dict[str, Any], profile: Any) -> InvertConfig:
    return replace(
        _from_record(InvertConfig, record, "invert_config", profile.invert), num_inference_steps=args.invert_steps
    )


def _output_paths(args: argparse.Namespace, default_dir: Path, prompts: list[str]) -> list[Path]:
    """One path per prompt: ``-o x.mp4`` for one prompt, else distinct ``<slug>.mp4`` names in the folder."""
    from .validation import check_output_dir, check_output_file, make_dir
    from .workflow import output_names

    out = Path(args.output) if args.output else None
    if out is not None and out.suffix.lower() == ".mp4":
        if len(prompts) > 1:
            raise InputError(f"-o {out.name} names one file, but {len(prompts)} prompts were given: pass a folder")
        check_output_file(out)
        make_dir(out.parent)
        return [out]
    folder = make_dir(check_output_dir(out or default_dir))
    return output_names(prompts, folder, fresh=True)


def _write(args: argparse.Namespace, paths: list[Path], frames: Any, fps: float, clip: Any, prompts: list[str],
           hints: Any = None, pairs: bool = False, pair_suffix: str = "-side-by-side") -> list[Path]:  # fmt: skip
    """Write the videos (+ GIF, grid, side by sides, CLIP scores) and say what became of the audio."""
    from .workflow import audio_note, write_outputs

    outs = write_outputs(paths, frames, args.fps or fps, clip, hints, gifs=args.gif, grids=args.grid, pairs=pairs,
                         pair_suffix=pair_suffix)  # fmt: skip
    if clip is not None:
        _say(args, audio_note(clip, outs.has_audio))
    written = outs.all
    if args.clip_metrics:
        written += _clip_metrics(args.clip_metrics, paths, frames, prompts)
    return written


def _clip_metrics(model: str, paths: list[Path], frames: Any, prompts: list[str]) -> list[Path]:
    from .metrics import ClipScorer
    from .store import write_json

    scorer = ClipScorer(model)
    written = []
    for path, video, prompt in zip(paths, frames, prompts):
        scores = scorer.score(video, prompt)
        written.append(write_json(path.with_suffix(".metrics.json"), {"prompt": prompt, "clip_model": model, **scores}))
        print(f"{path.name}: CLIP frame consistency {scores['frame_consistency']:.4f}, "
              f"text alignment {scores['text_alignment']:.2f}", file=sys.stderr)  # fmt: skip
    return written


# ---------------------------------------------------------------------- commands
def cmd_tune(args: argparse.Namespace) -> list[Path]:
    from . import workflow as wf
    from .config import load_preset
    from .store import RunFolder

    preset = load_preset(args.preset) if args.preset else None
    video_path = args.video or (preset.video_path if preset else None)
    prompt = (args.prompt or (preset.prompt if preset else "") or "").strip()
    if not video_path:
        raise InputError("no video: pass --video PATH (presets name the paper's clips but you supply the file)")
    if not prompt:
        raise InputError("no prompt: pass --prompt describing the source video, e.g. 'a man is skiing'")
    if args.seed is not None:
        wf.check_seed(args.seed)
    base = _base(args, preset.base_model if preset else None)
    profile = _profile(args, base)
    spec = replace(preset.video if preset else profile.video, num_frames=args.num_frames, width=args.width,
                   height=args.height, stride=args.stride, start_time=args.start_time, resize=args.resize)  # fmt: skip
    tcfg = replace(
        preset.tune if preset else profile.tune,
        max_train_steps=args.max_train_steps, learning_rate=args.learning_rate, seed=args.seed,
        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
        trainable_modules=tuple(args.trainable_modules) if args.trainable_modules else None,
    )  # fmt: skip
    if tcfg.max_train_steps < 1:
        raise InputError("--max-train-steps must be at least 1")
    icfg = replace(preset.invert if preset else profile.invert, num_inference_steps=args.invert_steps)
    prompt = _validate_tune(args, base, profile, prompt, spec, tcfg, icfg)
    out = Path(args.output or Path("outputs") / f"{wf.slug(Path(video_path).stem)}-{time.strftime('%Y%m%d-%H%M%S')}")
    _check_run_output(out)
    clip = wf.read_clip(video_path, spec)  # before loading the model: a bad clip fails in a second
    _say(
        args,
        f"{profile.title} base: {spec.num_frames} frames at {spec.width}x{spec.height}, {tcfg.max_train_steps} steps",
    )
    pipe = _load(args, base)
    _say(args, "estimate: " + _estimate(pipe, profile, spec, tcfg, icfg, args.no_invert))
    extra = {
        "base_model": base,
        "preset": preset.name if preset else None,
        "edit_prompts": list(preset.edit_prompts) if preset else [],
        "sample_config": config_to_dict(preset.sample if preset else profile.sample),
        "invert_config": config_to_dict(icfg),
    }
    delta = wf.tune_clip(pipe, clip, prompt, tcfg, _bar(args, "tune", tcfg.max_train_steps), extra)
    audio = (clip.audio_source, clip.audio_start) if clip.audio_source else None
    run = RunFolder.write(out, delta, clip.frames, clip.fps, audio)
    written = [out / "tuned.safetensors", out / "tuned.json", out / "source.mp4"]
    if not args.no_invert:
        wf.cached_inversion(pipe, run, delta, clip, icfg, _bar(args, "invert", icfg.num_inference_steps))
        written.append(run.inversion_path(icfg))
    rec = delta.record
    print(
        f"tuned {rec['trainable_parameters']:,} parameters in {rec['seconds']} s (final loss {rec['final_loss']:.4f})"
    )
    return written


def _validate_tune(args: argparse.Namespace, base: str, profile: Any, prompt: str, spec: VideoSpec, tcfg: Any,
                   icfg: Any) -> str:  # fmt: skip
    """The app's rules for a tune (prompt, sizes, steps, memory), before the clip is read or the model loaded."""
    from .validation import check_invert_config, check_prompt, check_tune_config, check_video_spec

    prompt, warnings = check_prompt(prompt, "source prompt")
    _warn(warnings)
    check_video_spec(spec, profile)
    check_tune_config(tcfg)
    check_invert_config(icfg)
    _check_fits(args, base, profile, "tune", spec, tune=tcfg, invert=icfg)
    return prompt


def _estimate(pipe: Any, profile: Any, spec: VideoSpec, tcfg: Any, icfg: InvertConfig, no_invert: bool) -> str:
    """The time and memory estimate of this tune (+ inversion and one edit), with its range and source."""
    import dataclasses

    from .costs import CostModel, footprint

    costs = CostModel.for_device(str(pipe.device), profile.cost_kind, pipe.vae_scale_factor, pipe.speed_plan().mode)
    sample = dataclasses.replace(profile.sample, use_inversion=not no_invert)
    est = costs.estimate(spec, tcfg, sample, icfg, 1, 0, *footprint(pipe, tcfg.trainable_modules))
    return est["text"]


def _check_run_output(out: Path) -> None:
    from .store import RunFolder

    RunFolder.check_target(out)  # before tuning: the write checks the same again at the end
    parent = out.parent if out.parent != Path("") else Path(".")
    probe = parent if parent.exists() else next((p for p in parent.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise InputError(f"cannot write to {probe}: choose another -o")


def cmd_edit(args: argparse.Namespace) -> list[Path]:
    from . import workflow as wf

    run, record, base = _open_run(args)
    prompts = _prompts(args.prompt or record.get("edit_prompts") or [], "edit prompt (--prompt)")
    profile = _profile(args, base)
    cfg = _sample_config(args, record, profile)
    clip = wf.clip_of_run(run)
    spec = _frames_spec(clip.frames)
    _check_fits(args, base, profile, "edit", spec, sample=cfg, num_prompts=len(prompts))
    paths = _output_paths(args, run.path / "edits", prompts)
    pipe = _load(args, base)
    delta = run.load_delta(pipe.unet)
    latents = None
    if not args.no_inversion:
        icfg = _invert_config(args, record, profile)
        latents, cached = wf.cached_inversion(
            pipe, run, delta, clip, icfg, _bar(args, "invert", icfg.num_inference_steps)
        )
        _say(args, f"inversion: {'reused' if cached else 'computed and saved'} ({icfg.num_inference_steps} steps)")
    f, h, w = clip.frames.shape[:3]
    frames = wf.sample_videos(pipe, delta, prompts, (f, h, w), cfg, latents, _bar(args, "edit", 0))
    _say(args, f"seed {cfg.seed}")
    return _write(args, paths, frames, clip.fps, clip, prompts, pairs=args.side_by_side)


def cmd_generate(args: argparse.Namespace) -> list[Path]:
    from . import workflow as wf
    from .validation import check_video_spec

    prompts = _prompts(args.prompt, "prompt (--prompt)")
    if args.tuned:
        run, record, base = _open_run(args)
        folder = run.path / "generated"
    else:
        base = _base(args, None)
        run, delta, record, folder = None, None, {}, Path("outputs")
    profile = _profile(args, base)
    cfg = _sample_config(args, record, profile)
    spec = replace(profile.video, num_frames=args.num_frames or record.get("num_frames"),
                   height=args.height or record.get("height"), width=args.width or record.get("width"))  # fmt: skip
    check_video_spec(spec, profile)
    _check_fits(args, base, profile, "generate", spec, sample=cfg, num_prompts=len(prompts))
    paths = _output_paths(args, folder, prompts)
    pipe = _load(args, base)
    if run is not None:
        delta = run.load_delta(pipe.unet)
    frames = wf.sample_videos(pipe, delta, prompts, (spec.num_frames, spec.height, spec.width), cfg, None,
                              _bar(args, "generate", 0))  # fmt: skip
    _say(args, f"seed {cfg.seed}")
    return _write(args, paths, frames, float(record.get("clip_fps") or wf.DEFAULT_FPS), None, prompts)


def _control_spec(args: argparse.Namespace, profile: Any) -> Any:
    from .control import ControlSpec

    if args.control_model:
        kind, model = args.control_type or "controlnet", args.control_model
    else:  # the base profile's model: a wrong choice fails in a second, not after a load
        kind, model = profile.control_for(args.hint, args.control_type)
    return ControlSpec(kind, model, args.hint, args.scale, args.control_start, args.control_end, args.guess_mode)


def _hint_config(args: argparse.Namespace, profile: Any) -> Any:
    from .hints import HintConfig

    backend = "transformers" if args.depth_backend == "auto" else args.depth_backend
    cfg = HintConfig(
        kind=args.hint, depth_backend=backend, **({"depth_model": args.depth_model} if args.depth_model else {})
    )
    return profile.hint_config(cfg) if args.depth_backend == "auto" and not args.depth_model else cfg


def cmd_control(args: argparse.Namespace) -> list[Path]:
    from . import workflow as wf
    from .validation import check_video_spec
    from .video import write_mp4

    prompts = _prompts(args.prompt, "prompt (--prompt)")
    if args.tuned:
        run, record, base = _open_run(args)
        source = wf.clip_of_run(run)
        folder = run.path / "control"
    elif args.video or args.hint_video:
        run, record, base, source, folder = None, {}, _base(args, None), None, Path("outputs") / "control"
    else:
        raise InputError("pass --tuned RUN, or --video / --hint-video (with --model)")
    profile = _profile(args, base)
    cspec = _control_spec(args, profile)
    spec = replace(
        _from_record(VideoSpec, record, "video_spec", VideoSpec(num_frames=8, width=profile.video.width,
                                                                  height=profile.video.height)),
        num_frames=args.num_frames, width=args.width, height=args.height, stride=args.stride,
        start_time=args.start_time, resize=args.resize,
    )  # fmt: skip
    check_video_spec(spec, profile)
    driving = wf.read_clip(args.video, spec) if args.video else source
    if driving is None:  # hints from a hint video only: sample from noise at the spec's size
        driving = wf.Clip(frames=_blank(spec), fps=wf.DEFAULT_FPS, spec=spec)
    cfg = _sample_config(args, record, profile)
    _check_fits(args, base, profile, "control", _frames_spec(driving.frames), sample=cfg,
                num_prompts=len(prompts))  # fmt: skip
    paths = _output_paths(args, folder, prompts)
    hints = wf.control_hints(driving.frames, _hint_config(args, profile), args.hint_video)
    pipe = _load(args, base)
    delta = run.load_delta(pipe.unet) if run is not None else None
    _say(args, f"control: {cspec.label}")
    control = wf.make_control(pipe, cspec, hints, cfg.guidance_scale)
    latents = None
    if args.inversion:
        if args.video is None and source is None:
            raise InputError("--inversion needs the source clip (--tuned or --video)")
        latents = wf.invert_clip(
            pipe, delta, wf.encode_clip(pipe, driving.frames), _invert_config(args, record, profile)
        )
    f, h, w = driving.frames.shape[:3]
    frames = wf.sample_videos(
        pipe, delta, prompts, (f, h, w), cfg, latents, _bar(args, "control", 0), control.unet_kwargs
    )
    hint_file = paths[0].parent / f"hint-{args.hint}.mp4"
    written = [write_mp4(control.hints[0], hint_file, fps=args.fps or driving.fps)]
    # hint | result beside each video (the control outputs carry no audio: hints may come from another clip)
    return written + _write(args, paths, frames, driving.fps, None, prompts, hints=control.hints[0], pairs=True,
                            pair_suffix="-with-hint")  # fmt: skip


def _blank(spec: VideoSpec) -> Any:
    import numpy as np

    return np.zeros((spec.num_frames, spec.height, spec.width, 3), dtype=np.uint8)


def cmd_invert(args: argparse.Namespace) -> list[Path]:
    from . import workflow as wf
    from .validation import check_invert_config

    run, record, base = _open_run(args)
    icfg = check_invert_config(_invert_config(args, record, _profile(args, base)))
    clip = wf.clip_of_run(run)
    pipe = _load(args, base)
    delta = run.load_delta(pipe.unet)
    # Recompute first, then replace the stored one atomically: a failure keeps the earlier inversion.
    latents = wf.invert_clip(
        pipe, delta, wf.encode_clip(pipe, clip.frames), icfg, _bar(args, "invert", icfg.num_inference_steps)
    )
    return [run.save_inversion(icfg, latents)]


def cmd_export(args: argparse.Namespace) -> list[Path]:
    from .loading import export_official_pipeline
    from .validation import check_output_dir

    check_output_dir(args.output)  # before the model load: a bad -o fails in a second
    _, pipe, delta, _, _ = _load_tuned(args)
    delta.apply(pipe.unet)
    return [export_official_pipeline(pipe, args.output, safe_serialization=args.safetensors)]


def cmd_batch(args: argparse.Namespace) -> list[Path]:
    from .batch import cmd_batch as run_jobs  # imports ray only now

    return run_jobs(args)


def cmd_presets(args: argparse.Namespace) -> list[Path]:
    from .config import load_preset

    rows = [(name, load_preset(name)) for name in list_presets()]
    width = max((len(n) for n, _ in rows), default=4)
    for name, p in rows:
        v = p.video
        print(f"{name:<{width}}  {v.num_frames:>2} frames  {v.width}x{v.height}  stride {v.stride}  {p.prompt!r}")
    return []


COMMANDS = {
    "tune": cmd_tune,
    "edit": cmd_edit,
    "generate": cmd_generate,
    "control": cmd_control,
    "invert": cmd_invert,
    "export": cmd_export,
    "presets": cmd_presets,
    "batch": cmd_batch,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        written = COMMANDS[args.command](args)
    except TuneAVideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not a user error: show it, and ask for a report
        traceback.print_exc()
        print("error: an unexpected failure (a bug): please report it with the lines above", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
