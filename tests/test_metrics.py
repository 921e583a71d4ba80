"""LOVEU-TGVE CLIP metrics, with a tiny random CLIP built and saved offline."""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tuneavideo.errors import InputError, ModelLoadError  # noqa: E402
from tuneavideo.metrics import ClipScorer, pairwise_mean_cosine  # noqa: E402

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from tuneavideo.testing import write_tiny_clip_model

    return write_tiny_clip_model(tmp_path_factory.mktemp("tiny-clip"), image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def scorer(tiny_clip_dir):
    return ClipScorer(tiny_clip_dir, batch_size=3)  # 3 < frame counts below: exercises batching


def random_clip(n=7, seed=0, h=40, w=56):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_loads_offline_on_cpu(scorer):
    assert scorer.device.type == "cpu" and scorer.dtype == torch.float32
    assert len(scorer.tokenizer) == 49408
    assert not scorer.model.training


def test_identical_frames_are_fully_consistent(scorer):
    frame = random_clip(1)
    assert scorer.frame_consistency(np.repeat(frame, 5, axis=0)) == pytest.approx(1.0, abs=1e-5)


def test_consistency_matches_brute_force(scorer):
    frames = random_clip(7)
    # embeddings computed one frame at a time, straight from the model (no batching)
    embs = []
    with torch.no_grad():
        for f in frames:
            px = scorer.image_processor(images=[f], return_tensors="pt")["pixel_values"]
            out = scorer.model.get_image_features(pixel_values=px)
            embs.append((out if torch.is_tensor(out) else out.pooler_output)[0])
    sims = [
        torch.nn.functional.cosine_similarity(embs[i], embs[j], dim=0).item()
        for i, j in itertools.permutations(range(len(embs)), 2)
    ]
    expected = sum(sims) / len(sims)
    got = scorer.frame_consistency(frames)
    assert got == pytest.approx(expected, abs=1e-5)
    assert -1.0 <= got <= 1.0
    assert got < 1.0 - 1e-4  # different frames are not perfectly similar


def test_pairwise_mean_cosine_unit():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # pairs: (0,1)=0, (0,2)=-1, (1,2)=0 -> mean -1/3 (each pair counted in both orders)
    assert pairwise_mean_cosine(e) == pytest.approx(-1 / 3)
    with pytest.raises(InputError):
        pairwise_mean_cosine(e[:1])


def test_text_alignment(scorer):
    frames = random_clip(5, seed=1)
    value = scorer.text_alignment(frames, "a red car driving on a snowy road")
    assert np.isfinite(value) and -100.0 <= value <= 100.0
    # equals the mean of per-frame 100 * cosine
    text = scorer.text_embedding("a red car driving on a snowy road")
    per_frame = [100 * float(scorer.image_embeddings(f[None])[0] @ text) for f in frames]
    assert value == pytest.approx(np.mean(per_frame), abs=1e-3)
    single = scorer.text_alignment(frames[:1], "a red car driving on a snowy road")
    assert single == pytest.approx(per_frame[0], abs=1e-3)


def test_score_dict_and_inputs(scorer):
    frames = random_clip(4, seed=2)
    s = scorer.score(frames, "a cat")
    assert set(s) == {"frame_consistency", "text_alignment", "num_frames"} and s["num_frames"] == 4
    assert s["frame_consistency"] == pytest.approx(scorer.frame_consistency(frames), abs=1e-6)
    assert s["text_alignment"] == pytest.approx(scorer.text_alignment(frames, "a cat"), abs=1e-4)
    # float (3, f, h, w) tensors in [0, 1], as the pipeline returns them, give the same result
    t = torch.from_numpy(frames).float().div(255).permute(3, 0, 1, 2)
    assert scorer.frame_consistency(t) == pytest.approx(s["frame_consistency"], abs=1e-5)
    with pytest.raises(InputError):
        scorer.frame_consistency(frames[:1])
    with pytest.raises(InputError):
        scorer.text_alignment(frames, None)


def test_missing_model_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not load the CLIP model"):
        ClipScorer("nobody-xyz/no-such-clip-model")
    with pytest.raises(ModelLoadError, match="not found"):
        ClipScorer(tmp_path / "missing-folder")
    with pytest.raises(ModelLoadError):
        ClipScorer(tmp_path)  # an empty folder


def test_folder_without_tokenizer(tiny_clip_dir, tmp_path):
    import shutil

    broken = tmp_path / "no-tok"
    shutil.copytree(tiny_clip_dir, broken)
    for name in ("vocab.json", "merges.txt"):
        (broken / name).unlink()
    with pytest.raises(ModelLoadError, match="tokenizer"):
        ClipScorer(broken)
