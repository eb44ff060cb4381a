"""Classifier-free guidance (Ho & Salimans 2022, Eq. 6)."""

from __future__ import annotations

import torch


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor,
                guidance_scale: float | torch.Tensor) -> torch.Tensor:
    """eps_hat = eps_uncond + s (eps_cond - eps_uncond), the diffusers / Stable Diffusion convention.

    s = 1 returns the conditional prediction; s = 0 the unconditional one. Note: threestudio's SDS and SDI
    guidance use eps_cond + s (eps_cond - eps_uncond) instead, which equals this function with s + 1
    (so threestudio's guidance 100 is diffusers' 101, and its inversion scale -7.5 is diffusers' -6.5).
    """
    if isinstance(guidance_scale, (int, float)):  # a Python number is a kernel argument: no host-to-device copy
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    s = torch.as_tensor(guidance_scale, dtype=eps_cond.dtype, device=eps_cond.device)
    if s.ndim == 1:  # one scale per sample
        s = s.reshape(-1, *([1] * (eps_cond.ndim - 1)))
    return eps_uncond + s * (eps_cond - eps_uncond)


def split_cfg_batch(eps_both: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a [2B, ...] prediction made on ``cat([uncond, cond])`` into (eps_uncond, eps_cond)."""
    if eps_both.shape[0] % 2:
        raise ValueError(f"CFG batch must have an even size, got {eps_both.shape[0]}")
    return eps_both.chunk(2)
