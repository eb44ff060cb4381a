"""Antialiased cubic downsampling with mirrored borders: the super-resolution operator of DPS (Chung et al. 2023).

DPS measures y = Resizer(x) with the "resizer" of Shocher et al. (the MATLAB ``imresize`` algorithm): per axis,
output pixel o (0-based) sits at the input coordinate c_o = (o + 1/2) / s - 1/2 for a scale s = out / in. When
downscaling (s < 1) the Keys cubic kernel (a = -1/2) is stretched to s * cubic(s * d) (support 4 / s pixels,
antialiasing); the weights of an output pixel are normalised to sum to 1 over the whole untruncated window, and
input indices outside [0, n) are mirrored with the edge pixel repeated (-1 -> 0, -2 -> 1, n -> n - 1), i.e.
symmetric padding. ``torch.nn.functional.interpolate(..., antialias=True)`` agrees in the interior but truncates
the window at the border and renormalises what is left (up to 0.11 apart in the two border pixels at x4).

Each axis is a fixed linear map, so the operator is two small dense matrices: y = W_h x W_w^T.
"""

from __future__ import annotations

import functools
import math

import torch

from common.gpu import host_to_device


def cubic(d: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -1/2 (Keys 1981, Eq. 15): 1 at 0, 0 at the other integers."""
    d = d.abs()
    near = (1.5 * d**3 - 2.5 * d**2 + 1) * (d <= 1)
    far = (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) * ((d > 1) & (d <= 2))
    return near + far


def mirror_index(j: torch.Tensor, n: int) -> torch.Tensor:
    """Symmetric (half-sample) reflection of integer indices into [0, n): ..., 1, 0 | 0, 1, ..., n-1 | n-1, ..."""
    m = torch.remainder(j, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


@functools.lru_cache(maxsize=32)
def resize_matrix(in_length: int, out_length: int) -> torch.Tensor:
    """[out_length, in_length] float64 weights of the cubic resize along one axis (antialiased when shrinking)."""
    if in_length < 1 or out_length < 1:
        raise ValueError(f"lengths must be >= 1, got {in_length} -> {out_length}")
    s = out_length / in_length
    stretch = min(s, 1.0)  # antialiasing: the kernel is widened by 1 / s only when downscaling
    half_width = 2.0 / stretch
    centres = (torch.arange(out_length, dtype=torch.float64) + 0.5) / s - 0.5  # c_o on the input grid
    taps = torch.arange(-math.ceil(half_width) - 1, math.ceil(half_width) + 2, dtype=torch.float64)
    j = torch.floor(centres)[:, None] + taps[None]  # [out, taps] input positions around each centre
    w = stretch * cubic(stretch * (centres[:, None] - j))
    w = w / w.sum(1, keepdim=True)  # normalised over the full window, before mirroring
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, mirror_index(j.long(), in_length), w)
    return matrix


@functools.lru_cache(maxsize=32)
def _resize_matrix_on(in_length: int, out_length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """:func:`resize_matrix` in ``dtype`` on ``device``, copied there once: DPS applies the operator at every step,
    and a copy from pageable CPU memory makes the CPU wait for the GPU."""
    return host_to_device(resize_matrix(in_length, out_length).to(dtype), device)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize images [..., H, W] to ``size`` = (h, w) with the mirrored cubic of :func:`resize_matrix`.

    Linear and differentiable in x (the operator has no learned or random part).
    """
    wh = _resize_matrix_on(x.shape[-2], size[0], x.device, x.dtype)  # [h, H]
    ww = _resize_matrix_on(x.shape[-1], size[1], x.device, x.dtype)  # [w, W]
    return torch.einsum("oh,...hw,pw->...op", wh, x, ww)

