"""Batched unconditional sampling with the DDPM / DDIM schedulers of :mod:`ddpm_ddim.schedulers`.

Sample ``i`` of a run with ``seed`` uses its own generator seeded ``seed + i`` for x_T and every step's noise,
so an image does not depend on the batch size it was drawn in.
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from common.gpu import make_generators, randn_per_sample
from ddpm_ddim.schedulers import DDIMScheduler, DDPMScheduler


def unet_eps(unet: torch.nn.Module, x_t: torch.Tensor, t: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """eps_hat = eps_theta(x_t, t) from a diffusers ``UNet2DModel``, returned in float32. x_t: [B, C, H, W]."""
    dtype = dtype or next(unet.parameters()).dtype
    timesteps = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
    return unet(x_t.to(dtype), timesteps).sample.float()


def model_shape(unet: torch.nn.Module) -> tuple[int, int, int]:
    """(C, H, W) of the samples a ``UNet2DModel`` makes."""
    cfg = unet.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return int(cfg.in_channels), int(size), int(size)


@torch.no_grad()
def sample_batch(unet: torch.nn.Module, scheduler: DDPMScheduler | DDIMScheduler, generators: list[torch.Generator],
                 eta: float = 0.0, progress: Any = None) -> torch.Tensor:
    """Run the whole reverse chain for one batch (one generator per sample). Returns [B, C, H, W] float32.

    ``scheduler.set_timesteps`` must have been called. ``progress`` is a tqdm bar updated once per step.
    """
    device = next(unet.parameters()).device
    x = randn_per_sample(model_shape(unet), generators, device=device, dtype=torch.float32)  # x_T ~ N(0, I)
    for t in scheduler.timesteps.tolist():
        eps_hat = unet_eps(unet, x, t)
        noise = randn_per_sample(tuple(x.shape[1:]), generators, device=device, dtype=torch.float32)
        if isinstance(scheduler, DDIMScheduler):
            x = scheduler.step(eps_hat, t, x, eta=eta, noise=noise).prev_sample
        else:
            x = scheduler.step(eps_hat, t, x, noise=noise).prev_sample
        if progress is not None:
            progress.update(1)
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
    outputs = []
    num_batches = -(-num_samples // batch_size)
    with tqdm(total=num_batches * num_inference_steps, desc="sampling", unit="step", disable=not progress,
              leave=False) as bar:
        for start in range(0, num_samples, batch_size):
            seeds = range(seed + start, seed + min(num_samples, start + batch_size))
            outputs.append(sample_batch(unet, scheduler, make_generators(seeds, device), eta, bar))
    return torch.cat(outputs)


def load_model(name: str, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(UNet2DModel in eval mode, scheduler config) of a registry name or local DDPM folder (``common.registry``)."""
    from common.registry import load_ddpm

    unet, config = load_ddpm(name, device, dtype)
    return unet.eval().requires_grad_(False), config
