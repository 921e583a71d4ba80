"""CLIP video metrics as defined by the LOVEU-TGVE-2023 text-guided video editing benchmark.

* **Frame consistency**: the mean cosine similarity of the CLIP image embeddings of every pair of
  distinct frames of the output video (1.0 for a still video; higher = more temporally coherent).
* **Text alignment** (CLIP score): the mean over frames of the cosine similarity between the frame's
  image embedding and the edit prompt's text embedding, times 100.

The benchmark uses ``openai/clip-vit-large-patch14`` (the default). Models load with
``transformers.CLIPModel`` plus a CLIP tokenizer and image processor (the PIL one: no torchvision),
from a hub id or a local folder; no network is touched when ``HF_HUB_OFFLINE=1`` or the model is
a folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import InputError, ModelLoadError
from .video import to_uint8

__all__ = ["DEFAULT_CLIP_MODEL", "ClipScorer", "pairwise_mean_cosine"]

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")


def pairwise_mean_cosine(embeddings: Any) -> float:
    """Mean cosine similarity over all ordered pairs ``(i, j), i != j`` of the rows of ``(n, d)`` embeddings."""
    import torch

    e = torch.as_tensor(embeddings).float()
    n = e.shape[0]
    if n < 2:
        raise InputError(f"frame consistency needs at least 2 frames, got {n}")
    e = torch.nn.functional.normalize(e, dim=-1)
    sim = e @ e.T
    return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))


class ClipScorer:
    """LOVEU-TGVE CLIP metrics for a clip: frame consistency and text alignment.

    ``model``: a hub id (default ``openai/clip-vit-large-patch14``) or a local folder holding the
    model, tokenizer and ``preprocessor_config.json``. ``device`` defaults to CUDA when available;
    ``dtype`` to fp16 on CUDA and fp32 otherwise (similarities are always computed in fp32).
    Frames are anything :func:`tuneavideo.video.to_uint8` accepts; they are embedded in batches
    of ``batch_size``.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_CLIP_MODEL,
        device: Any = None,
        dtype: Any = None,
        batch_size: int = 16,
    ) -> None:
        import torch

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.model_id = str(model)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype
        self.batch_size = batch_size
        self.model, self.tokenizer, self.image_processor = self._load(self.model_id)
        self.model.to(self.device, self.dtype).eval().requires_grad_(False)

    # ----------------------------------------------------------------------------------- loading

    @staticmethod
    def _load(model_id: str):
        from transformers import CLIPModel, CLIPTokenizer

        try:
            from transformers import CLIPImageProcessorPil as ImageProcessor  # no torchvision needed
        except ImportError:  # pragma: no cover - older transformers
            from transformers import CLIPImageProcessor as ImageProcessor

        from .tokenizer import check_tokenizer

        path = Path(model_id).expanduser()
        is_dir = path.is_dir()
        looks_local = is_dir or model_id.startswith((".", "/", "~")) or model_id.count("/") > 1
        if looks_local and not is_dir:
            raise ModelLoadError(f"CLIP model folder not found: {path}")
        src = str(path) if is_dir else model_id
        local_only = is_dir or _offline()
        where = f"folder {src}" if is_dir else f"hub id {src!r}"
        if local_only and not is_dir:
            where += " (offline: HF_HUB_OFFLINE=1)"
        hint = (
            "Pass a local folder with the CLIP weights, tokenizer (vocab.json, merges.txt) and "
            "preprocessor_config.json, or download it once with network access "
            f"(e.g. `huggingface-cli download {DEFAULT_CLIP_MODEL}`)."
        )
        try:
            model = CLIPModel.from_pretrained(src, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the CLIP model from {where}: {_first_line(exc)}. {hint}") from exc
        try:
            tokenizer = CLIPTokenizer.from_pretrained(src, local_files_only=local_only)
            check_tokenizer(tokenizer, where=f"CLIP tokenizer of {src}")
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load the CLIP tokenizer from {where}: {_first_line(exc)}. {hint}") from exc
        try:
            image_processor = ImageProcessor.from_pretrained(src, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"could not load the CLIP image processor from {where}: {_first_line(exc)}. {hint}"
            ) from exc
        return model, tokenizer, image_processor

    # ---------------------------------------------------------------------------------- embeddings

    @staticmethod
    def _pooled(out: Any):
        """``get_*_features`` returns a tensor (transformers 4) or an output with ``pooler_output`` (5)."""
        return out if hasattr(out, "dim") else out.pooler_output

    def image_embeddings(self, frames: Any):
        """L2-normalised CLIP image embeddings of every frame: float32 ``(f, d)`` on the CPU."""
        import torch

        arr = to_uint8(frames)
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(arr), self.batch_size):
                batch = [frame for frame in arr[i : i + self.batch_size]]
                pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
                out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
                chunks.append(self._pooled(out).float().cpu())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def text_embedding(self, prompt: str):
        """L2-normalised CLIP text embedding of ``prompt``: float32 ``(d,)`` on the CPU (77 tokens max)."""
        import torch

        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        tokens = self.tokenizer(
            [prompt], padding=True, truncation=True, max_length=self.tokenizer.model_max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            out = self.model.get_text_features(
                input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
            )
        return torch.nn.functional.normalize(self._pooled(out).float().cpu()[0], dim=-1)

    # ------------------------------------------------------------------------------------- metrics

    def frame_consistency(self, frames: Any) -> float:
        """Mean cosine similarity of the CLIP image embeddings over all pairs of distinct frames."""
        return pairwise_mean_cosine(self._embed_checked(frames))

    def text_alignment(self, frames: Any, prompt: str) -> float:
        """Mean over frames of 100 x cosine(image embedding, text embedding of ``prompt``)."""
        return self._alignment(self._embed_checked(frames, min_frames=1), prompt)

    def score(self, frames: Any, prompt: str) -> dict[str, float]:
        """Both metrics from one pass over the frames: ``{"frame_consistency", "text_alignment", "num_frames"}``."""
        emb = self._embed_checked(frames)
        return {
            "frame_consistency": pairwise_mean_cosine(emb),
            "text_alignment": self._alignment(emb, prompt),
            "num_frames": int(emb.shape[0]),
        }

    def _embed_checked(self, frames: Any, min_frames: int = 2):
        arr = to_uint8(frames)
        if len(arr) < min_frames:
            raise InputError(f"need at least {min_frames} frame(s) to score, got {len(arr)}")
        return self.image_embeddings(arr)

    def _alignment(self, image_emb, prompt: str) -> float:
        text = self.text_embedding(prompt)
        return float((image_emb @ text).mean() * 100.0)

    def __repr__(self) -> str:
        return f"ClipScorer(model={self.model_id!r}, device={self.device}, dtype={self.dtype})"
