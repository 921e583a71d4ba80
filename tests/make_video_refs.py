"""Write the frame-pinning references in ``tests/data/video/`` (run from the repo root).

    python tests/make_video_refs.py [--inputs]

``--inputs`` first regenerates the generated clips (``video_clips.make_pinned_inputs``); they are
committed, so normally only the references are rebuilt. The committed ``refs.npz``/``refs.json``
were made with the ffmpeg-command-line reader that PyAV replaced (the source says which), so
``test_video.py`` checks that the PyAV reader gives the frames that one gave.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from video_clips import DATA, make_pinned_inputs, pattern_clip

from tuneavideo.config import VideoSpec
from tuneavideo.video import probe_video, read_video, write_mp4

ASSETS = Path(__file__).parents[1] / "tuneavideo" / "assets"

# clip -> list of VideoSpec kwargs; frames are stored whole, so sizes stay small
SPECS: dict[str, list[dict]] = {
    "rot90.mp4": [dict(num_frames=12, width=32, height=48), dict(num_frames=4, width=16, height=16, stride=2, start_time=0.3)],
    "rot270.mp4": [dict(num_frames=12, width=32, height=48), dict(num_frames=3, width=24, height=16, resize="squash", start_time=0.5)],
    "vfr.mkv": [
        dict(num_frames=16, width=40, height=32),
        dict(num_frames=2, width=40, height=32, start_time=1.5),
        dict(num_frames=3, width=40, height=32, start_time=0.3, stride=2),
        dict(num_frames=2, width=16, height=16, start_time=2.31),
        dict(num_frames=4, width=24, height=24, start_time=0.9, stride=3, resize="squash"),
    ],
    "audio.mp4": [dict(num_frames=30, width=32, height=24), dict(num_frames=8, width=32, height=24, start_time=1.0)],
    "odd444.mp4": [dict(num_frames=10, width=40, height=32, resize="squash"), dict(num_frames=3, width=16, height=24, start_time=0.2, stride=3)],
    "odd.webm": [dict(num_frames=10, width=32, height=24, resize="squash"), dict(num_frames=4, width=24, height=24, start_time=0.25, stride=2)],
    "mpeg4.avi": [dict(num_frames=12, width=32, height=24), dict(num_frames=3, width=16, height=8, start_time=0.4, stride=2)],
    "gop.mp4": [
        dict(num_frames=8, width=32, height=24, start_time=2.0, stride=3),
        dict(num_frames=4, width=32, height=24, start_time=5.55),
        dict(num_frames=3, width=32, height=24, start_time=7.6, stride=1),
        dict(num_frames=6, width=32, height=24, start_time=0.95, stride=12),
    ],
    "assets/toy-red-circle-right.mp4": [dict(num_frames=16, width=32, height=32), dict(num_frames=2, width=128, height=128, start_time=0.9, stride=4)],
    "assets/toy-white-square-circle.mp4": [dict(num_frames=8, width=48, height=24, stride=2, resize="squash"), dict(num_frames=2, width=128, height=128, start_time=1.1, stride=3)],
    "assets/toy-yellow-star-up.mp4": [dict(num_frames=5, width=16, height=40, start_time=0.5, stride=2), dict(num_frames=2, width=128, height=128)],
}  # fmt: skip


def clip_path(name: str) -> Path:
    return ASSETS / name.split("/", 1)[1] if name.startswith("assets/") else DATA / name


WRITE_CRF = (0, 18)


def write_refs() -> dict[str, np.ndarray]:
    """``write_mp4`` round trips: a clip written at each CRF in ``WRITE_CRF``, decoded back."""
    src = pattern_clip(8, 32, 24, seed=10)  # (8, 24, 32, 3) uint8
    out = {"write_mp4#src": src}
    for crf in WRITE_CRF:
        path = write_mp4(src, DATA / f".write-{crf}.mp4", fps=12, quality=crf)
        out[f"write_mp4#{crf}"] = read_video(path, VideoSpec(num_frames=len(src), width=32, height=24))[0]
        path.unlink()
    return out


def main(regenerate_inputs: bool = False) -> None:
    if regenerate_inputs:
        make_pinned_inputs(DATA)
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, dict] = {}
    for name, specs in SPECS.items():
        info = probe_video(clip_path(name))
        fields = ("frame_count", "source_width", "source_height", "source_fps", "duration", "has_audio", "codec")
        entry = {"probe": {k: getattr(info, k) for k in fields}, "reads": []}
        for i, kw in enumerate(specs):
            frames, got = read_video(clip_path(name), VideoSpec(**kw))  # (f, h, w, 3) uint8
            key = f"{name}#{i}"
            arrays[key] = frames
            read = {"frame_indices": list(got.frame_indices), "clip_start": got.clip_start, "fps": got.fps}
            entry["reads"].append({"key": key, "spec": kw, **read})
        meta[name] = entry
    arrays.update(write_refs())
    np.savez_compressed(DATA / "refs.npz", **arrays)
    (DATA / "refs.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main(regenerate_inputs="--inputs" in sys.argv)
