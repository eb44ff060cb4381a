"""What is optimised: SD latents (default) or RGB pixels encoded through the VAE at every step.

Both map their parameter to latents [B, C, h, w] for the losses and to images [B, 3, H, W] in [-1, 1] for
outputs. Samples of a batch never interact (per-sample ops only), so a batch equals its single-prompt runs.
``bound`` is each parameter's divergence bound (``common.divergence.check_bounded`` after every update): far
beyond what a healthy run reaches, so it only stops a blow-up such as ``--lr 1e6``.
"""

from __future__ import annotations

import torch

from distillation.guidance import Guidance

REPRESENTATIONS = ("latent", "pixel")


class LatentImage(torch.nn.Module):
    """x = the latents themselves (KAIST/NYCU: a 1x4x64x64 SD latent per prompt)."""

    bound = 1e3  # SD latents live in about [-5, 5]; healthy 500-step toy-sd runs peak at 6.6-10.5 (ISM: 33)

    def __init__(self, latents: torch.Tensor):
        super().__init__()
        self.param = torch.nn.Parameter(latents.detach().float().clone())  # [B, C, h, w]

    def forward(self, guidance: Guidance) -> torch.Tensor:
        return self.param

    def images(self, guidance: Guidance) -> torch.Tensor:
        with torch.no_grad():
            return guidance.decode_latents(self.param)


class PixelImage(torch.nn.Module):
    """x = RGB pixels in [-1, 1]; latents = VAE encoder(x) (differentiable), so gradients reach the pixels."""

    bound = 1e2  # shown clamped to [-1, 1]; a healthy 500-step toy-sd SDS run peaks at 2.6

    def __init__(self, pixels: torch.Tensor):
        super().__init__()
        self.param = torch.nn.Parameter(pixels.detach().float().clone())  # [B, 3, H, W]

    def forward(self, guidance: Guidance) -> torch.Tensor:
        return guidance.encode_images(self.param)

    def images(self, guidance: Guidance) -> torch.Tensor:
        return self.param.detach().clamp(-1, 1)


def make_representation(kind: str, init_latents: torch.Tensor, guidance: Guidance,
                        init_images: torch.Tensor | None = None) -> torch.nn.Module:
    """Representation initialised at ``init_latents`` (pixels at ``init_images``, else the decoded latents)."""
    if kind == "latent":
        return LatentImage(init_latents)
    if kind == "pixel":
        if init_images is not None:
            return PixelImage(init_images)
        with torch.no_grad():
            return PixelImage(guidance.decode_latents(init_latents))
    raise ValueError(f"unknown representation {kind!r}; choose one of {', '.join(REPRESENTATIONS)}")
