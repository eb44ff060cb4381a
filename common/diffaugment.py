"""Differentiable Augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

Every discriminator input is replaced by T(x) for reals and fakes, in both the D and the G update; T must be
differentiable w.r.t. x so the generator receives gradients through it (paper Fig. 4 / Eq. 3-4).

Policies (same ranges as the authors' ``DiffAugment_pytorch.py``, images in [-1, 1], NCHW, every draw per sample):

- ``color``: brightness x + (u - 0.5), u ~ U[0, 1) (shift in [-0.5, 0.5)); saturation (x - mean_C)(2u) + mean_C
  (factor in [0, 2)); contrast (x - mean_CHW)(u + 0.5) + mean_CHW (factor in [0.5, 1.5)), in that order.
- ``translation``: integer shifts in [-round(0.125 H), +round(0.125 H)] per axis, vacated pixels are 0.
- ``cutout``: a zero box of round(0.5 H) x round(0.5 W) centred at a random position, clipped to the image
  (``cutout_mode="fixed"``, the original) or a box of random size 25-50% of H and W placed fully inside the image
  at a random top-left corner (``cutout_mode="random"``, :func:`rand_cutout`, the UMich EECS 498 HW5 variant).

Each op is a pure function of the image and explicit parameters (``translate``, ``cutout``, ``adjust_*``) plus a
sampler that draws those parameters from a ``torch.Generator`` (``draw_*``), so tests can check the geometry.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

POLICIES = ("color", "translation", "cutout")
CUTOUT_MODES = ("fixed", "random")


def _uniform(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """u ~ U[0, 1), one per sample, shaped [B, 1, 1, 1] for broadcasting."""
    return torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=x.device, dtype=x.dtype)


def _randint(low: torch.Tensor | int, high: torch.Tensor | int, n: int, generator, device) -> torch.Tensor:
    """Integers in [low, high) per sample (low/high may be [n] tensors): floor(low + u (high - low))."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    low_t = torch.as_tensor(low, device=device, dtype=torch.float64)
    high_t = torch.as_tensor(high, device=device, dtype=torch.float64)
    return (low_t + u * (high_t - low_t)).floor().long().clamp(max=(high_t - 1).long())


# ----------------------------------------------------------------------------------------------- color


def adjust_brightness(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """x + delta, delta [B, 1, 1, 1]."""
    return x + delta


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale the deviation from the per-pixel channel mean: (x - mean_C) * factor + mean_C."""
    x_mean = x.mean(dim=1, keepdim=True)  # [B, 1, H, W]
    return (x - x_mean) * factor + x_mean


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale the deviation from the per-image mean: (x - mean_CHW) * factor + mean_CHW."""
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)  # [B, 1, 1, 1]
    return (x - x_mean) * factor + x_mean


