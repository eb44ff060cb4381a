"""DiffAugment for gan (Zhao et al. 2020) with the handout's random-size cutout as a student exercise.

UMich EECS 498 HW5, Task 4: ``rand_cutout`` zeroes, in every image of the batch, a box whose height and width
are drawn uniformly in 25-50% of H and W, at a uniformly drawn top-left corner that keeps the box inside the
image. Colour and translation, and the original fixed-size cutout, are the reference ops of
``common.diffaugment``; :func:`diff_augment` runs those with :func:`rand_cutout` for ``cutout_mode="random"``.
"""

from __future__ import annotations

import math

import torch

from common import diffaugment as _reference


def rand_cutout(x: torch.Tensor, generator: torch.Generator | None = None, min_ratio: float = 0.25,
                max_ratio: float = 0.5) -> torch.Tensor:
    """Random-size cutout (HW5 Task 4): x with one zero box per image; x [B, C, H, W] -> [B, C, H, W].

    Box height h ~ U{ceil(min_ratio H) .. floor(max_ratio H)} (at least 1; width w the same with W), top-left
    (top, left) ~ U{0 .. H - h} x U{0 .. W - w}, so the box [top, top + h) x [left, left + w) lies inside.
    Draws (same order and kind as ``common.diffaugment.draw_cutout_random``, so a run is reproducible): four
    ``u = torch.rand(B, generator=generator, device=x.device, dtype=torch.float64)`` for h, w, top, left, each
    mapped to an integer in [low, high) as floor(low + u (high - low)). Differentiable w.r.t. x (a mask).
    """
    # TODO: zero one box per image: h, w uniform in 25-50% of H, W; top-left uniform with the box inside
    # BEGIN SOLUTION diffaugment-cutout
    B, _, H, W = x.shape
    h_lo, w_lo = max(1, math.ceil(H * min_ratio)), max(1, math.ceil(W * min_ratio))  # smallest box side
    h_hi, w_hi = max(h_lo, int(H * max_ratio)), max(w_lo, int(W * max_ratio))  # largest box side
    u_h, u_w, u_top, u_left = (torch.rand(B, generator=generator, device=x.device, dtype=torch.float64)
                               for _ in range(4))  # [B] each, drawn in this order
    h = (h_lo + u_h * (h_hi + 1 - h_lo)).floor().long().clamp(max=h_hi)  # [B] in [h_lo, h_hi]
    w = (w_lo + u_w * (w_hi + 1 - w_lo)).floor().long().clamp(max=w_hi)  # [B] in [w_lo, w_hi]
    top = (u_top * (H - h + 1)).floor().long().view(B, 1, 1)  # [B, 1, 1] in [0, H - h]
    left = (u_left * (W - w + 1)).floor().long().view(B, 1, 1)  # [B, 1, 1] in [0, W - w]
    rows = torch.arange(H, device=x.device).view(1, H, 1)
    cols = torch.arange(W, device=x.device).view(1, 1, W)
    in_box = (rows >= top) & (rows < top + h.view(B, 1, 1)) & (cols >= left) & (cols < left + w.view(B, 1, 1))
    return x * ~in_box.unsqueeze(1)  # [B, C, H, W], zero inside the box
    # END SOLUTION


def diff_augment(x: torch.Tensor, policy: str = "color,translation,cutout", generator: torch.Generator | None = None,
                 cutout_mode: str = "random") -> torch.Tensor:
    """``common.diffaugment.diff_augment`` whose random-size cutout is :func:`rand_cutout` above."""
    return _reference.diff_augment(x, policy, generator, cutout_mode, random_cutout=rand_cutout)
