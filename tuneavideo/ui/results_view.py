"""How a job's results are shown beside its outputs: every edit on its own, downloads, scores, JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

__all__ = ["edit_json", "render_result", "scores_markdown"]


def edit_json(kind: str, result: Any, scores: list[dict[str, Any]]) -> dict[str, Any]:
    """The structured result of an edit-like job (``/result``): keys, paths, timings, scores."""
    return {
        "kind": kind,
        "tune_key": result.tune_key,
        "prompts": list(result.prompts),
        "videos": list(result.video_paths),
        "side_by_side": result.side_by_side_path,
        "gif": result.gif_path,
        "hints": result.hint_path,
        "has_audio": result.has_audio,
        "seed": result.seed,
        "tuning_cached": result.tuning_cached,
        "inversion_cached": result.inversion_cached,
        "timings": result.timings,
        "notes": list(result.notes),
        "scores": scores,
    }


def _toy_line(toy: dict[str, Any]) -> str:
    target = toy["target"]
    wanted = " ".join(x for x in (target["color"], target["shape"]) if x) or "any object"
    if target["background"]:
        wanted += f" on {target['background']}"
    frames = toy["frames"]
    hits = sum(f["hit"] for f in frames)
    mark = "✅" if hits == len(frames) else ("⚠️" if hits else "❌")
    cells = " · ".join(
        f"{i + 1}: {f['color'] or '?'} {f['shape'] or 'nothing'} / {f['background']} {'✓' if f['hit'] else '✗'}"
        for i, f in enumerate(frames)
    )
    return f"{mark} edit hit in **{hits}/{len(frames)}** frames (wanted: {wanted})  \n<small>{cells}</small>"


def scores_markdown(scores: list[dict[str, Any]]) -> str:
    """Plain-words scores per prompt: the toy-world classifier's reading per frame, CLIP scores."""
    if not scores:
        return ""
    lines = ["**Scores**"]
    for row in scores:
        parts = []
        if "toy_world" in row:
            parts.append(_toy_line(row["toy_world"]))
        if "clip" in row:
            clip = row["clip"]
            parts.append(f"CLIP frame consistency {clip['frame_consistency']:.3f} · text alignment "
                         f"{clip['text_alignment']:.3f}")  # fmt: skip
        if parts:
            lines.append(f"*“{row['prompt']}”*: " + "  \n".join(parts))
    if len(lines) == 1:
        lines.append(
            "No scores for this base: set `TUNEAVIDEO_CLIP_MODEL` to a CLIP model folder for CLIP frame "
            "consistency and text alignment."
        )
    return "\n\n".join(lines)


def render_result(last: dict[str, Any] | None) -> tuple:
    """``(gallery, downloads, scores, json)`` updates of an edit-like job's JSON result."""
    last = last or {}
    videos = [p for p in last.get("videos", []) if p and Path(p).is_file()]
    gallery = [(p, prompt) for p, prompt in zip(videos, last.get("prompts", []))]
    files = videos + [p for p in (last.get("side_by_side"), last.get("gif"), last.get("hints")) if p]
    return gr.update(value=gallery or None), files or None, scores_markdown(last.get("scores", [])), last
