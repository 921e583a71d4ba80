"""Speed modes (tuneavideo/speed.py) on CPU, the tuning generator, attention-kernel names, import direction."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tuneavideo import InputError, TuneConfig, tune
from tuneavideo.speed import SPEED_MODES, resolve_speed_mode, speed_plan

FRAMES = (np.random.default_rng(0).random((3, 32, 32, 3)) * 255).astype(np.uint8)


def test_modes_resolve_and_plain_is_the_cpu_default():
    assert SPEED_MODES == ("auto", "plain", "fast", "low-vram")
    assert resolve_speed_mode("auto", "cpu") == "plain"
    assert resolve_speed_mode("auto", "cuda") == "fast"
    assert speed_plan("low-vram", "cpu").gradient_checkpointing is True
    assert not speed_plan("fast", "cpu", compile=True).compile_blocks  # compile only on CUDA
    # measured: no gain per step, ~28 s of autotuning in a worker's first job (benchmarks/worker_start_h200.json)
    assert not any(speed_plan(mode, "cuda").cudnn_benchmark for mode in ("plain", "fast", "low-vram"))
    with pytest.raises(InputError):
        resolve_speed_mode("turbo", "cpu")


def test_low_vram_sampling_matches_plain(tiny_pipe):
    inv = torch.randn(1, 4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    outs = {}
    for mode in ("plain", "low-vram"):
        tiny_pipe.set_speed_mode(mode)
        outs[mode] = tiny_pipe("a cat", latents=inv, num_inference_steps=3, output_type="latent").videos
    torch.testing.assert_close(
        outs["low-vram"], outs["plain"], rtol=1e-3, atol=1e-4
    )  # batch size changes fp32 rounding


def test_tune_takes_a_generator_and_leaves_the_global_rng_alone(tiny_pipe):
    base = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    state = torch.random.get_rng_state()
    a = tune(tiny_pipe, FRAMES, "a square", TuneConfig(max_train_steps=3, seed=5))
    assert torch.equal(torch.random.get_rng_state(), state)
    with torch.no_grad():
        for n, p in tiny_pipe.unet.named_parameters():
            p.copy_(base[n])
    b = tune(tiny_pipe, FRAMES, "a square", TuneConfig(max_train_steps=3), generator=torch.Generator().manual_seed(5))
    assert a.losses == b.losses
    assert a.record["speed_mode"] == "plain"


def test_attention_kernel_names(tiny_pipe):
    unet = tiny_pipe.unet
    assert unet.attention_kernel == "sdpa"
    with pytest.warns(DeprecationWarning):
        unet.set_attention_backend("sdpa")
    with pytest.raises(ValueError):
        unet.set_attention_kernel("flash")


def test_imports_run_one_way():
    pkg = Path(__file__).resolve().parent.parent / "tuneavideo"
    for name in ("unet.py", "pipeline.py", "weights.py", "attention.py", "speed.py", "inversion.py", "graphs.py"):
        assert not re.search(r"from \.loading|import loading", (pkg / name).read_text()), name
    for name in ("attention.py", "unet.py", "pipeline.py", "inversion.py", "tuning.py", "loading.py", "weights.py",
                 "graphs.py"):  # fmt: skip
        text = (pkg / name).read_text()
        assert "torch.manual_seed" not in text and "_reset_state" not in text, name


def test_sparse_causal_gather_is_frame_0_then_the_previous_frame():
    from tuneavideo.attention import SparseCausalAttnProcessor, former_frame_index

    b, f, n, c = 2, 5, 3, 4
    x = torch.randn(b * f, n, c)
    got = SparseCausalAttnProcessor(None).gather(x, b, f, n)  # (b f, 2n, c)
    xs = x.view(b, f, n, c)
    prev = former_frame_index(f)
    want = torch.cat([xs[:, [0] * f], xs[:, prev]], dim=2).view(b * f, 2 * n, c)
    assert torch.equal(got, want)
    one = torch.randn(b, n, c)
    assert torch.equal(SparseCausalAttnProcessor(None).gather(one, b, 1, n), torch.cat([one, one], dim=1))
    # the gradient reaching the keys (tuning back-propagates through the slice writes) is the index gather's
    for frames in (f, 2, 1):
        x1 = torch.randn(b * frames, n, c, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_(True)
        w = torch.randn(b * frames, 2 * n, c)
        (SparseCausalAttnProcessor(None).gather(x1, b, frames, n) * w).sum().backward()
        x2v = x2.view(b, frames, n, c)
        want = torch.cat([x2v[:, [0] * frames], x2v[:, former_frame_index(frames)]], dim=2)
        (want.view(b * frames, 2 * n, c) * w).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad)


@pytest.mark.parametrize("affine", [True, False])
def test_frame_parallel_clip_group_norm_matches_the_5d_group_norm(affine, monkeypatch):
    from torch import nn

    import tuneavideo.unet
    from tuneavideo.attention import FrameContext
    from tuneavideo.unet import ClipGroupNorm

    monkeypatch.setattr(tuneavideo.unet, "kernel_module", lambda name: None)  # the PyTorch path, not the kernel's

    context = FrameContext(num_frames=4, fast_kernels=True)
    norm = ClipGroupNorm.from_group_norm(nn.GroupNorm(4, 16, eps=1e-5, affine=affine), context)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(2 * 4, 16, 6, 6, generator=gen) * 3 + 2).requires_grad_(True)  # (b f) c h w, offset mean
    x5 = x.detach().view(2, 4, 16, 6, 6).transpose(1, 2)
    want = nn.functional.group_norm(x5, 4, norm.weight, norm.bias, 1e-5).transpose(1, 2).reshape(8, 16, 6, 6)
    fast_x = x.detach().bfloat16().requires_grad_(True)
    got = norm(fast_x)  # bf16 takes the frame-parallel path (fp32 statistics)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=0.04, rtol=0.02)
    # gradients flow like the reference's (to bf16 precision)
    got.float().square().sum().backward()
    norm.zero_grad()
    ref = ClipGroupNorm.from_group_norm(norm, FrameContext(num_frames=4))(x)
    ref.square().sum().backward()
    torch.testing.assert_close(fast_x.grad.float(), x.grad, atol=0.1, rtol=0.05)
    # a half input in neither NCHW nor NHWC memory (a sum of the two, say) takes the 5-D path, which takes any strides
    odd = x.detach().bfloat16().transpose(2, 3)
    torch.testing.assert_close(norm(odd).float(), want.transpose(2, 3), atol=0.04, rtol=0.02)
    context.fast_kernels = False
    assert torch.equal(norm(x.detach()), ref.detach())  # the reference path is untouched


def test_half_compute_step_keeps_fp32_masters_and_rounds_them_into_the_model():
    from tuneavideo.tuning import _MixedPrecisionStep

    gen = torch.Generator().manual_seed(0)
    half = torch.nn.Parameter(torch.randn(8, 8, generator=gen).bfloat16())
    master = half.detach().float().requires_grad_(True)
    opt = torch.optim.AdamW([master], lr=1e-2)
    step = _MixedPrecisionStep(opt, [master], "bf16", torch.device("cpu"), 1.0, [half])
    x = torch.randn(4, 8, generator=gen).bfloat16()

    def loss_fn(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_autocast_enabled("cpu")  # half compute: no autocast
        return (x @ w).float().square().mean()

    before = master.detach().clone()
    loss = step(loss_fn, half, x)
    assert np.isfinite(loss)
    assert master.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert not torch.equal(master.detach(), before)  # the master moved
    assert torch.equal(half.detach(), master.detach().bfloat16())  # and the model holds it, rounded
    assert half.grad is None and master.grad is None


def test_low_vram_tuning_recomputes_feed_forwards_and_matches_plain(tiny_pipe):
    """low-vram checkpoints each transformer whole and, inside, the feed-forwards: the same losses and weights."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from tuneavideo.tuning import select_trainable

    base = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    runs, norm_calls = {}, {}
    transformers = [m for m in tiny_pipe.unet.modules() if isinstance(m, Transformer2DModel)]
    calls = [0]
    norms = [t.transformer_blocks[0].norm1 for t in transformers]
    hooks = [norm.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1)) for norm in norms]
    try:
        for mode in ("plain", "low-vram"):
            with torch.no_grad():
                for n, p in tiny_pipe.unet.named_parameters():
                    p.copy_(base[n])
            calls[0] = 0
            delta = tune(tiny_pipe, FRAMES, "a cat", TuneConfig(max_train_steps=3, seed=1), speed=mode)
            runs[mode], norm_calls[mode] = delta, calls[0]
            ffs = [m.ff for m in tiny_pipe.unet.modules() if hasattr(m, "attn_temp")]
            assert ffs and all(("forward" in ff.__dict__) == (mode == "low-vram") for ff in ffs)
            assert not any("forward" in t.__dict__ or t.gradient_checkpointing for t in transformers)  # put back
    finally:
        for hook in hooks:
            hook.remove()
        tiny_pipe.set_speed_mode("auto")
        with torch.no_grad():
            for n, p in tiny_pipe.unet.named_parameters():
                p.copy_(base[n])
    np.testing.assert_allclose(runs["low-vram"].losses, runs["plain"].losses, rtol=1e-5)
    # a whole transformer (its blocks too) runs again in the backward pass: once more per step than plain
    assert norm_calls == {"plain": 3 * len(transformers), "low-vram": 6 * len(transformers)}, norm_calls
    for name, value in runs["plain"].state_dict.items():
        torch.testing.assert_close(runs["low-vram"].state_dict[name], value, rtol=1e-4, atol=1e-6)
    assert set(runs["plain"].state_dict) == set(select_trainable(tiny_pipe.unet, TuneConfig().trainable_modules))


