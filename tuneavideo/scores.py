"""Scores beside every output: does the edit show what its prompt asked for?

On the toy-world base, the toy world's classifier reads each frame (colour, shape, background) and says
whether the edit hit its prompt; with a CLIP model configured (``TUNEAVIDEO_CLIP_MODEL``, a hub id or
folder), CLIP frame consistency and text alignment (the LOVEU-TGVE metrics) too.
"""

from __future__ import annotations

import os
from typing import Any

from .results import EditResult, toy_world_scores


class Scorer:
    """Scores of a base of ``kind`` on ``device``; the CLIP model is loaded once, on first use."""

    def __init__(self, kind: str, device: str) -> None:
        self.kind, self.device = kind, device
        self._clip: Any = None

    def score(self, result: EditResult) -> list[dict[str, Any]]:
        """One row per prompt of an edit-like result (empty when it kept no frames)."""
        if result.frames is None:
            return []
        clip = self._clip_scorer()
        out = []
        for prompt, frames in zip(result.prompts, result.frames):
            row: dict[str, Any] = {"prompt": prompt}
            if self.kind == "toy-world":
                row["toy_world"] = toy_world_scores(frames, prompt)
            if clip is not None:
                row["clip"] = {k: round(float(x), 4) for k, x in clip.score(frames, prompt).items()}
            out.append(row)
        return out

    def _clip_scorer(self) -> Any:
        """The CLIP scorer of ``TUNEAVIDEO_CLIP_MODEL`` (loaded once), or None when none is configured."""
        name = os.environ.get("TUNEAVIDEO_CLIP_MODEL", "").strip()
        if not name:
            return None
        if self._clip is None or self._clip.model_id != name:
            from .metrics import ClipScorer

            self._clip = ClipScorer(name, device=self.device)
        return self._clip
