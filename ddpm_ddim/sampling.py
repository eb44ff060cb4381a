"""Batched unconditional sampling with the DDPM / DDIM schedulers of :mod:`ddpm_ddim.schedulers` (the homework's).

Sample ``i`` of a run with ``seed`` uses its own generator seeded ``seed + i`` for x_T and every step's noise,
so an image does not depend on the batch size it was drawn in. The UNet glue (``unet_eps``, ``model_shape``,
``load_model``) lives in :mod:`common.sampling`, whose reference loops the other packages use instead of these.
"""

from __future__ import annotations

from typing import Any

import torch

from common.gpu import randn_per_sample
from common.sampling import load_model, model_shape, sample_in_batches, unet_eps
from ddpm_ddim.schedulers import DDIMScheduler, DDPMScheduler

__all__ = ["load_model", "model_shape", "sample_batch", "sample_images", "unet_eps"]


@torch.no_grad()
def sample_batch(unet: torch.nn.Module, scheduler: DDPMScheduler | DDIMScheduler, generators: list[torch.Generator],
                 eta: float = 0.0, progress: Any = None) -> torch.Tensor:
    """Run the whole reverse chain for one batch (one generator per sample). Returns [B, C, H, W] float32.

    ``scheduler.set_timesteps`` must have been called. ``progress`` is a tqdm bar updated once per step.
    """
    device = next(unet.parameters()).device
    x = randn_per_sample(model_shape(unet), generators, device=device, dtype=torch.float32)  # x_T ~ N(0, I)
    is_ddim = isinstance(scheduler, DDIMScheduler)
    for t in scheduler.timesteps.tolist():  # Python ints (set_timesteps on the CPU): no GPU read per step
        eps_hat = unet_eps(unet, x, t)
        # z only where step() adds it (DDIM with eta > 0, DDPM above t = 0): a draw nobody adds is wasted
        # launches, and skipping it changes nothing, as each batch has its own generators
        uses_noise = eta > 0 if is_ddim else t > 0
        noise = randn_per_sample(tuple(x.shape[1:]), generators, device=device, dtype=torch.float32) \
            if uses_noise else None
        if is_ddim:
            x = scheduler.step(eps_hat, t, x, eta=eta, noise=noise).prev_sample
        else:
            x = scheduler.step(eps_hat, t, x, noise=noise).prev_sample
        if progress is not None:
            progress.update(1)
    if not torch.isfinite(x).all():  # a NaN from a scheduler step must not become a black image
        raise ValueError(f"{type(scheduler).__name__} sampling produced NaN or inf; check the step() TODOs")
    return x.clamp(-1, 1)


def sample_images(unet: torch.nn.Module, scheduler: DDPMScheduler | DDIMScheduler, num_samples: int,
                  num_inference_steps: int, seed: int = 0, batch_size: int = 10, eta: float = 0.0,
                  progress: bool = True) -> torch.Tensor:
    """Draw ``num_samples`` images in batches: [N, C, H, W] float32 in [-1, 1] on the UNet's device."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError("num_samples and batch_size must be >= 1")
    if not 1 <= num_inference_steps <= scheduler.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {scheduler.num_train_timesteps}], "
                         f"got {num_inference_steps}")
    device = next(unet.parameters()).device
    scheduler.set_timesteps(num_inference_steps, device="cpu")
    return sample_in_batches(lambda gens, bar: sample_batch(unet, scheduler, gens, eta, bar), num_samples,
                             num_inference_steps, device, seed, batch_size, progress)