def test_steps_the_fp16_loss_scaler_skips_are_counted():
    from tuneavideo.tuning import _MixedPrecisionStep

    weight = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([weight], lr=1e-2)
    step = _MixedPrecisionStep(opt, [weight], "fp16", torch.device("cpu"), 1.0)
    step(lambda w: (w * 2).sum(), weight)
    assert step.skipped == 0
    before = weight.detach().clone()
    step(lambda w: (w * float("inf")).sum(), weight)  # overflowing gradients: the scaler skips the update
    assert step.skipped == 1 and torch.equal(weight.detach(), before)


def test_cuda_graphs_only_on_the_fast_cuda_path_and_eager_elsewhere(tiny_pipe, monkeypatch):
    from tuneavideo.graphs import GraphedUNet, loop_unet

    assert speed_plan("fast", "cuda").cuda_graphs
    assert not speed_plan("plain", "cuda").cuda_graphs
    assert not speed_plan("low-vram", "cuda").cuda_graphs  # a graph keeps one forward's activations
    assert not speed_plan("fast", "cpu").cuda_graphs  # "fast" on a CPU is the plain plan's kernels, no graphs
    assert speed_plan("fast", "cuda").train_graphs and speed_plan("low-vram", "cuda").train_graphs  # tuning steps
    assert not any(speed_plan(m, d).train_graphs for m, d in [("plain", "cuda"), ("fast", "cpu"), ("low-vram", "cpu")])
    unet = tiny_pipe.unet
    assert loop_unet(unet, False, 50) is unet
    assert loop_unet(unet, True, 2) is unet  # too short to replay a graph: not worth capturing
    monkeypatch.setattr(unet, "_hf_hook", object(), raising=False)
    assert loop_unet(unet, True, 50) is unet  # CPU offload moves weights inside forward: eager
    monkeypatch.delattr(unet, "_hf_hook")
    from tuneavideo.graphs import train_graphs_enabled

    assert train_graphs_enabled()  # tuning steps too, by default
    monkeypatch.setenv("TUNEAVIDEO_TRAIN_GRAPHS", "0")
    assert not train_graphs_enabled() and isinstance(loop_unet(unet, True, 50), GraphedUNet)  # tuning only
    monkeypatch.delenv("TUNEAVIDEO_TRAIN_GRAPHS")
    monkeypatch.setenv("TUNEAVIDEO_CUDA_GRAPHS", "0")
    assert loop_unet(unet, True, 50) is unet and not train_graphs_enabled()  # the kill switch: every graph
    monkeypatch.delenv("TUNEAVIDEO_CUDA_GRAPHS")
    graphed = loop_unet(unet, True, 50)
    assert isinstance(graphed, GraphedUNet)
    x = torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    e = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = unet(x, torch.tensor(10), encoder_hidden_states=e).sample
        for _ in range(2):  # on a CPU every call is the eager call: nothing captured, nothing replayed
            assert torch.equal(graphed(x, torch.tensor(10), e).sample, want)
    assert graphed.replays == 0 and graphed.failed is None