def rand_brightness(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return adjust_brightness(x, _uniform(x, generator) - 0.5)  # shift in [-0.5, 0.5)


def rand_saturation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return adjust_saturation(x, _uniform(x, generator) * 2)  # factor in [0, 2)


def rand_contrast(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return adjust_contrast(x, _uniform(x, generator) + 0.5)  # factor in [0.5, 1.5)


# ----------------------------------------------------------------------------------------- translation


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move each image's content by ``shift[b] = (dy, dx)`` integer pixels; vacated pixels become 0.

    out[b, :, i, j] = x[b, :, i - dy, j - dx] where that index is inside the image, else 0. Differentiable
    w.r.t. x (a gather). shift: [B, 2] integer tensor.
    """
    B, C, H, W = x.shape
    rows = torch.arange(H, device=x.device).view(1, H, 1) - shift[:, 0].view(B, 1, 1)  # [B, H, 1] source row
    cols = torch.arange(W, device=x.device).view(1, 1, W) - shift[:, 1].view(B, 1, 1)  # [B, 1, W] source col
    inside = (rows >= 0) & (rows < H) & (cols >= 0) & (cols < W)  # [B, H, W]
    flat = rows.clamp(0, H - 1) * W + cols.clamp(0, W - 1)  # [B, H, W]
    out = x.reshape(B, C, H * W).gather(2, flat.reshape(B, 1, H * W).expand(B, C, H * W)).reshape(B, C, H, W)
    return out * inside.unsqueeze(1).to(x.dtype)


def draw_translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shifts (dy, dx) ~ uniform integers in [-round(ratio H), round(ratio H)] (resp. W): [B, 2]."""
    B, _, H, W = x.shape
    max_dy, max_dx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = _randint(-max_dy, max_dy + 1, B, generator, x.device)
    dx = _randint(-max_dx, max_dx + 1, B, generator, x.device)
    return torch.stack([dy, dx], dim=1)


def rand_translation(x: torch.Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> torch.Tensor:
    return translate(x, draw_translation(x, ratio, generator))


# ---------------------------------------------------------------------------------------------- cutout


def cutout(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Zero the box rows [top, top + h), cols [left, left + w) of each image (clipped to the image).

    box: [B, 4] integer tensor (top, left, h, w); top/left may be negative. Differentiable w.r.t. x (a mask).
    """
    B, _, H, W = x.shape
    top, left, h, w = (box[:, i].view(B, 1, 1) for i in range(4))
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    in_box = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)  # [B, H, W]
    return x * (~in_box).unsqueeze(1).to(x.dtype)


def draw_cutout_fixed(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Original DiffAugment box: size round(ratio H) x round(ratio W), centre uniform in [0, H + 1 - h % 2)."""
    B, _, H, W = x.shape
    h, w = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = _randint(0, H + (1 - h % 2), B, generator, x.device)
    cx = _randint(0, W + (1 - w % 2), B, generator, x.device)
    return torch.stack([cy - h // 2, cx - w // 2, torch.full_like(cy, h), torch.full_like(cx, w)], dim=1)


def draw_cutout_random(x: torch.Tensor, min_ratio: float = 0.25, max_ratio: float = 0.5,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """HW5 box: h ~ U{ceil(min_ratio H) .. floor(max_ratio H)} (same for w), top-left uniform so the box fits."""
    B, _, H, W = x.shape
    h_lo, w_lo = max(1, math.ceil(H * min_ratio)), max(1, math.ceil(W * min_ratio))
    h_hi, w_hi = max(h_lo, int(H * max_ratio)), max(w_lo, int(W * max_ratio))
    h = _randint(h_lo, h_hi + 1, B, generator, x.device)
    w = _randint(w_lo, w_hi + 1, B, generator, x.device)
    top = _randint(0, H - h + 1, B, generator, x.device)
    left = _randint(0, W - w + 1, B, generator, x.device)
    return torch.stack([top, left, h, w], dim=1)


def rand_cutout_fixed(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    return cutout(x, draw_cutout_fixed(x, ratio, generator))


def rand_cutout(x: torch.Tensor, generator: torch.Generator | None = None, min_ratio: float = 0.25,
                max_ratio: float = 0.5) -> torch.Tensor:
    """Random-size cutout: box 25-50% of H and W, random top-left corner (the handout's ``rand_cutout``)."""
    return cutout(x, draw_cutout_random(x, min_ratio, max_ratio, generator))


# ---------------------------------------------------------------------------------------------- policy


def parse_policy(policy: str) -> list[str]:
    """'color,translation,cutout' -> ['color', 'translation', 'cutout'] (ValueError on unknown names)."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r}; choose from {', '.join(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None,
                 cutout_mode: str = "fixed", random_cutout: Callable[..., torch.Tensor] = rand_cutout) -> torch.Tensor:
    """Apply the DiffAugment policies left to right to a batch [B, C, H, W] in [-1, 1].

    ``cutout_mode``: "fixed" (original 50% box) or "random" (25-50% box, ``random_cutout(x, generator=...)``,
    by default :func:`rand_cutout`; ``gan`` passes its own exercise here).
    """
    if cutout_mode not in CUTOUT_MODES:
        raise ValueError(f"unknown cutout_mode {cutout_mode!r}; choose from {', '.join(CUTOUT_MODES)}")
    for name in parse_policy(policy):
        if name == "color":
            x = rand_contrast(rand_saturation(rand_brightness(x, generator), generator), generator)
        elif name == "translation":
            x = rand_translation(x, generator=generator)
        elif cutout_mode == "fixed":
            x = rand_cutout_fixed(x, generator=generator)
        else:
            x = random_cutout(x, generator=generator)
    return x.contiguous()
