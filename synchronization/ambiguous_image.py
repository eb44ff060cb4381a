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

from common.gpu import host_to_device
from common.schedules import make_alphas_cumprod
from common.tweedie import add_noise
from synchronization.config import AmbiguousConfig
from synchronization.core import initial_noise, sample, schedule_from_config
from synchronization.denoisers import TextDenoiser, encode_text
from synchronization.views import View, ViewMapping


def _run_stage(unet: Any, scheduler_config: dict, mapping: ViewMapping, cond: torch.Tensor, uncond: torch.Tensor,
               size: int, cfg: AmbiguousConfig, generator: torch.Generator, desc: str,
               condition: torch.Tensor | None = None, class_labels: int | None = None) -> torch.Tensor:
    schedule = schedule_from_config(scheduler_config, cfg.num_inference_steps)
    eps_fn = TextDenoiser(unet, cond, uncond, cfg.guidance_scale, schedule, cfg.max_batch, condition, class_labels)
    channels = int(unet.config.out_channels) if condition is None else 3
    channels = min(channels, int(unet.config.in_channels))
    n = len(mapping.views)
    x_T = initial_noise(mapping, (1, channels, size, size), n, (channels, size, size), cfg.init, generator)
    z0, _ = sample(mapping, eps_fn, schedule, host_to_device(x_T, unet.device), cfg.sync, cfg.canonical_denoising,
                   cfg.progress, desc)
    return z0


@torch.no_grad()
def generate_ambiguous(model: Any, cfg: AmbiguousConfig, upscaler: Any = None) -> dict[str, Any]:
    """``model``: :class:`common.registry.PixelModel`; ``upscaler``: IF stage II pipeline or None (``cfg.stage2``
    is the CLI's choice; here the upscaler's presence decides).

    Returns ``image`` [3, S, S] (canonical, [-1, 1]), ``views`` [N, 3, S, S] = view_i(image) and ``stage1``
    [3, 64, 64] (the stage-I canonical image; equals ``image`` without an upscaler).
    """
    mapping = ViewMapping(cfg.views())
    prompts = list(cfg.prompts)
    generator = torch.Generator("cpu").manual_seed(cfg.seed)
    cond = encode_text(model.tokenizer, model.text_encoder, prompts)
    uncond = encode_text(model.tokenizer, model.text_encoder, [cfg.negative_prompt] * len(prompts))
    size = int(model.unet.config.sample_size)
    z = _run_stage(model.unet, dict(model.scheduler.config), mapping, cond, uncond, size, cfg, generator, "stage I")
    stage1 = z.clamp(-1, 1)
    if upscaler is not None:
        z = upsample_stage(upscaler, stage1, mapping, cond, uncond, cfg, generator)
    image = z.clamp(-1, 1)
    return {"image": image[0].float().cpu(), "views": mapping.forward_mapping(image).float().cpu(),
            "stage1": stage1[0].float().cpu()}


def upsample_stage(upscaler: Any, stage1: torch.Tensor, mapping: ViewMapping, cond: torch.Tensor,
                   uncond: torch.Tensor, cfg: AmbiguousConfig, generator: torch.Generator) -> torch.Tensor:
    """IF stage II with the same synchronization; returns the canonical [1, 3, 256, 256] image."""
    unet = upscaler.unet
    size = int(unet.config.sample_size)
    up = F.interpolate(stage1.float(), size=(size, size), mode="bilinear", align_corners=True)
    noising = dict(upscaler.image_noising_scheduler.config)
    alphas_cumprod = make_alphas_cumprod(noising.get("beta_schedule", "squaredcos_cap_v2"),
                                         int(noising.get("num_train_timesteps", 1000)),
                                         float(noising.get("beta_start", 1e-4)), float(noising.get("beta_end", 0.02)))
    noise = host_to_device(torch.randn(up.shape, generator=generator), up.device)
    noisy_up = add_noise(up, noise, alphas_cumprod[cfg.stage2_noise_level])
    condition = mapping.forward_mapping(noisy_up).to(unet.device)  # view_i(condition) for view i
    return _run_stage(unet, dict(upscaler.scheduler.config), mapping, cond, uncond, size, cfg, generator,
                      "stage II", condition=condition, class_labels=cfg.stage2_noise_level)


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
