"""Scores beside outputs: CLIP frame consistency / text alignment when a CLIP model is configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tuneavideo.config import SampleConfig, TuneConfig, VideoSpec


def test_clip_scores_come_with_an_edit_when_a_clip_model_is_configured(make_engine, tiny_clip, tmp_path: Path,
                                                                       monkeypatch):  # fmt: skip
    from tuneavideo.testing import write_tiny_clip_model

    engine = make_engine()
    assert engine.scores(_edit(engine, tiny_clip)) == [{"prompt": "a blue square"}]  # nothing configured
    monkeypatch.setenv("TUNEAVIDEO_CLIP_MODEL", str(write_tiny_clip_model(tmp_path / "clip")))
    (row,) = engine.scores(_edit(engine, tiny_clip))
    assert row["prompt"] == "a blue square" and {"frame_consistency", "text_alignment"} <= set(row["clip"])
    assert all(np.isfinite(v) for v in row["clip"].values()) and -1.0 <= row["clip"]["frame_consistency"] <= 1.0
    engine.release("scores")


def _edit(engine, clip: str):
    tuned = engine.tune("scores", clip, "a red square", VideoSpec(4, 32, 32), TuneConfig(1), preview_steps=0)
    return engine.generate("scores", tuned.tune_key, "a blue square", SampleConfig(1, 1.0, seed=1))