class _FakeCapture:
    """Stands in for the CUDA stream and graph: "capturing" runs nothing; a replay re-runs the recorded step on
    the captured argument buffers and writes into the output buffers, as a graph replay does."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.warm_calls = fail, 0

    def warm(self, fn):
        self.warm_calls += 1
        return fn()

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        out = (torch.zeros(()), torch.zeros((), dtype=torch.bool))

        def replay():
            loss, skipped = fn()
            out[0].copy_(loss)
            out[1].copy_(skipped)

        return out, replay


@pytest.mark.parametrize("fail", [False, True])
def test_a_graphed_tuning_step_feeds_fresh_inputs_through_its_buffers(fail):
    from tuneavideo.graphs import GraphedTrainStep
    from tuneavideo.tuning import _MixedPrecisionStep

    def run(graphed: bool):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 4)
        opt = torch.optim.AdamW(layer.parameters(), lr=1e-2)
        step = _MixedPrecisionStep(opt, list(layer.parameters()), "fp16", torch.device("cpu"), 1.0)
        capture = _FakeCapture(fail)
        fn = GraphedTrainStep(step, warmup=2, capture=capture) if graphed else step
        gen = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(6):  # new inputs every step, as tuning draws fresh latents, noise and timesteps
            x, target = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
            losses.append(fn(lambda m, a, b: ((m(a) - b) ** 2).mean(), layer, x, target))
        return losses, fn, capture

    eager, _, _ = run(False)
    with pytest.warns(UserWarning, match="tuning eagerly") if fail else contextlib.nullcontext():
        graphed, fn, capture = run(True)
    assert graphed == eager  # the same steps, bit for bit: every input went through the buffers
    assert capture.warm_calls == 2 and fn.skipped == 0
    if fail:  # the step's bookkeeping was reset and the run went on eagerly, with the reason kept
        assert fn.replays == 0 and "not permitted" in fn.failed
    else:
        assert fn.replays == 4 and fn.failed is None


def test_a_graphed_tuning_step_is_captured_again_when_held_back_kernels_switch_on():
    """tuneavideo.kernels.precompile: the graph captured while the Triton kernels were held back replays the
    PyTorch path; when they switch on, two eager steps warm them up and a new graph is captured."""
    import tuneavideo.kernels as kernels
    from tuneavideo.graphs import GraphedTrainStep
    from tuneavideo.tuning import _MixedPrecisionStep

    layer = torch.nn.Linear(4, 4)
    step = _MixedPrecisionStep(torch.optim.AdamW(layer.parameters()), list(layer.parameters()), "fp16",
                               torch.device("cpu"), 1.0)  # fmt: skip
    capture = _FakeCapture()
    fn = GraphedTrainStep(step, warmup=2, capture=capture)
    x = torch.randn(3, 4)
    kernels._defer(True)
    try:
        for _ in range(4):
            fn(lambda m, a: m(a).square().mean(), layer, x)
        assert (capture.warm_calls, fn.replays) == (2, 2)
    finally:
        kernels._defer(False)  # switched on: a new generation
    for _ in range(4):
        fn(lambda m, a: m(a).square().mean(), layer, x)
    assert (capture.warm_calls, fn.replays) == (4, 4)  # two more eager steps, then the new graph's replays


def test_compiles_are_cached_beside_the_tuned_weights(tmp_path, monkeypatch):
    import os

    from tuneavideo.speed import persistent_compile_cache, persistent_kernel_cache

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TUNEAVIDEO_CACHE_DIR", str(tmp_path / "cache"))
    assert persistent_compile_cache() == tmp_path / "cache" / "inductor"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")  # where Inductor looks
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert persistent_compile_cache(tmp_path / "other") == tmp_path / "mine"  # the user's own choice wins
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert persistent_compile_cache(tmp_path / "other") == tmp_path / "other" / "inductor"  # --cache-dir
    monkeypatch.delenv("TRITON_CACHE_DIR", raising=False)
    assert persistent_kernel_cache() == tmp_path / "cache" / "triton"  # the fast path's Triton kernels too
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / "cache" / "triton")
    assert persistent_kernel_cache(tmp_path / "other") == tmp_path / "cache" / "triton"  # already chosen: kept


class _FakeStream:
    """Stands in for the side stream of a sampling loop: "capturing" runs the (side-effect free) forward once to
    shape the output buffer; a replay re-runs it on the captured input buffers and writes into that buffer."""

    def warm(self, fn):
        return fn()

    def capture(self, fn):
        out = fn().clone()
        return out, lambda: out.copy_(fn())


def test_a_graphed_unet_feeds_every_call_through_its_buffers(tiny_pipe):
    from tuneavideo.graphs import GraphedUNet

    unet = tiny_pipe.unet
    graphed = GraphedUNet(unet, capture=_FakeStream())
    gen = torch.Generator().manual_seed(3)
    e = torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        for frames, t in ((2, 900), (2, 500), (2, 100), (3, 50), (3, 10)):  # a new shape is captured afresh
            x = torch.randn(1, 4, frames, 16, 16, generator=gen)
            want = unet(x, torch.tensor(t), encoder_hidden_states=e).sample
            torch.testing.assert_close(graphed(x, torch.tensor(t), e).sample, want, rtol=0, atol=0)
    assert graphed.replays == 3 and graphed.failed is None  # 2 calls captured, 3 replayed


def test_lean_geglu_matches_stock_and_keeps_less_for_the_backward():
    """The fast paths' GEGLU gives the stock GEGLU's output and input gradient without keeping gelu(gate).

    A frozen projection (tuning) runs as two GEMMs on the weight's halves (rounding may differ); a trained one
    keeps the one GEMM (bit-exact).
    """
    from diffusers.models.activations import GEGLU

    from tuneavideo.speed import _set_lean_geglu

    torch.manual_seed(0)
    act = GEGLU(16, 32)
    weights = {p.untyped_storage().data_ptr() for p in act.parameters()}
    h = torch.randn(3, 10, 16, requires_grad=True)
    for frozen in (True, False):
        act.requires_grad_(not frozen)
        results = {}
        for lean in (False, True):
            _set_lean_geglu(act, lean)
            saved: dict[int, int] = {}

            def pack(t: torch.Tensor, saved: dict[int, int] = saved) -> torch.Tensor:
                if t.untyped_storage().data_ptr() not in weights:  # activations only
                    saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out = act(h)
            grad = torch.autograd.grad(out, h, torch.randn_like(out, generator=torch.Generator().manual_seed(1)))[0]
            results[lean] = out, grad, sum(saved.values())
        (out, grad, stock_bytes), (lean_out, lean_grad, lean_bytes) = results[False], results[True]
        if frozen:
            torch.testing.assert_close(lean_out, out)
            torch.testing.assert_close(lean_grad, grad)
        else:
            assert torch.equal(out, lean_out) and torch.equal(grad, lean_grad)
        # stock keeps the projection (2 x 32 wide) and gelu(gate) (32 wide); lean keeps x and gate (2 x 32)
        assert stock_bytes - lean_bytes == 30 * 32 * 4, (frozen, stock_bytes, lean_bytes)  # 30 tokens, fp32
    _set_lean_geglu(act, False)
    assert "forward" not in act.__dict__


def test_the_fast_mode_uses_the_lean_geglu(tiny_pipe):
    from diffusers.models.activations import GEGLU

    geglus = [m for m in tiny_pipe.unet.modules() if isinstance(m, GEGLU)]
    try:
        for mode, lean in (("fast", True), ("low-vram", False), ("plain", False)):
            tiny_pipe.set_speed_mode(mode)
            assert geglus and all(("forward" in g.__dict__) == lean for g in geglus), mode
    finally:
        tiny_pipe.set_speed_mode("auto")


def test_fast_layouts_match_the_reference_path_and_are_used(monkeypatch):
    """Fast kernels: temporal attention in the block's own layout and the transformers' 1x1 projections as GEMMs
    on NCHW give the reference outputs and trained gradients (fp64, so only rounding could differ)."""
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    import tuneavideo.attention as attention
    import tuneavideo.speed as speed
    from tuneavideo import testing
    from tuneavideo.unet import TuneAVideoUNet

    used = {"temporal": 0, "tokens_in": 0, "tokens_out": 0}

    def counted(key: str, fn: object) -> object:
        def call(*args: object) -> object:
            used[key] += 1
            return fn(*args)

        return call

    monkeypatch.setattr(
        attention, "_temporal_in_place_layout", counted("temporal", attention._temporal_in_place_layout)
    )
    monkeypatch.setattr(speed._TokensFromPlanes, "apply", counted("tokens_in", speed._TokensFromPlanes.apply))
    monkeypatch.setattr(speed._PlanesFromTokens, "apply", counted("tokens_out", speed._PlanesFromTokens.apply))
    torch.manual_seed(0)
    unet = TuneAVideoUNet(**testing.TINY_UNET_CONFIG).double()
    with torch.no_grad():  # zero-initialised outputs would hide the temporal path's gradients
        for name, p in unet.named_parameters():
            if "attn_temp.to_out.0.weight" in name:
                p.normal_(0, 0.1)
    unet.requires_grad_(False)
    trained = [p for n, p in unet.named_parameters() if "to_q" in n or "_temp." in n]
    x = torch.randn(2, 4, 3, 8, 8, dtype=torch.double)
    text = torch.randn(2, 7, unet.config.cross_attention_dim, dtype=torch.double)
    transformers = [m for m in unet.modules() if isinstance(m, Transformer2DModel)]
    results = {}
    for fast in (False, True):
        unet.frame_context.fast_kernels = fast
        for transformer in transformers:
            speed._set_token_projections(transformer, fast)
        for p in trained:
            p.requires_grad_(True)
            p.grad = None
        out = unet(x, 10, text).sample
        out.square().mean().backward()
        results[fast] = out.detach(), [p.grad for p in trained]
    (ref, ref_grads), (out, grads) = results[False], results[True]
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert used == {"temporal": len(transformers), "tokens_in": len(transformers), "tokens_out": len(transformers)}
    # a trained projection, or autocast, takes diffusers' own path
    transformers[0].proj_in.weight.requires_grad_(True)
    unet(x, 10, text)
    assert used["tokens_in"] == 2 * len(transformers) - 1
    with torch.no_grad():
        unet(x, 10, text)  # no gradient: the weight's flag does not matter
    assert used["tokens_in"] == 3 * len(transformers) - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not speed._frozen_plain_input(transformers[1].proj_in, x[:, :, 0])


def test_the_layout_free_temporal_attention_keeps_within_cuda_s_grid_limit():
    """Every (token, head) pair is an SDPA head there; a CUDA grid dimension holds 65535, so larger latents (768²
    gives 96·96 tokens x 8 heads = 73728) take the reference layout."""
    from diffusers.models.attention_processor import Attention

    from tuneavideo.attention import _strided_ok

    attn = Attention(query_dim=320, heads=8, dim_head=40)
    assert _strided_ok(attn, torch.empty(2 * 24, 64 * 64, 320, device="meta"))  # 512²: 32768 heads
    assert not _strided_ok(attn, torch.empty(2 * 24, 96 * 96, 320, device="meta"))  # 768²
