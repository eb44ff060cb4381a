"""Ambiguous images (handout Tasks 2-3): one pixel-space image that reads as a different prompt under each view.

Stage I denoises N views x^i = view_i(z) of one 64 x 64 image, each conditioned on its own prompt (toy-pixel here,
DeepFloyd IF stage I for real use). Stage II (real IF only) upsamples 64 -> 256 with the same synchronization:
the canonical stage-I image is bilinearly upsampled, noised to ``noise_level`` with IF-II's image-noising
schedule (as ``IFSuperResolutionPipeline`` does; the skeleton skips the noising), and view i sees
view_i(condition) concatenated to its x_t, with ``class_labels = noise_level``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from common.schedules import make_alphas_cumprod
from common.tweedie import add_noise
from synchronization.core import initial_noise, sample, schedule_from_config
from synchronization.denoisers import TextDenoiser, encode_text
from synchronization.views import View, ViewMapping


def _run_stage(unet: Any, scheduler_config: dict, mapping: ViewMapping, cond: torch.Tensor, uncond: torch.Tensor,
               size: int, num_inference_steps: int, guidance_scale: float, sync: str, canonical: bool, init: str,
               generator: torch.Generator, max_batch: int | None, progress: bool, desc: str,
               condition: torch.Tensor | None = None, class_labels: int | None = None) -> torch.Tensor:
    schedule = schedule_from_config(scheduler_config, num_inference_steps)
    eps_fn = TextDenoiser(unet, cond, uncond, guidance_scale, schedule, max_batch, condition, class_labels)
    channels = int(unet.config.out_channels) if condition is None else 3
    channels = min(channels, int(unet.config.in_channels))
    n = len(mapping.views)
    x_T = initial_noise(mapping, (1, channels, size, size), n, (channels, size, size), init, generator)
    z0, _ = sample(mapping, eps_fn, schedule, x_T.to(unet.device), sync, canonical, progress, desc)
    return z0


@torch.no_grad()
def generate_ambiguous(model: Any, prompts: list[str], views: list[View], negative_prompt: str = "",
                       num_inference_steps: int = 30, guidance_scale: float = 10.0, sync: str = "x0",
                       canonical: bool = False, init: str = "canonical", seed: int = 1,
                       max_batch: int | None = None, upscaler: Any = None, stage2_noise_level: int = 50,
                       progress: bool = True) -> dict[str, Any]:
    """``model``: :class:`common.registry.PixelModel`; ``upscaler``: IF stage II pipeline or None.

    Returns ``image`` [3, S, S] (canonical, [-1, 1]), ``views`` [N, 3, S, S] = view_i(image) and ``stage1``
    [3, 64, 64] (the stage-I canonical image; equals ``image`` without an upscaler).
    """
    if len(prompts) != len(views):
        raise ValueError(f"got {len(prompts)} prompts for {len(views)} views; give one prompt per view")
    mapping = ViewMapping(views)
    generator = torch.Generator("cpu").manual_seed(seed)
    cond = encode_text(model.tokenizer, model.text_encoder, list(prompts))
    uncond = encode_text(model.tokenizer, model.text_encoder, [negative_prompt] * len(prompts))
    size = int(model.unet.config.sample_size)
    z = _run_stage(model.unet, dict(model.scheduler.config), mapping, cond, uncond, size, num_inference_steps,
                   guidance_scale, sync, canonical, init, generator, max_batch, progress, "stage I")
    stage1 = z.clamp(-1, 1)
    if upscaler is not None:
        z = upsample_stage(upscaler, stage1, mapping, cond, uncond, num_inference_steps, guidance_scale, sync,
                           canonical, init, generator, max_batch, stage2_noise_level, progress)
    image = z.clamp(-1, 1)
    return {"image": image[0].float().cpu(), "views": mapping.forward_mapping(image).float().cpu(),
            "stage1": stage1[0].float().cpu()}


def upsample_stage(upscaler: Any, stage1: torch.Tensor, mapping: ViewMapping, cond: torch.Tensor,
                   uncond: torch.Tensor, num_inference_steps: int, guidance_scale: float, sync: str,
                   canonical: bool, init: str, generator: torch.Generator, max_batch: int | None,
                   noise_level: int, progress: bool) -> torch.Tensor:
    """IF stage II with the same synchronization; returns the canonical [1, 3, 256, 256] image."""
    unet = upscaler.unet
    size = int(unet.config.sample_size)
    up = F.interpolate(stage1.float(), size=(size, size), mode="bilinear", align_corners=True)
    noising = dict(upscaler.image_noising_scheduler.config)
    alphas_cumprod = make_alphas_cumprod(noising.get("beta_schedule", "squaredcos_cap_v2"),
                                         int(noising.get("num_train_timesteps", 1000)),
                                         float(noising.get("beta_start", 1e-4)), float(noising.get("beta_end", 0.02)))
    noise = torch.randn(up.shape, generator=generator).to(up.device)
    noisy_up = add_noise(up, noise, alphas_cumprod[noise_level])
    condition = mapping.forward_mapping(noisy_up).to(unet.device)  # view_i(condition) for view i
    return _run_stage(unet, dict(upscaler.scheduler.config), mapping, cond, uncond, size, num_inference_steps,
                      guidance_scale, sync, canonical, init, generator, max_batch, progress, "stage II",
                      condition=condition, class_labels=noise_level)


def animation_frames(image: torch.Tensor, views: list[View], frames_per_view: int = 12,
                     hold: int = 6) -> list[torch.Tensor]:
    """Frames [3, S, S] moving the canonical image through every view and back (rotations are drawn rotating)."""
    frames: list[torch.Tensor] = []
    x = image.unsqueeze(0)
    for v in views:
        if v.name == "identity":
            continue
        steps = [i / frames_per_view for i in range(frames_per_view + 1)]
        frames += [x[0]] * hold + [v.frame(x, p)[0].clamp(-1, 1) for p in steps]
        frames += [v.view(x)[0]] * hold + [v.frame(x, p)[0].clamp(-1, 1) for p in reversed(steps)]
    return frames or [image]
