"""Ablation variants of the inflated UNet, for the component study of ``benchmarks/quality.py``.

Tune-A-Video's design has three video-specific parts (paper §4.1): sparse-causal self-attention
(frame ``i`` attends to frames ``0`` and ``i-1``), temporal attention (``norm_temp``/``attn_temp``
run by a forward hook after every transformer block) and one-shot tuning. The context managers
here switch one part off (or swap it for an alternative) on a loaded :class:`~tuneavideo.unet.TuneAVideoUNet`
and put it back on exit, so one model serves every variant:

* :func:`attention_mode` - ``"sparse-causal"`` (the default), ``"full-frame"`` (every frame
  attends to the tokens of *all* frames, the costlier dense alternative the paper argues against)
  or ``"frame"`` (each frame attends only to itself: plain 2D self-attention, no cross-frame path);
* :func:`temporal_attention_disabled` - the temporal hooks are removed, so ``attn_temp`` never runs.

Examples::

    with attention_mode(pipe.unet, "full-frame"), temporal_attention_disabled(pipe.unet):
        delta = tune(pipe, frames, prompt, TuneConfig(trainable_modules=("attn1.to_q", "attn2.to_q")))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.models.attention import BasicTransformerBlock

from .attention import SparseCausalAttnProcessor, TemporalAttentionHook

ATTENTION_MODES = ("sparse-causal", "full-frame", "frame")


class _SelfAttnProcessor(SparseCausalAttnProcessor):
    """Self-attention whose keys/values for frame ``i`` come from :meth:`gather` (subclasses choose).

    Subclasses :class:`SparseCausalAttnProcessor` (so ``TuneAVideoUNet.set_attn_processor`` accepts it on
    ``attn1``) and replaces only its ``gather``: the rest of the computation is the same.
    """

    def gather(self, x: torch.Tensor, b: int, f: int, n: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class FullFrameAttnProcessor(_SelfAttnProcessor):
    """Every frame queries the keys/values of all ``f`` frames of its clip (``f·n`` tokens, no mask).

    Cost grows as ``f²`` (sparse-causal: ``2f``); with one frame it is plain self-attention.
    """

    def gather(self, x: torch.Tensor, b: int, f: int, n: int) -> torch.Tensor:
        c = x.shape[-1]
        every = x.view(b, 1, f * n, c).expand(b, f, f * n, c)  # (b, f, f n, c): the whole clip for each frame
        return every.reshape(b * f, f * n, c)


class FrameAttnProcessor(_SelfAttnProcessor):
    """Each frame attends only to its own tokens: the image model's 2D self-attention, no cross-frame path."""

    def gather(self, x: torch.Tensor, b: int, f: int, n: int) -> torch.Tensor:
        return x


_PROCESSORS = {"full-frame": FullFrameAttnProcessor, "frame": FrameAttnProcessor}


def current_attention_mode(unet: torch.nn.Module) -> str:
    """``"sparse-causal"``, ``"full-frame"``, ``"frame"`` or ``"mixed"`` for the ``attn1`` processors of ``unet``."""
    modes = set()
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            found = next((m for m, cls in _PROCESSORS.items() if isinstance(proc, cls)), None)
            modes.add(found or ("sparse-causal" if isinstance(proc, SparseCausalAttnProcessor) else "other"))
    return modes.pop() if len(modes) == 1 else "mixed"


@contextmanager
def attention_mode(unet: torch.nn.Module, mode: str = "sparse-causal") -> Iterator[torch.nn.Module]:
    """Run every ``attn1`` of ``unet`` with ``mode`` inside the block; restore the model's backend after."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode must be one of {ATTENTION_MODES}, got {mode!r}")
    if mode == "sparse-causal":
        yield unet
        return
    backend = getattr(unet, "attention_backend", "sdpa")
    processors = dict(unet.attn_processors)
    for name in processors:
        if name.endswith("attn1.processor"):
            processors[name] = _PROCESSORS[mode](unet.frame_context, backend)
    unet.set_attn_processor(processors)
    try:
        yield unet
    finally:
        unet.set_attention_kernel(backend)


@contextmanager
def temporal_attention_disabled(unet: torch.nn.Module, disabled: bool = True) -> Iterator[torch.nn.Module]:
    """Remove the temporal-attention hooks of ``unet`` inside the block (``attn_temp`` is skipped), re-add after.

    With ``disabled=False`` this does nothing (convenient for variant tables).
    """
    if not disabled:
        yield unet
        return
    hooks = list(getattr(unet, "_temporal_hooks", []))
    if not hooks:
        raise ValueError("this UNet has no temporal-attention hooks (is it a TuneAVideoUNet?)")
    for handle in hooks:
        handle.remove()
    unet._temporal_hooks = []
    try:
        yield unet
    finally:
        for module in unet.modules():
            if isinstance(module, BasicTransformerBlock) and hasattr(module, "attn_temp"):
                unet._temporal_hooks.append(module.register_forward_hook(TemporalAttentionHook(unet.frame_context)))
