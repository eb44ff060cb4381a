"""Image quality metrics on [-1, 1] images, computed on the [0, 1] scale (data range 1).

PSNR = 10 log10(1 / MSE). SSIM (Wang et al. 2004, Eq. 13): Gaussian window 11 x 11 with sigma 1.5,
K1 = 0.01, K2 = 0.03, 'valid' filtering (no padding), per channel, averaged over pixels and channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.detach().double() + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB: [B]. Identical images give +inf."""
    mse = ((_unit(x) - _unit(ref)) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(x: torch.Tensor, ref: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image mean SSIM: [B]. Images [B, C, H, W] in [-1, 1] with H, W >= window_size."""
    a, b = _unit(x), _unit(ref)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim needs two [B, C, H, W] tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    if min(a.shape[-2:]) < window_size:
        raise ValueError(f"images of size {tuple(a.shape[-2:])} are smaller than the SSIM window {window_size}")
    channels = a.shape[1]
    w = _gaussian_window(window_size, sigma).to(a.device).expand(channels, 1, window_size, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)
