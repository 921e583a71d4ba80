"""DDIM inversion exactly as the official Tune-A-Video code runs it (paper §4.3, "DDIM inversion").

Conditioning is the embedding of one prompt (``""`` by default) with no classifier-free guidance.
The 50 DDIM timesteps ``[981, ..., 1]`` are walked in reverse (``t = 1, 21, ..., 981``); at each
``t`` the model is evaluated at ``t`` on the current latent and the latent is moved from
``t - 1000/50`` to ``t``, where the alpha of a negative timestep is ``final_alpha_cumprod``
(``alphas_cumprod[0]`` for SD, whose ``set_alpha_to_one`` is false). We write this update
ourselves rather than use ``DDIMInverseScheduler``, whose timestep pairing differs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import DDIMScheduler

from .progress import ProgressCallback, ProgressReporter


def ddim_inversion_step(
    eps: torch.Tensor, timestep: int, sample: torch.Tensor, scheduler: DDIMScheduler
) -> torch.Tensor:
    """Move ``sample`` one DDIM step *up* the noise schedule, ending at ``timestep`` (ε-prediction)."""
    step = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    current, target = min(int(timestep) - step, 999), int(timestep)
    alpha = scheduler.alphas_cumprod[current] if current >= 0 else scheduler.final_alpha_cumprod
    alpha_next = scheduler.alphas_cumprod[target]
    x0 = (sample - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    return alpha_next**0.5 * x0 + (1 - alpha_next) ** 0.5 * eps


@torch.no_grad()
def ddim_invert(
    unet: Callable[..., object],
    scheduler: DDIMScheduler,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    num_inference_steps: int = 50,
    return_all: bool = False,
    callback: ProgressCallback | None = None,
    progress_bar: bool = False,
    unet_kwargs: Callable[[torch.Tensor, torch.Tensor, int], dict] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Invert clean latents ``(b, c, f, h, w)`` to DDIM noise at the last timestep.

    Args:
        prompt_embeds: text embedding ``(1 or b, n, d)`` of the inversion prompt.
        return_all: return every intermediate (``num_inference_steps + 1`` tensors, the input first).
        unet_kwargs: optional ``(latents, t, step_index) -> dict`` of extra UNet arguments (control residuals).
    """
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError(
            f"DDIM inversion needs an epsilon-prediction model, this one predicts {scheduler.config.prediction_type!r}"
        )
    scheduler = DDIMScheduler.from_config(scheduler.config)  # private copy: set_timesteps mutates
    scheduler.set_timesteps(num_inference_steps)
    if prompt_embeds.shape[0] == 1 and latents.shape[0] > 1:
        prompt_embeds = prompt_embeds.expand(latents.shape[0], -1, -1)
    reporter = ProgressReporter("invert", num_inference_steps, callback, tqdm_bar=progress_bar)
    latent = latents.clone()
    trajectory = [latents]
    for i, t in enumerate(reversed(scheduler.timesteps)):
        extra = unet_kwargs(latent, t, i) if unet_kwargs is not None else {}
        eps = unet(latent, t, encoder_hidden_states=prompt_embeds, **extra).sample
        latent = ddim_inversion_step(eps, t, latent, scheduler)
        if return_all:
            trajectory.append(latent)
        reporter.step(i + 1, timestep=int(t))
    reporter.close()
    return trajectory if return_all else latent
